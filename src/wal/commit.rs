//! The node's WAL writer: a [`Log`] of the shared group-commit thread
//! ([`super::group`]) that owns the active segment. Callers hand it encoded
//! records and wait; the thread takes every append that queued up while it was
//! busy, writes them with one `write`, makes them durable with one `fdatasync`,
//! applies them to the caller's state in log order, and only then acknowledges
//! each of them. So concurrent writers share a sync, and no write is
//! acknowledged before the sync that covers it.
//!
//! [`SyncMode::PerWrite`] turns batching off (one sync per append). It exists
//! to measure what group commit buys (`cargo bench --bench node_write`).
//!
//! When the active segment passes the configured size, the thread starts a new
//! segment and calls [`Apply::rotated`]; the state at that instant covers
//! exactly the older segments, so a snapshot of it lets them be deleted
//! (see [`super::snapshot::compact`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::oneshot;

use super::WalError;
use super::group::{Batching, GroupWriter, Log, Waker};
use super::record::{self, Entry};
use super::segment::{Segment, WalDir};

/// How appends are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    /// Concurrent appends share one fdatasync (the default).
    Group,
    /// Every append gets its own fdatasync (slow; for benchmark comparison).
    PerWrite,
}

impl SyncMode {
    /// Every mode, in the order `--help` lists them.
    pub const ALL: [SyncMode; 2] = [SyncMode::Group, SyncMode::PerWrite];

    /// The flag spelling: `group` or `per-write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Group => "group",
            Self::PerWrite => "per-write",
        }
    }
}

impl std::str::FromStr for SyncMode {
    type Err = UnknownSyncMode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SyncMode::ALL.into_iter().find(|mode| mode.as_str() == text).ok_or_else(|| UnknownSyncMode(text.to_string()))
    }
}

/// A sync mode name that is not `group` or `per-write`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sync mode {0:?}; use group or per-write")]
pub struct UnknownSyncMode(pub String);

/// Settings of the writer thread.
#[derive(Debug, Clone, Copy)]
pub struct CommitterConfig {
    /// Group commit or one sync per append.
    pub mode: SyncMode,
    /// Start a new segment (and compact) once the active one reaches this many bytes.
    pub max_segment_bytes: u64,
}

/// Most bytes one group commit writes before it syncs.
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Most appends one group commit takes.
const MAX_BATCH_APPENDS: usize = 4096;
/// Appends that may wait for the writer before callers are slowed down.
const QUEUE_CAPACITY: usize = 8192;

/// The caller's state, updated by the writer thread after each sync.
pub trait Apply: Send + 'static {
    /// What applying one record reports back to its writer.
    type Outcome: Send + 'static;

    /// Applies `records` (one append) to the state. Called on the writer
    /// thread, in log order, after the sync that covers them and before the
    /// append is acknowledged.
    fn apply(&mut self, records: Vec<Entry>) -> Vec<Self::Outcome>;

    /// Called on the writer thread right after appends moved to segment
    /// `generation`: the state now reflects exactly the older segments.
    /// No further rotation happens until `ticket` is dropped, which the
    /// compaction does when it ends (see [`super::snapshot::compact`]).
    fn rotated(&mut self, generation: u64, ticket: CompactionTicket);
}

/// Held by a running compaction. Dropping it (when the compaction ends, or
/// fails, or its thread panics) allows the next rotation and wakes the writer,
/// which rotates again at once if the active segment filled up meanwhile.
pub struct CompactionTicket {
    stats: Arc<WalStats>,
    wake_writer: Box<dyn Fn() + Send>,
}

impl CompactionTicket {
    /// The WAL counters, to record the finished snapshot in.
    pub fn stats(&self) -> &WalStats {
        &self.stats
    }
}

impl Drop for CompactionTicket {
    fn drop(&mut self) {
        self.stats.compacting.store(false, Ordering::Release);
        (self.wake_writer)();
    }
}

/// Counters shared by the writer, compaction and `/metrics`.
#[derive(Debug, Default)]
pub struct WalStats {
    syncs: AtomicU64,
    records: AtomicU64,
    appends: AtomicU64,
    synced_bytes: AtomicU64,
    retired_bytes: AtomicU64,
    generation: AtomicU64,
    compacting: AtomicBool,
    /// A snapshot was asked for regardless of the active segment's size (see [`Committer::request_snapshot`]).
    snapshot_requested: AtomicBool,
    snapshots: AtomicU64,
    snapshot_bytes: AtomicU64,
    last_snapshot_unix_ms: AtomicU64,
    /// The active segment's generation and synced length, packed ([`WalStats::head`]).
    head: AtomicU64,
    /// Woken whenever the head moves.
    head_moved: tokio::sync::Notify,
}

