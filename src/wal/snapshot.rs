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
//! a new segment once the active one passes the threshold, the state at that
//! instant is snapshotted, and the segments it covers are deleted.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use super::WalError;
use super::commit::CompactionTicket;
use super::record::{self, FILE_HEADER_BYTES, Record};
use super::segment::{ScanEnd, WalDir, scan};

/// Magic at the start of every snapshot.
pub const SNAPSHOT_MAGIC: &[u8; 7] = b"YDHTSNP";

/// Writes `records` as the snapshot of `generation` and returns its size in bytes.
pub fn write(dir: &WalDir, generation: u64, records: &[Record]) -> Result<u64, WalError> {
    let temporary = dir.snapshot_path(generation).with_extension("snap.tmp");
    let written = write_to(dir, generation, records, &temporary);
    if written.is_err() {
        // A half-written snapshot (e.g. on a full disk) would only hold on to the space.
        let _ = fs::remove_file(&temporary);
    }
    written
}

fn write_to(dir: &WalDir, generation: u64, records: &[Record], temporary: &Path) -> Result<u64, WalError> {
    let path = dir.snapshot_path(generation);
    let failed = |source| WalError::io("cannot write snapshot", temporary, source);
    let file = File::create(temporary).map_err(failed)?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    writer.write_all(&record::file_header(SNAPSHOT_MAGIC)).map_err(failed)?;
    writer.write_all(&(records.len() as u64).to_le_bytes()).map_err(failed)?;
    let mut frame = Vec::new();
    let mut size = (FILE_HEADER_BYTES + 8) as u64;
    for found in records {
        frame.clear();
        record::encode(found, &mut frame)?;
        writer.write_all(&frame).map_err(failed)?;
        size += frame.len() as u64;
    }
    let file = writer.into_inner().map_err(|error| failed(error.into_error()))?;
    file.sync_all().map_err(failed)?;
    drop(file);
    fs::rename(temporary, &path).map_err(|source| WalError::io("cannot rename snapshot into place", &path, source))?;
    dir.sync()?;
    Ok(size)
}

/// Reads the snapshot at `path`, handing each record to `each`; returns how many there were.
/// Any damage is an error: a snapshot is never partially trusted.
pub fn load(path: &Path, each: impl FnMut(Record)) -> Result<usize, WalError> {
    let bytes = fs::read(path).map_err(|source| WalError::io("cannot read snapshot", path, source))?;
    decode(&bytes, each).map_err(|reason| WalError::Snapshot { path: path.to_path_buf(), reason })
}

/// Decodes a whole snapshot file's bytes, handing each record to `each`;
/// returns how many there were, or what is wrong and where. Never panics on
/// any input (fuzzed by `fuzz/fuzz_targets/snapshot_decode.rs`).
pub fn decode(bytes: &[u8], mut each: impl FnMut(Record)) -> Result<usize, String> {
    record::check_file_header(bytes, SNAPSHOT_MAGIC)?;
    let count_end = FILE_HEADER_BYTES + 8;
    let count = bytes
        .get(FILE_HEADER_BYTES..count_end)
        .map(|count| u64::from_le_bytes(count.try_into().expect("8 bytes")))
        .ok_or_else(|| "the record count is missing".to_string())?;
    let mut seen = 0u64;
    let (_, end) = scan(bytes, count_end, |found| {
        seen += 1;
        each(found);
    });
    match end {
        ScanEnd::Clean if seen == count => Ok(seen as usize),
        ScanEnd::Clean => Err(format!("it holds {seen} records but its header promises {count}")),
        ScanEnd::Torn { offset, .. } => Err(format!("it ends inside a record at byte offset {offset}")),
        ScanEnd::Corrupt { offset, reason } => Err(format!("{reason} at byte offset {offset}")),
    }
}

/// Writes the snapshot of `generation` from `records` (the state when that
/// segment started), then deletes every older segment and snapshot. Runs on a
/// background thread; the writer will not rotate again until it ends.
pub fn compact(dir: &WalDir, ticket: CompactionTicket, generation: u64, records: &[Record]) {
    match write(dir, generation, records) {
        Ok(bytes) => {
            match dir.list() {
                Ok(listing) => {
                    let covered =
                        listing.segments.iter().chain(&listing.snapshots).filter(|(old, _)| *old < generation);
                    for (_, path) in covered {
                        if let Err(error) = std::fs::remove_file(path) {
                            tracing::warn!(file = %path.display(), %error, "cannot remove a compacted WAL file");
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot list the WAL directory after a snapshot"),
            }
            ticket.stats().compacted(bytes);
            tracing::info!(generation, records = records.len(), bytes, "snapshot written; older WAL segments removed");
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
        assert_eq!(load(&path, |found| loaded.push(found)).unwrap(), 2);
        assert_eq!(loaded, records);

        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 1);
        fs::write(&path, &bytes).unwrap();
        let error = load(&path, |_| {}).unwrap_err().to_string();
        assert!(error.contains(&path.display().to_string()) && error.contains("offset"), "{error}");
    }
}
