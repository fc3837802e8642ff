//! The record codec: one versioned mutation, framed so that every frame checks itself.
//!
//! Each record is one frame ([`super::frame`]: length, length CRC, payload CRC,
//! payload).
//!
//! # Payload layout
//!
//! ```text
//! size  field
//! 1     kind: 1 = put, 2 = delete (tombstone), 3 = acceptor state (below)
//! 8     version (u64, hybrid logical clock value)
//! 8     expires_at (u64 Unix milliseconds; 0 = never expires)
//! 2     key length K (u16), then K bytes of UTF-8 key
//! 2     content type length C (u16), then C bytes of UTF-8 content type
//! rest  the value (empty for a delete)
//! ```
//!
//! An acceptor-state entry (kind 3, WAL segments and snapshots only) holds a
//! key's Paxos acceptor state ([`crate::paxos`]), opaque to the log:
//!
//! ```text
//! 1     kind: 3
//! 2     key length K (u16), then K bytes of UTF-8 key
//! rest  the state, as the node encodes it
//! ```
//!
//! Files that hold records (WAL segments, snapshots, `/batch` bodies) start with
//! an 8-byte header: a 7-byte magic naming the file kind and the format version
//! byte [`FORMAT_VERSION`], so a future format can be recognised and refused.

use bytes::Bytes;

use super::codec::{DecodeError, Reader};
use super::frame::{self, Split};
pub use super::frame::{FILE_HEADER_BYTES, FRAME_HEADER_BYTES, FrameError, HeaderError, MAX_PAYLOAD_BYTES};

/// The on-disk format version written after every magic.
pub const FORMAT_VERSION: u8 = 1;
/// Payload bytes before the key: kind, version, expiry.
const FIXED_PAYLOAD_BYTES: usize = 1 + 8 + 8;

const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_ACCEPTOR: u8 = 3;
const KIND_EXPIRED: u8 = 4;

/// One versioned mutation of a key: a put (value + metadata) or a delete (tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key, as the node stores it.
    pub key: String,
    /// The coordinator-assigned version; the highest version of a key wins.
    pub version: u64,
    /// Absolute expiry in Unix milliseconds, `None` when it never expires.
    pub expires_at: Option<u64>,
    /// `true` for a delete: the key is gone as of `version`.
    pub tombstone: bool,
    /// The value's content type (empty for a tombstone).
    pub content_type: String,
    /// The value bytes (empty for a tombstone).
    pub value: Bytes,
}

impl Record {
    /// A put of `value` at `version`.
    pub fn put(key: impl Into<String>, version: u64, value: impl Into<Bytes>, content_type: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            version,
            expires_at: None,
            tombstone: false,
            content_type: content_type.into(),
            value: value.into(),
        }
    }

    /// A delete (tombstone) of `key` at `version`.
    pub fn delete(key: impl Into<String>, version: u64) -> Self {
        Self {
            key: key.into(),
            version,
            expires_at: None,
            tombstone: true,
            content_type: String::new(),
            value: Bytes::new(),
        }
    }

    /// The same record with an absolute expiry.
    pub fn with_expiry(mut self, expires_at: Option<u64>) -> Self {
        self.expires_at = expires_at;
        self
    }

    /// Bytes this record takes once framed.
    pub fn framed_len(&self) -> usize {
        self.borrowed().framed_len()
    }

    /// The record's fields, borrowed.
    pub fn borrowed(&self) -> RecordRef<'_> {
        RecordRef {
            key: &self.key,
            version: self.version,
            expires_at: self.expires_at,
            tombstone: self.tombstone,
            content_type: &self.content_type,
            value: &self.value,
        }
    }
}

/// A record's fields borrowed from wherever they live (e.g. the node's map), so
/// they can be encoded without first being copied into a [`Record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The key.
    pub key: &'a str,
    /// The version.
    pub version: u64,
    /// Absolute expiry in Unix milliseconds, `None` when it never expires.
    pub expires_at: Option<u64>,
    /// `true` for a delete.
    pub tombstone: bool,
    /// The value's content type.
    pub content_type: &'a str,
    /// The value bytes.
    pub value: &'a [u8],
}