/// Bits of [`WalStats::head`] for the synced length (a segment is far below 1 TiB).
pub const HEAD_OFFSET_BITS: u32 = 40;

impl WalStats {
    /// fdatasync calls made since start.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Acquire)
    }

    /// Records appended since start.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Appends (requests) acknowledged since start.
    pub fn appends(&self) -> u64 {
        self.appends.load(Ordering::Relaxed)
    }

    /// Bytes of the active segment known to be on disk.
    pub fn synced_bytes(&self) -> u64 {
        self.synced_bytes.load(Ordering::Acquire)
    }

    /// Bytes of all WAL segments (the active one and older ones awaiting compaction).
    pub fn wal_bytes(&self) -> u64 {
        self.synced_bytes() + self.retired_bytes.load(Ordering::Relaxed)
    }

    /// The active segment's generation and how many of its bytes are on disk, as one reading.
    pub fn head(&self) -> (u64, u64) {
        let head = self.head.load(Ordering::Acquire);
        (head >> HEAD_OFFSET_BITS, head & ((1 << HEAD_OFFSET_BITS) - 1))
    }

    fn set_head(&self, generation: u64, synced: u64) {
        self.head.store(generation << HEAD_OFFSET_BITS | synced.min((1 << HEAD_OFFSET_BITS) - 1), Ordering::Release);
        self.head_moved.notify_waiters();
    }

    /// Resolves when the head next moves (more of the log is on disk). Create it before reading
    /// the head, so a move in between is not missed.
    pub fn head_moved(&self) -> tokio::sync::futures::Notified<'_> {
        self.head_moved.notified()
    }

    /// The active segment's generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Whether a snapshot is being written.
    pub fn compacting(&self) -> bool {
        self.compacting.load(Ordering::Acquire)
    }

    /// Snapshots written since start.
    pub fn snapshots(&self) -> u64 {
        self.snapshots.load(Ordering::Relaxed)
    }

    /// Size of the latest snapshot written since start (0 if none).
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes.load(Ordering::Relaxed)
    }

    /// When the latest snapshot was written (Unix ms), if one was since start.
    pub fn last_snapshot_unix_ms(&self) -> Option<u64> {
        Some(self.last_snapshot_unix_ms.load(Ordering::Relaxed)).filter(|&ms| ms != 0)
    }

    /// Records the state recovery left: the active segment and older segments' bytes.
    pub fn recovered(&self, segment: &Segment, retired_bytes: u64) {
        self.synced_bytes.store(segment.len(), Ordering::Release);
        self.retired_bytes.store(retired_bytes, Ordering::Relaxed);
        self.generation.store(segment.generation(), Ordering::Relaxed);
        self.set_head(segment.generation(), segment.len());
    }

    /// Records a finished compaction: a snapshot of `bytes` replaced every older segment.
    pub(super) fn compacted(&self, bytes: u64) {
        self.retired_bytes.store(0, Ordering::Relaxed);
        self.snapshots.fetch_add(1, Ordering::Relaxed);
        self.snapshot_bytes.store(bytes, Ordering::Relaxed);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.last_snapshot_unix_ms.store(now.as_millis() as u64, Ordering::Relaxed);
    }
}

/// An acknowledged append.
#[derive(Debug)]
pub struct Committed<O> {
    /// What [`Apply::apply`] reported for each record, in order.
    pub outcomes: Vec<O>,
    /// The segment the records went to.
    pub generation: u64,
    /// The segment offset just past this append's last frame.
    pub end_offset: u64,
    /// The number of the sync that made this append durable (1-based, since start).
    pub sync: u64,
}

struct Request<O> {
    frames: Vec<u8>,
    records: Vec<Entry>,
    reply: oneshot::Sender<Result<Committed<O>, WalError>>,
}

/// The handle callers append through; the writer thread stops on [`Committer::close`].
pub struct Committer<A: Apply> {
    writer: GroupWriter<Writer<A>>,
    stats: Arc<WalStats>,
}

