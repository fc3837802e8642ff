//! The load loop: `clients` tasks, each with one request in flight at a time
//! over a shared pool of keep-alive connections, each keeping its own
//! histogram (no shared lock on the hot path) merged at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Client;
use tokio::time::Instant;

use super::summary::{OpTallies, Tally};
use super::target::Target;

/// Which operations a phase sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Only puts.
    Put,
    /// Only gets.
    Get,
    /// Half gets, half puts, at random.
    Mixed,
    /// Only deletes (removing the run's keys afterwards).
    Delete,
    /// Only conditional writes.
    Cas,
}

/// When a phase ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this many requests in total.
    Requests(u64),
    /// After this long.
    After(Duration),
}

/// Which key each request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// Uniformly random among the keys.
    Random,
    /// Key 0, 1, 2, … in the order requests are issued (creating every key once).
    Sequential,
}

/// One phase of a run.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// What to send.
    pub mix: Mix,
    /// When to stop.
    pub stop: Stop,
    /// Which keys.
    pub order: KeyOrder,
    /// Concurrent clients.
    pub clients: usize,
    /// Number of keys.
    pub keys: u64,
    /// Puts per request (`POST /v1/batch` when above 1); each key counts as one operation.
    pub batch: usize,
}

/// Counters a progress display may read while a phase runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Requests completed (successes and errors).
    pub done: AtomicU64,
    /// Requests that failed.
    pub failed: AtomicU64,
}

/// A tiny xorshift64* generator per worker: no locking, no allocation.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(bound)) >> 64) as u64
    }
}

/// One request's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A write.
    Put,
    /// A read.
    Get,
    /// A delete.
    Delete,
    /// A conditional write (tallied with the writes).
    Cas,
}

/// Runs `phase` against `target`; returns the merged tallies (one per operation) and the phase's wall-clock time.
pub async fn run(
    client: &Client,
    target: &Arc<Target>,
    phase: Phase,
    progress: &Arc<Progress>,
) -> (OpTallies, Duration) {
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = match phase.stop {
        Stop::After(duration) => Some(started + duration),
        Stop::Requests(_) => None,
    };
    let seed = u64::from(std::process::id()) ^ started.elapsed().as_nanos() as u64 ^ 0x5851_F42D_4C95_7F2D;
    let mut workers = Vec::with_capacity(phase.clients);
    for worker in 0..phase.clients {
        let (client, target, issued, progress) = (client.clone(), target.clone(), issued.clone(), progress.clone());
        let mut rng = Rng::new(seed.wrapping_add(worker as u64));
        workers.push(tokio::spawn(async move {
            let mut tallies = OpTallies::default();
            // The ETag this client last saw for each key (for conditional writes).
            let mut etags = std::collections::HashMap::new();
            loop {
                let sequence = issued.fetch_add(1, Ordering::Relaxed);
                let finished = match (phase.stop, deadline) {
                    (Stop::Requests(total), _) => sequence >= total,
                    (_, Some(deadline)) => Instant::now() >= deadline,
                    (Stop::After(_), None) => unreachable!("a timed phase has a deadline"),
                };
                if finished {
                    break;
                }
                let index = match phase.order {
                    // Uncontended conditional writes: each client its own keys (worker, worker +
                    // clients, …), so the version it last saw is the current one. With fewer keys
                    // than clients, they share them and contend.
                    KeyOrder::Random if phase.mix == Mix::Cas && phase.keys >= phase.clients as u64 => {
                        let (worker, clients) = (worker as u64, phase.clients as u64);
                        worker + clients * rng.below((phase.keys - worker).div_ceil(clients))
                    }
                    KeyOrder::Random => rng.below(phase.keys),
                    KeyOrder::Sequential => sequence % phase.keys,
                };
                let operation = match phase.mix {
                    Mix::Put => Operation::Put,
                    Mix::Get => Operation::Get,
                    Mix::Mixed if rng.next() & 1 == 0 => Operation::Put,
                    Mix::Mixed => Operation::Get,
                    Mix::Delete => Operation::Delete,
                    Mix::Cas => Operation::Cas,
                };
                let sent = Instant::now();
                if phase.batch > 1 && operation == Operation::Put {
                    let mut indices = vec![index];
                    indices.extend((1..phase.batch).map(|_| rng.below(phase.keys)));
                    let result = target.put_batch(&client, &indices).await;
                    let tally: &mut Tally = tallies.of(operation);
                    for _ in 0..phase.batch {
                        match result {
                            Ok(()) => tally.success(sent.elapsed()),
                            Err(kind) => tally.failure(kind),
                        }
                    }
                    if result.is_err() {
                        progress.failed.fetch_add(phase.batch as u64, Ordering::Relaxed);
                    }
                    progress.done.fetch_add(phase.batch as u64, Ordering::Relaxed);
                    continue;
                }
                let result = match operation {
                    Operation::Put => target.put(&client, index).await,
                    Operation::Get => target.get(&client, index).await,
                    Operation::Delete => target.delete(&client, index).await,
                    Operation::Cas => target.cas(&client, index, &mut etags).await,
                };
                let tally: &mut Tally = tallies.of(operation);
                match result {
                    Ok(()) => tally.success(sent.elapsed()),
                    Err(kind) => {
                        tally.failure(kind);
                        progress.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                progress.done.fetch_add(1, Ordering::Relaxed);
            }
            tallies
        }));
    }
    let mut total = OpTallies::default();
    for worker in workers {
        match worker.await {
            Ok(tallies) => total.merge(&tallies),
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
    (total, started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_stays_below_the_bound_and_covers_it() {
        let mut rng = Rng::new(7);
        let mut seen = [false; 10];
        for _ in 0..10_000 {
            let value = rng.below(10);
            assert!(value < 10);
            seen[value as usize] = true;
        }
        assert!(seen.iter().all(|&hit| hit));
    }
}
