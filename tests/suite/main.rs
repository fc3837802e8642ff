//! The integration suite: one test binary (linked once) whose modules drive the
//! real `ydht` binary, real HTTP servers and real databases.
//!
//! Shared helpers: [`common`] (single services and `serve all` on port 0, accounts,
//! polling), [`cli_support`] (running the CLI), [`node_process`] and [`in_process`]
//! (one node as a process or as an in-process server), [`users_support`] (every
//! users test against SQLite and PostgreSQL) and [`chaos_support`] (proxies,
//! tmpfs, the linearizability checker). Every other module is one area's tests.

mod chaos_support;
mod cli_support;
mod common;
mod in_process;
mod node_process;
#[macro_use]
mod users_support;

mod anti_entropy;
mod backup;
mod batch;
mod bench;
mod chaos;
mod cli_flow;
mod cli_offline;
mod completions;
mod conditional;
mod deploy;
mod gateway_browser;
mod gateway_failures;
mod gateway_flow;
mod gateway_ratelimit;
mod hostile_input;
mod membership;
mod node_api;
mod node_durability;
mod openapi;
mod prometheus;
mod properties;
mod readme;
mod replicator;
mod replicator_nodes;
mod request_ids;
mod schemathesis;
mod security;
mod tls;
mod top;
mod users_api;
mod users_binary;
mod users_web_browser;
mod watch;
