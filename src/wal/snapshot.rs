//! Snapshots: the whole state of a node in one file, written atomically.
//!
//! Layout: the file header `YDHTSNP` + format version, the record count (u64
//! little-endian), then that many frames in the WAL record format (tombstones
//! included, so deletes keep winning over older replicated writes).
//!
//! Writing goes to `<name>.tmp`, which is fsynced, renamed over the final
//! name, and then the directory is fsynced: a crash leaves either the old
//! snapshot or the new one, never a partial file under the final name.
//!
//! [`compact`] is the background half of compaction: the writer thread starts
//! a new segment once the active one passes the threshold, the state is
//! snapshotted, and the segments it covers are deleted. The caller may copy its
//! state into the snapshot piece by piece while writes go on (the node does:
//! see `Store`), as long as every record is at least as new as it was when the
//! segment started: records written since are in the newer segments too, and
//! replaying them over the snapshot changes nothing (the newest version wins).

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::WalError;
use super::commit::CompactionTicket;
use super::record::{self, Entry, FILE_HEADER_BYTES, Record, RecordRef};
use super::segment::{ScanEnd, WalDir, scan};

/// Magic at the start of every snapshot.
pub const SNAPSHOT_MAGIC: &[u8; 7] = b"YDHTSNP";

/// Writes one snapshot record by record: [`SnapshotWriter::push`] encodes into a
/// buffer in memory (cheap enough to call while holding the caller's lock),
/// [`SnapshotWriter::flush`] writes that buffer out (call it without the lock),
/// and [`SnapshotWriter::finish`] fills in the record count and puts the file in place.
pub struct SnapshotWriter {
    path: PathBuf,
    temporary: PathBuf,
    file: File,
    pending: Vec<u8>,
    count: u64,
    size: u64,
    /// Renamed into place: nothing to clean up.
    finished: bool,
}

impl SnapshotWriter {
    /// Starts the snapshot of `generation` in a temporary file.
    pub fn create(dir: &WalDir, generation: u64) -> Result<Self, WalError> {
        let path = dir.snapshot_path(generation);
        let temporary = path.with_extension("snap.tmp");
        let file = crate::config::create_private_file(&temporary)
            .map_err(|source| WalError::io("cannot write snapshot", &temporary, source))?;
        let mut pending = Vec::with_capacity(1 << 20);
        pending.extend_from_slice(&record::file_header(SNAPSHOT_MAGIC));
        // The record count, filled in by `finish`.
        pending.extend_from_slice(&0u64.to_le_bytes());
        Ok(Self { path, temporary, file, pending, count: 0, size: 0, finished: false })
    }

    /// Adds one record (to the buffer; nothing is written yet).
    pub fn push(&mut self, found: RecordRef<'_>) -> Result<(), WalError> {
        record::encode_borrowed(found, &mut self.pending)?;
        self.count += 1;
        Ok(())
    }

    /// Adds a key's acceptor state (see [`record::Entry::Acceptor`]).
    pub fn push_acceptor(&mut self, key: &str, state: &[u8]) -> Result<(), WalError> {
        record::encode_acceptor(key, state, &mut self.pending)?;
        self.count += 1;
        Ok(())
    }

    /// Bytes pushed but not written yet.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// Writes the buffered records to the file.
    pub fn flush(&mut self) -> Result<(), WalError> {
        self.file.write_all(&self.pending).map_err(|source| self.failed(source))?;
        self.size += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Writes the rest and the record count, fsyncs, renames the file into place
    /// and fsyncs the directory; returns the snapshot's size in bytes.
    pub fn finish(mut self, dir: &WalDir) -> Result<u64, WalError> {
        self.flush()?;
        let count = self.count.to_le_bytes();
        let written = self
            .file
            .seek(SeekFrom::Start(FILE_HEADER_BYTES as u64))
            .and_then(|_| self.file.write_all(&count))
            .and_then(|()| self.file.sync_all());
        written.map_err(|source| self.failed(source))?;
        fs::rename(&self.temporary, &self.path)
            .map_err(|source| WalError::io("cannot rename snapshot into place", &self.path, source))?;
        self.finished = true;
        dir.sync()?;
        Ok(self.size)
    }

    fn failed(&self, source: std::io::Error) -> WalError {
        WalError::io("cannot write snapshot", &self.temporary, source)
    }
}

impl Drop for SnapshotWriter {
    /// A snapshot that failed or was abandoned before [`SnapshotWriter::finish`]
    /// renamed it (e.g. on a full disk) would only hold on to the space.
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.temporary);
        }
    }
}

/// Writes `records` as the snapshot of `generation` and returns its size in bytes.
pub fn write(dir: &WalDir, generation: u64, records: &[Record]) -> Result<u64, WalError> {
    let mut writer = SnapshotWriter::create(dir, generation)?;
    for found in records {
        writer.push(found.borrowed())?;
    }
    writer.finish(dir)
}

