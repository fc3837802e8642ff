//! The node's change feed (issue 16's watch, [`crate::watch`]): the records of its WAL, read back
//! in the order they were logged, from a position on.
//!
//! The WAL already is a durable, ordered log of every change the node took, so the feed is not a
//! second copy: a change's position is where its frame ends in the log — its segment's
//! generation in the high bits, the byte offset in the low [`HEAD_OFFSET_BITS`] — which only grows
//! and survives a restart. Only what is on disk is read (up to [`WalStats::head`]), so a position
//! once handed out always names the same change. Paxos acceptor entries are not changes and are
//! skipped.

use std::os::unix::fs::FileExt;

use crate::wal::commit::HEAD_OFFSET_BITS;
use crate::wal::record::FILE_HEADER_BYTES;
use crate::wal::segment::{WalDir, scan_ends};
use crate::wal::{Entry, WalError};
use crate::watch::{self, Kind};

/// What the feed tells about a change besides its key, version and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedMeta {
    /// The value's size in bytes (0 for a delete).
    pub size: u64,
    /// The value's content type (empty for a delete).
    pub content_type: String,
    /// When the value expires (Unix ms), if it does.
    pub expires_at: Option<u64>,
}

/// One change in the feed.
pub type FeedEntry = watch::Entry<FeedMeta>;

/// A page of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPage {
    /// The changes after the asked position, in log order (those under the asked prefix).
    pub entries: Vec<FeedEntry>,
    /// The position to ask after next: past the last entry read (of any key).
    pub next: u64,
    /// The first position the feed still holds: asking after an older one may miss changes.
    pub oldest: u64,
}

/// How much of a segment one read takes (a frame that does not fit is read whole).
const READ_CHUNK_BYTES: u64 = 1 << 20;
/// Larger than any frame the WAL writes.
const MAX_READ_CHUNK_BYTES: u64 = 1 << 30;

/// The change a WAL entry logged at `at` is, if it is one.
fn change_of(at: u64, entry: Entry) -> Option<FeedEntry> {
    match entry {
        Entry::Record(record) => Some(watch::Entry {
            seq: at,
            version: record.version,
            kind: if record.tombstone { Kind::Delete } else { Kind::Put },
            meta: FeedMeta {
                size: record.value.len() as u64,
                content_type: record.content_type,
                expires_at: record.expires_at,
            },
            key: record.key,
        }),
        Entry::Expired { key, version } => Some(watch::Entry {
            seq: at,
            version,
            kind: Kind::Expire,
            meta: FeedMeta { size: 0, content_type: String::new(), expires_at: None },
            key,
        }),
        Entry::Acceptor(_) => None,
    }
}

/// The position of the frame ending at `offset` of segment `generation`.
pub fn position(generation: u64, offset: u64) -> u64 {
    generation << HEAD_OFFSET_BITS | offset
}

/// The segment generation and offset of `position`.
pub fn split(position: u64) -> (u64, u64) {
    (position >> HEAD_OFFSET_BITS, position & ((1 << HEAD_OFFSET_BITS) - 1))
}

