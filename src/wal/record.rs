//! The record codec: one versioned mutation, framed so that every frame checks itself.
//!
//! # Frame layout (format version 1), all integers little-endian
//!
//! ```text
//! offset  size  field
//! 0       4     payload length N (u32)
//! 4       4     CRC-32 (IEEE, crc32fast) of the 4 length bytes — detects a damaged length
//! 8       4     CRC-32 of the N payload bytes
//! 12      N     payload
//! ```
//!
//! # Payload layout
//!
//! ```text
//! size  field
//! 1     kind: 1 = put, 2 = delete (tombstone)
//! 8     version (u64, hybrid logical clock value)
//! 8     expires_at (u64 Unix milliseconds; 0 = never expires)
//! 2     key length K (u16), then K bytes of UTF-8 key
//! 2     content type length C (u16), then C bytes of UTF-8 content type
//! rest  the value (empty for a delete)
//! ```
//!
//! Files that hold frames (WAL segments, snapshots, `/batch` bodies) start with
//! an 8-byte header: a 7-byte magic naming the file kind and the format version
//! byte [`FORMAT_VERSION`], so a future format can be recognised and refused.

use bytes::Bytes;

/// The on-disk format version written after every magic.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes of a frame header (length, length CRC, payload CRC).
pub const FRAME_HEADER_BYTES: usize = 12;
/// Bytes of a file header (magic + format version).
pub const FILE_HEADER_BYTES: usize = 8;
/// Payload bytes before the key: kind, version, expiry.
const FIXED_PAYLOAD_BYTES: usize = 1 + 8 + 8;
/// Largest payload a frame may claim; anything larger is corruption.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 30;

const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;

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
    let length = (payload_len as u32).to_le_bytes();
    out.reserve(FRAME_HEADER_BYTES + payload_len);
    out.extend_from_slice(&length);
    out.extend_from_slice(&crc32fast::hash(&length).to_le_bytes());
    let crc_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let payload_at = out.len();
    out.push(if record.tombstone { KIND_DELETE } else { KIND_PUT });
    out.extend_from_slice(&record.version.to_le_bytes());
    out.extend_from_slice(&record.expires_at.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(record.key.as_bytes());
    out.extend_from_slice(&type_len.to_le_bytes());
    out.extend_from_slice(record.content_type.as_bytes());
    out.extend_from_slice(record.value);
    let crc = crc32fast::hash(&out[payload_at..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Writes the 8-byte file header `magic` + [`FORMAT_VERSION`].
pub fn file_header(magic: &[u8; 7]) -> [u8; FILE_HEADER_BYTES] {
    let mut header = [0; FILE_HEADER_BYTES];
    header[..7].copy_from_slice(magic);
    header[7] = FORMAT_VERSION;
    header
}

/// Checks a file header; the error says what was found instead.
pub fn check_file_header(bytes: &[u8], magic: &[u8; 7]) -> Result<(), String> {
    if bytes.len() < FILE_HEADER_BYTES {
        return Err(format!("file header is {} bytes, expected {FILE_HEADER_BYTES}", bytes.len()));
    }
    if &bytes[..7] != magic {
        return Err(format!("bad magic {:?}, expected {:?}", String::from_utf8_lossy(&bytes[..7]), magic));
    }
    if bytes[7] != FORMAT_VERSION {
        return Err(format!("format version {} is not supported (this ydht reads version {FORMAT_VERSION})", bytes[7]));
    }
    Ok(())
}

/// The outcome of decoding the frame that starts at the beginning of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A valid record and the number of bytes its frame took.
    Record(Record, usize),
    /// The buffer ends inside the frame (its length field, when present, passed its own CRC).
    Incomplete,
    /// The frame is damaged; the reason names what failed.
    Corrupt(String),
}

/// Decodes the frame at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Decoded {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Decoded::Incomplete;
    }
    let length_bytes: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
    let length_crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if crc32fast::hash(&length_bytes) != length_crc {
        return Decoded::Corrupt("frame length fails its checksum".into());
    }
    let length = u32::from_le_bytes(length_bytes) as usize;
    if length > MAX_PAYLOAD_BYTES {
        return Decoded::Corrupt(format!("frame claims {length} payload bytes, more than the maximum"));
    }
    let end = FRAME_HEADER_BYTES + length;
    if bytes.len() < end {
        return Decoded::Incomplete;
    }
    let payload_crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let payload = &bytes[FRAME_HEADER_BYTES..end];
    if crc32fast::hash(payload) != payload_crc {
        return Decoded::Corrupt("payload fails its checksum".into());
    }
    match decode_payload(payload) {
        Ok(record) => Decoded::Record(record, end),
        Err(reason) => Decoded::Corrupt(reason),
    }
}

fn decode_payload(payload: &[u8]) -> Result<Record, String> {
    let mut reader = Reader { bytes: payload };
    let kind = reader.take(1)?[0];
    let tombstone = match kind {
        KIND_PUT => false,
        KIND_DELETE => true,
        other => return Err(format!("unknown record kind {other}")),
    };
    let version = u64::from_le_bytes(reader.take(8)?.try_into().expect("8 bytes"));
    let expires_at = u64::from_le_bytes(reader.take(8)?.try_into().expect("8 bytes"));
    let key = reader.string()?;
    let content_type = reader.string()?;
    let value = Bytes::copy_from_slice(reader.bytes);
    if tombstone && !value.is_empty() {
        return Err("a delete record carries a value".into());
    }
    Ok(Record { key, version, expires_at: (expires_at != 0).then_some(expires_at), tombstone, content_type, value })
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < count {
            return Err("payload ends inside a field".into());
        }
        let (head, tail) = self.bytes.split_at(count);
        self.bytes = tail;
        Ok(head)
    }

    fn string(&mut self) -> Result<String, String> {
        let length = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize;
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(check_file_header(&header, b"YDHTSNP").unwrap_err().contains("magic"));
        let mut future = header;
        future[7] = 9;
        assert!(check_file_header(&future, b"YDHTWAL").unwrap_err().contains("version 9"));
    }
}
