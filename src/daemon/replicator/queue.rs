//! The replicator's durable job queue: an append-only log in `<data-dir>/replicator/`.
//!
//! File format (version 2): the 8-byte header `YDHTRQ\0\x02`, then entries, each
//! one frame of the WAL's format ([`crate::wal::frame`]: length, length CRC,
//! payload CRC, payload), read back by the same scan and torn-tail rule as the
//! node's WAL. Payloads start with a tag byte:
//! - `1` job: id, acceptance time, operation, version, expiry, key, content
//!   type, targets and value;
//! - `2` done: (job id, target index) — that copy was delivered;
//! - `3` next id: the first job id not used yet (written at the head of a
//!   compacted log so ids never repeat).
//!
//! One writer thread owns the file: the log is a [`crate::wal::group::Log`],
//! driven by the same group-commit thread as the node's WAL. Appends of jobs
//! are group-committed: every job waiting when a batch starts is written and
//! covered by one `fdatasync` before any of their callers hears "durable". Done markers ride along with
//! the next batch, or are written unsynced after 100 ms without one (losing one
//! only means a copy is delivered twice, which versioned writes make harmless).
//!
//! On open the log is replayed: jobs with a done marker for every target are
//! finished; the rest come back as unfinished work. Zeros after the last record
//! are the writer's preallocation (see [`crate::wal::segment::PREALLOCATE_BYTES`])
//! and are dropped without a warning. A torn record at the end
//! (a crash mid-append) is truncated with a warning; a bad record anywhere
//! else is corruption and refuses to start, naming the file and offset.
//!
//! A log of format 1 (ydht before the shared frame: `[length][CRC][payload]`
//! frames without the length's CRC) is read once and rewritten in format 2.
//!
//! Compaction rewrites only the unfinished jobs (and their done markers) into
//! a temporary file, fsyncs it, renames it over the log and fsyncs the
//! directory, so a crash at any point leaves either the old or the new log.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::Exit;
use crate::sync::Lock;
use crate::wal::codec::{DecodeError, Reader};
use crate::wal::frame::{self, ScanEnd};
use crate::wal::group::{Batching, GroupWriter, Log};
use crate::wal::record::RecordRef;
use crate::wal::segment::{self, DirLock, LockError};

/// The queue log's file name inside the replicator's directory.
pub const LOG_FILE: &str = "queue.log";
/// The lock file that keeps two replicators off one queue.
pub const LOCK_FILE: &str = "queue.lock";
const TEMP_FILE: &str = "queue.log.tmp";
/// Magic and format version at the start of every queue log.
pub const MAGIC: &[u8; 8] = b"YDHTRQ\x00\x02";
/// The header of a format-1 log, read once to migrate it.
const MAGIC_V1: &[u8; 8] = b"YDHTRQ\x00\x01";
const FRAME_HEADER: usize = frame::FRAME_HEADER_BYTES;
/// No entry may be larger than this (a job carries at most one value; `--max-value-bytes` is at most half).
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;
/// The writer's batches: at most this many appends, about this many bytes.
const BATCHING: Batching = Batching {
    group: true,
    max_appends: 1024,
    max_bytes: 16 << 20,
    capacity: 8192,
    idle_tick: Some(DONE_FLUSH_INTERVAL),
};

const TAG_JOB: u8 = 1;
const TAG_DONE: u8 = 2;
const TAG_NEXT_ID: u8 = 3;

/// What a replication job does on each target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `PUT /store/{key}` with the value.
    Put,
    /// `DELETE /store/{key}` (a tombstone at the version).
    Delete,
}

/// One accepted replication job: a versioned write to copy to every target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Queue-wide unique id, increasing with acceptance.
    pub id: u64,
    /// When the job was accepted (Unix milliseconds).
    pub accepted_at_ms: u64,
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
    /// Base URLs of the nodes to write to.
    pub targets: Vec<String>,
    /// The value (empty for a delete).
    pub value: Bytes,
}

impl Job {
    /// The write the job copies, as a record (a tombstone for a delete).
    pub fn record(&self) -> RecordRef<'_> {
        let tombstone = self.op == Op::Delete;
        RecordRef {
            key: &self.key,
            version: self.version,
            expires_at: self.expires_at,
            tombstone,
            content_type: if tombstone { "" } else { &self.content_type },
            value: &self.value,
        }
    }
}

/// A job that is not delivered to every target yet, as found on open.
#[derive(Debug, Clone)]
pub struct Unfinished {
    /// The job.
    pub job: Arc<Job>,
    /// `delivered[i]` tells whether target `i` already acknowledged it.
    pub delivered: Vec<bool>,
}

/// The result of replaying the log on open.
#[derive(Debug)]
pub struct Recovered {
    /// Unfinished jobs in id order.
    pub unfinished: Vec<Unfinished>,
    /// The first unused job id.
    pub next_id: u64,
    /// Bytes cut off a torn tail (0 when the log was clean).
    pub truncated_bytes: u64,
}

/// When the writer rewrites the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Compact when the log is larger than this and at least half of it is finished work.
    pub max_bytes: u64,
    /// Compact when every job is finished and the log is larger than this.
    pub idle_bytes: u64,
}

