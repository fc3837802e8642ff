//! The replicator's shared state: the in-memory view of the durable queue,
//! delivery with retries, hinted handoff and the metrics.
//!
//! Every job lives in the queue log (see [`super::queue`]) until each of its
//! targets acknowledged it. In memory, a job is an entry in `Jobs::pending`;
//! each of its copies (job, target) is delivered by its own task: up to
//! [`MAX_RETRIES`] retries with exponential backoff and jitter, then the copy
//! becomes a hinted handoff for that target, retried when the target's
//! `/health` answers again (the prober in [`Replicator::run_prober`]).
//!
//! With the membership known ([`super::membership`]), copies for a node that
//! left the cluster never wait for it: a job is retargeted at acceptance, and
//! at every membership version the pending copies for nodes that left are
//! finished and their keys' current owners get a new job instead.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore, watch};

use super::ReplicatorConfig;
use super::membership::Owners;
use super::queue::{Job, Op, QueueLog, Unfinished};
use crate::auth::cluster::ClusterSecret;
use crate::coalesce;
use crate::membership::Membership;
use crate::nodeclient::{NodeClient, NodeError};
use crate::nodewriter::{NodeWriter, Writable};
use crate::proto::{ReplicatorHealth, ReplicatorMetrics};
use crate::shutdown::Shutdown;
use crate::sync::Lock;
use crate::wal::record::RecordRef;

/// A failed copy is retried this many times before it becomes a hinted handoff.
pub const MAX_RETRIES: u32 = 3;
/// Outgoing node requests in flight at once.
const MAX_CONCURRENT_COPIES: usize = 64;
/// How copies for one node are batched: up to 1024 records or 4 MiB per `/batch`
/// (a node takes at least 8 MiB), one batch in flight per node (the next collects the copies
/// arriving meanwhile).
const DELIVERY_LIMITS: coalesce::Limits =
    coalesce::Limits { max_items: 1024, max_bytes: 4 << 20, in_flight: 1, queue: 8192 };
/// After refusing a job because the queue was full, `/health` says `degraded` for this long.
const REFUSAL_MEMORY_MS: u64 = 10_000;

/// Why one copy attempt failed.
#[derive(Debug, Clone)]
struct CopyFailed {
    /// Retrying can never succeed: the node refused this write itself (see [`NodeError::is_permanent`]).
    permanent: bool,
    /// What happened, for the log.
    message: String,
}

impl From<NodeError> for CopyFailed {
    fn from(error: NodeError) -> Self {
        Self { permanent: error.is_permanent(), message: error.to_string() }
    }
}

impl Writable for Arc<Job> {
    fn record(&self) -> RecordRef<'_> {
        Job::record(self)
    }

    fn value(&self) -> Bytes {
        self.value.clone()
    }
}

/// Acknowledgement progress of one job, watched by `x-ydht-wait` requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Targets that acknowledged.
    pub acked: u32,
    /// Targets that will not acknowledge (their node refused the write for good).
    pub rejected: u32,
}

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The queue holds `--max-queue` jobs or `--max-queue-bytes` of values.
    #[error("the replication queue is full ({0}); retry later")]
    Full(String),
    /// The log could not make the job durable.
    #[error("cannot write the replication queue log: {0}")]
    Log(std::io::Error),
}

/// A job as the HTTP handler hands it over (the id and time are assigned here).
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Put or delete.
    pub op: Op,
    /// The key as stored on the nodes.
    pub key: String,
    /// The record's version.
    pub version: u64,
    /// Absolute expiry (Unix milliseconds), if any.
    pub expires_at: Option<u64>,
    /// The value's content type.
    pub content_type: String,
    /// Node base URLs.
    pub targets: Vec<String>,
    /// The value (empty for a delete).
    pub value: Bytes,
}

/// The state of one unfinished job.
#[derive(Debug)]
struct Entry {
    job: Arc<Job>,
    delivered: Vec<bool>,
    /// Targets still to acknowledge (or be rejected).
    remaining: usize,
    /// Copies that already failed for good or exhausted their retries (each counted in `failed_replicas` once).
    failed_once: Vec<bool>,
    progress: watch::Sender<Progress>,
}

