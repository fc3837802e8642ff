//! The `POST /batch` body: several versioned puts and deletes in one request,
//! for the replicator and anti-entropy. The node applies a batch with one WAL
//! append (one sync) and answers [`crate::proto::NodeBatchResponse`].
//!
//! # Layout (format version 1), integers little-endian
//!
//! ```text
//! 8 bytes   magic "YDHTBAT" + format version byte (1)
//! 4 bytes   record count N (u32), at most MAX_BATCH_RECORDS
//! N frames  each exactly a WAL frame (see crate::wal::record): length, length CRC,
//!           payload CRC, payload (kind, version, expires_at, key, content type, value)
//! ```
//!
//! Nothing may follow the last frame. A batch that is malformed anywhere, or
//! holds an invalid key or an oversized value, is refused whole (400 / 413)
//! and nothing of it is written.

use super::BodyError;
use crate::wal::frame;
use crate::wal::record::{self, EncodeError, FILE_HEADER_BYTES, Record, RecordRef};
use crate::wal::segment::ScanEnd;

/// Magic at the start of a batch body.
pub const BATCH_MAGIC: &[u8; 7] = b"YDHTBAT";
/// Content type of a batch body.
pub const BATCH_CONTENT_TYPE: &str = "application/x-ydht-batch";
/// Most records one batch may carry.
pub const MAX_BATCH_RECORDS: usize = 10_000;

/// Encodes `records` as a batch body.
pub fn encode(records: &[Record]) -> Result<Vec<u8>, EncodeError> {
    encode_borrowed(records.iter().map(Record::borrowed))
}

/// Encodes borrowed records as a batch body (the same bytes as [`encode`]).
pub fn encode_borrowed<'a>(
    records: impl ExactSizeIterator<Item = RecordRef<'a>> + Clone,
) -> Result<Vec<u8>, EncodeError> {
    let mut body = Vec::with_capacity(12 + records.clone().map(|found| found.framed_len()).sum::<usize>());
    body.extend_from_slice(&record::file_header(BATCH_MAGIC));
    body.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for found in records {
        record::encode_borrowed(found, &mut body)?;
    }
    Ok(body)
}

/// Splits `records` into batches whose bodies take at most `max_bytes` (header
/// included) and [`MAX_BATCH_RECORDS`] records each; a single larger record goes alone.
pub fn chunks(records: Vec<Record>, max_bytes: usize) -> Vec<Vec<Record>> {
    let header = FILE_HEADER_BYTES + 4;
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut size = header;
    for record in records {
        let framed = record.framed_len();
        if !current.is_empty() && (size + framed > max_bytes || current.len() == MAX_BATCH_RECORDS) {
            chunks.push(std::mem::take(&mut current));
            size = header;
        }
        size += framed;
        current.push(record);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Decodes a batch body; the error names what is wrong and where.
pub fn decode(body: &[u8]) -> Result<Vec<Record>, BodyError> {
    record::check_file_header(body, BATCH_MAGIC).map_err(|source| BodyError::Header { body: "batch", source })?;
    let count_end = FILE_HEADER_BYTES + 4;
    let count = body
        .get(FILE_HEADER_BYTES..count_end)
        .map(|count| u32::from_le_bytes(count.try_into().expect("4 bytes")) as usize)
        .ok_or(BodyError::Short { body: "batch", field: "record count" })?;
    if count > MAX_BATCH_RECORDS {
        return Err(BodyError::TooMany { body: "batch", items: "records", count, max: MAX_BATCH_RECORDS });
    }
    let mut records = Vec::with_capacity(count);
    // Records only: an acceptor-state frame (the node's log's own) is refused as an unknown kind.
    let (_, end) = frame::scan(body, count_end, record::decode_payload, |found| records.push(found));
    match end {
        ScanEnd::Clean if records.len() == count => Ok(records),
        ScanEnd::Clean => Err(BodyError::Mismatch {
            body: "batch",
            items: "records",
            found: records.len(),
            expected: format!("but its header says {count}"),
        }),
        ScanEnd::Torn { offset, .. } => Err(BodyError::CutRecord { body: "batch", at: offset }),
        ScanEnd::Corrupt { offset, reason } => Err(BodyError::BadRecord { at: offset, reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_refuse_damage() {
        let records =
            vec![Record::put("u/a", 3, &b"x"[..], "text/plain").with_expiry(Some(77)), Record::delete("u/b", 4)];
        let body = encode(&records).unwrap();
        assert_eq!(decode(&body).unwrap(), records);

        assert!(decode(&body[..body.len() - 1]).unwrap_err().to_string().contains("ends inside a record"));
        assert!(decode(b"{\"json\": true}").unwrap_err().to_string().contains("not a ydht batch"));
        let mut wrong_count = body.clone();
        wrong_count[8] = 3;
        assert!(decode(&wrong_count).unwrap_err().to_string().contains("header says 3"));
        let mut flipped = body.clone();
        flipped[12 + 14] ^= 1;
        assert!(decode(&flipped).unwrap_err().to_string().contains("bad record at byte offset 12"));
    }

    #[test]
    fn chunks_stay_within_the_bytes_and_the_record_count() {
        let records: Vec<Record> = (0..10).map(|n| Record::put(format!("k{n}"), 1, vec![0u8; 100], "t")).collect();
        let framed = records[0].framed_len();
        let by_bytes = chunks(records.clone(), 12 + 3 * framed);
        assert_eq!(by_bytes.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3, 1]);
        assert!(by_bytes.iter().all(|chunk| encode(chunk).unwrap().len() <= 12 + 3 * framed));
        let alone = chunks(records[..2].to_vec(), 1);
        assert_eq!(alone.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1], "a record larger than the limit goes alone");

        let many: Vec<Record> = (0..MAX_BATCH_RECORDS + 5).map(|n| Record::delete(format!("k{n}"), 1)).collect();
        let by_count = chunks(many, usize::MAX);
        assert_eq!(by_count.iter().map(Vec::len).collect::<Vec<_>>(), [MAX_BATCH_RECORDS, 5]);
    }
}
