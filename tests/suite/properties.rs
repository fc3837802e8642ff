//! Property tests (proptest) of the pure parts: the WAL record codec, WAL
//! segments, snapshots, `/batch` bodies, ring placement, the hybrid logical
//! clock, the duration syntax and key validation.

use std::time::Duration;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use ydht::daemon::gateway::input;
use ydht::daemon::node::routes;
use ydht::hlc::{self, Hlc};
use ydht::ring::{NodeInfo, Ring};
use ydht::wal::record::{self, Decoded, Entry, Record};
use ydht::wal::segment::{self, ScanEnd, WalDir};
use ydht::wal::snapshot;
use ydht::wire::read::{Found, Lookup};
use ydht::wire::{batch, read};

fn text(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max).prop_map(|chars| chars.into_iter().collect())
}

/// Any record the codec accepts: deletes carry no value or content type.
fn a_record() -> impl Strategy<Value = Record> {
    (text(64), any::<u64>(), proptest::option::of(1..u64::MAX), any::<bool>(), text(32), vec(any::<u8>(), 0..512))
        .prop_map(|(key, version, expires_at, tombstone, content_type, value)| {
            let record = if tombstone {
                Record::delete(key, version)
            } else {
                Record::put(key, version, Bytes::from(value), content_type)
            };
            record.with_expiry(expires_at)
        })
}

fn frame(record: &Record) -> Vec<u8> {
    let mut bytes = Vec::new();
    record::encode(record, &mut bytes).unwrap();
    bytes
}

fn segment_bytes(records: &[Record]) -> Vec<u8> {
    let entries: Vec<Entry> = records.iter().cloned().map(Entry::from).collect();
    entry_bytes(&entries)
}

fn entry_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut bytes = record::file_header(segment::WAL_MAGIC).to_vec();
    for found in entries {
        record::encode_entry(found, &mut bytes).unwrap();
    }
    bytes
}