/// Reads the changes logged after `after` whose keys start with `prefix`, at most `limit` of
/// them, from the segments in `dir`, up to `head` (the active segment's generation and synced
/// length, [`crate::wal::WalStats::head`]). A position past the head (a new watch asks after
/// `u64::MAX`) reads from the head on.
pub fn read(dir: &WalDir, head: (u64, u64), after: u64, prefix: &str, limit: usize) -> Result<FeedPage, WalError> {
    let after = after.min(position(head.0, head.1));
    let segments = dir.list()?.segments;
    let oldest = segments.first().map_or(position(head.0, FILE_HEADER_BYTES as u64), |(generation, _)| {
        position(*generation, FILE_HEADER_BYTES as u64)
    });
    let (after_generation, after_offset) = split(after);
    let mut page = FeedPage { entries: Vec::new(), next: after.max(oldest), oldest };
    for (generation, path) in segments.into_iter().filter(|(generation, _)| *generation >= after_generation) {
        if generation > head.0 {
            break;
        }
        let start = if generation == after_generation {
            after_offset.max(FILE_HEADER_BYTES as u64)
        } else {
            FILE_HEADER_BYTES as u64
        };
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            // Compacted away meanwhile: `oldest` tells the reader.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(WalError::io("cannot open a WAL segment for the feed", &path, source)),
        };
        let end = if generation == head.0 {
            head.1
        } else {
            file.metadata().map_err(|source| WalError::io("cannot read a WAL segment's size", &path, source))?.len()
        };
        if end <= start {
            page.next = page.next.max(position(generation, start));
            continue;
        }
        let mut full = false;
        let mut at_offset = start;
        let mut chunk = READ_CHUNK_BYTES;
        while at_offset < end && !full {
            let length = chunk.min(end - at_offset);
            let mut bytes = vec![0; length as usize];
            file.read_exact_at(&mut bytes, at_offset)
                .map_err(|source| WalError::io("cannot read a WAL segment for the feed", &path, source))?;
            let (used, _) = scan_ends(&bytes, 0, |frame_end, entry| {
                if full {
                    return;
                }
                let at = position(generation, at_offset + frame_end as u64);
                if let Some(change) = change_of(at, entry).filter(|change| change.key.starts_with(prefix)) {
                    page.entries.push(change);
                    full = page.entries.len() >= limit;
                }
                page.next = at;
            });
            if full {
                return Ok(page);
            }
            // A segment's zeros after its records (preallocation, trimmed when it is full) are not read again.
            page.next = page.next.max(position(generation, at_offset + used as u64));
            if at_offset + length >= end || bytes[used..].iter().all(|&byte| byte == 0) {
                // The end of the segment, or of its records (zeros follow them).
                break;
            }
            if used == 0 {
                // One frame longer than the chunk: read it whole.
                chunk = chunk.saturating_mul(2);
                if chunk > MAX_READ_CHUNK_BYTES {
                    break;
                }
            }
            at_offset += used as u64;
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::node::store::{Store, StoreOptions};
    use crate::paxos::{Ballot, Message};
    use crate::wal::segment::Retention;
    use crate::wal::{Record, SyncMode};

    /// Group-synced store options for `dir` with segments of `wal_max_bytes` and `retention`.
    fn options(dir: &std::path::Path, wal_max_bytes: u64, retention: Retention) -> StoreOptions {
        StoreOptions {
            dir: dir.to_path_buf(),
            sync_mode: SyncMode::Group,
            wal_max_bytes,
            salvage_wal: false,
            feed_retention: retention,
        }
    }

    fn open(dir: &std::path::Path) -> Store {
        Store::open(&options(dir, 1 << 30, Retention::NONE)).unwrap().0
    }

    fn keys(page: &FeedPage) -> Vec<(String, u64, Kind)> {
        page.entries.iter().map(|entry| (entry.key.clone(), entry.version, entry.kind)).collect()
    }

    #[tokio::test]
    async fn the_feed_reads_the_log_in_order_by_prefix_and_page() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let wal = WalDir::new(dir.path());
        store.write(vec![Record::put("7/a", 1, &b"one"[..], "text/plain").with_expiry(Some(99))]).await.unwrap();
        store.write(vec![Record::put("8/other", 2, &b"x"[..], "t"), Record::delete("7/a", 3)]).await.unwrap();
        // A Paxos prepare logs acceptor state: not a change.
        store.paxos(vec![("7/b".into(), Message::Prepare(Ballot { time: 4, proposer: 1 }), Vec::new())]).await.unwrap();
        store.write(vec![Record::put("7/b", 5, &b"five"[..], "t")]).await.unwrap();

        let page = read(&wal, store.wal_stats().head(), 0, "7/", 100).unwrap();
        assert_eq!(
            keys(&page),
            vec![("7/a".into(), 1, Kind::Put), ("7/a".into(), 3, Kind::Delete), ("7/b".into(), 5, Kind::Put)]
        );
        let first = &page.entries[0];
        assert_eq!(first.meta, FeedMeta { size: 3, content_type: "text/plain".into(), expires_at: Some(99) });
        assert!(page.entries.windows(2).all(|pair| pair[0].seq < pair[1].seq), "positions grow");
        assert_eq!(page.next, position(store.wal_stats().head().0, store.wal_stats().head().1));
        assert_eq!(read(&wal, store.wal_stats().head(), 0, "", 100).unwrap().entries.len(), 4);

        // Paging: a limit stops after the entry that fills it; the next page goes on from there.
        let one = read(&wal, store.wal_stats().head(), 0, "7/", 1).unwrap();
        assert_eq!(keys(&one), vec![("7/a".into(), 1, Kind::Put)]);
        assert_eq!(one.next, one.entries[0].seq);
        let rest = read(&wal, store.wal_stats().head(), one.next, "7/", 100).unwrap();
        assert_eq!(keys(&rest), keys(&page)[1..].to_vec());
        let none = read(&wal, store.wal_stats().head(), page.next, "7/", 100).unwrap();
        assert!(none.entries.is_empty());
        assert_eq!(none.next, page.next);

        // Positions survive a restart: the same changes at the same positions, then new ones after.
        store.close().await;
        drop(store);
        let store = open(dir.path());
        let again = read(&wal, store.wal_stats().head(), 0, "7/", 100).unwrap();
        assert_eq!(again.entries, page.entries);
        store.write(vec![Record::put("7/c", 6, &b"six"[..], "t")]).await.unwrap();
        let after = read(&wal, store.wal_stats().head(), page.next, "7/", 100).unwrap();
        assert_eq!(keys(&after), vec![("7/c".into(), 6, Kind::Put)]);
        assert!(after.entries[0].seq > page.next);
        store.close().await;
    }

    /// Across segments the positions keep growing; once compaction drops old segments, `oldest`
    /// says where the feed now starts.
    #[tokio::test]
    async fn the_feed_spans_segments_and_names_where_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let options = options(dir.path(), 8 * 1024, Retention::NONE);
        let store = Store::open(&options).unwrap().0;
        let wal = WalDir::new(dir.path());
        let mut read_so_far = Vec::new();
        let mut after = 0;
        for round in 0..40u64 {
            let records =
                (0..5).map(|n| Record::put(format!("1/k{n}"), round * 10 + n + 1, vec![b'v'; 200], "t")).collect();
            store.write(records).await.unwrap();
            let page = read(&wal, store.wal_stats().head(), after, "1/", 1000).unwrap();
            assert!(page.oldest <= page.next);
            after = page.next;
            read_so_far.extend(page.entries);
        }
        assert_eq!(read_so_far.len(), 200, "read as it was written, nothing is missed");
        assert!(read_so_far.windows(2).all(|pair| pair[0].seq < pair[1].seq));
        let generations: std::collections::BTreeSet<u64> = read_so_far.iter().map(|entry| split(entry.seq).0).collect();
        assert!(generations.len() > 1, "the writes spanned several segments");
        // Compaction dropped the first segments: the feed starts later, and a reader that was
        // still before that is told so.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while read(&wal, store.wal_stats().head(), 0, "1/", 1).unwrap().oldest == position(0, FILE_HEADER_BYTES as u64)
        {
            assert!(std::time::Instant::now() < deadline, "no segment was ever compacted away");
            store.write(vec![Record::put("1/more", 1_000, vec![b'v'; 500], "t")]).await.unwrap();
        }
        let page = read(&wal, store.wal_stats().head(), 0, "1/", 1000).unwrap();
        assert!(page.oldest > read_so_far[0].seq);
        assert!(page.entries.iter().all(|entry| entry.seq > page.oldest));
        store.close().await;
    }

    /// With a retention, compaction and recovery keep the segments a snapshot covers: the feed
    /// still starts at the first change, and the restarted store holds the same data.
    #[tokio::test]
    async fn segments_within_the_retention_outlive_their_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let options =
            options(dir.path(), 8 * 1024, Retention { time: std::time::Duration::from_secs(3600), changes: 0 });
        let store = Store::open(&options).unwrap().0;
        let wal = WalDir::new(dir.path());
        for round in 0..40u64 {
            let records =
                (0..5).map(|n| Record::put(format!("1/k{n}"), round * 10 + n + 1, vec![b'v'; 200], "t")).collect();
            store.write(records).await.unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while store.wal_stats().snapshots() == 0 || store.wal_stats().compacting() {
            assert!(std::time::Instant::now() < deadline, "no snapshot was written");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let page = read(&wal, store.wal_stats().head(), 0, "1/", 1000).unwrap();
        assert_eq!(page.oldest, position(0, FILE_HEADER_BYTES as u64), "the first segment is still there");
        assert_eq!(page.entries.len(), 200);
        store.close().await;
        drop(store);

        let (store, report) = Store::open(&options).unwrap();
        assert!(report.snapshot_records > 0, "recovery loaded the snapshot, not the covered segments");
        assert_eq!(read(&wal, store.wal_stats().head(), 0, "1/", 1000).unwrap().entries, page.entries);
        for n in 0..5u64 {
            let found = matches!(store.get(&format!("1/k{n}"), 0), crate::wire::read::Lookup::Found(found) if found.version == 390 + n + 1);
            assert!(found, "1/k{n} holds its last write");
        }
        store.close().await;
    }

    /// With a change-count retention, compaction removes old segments but keeps at least that
    /// many changes in the feed.
    #[tokio::test]
    async fn the_feed_keeps_at_least_the_retained_number_of_changes() {
        let dir = tempfile::tempdir().unwrap();
        let options = options(dir.path(), 8 * 1024, Retention { time: std::time::Duration::ZERO, changes: 150 });
        let store = Store::open(&options).unwrap().0;
        let wal = WalDir::new(dir.path());
        let start = position(0, FILE_HEADER_BYTES as u64);
        let mut version = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while read(&wal, store.wal_stats().head(), 0, "", 1).unwrap().oldest == start {
            assert!(std::time::Instant::now() < deadline, "no segment was ever removed");
            version += 1;
            store.write(vec![Record::put(format!("1/k{}", version % 7), version, vec![b'v'; 200], "t")]).await.unwrap();
        }
        let mut after = 0;
        let mut kept = 0;
        loop {
            let page = read(&wal, store.wal_stats().head(), after, "", 10_000).unwrap();
            if page.entries.is_empty() {
                break;
            }
            kept += page.entries.len();
            after = page.next;
        }
        assert!(kept >= 150, "only {kept} changes kept");
        assert!((kept as u64) < version, "old segments were removed");
        store.close().await;
    }

    /// The sweeper's expiries reach the feed as `expire` changes of the value's version, and
    /// replaying them after a restart changes nothing.
    #[tokio::test]
    async fn expiries_are_changes_in_the_feed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let wal = WalDir::new(dir.path());
        store
            .write(vec![
                Record::put("3/soon", 7, &b"s"[..], "t").with_expiry(Some(1_000)),
                Record::put("3/later", 8, &b"l"[..], "t").with_expiry(Some(5_000)),
            ])
            .await
            .unwrap();
        let expired = store.sweep(2_000, 3_600_000, crate::daemon::node::gc::Horizon::Unneeded);
        assert_eq!(expired, vec![("3/soon".to_string(), 7)]);
        store.log_expired(expired).await.unwrap();
        assert!(store.sweep(2_500, 3_600_000, crate::daemon::node::gc::Horizon::Unneeded).is_empty(), "once");
        let page = read(&wal, store.wal_stats().head(), 0, "3/", 100).unwrap();
        assert_eq!(
            keys(&page),
            vec![("3/soon".into(), 7, Kind::Put), ("3/later".into(), 8, Kind::Put), ("3/soon".into(), 7, Kind::Expire)]
        );
        store.close().await;
        drop(store);
        let store = open(dir.path());
        assert!(matches!(store.get("3/later", 2_000), crate::wire::read::Lookup::Found(found) if found.version == 8));
        assert_eq!(store.get("3/soon", 2_000), crate::wire::read::Lookup::Expired(7));
        assert_eq!(read(&wal, store.wal_stats().head(), 0, "3/", 100).unwrap().entries, page.entries);
        store.close().await;
    }

    /// Frames longer than a read chunk are read whole, the ones around them too; a new watch
    /// asking after `u64::MAX` starts at the head.
    #[tokio::test]
    async fn large_frames_and_a_start_at_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let wal = WalDir::new(dir.path());
        let big = vec![b'b'; (READ_CHUNK_BYTES + READ_CHUNK_BYTES / 2) as usize];
        for n in 0..3u64 {
            store.write(vec![Record::put(format!("5/small{n}"), n * 2 + 1, &b"s"[..], "t")]).await.unwrap();
            store.write(vec![Record::put(format!("5/big{n}"), n * 2 + 2, big.clone(), "t")]).await.unwrap();
        }
        let page = read(&wal, store.wal_stats().head(), 0, "5/", 100).unwrap();
        let versions: Vec<u64> = page.entries.iter().map(|entry| entry.version).collect();
        assert_eq!(versions, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(page.entries[1].meta.size, big.len() as u64);

        let head = store.wal_stats().head();
        let fresh = read(&wal, head, u64::MAX, "", 100).unwrap();
        assert!(fresh.entries.is_empty());
        assert_eq!(fresh.next, position(head.0, head.1));
        store.write(vec![Record::put("5/after", 7, &b"a"[..], "t")]).await.unwrap();
        let next = read(&wal, store.wal_stats().head(), fresh.next, "", 100).unwrap();
        assert_eq!(keys(&next), vec![("5/after".into(), 7, Kind::Put)]);
        store.close().await;
    }

    #[test]
    fn positions_split_into_generation_and_offset() {
        assert_eq!(split(position(3, 1234)), (3, 1234));
        assert!(position(1, 0) > position(0, (1 << HEAD_OFFSET_BITS) - 1));
    }
}
