//! The `POST /read` bodies: several keys read in one request, for the gateway,
//! which coalesces concurrent reads of one node ([`crate::coalesce`]).
//!
//! # Layout (format version 1), integers little-endian
//!
//! ```text
//! request   8 bytes  magic "YDHTRDQ" + format version byte (1)
//!           4 bytes  key count N (u32), 1..=MAX_READ_KEYS
//!           N times  key length (u16), key (UTF-8)
//!
//! answer    8 bytes  magic "YDHTRDA" + format version byte (1)
//!           4 bytes  entry count (u32), equal to the request's N
//!           N times  one entry per requested key, in request order:
//!             tag 0  missing (never written, purged, or expired)
//!             tag 1  tombstone: version (u64)
//!             tag 2  value: version (u64), expires_at (u64, 0 = never),
//!                    content type length (u16), content type, value length (u32), value
//!             tag 3  left out: the answer reached its byte limit; read this key alone
//!             tag 4  pending: version (u64) of a conditional write the node accepted and has
//!                    not seen committed, newer than what it holds; then the key's entry (tag 0-2)
//! ```
//!
//! Nothing may follow the last key or entry. A malformed request is refused
//! whole (400) and a malformed answer is an error for every key in it.

use std::sync::Arc;

use bytes::Bytes;

use super::BodyError;
use crate::wal::codec::Reader;
use crate::wal::record::{FILE_HEADER_BYTES, check_file_header, file_header};

/// A live value as a read finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The version that wrote it.
    pub version: u64,
    /// Absolute expiry in Unix milliseconds, if any.
    pub expires_at: Option<u64>,
    /// The value's content type.
    pub content_type: Arc<str>,
    /// The value.
    pub value: Bytes,
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A live value.
    Found(Found),
    /// Deleted at this version.
    Tombstone(u64),
    /// Expired; the entry had this version.
    Expired(u64),
    /// Never written (or purged).
    Missing,
}

impl Lookup {
    /// The version of what a reader sees: a live value's or a tombstone's. An
    /// expired or missing key has none; it is older than every version.
    pub fn version(&self) -> Option<u64> {
        match self {
            Self::Found(found) => Some(found.version),
            Self::Tombstone(version) => Some(*version),
            Self::Expired(_) | Self::Missing => None,
        }
    }
}

/// What a replica holds for a key, as a majority read needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// What it holds.
    pub lookup: Lookup,
    /// The version of a conditional write it accepted and has not seen committed, newer than
    /// what it holds ([`crate::paxos::Acceptor::pending`]): it may be chosen already, and a
    /// majority read that meets it settles the key first ([`crate::paxos::needs_round`]).
    pub pending: Option<u64>,
}

impl From<Lookup> for Replica {
    fn from(lookup: Lookup) -> Self {
        Self { lookup, pending: None }
    }
}

/// Magic at the start of a request body.
pub const REQUEST_MAGIC: &[u8; 7] = b"YDHTRDQ";
/// Magic at the start of an answer body.
pub const ANSWER_MAGIC: &[u8; 7] = b"YDHTRDA";
/// Content type of both bodies.
pub const READ_CONTENT_TYPE: &str = "application/x-ydht-read";
/// Most keys one request may name.
pub const MAX_READ_KEYS: usize = 1024;
/// Largest request body: every key at the longest a node accepts, with its length.
pub const MAX_REQUEST_BYTES: usize = FILE_HEADER_BYTES + 4 + MAX_READ_KEYS * (2 + crate::proto::MAX_STORAGE_KEY_BYTES);

const MISSING: u8 = 0;
const TOMBSTONE: u8 = 1;
const VALUE: u8 = 2;
const LEFT_OUT: u8 = 3;
const PENDING: u8 = 4;

/// What the answer says of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// What the node holds (an expired value reads as missing).
    Read(Replica),
    /// Not in this answer (its byte limit was reached first); read the key alone.
    LeftOut,
}

impl Entry {
    /// What the node holds, or `None` for a key left out ([`encode_answer`]'s input form).
    pub fn into_replica(self) -> Option<Replica> {
        match self {
            Entry::Read(replica) => Some(replica),
            Entry::LeftOut => None,
        }
    }
}

/// Encodes a request for `keys`. Keys longer than `u16::MAX` bytes cannot be named (nodes refuse them anyway).
pub fn encode_request<'a>(keys: impl ExactSizeIterator<Item = &'a str> + Clone) -> Result<Vec<u8>, BodyError> {
    if keys.len() == 0 || keys.len() > MAX_READ_KEYS {
        return Err(keys_out_of_range(keys.len()));
    }
    let mut body = Vec::with_capacity(FILE_HEADER_BYTES + 4 + keys.clone().map(|key| 2 + key.len()).sum::<usize>());
    body.extend_from_slice(&file_header(REQUEST_MAGIC));
    body.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    for key in keys {
        let len = u16::try_from(key.len()).map_err(|_| BodyError::KeyTooLong(key.len()))?;
        body.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(key.as_bytes());
    }
    Ok(body)
}

