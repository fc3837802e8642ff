//! `ydht kv locate KEY`: where a key lives. Computes the key's owners with the
//! gateway's ring (from `GET /cluster`) and asks each owner which version it
//! holds (`GET /store/{user_id}/{key}` with the cluster secret). The other
//! nodes of the key's preference list are asked too and shown as `fallback`
//! when they hold something (a write handed off while an owner was down).

use std::time::Duration;

use clap::Args;
use futures_util::future::join_all;
use reqwest::Method;
use serde::Serialize;

use super::api::{User, decode, root_cause};
use super::output::{format_unix_millis, format_version, human_bytes, print_json, print_line, table};
use super::{Context, FullClient, OperatorArgs, cluster};
use crate::error::{Exit, exit};
use crate::nodeclient::{NodeClient, NodeError};
use crate::wire::read::Lookup;

/// How long one node may take to answer.
const NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `kv locate`.
#[derive(Args, Debug)]
pub struct LocateArgs {
    /// The key
    pub key: String,

    /// Where the cluster secret comes from.
    #[command(flatten)]
    pub operator: OperatorArgs,

    /// The gateway, the users service (for the key's tenant), the API key and the config dir.
    #[command(flatten)]
    pub client: FullClient,
}

/// What one node holds for a key (as `kv locate` reports it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NodeRecord {
    /// A live value.
    Live {
        /// Its version.
        version: u64,
        /// Its size in bytes.
        size: u64,
        /// Its expiry (Unix ms), if any.
        expires_at: Option<u64>,
    },
    /// A delete marker.
    Tombstone {
        /// The delete's version.
        version: u64,
    },
    /// Nothing at all.
    Missing,
}

impl NodeRecord {
    fn from_read(read: Lookup) -> Self {
        match read {
            Lookup::Found(stored) => {
                Self::Live { version: stored.version, size: stored.value.len() as u64, expires_at: stored.expires_at }
            }
            Lookup::Tombstone(version) => Self::Tombstone { version },
            Lookup::Missing | Lookup::Expired(_) => Self::Missing,
        }
    }
}

