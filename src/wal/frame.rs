//! The frame of every ydht log and binary body, generic over its payload: WAL
//! segments, snapshots, the replicator's queue log, and `/batch` and `/jobs`
//! bodies all are a file header followed by frames, read back by one [`scan`]
//! with one rule for telling a torn tail from corruption.
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
//! Files start with an 8-byte header: a 7-byte magic naming the file kind and
//! a format version byte, so a future format can be recognised and refused.

use super::codec::DecodeError;

/// Bytes of a frame header (length, length CRC, payload CRC).
pub const FRAME_HEADER_BYTES: usize = 12;
/// Bytes of a file header (magic + format version).
pub const FILE_HEADER_BYTES: usize = 8;
/// Largest payload a frame may claim; anything larger is corruption.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 30;

/// Why a file header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer bytes than a header.
    #[error("file header is {0} bytes, expected {FILE_HEADER_BYTES}")]
    Short(usize),
    /// Another kind of file.
    #[error("bad magic {found:?}, expected {expected:?}")]
    Magic {
        /// The magic found.
        found: String,
        /// The magic expected.
        expected: String,
    },
    /// A format version this build does not read.
    #[error("format version {found} is not supported (this ydht reads version {supported})")]
    Version {
        /// The version byte found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
}

/// The 8-byte file header `magic` + `version`.
pub fn file_header(magic: &[u8; 7], version: u8) -> [u8; FILE_HEADER_BYTES] {
    let mut header = [0; FILE_HEADER_BYTES];
    header[..7].copy_from_slice(magic);
    header[7] = version;
    header
}

/// Checks that `bytes` start with the header `magic` + `version`.
pub fn check_file_header(bytes: &[u8], magic: &[u8; 7], version: u8) -> Result<(), HeaderError> {
    if bytes.len() < FILE_HEADER_BYTES {
        return Err(HeaderError::Short(bytes.len()));
    }
    if &bytes[..7] != magic {
        return Err(HeaderError::Magic {
            found: String::from_utf8_lossy(&bytes[..7]).into_owned(),
            expected: String::from_utf8_lossy(magic).into_owned(),
        });
    }
    if bytes[7] != version {
        return Err(HeaderError::Version { found: bytes[7], supported: version });
    }
    Ok(())
}

/// Why a frame is damaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field does not match its CRC.
    #[error("frame length fails its checksum")]
    LengthChecksum,
    /// The length is beyond [`MAX_PAYLOAD_BYTES`].
    #[error("frame claims {0} payload bytes, more than the maximum")]
    TooLong(usize),
    /// The payload does not match its CRC.
    #[error("payload fails its checksum")]
    PayloadChecksum,
    /// The payload is intact but not a valid entry.
    #[error(transparent)]
    Payload(#[from] DecodeError),
    /// The file header is wrong.
    #[error(transparent)]
    Header(#[from] HeaderError),
}

/// Appends one frame to `out` whose payload `write` appends. A payload over
/// [`MAX_PAYLOAD_BYTES`] is taken back out and its size returned as the error.
pub fn append(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) -> Result<(), usize> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    write(out);
    let payload_len = out.len() - start - FRAME_HEADER_BYTES;
    if payload_len > MAX_PAYLOAD_BYTES {
        out.truncate(start);
        return Err(payload_len);
    }
    let length = (payload_len as u32).to_le_bytes();
    let payload_crc = crc32fast::hash(&out[start + FRAME_HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&length);
    out[start + 4..start + 8].copy_from_slice(&crc32fast::hash(&length).to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&payload_crc.to_le_bytes());
    Ok(())
}

/// The frame at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Split<'a> {
    /// An intact frame: its payload and the bytes the frame took.
    Frame(&'a [u8], usize),
    /// The buffer ends inside the frame (its length, when present, passed its CRC).
    Incomplete,
    /// The frame is damaged.
    Corrupt(FrameError),
}

/// Splits off the frame at the start of `bytes`, checking both CRCs.
pub fn split(bytes: &[u8]) -> Split<'_> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Split::Incomplete;
    }
    let length_bytes: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
    let length_crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if crc32fast::hash(&length_bytes) != length_crc {
        return Split::Corrupt(FrameError::LengthChecksum);
    }
    let length = u32::from_le_bytes(length_bytes) as usize;
    if length > MAX_PAYLOAD_BYTES {
        return Split::Corrupt(FrameError::TooLong(length));
    }
    let end = FRAME_HEADER_BYTES + length;
    if bytes.len() < end {
        return Split::Incomplete;
    }
    let payload_crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let payload = &bytes[FRAME_HEADER_BYTES..end];
    if crc32fast::hash(payload) != payload_crc {
        return Split::Corrupt(FrameError::PayloadChecksum);
    }
    Split::Frame(payload, end)
}

/// How a scanned sequence of frames ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte belonged to a valid frame.
    Clean,
    /// The last frame is incomplete or damaged and nothing valid follows:
    /// the signature of a crash in the middle of an append.
    Torn {
        /// Where the torn frame starts.
        offset: u64,
        /// How many bytes from there to the end.
        bytes: u64,
    },
    /// A damaged frame with more data after it: real corruption.
    Corrupt {
        /// Where the damaged frame starts.
        offset: u64,
        /// What failed.
        reason: FrameError,
    },
}