/// Decodes a request body into its keys (not yet validated as keys); the error names what is wrong and where.
pub fn decode_request(body: &[u8]) -> Result<Vec<&str>, BodyError> {
    check_file_header(body, REQUEST_MAGIC).map_err(|source| BodyError::Header { body: "read request", source })?;
    let mut reader = Reader::new(body, FILE_HEADER_BYTES);
    let count = reader.u32().map_err(|_| BodyError::Short { body: "request", field: "key count" })? as usize;
    if count == 0 || count > MAX_READ_KEYS {
        return Err(keys_out_of_range(count));
    }
    let mut keys = Vec::with_capacity(count);
    for index in 0..count {
        let ends = |_| BodyError::EndsIn { body: "request", item: "key", index };
        let len = reader.u16().map_err(ends)? as usize;
        let key = reader.take(len).map_err(ends)?;
        keys.push(std::str::from_utf8(key).map_err(|_| BodyError::NotUtf8 { item: "key", index, field: "the key" })?);
    }
    if reader.at() != body.len() {
        return Err(BodyError::Trailing { extra: body.len() - reader.at(), last: "the last key".into() });
    }
    Ok(keys)
}

fn keys_out_of_range(count: usize) -> BodyError {
    BodyError::Count { body: "request", verb: "names", base: "name", items: "keys", count, max: MAX_READ_KEYS }
}

/// Encodes the answer to a read of `replicas.len()` keys; `None` is a key left out.
pub fn encode_answer(replicas: &[Option<Replica>]) -> Vec<u8> {
    let values: usize = replicas
        .iter()
        .map(|replica| match replica.as_ref().map(|replica| &replica.lookup) {
            Some(Lookup::Found(found)) => found.value.len() + found.content_type.len(),
            _ => 0,
        })
        .sum();
    let mut body = Vec::with_capacity(FILE_HEADER_BYTES + 4 + replicas.len() * 23 + values);
    body.extend_from_slice(&file_header(ANSWER_MAGIC));
    body.extend_from_slice(&(replicas.len() as u32).to_le_bytes());
    for replica in replicas {
        if let Some(pending) = replica.as_ref().and_then(|replica| replica.pending) {
            body.push(PENDING);
            body.extend_from_slice(&pending.to_le_bytes());
        }
        match replica.as_ref().map(|replica| &replica.lookup) {
            None => body.push(LEFT_OUT),
            Some(Lookup::Missing | Lookup::Expired(_)) => body.push(MISSING),
            Some(Lookup::Tombstone(version)) => {
                body.push(TOMBSTONE);
                body.extend_from_slice(&version.to_le_bytes());
            }
            Some(Lookup::Found(found)) => {
                // The node stores content types of at most 255 bytes and values far below 4 GiB.
                body.push(VALUE);
                body.extend_from_slice(&found.version.to_le_bytes());
                body.extend_from_slice(&found.expires_at.unwrap_or(0).to_le_bytes());
                body.extend_from_slice(&(found.content_type.len() as u16).to_le_bytes());
                body.extend_from_slice(found.content_type.as_bytes());
                body.extend_from_slice(&(found.value.len() as u32).to_le_bytes());
                body.extend_from_slice(&found.value);
            }
        }
    }
    body
}

/// Decodes an answer that must hold `expected` entries; values share `body`'s memory.
pub fn decode_answer(body: &Bytes, expected: usize) -> Result<Vec<Entry>, BodyError> {
    check_file_header(body, ANSWER_MAGIC).map_err(|source| BodyError::Header { body: "read answer", source })?;
    let mut reader = Reader::new(body, FILE_HEADER_BYTES);
    let count = reader.u32().map_err(|_| BodyError::Short { body: "answer", field: "entry count" })? as usize;
    if count != expected {
        return Err(BodyError::Mismatch {
            body: "answer",
            items: "entries",
            found: count,
            expected: format!("for {expected} keys"),
        });
    }
    let mut entries = Vec::with_capacity(count);
    for index in 0..count {
        let ends = |_| BodyError::EndsIn { body: "answer", item: "entry", index };
        let mut tag = reader.u8().map_err(ends)?;
        let mut pending = None;
        if tag == PENDING {
            pending = Some(reader.u64().map_err(ends)?);
            tag = reader.u8().map_err(ends)?;
        }
        let read = |lookup| Entry::Read(Replica { lookup, pending });
        let entry = match tag {
            MISSING => read(Lookup::Missing),
            TOMBSTONE => read(Lookup::Tombstone(reader.u64().map_err(ends)?)),
            VALUE => {
                let version = reader.u64().map_err(ends)?;
                let expires_at = Some(reader.u64().map_err(ends)?).filter(|&millis| millis > 0);
                let type_len = reader.u16().map_err(ends)? as usize;
                let content_type = std::str::from_utf8(reader.take(type_len).map_err(ends)?)
                    .map_err(|_| BodyError::NotUtf8 { item: "entry", index, field: "the content type" })?;
                let value_len = reader.u32().map_err(ends)? as usize;
                let start = reader.at();
                reader.take(value_len).map_err(ends)?;
                read(Lookup::Found(Found {
                    version,
                    expires_at,
                    content_type: content_type.into(),
                    value: body.slice(start..start + value_len),
                }))
            }
            LEFT_OUT if pending.is_none() => Entry::LeftOut,
            tag => return Err(BodyError::UnknownTag { index, tag }),
        };
        entries.push(entry);
    }
    if reader.at() != body.len() {
        return Err(BodyError::Trailing { extra: body.len() - reader.at(), last: "the last entry".into() });
    }
    Ok(entries)
}

