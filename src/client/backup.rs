//! `ydht backup --out FILE [--tenant ID]` and `ydht restore FILE`: every live record of the
//! cluster (or of one tenant) in one compressed, checksummed file, and back.
//!
//! # Backup
//! Each storage node's keys are listed in key order (`GET /keys`, a page at a time) and merged
//! across the nodes, so each key is taken once, from a node holding its newest version, and read
//! from it in batches (`POST /export`). The file is written while the cluster takes writes: a
//! write acknowledged before the backup began is in it (with its version, expiry and content
//! type); later ones may or may not be. Tombstones are not kept.
//!
//! # File format (version 1)
//! ```text
//! 8 bytes  magic "YDHTBKP" + format version byte (1)
//! rest     a zstd stream (with its content checksum) of:
//!            one WAL record frame per record (crate::wal::record: length, CRCs, payload), by key
//!            an end frame: payload 0xFF, record count (u64 LE), SHA-256 of every record frame's bytes
//! ```
//!
//! # Restore
//! The whole file is read and checked first (every frame's CRCs, the count and the SHA-256 in the
//! end frame, zstd's checksum): a damaged or truncated file is refused with one line before
//! anything is written. Then each record that has not expired is written, with its own version,
//! to its owners on the gateway's ring (`POST /batch` on the nodes), which keep a newer version
//! they already hold.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::output::{print_json, print_line};
use super::{Context, GatewayClient, OperatorArgs, cluster};
use crate::error::{Exit, exit};
use crate::nodeclient::NodeClient;
use crate::proto::NodeKeyEntry;
use crate::wal::frame::{self, Split};
use crate::wal::record::{self, Record};

/// Magic at the start of a backup file.
pub const BACKUP_MAGIC: &[u8; 7] = b"YDHTBKP";
/// The format version after the magic.
const FORMAT_VERSION: u8 = 1;
/// The first payload byte of the end frame (no record kind uses it).
const END_KIND: u8 = 0xFF;
/// Keys listed per node page.
const LIST_PAGE: usize = 1000;
/// Keys read per `/export` request.
const EXPORT_BATCH: usize = 500;
/// Bytes of records per `/batch` request on restore.
const RESTORE_BATCH_BYTES: usize = 2 << 20;
/// How long one node may take to answer.
const NODE_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `ydht backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Write the backup to this file (replaced if it exists; written to FILE.partial first)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// Only this tenant's keys (its user id, as `ydht whoami` shows it)
    #[arg(long, value_name = "ID")]
    pub tenant: Option<i64>,

    /// Where the cluster secret comes from.
    #[command(flatten)]
    pub operator: OperatorArgs,

    /// The gateway and the config dir.
    #[command(flatten)]
    pub client: GatewayClient,
}

/// Arguments of `ydht restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file (`ydht backup --out`)
    pub file: PathBuf,

    /// Where the cluster secret comes from.
    #[command(flatten)]
    pub operator: OperatorArgs,

    /// The gateway and the config dir.
    #[command(flatten)]
    pub client: GatewayClient,
}

/// What `ydht backup` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    /// The file.
    pub file: String,
    /// Records in it.
    pub records: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// The nodes read.
    pub nodes: usize,
}

/// What `ydht restore` did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreSummary {
    /// Records in the file.
    pub records: u64,
    /// Records written (the version became current on at least one owner).
    pub restored: u64,
    /// Records whose owners all held that version or a newer one already (left as they were).
    pub already_there: u64,
    /// Records already expired, not written.
    pub expired: u64,
}

/// Why a backup file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Not a ydht backup.
    #[error("not a ydht backup file (it does not start with the backup magic)")]
    NotBackup,
    /// Written by a newer ydht.
    #[error("backup format version {0} is not supported (this ydht reads version {FORMAT_VERSION})")]
    Version(u8),
    /// It ends before its end frame.
    #[error("the backup file is truncated: it ends before its end marker (was the backup interrupted?)")]
    Truncated,
    /// A check failed.
    #[error("the backup file is damaged: {0}")]
    Damaged(String),
    /// It could not be read.
    #[error("cannot read the backup file: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes records as a backup file.
struct Writer<W: Write> {
    encoder: zstd::stream::write::Encoder<'static, W>,
    digest: Sha256,
    count: u64,
    frame: Vec<u8>,
}

