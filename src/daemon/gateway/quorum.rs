//! What nodes hold for a key, and how a majority read picks the answer:
//! the newest version wins, whether it is a value or a tombstone.

use bytes::Bytes;

use crate::wal::record::RecordRef;
use crate::wire::read::{Found, Lookup};

/// A versioned change to a key, as written to nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    /// The write's version (from the gateway's hybrid logical clock).
    pub version: u64,
    /// Put or delete.
    pub kind: MutationKind,
}

/// What a [`Mutation`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MutationKind {
    /// Store a value.
    Put {
        /// The raw value.
        value: Bytes,
        /// The content type to store.
        content_type: String,
        /// Absolute expiry in Unix milliseconds.
        expires_at: Option<u64>,
    },
    /// Write a tombstone.
    Delete,
}

impl Mutation {
    /// The mutation that brings a stale node up to `record` (None for a missing record).
    pub fn restoring(record: &Lookup) -> Option<Self> {
        match record {
            Lookup::Found(Found { value, content_type, version, expires_at }) => Some(Self {
                version: *version,
                kind: MutationKind::Put {
                    value: value.clone(),
                    content_type: content_type.to_string(),
                    expires_at: *expires_at,
                },
            }),
            Lookup::Tombstone(version) => Some(Self { version: *version, kind: MutationKind::Delete }),
            Lookup::Expired(_) | Lookup::Missing => None,
        }
    }
}

impl Mutation {
    /// The mutation of `key` as a record, borrowed (for WAL frames in node batches and jobs).
    pub fn record<'a>(&'a self, key: &'a str) -> RecordRef<'a> {
        let (tombstone, content_type, value, expires_at): (bool, &str, &[u8], Option<u64>) = match &self.kind {
            MutationKind::Put { value, content_type, expires_at } => (false, content_type, value, *expires_at),
            MutationKind::Delete => (true, "", &[], None),
        };
        RecordRef { key, version: self.version, expires_at, tombstone, content_type, value }
    }
}

/// The result of a majority read: the winning record and which responders are behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Index (into the responses) of the newest record; `None` when every responder lacks the key.
    pub newest: Option<usize>,
    /// Indices of responders holding an older version or nothing, to repair.
    pub stale: Vec<usize>,
}

/// Picks the newest version among `responses`; ties go to the first responder.
pub fn resolve(responses: &[Lookup]) -> Resolution {
    let mut newest: Option<(usize, u64)> = None;
    for (index, record) in responses.iter().enumerate() {
        match (record.version(), newest) {
            (Some(version), Some((_, best))) if version <= best => {}
            (Some(version), _) => newest = Some((index, version)),
            (None, _) => {}
        }
    }
    let Some((winner, version)) = newest else {
        return Resolution { newest: None, stale: Vec::new() };
    };
    let stale = responses
        .iter()
        .enumerate()
        .filter(|(_, record)| record.version().is_none_or(|held| held < version))
        .map(|(index, _)| index)
        .collect();
    Resolution { newest: Some(winner), stale }
}

/// Acknowledgements needed for a majority of `replicas` copies.
pub fn majority(replicas: usize) -> usize {
    replicas / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(version: u64, text: &'static str) -> Lookup {
        Lookup::Found(Found {
            value: Bytes::from_static(text.as_bytes()),
            content_type: "text/plain".into(),
            version,
            expires_at: None,
        })
    }

    #[test]
    fn newest_value_wins_and_older_or_missing_are_stale() {
        let responses = [value(5, "old"), value(9, "new"), Lookup::Missing];
        let resolution = resolve(&responses);
        assert_eq!(resolution.newest, Some(1));
        assert_eq!(resolution.stale, vec![0, 2]);
    }

    #[test]
    fn a_newer_tombstone_beats_a_value() {
        let responses = [value(5, "v"), Lookup::Tombstone(6)];
        let resolution = resolve(&responses);
        assert_eq!(resolution.newest, Some(1));
        assert!(matches!(responses[1], Lookup::Tombstone(_)));
        assert_eq!(resolution.stale, vec![0]);
        // And an older tombstone loses to a newer value.
        let responses = [Lookup::Tombstone(4), value(5, "v")];
        assert_eq!(resolve(&responses), Resolution { newest: Some(1), stale: vec![0] });
    }

    #[test]
    fn all_missing_means_not_found_and_nothing_to_repair() {
        assert_eq!(resolve(&[Lookup::Missing, Lookup::Missing]), Resolution { newest: None, stale: vec![] });
        assert_eq!(resolve(&[]), Resolution { newest: None, stale: vec![] });
    }

    #[test]
    fn equal_versions_are_not_stale() {
        let resolution = resolve(&[value(7, "a"), value(7, "a"), value(3, "b")]);
        assert_eq!(resolution, Resolution { newest: Some(0), stale: vec![2] });
    }

    #[test]
    fn majority_of_n() {
        assert_eq!([1, 2, 3, 4, 5].map(majority), [1, 2, 2, 3, 3]);
    }

    #[test]
    fn restoring_mutations_copy_the_record() {
        let restore = Mutation::restoring(&value(3, "x")).unwrap();
        assert_eq!(restore.version, 3);
        assert!(matches!(restore.kind, MutationKind::Put { .. }));
        let restore = Mutation::restoring(&Lookup::Tombstone(4)).unwrap();
        assert_eq!(restore, Mutation { version: 4, kind: MutationKind::Delete });
        assert_eq!(Mutation::restoring(&Lookup::Missing), None);
    }
}
