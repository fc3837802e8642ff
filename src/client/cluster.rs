//! The operator view of the cluster: the gateway's `GET /cluster` (ring
//! members, replicas, virtual nodes, service URLs), read with the cluster
//! secret, which is found the way the servers find it.

use std::io::ErrorKind;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Context, OperatorArgs};
use crate::config::{CLUSTER_SECRET_FILE, Secret, default_data_dir};
use crate::error::{Exit, exit};
use crate::ring::{NodeInfo, Ring};

/// The gateway's `GET /cluster` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    /// The storage nodes on the ring.
    #[serde(alias = "nodes", alias = "ring")]
    pub members: Vec<Member>,
    /// Copies of each key (N).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Virtual nodes per physical node.
    #[serde(default = "default_vnodes")]
    pub vnodes: usize,
    /// The replicator's base URL.
    #[serde(default, alias = "replicator")]
    pub replicator_url: Option<String>,
    /// The users service's base URL.
    #[serde(default, alias = "users")]
    pub users_url: Option<String>,
}

fn default_replicas() -> usize {
    3
}

fn default_vnodes() -> usize {
    150
}

/// One storage node as the gateway sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    /// Its id, e.g. `node-1` (placement hashes it).
    pub id: String,
    /// Base URL of its internal API.
    pub url: String,
    /// Whether the gateway currently considers it up.
    #[serde(default = "up")]
    pub healthy: bool,
    /// Since when it is in its current state.
    #[serde(default)]
    pub since: Option<serde_json::Value>,
    /// Its share of the ring as primary (0–1).
    #[serde(default)]
    pub share: Option<f64>,
    /// Its membership state (`joining`, `active`, `leaving`, `down`); absent from older gateways.
    #[serde(default)]
    pub state: Option<String>,
}

fn up() -> bool {
    true
}

impl ClusterView {
    /// The ring the gateway places keys on (same ids, same virtual node count); during a
    /// membership change, the new ring (active and joining members).
    pub fn ring(&self) -> Ring {
        let nodes = self
            .members
            .iter()
            .filter(|member| member.state.as_deref().is_none_or(|state| matches!(state, "active" | "joining")))
            .map(|member| NodeInfo { id: member.id.clone(), url: member.url.clone() })
            .collect();
        Ring::new(nodes, self.vnodes)
    }

    /// The member with this id.
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|member| member.id == id)
    }
}

impl OperatorArgs {
    /// The cluster secret: `--cluster-secret` / `YDHT_CLUSTER_SECRET`, else the
    /// `cluster.secret` file of the data dir if it exists (never generated here).
    pub fn cluster_secret(&self) -> anyhow::Result<Option<Secret>> {
        if let Some(secret) = self.cluster_secret.as_ref().filter(|secret| !secret.trim().is_empty()) {
            return Ok(Some(Secret::new(secret.trim())));
        }
        let Some(path) = self.secret_path() else { return Ok(None) };
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Ok(Some(Secret::new(text.trim()))),
            Ok(_) => Ok(None),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
            Err(error) => Err(Exit::usage(format!(
                "cannot read the cluster secret from {}: {error}; pass --cluster-secret or set YDHT_CLUSTER_SECRET",
                path.display()
            ))
            .into()),
        }
    }

    /// The cluster secret, or a usage error saying where it was looked for.
    pub fn require_cluster_secret(&self, command: &str) -> anyhow::Result<Secret> {
        self.cluster_secret()?.ok_or_else(|| {
            let looked = self.secret_path().map_or_else(String::new, |path| format!(" (no {})", path.display()));
            Exit::usage(format!(
                "`{command}` needs the cluster secret{looked}; pass --cluster-secret, set YDHT_CLUSTER_SECRET, \
                 or point --data-dir at the cluster's data dir"
            ))
            .into()
        })
    }

    fn secret_path(&self) -> Option<PathBuf> {
        let dir = match &self.data_dir {
            Some(dir) => dir.clone(),
            None => default_data_dir().ok()?,
        };
        Some(dir.join(CLUSTER_SECRET_FILE))
    }
}

/// `GET /cluster` on the gateway; a refused secret is an auth error (exit 3).
pub async fn fetch(context: &Context, secret: &Secret) -> anyhow::Result<ClusterView> {
    context
        .api
        .get_json(&context.gateway, &["cluster"], Some(secret.expose()))
        .await
        .map_err(|error| secret_refused(context, error))
}

/// Turns the gateway's refusal of the cluster secret (exit 3) into advice on passing the right
/// one; any other error is returned as it is.
pub fn secret_refused(context: &Context, error: anyhow::Error) -> anyhow::Error {
    if crate::error::exit_code_of(&error) != exit::AUTH {
        return error;
    }
    Exit::new(
        exit::AUTH,
        format!(
            "the gateway at {} refused the cluster secret; pass the cluster's secret with --cluster-secret",
            context.gateway.display
        ),
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_comes_from_flag_then_data_dir_file() {
        let dir = tempfile::tempdir().unwrap();
        let args = OperatorArgs { cluster_secret: None, data_dir: Some(dir.path().to_path_buf()) };
        assert!(args.cluster_secret().unwrap().is_none());
        let error = args.require_cluster_secret("ydht kv locate").unwrap_err();
        assert_eq!(crate::error::exit_code_of(&error), exit::USAGE);
        assert!(error.to_string().contains("--cluster-secret"));
        assert!(!dir.path().join(CLUSTER_SECRET_FILE).exists(), "the client never generates a secret");
        std::fs::write(dir.path().join(CLUSTER_SECRET_FILE), "from-file\n").unwrap();
        assert_eq!(args.cluster_secret().unwrap().unwrap().expose(), "from-file");
        let args = OperatorArgs { cluster_secret: Some("from-flag".into()), ..args };
        assert_eq!(args.require_cluster_secret("x").unwrap().expose(), "from-flag");
    }

    #[test]
    fn cluster_view_builds_the_gateways_ring() {
        let view: ClusterView = serde_json::from_value(serde_json::json!({
            "members": [
                {"id": "node-1", "url": "http://127.0.0.1:1", "healthy": true, "share": 0.3, "vnodes": 150},
                {"id": "node-2", "url": "http://127.0.0.1:2", "healthy": false},
                {"id": "node-3", "url": "http://127.0.0.1:3"}
            ],
            "replicas": 2,
            "vnodes": 150,
            "replicator_url": "http://127.0.0.1:8085"
        }))
        .unwrap();
        let ring = view.ring();
        let reference = Ring::new(
            (1..=3).map(|i| NodeInfo { id: format!("node-{i}"), url: format!("http://127.0.0.1:{i}") }).collect(),
            150,
        );
        for key in ["1/a", "1/b", "7/user:123"] {
            assert_eq!(ring.owners(key.as_bytes(), view.replicas), reference.owners(key.as_bytes(), 2));
        }
        assert!(!view.member("node-2").unwrap().healthy);
        assert!(view.member("node-3").unwrap().healthy);
    }
}