#[derive(Debug, Default)]
struct Jobs {
    next_id: u64,
    /// Unfinished jobs by id (ids increase with acceptance, so the first is the oldest).
    pending: BTreeMap<u64, Entry>,
    /// Slots taken by jobs being written to the log.
    reserved: usize,
    /// Value bytes of pending and reserved jobs.
    bytes: u64,
    /// Hinted handoffs: target URL → (job id, target index) waiting for it to come back.
    handoff: HashMap<String, Vec<(u64, usize)>>,
}

#[derive(Debug, Default)]
struct Counters {
    total_replications: AtomicU64,
    successful_replicas: AtomicU64,
    failed_replicas: AtomicU64,
    /// Sum of acceptance → acknowledgement times, in microseconds.
    ack_micros: AtomicU64,
    acks: AtomicU64,
    /// Copies sleeping before a retry.
    backing_off: AtomicU64,
    /// Jobs refused because the queue was full.
    refused_jobs: AtomicU64,
    /// When a job was last refused because the queue was full (Unix ms; 0: never).
    last_refusal_ms: AtomicU64,
    /// Copies given up: refused for good, or for a node that left with no owner left to take them.
    dropped_copies: AtomicU64,
    /// Copies for a node that left, sent to the key's current owners instead.
    retargeted_copies: AtomicU64,
}

struct Inner {
    config: Arc<ReplicatorConfig>,
    secret: ClusterSecret,
    log: Mutex<Option<QueueLog>>,
    client: NodeClient,
    /// The std mutex is fine: it guards plain maps, is never held across an await, and
    /// every critical section is a few map operations.
    jobs: Mutex<Jobs>,
    counters: Counters,
    /// Copies to every node, batched per node, with a bound on the batches in flight at once.
    writer: NodeWriter<Arc<Job>>,
    shutdown: Shutdown,
    /// Copy tasks running; shutdown waits for them (briefly).
    active: AtomicUsize,
    idle: Notify,
    /// Where copies may go, once the membership is known (see [`super::membership`]).
    owners: Mutex<Option<Arc<Owners>>>,
    /// Rate-limits the warning for copies parked as hinted handoffs.
    handoff_warnings: crate::log_throttle::LogThrottle,
}

/// The replicator's state; a cheap-clone handle.
#[derive(Clone)]
pub struct Replicator {
    inner: Arc<Inner>,
}

impl axum::extract::FromRef<Replicator> for ClusterSecret {
    fn from_ref(state: &Replicator) -> Self {
        state.inner.secret.clone()
    }
}

impl Replicator {
    /// Builds the state around an opened log; call [`Replicator::resume`] to deliver recovered work.
    pub fn new(
        config: Arc<ReplicatorConfig>,
        secret: ClusterSecret,
        log: QueueLog,
        next_id: u64,
        shutdown: Shutdown,
    ) -> Self {
        let client = NodeClient::new((*secret.0).clone(), config.request_timeout);
        let jobs = Jobs { next_id, ..Jobs::default() };
        Self {
            inner: Arc::new(Inner {
                config,
                secret,
                log: Mutex::new(Some(log)),
                writer: NodeWriter::new(client.clone(), DELIVERY_LIMITS)
                    .with_permits(Arc::new(Semaphore::new(MAX_CONCURRENT_COPIES))),
                client,
                jobs: Mutex::new(jobs),
                counters: Counters::default(),
                shutdown,
                active: AtomicUsize::new(0),
                idle: Notify::new(),
                owners: Mutex::new(None),
                handoff_warnings: crate::log_throttle::LogThrottle::new(std::time::Duration::from_secs(10)),
            }),
        }
    }

    /// The resolved configuration.
    pub fn config(&self) -> &ReplicatorConfig {
        &self.inner.config
    }