impl CompactionPolicy {
    /// The policy for a size threshold: idle compaction at 1/64 of it.
    pub fn for_threshold(max_bytes: u64) -> Self {
        Self { max_bytes, idle_bytes: (max_bytes / 64).max(MAGIC.len() as u64 + 1) }
    }
}

/// Jobs to write together, and who waits for them to be durable.
struct Append {
    jobs: Vec<Arc<Job>>,
    reply: oneshot::Sender<io::Result<()>>,
}

/// Done markers waiting for the writer: it takes them with its next batch, or
/// after [`DONE_FLUSH_INTERVAL`] without one. Marking a copy done never wakes
/// the writer thread (a wake-up per delivered copy cost more than the write).
type PendingDones = Arc<Mutex<Vec<(u64, u16)>>>;

/// Longest a done marker waits for the writer when no job arrives.
const DONE_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Handle to the queue log; the writer thread stops when it is closed or dropped.
#[derive(Debug)]
pub struct QueueLog {
    writer: GroupWriter<Writer>,
    dones: PendingDones,
}

impl QueueLog {
    /// Opens (or creates) the log in `dir`, replays it and starts the writer thread.
    /// Blocking: call it from `spawn_blocking` in async code.
    pub fn open(dir: &Path, policy: CompactionPolicy) -> anyhow::Result<(QueueLog, Recovered)> {
        crate::config::create_private_dir(dir).map_err(|error| {
            Exit::usage(format!(
                "cannot create the replicator queue dir {}: {error}; choose another --data-dir",
                dir.display()
            ))
        })?;
        let lock = lock_dir(dir)?;
        let path = dir.join(LOG_FILE);
        let replay = replay(&path)?;
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the queue log {}", path.display()))?;
        let dones = PendingDones::default();
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            dones: Arc::clone(&dones),
            file,
            len: replay.valid_len,
            allocated: replay.valid_len,
            live: replay.live,
            live_bytes: replay.live_bytes,
            next_id: replay.next_id,
            policy,
            broken: None,
            _lock: lock,
        };
        if replay.migrate {
            writer.compact().with_context(|| format!("cannot rewrite the queue log {} in format 2", path.display()))?;
        }
        writer.maybe_compact();
        let recovered = Recovered {
            unfinished: writer
                .live
                .values()
                .map(|live| Unfinished { job: live.job.clone(), delivered: live.delivered.clone() })
                .collect(),
            next_id: writer.next_id,
            truncated_bytes: replay.truncated_bytes,
        };
        let writer = GroupWriter::start("replicator-queue-log", BATCHING, |_| writer)
            .context("cannot start the queue log writer thread")?;
        Ok((QueueLog { writer, dones }, recovered))
    }

    /// Hands `job` to the writer at once; the returned future completes once it is
    /// fsynced (sharing the fsync with concurrent appends). It does not borrow the log.
    pub fn append(&self, job: Arc<Job>) -> impl Future<Output = io::Result<()>> + Send + 'static {
        self.append_all(vec![job])
    }

    /// Like [`QueueLog::append`] for several jobs, written together (one write, one fsync).
    pub fn append_all(&self, jobs: Vec<Arc<Job>>) -> impl Future<Output = io::Result<()>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self.writer.submit(Append { jobs, reply });
        async move {
            sent.await.map_err(|_| closed())?;
            answer.await.map_err(|_| closed())?
        }
    }

    /// Records that `target` of `job_id` acknowledged; persisted with the next batch.
    /// After close this does nothing (the copy is simply delivered again after restart).
    pub fn mark_done(&self, job_id: u64, target: usize) {
        let target = u16::try_from(target).expect("targets are bounded far below u16::MAX");
        self.dones.locked().push((job_id, target));
    }

    /// Writes and fsyncs everything pending, then stops the writer thread.
    pub async fn close(self) {
        self.writer.close().await;
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the queue log is closed (shutting down)")
}

/// Takes the exclusive lock on the queue's directory, held while the writer lives.
fn lock_dir(dir: &Path) -> anyhow::Result<DirLock> {
    let path = dir.join(LOCK_FILE);
    DirLock::take(&path).map_err(|error| match error {
        LockError::Open(source) => anyhow::Error::new(source).context(format!("cannot open {}", path.display())),
        LockError::Held => Exit::usage(format!(
            "another replicator is using the queue in {}; stop it or choose another --data-dir",
            dir.display()
        ))
        .into(),
    })
}

/// A job still being delivered, as the writer tracks it for compaction.
#[derive(Debug)]
struct Live {
    job: Arc<Job>,
    delivered: Vec<bool>,
}

struct Replay {
    live: BTreeMap<u64, Live>,
    live_bytes: u64,
    next_id: u64,
    valid_len: u64,
    truncated_bytes: u64,
    /// Read from a format-1 log: rewrite it in the current format.
    migrate: bool,
}

