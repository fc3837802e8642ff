//! The one group-commit writer: a thread that owns an append-only file and
//! makes concurrent appends durable together. The node's WAL
//! ([`super::commit::Committer`]) and the replicator's queue log
//! (`daemon::replicator::queue`) are both a [`Log`] driven by a [`GroupWriter`].
//!
//! Callers hand the thread appends (each carrying its own reply channel) and
//! wait. The thread takes the first append, then every append that queued up
//! while it was busy (up to the batch limits), and gives them to
//! [`Log::commit`] at once: one write, one sync, then each caller is answered.
//! So concurrent writers share a sync, and the log decides that no append is
//! acknowledged before the sync that covers it.
//!
//! The queue of appends waiting for the thread is bounded: once `capacity`
//! appends wait, further callers wait for room (asynchronously) instead of
//! growing memory without limit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::sync::Lock;

/// What a group-committed log does; called on the writer thread only.
pub trait Log: Send + 'static {
    /// One caller's append, with whatever the log needs to answer it.
    type Append: Send + 'static;

    /// Bytes `append` adds to a batch (to bound a batch's size).
    fn bytes(append: &Self::Append) -> usize;

    /// Writes `batch` (in order) with one sync and answers every append of it.
    fn commit(&mut self, batch: Vec<Self::Append>);

    /// Called after every batch and whenever [`GroupWriter::wake`] was called:
    /// rotation, compaction and other housekeeping.
    fn maintain(&mut self) {}

    /// Called when no append arrived for [`Batching::idle_tick`].
    fn idle(&mut self) {}

    /// Called once, after the last batch, when the writer stops (closed, or
    /// every handle dropped): leave the file clean and durable.
    fn close(&mut self);
}

/// How the writer forms batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Whether appends share a sync; `false` commits one append per batch
    /// (to measure what group commit buys).
    pub group: bool,
    /// Most appends in one batch.
    pub max_appends: usize,
    /// A batch stops growing once it holds this many bytes.
    pub max_bytes: usize,
    /// Most appends waiting for the thread before callers wait for room.
    pub capacity: usize,
    /// How long the thread waits for an append before calling [`Log::idle`] (never, if `None`).
    pub idle_tick: Option<Duration>,
}

enum Message<A> {
    Append(A, OwnedSemaphorePermit),
    Wake,
    Stop(oneshot::Sender<()>),
}

/// The writer thread's handle. The thread stops on [`GroupWriter::close`], or
/// when the handle is dropped (which waits for it, so the file and its lock
/// are released when the drop returns).
pub struct GroupWriter<L: Log> {
    /// Shared only with [`Waker`]s, weakly: once the handle is dropped the
    /// channel closes and the thread ends.
    sender: Arc<mpsc::Sender<Message<L::Append>>>,
    room: Arc<Semaphore>,
    capacity: usize,
    /// A wake-up is queued and not yet seen by the thread (so wake-ups do not pile up).
    woken: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<L: Log> std::fmt::Debug for GroupWriter<L> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("GroupWriter").field("queued", &self.queued()).finish_non_exhaustive()
    }
}

/// The writer thread is gone: the log was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the log is closed")]
pub struct Closed;