    /// Takes recovered unfinished jobs back into the queue and starts delivering them.
    pub fn resume(&self, unfinished: Vec<Unfinished>) {
        let mut starts = Vec::new();
        {
            let mut jobs = self.inner.jobs.locked();
            for Unfinished { job, delivered } in unfinished {
                let remaining = delivered.iter().filter(|done| !**done).count();
                if remaining == 0 {
                    continue;
                }
                jobs.bytes += job.value.len() as u64;
                for (target, done) in delivered.iter().enumerate() {
                    if !done {
                        starts.push((job.clone(), target));
                    }
                }
                let failed_once = vec![false; delivered.len()];
                let progress =
                    watch::Sender::new(Progress { acked: (delivered.len() - remaining) as u32, rejected: 0 });
                jobs.pending.insert(job.id, Entry { job, delivered, remaining, failed_once, progress });
            }
        }
        if !starts.is_empty() {
            tracing::info!(copies = starts.len(), "resuming unfinished replication jobs from the queue log");
        }
        for (job, target) in starts {
            self.spawn_copy(job, target);
        }
    }

    /// Makes `jobs` durable together (one log append, one fsync; all of them or
    /// none), then starts delivering them. Answers each job's id and a receiver
    /// following its acknowledgements, in order.
    ///
    /// Runs in its own task, so a client hanging up mid-request cannot leave a job
    /// written to the log but never delivered.
    pub async fn enqueue_all(&self, jobs: Vec<NewJob>) -> Result<Vec<(u64, watch::Receiver<Progress>)>, EnqueueError> {
        let this = self.clone();
        tokio::spawn(async move { this.enqueue_now(jobs, true).await })
            .await
            .unwrap_or_else(|error| Err(EnqueueError::Log(std::io::Error::other(error.to_string()))))
    }

    /// [`Replicator::enqueue_all`] in this task; `bounded: false` (jobs replacing queued copies) skips the limits.
    async fn enqueue_now(
        &self,
        mut new: Vec<NewJob>,
        bounded: bool,
    ) -> Result<Vec<(u64, watch::Receiver<Progress>)>, EnqueueError> {
        self.retarget_new(&mut new);
        let count = new.len();
        let size: u64 = new.iter().map(|job| job.value.len() as u64).sum();
        let first_id = {
            let mut jobs = self.inner.jobs.locked();
            let queued = jobs.pending.len() + jobs.reserved;
            let full = if !bounded {
                None
            } else if queued + count > self.inner.config.max_queue {
                Some(format!("{queued} jobs, the maximum is --max-queue {}", self.inner.config.max_queue))
            } else if jobs.bytes + size > self.inner.config.max_queue_bytes {
                Some(format!("{} bytes of values, the maximum is --max-queue-bytes", jobs.bytes))
            } else {
                None
            };
            if let Some(full) = full {
                drop(jobs);
                let counters = &self.inner.counters;
                counters.refused_jobs.fetch_add(count as u64, Ordering::Relaxed);
                counters.last_refusal_ms.store(crate::hlc::wall_millis(), Ordering::Relaxed);
                return Err(EnqueueError::Full(full));
            }
            jobs.reserved += count;
            jobs.bytes += size;
            let id = jobs.next_id;
            jobs.next_id += count as u64;
            id
        };
        let accepted_at_ms = crate::hlc::wall_millis();
        let new_jobs: Vec<Arc<Job>> = new
            .into_iter()
            .zip(first_id..)
            .map(|(new, id)| {
                Arc::new(Job {
                    id,
                    accepted_at_ms,
                    op: new.op,
                    key: new.key,
                    version: new.version,
                    expires_at: new.expires_at,
                    content_type: new.content_type,
                    targets: new.targets,
                    value: new.value,
                })
            })
            .collect();
        let appended = self.append_to_log(new_jobs.clone()).await.map_err(EnqueueError::Log);
        let mut jobs = self.inner.jobs.locked();
        jobs.reserved -= count;
        if let Err(error) = appended {
            jobs.bytes -= size;
            return Err(error);
        }
        let mut accepted = Vec::with_capacity(count);
        for job in &new_jobs {
            let targets = job.targets.len();
            let (progress, receiver) = watch::channel(Progress::default());
            jobs.pending.insert(
                job.id,
                Entry {
                    job: job.clone(),
                    delivered: vec![false; targets],
                    remaining: targets,
                    failed_once: vec![false; targets],
                    progress,
                },
            );
            accepted.push((job.id, receiver));
        }
        drop(jobs);
        self.inner.counters.total_replications.fetch_add(count as u64, Ordering::Relaxed);
        for job in new_jobs {
            for target in 0..job.targets.len() {
                self.spawn_copy(job.clone(), target);
            }
        }
        Ok(accepted)
    }