/// Reads the log at `path` (creating it if absent), truncating a torn tail.
fn replay(path: &Path) -> anyhow::Result<Replay> {
    let mut data = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut data).with_context(|| format!("cannot read the queue log {}", path.display()))?;
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("cannot open the queue log {}", path.display())),
    }
    if data.len() < MAGIC.len() {
        if !MAGIC.starts_with(&data) {
            return Err(corrupt(path, 0, "it does not start with the queue log header"));
        }
        // Absent, or a crash while creating it: start a fresh log.
        write_atomically(path, &MAGIC[..])
            .with_context(|| format!("cannot create the queue log {}", path.display()))?;
        return Ok(Replay {
            live: BTreeMap::new(),
            live_bytes: 0,
            next_id: 1,
            valid_len: MAGIC.len() as u64,
            truncated_bytes: 0,
            migrate: false,
        });
    }
    let mut live: BTreeMap<u64, Live> = BTreeMap::new();
    let mut next_id = 1;
    let mut apply = |entry: Record| match entry {
        Record::Job(job) => {
            next_id = next_id.max(job.id + 1);
            let targets = job.targets.len();
            live.insert(job.id, Live { job: Arc::new(job), delivered: vec![false; targets] });
        }
        Record::Done { job_id, target } => {
            if let Some(entry) = live.get_mut(&job_id) {
                if let Some(flag) = entry.delivered.get_mut(usize::from(target)) {
                    *flag = true;
                }
                if entry.delivered.iter().all(|done| *done) {
                    live.remove(&job_id);
                }
            }
        }
        Record::NextId(id) => next_id = next_id.max(id),
    };
    let migrate = &data[..MAGIC.len()] == MAGIC_V1;
    let (offset, end) = if migrate {
        scan_v1(&data, &mut apply)
    } else if &data[..MAGIC.len()] == MAGIC {
        frame::scan(&data, MAGIC.len(), decode, &mut apply)
    } else {
        return Err(corrupt(path, 0, "it is not a ydht queue log or has an unsupported format version"));
    };
    let torn = match end {
        ScanEnd::Clean => false,
        // Zeros after the last record: the writer's preallocation, or a file extended
        // whose data never reached the disk.
        ScanEnd::Torn { offset, .. } if data[offset as usize..].iter().all(|byte| *byte == 0) => false,
        ScanEnd::Torn { .. } => true,
        ScanEnd::Corrupt { offset, reason } => return Err(corrupt(path, offset as usize, &reason.to_string())),
    };
    let truncated_bytes = if torn { (data.len() - offset) as u64 } else { 0 };
    if torn {
        tracing::warn!(
            path = %path.display(),
            offset,
            bytes = truncated_bytes,
            "queue log ends in a torn record (a crash during an append); truncating it"
        );
    }
    if offset < data.len() {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(offset as u64)?;
        file.sync_all()?;
    }
    let live_bytes = live.values().map(live_size).sum();
    Ok(Replay { live, live_bytes, next_id, valid_len: offset as u64, truncated_bytes, migrate })
}

/// Reads the entries of a format-1 log (`[length][CRC of payload][payload]`
/// frames), with the same torn-tail rule as [`frame::scan`].
fn scan_v1(data: &[u8], mut each: impl FnMut(Record)) -> (usize, ScanEnd) {
    const V1_HEADER: usize = 8;
    let mut offset = MAGIC_V1.len();
    while offset < data.len() {
        let rest = &data[offset..];
        let zeros_from = |from: usize| rest.get(from..).is_none_or(|after| after.iter().all(|byte| *byte == 0));
        let torn = ScanEnd::Torn { offset: offset as u64, bytes: rest.len() as u64 };
        if rest.len() < V1_HEADER {
            return (offset, torn);
        }
        let length = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let checksum = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let Some(payload) = rest.get(V1_HEADER..V1_HEADER.saturating_add(length)) else { return (offset, torn) };
        let entry = (crc32fast::hash(payload) == checksum).then(|| decode(payload));
        match entry {
            Some(Ok(entry)) => each(entry),
            _ if zeros_from(V1_HEADER + length) || zeros_from(V1_HEADER) => return (offset, torn),
            Some(Err(error)) => return (offset, ScanEnd::Corrupt { offset: offset as u64, reason: error.into() }),
            None => {
                return (
                    offset,
                    ScanEnd::Corrupt { offset: offset as u64, reason: frame::FrameError::PayloadChecksum },
                );
            }
        }
        offset += V1_HEADER + length;
    }
    (offset, ScanEnd::Clean)
}

fn corrupt(path: &Path, offset: usize, reason: &str) -> anyhow::Error {
    Exit::usage(format!(
        "the replicator queue log {} is corrupt at byte {offset} ({reason}); move it aside to start with an empty queue \
         (its unfinished jobs are then lost)",
        path.display()
    ))
    .into()
}

