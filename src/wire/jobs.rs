//! The `POST /jobs` body: many replication jobs in one request. The gateway
//! coalesces concurrent jobs into one body ([`crate::coalesce`]); the replicator
//! makes all of them durable with one queue-log append and one fsync.
//!
//! # Layout (format version 2), integers little-endian
//!
//! ```text
//! 8 bytes   magic "YDHTJOB" + format version byte (2)
//! 4 bytes   job count N (u32), 1..=MAX_BATCH_JOBS
//! N times:
//!   1 byte    number of targets K (u8), 0..=MAX_JOB_TARGETS
//!   K times:  2 bytes length L (u16), then L bytes of UTF-8: a target node's base URL
//!   frame     the write to copy, exactly a WAL frame (see crate::wal::record):
//!             a put (value, content type, expiry) or a delete, with key and version
//! ```
//!
//! Version 1 held each job's targets as one comma-separated string; it is
//! refused (400) naming the version, as any other version is.
//!
//! Nothing may follow the last job. A body that is malformed anywhere is
//! refused whole (400) and no job of it is queued.

use super::BodyError;
use crate::wal::frame;
use crate::wal::record::{self, Decoded, EncodeError, FILE_HEADER_BYTES, Record, RecordRef};

/// Magic at the start of a jobs body.
pub const JOBS_MAGIC: &[u8; 7] = b"YDHTJOB";
/// Content type of a jobs body.
pub const JOBS_CONTENT_TYPE: &str = "application/x-ydht-jobs";
/// Most jobs one body may carry.
pub const MAX_BATCH_JOBS: usize = 4096;
/// The body's format version (see the layout above).
pub const JOBS_FORMAT_VERSION: u8 = 2;
/// Most targets one job may list in a body (the replicator accepts fewer).
pub const MAX_JOB_TARGETS: usize = u8::MAX as usize;

/// Why jobs cannot be encoded as a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobsEncodeError {
    /// A job lists more targets than a body can carry.
    #[error("a job lists {0} targets; a jobs body carries at most {MAX_JOB_TARGETS}")]
    TooManyTargets(usize),
    /// A target URL is longer than its length field can say.
    #[error("a target URL is {0} bytes; the maximum is 65535")]
    TargetTooLong(usize),
    /// A job's write cannot be framed.
    #[error(transparent)]
    Write(#[from] EncodeError),
}

/// One job of a body: where to copy, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchJob {
    /// The target nodes' base URLs.
    pub targets: Vec<String>,
    /// The write (a tombstone for a delete).
    pub record: Record,
}

/// Encodes jobs, each given as (its targets' base URLs, write), as a jobs body.
pub fn encode<'a, T: AsRef<str> + 'a>(
    jobs: impl ExactSizeIterator<Item = (&'a [T], RecordRef<'a>)>,
) -> Result<Vec<u8>, JobsEncodeError> {
    let count = u32::try_from(jobs.len()).expect("batches hold far fewer than 2^32 jobs");
    let mut body = Vec::new();
    body.extend_from_slice(&frame::file_header(JOBS_MAGIC, JOBS_FORMAT_VERSION));
    body.extend_from_slice(&count.to_le_bytes());
    for (targets, write) in jobs {
        let listed = u8::try_from(targets.len()).map_err(|_| JobsEncodeError::TooManyTargets(targets.len()))?;
        body.push(listed);
        for target in targets {
            let target = target.as_ref();
            let length = u16::try_from(target.len()).map_err(|_| JobsEncodeError::TargetTooLong(target.len()))?;
            body.extend_from_slice(&length.to_le_bytes());
            body.extend_from_slice(target.as_bytes());
        }
        body.reserve(write.framed_len());
        record::encode_borrowed(write, &mut body)?;
    }
    Ok(body)
}