    /// The owners at the membership version last seen, if any.
    fn owners(&self) -> Option<Arc<Owners>> {
        self.inner.owners.locked().clone()
    }

    /// Points the targets of jobs being accepted that name nodes no longer in the cluster (a gateway
    /// behind on the membership) at their keys' current owners.
    fn retarget_new(&self, new: &mut [NewJob]) {
        let Some(owners) = self.owners() else { return };
        for job in new {
            if let Some(targets) = owners.retarget(&job.key, &job.targets) {
                let gone = job.targets.iter().filter(|target| !owners.is_live(target)).count();
                self.inner.counters.retargeted_copies.fetch_add(gone as u64, Ordering::Relaxed);
                job.targets = targets;
            }
        }
    }

    /// Takes a new membership version: copies waiting for nodes that left go to their keys' current owners.
    pub async fn apply_membership(&self, membership: &Membership) {
        let config = &self.inner.config;
        let Some(owners) = Owners::of(membership, config.vnodes, config.replicas) else { return };
        tracing::info!(version = owners.version, "replicator: following membership version");
        *self.inner.owners.locked() = Some(Arc::new(owners));
        self.reconcile().await;
    }

    /// Finishes the pending copies meant for nodes that are no longer live members; each job that had
    /// such a copy gets a new durable job for its key's current owners that it did not target yet.
    /// The new jobs are made durable before the old copies are marked done in the log, so a crash in
    /// between repeats the work after restart instead of losing it.
    async fn reconcile(&self) {
        let Some(owners) = self.owners() else { return };
        let mut stale: Vec<(u64, usize)> = Vec::new();
        let mut replacements: Vec<NewJob> = Vec::new();
        let (mut retargeted, mut dropped) = (0u64, 0u64);
        {
            let mut jobs = self.inner.jobs.locked();
            let ids: Vec<u64> = jobs.pending.keys().copied().collect();
            for id in ids {
                let Some(entry) = jobs.pending.get(&id) else { continue };
                let job = entry.job.clone();
                let gone: Vec<usize> = (0..job.targets.len())
                    .filter(|&target| !entry.delivered[target] && !owners.is_live(&job.targets[target]))
                    .collect();
                if gone.is_empty() {
                    continue;
                }
                let targets = owners.missing_owners(&job.key, &job.targets);
                if targets.is_empty() {
                    dropped += gone.len() as u64;
                } else {
                    retargeted += gone.len() as u64;
                    replacements.push(NewJob {
                        op: job.op,
                        key: job.key.clone(),
                        version: job.version,
                        expires_at: job.expires_at,
                        content_type: job.content_type.clone(),
                        targets,
                        value: job.value.clone(),
                    });
                }
                for target in gone {
                    settle(&mut jobs, id, target, false);
                    stale.push((id, target));
                }
            }
            jobs.handoff.retain(|url, _| owners.is_live(url));
        }
        if stale.is_empty() {
            return;
        }
        let jobs = replacements.len();
        if !replacements.is_empty() {
            if let Err(error) = self.enqueue_now(replacements, false).await {
                tracing::error!(%error, "replicator: cannot queue the copies for nodes that left; retrying after restart");
                return;
            }
        }
        for (job_id, target) in &stale {
            self.mark_done(*job_id, *target);
        }
        let counters = &self.inner.counters;
        counters.retargeted_copies.fetch_add(retargeted, Ordering::Relaxed);
        counters.dropped_copies.fetch_add(dropped, Ordering::Relaxed);
        tracing::info!(
            version = owners.version,
            retargeted,
            dropped,
            new_jobs = jobs,
            "replicator: copies for nodes that left the cluster go to the keys' current owners"
        );
    }