/// Writes `bytes` to `path` via a temporary file, fsync, rename and directory fsync.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = dir.join(TEMP_FILE);
    // Job values are tenants' data: readable by the owner only.
    let mut file = crate::config::create_private_file(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, path)?;
    File::open(dir)?.sync_all()
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    dones: PendingDones,
    file: File,
    /// Bytes of records (and magic): where the next append goes.
    len: u64,
    /// Bytes the file holds: `len` plus zeros written ahead, so an fdatasync
    /// flushes data only (see [`crate::wal::segment::PREALLOCATE_BYTES`]).
    allocated: u64,
    live: BTreeMap<u64, Live>,
    live_bytes: u64,
    next_id: u64,
    policy: CompactionPolicy,
    /// Set after a write failure that could not be undone: every later append fails.
    broken: Option<String>,
    _lock: DirLock,
}

impl Log for Writer {
    type Append = Append;

    fn bytes(append: &Append) -> usize {
        append.jobs.iter().map(|job| FRAME_HEADER + job_payload_len(job)).sum()
    }

    fn commit(&mut self, batch: Vec<Append>) {
        self.write_batch(batch, true);
    }

    /// No job for a while: the done markers waiting are written (unsynced).
    fn idle(&mut self) {
        self.write_batch(Vec::new(), false);
    }

    fn close(&mut self) {
        self.write_batch(Vec::new(), true);
        self.trim();
    }
}

impl Writer {
    /// Drops the zeros written ahead and syncs: a log closed cleanly ends on its last record.
    fn trim(&mut self) {
        if self.broken.is_none() && self.file.set_len(self.len).is_ok() {
            self.allocated = self.len;
        }
        let _ = self.file.sync_data();
    }

    /// Writes one batch of appends and the done markers waiting (which need no
    /// sync of their own), with one fsync when there are appends or `sync`
    /// asks for it, and answers the appenders.
    fn write_batch(&mut self, batch: Vec<Append>, sync: bool) {
        let mut buffer = Vec::new();
        let mut replies = Vec::with_capacity(batch.len());
        let mut jobs = Vec::new();
        let dones = std::mem::take(&mut *self.dones.locked());
        for &(job_id, target) in &dones {
            frame(&mut buffer, &encode_done(job_id, target));
        }
        for Append { jobs: appended, reply } in batch {
            for job in appended {
                frame(&mut buffer, &encode_job(&job));
                jobs.push(job);
            }
            replies.push(reply);
        }
        let result = self.write(&buffer, sync || !replies.is_empty());
        if result.is_ok() {
            for job in jobs {
                self.next_id = self.next_id.max(job.id + 1);
                let entry = Live { delivered: vec![false; job.targets.len()], job };
                self.live_bytes += live_size(&entry);
                self.live.insert(entry.job.id, entry);
            }
            for (job_id, target) in dones {
                self.apply_done(job_id, target);
            }
        }
        for reply in replies {
            let _ = reply.send(match &result {
                Ok(()) => Ok(()),
                Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
            });
        }
        if result.is_ok() {
            self.maybe_compact();
        }
    }

    /// Appends `buffer`; fsyncs when `sync`. On failure the file is cut back to its previous length.
    fn write(&mut self, buffer: &[u8], sync: bool) -> io::Result<()> {
        if let Some(reason) = &self.broken {
            return Err(io::Error::other(reason.clone()));
        }
        if buffer.is_empty() && !sync {
            return Ok(());
        }
        let end = self.len + buffer.len() as u64;
        let result = segment::reserve(&self.file, &mut self.allocated, end, segment::PREALLOCATE_BYTES)
            .and_then(|()| self.file.write_all_at(buffer, self.len))
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        match result {
            Ok(()) => {
                self.len = end;
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "cannot write the replicator queue log; refusing jobs until it is writable");
                self.allocated = self.len;
                if let Err(undo) = self.file.set_len(self.len).and_then(|()| self.file.sync_data()) {
                    self.broken = Some(format!("the queue log is unusable after a failed write ({error}; {undo})"));
                }
                Err(error)
            }
        }
    }

    fn apply_done(&mut self, job_id: u64, target: u16) {
        let Some(entry) = self.live.get_mut(&job_id) else { return };
        if let Some(flag) = entry.delivered.get_mut(usize::from(target)) {
            if !*flag {
                *flag = true;
                self.live_bytes += (FRAME_HEADER + DONE_PAYLOAD) as u64;
            }
        }
        if entry.delivered.iter().all(|done| *done) {
            let size = live_size(entry);
            self.live.remove(&job_id);
            self.live_bytes -= size;
        }
    }

    fn maybe_compact(&mut self) {
        let idle = self.live.is_empty() && self.len > self.policy.idle_bytes;
        let oversized = self.len > self.policy.max_bytes && self.live_bytes * 2 < self.len;
        if !(idle || oversized) || self.broken.is_some() {
            return;
        }
        if let Err(error) = self.compact() {
            tracing::warn!(%error, "cannot compact the replicator queue log; it keeps growing until a retry succeeds");
        }
    }

    /// Rewrites the log with only the unfinished jobs.
    fn compact(&mut self) -> io::Result<()> {
        let before = self.len;
        let mut buffer = Vec::with_capacity(self.live_bytes as usize + 64);
        buffer.extend_from_slice(MAGIC);
        frame(&mut buffer, &encode_next_id(self.next_id));
        for entry in self.live.values() {
            frame(&mut buffer, &encode_job(&entry.job));
            for (target, _) in entry.delivered.iter().enumerate().filter(|(_, done)| **done) {
                frame(&mut buffer, &encode_done(entry.job.id, target as u16));
            }
        }
        let path = self.dir.join(LOG_FILE);
        write_atomically(&path, &buffer)?;
        self.file = OpenOptions::new().write(true).open(&path)?;
        self.len = buffer.len() as u64;
        self.allocated = self.len;
        tracing::info!(before, after = self.len, unfinished = self.live.len(), "compacted the replicator queue log");
        Ok(())
    }
}