/// Reads the snapshot at `path`, handing each record to `each`; returns how many there were.
/// Any damage is an error: a snapshot is never partially trusted.
pub fn load(path: &Path, each: impl FnMut(Entry)) -> Result<usize, WalError> {
    let bytes = fs::read(path).map_err(|source| WalError::io("cannot read snapshot", path, source))?;
    decode(&bytes, each).map_err(|reason| WalError::Snapshot { path: path.to_path_buf(), reason })
}

/// Decodes a whole snapshot file's bytes, handing each record to `each`;
/// returns how many there were, or what is wrong and where. Never panics on
/// any input (fuzzed by `fuzz/fuzz_targets/snapshot_decode.rs`).
pub fn decode(bytes: &[u8], mut each: impl FnMut(Entry)) -> Result<usize, SnapshotDamage> {
    record::check_file_header(bytes, SNAPSHOT_MAGIC)?;
    let count_end = FILE_HEADER_BYTES + 8;
    let count = bytes
        .get(FILE_HEADER_BYTES..count_end)
        .map(|count| u64::from_le_bytes(count.try_into().expect("8 bytes")))
        .ok_or(SnapshotDamage::NoCount)?;
    let mut seen = 0u64;
    let (_, end) = scan(bytes, count_end, |found| {
        seen += 1;
        each(found);
    });
    match end {
        ScanEnd::Clean if seen == count => Ok(seen as usize),
        ScanEnd::Clean => Err(SnapshotDamage::Count { seen, count }),
        ScanEnd::Torn { offset, .. } => Err(SnapshotDamage::Cut(offset)),
        ScanEnd::Corrupt { offset, reason } => Err(SnapshotDamage::Frame { offset, reason }),
    }
}

/// What is wrong with a snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotDamage {
    /// Not a snapshot of this format.
    #[error(transparent)]
    Header(#[from] super::frame::HeaderError),
    /// The header ends before the record count.
    #[error("the record count is missing")]
    NoCount,
    /// Fewer or more records than the header promises.
    #[error("it holds {seen} records but its header promises {count}")]
    Count {
        /// Records found.
        seen: u64,
        /// Records promised.
        count: u64,
    },
    /// The file ends inside a record.
    #[error("it ends inside a record at byte offset {0}")]
    Cut(u64),
    /// A damaged record.
    #[error("{reason} at byte offset {offset}")]
    Frame {
        /// Where the damaged frame starts.
        offset: u64,
        /// What failed.
        reason: super::frame::FrameError,
    },
}

/// Writes the snapshot of `generation` with `fill` (which pushes every record of
/// the state, see [`SnapshotWriter`]), then deletes every older snapshot, and every older
/// segment `retention` lets go ([`super::segment::removable`]). Runs on a background thread;
/// the writer will not rotate again until it ends.
pub fn compact(
    dir: &WalDir,
    ticket: CompactionTicket,
    generation: u64,
    retention: &super::segment::Retention,
    fill: impl FnOnce(&mut SnapshotWriter) -> Result<(), WalError>,
) {
    let written = SnapshotWriter::create(dir, generation).and_then(|mut writer| {
        fill(&mut writer)?;
        let records = writer.count;
        writer.finish(dir).map(|bytes| (records, bytes))
    });
    match written {
        Ok((records, bytes)) => {
            match dir.list() {
                Ok(listing) => {
                    // Segments within the retention stay for the change feed (replay starts at
                    // the snapshot's generation and never reads them); a later compaction removes them.
                    let segments = super::segment::removable(&listing.segments, generation, retention);
                    let snapshots = listing.snapshots.iter().filter(|(old, _)| *old < generation);
                    for path in segments.into_iter().chain(snapshots.map(|(_, path)| path.as_path())) {
                        if let Err(error) = std::fs::remove_file(path) {
                            tracing::warn!(file = %path.display(), %error, "cannot remove a compacted WAL file");
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot list the WAL directory after a snapshot"),
            }
            ticket.stats().compacted(bytes);
            tracing::info!(generation, records, bytes, "snapshot written; older WAL segments removed");
        }
        Err(error) => tracing::error!(%error, "snapshot failed; older WAL segments are kept"),
    }
    drop(ticket);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_and_refuse_damage() {
        let dir = tempfile::tempdir().unwrap();
        let wal = WalDir::new(dir.path());
        let records =
            vec![Record::put("a", 1, &b"one"[..], "text/plain").with_expiry(Some(99)), Record::delete("b", 2)];
        let size = write(&wal, 5, &records).unwrap();
        let path = wal.snapshot_path(5);
        assert_eq!(fs::metadata(&path).unwrap().len(), size);
        assert!(wal.list().unwrap().temporaries.is_empty());
        let mut loaded = Vec::new();
        assert_eq!(load(&path, |found| loaded.extend(found.into_record())).unwrap(), 2);
        assert_eq!(loaded, records);

        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 1);
        fs::write(&path, &bytes).unwrap();
        let error = load(&path, |_| {}).unwrap_err().to_string();
        assert!(error.contains(&path.display().to_string()) && error.contains("offset"), "{error}");
    }
}