    /// Whether the copy of `job_id` to target `target` needs no more delivery.
    fn is_settled(&self, job_id: u64, target: usize) -> bool {
        let jobs = self.inner.jobs.locked();
        jobs.pending.get(&job_id).is_none_or(|entry| entry.delivered[target])
    }

    async fn append_to_log(&self, jobs: Vec<Arc<Job>>) -> std::io::Result<()> {
        // Submit under the lock, wait for the fsync without it.
        let pending = self.inner.log.locked().as_ref().map(|log| log.append_all(jobs));
        match pending {
            Some(pending) => pending.await,
            None => Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the replicator is shutting down")),
        }
    }

    fn mark_done(&self, job_id: u64, target: usize) {
        if let Some(log) = self.inner.log.locked().as_ref() {
            log.mark_done(job_id, target);
        }
    }

    fn spawn_copy(&self, job: Arc<Job>, target: usize) {
        let this = self.clone();
        this.inner.active.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            this.deliver(job, target).await;
            if this.inner.active.fetch_sub(1, Ordering::SeqCst) == 1 {
                this.inner.idle.notify_waiters();
            }
        });
    }

    /// Delivers one copy: the first attempt plus up to [`MAX_RETRIES`] retries, then hinted handoff.
    async fn deliver(&self, job: Arc<Job>, target: usize) {
        for attempt in 0..=MAX_RETRIES {
            if attempt > 0 {
                let delay = backoff(self.inner.config.retry_base, attempt);
                self.inner.counters.backing_off.fetch_add(1, Ordering::Relaxed);
                let stopped = tokio::select! {
                    _ = tokio::time::sleep(delay) => false,
                    _ = self.inner.shutdown.wait() => true,
                };
                self.inner.counters.backing_off.fetch_sub(1, Ordering::Relaxed);
                if stopped {
                    return;
                }
            }
            if self.inner.shutdown.is_triggered() || self.is_settled(job.id, target) {
                return;
            }
            let Some(result) = self.send_copy(&job, target).await else { return };
            match result {
                Ok(()) => return self.copy_acked(&job, target),
                Err(failed) if failed.permanent => {
                    let error = failed.message;
                    tracing::error!(
                        job = job.id,
                        key = %job.key,
                        target = %job.targets[target],
                        %error,
                        "a node refused a replica write for good; dropping that copy"
                    );
                    self.inner.counters.dropped_copies.fetch_add(1, Ordering::Relaxed);
                    return self.copy_rejected(&job, target);
                }
                Err(failed) => {
                    tracing::debug!(job = job.id, attempt, error = %failed.message, "replica write failed");
                }
            }
        }
        self.hand_off(&job, target);
    }

    /// One attempt, batched with the other copies for the same node in flight;
    /// `None` when shutdown cut it off after the grace period.
    async fn send_copy(&self, job: &Arc<Job>, target: usize) -> Option<Result<(), CopyFailed>> {
        let copy = Arc::clone(job);
        let attempt =
            async { self.inner.writer.write(&job.targets[target], copy).await.map(|_| ()).map_err(CopyFailed::from) };
        let grace = self.inner.config.shutdown_grace;
        tokio::select! {
            result = attempt => Some(result),
            _ = async { self.inner.shutdown.wait().await; tokio::time::sleep(grace).await } => None,
        }
    }

    fn copy_acked(&self, job: &Job, target: usize) {
        let elapsed_ms = crate::hlc::wall_millis().saturating_sub(job.accepted_at_ms);
        let counters = &self.inner.counters;
        counters.successful_replicas.fetch_add(1, Ordering::Relaxed);
        counters.ack_micros.fetch_add(elapsed_ms * 1000, Ordering::Relaxed);
        counters.acks.fetch_add(1, Ordering::Relaxed);
        self.mark_done(job.id, target);
        self.finish_copy(job.id, target, true);
    }

    fn copy_rejected(&self, job: &Job, target: usize) {
        let mut jobs = self.inner.jobs.locked();
        let first_failure = jobs
            .pending
            .get_mut(&job.id)
            .map(|entry| !std::mem::replace(&mut entry.failed_once[target], true))
            .unwrap_or(false);
        drop(jobs);
        if first_failure {
            self.inner.counters.failed_replicas.fetch_add(1, Ordering::Relaxed);
        }
        self.mark_done(job.id, target);
        self.finish_copy(job.id, target, false);
    }

    fn finish_copy(&self, job_id: u64, target: usize, acked: bool) {
        settle(&mut self.inner.jobs.locked(), job_id, target, acked);
    }

    fn hand_off(&self, job: &Job, target: usize) {
        let mut jobs = self.inner.jobs.locked();
        let Some(entry) = jobs.pending.get_mut(&job.id).filter(|entry| !entry.delivered[target]) else { return };
        let first_failure = !std::mem::replace(&mut entry.failed_once[target], true);
        jobs.handoff.entry(job.targets[target].clone()).or_default().push((job.id, target));
        drop(jobs);
        if first_failure {
            self.inner.counters.failed_replicas.fetch_add(1, Ordering::Relaxed);
            // One line per interval: a node that is down fails every copy meant for it.
            if let Some(suppressed) = self.inner.handoff_warnings.allow() {
                tracing::warn!(
                    job = job.id,
                    target = %job.targets[target],
                    suppressed,
                    "replica write failed after {MAX_RETRIES} retries; keeping it as a hinted handoff until the node \
                     is back"
                );
            }
        }
    }

    /// Probes every target with hinted handoffs each `probe_interval`; redelivers to those that answer.
    pub async fn run_prober(self) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.config.probe_interval) => {}
                _ = self.inner.shutdown.wait() => return,
            }
            let targets: Vec<String> = {
                let jobs = self.inner.jobs.locked();
                jobs.handoff.iter().filter(|(_, copies)| !copies.is_empty()).map(|(target, _)| target.clone()).collect()
            };
            let probes = targets.into_iter().map(|target| {
                let this = self.clone();
                async move {
                    if this.inner.client.health(&target).await.is_ok() {
                        this.redeliver(&target);
                    }
                }
            });
            futures_util::future::join_all(probes).await;
        }
    }

    fn redeliver(&self, target_url: &str) {
        let copies: Vec<(Arc<Job>, usize)> = {
            let mut jobs = self.inner.jobs.locked();
            let waiting = jobs.handoff.remove(target_url).unwrap_or_default();
            waiting
                .into_iter()
                .filter_map(|(job_id, target)| jobs.pending.get(&job_id).map(|entry| (entry.job.clone(), target)))
                .collect()
        };
        if !copies.is_empty() {
            tracing::info!(target = target_url, copies = copies.len(), "node is back; delivering hinted handoffs");
        }
        for (job, target) in copies {
            self.spawn_copy(job, target);
        }
    }

    /// Unfinished jobs.
    pub fn queue_size(&self) -> u64 {
        self.inner.jobs.locked().pending.len() as u64
    }

    /// The `/metrics` document.
    pub fn metrics(&self) -> ReplicatorMetrics {
        let (queue_size, oldest, handoffs) = {
            let jobs = self.inner.jobs.locked();
            let oldest = jobs.pending.values().next().map(|entry| entry.job.accepted_at_ms);
            let handoffs: usize = jobs.handoff.values().map(Vec::len).sum();
            (jobs.pending.len() as u64, oldest, handoffs as u64)
        };
        let counters = &self.inner.counters;
        let acks = counters.acks.load(Ordering::Relaxed);
        let average_ack_time_ms =
            if acks == 0 { 0.0 } else { counters.ack_micros.load(Ordering::Relaxed) as f64 / acks as f64 / 1000.0 };
        ReplicatorMetrics {
            total_replications: counters.total_replications.load(Ordering::Relaxed),
            successful_replicas: counters.successful_replicas.load(Ordering::Relaxed),
            failed_replicas: counters.failed_replicas.load(Ordering::Relaxed),
            queue_size,
            average_ack_time_ms,
            max_replication_lag_ms: oldest.map_or(0.0, |at| crate::hlc::wall_millis().saturating_sub(at) as f64),
            retries_in_progress: counters.backing_off.load(Ordering::Relaxed) + handoffs,
            queue_capacity: self.inner.config.max_queue as u64,
            hinted_handoffs: handoffs,
            refused_jobs: counters.refused_jobs.load(Ordering::Relaxed),
            dropped_copies: counters.dropped_copies.load(Ordering::Relaxed),
            retargeted_copies: counters.retargeted_copies.load(Ordering::Relaxed),
        }
    }

    /// The `/health` document: `degraded` while the queue is full, or refused a job in the last 10 s.
    pub fn health(&self) -> ReplicatorHealth {
        let (queue_size, queue_bytes) = {
            let jobs = self.inner.jobs.locked();
            (jobs.pending.len() as u64, jobs.bytes)
        };
        let config = &self.inner.config;
        let (capacity, capacity_bytes) = (config.max_queue as u64, config.max_queue_bytes);
        let last_refusal = self.inner.counters.last_refusal_ms.load(Ordering::Relaxed);
        let refused_recently =
            last_refusal > 0 && crate::hlc::wall_millis().saturating_sub(last_refusal) < REFUSAL_MEMORY_MS;
        let reason = if queue_size >= capacity {
            Some(format!("replication queue FULL: {queue_size} of {capacity} jobs (--max-queue); new jobs are refused"))
        } else if queue_bytes >= capacity_bytes {
            Some(format!(
                "replication queue FULL: {queue_bytes} of {capacity_bytes} bytes (--max-queue-bytes); new jobs are refused"
            ))
        } else if refused_recently {
            Some(format!(
                "replication queue nearly full: {queue_size} of {capacity} jobs; jobs were refused in the last {} s",
                REFUSAL_MEMORY_MS / 1000
            ))
        } else {
            None
        };
        ReplicatorHealth {
            status: if reason.is_some() { "degraded" } else { "healthy" }.to_string(),
            service: "replicator".to_string(),
            queue_size,
            capacity,
            queue_bytes,
            capacity_bytes,
            reason,
        }
    }

    /// After shutdown: waits up to the grace period for copy tasks, then flushes and closes the log.
    pub async fn close(&self) {
        let deadline = tokio::time::Instant::now() + self.inner.config.shutdown_grace + Duration::from_millis(200);
        loop {
            let idle = self.inner.idle.notified();
            if self.inner.active.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                tracing::warn!("replica writes still running at shutdown; they are redelivered after restart");
                break;
            }
        }
        let log = self.inner.log.locked().take();
        if let Some(log) = log {
            log.close().await;
        }
        let queued = self.queue_size();
        if queued > 0 {
            tracing::info!(jobs = queued, "unfinished replication jobs stay in the queue log for the next start");
        }
    }
}