impl<L: Log> GroupWriter<L> {
    /// Starts the thread `name` driving the log `make` builds (given a
    /// [`Waker`] of this writer, for parts of the log that must wake it later).
    pub fn start(name: &str, batching: Batching, make: impl FnOnce(Waker<L::Append>) -> L) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel();
        let sender = Arc::new(sender);
        let woken = Arc::new(AtomicBool::new(false));
        let log = make(Waker { sender: Arc::downgrade(&sender), woken: Arc::clone(&woken) });
        let driver = Driver { log, receiver, batching, woken: Arc::clone(&woken) };
        let thread = std::thread::Builder::new().name(name.to_string()).spawn(move || driver.run())?;
        Ok(Self {
            sender,
            room: Arc::new(Semaphore::new(batching.capacity)),
            capacity: batching.capacity,
            woken,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Hands `append` to the thread: at once when there is room (so appends
    /// submitted one after another are committed in that order), else once
    /// there is. The future does not borrow the writer; it completes when the
    /// append is queued, not when it is committed (the append's own reply says that).
    pub fn submit(&self, append: L::Append) -> impl Future<Output = Result<(), Closed>> + Send + 'static {
        // The common case, room at once, sends here and clones nothing; only a
        // caller that must wait takes a sender and the semaphore along.
        let submitted = match Arc::clone(&self.room).try_acquire_owned() {
            Ok(permit) => Submitted::Sent(self.sender.send(Message::Append(append, permit)).map_err(|_| Closed)),
            Err(_) => {
                Submitted::Waiting { append, sender: mpsc::Sender::clone(&self.sender), room: Arc::clone(&self.room) }
            }
        };
        async move {
            match submitted {
                Submitted::Sent(sent) => sent,
                Submitted::Waiting { append, sender, room } => {
                    let permit = room.acquire_owned().await.map_err(|_| Closed)?;
                    sender.send(Message::Append(append, permit)).map_err(|_| Closed)
                }
            }
        }
    }

    /// Asks the thread to run [`Log::maintain`] soon. Wake-ups while one is
    /// pending are merged into it.
    pub fn wake(&self) {
        wake(&self.sender, &self.woken);
    }

    /// Appends waiting for the thread right now.
    pub fn queued(&self) -> usize {
        self.capacity - self.room.available_permits()
    }

    /// Lets every append submitted so far be committed, calls [`Log::close`]
    /// and waits for the thread to end. Later appends fail with [`Closed`].
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.sender.send(Message::Stop(done)).is_ok() {
            let _ = finished.await;
        }
        let thread = self.thread.locked().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl<L: Log> Drop for GroupWriter<L> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.locked().take() {
            let (done, _finished) = oneshot::channel();
            if self.sender.send(Message::Stop(done)).is_ok() {
                let _ = thread.join();
            }
        }
    }
}

/// Where [`GroupWriter::submit`] left an append.
enum Submitted<A> {
    /// Handed to the thread (or refused: it is gone).
    Sent(Result<(), Closed>),
    /// Waiting for room in the queue, with what it needs to be sent then.
    Waiting { append: A, sender: mpsc::Sender<Message<A>>, room: Arc<Semaphore> },
}

/// Wakes a [`GroupWriter`]'s thread like [`GroupWriter::wake`] without keeping it alive.
pub struct Waker<A> {
    sender: Weak<mpsc::Sender<Message<A>>>,
    woken: Arc<AtomicBool>,
}

impl<A> Clone for Waker<A> {
    fn clone(&self) -> Self {
        Self { sender: Weak::clone(&self.sender), woken: Arc::clone(&self.woken) }
    }
}

impl<A: Send> Waker<A> {
    /// Asks the thread to run [`Log::maintain`] soon (nothing, once it stopped).
    pub fn wake(&self) {
        if let Some(sender) = self.sender.upgrade() {
            wake(&sender, &self.woken);
        }
    }
}

fn wake<A>(sender: &mpsc::Sender<Message<A>>, woken: &AtomicBool) {
    if !woken.swap(true, Ordering::AcqRel) {
        let _ = sender.send(Message::Wake);
    }
}

struct Driver<L: Log> {
    log: L,
    receiver: mpsc::Receiver<Message<L::Append>>,
    batching: Batching,
    woken: Arc<AtomicBool>,
}

impl<L: Log> Driver<L> {
    fn run(mut self) {
        let stopped = loop {
            let first = match self.batching.idle_tick {
                Some(tick) => match self.receiver.recv_timeout(tick) {
                    Ok(first) => first,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.log.idle();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break None,
                },
                None => match self.receiver.recv() {
                    Ok(first) => first,
                    Err(mpsc::RecvError) => break None,
                },
            };
            let mut batch = Vec::new();
            let mut stop = None;
            self.take(first, &mut batch, &mut stop);
            if self.batching.group && !batch.is_empty() {
                let mut bytes = L::bytes(&batch[0]);
                while stop.is_none() && batch.len() < self.batching.max_appends && bytes < self.batching.max_bytes {
                    let Ok(next) = self.receiver.try_recv() else { break };
                    let before = batch.len();
                    self.take(next, &mut batch, &mut stop);
                    if batch.len() > before {
                        bytes += L::bytes(&batch[before]);
                    }
                }
            }
            if !batch.is_empty() {
                self.log.commit(batch);
            }
            if stop.is_some() {
                break stop;
            }
            self.log.maintain();
        };
        self.log.close();
        if let Some(done) = stopped {
            let _ = done.send(());
        }
    }

