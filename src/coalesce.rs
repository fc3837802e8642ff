//! Coalescing concurrent requests into batches.
//!
//! Callers [`Coalescer::submit`] one item each and wait for its own answer. A
//! background task takes everything that queued up, sends it as ONE batch
//! (the caller's `send` function), and hands each caller the answer for its
//! item. Under load a batch grows to whatever arrived while the previous
//! batches were in flight, so a service doing one fsync per request does one
//! per batch instead; a lone caller is sent at once, without waiting.
//!
//! Everything is bounded: the queue of waiting items, a batch's items and
//! bytes (an item larger than the byte limit goes alone), and the batches in
//! flight at once.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

/// How large batches get and how many are in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most items in one batch.
    pub max_items: usize,
    /// Most bytes (as the size function counts them) in one batch, unless one item alone is larger.
    pub max_bytes: usize,
    /// Batches sent at once; the next batch collects items while they are in flight.
    pub in_flight: usize,
    /// Items that may wait for a batch; beyond it `submit` waits for room.
    pub queue: usize,
}

struct Pending<T, R> {
    item: T,
    reply: oneshot::Sender<R>,
    /// The request the item serves ([`crate::requestid`]).
    request_id: Option<std::sync::Arc<str>>,
}

/// Hands items to the batching task; cheap to clone. The task stops once every handle is dropped.
pub struct Coalescer<T, R> {
    sender: mpsc::Sender<Pending<T, R>>,
}

impl<T, R> Clone for Coalescer<T, R> {
    fn clone(&self) -> Self {
        Self { sender: self.sender.clone() }
    }
}

impl<T, R> std::fmt::Debug for Coalescer<T, R> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Coalescer")
            .field("waiting", &(self.sender.max_capacity() - self.sender.capacity()))
            .finish()
    }
}

impl<T: Send + 'static, R: Send + 'static> Coalescer<T, R> {
    /// Starts the batching task (on the current tokio runtime). `size` weighs an
    /// item against `limits.max_bytes`; `send` sends one batch and returns one
    /// answer per item, in order (callers whose answer is missing get `None`).
    pub fn spawn<S, F>(limits: Limits, size: fn(&T) -> usize, send: S) -> Self
    where
        S: Fn(Vec<T>) -> F + Send + 'static,
        F: Future<Output = Vec<R>> + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(limits.queue.max(1));
        tokio::spawn(run(receiver, limits, size, send));
        Self { sender }
    }

    /// Queues `item` for the next batch and waits for its answer; `None` when
    /// the batch's answer left it out or the task has stopped.
    pub async fn submit(&self, item: T) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        let request_id = crate::requestid::current();
        self.sender.send(Pending { item, reply, request_id }).await.ok()?;
        answer.await.ok()
    }
}

async fn run<T, R, S, F>(mut receiver: mpsc::Receiver<Pending<T, R>>, limits: Limits, size: fn(&T) -> usize, send: S)
where
    T: Send + 'static,
    R: Send + 'static,
    S: Fn(Vec<T>) -> F,
    F: Future<Output = Vec<R>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.in_flight.max(1)));
    // An item that did not fit the previous batch starts the next one.
    let mut carried = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match receiver.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        // Wait for a free slot first, so the batch takes everything that arrived meanwhile.
        let permit = Arc::clone(&permits).acquire_owned().await.expect("the semaphore is never closed");
        let mut bytes = size(&first.item);
        let mut batch = vec![first];
        while batch.len() < limits.max_items {
            let Ok(next) = receiver.try_recv() else { break };
            let next_bytes = size(&next.item);
            if bytes + next_bytes > limits.max_bytes {
                carried = Some(next);
                break;
            }
            bytes += next_bytes;
            batch.push(next);
        }
        // The batch's request carries the ids of the requests it serves.
        let request_ids = crate::requestid::join(batch.iter().filter_map(|pending| pending.request_id.as_deref()));
        let (items, replies): (Vec<T>, Vec<oneshot::Sender<R>>) =
            batch.into_iter().map(|pending| (pending.item, pending.reply)).unzip();
        let sending = send(items);
        tokio::spawn(async move {
            let answers = match request_ids {
                Some(ids) => crate::requestid::scope(ids, sending).await,
                None => sending.await,
            };
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Lock;
    use std::sync::Mutex;
    use std::time::Duration;

    fn limits(max_items: usize, max_bytes: usize) -> Limits {
        Limits { max_items, max_bytes, in_flight: 1, queue: 1024 }
    }

    /// The batches a test coalescer sent.
    type Batches = Arc<Mutex<Vec<Vec<usize>>>>;

    /// A coalescer whose batches take `delay` and are recorded; each item's answer is itself doubled.
    fn recording(limits: Limits, delay: Duration) -> (Coalescer<usize, usize>, Batches) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&batches);
        let coalescer = Coalescer::spawn(
            limits,
            |item: &usize| *item,
            move |items: Vec<usize>| {
                seen.locked().push(items.clone());
                async move {
                    tokio::time::sleep(delay).await;
                    items.into_iter().map(|item| item * 2).collect()
                }
            },
        );
        (coalescer, batches)
    }

    #[tokio::test]
    async fn a_lone_item_goes_at_once_and_gets_its_own_answer() {
        let (coalescer, batches) = recording(limits(10, 100), Duration::ZERO);
        assert_eq!(coalescer.submit(3).await, Some(6));
        assert_eq!(coalescer.submit(4).await, Some(8));
        assert_eq!(*batches.locked(), vec![vec![3], vec![4]]);
    }

    #[tokio::test]
    async fn items_arriving_during_a_batch_share_the_next_one_within_the_limits() {
        let (coalescer, batches) = recording(limits(3, 100), Duration::from_millis(50));
        let callers: Vec<_> = (1..=7)
            .map(|item| {
                let coalescer = coalescer.clone();
                tokio::spawn(async move { coalescer.submit(item).await })
            })
            .collect();
        for (item, caller) in (1..=7).zip(callers) {
            assert_eq!(caller.await.unwrap(), Some(item * 2));
        }
        let batches = batches.locked();
        assert!(batches.len() < 7, "nothing was coalesced: {batches:?}");
        assert!(batches.iter().all(|batch| !batch.is_empty() && batch.len() <= 3), "{batches:?}");
        let mut all: Vec<usize> = batches.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (1..=7).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_batch_stays_within_its_bytes_but_an_oversized_item_still_goes() {
        let (coalescer, batches) = recording(limits(100, 10), Duration::from_millis(20));
        let callers: Vec<_> = [6, 6, 25, 4]
            .into_iter()
            .map(|item| {
                let coalescer = coalescer.clone();
                tokio::spawn(async move { coalescer.submit(item).await })
            })
            .collect();
        for caller in callers {
            assert!(caller.await.unwrap().is_some());
        }
        let batches = batches.locked();
        for batch in batches.iter() {
            let bytes: usize = batch.iter().sum();
            assert!(bytes <= 10 || batch.len() == 1, "{batches:?}");
        }
    }

    #[tokio::test]
    async fn callers_left_out_of_the_answer_get_none() {
        let coalescer = Coalescer::spawn(limits(10, 100), |_: &u8| 1, |_items: Vec<u8>| async { Vec::<u8>::new() });
        assert_eq!(coalescer.submit(1).await, None);
    }
}
