//! The write-ahead log that makes a storage node durable.
//!
//! - [`record`]: the self-checking frame format (length + CRCs + payload), with its byte layout.
//! - [`segment`]: the directory layout, the segment being appended to, and scanning frames back.
//! - [`snapshot`]: atomic snapshots, and compaction (snapshot, then delete the segments it covers).
//! - [`group`]: the one group-commit writer thread (also the replicator queue's).
//! - [`commit`]: the WAL on it: many concurrent appends, one fdatasync, each
//!   append acknowledged only after the sync that covers it.
//! - [`recover`] (this file): rebuilding state at start-up from the latest snapshot plus the
//!   segments after it.
//!
//! # Recovery rules
//!
//! - A torn tail in the newest segment (a crash in the middle of an append) is cut off,
//!   and a warning says how many bytes were dropped and where.
//! - Damage anywhere else stops start-up with an error naming the file and the byte
//!   offset. Nothing is skipped silently. With `salvage` (`--salvage-wal`) the damaged
//!   segment is cut at that offset instead, and a warning says how many bytes were lost.
//! - A damaged snapshot always stops start-up: the segments it replaced are gone.

pub mod codec;
pub mod commit;
pub mod frame;
pub mod group;
pub mod record;
pub mod segment;
pub mod snapshot;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use commit::{Apply, Committed, Committer, CommitterConfig, CompactionTicket, SyncMode, WalStats};
pub use record::{AcceptorEntry, Entry, Record};
pub use segment::{DirLock, Segment, WalDir};

use record::FILE_HEADER_BYTES;
use segment::ScanEnd;

/// Everything that can go wrong with the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "cannot write WAL segment".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A segment is damaged before its end.
    #[error(
        "WAL file {} is corrupt at byte offset {offset} ({reason}); restore this node from its replicas, \
         or restart with --salvage-wal to keep only the records before that offset",
        path.display()
    )]
    Corrupt {
        /// The damaged segment.
        path: PathBuf,
        /// Where the first bad frame starts.
        offset: u64,
        /// What failed.
        reason: frame::FrameError,
    },
    /// A segment other than the newest ends inside a record.
    #[error(
        "WAL file {} is corrupt at byte offset {offset} (an older segment ends inside a record); restore this node \
         from its replicas, or restart with --salvage-wal to keep only the records before that offset",
        path.display()
    )]
    Cut {
        /// The damaged segment.
        path: PathBuf,
        /// Where its last, incomplete frame starts.
        offset: u64,
    },
    /// A snapshot cannot be trusted.
    #[error("snapshot {} is unreadable ({reason}); restore this node from its replicas", path.display())]
    Snapshot {
        /// The damaged snapshot.
        path: PathBuf,
        /// What failed.
        reason: snapshot::SnapshotDamage,
    },
    /// Another process holds the directory.
    #[error("another ydht node is already using {}; stop it or choose another --node-id / --data-dir", .0.display())]
    Locked(PathBuf),
    /// A record cannot be encoded.
    #[error("cannot log the record: {0}")]
    Encode(#[from] record::EncodeError),
    /// The file system holding the WAL is full: the write was refused and the
    /// log cut back to its last acknowledged record, so the next write after
    /// space is freed goes through.
    #[error("disk full at {}: free space and the node resumes", .0.display())]
    DiskFull(PathBuf),
    /// An earlier write or sync failed, so no further write can be trusted.
    #[error("the write-ahead log stopped accepting writes after an I/O error ({0}); restart the node")]
    Failed(String),
    /// The writer has shut down.
    #[error("the write-ahead log is shut down")]
    Closed,
}

impl WalError {
    /// An I/O error with what was being done to which path.
    pub fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io { action, path: path.to_path_buf(), source }
    }
}