/// One owner of the key and what it holds.
#[derive(Debug, Clone, Serialize)]
pub struct OwnerReport {
    /// `primary`, `replica`, or `fallback` (a non-owner that holds the key).
    pub role: &'static str,
    /// Node id.
    pub id: String,
    /// Node URL.
    pub url: String,
    /// Whether the gateway considers the node up.
    pub healthy: bool,
    /// What it holds, when it answered.
    pub record: Option<NodeRecord>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// The whole answer of `kv locate`.
#[derive(Debug, Clone, Serialize)]
pub struct LocateReport {
    /// The key as the tenant names it.
    pub key: String,
    /// The key as the nodes store it: `{user_id}/{key}`.
    pub stored_as: String,
    /// The tenant.
    pub user_id: i64,
    /// Owners in preference order (primary first), then fallbacks that hold the key.
    pub owners: Vec<OwnerReport>,
    /// The newest live version among the nodes shown.
    pub newest_version: Option<u64>,
}

impl LocateArgs {
    /// Finds and queries the key's owners.
    pub async fn run(self, context: &Context) -> anyhow::Result<()> {
        let secret = self.operator.require_cluster_secret("ydht kv locate")?;
        let user_id = tenant_id(context, secret.expose()).await?;
        let view = cluster::fetch(context, &secret).await?;
        let stored_as = format!("{user_id}/{}", self.key);
        let ring = view.ring();
        let preference = ring.preference_list(stored_as.as_bytes());
        if preference.is_empty() {
            return Err(Exit::new(exit::UNAVAILABLE, "the gateway reports no storage nodes on its ring").into());
        }
        let nodes = NodeClient::new(secret.clone(), NODE_TIMEOUT);
        let reports = join_all(preference.iter().enumerate().map(|(index, node)| {
            let (stored_as, nodes, view) = (&stored_as, &nodes, &view);
            async move {
                let role = match index {
                    0 => "primary",
                    index if index < view.replicas => "replica",
                    _ => "fallback",
                };
                let healthy = view.member(&node.id).is_none_or(|member| member.healthy);
                let (record, error) = match nodes.get(&node.url, stored_as).await {
                    Ok(read) => (Some(NodeRecord::from_read(read)), None),
                    Err(NodeError::Unreachable { source, .. }) => (None, Some(root_cause(&*source))),
                    Err(error) => (None, Some(error.to_string())),
                };
                OwnerReport { role, id: node.id.clone(), url: node.url.clone(), healthy, record, error }
            }
        }))
        .await;
        let reports: Vec<OwnerReport> = reports.into_iter().filter(is_shown).collect();
        let newest_version = reports
            .iter()
            .filter_map(|report| match report.record {
                Some(NodeRecord::Live { version, .. }) => Some(version),
                _ => None,
            })
            .max();
        let report = LocateReport { key: self.key, stored_as, user_id, owners: reports, newest_version };
        if context.json() {
            print_json(&report)?;
        } else {
            print_line(&format!("{} is stored as {:?} on:", report.key, report.stored_as))?;
            print_line(&render(&report))?;
        }
        if report.newest_version.is_none() {
            return Err(
                Exit::new(exit::NOT_FOUND, format!("key not found on any of its owners: {}", report.key)).into()
            );
        }
        Ok(())
    }
}

/// Owners are always shown; past them, only nodes that hold something (a write
/// handed off while an owner was down).
fn is_shown(report: &OwnerReport) -> bool {
    report.role != "fallback" || report.record.as_ref().is_some_and(|record| *record != NodeRecord::Missing)
}

/// The tenant whose keys `kv` commands address: the API key's owner (asked with
/// the cluster secret), else the logged-in user.
async fn tenant_id(context: &Context, secret: &str) -> anyhow::Result<i64> {
    if let Ok(api_key) = context.api_key() {
        return match context.api.validate_key(&context.users, secret, &api_key).await {
            Ok(validated) => Ok(validated.user_id),
            Err(error) if crate::error::exit_code_of(&error) == exit::AUTH => Err(Exit::new(
                exit::AUTH,
                "the users service does not accept the API key (or the cluster secret); check --api-key and --cluster-secret",
            )
            .into()),
            Err(error) => Err(error),
        };
    }
    let response = context.authorized(|token| context.api.bearer(Method::GET, &context.users, &["me"], token)).await?;
    let user: User = decode(&context.users, response).await?;
    Ok(user.id)
}

/// The owners table.
pub fn render(report: &LocateReport) -> String {
    let mut rows = table(["ROLE", "NODE", "URL", "HEALTH", "HOLDS", "VERSION", "SIZE", "EXPIRES"]);
    for owner in &report.owners {
        let health = if owner.healthy { "up" } else { "DOWN" }.to_string();
        let (holds, version, size, expires) = match (&owner.record, &owner.error) {
            (Some(NodeRecord::Live { version, size, expires_at }), _) => (
                if Some(*version) == report.newest_version { "value (newest)" } else { "value (stale)" }.to_string(),
                format_version(*version),
                human_bytes(*size),
                expires_at.map_or_else(|| "-".to_string(), format_unix_millis),
            ),
            (Some(NodeRecord::Tombstone { version }), _) => {
                ("deleted".to_string(), format_version(*version), "-".to_string(), "-".to_string())
            }
            (Some(NodeRecord::Missing), _) => ("nothing".to_string(), "-".into(), "-".into(), "-".into()),
            (None, error) => (
                format!("no answer: {}", error.as_deref().unwrap_or("unknown error")),
                "-".into(),
                "-".into(),
                "-".into(),
            ),
        };
        rows.add_row([
            owner.role.to_string(),
            owner.id.clone(),
            owner.url.clone(),
            health,
            holds,
            version,
            size,
            expires,
        ]);
    }
    rows.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_marks_newest_stale_deleted_and_unreachable() {
        let owner = |id: &str, record: Option<NodeRecord>, error: Option<&str>| OwnerReport {
            role: if id == "node-1" { "primary" } else { "replica" },
            id: id.into(),
            url: format!("http://{id}"),
            healthy: error.is_none(),
            record,
            error: error.map(str::to_string),
        };
        let report = LocateReport {
            key: "k".into(),
            stored_as: "7/k".into(),
            user_id: 7,
            owners: vec![
                owner("node-1", Some(NodeRecord::Live { version: 20, size: 3, expires_at: None }), None),
                owner("node-2", Some(NodeRecord::Live { version: 10, size: 3, expires_at: None }), None),
                owner("node-3", None, Some("connection refused")),
                owner("node-4", Some(NodeRecord::Tombstone { version: 5 }), None),
            ],
            newest_version: Some(20),
        };
        let fallback = |record| OwnerReport { role: "fallback", ..owner("node-5", record, None) };
        assert!(is_shown(&report.owners[2]), "owners are shown even when unreachable");
        assert!(is_shown(&fallback(Some(NodeRecord::Tombstone { version: 1 }))));
        assert!(!is_shown(&fallback(Some(NodeRecord::Missing))));
        assert!(!is_shown(&fallback(None)));
        let text = render(&report);
        assert!(text.contains("value (newest)") && text.contains("value (stale)"));
        assert!(text.contains("DOWN") && text.contains("connection refused"));
        assert!(text.contains("deleted"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["owners"][0]["record"]["state"], "live");
        assert_eq!(json["owners"][3]["record"]["state"], "tombstone");
    }
}
