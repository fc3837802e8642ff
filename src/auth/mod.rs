//! Authentication shared by the services.
//!
//! - [`cluster`]: the cluster-secret extractor guarding internal endpoints.

pub mod cluster;
