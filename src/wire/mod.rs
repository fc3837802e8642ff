//! The binary bodies that cross between services, in one layer that every
//! daemon and the node client depend on and that depends on none of them (only
//! on [`crate::wal::record`], whose record frame they reuse):
//!
//! - [`batch`]: `POST /batch` to a node: many records, one WAL sync.
//! - [`read`]: `POST /read` to a node: many keys in, what the node holds for each out
//!   ([`read::Lookup`], also what the node's store answers).
//! - [`jobs`]: `POST /jobs` to the replicator: replication jobs with their targets.
//! - [`paxos`]: `POST /paxos` to a node: one message of a conditional write's
//!   Paxos round, and the acceptor state the node logs.
//!
//! The JSON shapes live in [`crate::proto`].

pub mod batch;
pub mod jobs;
pub mod paxos;
pub mod read;

use crate::wal::frame::{FrameError, HeaderError};

/// Why a binary body was refused; the text names what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Another kind of body, or another format version.
    #[error("not a ydht {body}: {source}")]
    Header {
        /// The body expected (`batch`, `jobs body`, `read request`, `read answer`).
        body: &'static str,
        /// What the header holds instead.
        source: HeaderError,
    },
    /// The body ends before a count field.
    #[error("the {body} ends before its {field}")]
    Short {
        /// The body (`batch`, `body`, `request`, `answer`).
        body: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// More records than a batch may carry.
    #[error("the {body} holds {count} {items}; the maximum is {max}")]
    TooMany {
        /// The body.
        body: &'static str,
        /// What it counts.
        items: &'static str,
        /// How many it claims.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A count out of its range.
    #[error("the {body} {verb} {count} {items}; it must {base} 1 to {max}")]
    Count {
        /// The body.
        body: &'static str,
        /// `holds` / `names`.
        verb: &'static str,
        /// `hold` / `name`.
        base: &'static str,
        /// What it counts.
        items: &'static str,
        /// How many it claims.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Fewer or more entries than the header or the request says.
    #[error("the {body} holds {found} {items} {expected}")]
    Mismatch {
        /// The body.
        body: &'static str,
        /// What it counts.
        items: &'static str,
        /// How many it holds.
        found: usize,
        /// What was expected (`but its header says 3`, `for 5 keys`).
        expected: String,
    },
    /// The body ends inside a record.
    #[error("the {body} ends inside a record at byte offset {at}")]
    CutRecord {
        /// The body.
        body: &'static str,
        /// Where the record starts.
        at: u64,
    },
    /// A damaged record frame.
    #[error("bad record at byte offset {at}: {reason}")]
    BadRecord {
        /// Where the frame starts.
        at: u64,
        /// What failed.
        reason: FrameError,
    },
    /// The body ends inside one of its items.
    #[error("{item} {index} ends inside {field} at byte offset {at}")]
    EndsInside {
        /// `job`.
        item: &'static str,
        /// Which one.
        index: usize,
        /// The field (`its targets`, `its write`).
        field: &'static str,
        /// Where the field starts.
        at: usize,
    },
    /// The body ends inside one of its items (no offset kept).
    #[error("the {body} ends inside {item} {index}")]
    EndsIn {
        /// The body.
        body: &'static str,
        /// `key` / `entry`.
        item: &'static str,
        /// Which one.
        index: usize,
    },
    /// A text field that is not UTF-8.
    #[error("{item} {index}: {field} is not UTF-8")]
    NotUtf8 {
        /// `job`, `key`, `entry`.
        item: &'static str,
        /// Which one.
        index: usize,
        /// The field.
        field: &'static str,
    },
    /// A job's write frame is damaged.
    #[error("job {index}: bad write at byte offset {at}: {reason}")]
    BadWrite {
        /// Which job.
        index: usize,
        /// Where the frame starts.
        at: usize,
        /// What failed.
        reason: FrameError,
    },
    /// An entry tag this version does not know.
    #[error("entry {index} has the unknown tag {tag}")]
    UnknownTag {
        /// Which entry.
        index: usize,
        /// The tag byte.
        tag: u8,
    },
    /// Bytes after the last item.
    #[error("{extra} bytes follow {last}")]
    Trailing {
        /// How many.
        extra: usize,
        /// `the last key`, `the last of the 3 jobs`, ….
        last: String,
    },
    /// A key too long for a read request.
    #[error("a {0}-byte key cannot be read")]
    KeyTooLong(usize),
}
