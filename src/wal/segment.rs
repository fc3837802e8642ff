//! WAL files on disk: the directory layout, the segment being appended to,
//! and the scan that reads a segment back and classifies how it ends.
//!
//! A node's directory holds `wal-<generation>.log` segments and at most one
//! `snapshot-<generation>.snap`; a snapshot of generation G holds everything
//! written to segments older than G, so recovery loads it and replays the
//! segments numbered G and up. Generations are zero-padded to sort by name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::WalError;
use super::frame;
pub use super::frame::ScanEnd;
use super::record::{self, Entry, FILE_HEADER_BYTES};

/// Magic at the start of every WAL segment.
pub const WAL_MAGIC: &[u8; 7] = b"YDHTWAL";

/// A node's WAL directory and its file naming.
#[derive(Debug, Clone)]
pub struct WalDir {
    path: PathBuf,
}

/// What a directory listing found, each list sorted by generation.
#[derive(Debug, Default)]
pub struct Listing {
    /// `(generation, path)` of every WAL segment.
    pub segments: Vec<(u64, PathBuf)>,
    /// `(generation, path)` of every snapshot.
    pub snapshots: Vec<(u64, PathBuf)>,
    /// Leftover temporary files of interrupted snapshot writes.
    pub temporaries: Vec<PathBuf>,
}

impl WalDir {
    /// The WAL directory at `path` (not created until [`WalDir::create`]).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory (mode 0700) if it does not exist.
    pub fn create(&self) -> Result<(), WalError> {
        crate::config::create_private_dir(&self.path)
            .map_err(|source| WalError::io("cannot create WAL directory", &self.path, source))
    }

    /// The path of segment `generation`.
    pub fn segment_path(&self, generation: u64) -> PathBuf {
        self.path.join(format!("wal-{generation:020}.log"))
    }

    /// The path of the snapshot of `generation`.
    pub fn snapshot_path(&self, generation: u64) -> PathBuf {
        self.path.join(format!("snapshot-{generation:020}.snap"))
    }

    /// Lists segments, snapshots and temporary files.
    pub fn list(&self) -> Result<Listing, WalError> {
        let mut listing = Listing::default();
        let entries =
            fs::read_dir(&self.path).map_err(|source| WalError::io("cannot list WAL directory", &self.path, source))?;
        for entry in entries {
            let entry = entry.map_err(|source| WalError::io("cannot list WAL directory", &self.path, source))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if name.ends_with(".tmp") {
                listing.temporaries.push(path);
            } else if let Some(generation) = parse_generation(name, "wal-", ".log") {
                listing.segments.push((generation, path));
            } else if let Some(generation) = parse_generation(name, "snapshot-", ".snap") {
                listing.snapshots.push((generation, path));
            }
        }
        listing.segments.sort();
        listing.snapshots.sort();
        Ok(listing)
    }

    /// Makes renames and file creations in the directory durable (fsync of the directory).
    pub fn sync(&self) -> Result<(), WalError> {
        File::open(&self.path)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| WalError::io("cannot fsync WAL directory", &self.path, source))
    }

    /// Takes an exclusive lock on the directory for the life of the returned
    /// guard, so two nodes can never write the same WAL.
    pub fn lock(&self) -> Result<DirLock, WalError> {
        let path = self.path.join("LOCK");
        DirLock::take(&path).map_err(|error| match error {
            LockError::Open(source) => WalError::io("cannot open lock file", &path, source),
            LockError::Held => WalError::Locked(self.path.clone()),
        })
    }

    /// Total bytes of the directory's segments and snapshots.
    pub fn disk_bytes(&self) -> u64 {
        let Ok(listing) = self.list() else { return 0 };
        listing
            .segments
            .iter()
            .chain(&listing.snapshots)
            .filter_map(|(_, path)| fs::metadata(path).ok())
            .map(|metadata| metadata.len())
            .sum()
    }
}

fn parse_generation(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()
}

