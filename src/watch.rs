//! Change streams (watch, issue 16) as a pure state machine: the storage nodes' change feeds merged
//! into one stream of events per watch, each change once, in version order per key, resumable
//! from a cursor after the watch (or the gateway serving it) went away.
//!
//! # Feeds
//! Every node keeps a feed of the changes it applied, in the order it applied them, each at a
//! position (`seq`) that only grows, also across restarts. A change is a key's new version (a
//! put or a delete) or its expiry; a node applies a record only when it is newer than the one it
//! holds, so one node's feed holds a key's changes in version order. The same change reaches
//! several nodes (the replicas, read repair, anti-entropy, rebalancing), at different times.
//!
//! # Merging
//! A [`Merge`] reads every node's feed after the watch's [`Cursor`] (one position per node) and
//! delivers an entry only when it is newer, as `(version, expiry)`, than anything of its key it
//! delivered or saw consumed: each change once, whichever replica reports it first, and a key's
//! changes in version order. An older version that reaches every node only after a newer one
//! (a late copy, possible only while the writes race) is skipped: the newer one was delivered.
//!
//! # Resuming
//! Each event carries the cursor after it. A new [`Merge`] resumed from that cursor first reads
//! back each node's feed before its position ([`Merge::seed`], the look-back) to learn what was
//! consumed, then delivers from the positions on. A copy of a change that reaches one node after
//! the watch stopped, of a change it had consumed from another node, is therefore recognised as
//! long as the original is within the look-back: a duplicate needs a replication delay longer
//! than it. A position a node's feed no longer holds (its retention passed) cannot be resumed:
//! the watch must list again ([`Merge::gap`]).

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A new value.
    Put,
    /// Deleted (a tombstone).
    Delete,
    /// A value's TTL ran out.
    Expire,
}

impl Kind {
    /// The event name on the stream.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Delete => "delete",
            Self::Expire => "expire",
        }
    }
}

/// One change in a node's feed; `M` is what the stream tells about it (size, content type…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<M> {
    /// Its position in the node's feed.
    pub seq: u64,
    /// The key (the node's storage key).
    pub key: String,
    /// The version of the record it is about (an expiry has its value's version).
    pub version: u64,
    /// Put, delete or expiry.
    pub kind: Kind,
    /// The rest of what the stream reports.
    pub meta: M,
}

impl<M> Entry<M> {
    /// Its place in its key's history: the version, then an expiry after the value it ends.
    fn order(&self) -> (u64, bool) {
        (self.version, self.kind == Kind::Expire)
    }
}

/// Where a watch is: for each node, the last feed position it consumed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    positions: BTreeMap<String, u64>,
}

/// Why a cursor could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Not one this server wrote.
    #[error("the cursor is not a ydht watch cursor (it comes from the id: of an event or ?since=)")]
    Malformed,
}

/// The cursor's text form: this prefix, then base64url of (node id length, id, position) entries.
const CURSOR_PREFIX: &str = "w1.";
/// Most nodes a cursor names.
pub const MAX_CURSOR_NODES: usize = 256;

impl Cursor {
    /// The position consumed in `node`'s feed, if the cursor names it.
    pub fn position(&self, node: &str) -> Option<u64> {
        self.positions.get(node).copied()
    }

    /// Sets `node`'s position.
    pub fn set(&mut self, node: &str, seq: u64) {
        match self.positions.get_mut(node) {
            Some(position) => *position = seq,
            None => {
                self.positions.insert(node.to_string(), seq);
            }
        }
    }

    /// The nodes it names.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.positions.keys().map(String::as_str)
    }

    /// The opaque text sent as an event's `id:`.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::new();
        for (node, seq) in &self.positions {
            let id = &node.as_bytes()[..node.len().min(255)];
            bytes.push(id.len() as u8);
            bytes.extend_from_slice(id);
            bytes.extend_from_slice(&seq.to_be_bytes());
        }
        format!("{CURSOR_PREFIX}{}", BASE64URL.encode(bytes))
    }

    /// Reads a cursor [`Cursor::encode`] wrote.
    pub fn decode(text: &str) -> Result<Self, CursorError> {
        let bytes = text
            .trim()
            .strip_prefix(CURSOR_PREFIX)
            .and_then(|body| BASE64URL.decode(body).ok())
            .ok_or(CursorError::Malformed)?;
        let mut positions = BTreeMap::new();
        let mut rest = &bytes[..];
        while let Some((&len, tail)) = rest.split_first() {
            let len = usize::from(len);
            if tail.len() < len + 8 || positions.len() >= MAX_CURSOR_NODES {
                return Err(CursorError::Malformed);
            }
            let node = std::str::from_utf8(&tail[..len]).map_err(|_| CursorError::Malformed)?;
            let seq = u64::from_be_bytes(tail[len..len + 8].try_into().expect("eight bytes"));
            if positions.insert(node.to_string(), seq).is_some() {
                return Err(CursorError::Malformed);
            }
            rest = &tail[len + 8..];
        }
        Ok(Self { positions })
    }
}