impl RecordRef<'_> {
    /// Bytes this record takes once framed.
    pub fn framed_len(&self) -> usize {
        FRAME_HEADER_BYTES + self.payload_len()
    }

    fn payload_len(&self) -> usize {
        FIXED_PAYLOAD_BYTES + 2 + self.key.len() + 2 + self.content_type.len() + self.value.len()
    }
}

/// Why a record cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Key longer than 65535 bytes.
    #[error("key is {0} bytes; the maximum is 65535")]
    KeyTooLong(usize),
    /// Content type longer than 65535 bytes.
    #[error("content type is {0} bytes; the maximum is 65535")]
    ContentTypeTooLong(usize),
    /// Payload larger than [`MAX_PAYLOAD_BYTES`].
    #[error("record is {0} bytes; the maximum is {MAX_PAYLOAD_BYTES}")]
    TooLarge(usize),
}

/// Appends `record` as one frame to `out`.
pub fn encode(record: &Record, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_borrowed(record.borrowed(), out)
}

/// Appends the borrowed `record` as one frame to `out` (the same bytes as [`encode`]).
pub fn encode_borrowed(record: RecordRef<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let key_len = u16::try_from(record.key.len()).map_err(|_| EncodeError::KeyTooLong(record.key.len()))?;
    let type_len = u16::try_from(record.content_type.len())
        .map_err(|_| EncodeError::ContentTypeTooLong(record.content_type.len()))?;
    let payload_len = record.payload_len();
    if payload_len > MAX_PAYLOAD_BYTES {
        return Err(EncodeError::TooLarge(payload_len));
    }
    out.reserve(FRAME_HEADER_BYTES + payload_len);
    frame::append(out, |out| {
        out.push(if record.tombstone { KIND_DELETE } else { KIND_PUT });
        out.extend_from_slice(&record.version.to_le_bytes());
        out.extend_from_slice(&record.expires_at.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(record.key.as_bytes());
        out.extend_from_slice(&type_len.to_le_bytes());
        out.extend_from_slice(record.content_type.as_bytes());
        out.extend_from_slice(record.value);
    })
    .map_err(EncodeError::TooLarge)?;
    Ok(())
}

/// One entry of the node's log: a record, or a key's acceptor state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A versioned put or delete.
    Record(Record),
    /// A key's Paxos acceptor state, durable before the node answers a prepare or a proposal.
    Acceptor(AcceptorEntry),
    /// The value at `version` of `key` expired (its TTL ran out) here: a change for the feed
    /// ([`crate::daemon::node::feed`]); replay changes nothing for it (expiry follows from the record).
    Expired {
        /// The key, as the node stores it.
        key: String,
        /// The version of the value that expired.
        version: u64,
    },
}

/// A key's Paxos acceptor state as the log holds it: the node encodes and
/// decodes `state`; a later entry for the same key supersedes an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptorEntry {
    /// The key, as the node stores it.
    pub key: String,
    /// The encoded state.
    pub state: Bytes,
}

impl From<Record> for Entry {
    fn from(record: Record) -> Self {
        Self::Record(record)
    }
}

impl AcceptorEntry {
    fn payload_len(&self) -> usize {
        1 + 2 + self.key.len() + self.state.len()
    }
}

impl Entry {
    /// The record, when this entry is one.
    pub fn into_record(self) -> Option<Record> {
        match self {
            Self::Record(record) => Some(record),
            Self::Acceptor(_) | Self::Expired { .. } => None,
        }
    }

    /// Bytes this entry takes once framed.
    pub fn framed_len(&self) -> usize {
        match self {
            Self::Record(record) => record.framed_len(),
            Self::Acceptor(entry) => FRAME_HEADER_BYTES + entry.payload_len(),
            Self::Expired { key, .. } => FRAME_HEADER_BYTES + 1 + 8 + 2 + key.len(),
        }
    }
}