/// Holds the exclusive lock on a log's directory until dropped (the node's
/// WAL, the replicator's queue): two processes never write the same log.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Why a directory lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file cannot be opened or created.
    #[error(transparent)]
    Open(io::Error),
    /// Another process holds it.
    #[error("another process holds the lock")]
    Held,
}

impl DirLock {
    /// Takes an exclusive `flock` on the lock file at `path` (created, mode 0600).
    pub fn take(path: &Path) -> Result<Self, LockError> {
        let file = crate::config::private_file(OpenOptions::new().create(true).truncate(false).write(true))
            .open(path)
            .map_err(LockError::Open)?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a file descriptor we own; no memory is shared.
            let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if result != 0 {
                return Err(LockError::Held);
            }
        }
        Ok(Self { _file: file })
    }
}

/// How far ahead of its records a segment is filled with zeros, in steps of this
/// size (at most a quarter of the segment size the committer rotates at).
///
/// Appending inside bytes the file already holds changes neither its size nor its
/// blocks, so the `fdatasync` after an append flushes data only. Appending past the
/// end made ext4 write the inode (and allocate blocks) on every sync: a third of
/// the I/O requests of a loaded node (bench/RESULTS.md). Recovery reads zeros after
/// the last record as padding, not damage.
pub const PREALLOCATE_BYTES: u64 = 1 << 20;

/// Zeros written ahead of the records, a piece at a time.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Makes `file`, which holds `allocated` bytes, hold at least `end`, writing zeros
/// up to the next multiple of `step` when it does not — or, on a disk without
/// room for that, just up to `end`. Also used by the replicator's queue log.
pub fn reserve(file: &File, allocated: &mut u64, end: u64, step: u64) -> io::Result<()> {
    if end <= *allocated {
        return Ok(());
    }
    let before = *allocated;
    match fill_zeros(file, allocated, end.div_ceil(step.max(1)) * step.max(1)) {
        Err(error) if super::is_out_of_space(&error) => {
            // Give the space back and take only what this append needs.
            file.set_len(before)?;
            *allocated = before;
            fill_zeros(file, allocated, end)
        }
        filled => filled,
    }
}

fn fill_zeros(file: &File, allocated: &mut u64, target: u64) -> io::Result<()> {
    while *allocated < target {
        let piece = (target - *allocated).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..piece], *allocated)?;
        *allocated += piece as u64;
    }
    Ok(())
}

/// The segment new records are appended to.
#[derive(Debug)]
pub struct Segment {
    file: File,
    path: PathBuf,
    generation: u64,
    /// Bytes of records (and header): where the next append goes.
    len: u64,
    /// Bytes the file holds: `len` plus zeros written ahead.
    allocated: u64,
    /// Zeros are written ahead in steps of this many bytes.
    step: u64,
}

impl Segment {
    /// Creates segment `generation` holding only its header, durably (file and directory fsynced).
    pub fn create(dir: &WalDir, generation: u64) -> Result<Self, WalError> {
        let path = dir.segment_path(generation);
        let mut file = crate::config::create_private_file(&path)
            .map_err(|source| WalError::io("cannot create WAL segment", &path, source))?;
        let written = file.write_all(&record::file_header(WAL_MAGIC)).and_then(|()| file.sync_all());
        if let Err(source) = written {
            // A header cut short (e.g. by a full disk) must not linger as the newest segment.
            let _ = fs::remove_file(&path);
            return Err(WalError::io("cannot write WAL segment", &path, source));
        }
        dir.sync()?;
        let len = FILE_HEADER_BYTES as u64;
        Ok(Self { file, path, generation, len, allocated: len, step: PREALLOCATE_BYTES })
    }

