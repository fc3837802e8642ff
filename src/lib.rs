//! ydht — a multi-tenant, replicated key-value store with a terminal-first
//! operator console. One binary is both the servers and the client.
//!
//! # Layout
//!
//! - [`cli`]: the clap command tree and dispatch; `src/bin/ydht.rs` only calls it.
//! - [`config`]: shared server settings (data dir, bind address, secrets files).
//! - [`error`]: the JSON API error every service returns, and CLI exit codes.
//! - [`shutdown`]: one shutdown signal shared by every task of a process.
//! - [`sync`]: the one lock-poisoning policy (`locked()`, `reading()`, `writing()`).
//! - [`extract`]: JSON body / path / query extractors whose rejections are JSON 400s.
//! - [`server`]: binding listeners with actionable errors and serving routers.
//! - [`tls`]: HTTPS serving (rustls) and trusting a private CA in every HTTP client.
//! - [`proto`]: wire types and header names shared by daemons and the client.
//! - [`auth`]: the cluster-secret extractor, argon2id passwords, HS256 access tokens.
//! - [`duration`]: the `30s` / `1h30m` duration syntax used by TTLs and flags.
//! - [`ring`]: FNV-1a consistent hashing with virtual nodes (placement).
//! - [`membership`]: member states, the old/new rings of a membership change, the segments that move.
//! - [`hlc`]: the hybrid logical clock that versions every write.
//! - [`paxos`]: per-key single-decree Paxos for conditional writes, as a pure state machine.
//! - [`precondition`]: `ETag`, `If-Match` and `If-None-Match` over record versions.
//! - [`log_throttle`]: warnings that repeat per request, one line per interval with a count.
//! - [`watch`]: change streams: the node feeds merged into one resumable stream per watch.
//! - [`wal`]: the storage node's write-ahead log: record codec, group commit, recovery, snapshots.
//! - [`wire`]: the binary bodies between services (node batches and reads, replicator jobs).
//! - [`coalesce`]: batching concurrent requests (replication jobs, replica copies) into one request each.
//! - [`fanout`]: calling several nodes at once and stopping at a quorum (strong writes, reads, Paxos).
//! - [`nodeclient`]: a typed client for a storage node's internal API (put/delete/get/health/keys).
//! - [`nodewriter`]: batched writes to storage nodes, for the gateway and the replicator.
//! - [`daemon`]: the services behind `ydht serve …` (one module each).
//! - [`units`]: human-readable byte counts for tables and pages.
//! - [`urlpath`]: a key as one percent-encoded URL path segment (every client uses it; `.`/`..` refused).
//! - [`tui`]: `ydht top`, the live operator dashboard (state, update, poller, ui).
//! - [`man`]: the hidden `ydht man` command (clap_mangen manual pages).
//! - [`client`]: the client commands (`signup`, `login`, `apikey`, `kv`, `status`, …) over HTTP.
//! - [`bench`]: `ydht bench`, the load generator (gateway, one node, or etcd for comparisons).

pub mod auth;
pub mod bench;
pub mod cli;
pub mod client;
pub mod coalesce;
pub mod completions;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod error;
pub mod exposition;
pub mod extract;
pub mod fanout;
pub mod hlc;
pub mod log_throttle;
pub mod man;
pub mod membership;
pub mod nodeclient;
pub mod nodewriter;
pub mod paxos;
pub mod precondition;
pub mod proto;
pub mod requestid;
pub mod ring;
pub mod server;
pub mod shutdown;
pub mod sync;
pub mod tls;
pub mod tui;
pub mod units;
pub mod urlpath;
pub mod wal;
pub mod watch;
pub mod wire;