/// Appends `entry` as one frame to `out`.
pub fn encode_entry(entry: &Entry, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match entry {
        Entry::Record(record) => encode(record, out),
        Entry::Acceptor(entry) => encode_acceptor(&entry.key, &entry.state, out),
        Entry::Expired { key, version } => {
            let key_len = u16::try_from(key.len()).map_err(|_| EncodeError::KeyTooLong(key.len()))?;
            frame::append(out, |out| {
                out.push(KIND_EXPIRED);
                out.extend_from_slice(&version.to_le_bytes());
                out.extend_from_slice(&key_len.to_le_bytes());
                out.extend_from_slice(key.as_bytes());
            })
            .map_err(EncodeError::TooLarge)?;
            Ok(())
        }
    }
}

/// Appends a key's acceptor state as one frame to `out`.
pub fn encode_acceptor(key: &str, state: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let key_len = u16::try_from(key.len()).map_err(|_| EncodeError::KeyTooLong(key.len()))?;
    let payload_len = 1 + 2 + key.len() + state.len();
    if payload_len > MAX_PAYLOAD_BYTES {
        return Err(EncodeError::TooLarge(payload_len));
    }
    frame::append(out, |out| {
        out.push(KIND_ACCEPTOR);
        out.extend_from_slice(&key_len.to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(state);
    })
    .map_err(EncodeError::TooLarge)?;
    Ok(())
}

/// Decodes a log entry's payload: a record, (kind 3) an acceptor state, or (kind 4) an expiry.
pub fn decode_entry_payload(payload: &[u8]) -> Result<Entry, DecodeError> {
    match payload.first() {
        Some(&KIND_ACCEPTOR) => {
            let mut reader = Reader::new(payload, 1);
            let key = reader.text16()?.to_string();
            let state = Bytes::copy_from_slice(reader.rest());
            Ok(Entry::Acceptor(AcceptorEntry { key, state }))
        }
        Some(&KIND_EXPIRED) => {
            let mut reader = Reader::new(payload, 1);
            let version = reader.u64()?;
            let key = reader.text16()?.to_string();
            if !reader.rest().is_empty() {
                return Err(DecodeError::Inconsistent("bytes after an expiry's key"));
            }
            Ok(Entry::Expired { key, version })
        }
        _ => decode_payload(payload).map(Entry::Record),
    }
}

/// Writes the 8-byte file header `magic` + [`FORMAT_VERSION`].
pub fn file_header(magic: &[u8; 7]) -> [u8; FILE_HEADER_BYTES] {
    frame::file_header(magic, FORMAT_VERSION)
}

/// Checks a file header of records; the error says what was found instead.
pub fn check_file_header(bytes: &[u8], magic: &[u8; 7]) -> Result<(), HeaderError> {
    frame::check_file_header(bytes, magic, FORMAT_VERSION)
}

/// The outcome of decoding the frame that starts at the beginning of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A valid record and the number of bytes its frame took.
    Record(Record, usize),
    /// The buffer ends inside the frame (its length field, when present, passed its own CRC).
    Incomplete,
    /// The frame is damaged; the reason names what failed.
    Corrupt(FrameError),
}

/// Decodes the frame at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Decoded {
    match frame::split(bytes) {
        Split::Frame(payload, used) => match decode_payload(payload) {
            Ok(record) => Decoded::Record(record, used),
            Err(error) => Decoded::Corrupt(FrameError::Payload(error)),
        },
        Split::Incomplete => Decoded::Incomplete,
        Split::Corrupt(error) => Decoded::Corrupt(error),
    }
}