    /// Opens an existing segment for appending after its first `len` bytes (which a
    /// scan validated; anything after them must be zeros).
    pub fn open(path: PathBuf, generation: u64, len: u64) -> Result<Self, WalError> {
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|source| WalError::io("cannot open WAL segment", &path, source))?;
        let size = file.metadata().map_err(|source| WalError::io("cannot open WAL segment", &path, source))?.len();
        Ok(Self { file, path, generation, len, allocated: size.max(len), step: PREALLOCATE_BYTES })
    }

    /// Appends `bytes` (whole frames) without syncing. On error the segment
    /// is cut back to its previous length so no partial frame stays behind.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let end = self.len + bytes.len() as u64;
        match self.reserve(end).and_then(|()| self.file.write_all_at(bytes, self.len)) {
            Ok(()) => {
                self.len = end;
                Ok(())
            }
            Err(error) => {
                let _ = self.cut_back(self.len);
                Err(error)
            }
        }
    }

    fn reserve(&mut self, end: u64) -> io::Result<()> {
        reserve(&self.file, &mut self.allocated, end, self.step)
    }

    /// Writes zeros ahead in steps of at most a quarter of `max_segment_bytes`
    /// (and at most [`PREALLOCATE_BYTES`]), so small segments stay small on disk.
    pub fn fit_preallocation(&mut self, max_segment_bytes: u64) {
        self.step = (max_segment_bytes / 4).clamp(4096, PREALLOCATE_BYTES);
    }

    /// Drops everything after the first `len` bytes (frames written but never
    /// acknowledged, e.g. when a sync failed, and the zeros ahead), durably, and
    /// continues appending from there. Shrinking a file needs no free space, so
    /// this works on a full disk.
    pub fn cut_back(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        self.allocated = len;
        self.file.sync_data()
    }

    /// Drops the zeros written ahead, durably: for a segment that takes no more
    /// appends (recovery would read them as padding anyway).
    pub fn trim(&mut self) -> io::Result<()> {
        self.cut_back(self.len)
    }

    /// Makes everything appended so far durable (fdatasync).
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// This segment's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes in the segment, header included.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the segment holds no record yet.
    pub fn is_empty(&self) -> bool {
        self.len <= FILE_HEADER_BYTES as u64
    }

    /// The segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Decodes a whole segment file's bytes (header, then frames), handing each
/// valid entry to `each`; returns the offset past the last valid frame and
/// how the data ends (see [`frame::scan`] for torn tails). A file shorter than its header is a torn tail at 0; a
/// wrong magic or version is corruption at 0. Never panics on any input
/// (fuzzed by `fuzz/fuzz_targets/wal_decode.rs`).
pub fn decode_segment(bytes: &[u8], each: impl FnMut(Entry)) -> (usize, ScanEnd) {
    match record::check_file_header(bytes, WAL_MAGIC) {
        Ok(()) => scan(bytes, record::FILE_HEADER_BYTES, each),
        Err(_) if bytes.len() < record::FILE_HEADER_BYTES => {
            (0, ScanEnd::Torn { offset: 0, bytes: bytes.len() as u64 })
        }
        Err(reason) => (0, ScanEnd::Corrupt { offset: 0, reason: reason.into() }),
    }
}

/// How long the WAL segments a snapshot covers are kept for the change feed: a covered segment
/// is removed once it was last written more than `time` ago **and** at least `changes` entries
/// were logged after it (in newer segments), so the feed holds at least that much of both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How long after its last write a covered segment is kept.
    pub time: std::time::Duration,
    /// How many later entries a covered segment waits for before it goes.
    pub changes: u64,
}

impl Retention {
    /// No retention: a snapshot removes what it covers at once.
    pub const NONE: Retention = Retention { time: std::time::Duration::ZERO, changes: 0 };
}

/// The segments older than generation `below` (the snapshot's) that `retention` lets go, of
/// `segments` (ascending by generation, as [`WalDir::list`] gives them).
pub fn removable<'a>(segments: &'a [(u64, PathBuf)], below: u64, retention: &Retention) -> Vec<&'a Path> {
    let mut later_entries = 0u64;
    let mut removable = Vec::new();
    for (generation, path) in segments.iter().rev() {
        if *generation < below && later_entries >= retention.changes && outlived(path, retention.time) {
            removable.push(path.as_path());
        }
        if later_entries < retention.changes {
            later_entries = later_entries.saturating_add(entry_count(path));
        }
    }
    removable
}