proptest! {
    #[test]
    fn a_frame_decodes_to_the_record_it_encodes(record in a_record()) {
        let bytes = frame(&record);
        prop_assert_eq!(bytes.len(), record.framed_len());
        prop_assert_eq!(record::decode(&bytes), Decoded::Record(record.clone(), bytes.len()));
    }

    #[test]
    fn any_changed_byte_of_a_frame_is_detected(record in a_record(), at in any::<prop::sample::Index>(), mask in 1..=255u8) {
        let mut bytes = frame(&record);
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        prop_assert!(matches!(record::decode(&bytes), Decoded::Corrupt(_)), "byte {} ^ {:#x} went unnoticed", at, mask);
    }

    #[test]
    fn a_cut_frame_is_incomplete(record in a_record(), cut in any::<prop::sample::Index>()) {
        let bytes = frame(&record);
        let cut = cut.index(bytes.len());
        prop_assert_eq!(record::decode(&bytes[..cut]), Decoded::Incomplete);
    }

    #[test]
    fn the_decoders_accept_only_canonical_bytes(bytes in vec(any::<u8>(), 0..2048)) {
        // No panic on any input, and whatever is accepted re-encodes to exactly the bytes read.
        if let Decoded::Record(found, used) = record::decode(&bytes) {
            prop_assert_eq!(frame(&found), bytes[..used].to_vec());
        }
        let mut replayed = Vec::new();
        let (end, _) = segment::decode_segment(&bytes, |found| replayed.push(found));
        prop_assert!(end <= bytes.len());
        if end > 0 {
            prop_assert_eq!(entry_bytes(&replayed), bytes[..end].to_vec());
        }
        let mut loaded = 0;
        if let Ok(count) = snapshot::decode(&bytes, |_| loaded += 1) {
            prop_assert_eq!(count, loaded);
        }
        if let Ok(records) = batch::decode(&bytes) {
            prop_assert_eq!(batch::encode(&records).unwrap(), bytes.clone());
        }
        if let Ok(keys) = read::decode_request(&bytes) {
            prop_assert_eq!(read::encode_request(keys.iter().copied()).unwrap(), bytes.clone());
        }
        let claimed = bytes.get(8..12).map_or(0, |count| u32::from_le_bytes(count.try_into().unwrap()) as usize);
        if let Ok(entries) = read::decode_answer(&bytes.clone().into(), claimed) {
            let lookups: Vec<_> = entries.into_iter().map(read::Entry::into_replica).collect();
            prop_assert_eq!(read::encode_answer(&lookups), bytes.clone());
        }
    }

    #[test]
    fn a_segment_replays_every_record_and_a_cut_one_keeps_a_prefix(
        records in vec(a_record(), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = segment_bytes(&records);
        let mut seen = Vec::new();
        let (end, how) = segment::decode_segment(&bytes, |found| seen.extend(found.into_record()));
        prop_assert_eq!((end, how), (bytes.len(), ScanEnd::Clean));
        prop_assert_eq!(&seen, &records);

        let cut = cut.index(bytes.len() + 1);
        let mut prefix = Vec::new();
        let (end, how) = segment::decode_segment(&bytes[..cut], |found| prefix.extend(found.into_record()));
        prop_assert!(end <= cut);
        prop_assert_eq!(&prefix[..], &records[..prefix.len()]);
        if end < cut {
            prop_assert!(matches!(how, ScanEnd::Torn { .. }), "{:?}", how);
        }
    }

    #[test]
    fn batches_round_trip_and_any_changed_byte_is_refused(
        records in vec(a_record(), 0..6),
        at in any::<prop::sample::Index>(),
        mask in 1..=255u8,
    ) {
        let body = batch::encode(&records).unwrap();
        prop_assert_eq!(batch::decode(&body).unwrap(), records.clone());
        let mut damaged = body.clone();
        let at = at.index(damaged.len());
        damaged[at] ^= mask;
        prop_assert!(batch::decode(&damaged).is_err(), "byte {} ^ {:#x} was accepted", at, mask);
        prop_assert!(batch::decode(&body[..body.len() - 1]).is_err());
    }

    #[test]
    fn reads_round_trip_and_a_cut_body_is_refused(
        keys in vec(text(64), 1..6),
        records in vec(proptest::option::of(a_record()), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let request = read::encode_request(keys.iter().map(String::as_str)).unwrap();
        prop_assert_eq!(read::decode_request(&request).unwrap(), keys.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert!(read::decode_request(&request[..cut.index(request.len())]).is_err());

        // A record as a node reads it back (`None`: left out of a full answer).
        let lookups: Vec<Option<Lookup>> = records
            .iter()
            .map(|record| {
                record.as_ref().map(|record| match record.tombstone {
                    true => Lookup::Tombstone(record.version),
                    false => Lookup::Found(Found {
                        version: record.version,
                        expires_at: record.expires_at,
                        content_type: record.content_type.as_str().into(),
                        value: record.value.clone(),
                    }),
                })
            })
            .collect();
        let replicas: Vec<Option<read::Replica>> = lookups.iter().cloned().map(|lookup| lookup.map(read::Replica::from)).collect();
        let answer = Bytes::from(read::encode_answer(&replicas));
        let entries = read::decode_answer(&answer, lookups.len()).unwrap();
        let expected: Vec<read::Entry> =
            replicas.iter().map(|replica| replica.clone().map_or(read::Entry::LeftOut, read::Entry::Read)).collect();
        prop_assert_eq!(entries, expected);
        prop_assert!(read::decode_answer(&answer.slice(..cut.index(answer.len())), lookups.len()).is_err());
    }

    #[test]
    fn owners_are_distinct_stable_and_consistent_with_arcs(
        node_count in 1..8usize,
        vnodes in 1..64usize,
        replicas in 1..5usize,
        keys in vec(text(24), 1..40),
    ) {
        let ring = Ring::new(nodes(node_count), vnodes);
        let rebuilt = Ring::new(nodes(node_count), vnodes);
        for key in &keys {
            let owners = ring.owners(key.as_bytes(), replicas);
            prop_assert_eq!(owners.len(), replicas.min(node_count));
            let mut ids: Vec<_> = owners.iter().map(|node| node.id.clone()).collect();
            ids.sort();
            ids.dedup();
            prop_assert_eq!(ids.len(), owners.len());
            prop_assert_eq!(&owners, &rebuilt.owners(key.as_bytes(), replicas));
            prop_assert_eq!(ring.preference_list(key.as_bytes()), ring.arc_preference(ring.arc_of(key.as_bytes())));
        }
    }

    #[test]
    fn adding_a_node_only_moves_keys_to_it(
        node_count in 1..7usize,
        vnodes in 1..64usize,
        replicas in 1..4usize,
        keys in vec(text(24), 1..60),
    ) {
        let before = Ring::new(nodes(node_count), vnodes);
        let after = Ring::new(nodes(node_count + 1), vnodes);
        let newcomer = format!("node-{}", node_count + 1);
        for key in &keys {
            let old: Vec<String> = before.owners(key.as_bytes(), replicas).iter().map(|n| n.id.clone()).collect();
            for owner in after.owners(key.as_bytes(), replicas) {
                prop_assert!(
                    owner.id == newcomer || old.contains(&owner.id),
                    "{:?}: {} became an owner without being the new node (old owners {:?})", key, owner.id, old
                );
            }
        }
    }

    #[test]
    fn clock_versions_increase_past_everything_observed(steps in vec(proptest::option::of(any::<u64>()), 1..200)) {
        let clock = Hlc::new();
        let mut highest = 0u64;
        for step in steps {
            match step {
                // Keep observed versions below u64::MAX - 2^16 so `now` can always exceed them.
                Some(seen) => {
                    let seen = seen >> 1;
                    clock.observe(seen);
                    highest = highest.max(seen);
                }
                None => {
                    let version = clock.now();
                    prop_assert!(version > highest, "{} after {}", version, highest);
                    highest = version;
                }
            }
        }
    }

    #[test]
    fn clock_millis_round_trip(millis in 0..(1u64 << 48), logical in 0..(1u64 << 16)) {
        prop_assert_eq!(hlc::millis_of(hlc::from_millis(millis) + logical), millis);
    }

    #[test]
    fn durations_format_and_parse_back(millis in 1..(100u64 * 365 * 24 * 3600 * 1000)) {
        let duration = Duration::from_millis(millis);
        let text = ydht::duration::format(duration);
        prop_assert_eq!(ydht::duration::parse(&text), Ok(duration));
        prop_assert_eq!(input::parse_ttl(Some(&text)).unwrap(), Some(duration));
    }

    #[test]
    fn duration_parsing_never_panics_and_accepts_only_positive_values(input in text(24)) {
        if let Ok(duration) = ydht::duration::parse(&input) {
            prop_assert!(!duration.is_zero());
        }
    }

    #[test]
    fn keys_are_valid_exactly_when_short_and_free_of_control_characters(key in text(1100), user in 1..i64::MAX) {
        let expected = !key.is_empty() && key.len() <= input::MAX_KEY_BYTES && !key.chars().any(char::is_control);
        prop_assert_eq!(input::validate_key(&key).is_ok(), expected);
        let node_expected = !key.is_empty() && key.len() <= routes::MAX_KEY_BYTES && !key.chars().any(char::is_control);
        prop_assert_eq!(routes::validate_key(&key).is_ok(), node_expected);
        if expected {
            // Every key the gateway accepts is still a valid node key once prefixed with its tenant.
            let stored = format!("{user}/{key}");
            prop_assert!(routes::validate_key(&stored).is_ok());
        }
    }
}

fn nodes(count: usize) -> Vec<NodeInfo> {
    (1..=count).map(|i| NodeInfo { id: format!("node-{i}"), url: format!("http://10.0.0.{i}:8082") }).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn snapshots_written_to_disk_load_back(records in vec(a_record(), 0..10)) {
        let dir = tempfile::tempdir().unwrap();
        let wal = WalDir::new(dir.path());
        snapshot::write(&wal, 3, &records).unwrap();
        let bytes = std::fs::read(wal.snapshot_path(3)).unwrap();
        let mut loaded = Vec::new();
        prop_assert_eq!(snapshot::decode(&bytes, |found| loaded.extend(found.into_record())), Ok(records.len()));
        prop_assert_eq!(&loaded, &records);
        // Any shorter file is refused whole.
        for cut in [0, bytes.len() / 2, bytes.len() - 1] {
            let refused = snapshot::decode(&bytes[..cut], drop).is_err();
            prop_assert!(refused, "a snapshot cut at {} was accepted", cut);
        }
    }
}