/// Decodes a jobs body; the error names what is wrong and where.
pub fn decode(body: &[u8]) -> Result<Vec<BatchJob>, BodyError> {
    frame::check_file_header(body, JOBS_MAGIC, JOBS_FORMAT_VERSION)
        .map_err(|source| BodyError::Header { body: "jobs body", source })?;
    let count_end = FILE_HEADER_BYTES + 4;
    let count = body
        .get(FILE_HEADER_BYTES..count_end)
        .map(|count| u32::from_le_bytes(count.try_into().expect("4 bytes")) as usize)
        .ok_or(BodyError::Short { body: "body", field: "job count" })?;
    if count == 0 || count > MAX_BATCH_JOBS {
        return Err(BodyError::Count {
            body: "body",
            verb: "holds",
            base: "hold",
            items: "jobs",
            count,
            max: MAX_BATCH_JOBS,
        });
    }
    let mut jobs = Vec::with_capacity(count);
    let mut offset = count_end;
    while jobs.len() < count {
        let at = offset;
        let index = jobs.len();
        let listed =
            *body.get(offset).ok_or(BodyError::EndsInside { item: "job", index, field: "its target count", at })?;
        offset += 1;
        let mut targets = Vec::with_capacity(usize::from(listed));
        for _ in 0..listed {
            let length = body
                .get(offset..offset + 2)
                .map(|length| usize::from(u16::from_le_bytes(length.try_into().expect("2 bytes"))))
                .ok_or(BodyError::EndsInside { item: "job", index, field: "a target's length", at: offset })?;
            let text = body.get(offset + 2..offset + 2 + length).ok_or(BodyError::EndsInside {
                item: "job",
                index,
                field: "a target",
                at: offset,
            })?;
            let target = std::str::from_utf8(text).map_err(|_| BodyError::NotUtf8 {
                item: "job",
                index,
                field: "a target URL",
            })?;
            targets.push(target.to_string());
            offset += 2 + length;
        }
        let record = match record::decode(&body[offset..]) {
            Decoded::Record(record, used) => {
                offset += used;
                record
            }
            Decoded::Incomplete => {
                return Err(BodyError::EndsInside { item: "job", index: jobs.len(), field: "its write", at: offset });
            }
            Decoded::Corrupt(reason) => {
                return Err(BodyError::BadWrite { index: jobs.len(), at: offset, reason });
            }
        };
        jobs.push(BatchJob { targets, record });
    }
    if offset != body.len() {
        return Err(BodyError::Trailing { extra: body.len() - offset, last: format!("the last of the {count} jobs") });
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<BatchJob> {
        vec![
            BatchJob {
                targets: vec!["http://a:1".into(), "http://b:2".into()],
                record: Record::put("7/k", 3, &b"value"[..], "text/plain").with_expiry(Some(99)),
            },
            BatchJob { targets: vec!["http://c:3".into()], record: Record::delete("7/gone", 4) },
        ]
    }

    fn encode_all(jobs: &[BatchJob]) -> Vec<u8> {
        encode(jobs.iter().map(|job| (job.targets.as_slice(), job.record.borrowed()))).unwrap()
    }

    #[test]
    fn the_fuzzing_seed_is_a_valid_body() {
        let seed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/jobs_decode/two-jobs.bin")).unwrap();
        let jobs = decode(&seed).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(encode_all(&jobs), seed);
    }

    #[test]
    fn bodies_round_trip() {
        let jobs = sample();
        assert_eq!(decode(&encode_all(&jobs)).unwrap(), jobs);
    }

    #[test]
    fn every_truncation_and_any_trailing_byte_is_refused() {
        let body = encode_all(&sample());
        for cut in 0..body.len() {
            assert!(decode(&body[..cut]).is_err(), "cut at {cut} accepted");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode(&longer).unwrap_err().to_string().contains("follow the last"));
        let mut flipped = body.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(decode(&flipped).unwrap_err().to_string().contains("bad write"));
        let mut empty = body[..FILE_HEADER_BYTES].to_vec();
        empty.extend_from_slice(&0u32.to_le_bytes());
        assert!(decode(&empty).unwrap_err().to_string().contains("1 to"));
        assert!(decode(b"{\"json\": true}").unwrap_err().to_string().contains("not a ydht jobs body"));
    }

    #[test]
    fn targets_a_body_cannot_carry_are_refused_by_name() {
        let write = Record::delete("k", 1);
        let many: Vec<String> = (0..=MAX_JOB_TARGETS).map(|n| format!("http://n{n}:1")).collect();
        let refused = encode([(many.as_slice(), write.borrowed())].into_iter()).unwrap_err();
        assert_eq!(refused, JobsEncodeError::TooManyTargets(MAX_JOB_TARGETS + 1));
        let long = ["x".repeat(65_536)];
        let refused = encode([(&long[..], write.borrowed())].into_iter()).unwrap_err();
        assert_eq!(refused, JobsEncodeError::TargetTooLong(65_536));
        assert!(refused.to_string().contains("65535"), "{refused}");
        let most: Vec<String> = many[..MAX_JOB_TARGETS].to_vec();
        let body = encode([(most.as_slice(), write.borrowed())].into_iter()).unwrap();
        assert_eq!(decode(&body).unwrap()[0].targets, most);
    }

    #[test]
    fn a_body_of_format_1_is_refused_naming_the_version() {
        let mut old = encode_all(&sample());
        old[FILE_HEADER_BYTES - 1] = 1;
        let error = decode(&old).unwrap_err().to_string();
        assert!(error.contains("format version 1 is not supported"), "{error}");
    }

    fn any_job() -> impl proptest::strategy::Strategy<Value = BatchJob> {
        use proptest::prelude::*;
        (
            proptest::collection::vec("http://[a-z0-9.,]{1,10}:[0-9]{1,5}", 0..4),
            "[a-z0-9/]{1,16}",
            1u64..u64::MAX,
            proptest::option::of(1u64..u64::MAX),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..48)),
        )
            .prop_map(|(targets, key, version, expires_at, value)| BatchJob {
                targets,
                record: match value {
                    Some(value) => Record::put(key, version, value, "application/octet-stream").with_expiry(expires_at),
                    None => Record::delete(key, version),
                },
            })
    }

    proptest::proptest! {
        #[test]
        fn any_body_round_trips_and_any_cut_or_flipped_bit_is_refused(
            jobs in proptest::collection::vec(any_job(), 1..6),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let body = encode_all(&jobs);
            proptest::prop_assert_eq!(decode(&body).unwrap(), jobs.clone());
            let at = at.index(body.len());
            proptest::prop_assert!(decode(&body[..at]).is_err(), "cut at {} accepted", at);
            let mut flipped = body.clone();
            flipped[at] ^= 1 << bit;
            // A flip may land in a target URL's text and still decode; then it must decode to other jobs.
            if let Ok(decoded) = decode(&flipped) {
                proptest::prop_assert_ne!(decoded, jobs);
            }
        }
    }
}