impl<A: Apply> Committer<A> {
    /// Starts the writer thread appending to `segment` (as left by recovery).
    pub fn start(dir: WalDir, segment: Segment, config: CommitterConfig, stats: Arc<WalStats>, applier: A) -> Self {
        let mut segment = segment;
        segment.fit_preallocation(config.max_segment_bytes);
        let batching = Batching {
            group: config.mode == SyncMode::Group,
            max_appends: MAX_BATCH_APPENDS,
            max_bytes: MAX_BATCH_BYTES,
            capacity: QUEUE_CAPACITY,
            idle_tick: None,
        };
        let make = |wake| Writer {
            wake,
            dir,
            next_rotation_at: config.max_segment_bytes,
            segment,
            stats: Arc::clone(&stats),
            max_segment_bytes: config.max_segment_bytes,
            applier,
            buffer: Vec::with_capacity(1 << 20),
            failed: None,
            disk_full: false,
        };
        let writer = GroupWriter::start("wal-writer", batching, make).expect("cannot start the WAL writer thread");
        Self { writer, stats }
    }

    /// Appends `records` atomically (one write, one sync) and waits until they
    /// are durable and applied.
    pub async fn append(&self, records: Vec<Entry>) -> Result<Committed<A::Outcome>, WalError> {
        let mut frames = Vec::with_capacity(records.iter().map(Entry::framed_len).sum());
        for found in &records {
            record::encode_entry(found, &mut frames)?;
        }
        let (reply, answer) = oneshot::channel();
        self.writer.submit(Request { frames, records, reply }).await.map_err(|_| WalError::Closed)?;
        answer.await.map_err(|_| WalError::Closed)?
    }

    /// Asks the writer to rotate and snapshot soon even though the active segment is not full:
    /// state changed in memory without a log record (keys dropped after a membership change)
    /// becomes durable once a snapshot taken after the change replaces the older segments. If a
    /// snapshot is running, another one follows it (the running one may have copied the old state).
    pub fn request_snapshot(&self) {
        self.stats.snapshot_requested.store(true, Ordering::Release);
        self.writer.wake();
    }

    /// Appends waiting for the writer right now.
    pub fn queued(&self) -> usize {
        self.writer.queued()
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<WalStats> {
        &self.stats
    }

    /// Lets every append queued so far finish, makes the segment durable, and
    /// stops the writer thread. Later appends fail with [`WalError::Closed`].
    pub async fn close(&self) {
        self.writer.close().await;
    }
}

struct Writer<A: Apply> {
    dir: WalDir,
    segment: Segment,
    max_segment_bytes: u64,
    stats: Arc<WalStats>,
    applier: A,
    /// One batch's frames, reused.
    buffer: Vec<u8>,
    /// Lets a compaction wake the writer when it ends.
    wake: Waker<Request<A::Outcome>>,
    next_rotation_at: u64,
    /// Set after a failed write or sync: nothing written afterwards could be trusted.
    failed: Option<String>,
    /// Whether the last append was refused for lack of space (so that is logged once, not per write).
    disk_full: bool,
}

impl<A: Apply> Log for Writer<A> {
    type Append = Request<A::Outcome>;

    fn bytes(request: &Request<A::Outcome>) -> usize {
        request.frames.len()
    }