/// Bytes an unfinished job occupies in a compacted log.
fn live_size(entry: &Live) -> u64 {
    let dones = entry.delivered.iter().filter(|done| **done).count();
    (FRAME_HEADER + job_payload_len(&entry.job) + dones * (FRAME_HEADER + DONE_PAYLOAD)) as u64
}

#[derive(Debug, PartialEq, Eq)]
enum Record {
    Job(Job),
    Done { job_id: u64, target: u16 },
    NextId(u64),
}

const DONE_PAYLOAD: usize = 1 + 8 + 2;

fn frame(buffer: &mut Vec<u8>, payload: &[u8]) {
    frame::append(buffer, |out| out.extend_from_slice(payload))
        .expect("a job's value is bounded far below a frame's limit");
}

fn job_payload_len(job: &Job) -> usize {
    1 + 8
        + 8
        + 1
        + 8
        + 9
        + 4
        + job.key.len()
        + 2
        + job.content_type.len()
        + 2
        + job.targets.iter().map(|target| 2 + target.len()).sum::<usize>()
        + 4
        + job.value.len()
}

fn encode_job(job: &Job) -> Vec<u8> {
    let mut out = Vec::with_capacity(job_payload_len(job));
    out.push(TAG_JOB);
    out.extend_from_slice(&job.id.to_le_bytes());
    out.extend_from_slice(&job.accepted_at_ms.to_le_bytes());
    out.push(match job.op {
        Op::Put => 0,
        Op::Delete => 1,
    });
    out.extend_from_slice(&job.version.to_le_bytes());
    match job.expires_at {
        Some(at) => {
            out.push(1);
            out.extend_from_slice(&at.to_le_bytes());
        }
        None => {
            out.push(0);
            out.extend_from_slice(&0u64.to_le_bytes());
        }
    }
    out.extend_from_slice(&(job.key.len() as u32).to_le_bytes());
    out.extend_from_slice(job.key.as_bytes());
    out.extend_from_slice(&(job.content_type.len() as u16).to_le_bytes());
    out.extend_from_slice(job.content_type.as_bytes());
    out.extend_from_slice(&(job.targets.len() as u16).to_le_bytes());
    for target in &job.targets {
        out.extend_from_slice(&(target.len() as u16).to_le_bytes());
        out.extend_from_slice(target.as_bytes());
    }
    out.extend_from_slice(&(job.value.len() as u32).to_le_bytes());
    out.extend_from_slice(&job.value);
    out
}

fn encode_done(job_id: u64, target: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(DONE_PAYLOAD);
    out.push(TAG_DONE);
    out.extend_from_slice(&job_id.to_le_bytes());
    out.extend_from_slice(&target.to_le_bytes());
    out
}

fn encode_next_id(next_id: u64) -> Vec<u8> {
    let mut out = vec![TAG_NEXT_ID];
    out.extend_from_slice(&next_id.to_le_bytes());
    out
}