/// Whether `error` means the file system is out of space (or quota): a
/// condition that goes away when space is freed, unlike a failing disk.
pub fn is_out_of_space(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

/// What recovery found, and the segment to continue appending to.
#[derive(Debug)]
pub struct Recovered {
    /// The newest segment, ready for appends.
    pub segment: Segment,
    /// Bytes in older segments that the next compaction will delete.
    pub retired_bytes: u64,
    /// Records loaded from the snapshot.
    pub snapshot_records: usize,
    /// Records replayed from segments.
    pub replayed_records: usize,
    /// Bytes cut off a torn tail or salvaged away.
    pub truncated_bytes: u64,
}

/// Rebuilds state from `dir`: hands every record of the latest snapshot and then of
/// each later segment, in order, to `apply`. Creates the directory and a first
/// segment when there is nothing yet.
pub fn recover(
    dir: &WalDir,
    salvage: bool,
    retention: &segment::Retention,
    mut apply: impl FnMut(Entry),
) -> Result<Recovered, WalError> {
    dir.create()?;
    let listing = dir.list()?;
    for temporary in &listing.temporaries {
        let _ = fs::remove_file(temporary);
    }
    let mut first_generation = 0;
    let mut snapshot_records = 0;
    if let Some((generation, path)) = listing.snapshots.last() {
        snapshot_records = snapshot::load(path, &mut apply)?;
        tracing::info!(snapshot = %path.display(), records = snapshot_records, "loaded snapshot");
        first_generation = *generation;
    }
    remove_covered(&listing, first_generation, retention);

    let segments: Vec<_> = listing.segments.iter().filter(|(generation, _)| *generation >= first_generation).collect();
    let mut replayed_records = 0;
    let mut truncated_bytes = 0;
    let mut retired_bytes = 0;
    let mut newest = None;
    for (index, (generation, path)) in segments.iter().enumerate() {
        let is_newest = index + 1 == segments.len();
        let bytes = fs::read(path).map_err(|source| WalError::io("cannot read WAL segment", path, source))?;
        let (valid, end) = segment::decode_segment(&bytes, |found| {
            replayed_records += 1;
            apply(found);
        });
        let keep = match end {
            ScanEnd::Clean => valid as u64,
            // Zeros written ahead of the records (segment::PREALLOCATE_BYTES): not damage.
            ScanEnd::Torn { offset, .. } if bytes[offset as usize..].iter().all(|&byte| byte == 0) => {
                if is_newest {
                    truncate(path, offset)?;
                }
                offset
            }
            ScanEnd::Torn { offset, bytes } if is_newest => {
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    bytes,
                    "WAL ends with a torn record (crash during an append); truncated {bytes} bytes at offset {offset}"
                );
                truncate(path, offset)?;
                truncated_bytes += bytes;
                offset
            }
            ScanEnd::Torn { offset, .. } | ScanEnd::Corrupt { offset, .. } if salvage => {
                let lost = bytes.len() as u64 - offset;
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    "--salvage-wal: truncated the damaged WAL file at offset {offset}, losing {lost} bytes"
                );
                truncate(path, offset)?;
                truncated_bytes += lost;
                offset
            }
            ScanEnd::Torn { offset, .. } => return Err(WalError::Cut { path: path.clone(), offset }),
            ScanEnd::Corrupt { offset, reason } => {
                return Err(WalError::Corrupt { path: path.clone(), offset, reason });
            }
        };
        if is_newest {
            newest = Some((*generation, path.clone(), keep));
        } else if keep < FILE_HEADER_BYTES as u64 {
            // Salvage left nothing of this older segment.
            fs::remove_file(path).map_err(|source| WalError::io("cannot remove WAL segment", path, source))?;
        } else {
            retired_bytes += keep;
        }
    }
    let segment = match newest {
        Some((generation, _, len)) if len < FILE_HEADER_BYTES as u64 => Segment::create(dir, generation)?,
        Some((generation, path, len)) => Segment::open(path, generation, len)?,
        None => Segment::create(dir, first_generation)?,
    };
    Ok(Recovered { segment, retired_bytes, snapshot_records, replayed_records, truncated_bytes })
}

