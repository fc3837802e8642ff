//! One batching writer to storage nodes, used by the gateway for its writes
//! and by the replicator for its copies.
//!
//! Writes to one node are coalesced ([`crate::coalesce`]): whatever arrives
//! while that node's batch is in flight goes out together in the next one. A
//! lone write is a plain `PUT` / `DELETE /store/{key}`; several are one
//! `POST /batch` (one request, one WAL sync on the node). When the node refuses
//! a batch whole (a 4xx: one bad record refuses all of it), every write of it is
//! resent alone, so only the bad one fails. Each caller gets its own record's
//! answer once the node has synced it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::coalesce::{self, Coalescer};
use crate::nodeclient::{NodeClient, NodeError, WriteMeta};
use crate::proto::StoreWriteResponse;
use crate::sync::Lock;
use crate::wal::record::RecordRef;
use crate::wire::batch;

/// Something that is written to a node as one record.
pub trait Writable: Send + Sync + 'static {
    /// The record to write.
    fn record(&self) -> RecordRef<'_>;
    /// The record's value, shared rather than copied (for a lone `PUT`).
    fn value(&self) -> Bytes;
}

type Answer = Result<StoreWriteResponse, NodeError>;

/// Batched writes to any number of nodes, one batching task per node (started
/// on its first write); cheap to clone.
pub struct NodeWriter<T> {
    client: NodeClient,
    limits: coalesce::Limits,
    /// When set, batches in flight across all nodes at once.
    permits: Option<Arc<Semaphore>>,
    tasks: Arc<Mutex<HashMap<String, Coalescer<T, Answer>>>>,
}

impl<T> Clone for NodeWriter<T> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            limits: self.limits,
            permits: self.permits.clone(),
            tasks: Arc::clone(&self.tasks),
        }
    }
}

impl<T> std::fmt::Debug for NodeWriter<T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("NodeWriter").field("limits", &self.limits).finish_non_exhaustive()
    }
}

/// About a write's size in a batch body: its framed record.
fn weight<T: Writable>(item: &T) -> usize {
    item.record().framed_len()
}

impl<T: Writable> NodeWriter<T> {
    /// A writer batching by `limits` per node.
    pub fn new(client: NodeClient, limits: coalesce::Limits) -> Self {
        Self { client, limits, permits: None, tasks: Arc::default() }
    }

    /// The same writer, with at most `permits` batches in flight across all nodes.
    pub fn with_permits(self, permits: Arc<Semaphore>) -> Self {
        Self { permits: Some(permits), ..self }
    }

    /// Writes `item` to the node at `base`, batched with the other writes to
    /// that node; answers once the node has synced it.
    pub async fn write(&self, base: &str, item: T) -> Answer {
        let task = self.task(base);
        task.submit(item).await.unwrap_or_else(|| {
            Err(NodeError::InvalidResponse {
                url: base.to_string(),
                message: "the write batching task stopped".to_string(),
            })
        })
    }

    fn task(&self, base: &str) -> Coalescer<T, Answer> {
        let mut tasks = self.tasks.locked();
        if let Some(task) = tasks.get(base) {
            return task.clone();
        }
        let (client, permits, target) = (self.client.clone(), self.permits.clone(), base.to_string());
        let task = Coalescer::spawn(self.limits, weight::<T>, move |items: Vec<T>| {
            let (client, permits, target) = (client.clone(), permits.clone(), target.clone());
            async move {
                let _permit = match permits {
                    Some(permits) => Some(permits.acquire_owned().await.expect("the semaphore is never closed")),
                    None => None,
                };
                write_records(&client, &target, &items).await
            }
        });
        tasks.insert(base.to_string(), task.clone());
        task
    }
}

/// Sends `items` to the node at `base` in one request (see the module doc),
/// one answer per item, in order.
pub async fn write_records<T: Writable>(client: &NodeClient, base: &str, items: &[T]) -> Vec<Answer> {
    if items.len() > 1
        && let Ok(body) = batch::encode_borrowed(items.iter().map(Writable::record))
    {
        match client.batch(base, body).await {
            Ok(answer) if answer.results.len() == items.len() => {
                return answer.results.into_iter().map(Ok).collect();
            }
            Ok(answer) => {
                let message = format!("answered {} results to a batch of {}", answer.results.len(), items.len());
                let error = NodeError::InvalidResponse { url: base.to_string(), message };
                return items.iter().map(|_| Err(error.duplicate())).collect();
            }
            Err(error) if !error.is_permanent() => return items.iter().map(|_| Err(error.duplicate())).collect(),
            Err(error) => {
                tracing::debug!(%error, writes = items.len(), "a node refused a batch; sending its writes one by one");
            }
        }
    }
    futures_util::future::join_all(items.iter().map(|item| write_alone(client, base, item))).await
}

/// One record as a plain `PUT` or `DELETE /store/{key}`.
async fn write_alone<T: Writable>(client: &NodeClient, base: &str, item: &T) -> Answer {
    let record = item.record();
    if record.tombstone {
        return client.delete(base, record.key, record.version).await;
    }
    let meta = WriteMeta {
        version: record.version,
        expires_at: record.expires_at,
        content_type: record.content_type.to_string(),
    };
    client.put(base, record.key, item.value(), &meta).await
}
