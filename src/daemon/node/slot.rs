//! How the node's map holds one key, kept small because a node holds millions.
//!
//! A [`Slot`] is 40 bytes inline plus ONE heap allocation of exactly the key's
//! and the value's bytes. Its content type is a number in the store's
//! [`ContentTypes`] table, which keeps each distinct type once while any slot
//! uses it (most keys share a handful of types). With 1,000,000 keys of 100 B
//! this takes the node from ~440 MB to well under 300 MB (bench/RESULTS.md).
//!
//! Slots are ordered, compared and looked up by their key's bytes
//! ([`Borrow<[u8]>`]), which orders them exactly as `str` orders the keys.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use crate::wal::Record;
use crate::wal::record::RecordRef;

/// A content type's number in [`ContentTypes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeId(u32);

/// The distinct content types in use, each stored once and counted by the slots using it.
#[derive(Debug, Default)]
pub struct ContentTypes {
    /// By id: the name and how many slots use it; `None` for a free id.
    names: Vec<Option<(Arc<str>, u64)>>,
    /// Name → id, for the names in `names`.
    ids: HashMap<Arc<str>, u32>,
    /// Ids free for reuse.
    free: Vec<u32>,
}

impl ContentTypes {
    /// The id of `name`, counting one more user of it.
    pub fn acquire(&mut self, name: &str) -> TypeId {
        if let Some(&id) = self.ids.get(name) {
            let (_, users) = self.names[id as usize].as_mut().expect("an id in the index is in use");
            *users += 1;
            return TypeId(id);
        }
        let name: Arc<str> = Arc::from(name);
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = Some((Arc::clone(&name), 1));
                id
            }
            None => {
                self.names.push(Some((Arc::clone(&name), 1)));
                u32::try_from(self.names.len() - 1).expect("fewer distinct content types than keys")
            }
        };
        self.ids.insert(name, id);
        TypeId(id)
    }

    /// Counts one user of `id` less; forgets the type when it was the last.
    pub fn release(&mut self, id: TypeId) {
        let slot = &mut self.names[id.0 as usize];
        let (name, users) = slot.as_mut().expect("a released id is in use");
        *users -= 1;
        if *users == 0 {
            self.ids.remove(&**name);
            *slot = None;
            self.free.push(id.0);
        }
    }

    /// The name of `id`.
    pub fn name(&self, id: TypeId) -> &Arc<str> {
        &self.names[id.0 as usize].as_ref().expect("a slot's content type is in use").0
    }

    /// Distinct content types in use.
    pub fn count(&self) -> usize {
        self.ids.len()
    }
}

/// One key's current version: a value, a tombstone, or an expired entry whose value the sweeper dropped.
#[derive(Debug)]
pub struct Slot {
    /// The key's bytes, then the value's (only the key for tombstones and swept entries).
    data: Box<[u8]>,
    /// The version that wrote this entry.
    pub version: u64,
    /// A value's absolute expiry in Unix milliseconds, if any; for a tombstone (which never
    /// expires), when it arrived on this node's monotonic clock ([`super::gc::local_millis`]).
    expires_at: Option<NonZeroU64>,
    /// The value's content type.
    pub content_type: TypeId,
    key_len: u16,
    /// Whether the key was deleted at `version`.
    pub tombstone: bool,
    /// Whether the sweeper already dropped the value of this expired entry.
    pub swept: bool,
}

impl Slot {
    /// The slot holding `record`, whose content type is `content_type`; a tombstone arrives now.
    pub fn new(record: &Record, content_type: TypeId) -> Self {
        let key_len = u16::try_from(record.key.len()).expect("the WAL only accepts keys of at most 65535 bytes");
        let mut data = Vec::with_capacity(record.key.len() + record.value.len());
        data.extend_from_slice(record.key.as_bytes());
        data.extend_from_slice(&record.value);
        Self {
            data: data.into_boxed_slice(),
            version: record.version,
            expires_at: if record.tombstone {
                NonZeroU64::new(super::gc::local_millis())
            } else {
                record.expires_at.and_then(NonZeroU64::new)
            },
            content_type,
            key_len,
            tombstone: record.tombstone,
            swept: false,
        }
    }

    /// The same entry without its value (the sweeper's work on an expired entry).
    pub fn swept(self) -> Self {
        Self { data: self.key_bytes().into(), swept: true, ..self }
    }