/// Decodes a record's payload (the bytes inside its frame).
pub fn decode_payload(payload: &[u8]) -> Result<Record, DecodeError> {
    let mut reader = Reader::new(payload, 0);
    let tombstone = match reader.u8()? {
        KIND_PUT => false,
        KIND_DELETE => true,
        value => return Err(DecodeError::Unknown { what: "record kind", value }),
    };
    let version = reader.u64()?;
    let expires_at = reader.u64()?;
    let key = reader.text16()?.to_string();
    let content_type = reader.text16()?.to_string();
    let value = Bytes::copy_from_slice(reader.rest());
    if tombstone && !value.is_empty() {
        return Err(DecodeError::Inconsistent("a delete record carries a value"));
    }
    Ok(Record { key, version, expires_at: (expires_at != 0).then_some(expires_at), tombstone, content_type, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_kind_round_trips_through_its_frame() {
        let entries = [
            Entry::Record(Record::put("k", 5, &b"v"[..], "t")),
            Entry::Acceptor(AcceptorEntry { key: "k".into(), state: Bytes::from_static(b"state") }),
            Entry::Expired { key: "tenant/k".into(), version: u64::MAX },
        ];
        for entry in entries {
            let mut out = Vec::new();
            encode_entry(&entry, &mut out).unwrap();
            assert_eq!(out.len(), entry.framed_len(), "{entry:?}");
            let mut decoded = Vec::new();
            let (end, how) = frame::scan(&out, 0, decode_entry_payload, |found| decoded.push(found));
            assert_eq!((end, how, decoded), (out.len(), frame::ScanEnd::Clean, vec![entry]));
        }
        // An expiry with bytes after its key is damage, not an expiry.
        let mut payload = vec![KIND_EXPIRED];
        payload.extend_from_slice(&1u64.to_le_bytes());
        payload.extend_from_slice(&1u16.to_le_bytes());
        payload.extend_from_slice(b"kx");
        assert!(decode_entry_payload(&payload).is_err());
    }

    fn samples() -> Vec<Record> {
        vec![
            Record::put("a", 1, &b"hello"[..], "text/plain"),
            Record::put("tenant/with/slashes", u64::MAX, vec![0u8, 255, 10, 13], "application/octet-stream")
                .with_expiry(Some(1_700_000_000_000)),
            Record::delete("gone", 42),
            Record::put("empty", 7, Bytes::new(), ""),
        ]
    }

    #[test]
    fn frames_round_trip() {
        let mut buffer = Vec::new();
        for record in samples() {
            encode(&record, &mut buffer).unwrap();
        }
        let mut offset = 0;
        for expected in samples() {
            match decode(&buffer[offset..]) {
                Decoded::Record(record, used) => {
                    assert_eq!(record, expected);
                    assert_eq!(used, expected.framed_len());
                    offset += used;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(offset, buffer.len());
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_bit_flip_is_caught() {
        let record = Record::put("key", 9, &b"value"[..], "text/plain").with_expiry(Some(5));
        let mut frame = Vec::new();
        encode(&record, &mut frame).unwrap();
        for cut in 0..frame.len() {
            assert_eq!(decode(&frame[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
        for bit in 0..frame.len() * 8 {
            let mut damaged = frame.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(matches!(decode(&damaged), Decoded::Corrupt(_)), "bit {bit} flip went unnoticed");
        }
    }

    #[test]
    fn oversized_fields_are_refused() {
        let long_key = "k".repeat(70_000);
        assert_eq!(encode(&Record::delete(long_key, 1), &mut Vec::new()), Err(EncodeError::KeyTooLong(70_000)));
    }

    #[test]
    fn file_header_checks_magic_and_version() {
        let header = file_header(b"YDHTWAL");
        assert!(check_file_header(&header, b"YDHTWAL").is_ok());
        assert!(check_file_header(&header, b"YDHTSNP").unwrap_err().to_string().contains("magic"));
        let mut future = header;
        future[7] = 9;
        assert!(check_file_header(&future, b"YDHTWAL").unwrap_err().to_string().contains("version 9"));
    }
}