fn decode(payload: &[u8]) -> Result<Record, DecodeError> {
    let mut reader = Reader::new(payload, 0);
    let record = match reader.u8()? {
        TAG_JOB => {
            let id = reader.u64()?;
            let accepted_at_ms = reader.u64()?;
            let op = match reader.u8()? {
                0 => Op::Put,
                1 => Op::Delete,
                value => return Err(DecodeError::Unknown { what: "operation", value }),
            };
            let version = reader.u64()?;
            let has_expiry = reader.u8()? == 1;
            let expiry = reader.u64()?;
            let key_len = reader.u32()? as usize;
            let key = reader.text(key_len)?.to_string();
            let type_len = usize::from(reader.u16()?);
            let content_type = reader.text(type_len)?.to_string();
            let target_count = usize::from(reader.u16()?);
            let mut targets = Vec::with_capacity(target_count.min(64));
            for _ in 0..target_count {
                let len = usize::from(reader.u16()?);
                targets.push(reader.text(len)?.to_string());
            }
            let value_len = reader.u32()? as usize;
            let value = Bytes::copy_from_slice(reader.take(value_len)?);
            Record::Job(Job {
                id,
                accepted_at_ms,
                op,
                key,
                version,
                expires_at: has_expiry.then_some(expiry),
                content_type,
                targets,
                value,
            })
        }
        TAG_DONE => Record::Done { job_id: reader.u64()?, target: reader.u16()? },
        TAG_NEXT_ID => Record::NextId(reader.u64()?),
        value => return Err(DecodeError::Unknown { what: "queue entry type", value }),
    };
    reader.finish()?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, targets: usize, value: &[u8]) -> Arc<Job> {
        Arc::new(Job {
            id,
            accepted_at_ms: 1_700_000_000_000 + id,
            op: if id % 2 == 0 { Op::Delete } else { Op::Put },
            key: format!("7/key {id}/ü"),
            version: (id << 16) | 3,
            expires_at: (id % 3 == 0).then_some(1_800_000_000_000),
            content_type: "application/json".to_string(),
            targets: (0..targets).map(|t| format!("http://127.0.0.1:{}", 9000 + t)).collect(),
            value: Bytes::copy_from_slice(value),
        })
    }

    /// A log in format 1, as ydht wrote it before the shared frame: jobs 1 and 2,
    /// and job 1's only copy done.
    fn format_1_log() -> Vec<u8> {
        let mut bytes = MAGIC_V1.to_vec();
        for payload in [encode_job(&job(1, 1, b"first")), encode_job(&job(2, 1, b"second")), encode_done(1, 0)] {
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        bytes
    }

    #[tokio::test]
    async fn a_format_1_log_is_read_and_rewritten_in_format_2() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        fs::write(&path, format_1_log()).unwrap();
        let (log, recovered) = open(dir.path(), lenient());
        assert_eq!(recovered.unfinished.len(), 1);
        assert_eq!(*recovered.unfinished[0].job, *job(2, 1, b"second"));
        assert_eq!(recovered.next_id, 3);
        log.close().await;
        assert_eq!(&fs::read(&path).unwrap()[..MAGIC.len()], MAGIC, "rewritten in the current format");
        let (_log, again) = open(dir.path(), lenient());
        assert_eq!(again.unfinished.len(), 1);
        assert_eq!(again.next_id, 3);
    }

    #[test]
    fn a_format_1_log_cut_anywhere_recovers_a_prefix() {
        let bytes = format_1_log();
        for cut in MAGIC_V1.len()..bytes.len() {
            let mut seen = 0;
            let (offset, end) = scan_v1(&bytes[..cut], |_| seen += 1);
            assert!(offset <= cut && seen <= 3);
            assert!(matches!(end, ScanEnd::Torn { .. } | ScanEnd::Clean), "cut at {cut}: {end:?}");
        }
    }

    fn any_job() -> impl proptest::strategy::Strategy<Value = Job> {
        use proptest::prelude::*;
        (
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            "[a-z0-9/ü]{1,20}",
            any::<u64>(),
            proptest::option::of(any::<u64>()),
            "[a-z/]{0,12}",
            proptest::collection::vec("http://[a-z0-9.]{1,12}:[0-9]{1,5}", 1..4),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(
                |(id, accepted_at_ms, delete, key, version, expires_at, content_type, targets, value)| Job {
                    id,
                    accepted_at_ms,
                    op: if delete { Op::Delete } else { Op::Put },
                    key,
                    version,
                    expires_at,
                    content_type,
                    targets,
                    value: Bytes::from(value),
                },
            )
    }

    proptest::proptest! {
        #[test]
        fn any_job_round_trips_and_any_damage_is_refused(job in any_job(), flip in 0usize..512, cut in 0usize..512) {
            let payload = encode_job(&job);
            proptest::prop_assert_eq!(payload.len(), job_payload_len(&job));
            proptest::prop_assert_eq!(decode(&payload).unwrap(), Record::Job(job.clone()));
            // Framed, a flipped bit is caught by the CRCs, and a cut frame is a torn tail.
            let mut framed = MAGIC.to_vec();
            frame(&mut framed, &payload);
            let mut flipped = framed.clone();
            let at = MAGIC.len() + flip % (framed.len() - MAGIC.len());
            flipped[at] ^= 1;
            let mut seen = 0;
            let (_, end) = frame::scan(&flipped, MAGIC.len(), decode, |_| seen += 1);
            proptest::prop_assert_eq!(seen, 0);
            proptest::prop_assert!(end != ScanEnd::Clean);
            let cut = MAGIC.len() + cut % (framed.len() - MAGIC.len());
            let (offset, end) = frame::scan(&framed[..cut], MAGIC.len(), decode, |_| seen += 1);
            proptest::prop_assert_eq!((offset, seen), (MAGIC.len(), 0));
            proptest::prop_assert!(matches!(end, ScanEnd::Torn { .. } | ScanEnd::Clean), "{:?}", end);
        }

        #[test]
        fn no_payload_makes_the_decoder_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128)) {
            if let Ok(Record::Job(job)) = decode(&bytes) {
                proptest::prop_assert_eq!(encode_job(&job), bytes);
            }
        }
    }

    fn lenient() -> CompactionPolicy {
        CompactionPolicy { max_bytes: u64::MAX, idle_bytes: u64::MAX }
    }

    fn open(dir: &Path, policy: CompactionPolicy) -> (QueueLog, Recovered) {
        QueueLog::open(dir, policy).unwrap()
    }

    #[test]
    fn records_round_trip_through_the_codec() {
        for id in 1..=6 {
            let original = job(id, 3, &vec![id as u8; id as usize * 100]);
            assert_eq!(decode(&encode_job(&original)).unwrap(), Record::Job((*original).clone()));
            assert_eq!(encode_job(&original).len(), job_payload_len(&original));
        }
        assert_eq!(decode(&encode_done(42, 2)).unwrap(), Record::Done { job_id: 42, target: 2 });
        assert_eq!(decode(&encode_next_id(9)).unwrap(), Record::NextId(9));
        assert!(decode(&[TAG_DONE, 1, 2]).is_err());
        assert!(decode(&[99]).is_err());
    }

    #[tokio::test]
    async fn appended_jobs_come_back_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (log, recovered) = open(dir.path(), lenient());
        assert!(recovered.unfinished.is_empty());
        assert_eq!(recovered.next_id, 1);
        let jobs: Vec<_> = (1..=5).map(|id| job(id, 2, format!("value {id}").as_bytes())).collect();
        let appends = jobs.iter().map(|job| log.append(job.clone()));
        for result in futures_util::future::join_all(appends).await {
            result.unwrap();
        }
        log.close().await;
        let (_log, recovered) = open(dir.path(), lenient());
        let back: Vec<Job> = recovered.unfinished.iter().map(|u| (*u.job).clone()).collect();
        assert_eq!(back, jobs.iter().map(|job| (**job).clone()).collect::<Vec<_>>());
        assert!(recovered.unfinished.iter().all(|u| u.delivered == vec![false, false]));
        assert_eq!(recovered.next_id, 6);
        assert_eq!(recovered.truncated_bytes, 0);
    }

    #[tokio::test]
    async fn done_markers_leave_only_unfinished_work() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), lenient());
        for id in 1..=3 {
            log.append(job(id, 3, b"v")).await.unwrap();
        }
        // Job 1 fully delivered, job 2 to targets 0 and 2, job 3 to none.
        for target in 0..3 {
            log.mark_done(1, target);
        }
        log.mark_done(2, 0);
        log.mark_done(2, 2);
        log.close().await;
        let (_log, recovered) = open(dir.path(), lenient());
        let summary: Vec<(u64, Vec<bool>)> =
            recovered.unfinished.iter().map(|u| (u.job.id, u.delivered.clone())).collect();
        assert_eq!(summary, vec![(2, vec![true, false, true]), (3, vec![false, false, false])]);
        assert_eq!(recovered.next_id, 4);
    }

    #[tokio::test]
    async fn a_torn_tail_is_truncated_and_earlier_jobs_survive() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), lenient());
        log.append(job(1, 1, b"first")).await.unwrap();
        log.append(job(2, 1, b"second")).await.unwrap();
        log.close().await;
        let path = dir.path().join(LOG_FILE);
        let full = fs::read(&path).unwrap();
        // Cut the last record in half, as a crash mid-append would.
        let torn_len = full.len() - 7;
        fs::write(&path, &full[..torn_len]).unwrap();
        let (log, recovered) = open(dir.path(), lenient());
        assert_eq!(recovered.unfinished.iter().map(|u| u.job.id).collect::<Vec<_>>(), vec![1]);
        assert!(recovered.truncated_bytes > 0);
        let first_len = MAGIC.len() + FRAME_HEADER + job_payload_len(&job(1, 1, b"first"));
        assert_eq!(fs::metadata(&path).unwrap().len(), first_len as u64);
        // The log keeps working after the cut.
        log.append(job(3, 1, b"third")).await.unwrap();
        log.close().await;
        let (_log, recovered) = open(dir.path(), lenient());
        assert_eq!(recovered.unfinished.iter().map(|u| u.job.id).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[tokio::test]
    async fn done_markers_reach_the_log_without_another_append() {
        let dir = tempfile::tempdir().unwrap();
        let policy = CompactionPolicy { max_bytes: u64::MAX, idle_bytes: 1 };
        let (log, _) = open(dir.path(), policy);
        log.append(job(1, 2, b"first")).await.unwrap();
        log.mark_done(1, 0);
        log.mark_done(1, 1);
        // Nothing else is appended: the writer still takes the markers, sees every job
        // finished and compacts the log down to its header and next id.
        let path = dir.path().join(LOG_FILE);
        let compacted = (MAGIC.len() + FRAME_HEADER + encode_next_id(2).len()) as u64;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while fs::metadata(&path).unwrap().len() != compacted {
            assert!(std::time::Instant::now() < deadline, "the done markers never reached the log");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        log.close().await;
        let (_log, recovered) = open(dir.path(), policy);
        assert!(recovered.unfinished.is_empty());
        assert_eq!(recovered.next_id, 2);
    }

    #[tokio::test]
    async fn zeros_after_the_last_record_are_padding_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), lenient());
        log.append(job(1, 1, b"first")).await.unwrap();
        log.close().await;
        let path = dir.path().join(LOG_FILE);
        let clean_len = fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[0u8; 4096]).unwrap();
        drop(file);
        let (_log, recovered) = open(dir.path(), lenient());
        assert_eq!(recovered.unfinished.iter().map(|u| u.job.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(recovered.truncated_bytes, 0);
        assert_eq!(fs::metadata(&path).unwrap().len(), clean_len);
    }

    #[tokio::test]
    async fn appends_fill_zeros_written_ahead_and_a_record_torn_inside_them_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), lenient());
        log.append(job(1, 1, b"first")).await.unwrap();
        log.append(job(2, 1, b"second")).await.unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, segment::PREALLOCATE_BYTES, "zeros written ahead of the records");
        let first_end = MAGIC.len() + FRAME_HEADER + job_payload_len(&job(1, 1, b"first"));
        let second_end = first_end + FRAME_HEADER + job_payload_len(&job(2, 1, b"second"));
        assert!(bytes[second_end..].iter().all(|byte| *byte == 0));
        log.close().await;
        assert_eq!(fs::metadata(&path).unwrap().len(), second_end as u64, "closed cleanly, it ends on its last record");
        bytes.truncate(second_end);
        bytes.resize(segment::PREALLOCATE_BYTES as usize, 0);

        // A crash mid-append: the second record's last bytes never reached the disk.
        let mut torn = bytes.clone();
        torn[second_end - 3..second_end].fill(0);
        fs::write(&path, &torn).unwrap();
        let (log, recovered) = open(dir.path(), lenient());
        assert_eq!(recovered.unfinished.iter().map(|u| u.job.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(recovered.truncated_bytes, (torn.len() - first_end) as u64);
        assert_eq!(fs::metadata(&path).unwrap().len(), first_end as u64);
        log.append(job(3, 1, b"third")).await.unwrap();
        log.close().await;
        let (log, recovered) = open(dir.path(), lenient());
        assert_eq!(recovered.unfinished.iter().map(|u| u.job.id).collect::<Vec<_>>(), vec![1, 3]);
        log.close().await;

        // Only its header made it.
        let mut header_only = bytes.clone();
        header_only[first_end + FRAME_HEADER..].fill(0);
        fs::write(&path, &header_only).unwrap();
        let (_log, recovered) = open(dir.path(), lenient());
        assert_eq!(recovered.unfinished.iter().map(|u| u.job.id).collect::<Vec<_>>(), vec![1]);
    }

    #[tokio::test]
    async fn corruption_before_the_tail_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), lenient());
        log.append(job(1, 1, b"first")).await.unwrap();
        log.append(job(2, 1, b"second")).await.unwrap();
        log.close().await;
        let path = dir.path().join(LOG_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[MAGIC.len() + FRAME_HEADER + 3] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let error = QueueLog::open(dir.path(), lenient()).unwrap_err();
        assert!(error.to_string().contains("corrupt at byte 8"), "{error}");
        fs::write(&path, b"something else entirely").unwrap();
        let error = QueueLog::open(dir.path(), lenient()).unwrap_err();
        assert!(error.to_string().contains("not a ydht queue log"), "{error}");
    }

    #[tokio::test]
    async fn a_second_writer_on_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_log, _) = open(dir.path(), lenient());
        let error = QueueLog::open(dir.path(), lenient()).unwrap_err();
        assert!(error.to_string().contains("another replicator"), "{error}");
    }

    #[tokio::test]
    async fn the_log_is_compacted_once_everything_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let policy = CompactionPolicy { max_bytes: u64::MAX, idle_bytes: 1024 };
        let (log, _) = open(dir.path(), policy);
        for id in 1..=4 {
            log.append(job(id, 2, &[7u8; 600])).await.unwrap();
        }
        let grown = fs::metadata(&path).unwrap().len();
        assert!(grown > 2400);
        for id in 1..=4 {
            log.mark_done(id, 0);
            log.mark_done(id, 1);
        }
        log.close().await;
        // Only the header and the next-id record remain.
        let compacted = fs::metadata(&path).unwrap().len();
        assert_eq!(compacted, (MAGIC.len() + FRAME_HEADER + 9) as u64);
        let (_log, recovered) = open(dir.path(), policy);
        assert!(recovered.unfinished.is_empty());
        // Ids never repeat, even after the log was emptied.
        assert_eq!(recovered.next_id, 5);
        assert!(!dir.path().join(TEMP_FILE).exists());
    }

    #[tokio::test]
    async fn an_oversized_log_keeps_only_unfinished_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let policy = CompactionPolicy { max_bytes: 8 * 1024, idle_bytes: u64::MAX };
        let (log, _) = open(dir.path(), policy);
        log.append(job(1, 2, b"keep me")).await.unwrap();
        log.mark_done(1, 1);
        for id in 2..=20 {
            log.append(job(id, 1, &[1u8; 1000])).await.unwrap();
            log.mark_done(id, 0);
        }
        log.close().await;
        assert!(fs::metadata(&path).unwrap().len() < 8 * 1024);
        let (_log, recovered) = open(dir.path(), policy);
        let summary: Vec<(u64, Vec<bool>)> =
            recovered.unfinished.iter().map(|u| (u.job.id, u.delivered.clone())).collect();
        assert_eq!(summary, vec![(1, vec![false, true])]);
        assert_eq!(recovered.unfinished[0].job.value, Bytes::from_static(b"keep me"));
        assert_eq!(recovered.next_id, 21);
    }
}