    fn key_bytes(&self) -> &[u8] {
        &self.data[..usize::from(self.key_len)]
    }

    /// The key.
    pub fn key(&self) -> &str {
        std::str::from_utf8(self.key_bytes()).expect("slots are built from UTF-8 keys")
    }

    /// The value (empty for tombstones and swept entries).
    pub fn value(&self) -> &[u8] {
        &self.data[usize::from(self.key_len)..]
    }

    /// Absolute expiry in Unix milliseconds, if any (never for a tombstone).
    pub fn expires_at(&self) -> Option<u64> {
        if self.tombstone { None } else { self.expires_at.map(NonZeroU64::get) }
    }

    /// When a tombstone arrived on this node ([`super::gc::local_millis`]); 0 for a value.
    pub fn arrived_at(&self) -> u64 {
        if self.tombstone { self.expires_at.map_or(0, NonZeroU64::get) } else { 0 }
    }

    /// Whether the entry has expired at `now` (Unix ms).
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at().is_some_and(|expires_at| expires_at <= now)
    }

    /// Whether the entry is a value that has not expired at `now`.
    pub fn is_live(&self, now: u64) -> bool {
        !self.tombstone && !self.is_expired(now)
    }

    /// The entry as a record to log or send, its content type named by `types`.
    pub fn borrowed<'a>(&'a self, types: &'a ContentTypes) -> RecordRef<'a> {
        RecordRef {
            key: self.key(),
            version: self.version,
            expires_at: self.expires_at(),
            tombstone: self.tombstone,
            content_type: types.name(self.content_type),
            value: self.value(),
        }
    }
}

impl Borrow<[u8]> for Slot {
    fn borrow(&self) -> &[u8] {
        self.key_bytes()
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.key_bytes() == other.key_bytes()
    }
}

impl Eq for Slot {}

impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Slot {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key_bytes().cmp(other.key_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_small_and_gives_back_its_record() {
        assert_eq!(std::mem::size_of::<Slot>(), 40);
        let mut types = ContentTypes::default();
        let record = Record::put("k/1", 7, &b"value"[..], "text/plain").with_expiry(Some(99));
        let slot = Slot::new(&record, types.acquire(&record.content_type));
        assert_eq!(slot.borrowed(&types), record.borrowed());
        assert!(slot.is_live(98) && !slot.is_live(99));
        let swept = slot.swept();
        assert_eq!((swept.key(), swept.value(), swept.swept), ("k/1", &b""[..], true));
        // A tombstone never expires; its slot remembers when it arrived instead.
        let before = crate::daemon::node::gc::local_millis();
        let deleted = Record::delete("k/1", 8).with_expiry(Some(99));
        let tombstone = Slot::new(&deleted, types.acquire(""));
        assert_eq!(tombstone.expires_at(), None);
        assert!(!tombstone.is_expired(u64::MAX));
        assert!(tombstone.arrived_at() >= before && tombstone.arrived_at() <= crate::daemon::node::gc::local_millis());
        assert_eq!(tombstone.borrowed(&types).expires_at, None);
    }

    #[test]
    fn content_types_are_shared_and_forgotten_with_their_last_user() {
        let mut types = ContentTypes::default();
        let first = types.acquire("text/plain");
        let second = types.acquire("text/plain");
        let other = types.acquire("application/json");
        assert_eq!((first, types.count()), (second, 2));
        types.release(first);
        assert_eq!(&**types.name(second), "text/plain");
        types.release(second);
        assert_eq!(types.count(), 1);
        // The freed id is reused for the next new type.
        let reused = types.acquire("image/png");
        assert_eq!((reused, &**types.name(reused)), (first, "image/png"));
        assert_eq!(&**types.name(other), "application/json");
    }

    #[test]
    fn slots_order_like_their_keys() {
        let mut types = ContentTypes::default();
        let id = types.acquire("");
        let mut keys = vec!["b", "a/2", "a", "a/10", "é", "z"];
        let mut slots: Vec<Slot> = keys.iter().map(|key| Slot::new(&Record::delete(*key, 1), id)).collect();
        slots.sort();
        keys.sort();
        assert_eq!(slots.iter().map(Slot::key).collect::<Vec<_>>(), keys);
    }
}