    /// Writes the batch with one sync, applies it, then answers each append.
    fn commit(&mut self, batch: Vec<Request<A::Outcome>>) {
        if let Some(reason) = &self.failed {
            for request in batch {
                let _ = request.reply.send(Err(WalError::Failed(reason.clone())));
            }
            return;
        }
        self.buffer.clear();
        let start = self.segment.len();
        let mut ends = Vec::with_capacity(batch.len());
        for request in &batch {
            self.buffer.extend_from_slice(&request.frames);
            ends.push(start + self.buffer.len() as u64);
        }
        if let Err(error) = self.segment.append(&self.buffer).and_then(|()| self.segment.sync()) {
            // Nothing of this batch was acknowledged: cut it off so the log ends on its last good frame.
            let cut = self.segment.cut_back(start);
            if super::is_out_of_space(&error) && cut.is_ok() {
                if !self.disk_full {
                    tracing::warn!(
                        file = %self.segment.path().display(),
                        "the disk is full: refusing writes (reads go on); they resume once space is freed"
                    );
                    self.disk_full = true;
                }
                for request in batch {
                    let _ = request.reply.send(Err(WalError::DiskFull(self.dir.path().to_path_buf())));
                }
                return;
            }
            let reason = format!("{}: {error}", self.segment.path().display());
            tracing::error!(error = %reason, "WAL write failed; refusing further writes until restart");
            for request in batch {
                let _ = request.reply.send(Err(WalError::Failed(reason.clone())));
            }
            self.failed = Some(reason);
            return;
        }
        if std::mem::take(&mut self.disk_full) {
            tracing::info!(file = %self.segment.path().display(), "disk space is back: taking writes again");
        }
        let sync = self.stats.syncs.fetch_add(1, Ordering::AcqRel) + 1;
        self.stats.synced_bytes.store(self.segment.len(), Ordering::Release);
        let generation = self.segment.generation();
        self.stats.set_head(generation, self.segment.len());
        for (request, end_offset) in batch.into_iter().zip(ends) {
            self.stats.records.fetch_add(request.records.len() as u64, Ordering::Relaxed);
            self.stats.appends.fetch_add(1, Ordering::Relaxed);
            let outcomes = self.applier.apply(request.records);
            let _ = request.reply.send(Ok(Committed { outcomes, generation, end_offset, sync }));
        }
    }

    fn maintain(&mut self) {
        self.rotate_if_full();
    }