    /// Sorts one message into the batch being formed (its permit is returned
    /// at once: the append has left the queue).
    fn take(
        &mut self,
        message: Message<L::Append>,
        batch: &mut Vec<L::Append>,
        stop: &mut Option<oneshot::Sender<()>>,
    ) {
        match message {
            Message::Append(append, _permit) => batch.push(append),
            Message::Wake => self.woken.store(false, Ordering::Release),
            Message::Stop(done) => *stop = Some(done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    /// Records each batch's appends; its first commit blocks until released.
    struct Batches {
        seen: Arc<Mutex<Vec<Vec<u32>>>>,
        maintained: Arc<Mutex<usize>>,
        idled: Arc<Mutex<usize>>,
        closed: Arc<Mutex<bool>>,
        gate: Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>,
    }

    impl Log for Batches {
        type Append = (u32, oneshot::Sender<()>);

        fn bytes(_: &Self::Append) -> usize {
            10
        }

        fn commit(&mut self, batch: Vec<Self::Append>) {
            if let Some((entered, release)) = self.gate.take() {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
            self.seen.locked().push(batch.iter().map(|(n, _)| *n).collect());
            for (_, reply) in batch {
                let _ = reply.send(());
            }
        }

        fn maintain(&mut self) {
            *self.maintained.locked() += 1;
        }

        fn idle(&mut self) {
            *self.idled.locked() += 1;
        }

        fn close(&mut self) {
            *self.closed.locked() = true;
        }
    }

    struct Probe {
        seen: Arc<Mutex<Vec<Vec<u32>>>>,
        maintained: Arc<Mutex<usize>>,
        idled: Arc<Mutex<usize>>,
        closed: Arc<Mutex<bool>>,
    }

    fn start(batching: Batching, gated: bool) -> (GroupWriter<Batches>, Probe, Option<GateHandle>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let maintained = Arc::new(Mutex::new(0));
        let idled = Arc::new(Mutex::new(0));
        let closed = Arc::new(Mutex::new(false));
        let (gate, handle) = if gated {
            let (entered_sender, entered) = std::sync::mpsc::channel();
            let (release, release_receiver) = std::sync::mpsc::channel();
            (Some((entered_sender, release_receiver)), Some(GateHandle { entered, release }))
        } else {
            (None, None)
        };
        let log = Batches {
            seen: Arc::clone(&seen),
            maintained: Arc::clone(&maintained),
            idled: Arc::clone(&idled),
            closed: Arc::clone(&closed),
            gate,
        };
        (
            GroupWriter::start("test-writer", batching, |_| log).unwrap(),
            Probe { seen, maintained, idled, closed },
            handle,
        )
    }

    struct GateHandle {
        entered: std::sync::mpsc::Receiver<()>,
        release: std::sync::mpsc::Sender<()>,
    }

    fn batching(group: bool, capacity: usize) -> Batching {
        Batching { group, max_appends: 1000, max_bytes: 1 << 20, capacity, idle_tick: None }
    }

    async fn append(writer: &GroupWriter<Batches>, n: u32) -> oneshot::Receiver<()> {
        let (reply, answer) = oneshot::channel();
        writer.submit((n, reply)).await.unwrap();
        answer
    }

    /// Waits until the writer is blocked inside its first commit.
    async fn entered(gate: GateHandle) -> GateHandle {
        tokio::task::spawn_blocking(move || {
            gate.entered.recv().unwrap();
            gate
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn appends_queued_during_a_commit_form_the_next_batch_in_order() {
        let (writer, probe, gate) = start(batching(true, 100), true);
        let first = append(&writer, 0).await;
        let gate = entered(gate.unwrap()).await;
        let mut waiting = Vec::new();
        for n in 1..=20 {
            waiting.push(append(&writer, n).await);
        }
        assert_eq!(writer.queued(), 20);
        gate.release.send(()).unwrap();
        first.await.unwrap();
        for answer in waiting {
            answer.await.unwrap();
        }
        assert_eq!(*probe.seen.locked(), vec![vec![0], (1..=20).collect::<Vec<u32>>()]);
        writer.close().await;
        assert!(*probe.closed.locked());
    }

    #[tokio::test]
    async fn without_grouping_every_append_is_its_own_batch() {
        let (writer, probe, _) = start(batching(false, 100), false);
        let answers: Vec<_> = (0..5)
            .map(|n| {
                let (reply, answer) = oneshot::channel();
                drop(writer.submit((n, reply)));
                answer
            })
            .collect();
        for answer in answers {
            answer.await.unwrap();
        }
        writer.close().await;
        assert_eq!(*probe.seen.locked(), (0..5).map(|n| vec![n]).collect::<Vec<_>>());
        assert!(*probe.maintained.locked() >= 5, "maintain runs after every batch");
    }

    #[tokio::test]
    async fn a_full_queue_makes_callers_wait_for_room() {
        let (writer, probe, gate) = start(batching(true, 2), true);
        let first = append(&writer, 0).await;
        let gate = entered(gate.unwrap()).await;
        let queued: Vec<_> = (1..=2).map(|n| (n, oneshot::channel())).collect();
        let mut answers = Vec::new();
        for (n, (reply, answer)) in queued {
            writer.submit((n, reply)).await.unwrap();
            answers.push(answer);
        }
        let (reply, third) = oneshot::channel();
        let mut blocked = Box::pin(writer.submit((3, reply)));
        assert!((&mut blocked).now_or_never().is_none(), "a third append fits in a queue of two");
        gate.release.send(()).unwrap();
        blocked.await.unwrap();
        first.await.unwrap();
        for answer in answers {
            answer.await.unwrap();
        }
        third.await.unwrap();
        writer.close().await;
        let seen: Vec<u32> = probe.seen.locked().iter().flatten().copied().collect();
        assert_eq!(seen, vec![0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn idle_ticks_wake_ups_and_close() {
        let mut config = batching(true, 10);
        config.idle_tick = Some(Duration::from_millis(5));
        let (writer, probe, _) = start(config, false);
        while *probe.idled.locked() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let before = *probe.maintained.locked();
        writer.wake();
        while *probe.maintained.locked() == before {
            tokio::task::yield_now().await;
        }
        writer.close().await;
        assert!(*probe.closed.locked());
        let (reply, _answer) = oneshot::channel();
        assert_eq!(writer.submit((9, reply)).await, Err(Closed));
    }

    #[tokio::test]
    async fn dropping_the_handle_closes_the_log() {
        let (writer, probe, _) = start(batching(true, 10), false);
        let answer = append(&writer, 1).await;
        answer.await.unwrap();
        drop(writer);
        assert!(*probe.closed.locked(), "the drop returned before the log was closed");
    }
}