/// Whether the segment at `path` was last written more than `keep_for` ago (or cannot be told).
fn outlived(path: &Path, keep_for: std::time::Duration) -> bool {
    keep_for.is_zero()
        || fs::metadata(path)
            .and_then(|metadata| metadata.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_none_or(|age| age > keep_for)
}

/// How many entries the segment at `path` holds (0 when it cannot be read). A full segment never
/// changes again, so its count is remembered by path and length.
fn entry_count(path: &Path) -> u64 {
    static COUNTS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<(PathBuf, u64), u64>>> =
        std::sync::OnceLock::new();
    let Ok(len) = fs::metadata(path).map(|metadata| metadata.len()) else {
        return 0;
    };
    let counts = COUNTS.get_or_init(Default::default);
    let key = (path.to_path_buf(), len);
    if let Some(count) = crate::sync::Lock::locked(counts).get(&key) {
        return *count;
    }
    let Ok(bytes) = fs::read(path) else {
        return 0;
    };
    let mut count = 0u64;
    if record::check_file_header(&bytes, WAL_MAGIC).is_ok() {
        frame::scan_ends(&bytes, FILE_HEADER_BYTES, |_| Ok::<(), super::codec::DecodeError>(()), |_, ()| count += 1);
    }
    let mut counts = crate::sync::Lock::locked(counts);
    if counts.len() >= 4096 {
        counts.clear();
    }
    counts.insert(key, count);
    count
}

/// Decodes the entry frames of `bytes` from `start` ([`frame::scan`]).
pub fn scan(bytes: &[u8], start: usize, each: impl FnMut(Entry)) -> (usize, ScanEnd) {
    frame::scan(bytes, start, record::decode_entry_payload, each)
}

/// [`scan`], handing `each` also the offset in `bytes` where each entry's frame ends.
pub fn scan_ends(bytes: &[u8], start: usize, each: impl FnMut(usize, Entry)) -> (usize, ScanEnd) {
    frame::scan_ends(bytes, start, record::decode_entry_payload, each)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::Record;

    fn frames(records: &[Record]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for record in records {
            record::encode(record, &mut bytes).unwrap();
        }
        bytes
    }

    fn sample(count: u64) -> Vec<Record> {
        (0..count)
            .map(|n| Record::put(format!("key-{n}"), n + 1, format!("value-{n}").into_bytes(), "text/plain"))
            .collect()
    }

    #[test]
    fn trailing_zeros_are_a_torn_tail() {
        let mut bytes = frames(&sample(3));
        let valid = bytes.len();
        bytes.extend_from_slice(&[0; 100]);
        let mut seen = 0;
        let (end, how) = scan(&bytes, 0, |_| seen += 1);
        assert_eq!((seen, end), (3, valid));
        assert_eq!(how, ScanEnd::Torn { offset: valid as u64, bytes: 100 });
    }

    #[test]
    fn damage_followed_by_data_is_corruption() {
        let records = sample(3);
        let mut bytes = frames(&records);
        let second = records[0].framed_len();
        bytes[second + 20] ^= 0x10;
        let (end, how) = scan(&bytes, 0, |_| {});
        assert_eq!(end, second);
        assert!(matches!(how, ScanEnd::Corrupt { offset, .. } if offset == second as u64), "{how:?}");
    }

    #[test]
    fn a_partial_append_cut_back_leaves_a_log_that_replays_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let wal = WalDir::new(dir.path());
        let records = sample(3);
        let mut segment = Segment::create(&wal, 0).unwrap();
        segment.append(&frames(&records[..1])).unwrap();
        let good = segment.len();
        // What a write cut short by a full disk leaves: part of a frame after the good ones.
        segment.file.write_all_at(&frames(&records[1..2])[..10], good).unwrap();
        segment.cut_back(good).unwrap();
        assert_eq!(fs::metadata(segment.path()).unwrap().len(), good);
        segment.append(&frames(&records[2..])).unwrap();
        let mut seen = Vec::new();
        let (end, how) = decode_segment(&fs::read(segment.path()).unwrap(), |found| seen.extend(found.into_record()));
        let padding = PREALLOCATE_BYTES - segment.len();
        assert_eq!(how, ScanEnd::Torn { offset: segment.len(), bytes: padding }, "zeros after the records");
        assert_eq!(end as u64, segment.len());
        assert_eq!(seen, vec![records[0].clone(), records[2].clone()]);
    }

    #[test]
    fn appends_fill_zeros_written_ahead_and_trim_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let wal = WalDir::new(dir.path());
        let records = sample(3);
        let mut segment = Segment::create(&wal, 0).unwrap();
        segment.append(&frames(&records[..1])).unwrap();
        assert_eq!(fs::metadata(segment.path()).unwrap().len(), PREALLOCATE_BYTES);
        // An append crossing the zeros written ahead extends them by whole steps.
        let big = Record::put("big", 9, vec![7u8; PREALLOCATE_BYTES as usize], "x");
        segment.append(&frames(std::slice::from_ref(&big))).unwrap();
        assert_eq!(fs::metadata(segment.path()).unwrap().len(), 2 * PREALLOCATE_BYTES);
        let mut seen = Vec::new();
        let (end, _) = decode_segment(&fs::read(segment.path()).unwrap(), |found| seen.extend(found.into_record()));
        assert_eq!((end as u64, seen), (segment.len(), vec![records[0].clone(), big.clone()]));

        // Reopened, it appends right after its records, inside the zeros.
        let len = segment.len();
        drop(segment);
        let mut segment = Segment::open(wal.segment_path(0), 0, len).unwrap();
        segment.append(&frames(&records[1..])).unwrap();
        assert_eq!(fs::metadata(segment.path()).unwrap().len(), 2 * PREALLOCATE_BYTES);
        segment.trim().unwrap();
        let bytes = fs::read(segment.path()).unwrap();
        assert_eq!(bytes.len() as u64, segment.len());
        let mut seen = Vec::new();
        assert_eq!(decode_segment(&bytes, |found| seen.extend(found.into_record())), (bytes.len(), ScanEnd::Clean));
        assert_eq!(seen, vec![records[0].clone(), big, records[1].clone(), records[2].clone()]);
    }

    #[test]
    fn a_damaged_last_record_before_zeros_is_a_torn_tail() {
        // A crash mid-append inside the zeros written ahead: the frame's length made
        // it to disk, part of its payload did not.
        let records = sample(3);
        let mut bytes = frames(&records);
        let last = bytes.len() - records[2].framed_len();
        let end = bytes.len();
        bytes[end - 3..].fill(0);
        bytes.extend_from_slice(&[0; 4096]);
        let (valid, how) = scan(&bytes, 0, |_| {});
        assert_eq!(valid, last);
        assert_eq!(how, ScanEnd::Torn { offset: last as u64, bytes: (bytes.len() - last) as u64 });
        // The same damage with a record after it is corruption.
        bytes.truncate(end);
        bytes.extend_from_slice(&frames(&records[..1]));
        bytes.extend_from_slice(&[0; 4096]);
        assert!(matches!(scan(&bytes, 0, |_| {}).1, ScanEnd::Corrupt { .. }));
    }

    #[test]
    fn generations_parse_from_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let wal = WalDir::new(dir.path());
        fs::write(wal.segment_path(3), b"").unwrap();
        fs::write(wal.segment_path(12), b"").unwrap();
        fs::write(wal.snapshot_path(12), b"").unwrap();
        fs::write(dir.path().join("snapshot-00000000000000000013.snap.tmp"), b"").unwrap();
        fs::write(dir.path().join("unrelated.txt"), b"").unwrap();
        let listing = wal.list().unwrap();
        assert_eq!(listing.segments.iter().map(|(g, _)| *g).collect::<Vec<_>>(), vec![3, 12]);
        assert_eq!(listing.snapshots.iter().map(|(g, _)| *g).collect::<Vec<_>>(), vec![12]);
        assert_eq!(listing.temporaries.len(), 1);
    }

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let wal = WalDir::new(dir.path());
        let held = wal.lock().unwrap();
        assert!(matches!(wal.lock(), Err(WalError::Locked(_))));
        drop(held);
        wal.lock().unwrap();
    }
}