/// Reads little-endian integers and byte runs off a buffer, never past its end.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_refuse_damage() {
        let keys = ["u/a", "u/über", "u/c d"];
        let body = encode_request(keys.iter().copied()).unwrap();
        assert_eq!(decode_request(&body).unwrap(), keys);

        assert!(decode_request(&body[..body.len() - 1]).unwrap_err().to_string().contains("ends inside key 2"));
        assert!(decode_request(b"{\"keys\": []}").unwrap_err().to_string().contains("not a ydht read request"));
        let mut trailing = body.clone();
        trailing.push(0);
        assert!(decode_request(&trailing).unwrap_err().to_string().contains("1 bytes follow"));
        let mut zero = body.clone();
        zero[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert!(decode_request(&zero).unwrap_err().to_string().contains("names 0 keys"));
        let mut too_many = body.clone();
        too_many[8..12].copy_from_slice(&(MAX_READ_KEYS as u32 + 1).to_le_bytes());
        assert!(decode_request(&too_many).unwrap_err().to_string().contains("must name 1 to"));
        assert!(encode_request(std::iter::empty()).is_err());
    }

    #[test]
    fn answers_round_trip_every_kind_of_entry() {
        let found = Found {
            version: 9,
            expires_at: Some(1_700_000_000_000),
            content_type: "text/plain".into(),
            value: Bytes::from_static(b"hello"),
        };
        let pending = |lookup, pending| Replica { lookup, pending: Some(pending) };
        let lookups = [
            Some(Lookup::Found(found.clone()).into()),
            Some(Lookup::Tombstone(7).into()),
            Some(Lookup::Missing.into()),
            Some(Lookup::Expired(3).into()),
            None,
            Some(Lookup::Found(Found { expires_at: None, value: Bytes::new(), ..found.clone() }).into()),
            Some(pending(Lookup::Tombstone(7), 11)),
            Some(pending(Lookup::Missing, 12)),
        ];
        let body = Bytes::from(encode_answer(&lookups));
        let entries = decode_answer(&body, lookups.len()).unwrap();
        assert_eq!(
            entries,
            vec![
                Entry::Read(Lookup::Found(found.clone()).into()),
                Entry::Read(Lookup::Tombstone(7).into()),
                Entry::Read(Lookup::Missing.into()),
                Entry::Read(Lookup::Missing.into()),
                Entry::LeftOut,
                Entry::Read(Lookup::Found(Found { expires_at: None, value: Bytes::new(), ..found }).into()),
                Entry::Read(pending(Lookup::Tombstone(7), 11)),
                Entry::Read(pending(Lookup::Missing, 12)),
            ]
        );

        assert!(decode_answer(&body, 5).unwrap_err().to_string().contains("8 entries for 5 keys"));
        assert!(decode_answer(&body.slice(..body.len() - 1), 8).unwrap_err().to_string().contains("inside entry 7"));
        let mut bad_tag = body.to_vec();
        bad_tag[12] = 9;
        assert!(decode_answer(&Bytes::from(bad_tag), 8).unwrap_err().to_string().contains("unknown tag 9"));
        // A pending version belongs to an entry: not to a key left out, not twice.
        let mut pending_left_out = file_header(ANSWER_MAGIC).to_vec();
        pending_left_out.extend_from_slice(&1u32.to_le_bytes());
        pending_left_out.push(PENDING);
        pending_left_out.extend_from_slice(&5u64.to_le_bytes());
        let twice = [pending_left_out.clone(), vec![PENDING], 5u64.to_le_bytes().to_vec(), vec![MISSING]].concat();
        pending_left_out.push(LEFT_OUT);
        for body in [pending_left_out, twice] {
            assert!(decode_answer(&Bytes::from(body), 1).unwrap_err().to_string().contains("unknown tag"));
        }
    }
}