/// Decodes the frames of `bytes` from `start` with `decode`, handing each
/// entry to `each`; returns the offset just past the last valid frame and how
/// the data ends.
///
/// A frame that is cut short, or whose damage reaches exactly to the end of
/// the data, or that is followed only by zero bytes (the zeros a writer
/// preallocates ahead of its appends), is a torn tail; any other damage is
/// corruption. Never panics on any input.
pub fn scan<P>(
    bytes: &[u8],
    start: usize,
    decode: impl Fn(&[u8]) -> Result<P, DecodeError>,
    mut each: impl FnMut(P),
) -> (usize, ScanEnd) {
    scan_ends(bytes, start, decode, |_, entry| each(entry))
}

/// [`scan`], handing `each` also the offset where each frame ends (where the next one starts).
pub fn scan_ends<P>(
    bytes: &[u8],
    start: usize,
    decode: impl Fn(&[u8]) -> Result<P, DecodeError>,
    mut each: impl FnMut(usize, P),
) -> (usize, ScanEnd) {
    let mut offset = start.min(bytes.len());
    while offset < bytes.len() {
        let damage = match split(&bytes[offset..]) {
            Split::Frame(payload, used) => match decode(payload) {
                Ok(entry) => {
                    offset += used;
                    each(offset, entry);
                    continue;
                }
                Err(error) => FrameError::Payload(error),
            },
            Split::Incomplete => return (offset, torn(offset, bytes.len())),
            Split::Corrupt(error) => error,
        };
        // Torn: nothing but zeros after the damaged frame (after its header when its
        // length is damaged too). A crash leaves that: the file ended there, or the
        // zeros written ahead of the records follow.
        let rest = &bytes[offset..];
        let zeros = |from: usize| rest.get(from..).is_none_or(|after| after.iter().all(|&byte| byte == 0));
        let last_frame = match frame_end(rest) {
            Some(end) => zeros(end),
            None => zeros(FRAME_HEADER_BYTES),
        };
        if last_frame {
            return (offset, torn(offset, bytes.len()));
        }
        return (offset, ScanEnd::Corrupt { offset: offset as u64, reason: damage });
    }
    (offset, ScanEnd::Clean)
}

fn torn(offset: usize, len: usize) -> ScanEnd {
    ScanEnd::Torn { offset: offset as u64, bytes: (len - offset) as u64 }
}

/// The end of the frame at the start of `bytes`, when its length field is intact.
fn frame_end(bytes: &[u8]) -> Option<usize> {
    let length: [u8; 4] = bytes.get(0..4)?.try_into().ok()?;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    (crc32fast::hash(&length) == crc).then(|| FRAME_HEADER_BYTES + u32::from_le_bytes(length) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            append(&mut out, |out| out.extend_from_slice(payload)).unwrap();
        }
        out
    }

    fn read_all(bytes: &[u8]) -> (Vec<Vec<u8>>, usize, ScanEnd) {
        let mut seen = Vec::new();
        let (end, how) = scan(bytes, 0, |payload| Ok(payload.to_vec()), |payload| seen.push(payload));
        (seen, end, how)
    }

    proptest! {
        #[test]
        fn frames_round_trip_and_any_cut_leaves_a_clean_prefix(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = frames(&payloads);
            let (seen, end, how) = read_all(&bytes);
            prop_assert_eq!(&seen, &payloads);
            prop_assert_eq!((end, how), (bytes.len(), ScanEnd::Clean));
            // A crash can stop an append anywhere: what is read back is a prefix, and the rest is torn.
            let at = cut.index(bytes.len() + 1);
            let (seen, end, how) = read_all(&bytes[..at]);
            prop_assert!(payloads.starts_with(&seen));
            prop_assert!(end <= at);
            prop_assert!(matches!(how, ScanEnd::Clean | ScanEnd::Torn { .. }), "{:?}", how);
        }

        #[test]
        fn a_flipped_bit_is_never_read_as_data(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 1..6),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut bytes = frames(&payloads);
            let at = flip.index(bytes.len());
            bytes[at] ^= 1 << bit;
            let (seen, _, how) = read_all(&bytes);
            prop_assert!(seen.len() < payloads.len(), "a damaged frame was accepted");
            prop_assert!(payloads.starts_with(&seen));
            prop_assert!(how != ScanEnd::Clean);
        }
    }

    #[test]
    fn zeros_after_the_last_frame_are_a_torn_tail_and_damage_before_data_is_corruption() {
        let payloads = vec![b"one".to_vec(), b"two".to_vec()];
        let mut padded = frames(&payloads);
        let clean = padded.len();
        padded.resize(clean + 64, 0);
        let (seen, end, how) = read_all(&padded);
        assert_eq!((seen, end), (payloads.clone(), clean));
        assert!(matches!(how, ScanEnd::Torn { .. }));

        let mut damaged = frames(&payloads);
        damaged[FRAME_HEADER_BYTES] ^= 1;
        let (seen, end, how) = read_all(&damaged);
        assert_eq!((seen.len(), end), (0, 0));
        assert_eq!(how, ScanEnd::Corrupt { offset: 0, reason: FrameError::PayloadChecksum });
    }
}
