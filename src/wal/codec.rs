//! The one byte reader every ydht binary format decodes with (WAL records,
//! the replicator queue's entries, node read bodies): every read checks its
//! bounds, and failures are a typed [`DecodeError`], never a panic.

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The data ends inside a field.
    #[error("payload ends inside a field")]
    Truncated,
    /// A text field holds bytes that are not UTF-8.
    #[error("a text field is not UTF-8")]
    NotUtf8,
    /// A tag byte names nothing this version knows.
    #[error("unknown {what} {value}")]
    Unknown {
        /// What the byte tags (`record kind`, `operation`, …).
        what: &'static str,
        /// The byte.
        value: u8,
    },
    /// The fields contradict each other or the format.
    #[error("{0}")]
    Inconsistent(&'static str),
}

/// A cursor over bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader at `at` in `bytes`.
    pub fn new(bytes: &'a [u8], at: usize) -> Self {
        Self { bytes, at: at.min(bytes.len()) }
    }

    /// The offset of the next byte.
    pub fn at(&self) -> usize {
        self.at
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.bytes[self.at..]
    }

    /// The next `count` bytes.
    pub fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(count).filter(|&end| end <= self.bytes.len()).ok_or(DecodeError::Truncated)?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_le_bytes)
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    /// `len` bytes of UTF-8 text.
    pub fn text(&mut self, len: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::NotUtf8)
    }

    /// Text preceded by its `u16` length.
    pub fn text16(&mut self) -> Result<&'a str, DecodeError> {
        let len = usize::from(self.u16()?);
        self.text(len)
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(DecodeError::Inconsistent("trailing bytes after the last field"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_fields_in_order_and_refuses_to_run_past_the_end() {
        let mut bytes = vec![7u8];
        bytes.extend_from_slice(&513u16.to_le_bytes());
        bytes.extend_from_slice(&2u16.to_le_bytes());
        bytes.extend_from_slice(b"hi");
        let mut reader = Reader::new(&bytes, 0);
        assert_eq!(reader.u8(), Ok(7));
        assert_eq!(reader.u16(), Ok(513));
        assert_eq!(reader.text16(), Ok("hi"));
        assert_eq!(reader.finish(), Ok(()));
        assert_eq!(reader.u8(), Err(DecodeError::Truncated));
        assert_eq!(Reader::new(&[0xff, 0xfe], 0).text(2), Err(DecodeError::NotUtf8));
        assert!(Reader::new(&[1, 2], 0).finish().is_err());
    }

    proptest! {
        #[test]
        fn no_input_makes_a_read_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), at in 0usize..80) {
            let mut reader = Reader::new(&bytes, at);
            let before = reader.at();
            let outcome = reader.u64().and_then(|_| reader.text16().map(str::len));
            prop_assert!(reader.at() <= bytes.len());
            if outcome.is_err() {
                prop_assert!(reader.at() >= before);
            }
        }
    }
}