/// Marks the copy of `job_id` to target `target` finished (acknowledged or given up); a job whose
/// every copy is finished leaves the queue. A copy already finished is left as it is.
fn settle(jobs: &mut Jobs, job_id: u64, target: usize, acked: bool) {
    let Some(entry) = jobs.pending.get_mut(&job_id) else { return };
    if std::mem::replace(&mut entry.delivered[target], true) {
        return;
    }
    entry.remaining -= 1;
    entry.progress.send_modify(|progress| {
        if acked {
            progress.acked += 1;
        } else {
            progress.rejected += 1;
        }
    });
    if entry.remaining == 0 {
        let entry = jobs.pending.remove(&job_id).expect("entry exists");
        jobs.bytes -= entry.job.value.len() as u64;
    }
}

/// The wait before retry `attempt` (1-based): `base · 2^(attempt-1)`, plus up to 50% random jitter.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let exponential = base.saturating_mul(1 << (attempt.saturating_sub(1)).min(16));
    let jitter = exponential.mul_f64(rand::random::<f64>() * 0.5);
    exponential + jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_bounded_jitter() {
        let base = Duration::from_millis(100);
        for attempt in 1..=3 {
            let floor = base * (1 << (attempt - 1));
            for _ in 0..50 {
                let delay = backoff(base, attempt);
                assert!(delay >= floor && delay <= floor.mul_f64(1.5), "attempt {attempt}: {delay:?}");
            }
        }
    }
}
