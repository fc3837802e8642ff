//! Authentication shared by the services.
//!
//! - [`cluster`]: the cluster-secret extractor guarding internal endpoints.
//! - [`password`]: argon2id password hashing.
//! - [`jwt`]: HS256 access tokens.

pub mod cluster;
pub mod jwt;
pub mod password;
