//! Calling several nodes at once and stopping at a quorum, in the spirit of
//! garage's `try_call_many`: the one way the gateway gathers strong writes,
//! strong reads (and their majorities on the old ring during a membership
//! change) and Paxos phases.
//!
//! [`gather`] starts `eager` calls, hands every answer to a tally as it arrives,
//! starts the next candidate when an answer does not count and the quorum is
//! still short, and returns as soon as `need` answers counted, the tally said
//! stop, or nothing is left to wait for. The calls run concurrently in the
//! caller's task (no task per call: measured, a spawn and a channel per call
//! cost a strong read several percent). Calls still in flight when it returns
//! are not cancelled (a write half-sent to a node would be wasted): one task
//! drives them to the end, and [`Late::answers`] collects what they say, for
//! work done after the answer (hinted copies, clock bumps).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

/// What an answer means for the quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It counts towards the quorum.
    Counts,
    /// It does not count (a failure, or an answer from a node that cannot count).
    Misses,
    /// Stop gathering now (the answer settles the outcome on its own).
    Stop,
}

/// The answers gathered before [`gather`] returned.
#[derive(Debug)]
pub struct Gathered<T, R> {
    /// Every answer tallied, in arrival order, with its verdict.
    pub answers: Vec<(T, R, Verdict)>,
    /// How many answers counted.
    pub counted: usize,
    /// Whether the tally said stop.
    pub stopped: bool,
    /// Calls still running, and candidates never called.
    pub late: Late<T, R>,
}

/// Calls that were still running when [`gather`] returned.
#[derive(Debug)]
pub struct Late<T, R> {
    receiver: mpsc::UnboundedReceiver<(T, R)>,
    running: usize,
    /// Candidates that were never called.
    pub unstarted: Vec<T>,
}

impl<T, R> Late<T, R> {
    /// How many calls are still running.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Waits for every running call and returns their answers.
    pub async fn answers(mut self) -> Vec<(T, R)> {
        let mut answers = Vec::with_capacity(self.running);
        while self.running > 0 {
            let Some(answer) = self.receiver.recv().await else { break };
            self.running -= 1;
            answers.push(answer);
        }
        answers
    }
}

/// Calls `call` for up to `eager` of `candidates` at once (in order), tallies
/// each answer with `tally`, and returns once `need` answers counted, the tally
/// said [`Verdict::Stop`], or no call is left running. Whenever the counted and
/// running calls together fall short of `need` (an answer missed, or `eager`
/// was smaller than `need`), the next candidates are called.
pub async fn gather<T, R, C, F>(
    candidates: Vec<T>,
    eager: usize,
    need: usize,
    call: C,
    mut tally: impl FnMut(&T, &R) -> Verdict,
) -> Gathered<T, R>
where
    T: Clone + Send + 'static,
    R: Send + 'static,
    C: Fn(T) -> F,
    F: Future<Output = R> + Send + 'static,
{
    type Call<T, R> = Pin<Box<dyn Future<Output = (T, R)> + Send>>;
    let mut unstarted: VecDeque<T> = candidates.into();
    let mut calls: FuturesUnordered<Call<T, R>> = FuturesUnordered::new();
    let launch = |calls: &mut FuturesUnordered<Call<T, R>>, target: T| {
        let answer = call(target.clone());
        calls.push(Box::pin(async move { (target, answer.await) }));
    };
    let mut running = 0;
    while running < eager {
        let Some(target) = unstarted.pop_front() else { break };
        launch(&mut calls, target);
        running += 1;
    }
    let (sender, receiver) = mpsc::unbounded_channel();
    let mut gathered = Gathered {
        answers: Vec::new(),
        counted: 0,
        stopped: false,
        late: Late { receiver, running: 0, unstarted: Vec::new() },
    };
    while gathered.counted < need && !gathered.stopped && running > 0 {
        let Some((target, answer)) = calls.next().await else { break };
        running -= 1;
        let verdict = tally(&target, &answer);
        match verdict {
            Verdict::Counts => gathered.counted += 1,
            Verdict::Stop => gathered.stopped = true,
            Verdict::Misses => {}
        }
        gathered.answers.push((target, answer, verdict));
        while !gathered.stopped && gathered.counted + running < need {
            let Some(next) = unstarted.pop_front() else { break };
            launch(&mut calls, next);
            running += 1;
        }
    }
    if running > 0 {
        tokio::spawn(async move {
            while let Some(answer) = calls.next().await {
                let _ = sender.send(answer);
            }
        });
    }
    gathered.late.running = running;
    gathered.late.unstarted = unstarted.into();
    gathered
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// What a scripted gathering saw.
    struct Seen {
        /// The nodes whose answers were tallied, in arrival order.
        answered: Vec<usize>,
        counted: usize,
        calls: usize,
        running: usize,
        unstarted: Vec<usize>,
        /// What the calls still running said afterwards.
        late: Vec<(usize, bool)>,
    }

    /// Node `i` answers `script[i].1` (counts or not) after `script[i].0` ms of virtual time.
    fn run(script: Vec<(u64, bool)>, eager: usize, need: usize) -> Seen {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async move {
            let calls = Arc::new(AtomicUsize::new(0));
            let script = Arc::new(script);
            let counter = Arc::clone(&calls);
            let Gathered { answers, counted, late, .. } = gather(
                (0..script.len()).collect(),
                eager,
                need,
                move |node: usize| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let (delay, ok) = script[node];
                    async move {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        ok
                    }
                },
                |_, ok| if *ok { Verdict::Counts } else { Verdict::Misses },
            )
            .await;
            let calls = calls.load(Ordering::SeqCst);
            let (running, unstarted) = (late.running(), late.unstarted.clone());
            let answered = answers.iter().map(|(node, ..)| *node).collect();
            Seen { answered, counted, calls, running, unstarted, late: late.answers().await }
        })
    }

    #[test]
    fn stops_at_the_quorum_and_hands_over_the_rest() {
        let seen = run(vec![(5, true), (1, true), (50, true)], 3, 2);
        assert_eq!((seen.counted, seen.answered), (2, vec![1, 0]));
        assert_eq!((seen.calls, seen.running), (3, 1));
        assert_eq!(seen.late, [(2, true)], "the call still running finishes and is handed over");
    }

    #[test]
    fn a_miss_calls_the_next_candidate_only_while_short() {
        // Two wanted, two called first; node 0 fails, so node 2 is called; node 3 never is.
        let seen = run(vec![(1, false), (5, true), (2, true), (1, true)], 2, 2);
        assert_eq!((seen.counted, seen.calls), (2, 3));
        assert_eq!(seen.unstarted, [3]);
    }

    proptest! {
        #[test]
        fn counts_a_quorum_exactly_when_enough_candidates_count(
            script in proptest::collection::vec((0u64..20, any::<bool>()), 1..7),
            eager in 1usize..7,
            need in 1usize..5,
        ) {
            let available = script.iter().filter(|(_, ok)| *ok).count();
            let seen = run(script.clone(), eager, need);
            prop_assert_eq!(seen.counted, need.min(available), "never waits for more answers than needed");
            prop_assert_eq!(seen.late.len(), seen.running);
            prop_assert_eq!(seen.answered.len() + seen.running + seen.unstarted.len(), script.len());
            prop_assert_eq!(seen.calls, seen.answered.len() + seen.running);
            if seen.counted < need {
                prop_assert_eq!(seen.calls, script.len(), "every candidate was tried before giving up");
            }
        }
    }
}
