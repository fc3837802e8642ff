//! The binary bodies that cross between services, in one layer that every
//! daemon and the node client depend on and that depends on none of them (only
//! on [`crate::wal::record`], whose record frame they reuse):
//!
//! - [`batch`]: `POST /batch` to a node: many records, one WAL sync.
//! - [`read`]: `POST /read` to a node: many keys in, what the node holds for each out
//!   ([`read::Lookup`], also what the node's store answers).
//! - [`jobs`]: `POST /jobs` to the replicator: replication jobs with their targets.
//!
//! The JSON shapes live in [`crate::proto`].

pub mod batch;
pub mod jobs;
pub mod read;