/// An event to send: the change, and the cursor that resumes right after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<M> {
    /// The change.
    pub entry: Entry<M>,
    /// Where a watch resumed from this event goes on.
    pub cursor: Cursor,
}

/// One watch's merge of the node feeds.
#[derive(Debug)]
pub struct Merge {
    cursor: Cursor,
    /// Per key, the newest `(version, expiry)` delivered or seen consumed, with when it was last
    /// touched (for eviction).
    seen: HashMap<String, ((u64, bool), u64)>,
    /// Keys remembered at most; past it the least recently touched half is forgotten.
    capacity: usize,
    touches: u64,
}

impl Merge {
    /// A merge going on from `cursor` (nodes it does not name are read from the start of their
    /// feeds), remembering at most `capacity` keys.
    pub fn new(cursor: Cursor, capacity: usize) -> Self {
        Self { cursor, seen: HashMap::new(), capacity: capacity.max(1), touches: 0 }
    }

    /// The cursor after everything consumed so far.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// Starts reading `node`'s feed at `seq` when the cursor does not name it yet (a new watch,
    /// or a node the resumed cursor did not know).
    pub fn start(&mut self, node: &str, seq: u64) {
        if self.cursor.position(node).is_none() {
            self.cursor.set(node, seq);
        }
    }

    /// Moves `node`'s position on to `seq` past entries that were none of this watch's (other
    /// keys, Paxos state): they need not be read again.
    pub fn advance(&mut self, node: &str, seq: u64) {
        if self.cursor.position(node).is_none_or(|consumed| consumed < seq) {
            self.cursor.set(node, seq);
        }
    }

    /// Whether `node`'s feed, which now starts at position `oldest`, still holds everything after
    /// the cursor's position: `false` means changes may be lost and the watch must start over.
    /// A node the cursor does not name has no gap.
    pub fn gap(&self, node: &str, oldest: u64) -> bool {
        self.cursor.position(node).is_some_and(|consumed| consumed.saturating_add(1) < oldest)
    }

    /// Learns from entries at or before the cursor's position in their node's feed (the
    /// look-back after a resume): they were consumed, so a later copy of them is not news.
    pub fn seed<M>(&mut self, node: &str, entries: &[Entry<M>]) {
        let consumed = self.cursor.position(node).unwrap_or(0);
        for entry in entries.iter().filter(|entry| entry.seq <= consumed) {
            self.newer(&entry.key, entry.order());
        }
    }

    /// Takes the next entry of `node`'s feed: the event to send, or `None` when the entry is
    /// not news (an older or repeated change of its key) or was consumed already.
    pub fn accept<M>(&mut self, node: &str, entry: Entry<M>) -> Option<Event<M>> {
        self.take(node, entry.seq, &entry.key, entry.version, entry.kind)
            .then(|| Event { cursor: self.cursor.clone(), entry })
    }

    /// [`Merge::accept`] without building the entry: whether the change at `seq` of `node`'s
    /// feed is news; the cursor after it is then [`Merge::cursor`].
    pub fn take(&mut self, node: &str, seq: u64, key: &str, version: u64, kind: Kind) -> bool {
        if self.cursor.position(node).is_some_and(|consumed| seq <= consumed) {
            return false;
        }
        self.cursor.set(node, seq);
        self.newer(key, (version, kind == Kind::Expire))
    }

    /// Records `order` as seen of `key`; whether it is newer than anything seen of the key.
    fn newer(&mut self, key: &str, order: (u64, bool)) -> bool {
        self.touches += 1;
        let touched = self.touches;
        match self.seen.get_mut(key) {
            Some((seen, at)) => {
                *at = touched;
                if order <= *seen {
                    return false;
                }
                *seen = order;
            }
            None => {
                if self.seen.len() >= self.capacity {
                    self.forget_oldest_half();
                }
                self.seen.insert(key.to_string(), (order, touched));
            }
        }
        true
    }

    fn forget_oldest_half(&mut self) {
        let mut ages: Vec<u64> = self.seen.values().map(|(_, at)| *at).collect();
        let middle = ages.len() / 2;
        let (_, threshold, _) = ages.select_nth_unstable(middle);
        let threshold = *threshold;
        self.seen.retain(|_, (_, at)| *at > threshold);
    }
}

#[cfg(test)]
mod tests;