/// Deletes snapshots and segments older than the snapshot of `generation`
/// (left behind when a crash interrupted a compaction).
/// Removes the snapshots and segments older than `generation` (the snapshot's), except the
/// segments within `retention`: the change feed reads them ([`segment::removable`]).
fn remove_covered(listing: &segment::Listing, generation: u64, retention: &segment::Retention) {
    let snapshots = listing.snapshots.iter().filter(|(older, _)| *older < generation).map(|(_, path)| path.as_path());
    let stale = snapshots.chain(segment::removable(&listing.segments, generation, retention));
    for path in stale {
        match fs::remove_file(path) {
            Ok(()) => tracing::info!(file = %path.display(), "removed a file the snapshot already covers"),
            Err(error) => tracing::warn!(file = %path.display(), %error, "cannot remove a covered WAL file"),
        }
    }
}

fn truncate(path: &Path, len: u64) -> Result<(), WalError> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| file.set_len(len).and_then(|()| file.sync_all()))
        .map_err(|source| WalError::io("cannot truncate WAL segment", path, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(count: u64) -> Vec<Record> {
        (0..count)
            .map(|n| {
                Record::put(format!("key-{n}"), 100 + n, vec![n as u8; (n as usize % 7) + 1], "application/x-test")
                    .with_expiry((n % 2 == 0).then_some(1_000 + n))
            })
            .collect()
    }

    /// Writes `records` into segment 0 of `dir` and returns each frame's end offset.
    fn write_segment(dir: &WalDir, records: &[Record]) -> Vec<u64> {
        let mut segment = Segment::create(dir, 0).unwrap();
        let mut ends = Vec::new();
        for found in records {
            let mut frame = Vec::new();
            record::encode(found, &mut frame).unwrap();
            segment.append(&frame).unwrap();
            ends.push(segment.len());
        }
        segment.sync().unwrap();
        ends
    }

    fn recover_all(dir: &WalDir, salvage: bool) -> Result<(Vec<Record>, Recovered), WalError> {
        let mut seen = Vec::new();
        let recovered = recover(dir, salvage, &segment::Retention::NONE, |found| seen.extend(found.into_record()))?;
        Ok((seen, recovered))
    }

    #[test]
    fn records_round_trip_through_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let wal = WalDir::new(dir.path());
        let written = records(20);
        write_segment(&wal, &written);
        let (seen, recovered) = recover_all(&wal, false).unwrap();
        assert_eq!(seen, written);
        assert_eq!(recovered.truncated_bytes, 0);
        assert_eq!(recovered.segment.len(), fs::metadata(wal.segment_path(0)).unwrap().len());
    }

    #[test]
    fn a_tail_torn_at_any_byte_keeps_every_earlier_record() {
        let written = records(5);
        let template = tempfile::tempdir().unwrap();
        let ends = write_segment(&WalDir::new(template.path()), &written);
        let mut full = fs::read(WalDir::new(template.path()).segment_path(0)).unwrap();
        full.truncate(ends[ends.len() - 1] as usize);
        let last_start = ends[ends.len() - 2] as usize;
        // The crash cut the last append short where the file ended, or inside the zeros written ahead.
        for (cut, padding) in (last_start..full.len()).flat_map(|cut| [(cut, 0), (cut, 4096)]) {
            let dir = tempfile::tempdir().unwrap();
            let wal = WalDir::new(dir.path());
            let mut bytes = full[..cut].to_vec();
            bytes.resize(cut + padding, 0);
            fs::write(wal.segment_path(0), &bytes).unwrap();
            let (seen, recovered) = recover_all(&wal, false).unwrap();
            assert_eq!(seen, written[..4], "cut at {cut}, {padding} zeros");
            let torn = if cut == last_start { 0 } else { cut - last_start + padding };
            assert_eq!(recovered.truncated_bytes, torn as u64, "cut at {cut}, {padding} zeros");
            assert_eq!(fs::metadata(wal.segment_path(0)).unwrap().len(), last_start as u64);
            // Appending after recovery produces a log that replays cleanly.
            let mut segment = recovered.segment;
            let mut frame = Vec::new();
            record::encode(&written[4], &mut frame).unwrap();
            segment.append(&frame).unwrap();
            let (again, _) = recover_all(&wal, false).unwrap();
            assert_eq!(again, written, "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_mid_log_stops_recovery_with_file_and_offset() {
        let written = records(6);
        let template = tempfile::tempdir().unwrap();
        let ends = write_segment(&WalDir::new(template.path()), &written);
        let mut full = fs::read(WalDir::new(template.path()).segment_path(0)).unwrap();
        full.truncate(ends[ends.len() - 1] as usize);
        // Every bit of the third record (records 4..6 follow it).
        let (start, end) = (ends[1] as usize, ends[2] as usize);
        for bit in start * 8..end * 8 {
            let dir = tempfile::tempdir().unwrap();
            let wal = WalDir::new(dir.path());
            let mut damaged = full.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            fs::write(wal.segment_path(0), &damaged).unwrap();
            match recover_all(&wal, false) {
                Err(WalError::Corrupt { path, offset, .. }) => {
                    assert_eq!(path, wal.segment_path(0));
                    assert_eq!(offset, start as u64, "bit {bit}");
                }
                other => panic!("bit {bit}: expected corruption, got {other:?}"),
            }
            // The file is left untouched for the operator.
            assert_eq!(fs::read(wal.segment_path(0)).unwrap(), damaged);
        }
    }

    #[test]
    fn corruption_error_names_file_offset_and_the_salvage_flag() {
        let dir = tempfile::tempdir().unwrap();
        let wal = WalDir::new(dir.path());
        let written = records(4);
        let ends = write_segment(&wal, &written);
        let mut bytes = fs::read(wal.segment_path(0)).unwrap();
        bytes[ends[0] as usize + 15] ^= 0xff;
        fs::write(wal.segment_path(0), &bytes).unwrap();
        let message = recover_all(&wal, false).unwrap_err().to_string();
        assert!(message.contains(&wal.segment_path(0).display().to_string()), "{message}");
        assert!(message.contains(&format!("offset {}", ends[0])), "{message}");
        assert!(message.contains("--salvage-wal"), "{message}");

        let (seen, recovered) = recover_all(&wal, true).unwrap();
        assert_eq!(seen, written[..1]);
        assert_eq!(recovered.truncated_bytes, bytes.len() as u64 - ends[0]);
        let (again, _) = recover_all(&wal, false).unwrap();
        assert_eq!(again, written[..1]);
    }

    #[test]
    fn snapshot_plus_later_segments_are_replayed_and_covered_files_removed() {
        let dir = tempfile::tempdir().unwrap();
        let wal = WalDir::new(dir.path());
        let written = records(6);
        write_segment(&wal, &written[..3]);
        snapshot::write(&wal, 1, &written[..3]).unwrap();
        let mut segment = Segment::create(&wal, 1).unwrap();
        for found in &written[3..] {
            let mut frame = Vec::new();
            record::encode(found, &mut frame).unwrap();
            segment.append(&frame).unwrap();
        }
        let (seen, recovered) = recover_all(&wal, false).unwrap();
        assert_eq!(seen, written);
        assert_eq!((recovered.snapshot_records, recovered.replayed_records), (3, 3));
        assert_eq!(recovered.segment.generation(), 1);
        assert!(!wal.segment_path(0).exists(), "segment 0 is covered by the snapshot");
    }

    #[test]
    fn an_empty_directory_starts_a_first_segment() {
        let dir = tempfile::tempdir().unwrap();
        let wal = WalDir::new(dir.path().join("node-1"));
        let (seen, recovered) = recover_all(&wal, false).unwrap();
        assert!(seen.is_empty());
        assert!(recovered.segment.is_empty());
        assert!(wal.segment_path(0).exists());
    }
}