impl<W: Write> Writer<W> {
    fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(&record::file_header(BACKUP_MAGIC))?;
        let mut encoder = zstd::stream::write::Encoder::new(out, 3)?;
        encoder.include_checksum(true)?;
        Ok(Self { encoder, digest: Sha256::new(), count: 0, frame: Vec::new() })
    }

    fn push(&mut self, record: &Record) -> anyhow::Result<()> {
        self.frame.clear();
        record::encode(record, &mut self.frame)
            .map_err(|error| anyhow::anyhow!("cannot encode {}: {error}", record.key))?;
        self.digest.update(&self.frame);
        self.encoder.write_all(&self.frame)?;
        self.count += 1;
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<W> {
        let mut payload = vec![END_KIND];
        payload.extend_from_slice(&self.count.to_le_bytes());
        payload.extend_from_slice(&self.digest.finalize());
        let mut end = Vec::new();
        frame::append(&mut end, |out| out.extend_from_slice(&payload))
            .map_err(|_| std::io::Error::other("end frame"))?;
        self.encoder.write_all(&end)?;
        self.encoder.finish()
    }
}

/// Reads a backup file's records in order; [`read_all`] checks the whole file first.
fn read_records(
    file: &std::path::Path,
    mut each: impl FnMut(Record) -> anyhow::Result<()>,
) -> Result<u64, anyhow::Error> {
    let mut input = std::io::BufReader::new(std::fs::File::open(file).map_err(FileError::Io)?);
    let mut header = [0u8; record::FILE_HEADER_BYTES];
    input.read_exact(&mut header).map_err(|_| FileError::NotBackup)?;
    if header[..7] != BACKUP_MAGIC[..] {
        return Err(FileError::NotBackup.into());
    }
    if header[7] != FORMAT_VERSION {
        return Err(FileError::Version(header[7]).into());
    }
    let mut decoder = zstd::stream::read::Decoder::new(input).map_err(FileError::Io)?;
    let mut buffer: Vec<u8> = Vec::new();
    let mut start = 0;
    let mut digest = Sha256::new();
    let mut count = 0u64;
    let mut chunk = vec![0u8; 1 << 16];
    let mut ended = false;
    loop {
        let read = match decoder.read(&mut chunk) {
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FileError::Truncated.into()),
            Err(error) => return Err(FileError::Damaged(format!("the compressed data does not check: {error}")).into()),
        };
        if read == 0 {
            break;
        }
        if ended {
            return Err(FileError::Damaged("data follows the end marker".into()).into());
        }
        buffer.drain(..start);
        start = 0;
        buffer.extend_from_slice(&chunk[..read]);
        loop {
            match frame::split(&buffer[start..]) {
                Split::Frame(payload, used) => {
                    if payload.first() == Some(&END_KIND) {
                        if payload.len() != 1 + 8 + 32 {
                            return Err(FileError::Damaged("the end marker is malformed".into()).into());
                        }
                        let written = u64::from_le_bytes(payload[1..9].try_into().expect("8 bytes"));
                        if written != count {
                            return Err(
                                FileError::Damaged(format!("{count} records where {written} were written")).into()
                            );
                        }
                        if digest.clone().finalize()[..] != payload[9..] {
                            return Err(FileError::Damaged("the records' SHA-256 does not match".into()).into());
                        }
                        ended = true;
                        start += used;
                        if start != buffer.len() {
                            return Err(FileError::Damaged("data follows the end marker".into()).into());
                        }
                        break;
                    }
                    let record = record::decode_payload(payload)
                        .map_err(|error| FileError::Damaged(format!("record {} cannot be read: {error}", count + 1)))?;
                    digest.update(&buffer[start..start + used]);
                    count += 1;
                    start += used;
                    each(record)?;
                }
                Split::Incomplete => break,
                Split::Corrupt(error) => {
                    return Err(FileError::Damaged(format!("record {}: {error}", count + 1)).into());
                }
            }
        }
    }
    if !ended {
        return Err(FileError::Truncated.into());
    }
    Ok(count)
}

/// One node's listing, read a page at a time.
struct Listing {
    url: String,
    buffered: VecDeque<NodeKeyEntry>,
    cursor: Option<String>,
    done: bool,
}