    fn close(&mut self) {
        // Closed cleanly, the segment ends on its last record (trimming syncs too).
        if let Err(error) = self.segment.trim() {
            tracing::error!(%error, file = %self.segment.path().display(), "final WAL sync failed");
        }
    }
}

impl<A: Apply> Writer<A> {
    fn rotate_if_full(&mut self) {
        let requested = self.stats.snapshot_requested.load(Ordering::Acquire);
        if self.failed.is_some()
            || (self.segment.len() < self.next_rotation_at && !requested)
            || self.stats.compacting()
        {
            return;
        }
        self.stats.snapshot_requested.store(false, Ordering::Release);
        let generation = self.segment.generation() + 1;
        match Segment::create(&self.dir, generation) {
            Ok(mut next) => {
                next.fit_preallocation(self.max_segment_bytes);
                let mut previous = std::mem::replace(&mut self.segment, next);
                if let Err(error) = previous.trim() {
                    // Harmless: recovery reads the zeros left after its records as padding.
                    tracing::warn!(%error, file = %previous.path().display(), "cannot trim a full WAL segment");
                }
                self.stats.retired_bytes.fetch_add(previous.len(), Ordering::Relaxed);
                self.stats.synced_bytes.store(self.segment.len(), Ordering::Release);
                self.stats.generation.store(generation, Ordering::Relaxed);
                self.stats.set_head(generation, self.segment.len());
                self.stats.compacting.store(true, Ordering::Release);
                self.next_rotation_at = self.max_segment_bytes;
                tracing::info!(generation, "WAL segment full; started a new one and a snapshot");
                let wake = self.wake.clone();
                let wake_writer = Box::new(move || wake.wake());
                self.applier.rotated(generation, CompactionTicket { stats: Arc::clone(&self.stats), wake_writer });
            }
            Err(error) => {
                tracing::warn!(%error, "cannot start a new WAL segment; compaction postponed");
                self.next_rotation_at = self.segment.len() + self.max_segment_bytes;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Lock;
    use crate::wal::Record;
    use std::sync::Mutex;
    use std::sync::mpsc as std_mpsc;

    /// Records the keys it applied, optionally blocking on its first call until released.
    struct Recorder {
        applied: Arc<Mutex<Vec<String>>>,
        gate: Option<(std_mpsc::Sender<()>, std_mpsc::Receiver<()>)>,
    }

    impl Apply for Recorder {
        type Outcome = ();

        fn apply(&mut self, records: Vec<Entry>) -> Vec<()> {
            if let Some((entered, release)) = self.gate.take() {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
            let mut applied = self.applied.locked();
            records.into_iter().map(|found| applied.extend(found.into_record().map(|found| found.key))).collect()
        }

        fn rotated(&mut self, _generation: u64, _ticket: CompactionTicket) {}
    }

    fn start(
        dir: &WalDir,
        mode: SyncMode,
        gate: Option<(std_mpsc::Sender<()>, std_mpsc::Receiver<()>)>,
    ) -> (Arc<Committer<Recorder>>, Arc<Mutex<Vec<String>>>) {
        let recovered = super::super::recover(dir, false, &super::super::segment::Retention::NONE, |_| {}).unwrap();
        let stats = Arc::new(WalStats::default());
        stats.recovered(&recovered.segment, recovered.retired_bytes);
        let applied = Arc::new(Mutex::new(Vec::new()));
        let config = CommitterConfig { mode, max_segment_bytes: u64::MAX };
        let recorder = Recorder { applied: Arc::clone(&applied), gate };
        (Arc::new(Committer::start(dir.clone(), recovered.segment, config, stats, recorder)), applied)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_are_acknowledged_only_after_their_sync() {
        let dir = tempfile::tempdir().unwrap();
        let wal = WalDir::new(dir.path());
        let (committer, applied) = start(&wal, SyncMode::Group, None);
        let writers: Vec<_> = (0..64)
            .map(|writer| {
                let committer = Arc::clone(&committer);
                tokio::spawn(async move {
                    for n in 0..25 {
                        let record = Record::put(format!("w{writer}-{n}"), n + 1, vec![writer as u8; 40], "x/y");
                        let committed = committer.append(vec![record.into()]).await.unwrap();
                        let stats = committer.stats();
                        assert!(
                            stats.synced_bytes() >= committed.end_offset,
                            "acknowledged before its bytes were synced"
                        );
                        assert!(stats.syncs() >= committed.sync);
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let syncs = committer.stats().syncs();
        assert!((1..=64 * 25).contains(&syncs), "{syncs} syncs");
        committer.close().await;

        // Everything acknowledged is in the log, in the order it was applied.
        let mut replayed = Vec::new();
        super::super::recover(&wal, false, &super::super::segment::Retention::NONE, |found| {
            replayed.extend(found.into_record().map(|found| found.key))
        })
        .unwrap();
        assert_eq!(replayed.len(), 64 * 25);
        assert_eq!(replayed, *applied.locked());
    }

    /// Blocks the writer inside its first apply, queues `waiting` appends, then
    /// releases it; returns the sync number each queued append was acknowledged with.
    async fn syncs_for_queued_appends(mode: SyncMode, waiting: usize) -> (Vec<u64>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let wal = WalDir::new(dir.path());
        let (entered_sender, entered) = std_mpsc::channel();
        let (release, release_receiver) = std_mpsc::channel();
        let (committer, _) = start(&wal, mode, Some((entered_sender, release_receiver)));
        let first = tokio::spawn({
            let committer = Arc::clone(&committer);
            async move { committer.append(vec![Record::delete("first", 1).into()]).await.unwrap().sync }
        });
        tokio::task::spawn_blocking(move || entered.recv().unwrap()).await.unwrap();
        let queued: Vec<_> = (0..waiting)
            .map(|n| {
                let committer = Arc::clone(&committer);
                tokio::spawn(
                    async move { committer.append(vec![Record::delete(format!("k{n}"), 1).into()]).await.unwrap() },
                )
            })
            .collect();
        while committer.queued() < waiting {
            tokio::task::yield_now().await;
        }
        assert!(queued.iter().all(|task| !task.is_finished()), "acknowledged while the writer was blocked");
        assert_eq!(committer.stats().syncs(), 1);
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), 1);
        let mut syncs = Vec::new();
        for task in queued {
            syncs.push(task.await.unwrap().sync);
        }
        let total = committer.stats().syncs();
        committer.close().await;
        (syncs, total)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn appends_queued_during_a_sync_share_the_next_one() {
        let (syncs, total) = syncs_for_queued_appends(SyncMode::Group, 50).await;
        assert_eq!(total, 2);
        assert!(syncs.iter().all(|&sync| sync == 2), "{syncs:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn per_write_mode_syncs_every_append() {
        let (mut syncs, total) = syncs_for_queued_appends(SyncMode::PerWrite, 20).await;
        assert_eq!(total, 21);
        syncs.sort_unstable();
        assert_eq!(syncs, (2..=21).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn appends_after_close_fail_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let (committer, _) = start(&WalDir::new(dir.path()), SyncMode::Group, None);
        committer.append(vec![Record::delete("a", 1).into()]).await.unwrap();
        committer.close().await;
        assert!(matches!(committer.append(vec![Record::delete("b", 2).into()]).await, Err(WalError::Closed)));
    }
}