/// A progress spinner on stderr when it is a terminal (hidden otherwise).
fn progress(what: &str, total: Option<u64>) -> indicatif::ProgressBar {
    let bar = match total {
        Some(total) => indicatif::ProgressBar::new(total),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let template = match total {
        Some(_) => format!("{what} [{{bar:30}}] {{pos}}/{{len}} records  {{per_sec}}"),
        None => format!("{what} {{spinner}} {{pos}} records  {{per_sec}}"),
    };
    bar.set_style(indicatif::ProgressStyle::with_template(&template).expect("constant template").progress_chars("=> "));
    bar
}

/// `ydht backup`.
pub async fn backup(args: BackupArgs, context: &Context) -> anyhow::Result<()> {
    let secret = args.operator.require_cluster_secret("ydht backup")?;
    let view = cluster::fetch(context, &secret).await?;
    let nodes = NodeClient::new(secret.clone(), NODE_TIMEOUT);
    let prefix = args.tenant.map(|id| format!("{id}/")).unwrap_or_default();
    let mut listings: Vec<Listing> = view
        .members
        .iter()
        .map(|member| Listing { url: member.url.clone(), buffered: VecDeque::new(), cursor: None, done: false })
        .collect();
    if listings.is_empty() {
        return Err(Exit::new(exit::UNAVAILABLE, "the gateway reports no storage nodes").into());
    }
    let partial = args.out.with_extension("partial");
    let file = std::fs::File::create(&partial)
        .map_err(|error| Exit::usage(format!("cannot create {}: {error}", partial.display())))?;
    let mut writer = Writer::new(std::io::BufWriter::new(file))?;
    let bar = progress("backing up", None);
    loop {
        for listing in listings.iter_mut().filter(|listing| listing.buffered.is_empty() && !listing.done) {
            let page = nodes
                .keys(&listing.url, &prefix, LIST_PAGE, listing.cursor.as_deref())
                .await
                .map_err(|error| node_unreadable(&listing.url, &error.to_string()))?;
            listing.buffered.extend(page.keys);
            listing.cursor = page.next_cursor;
            listing.done = listing.cursor.is_none();
        }
        // Keys up to the smallest last key of the listings that go on are complete on every node.
        let bound = listings
            .iter()
            .filter(|listing| !listing.done)
            .filter_map(|listing| listing.buffered.back().map(|entry| entry.key.clone()))
            .min();
        let mut newest: BTreeMap<String, (u64, usize)> = BTreeMap::new();
        for (index, listing) in listings.iter_mut().enumerate() {
            while listing.buffered.front().is_some_and(|entry| bound.as_ref().is_none_or(|bound| entry.key <= *bound)) {
                let entry = listing.buffered.pop_front().expect("front checked");
                let best = newest.entry(entry.key).or_insert((entry.version, index));
                if entry.version > best.0 {
                    *best = (entry.version, index);
                }
            }
        }
        if newest.is_empty() && listings.iter().all(|listing| listing.done && listing.buffered.is_empty()) {
            break;
        }
        let mut by_node: HashMap<usize, Vec<String>> = HashMap::new();
        for (key, (_, index)) in &newest {
            by_node.entry(*index).or_default().push(key.clone());
        }
        let mut records: BTreeMap<String, Record> = BTreeMap::new();
        for (index, keys) in by_node {
            for chunk in keys.chunks(EXPORT_BATCH) {
                let url = &listings[index].url;
                let read = nodes
                    .export(url, chunk.to_vec())
                    .await
                    .map_err(|error| node_unreadable(url, &error.to_string()))?;
                for found in read.into_iter().filter(|found| !found.tombstone) {
                    records.insert(found.key.clone(), found);
                }
            }
        }
        for record in records.values() {
            writer.push(record)?;
            bar.inc(1);
        }
    }
    let count = writer.count;
    let mut out = writer.finish()?;
    out.flush()?;
    out.get_ref().sync_all()?;
    drop(out);
    std::fs::rename(&partial, &args.out)
        .with_context(|| format!("cannot move {} to {}", partial.display(), args.out.display()))?;
    bar.finish_and_clear();
    let bytes = std::fs::metadata(&args.out).map(|metadata| metadata.len()).unwrap_or(0);
    let summary = BackupSummary { file: args.out.display().to_string(), records: count, bytes, nodes: listings.len() };
    if context.json() {
        print_json(&summary)
    } else {
        print_line(&format!(
            "backed up {count} record{} from {} nodes into {} ({})",
            if count == 1 { "" } else { "s" },
            summary.nodes,
            summary.file,
            crate::units::bytes(bytes)
        ))
    }
}

fn node_unreadable(url: &str, error: &str) -> anyhow::Error {
    Exit::new(
        exit::UNAVAILABLE,
        format!("cannot read the storage node at {url}: {error}; the backup needs every node of the ring (start it or remove it with `ydht cluster leave`)"),
    )
    .into()
}

/// `ydht restore`.
pub async fn restore(args: RestoreArgs, context: &Context) -> anyhow::Result<()> {
    let secret = args.operator.require_cluster_secret("ydht restore")?;
    let name = args.file.display().to_string();
    if !args.file.is_file() {
        return Err(Exit::usage(format!("{name} is not a file")).into());
    }
    // First the whole file is checked: nothing is written from a damaged one.
    let path = args.file.clone();
    let total = tokio::task::spawn_blocking(move || read_records(&path, |_| Ok(())))
        .await
        .context("the check of the backup file stopped")?
        .map_err(|error| Exit::usage(format!("{name}: {error}; nothing was restored")))?;
    let view = cluster::fetch(context, &secret).await?;
    let ring = view.ring();
    if ring.preference_list(b"").is_empty() {
        return Err(Exit::new(exit::UNAVAILABLE, "the gateway reports no storage nodes on its ring").into());
    }
    let nodes = NodeClient::new(secret.clone(), NODE_TIMEOUT);
    let bar = progress("restoring", Some(total));
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Record>(4096);
    let path = args.file.clone();
    let reader = tokio::task::spawn_blocking(move || {
        read_records(&path, |record| sender.blocking_send(record).map_err(|_| anyhow::anyhow!("the restore stopped")))
    });
    let now = crate::hlc::wall_millis();
    let mut summary = RestoreSummary { records: total, restored: 0, already_there: 0, expired: 0 };
    let mut pending: HashMap<String, Batch> = HashMap::new();
    // Per record written (by its place among them): whether an owner applied it.
    let mut applied: Vec<bool> = Vec::new();
    while let Some(record) = receiver.recv().await {
        bar.inc(1);
        if record.expires_at.is_some_and(|at| at <= now) {
            summary.expired += 1;
            continue;
        }
        let index = applied.len();
        applied.push(false);
        for owner in ring.owners(record.key.as_bytes(), view.replicas) {
            let batch = pending.entry(owner.url.clone()).or_default();
            batch.bytes += record.framed_len();
            batch.indices.push(index);
            batch.records.push(record.clone());
            if batch.bytes >= RESTORE_BATCH_BYTES || batch.records.len() >= crate::wire::batch::MAX_BATCH_RECORDS {
                let batch = pending.remove(&owner.url).expect("just filled");
                send_batch(&nodes, &owner.url, batch, &mut applied).await?;
            }
        }
    }
    reader.await.context("the backup reader stopped")??;
    for (url, batch) in pending {
        send_batch(&nodes, &url, batch, &mut applied).await?;
    }
    bar.finish_and_clear();
    summary.restored = applied.iter().filter(|applied| **applied).count() as u64;
    summary.already_there = applied.len() as u64 - summary.restored;
    if context.json() {
        print_json(&summary)
    } else {
        print_line(&format!(
            "restored {} of {} records ({} were there already at that version or a newer one, {} had expired)",
            summary.restored, summary.records, summary.already_there, summary.expired
        ))
    }
}

/// Records on their way to one node, with their places in the restore's `applied` list.
#[derive(Debug, Default)]
struct Batch {
    indices: Vec<usize>,
    records: Vec<Record>,
    bytes: usize,
}

/// Writes `batch` to the node at `url`, noting in `applied` which records it applied.
async fn send_batch(nodes: &NodeClient, url: &str, batch: Batch, applied: &mut [bool]) -> anyhow::Result<()> {
    let body = crate::wire::batch::encode(&batch.records)
        .map_err(|error| anyhow::anyhow!("cannot encode a batch: {error}"))?;
    let answer = nodes.batch(url, body).await.map_err(|error| {
        Exit::new(
            exit::UNAVAILABLE,
            format!("cannot write to the storage node at {url}: {error}; run the restore again (it is idempotent)"),
        )
    })?;
    for (index, result) in batch.indices.into_iter().zip(answer.results) {
        applied[index] |= result.applied;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record::put("1/a", 10, &b"alpha"[..], "text/plain").with_expiry(Some(99_000)),
            Record::put("1/b", 11, vec![0u8, 255, 7], "application/octet-stream"),
        ]
    }

    fn write_file(records: &[Record]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.ydht");
        let mut writer = Writer::new(std::fs::File::create(&path).unwrap()).unwrap();
        for record in records {
            writer.push(record).unwrap();
        }
        writer.finish().unwrap();
        (dir, path)
    }

    #[test]
    fn a_backup_file_reads_back_what_was_written() {
        let (_dir, path) = write_file(&sample());
        let mut read = Vec::new();
        let count = read_records(&path, |record| {
            read.push(record);
            Ok(())
        })
        .unwrap();
        assert_eq!((count, read), (2, sample()));
    }

    #[test]
    fn damaged_and_truncated_files_are_refused() {
        let (_dir, path) = write_file(&sample());
        let bytes = std::fs::read(&path).unwrap();
        let check = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            read_records(&path, |_| Ok(())).unwrap_err().to_string()
        };
        for at in [10, bytes.len() / 2, bytes.len() - 5] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            let error = check(&flipped);
            assert!(error.contains("damaged") || error.contains("truncated"), "byte {at}: {error}");
        }
        assert!(check(&bytes[..bytes.len() - 20]).contains("truncated"));
        assert!(check(&bytes[..8]).contains("truncated"));
        assert!(check(b"not a backup at all").contains("not a ydht backup"));
    }
}
