//! The control plane of online membership changes: the `cluster_members`
//! table, its version, and the internal endpoints gateways and nodes use
//! (all behind the cluster secret).
//!
//! | endpoint | what it does |
//! |---|---|
//! | `GET /membership?after=V&wait=S` | the membership; waits up to S s (≤ 25) for a version past V |
//! | `POST /membership/seed` | the gateway's `YDHT_NODES` become the membership if there is none |
//! | `POST /membership/join` | add a node as `joining` (as `active` when it is the first) |
//! | `POST /membership/leave` | `leaving` (its data moves away first), or `down` with `force` |
//! | `POST /membership/progress` | a node's rebalancing progress; the last "done" completes the change |
//!
//! Every change runs in one transaction that first bumps `cluster_state.version`
//! (which also serialises concurrent changes), then applies a [`plan`]. Watchers
//! wake through an in-process channel, PostgreSQL `NOTIFY ydht_membership`
//! (so every users-service instance hears every change) and a one-second poll.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::db::{Db, DbError, on_pool};
use super::extract::internal;
use super::state::{UsersState, now};
use crate::auth::cluster::Internal;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::membership::{
    JoinRequest, LeaveRequest, MAX_WAIT, Member, MemberState, Membership, MembershipQuery, ProgressReport,
    RebalanceProgress, SeedRequest,
};
use crate::ring::NodeInfo;
use crate::shutdown::Shutdown;

/// The PostgreSQL notification channel of membership changes.
pub const CHANNEL: &str = "ydht_membership";
/// How often the version is re-read, whatever notifications say.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Longest accepted node id and URL.
const MAX_ID_BYTES: usize = 64;
const MAX_URL_BYTES: usize = 512;

/// A row of `cluster_members`.
#[derive(Debug, Clone, sqlx::FromRow)]
struct MemberRow {
    id: String,
    url: String,
    state: String,
    updated_at: DateTime<Utc>,
    progress_version: Option<i64>,
    arcs_total: i64,
    arcs_done: i64,
    keys_moved: i64,
    done: bool,
}

impl MemberRow {
    fn into_member(self) -> Member {
        let progress = self.progress_version.map(|version| RebalanceProgress {
            version: version as u64,
            arcs_total: self.arcs_total as u64,
            arcs_done: self.arcs_done as u64,
            keys_moved: self.keys_moved as u64,
            done: self.done,
        });
        Member {
            state: MemberState::parse(&self.state).unwrap_or(MemberState::Down),
            id: self.id,
            url: self.url,
            since: self.updated_at,
            progress,
        }
    }
}

/// A requested membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Make these nodes the membership if there is none; update the URL of listed ids.
    Seed(Vec<NodeInfo>),
    /// Add a node (or move a known one to a new URL).
    Join(NodeInfo),
    /// Remove a node: `leaving`, or `down` when forced.
    Leave {
        /// The node id.
        id: String,
        /// It is gone for good.
        force: bool,
    },
    /// Finish the transition of this version if every new-ring member reported done.
    Complete(u64),
}

/// For logs: `seed node-1=http://…, node-2=http://…`, `join node-4=http://…`, `leave node-5 (forced)`.
impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let listed = |nodes: &[NodeInfo]| {
            nodes.iter().map(|node| format!("{}={}", node.id, node.url)).collect::<Vec<_>>().join(", ")
        };
        match self {
            Self::Seed(nodes) => write!(f, "seed {}", listed(nodes)),
            Self::Join(node) => write!(f, "join {}", listed(std::slice::from_ref(node))),
            Self::Leave { id, force } => write!(f, "leave {id}{}", if *force { " (forced)" } else { "" }),
            Self::Complete(version) => write!(f, "complete the change to version {version}"),
        }
    }
}

/// One row operation of a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOp {
    /// Add a member.
    Insert(NodeInfo, MemberState),
    /// Change a member's state.
    SetState(String, MemberState),
    /// Change a member's URL.
    SetUrl(String, String),
    /// Remove a member.
    Delete(String),
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// No such member.
    #[error("no member with id {0:?}; see `ydht cluster status` for the members")]
    NotFound(String),
    /// The change contradicts the current membership.
    #[error("{0}")]
    Conflict(String),
}

/// The row operations that apply `change` to `current` (the membership at version `version`).
/// An empty plan changes nothing (and bumps no version).
pub fn plan(change: &Change, current: &Membership) -> Result<Vec<RowOp>, ChangeError> {
    let members = &current.members;
    let url_owner = |url: &str| members.iter().find(|member| member.url == url);
    match change {
        Change::Seed(nodes) if members.is_empty() => {
            Ok(nodes.iter().map(|node| RowOp::Insert(node.clone(), MemberState::Active)).collect())
        }
        Change::Seed(nodes) => Ok(nodes
            .iter()
            .filter_map(|node| {
                let known = current.member(&node.id)?;
                let free = url_owner(&node.url).is_none();
                (known.url != node.url && free).then(|| RowOp::SetUrl(node.id.clone(), node.url.clone()))
            })
            .collect()),
        Change::Join(node) => {
            if let Some(other) = url_owner(&node.url).filter(|other| other.id != node.id) {
                return Err(ChangeError::Conflict(format!(
                    "{} is already the URL of member {}; remove that member first",
                    node.url, other.id
                )));
            }
            match current.member(&node.id) {
                Some(known) if matches!(known.state, MemberState::Leaving | MemberState::Down) => {
                    Err(ChangeError::Conflict(format!(
                        "node {} is {}; wait until it has been removed, then join it again",
                        node.id,
                        known.state.as_str()
                    )))
                }
                Some(known) if known.url == node.url => Ok(Vec::new()),
                Some(_) => Ok(vec![RowOp::SetUrl(node.id.clone(), node.url.clone())]),
                None if current.new_nodes().is_empty() => Ok(vec![RowOp::Insert(node.clone(), MemberState::Active)]),
                None => Ok(vec![RowOp::Insert(node.clone(), MemberState::Joining)]),
            }
        }
        Change::Leave { id, force } => {
            let Some(known) = current.member(id) else { return Err(ChangeError::NotFound(id.clone())) };
            match known.state {
                MemberState::Joining => Ok(vec![RowOp::Delete(id.clone())]),
                MemberState::Active if current.new_nodes().len() <= 1 => Err(ChangeError::Conflict(format!(
                    "{id} is the last active node; join another node before removing it"
                ))),
                MemberState::Active | MemberState::Leaving if *force => {
                    Ok(vec![RowOp::SetState(id.clone(), MemberState::Down)])
                }
                MemberState::Active => Ok(vec![RowOp::SetState(id.clone(), MemberState::Leaving)]),
                MemberState::Leaving | MemberState::Down => Ok(Vec::new()),
            }
        }
        Change::Complete(version) => {
            let (done, total) = current.rebalance_done();
            if current.version != *version || current.is_settled() || done < total {
                return Ok(Vec::new());
            }
            Ok(members
                .iter()
                .filter_map(|member| match member.state {
                    MemberState::Joining => Some(RowOp::SetState(member.id.clone(), MemberState::Active)),
                    MemberState::Leaving | MemberState::Down => Some(RowOp::Delete(member.id.clone())),
                    MemberState::Active => None,
                })
                .collect())
        }
    }
}

const SELECT_MEMBERS: &str = "SELECT id, url, state, updated_at, progress_version, arcs_total, arcs_done, \
                              keys_moved, done FROM cluster_members ORDER BY seq, id";

impl Db {
    /// The current membership.
    pub async fn membership(&self) -> Result<Membership, DbError> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let (version,): (i64,) =
                sqlx::query_as("SELECT version FROM cluster_state WHERE id = 1").fetch_one(&mut *tx).await?;
            let rows: Vec<MemberRow> = sqlx::query_as(SELECT_MEMBERS).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok(Membership { version: version as u64, members: rows.into_iter().map(MemberRow::into_member).collect() })
        })
    }

    /// The current membership version.
    pub async fn membership_version(&self) -> Result<u64, DbError> {
        let sql = "SELECT version FROM cluster_state WHERE id = 1";
        let (version,): (i64,) = on_pool!(self, |pool| sqlx::query_as(sql).fetch_one(pool).await)?;
        Ok(version as u64)
    }

    /// Applies `change` in one transaction; returns the membership after it and whether it changed.
    pub async fn change_membership(&self, change: &Change) -> Result<(Membership, bool), MembershipError> {
        let postgres = matches!(self, Db::Postgres(_));
        let changed = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            // Bumping first takes the write lock, so concurrent changes run one after the other.
            let (version,): (i64,) =
                sqlx::query_as("UPDATE cluster_state SET version = version + 1 WHERE id = 1 RETURNING version")
                    .fetch_one(&mut *tx)
                    .await?;
            let rows: Vec<MemberRow> = sqlx::query_as(SELECT_MEMBERS).fetch_all(&mut *tx).await?;
            let current = Membership {
                version: version as u64 - 1,
                members: rows.into_iter().map(MemberRow::into_member).collect(),
            };
            let ops = plan(change, &current)?;
            if ops.is_empty() {
                tx.rollback().await?;
                false
            } else {
                let at = now();
                for op in ops {
                    match op {
                        RowOp::Insert(node, state) => {
                            sqlx::query(
                                "INSERT INTO cluster_members (id, url, state, seq, created_at, updated_at) \
                                 VALUES ($1, $2, $3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM cluster_members), $4, $4)",
                            )
                            .bind(&node.id)
                            .bind(&node.url)
                            .bind(state.as_str())
                            .bind(at)
                            .execute(&mut *tx)
                            .await?;
                        }
                        RowOp::SetState(id, state) => {
                            sqlx::query("UPDATE cluster_members SET state = $1, updated_at = $2 WHERE id = $3")
                                .bind(state.as_str())
                                .bind(at)
                                .bind(&id)
                                .execute(&mut *tx)
                                .await?;
                        }
                        RowOp::SetUrl(id, url) => {
                            sqlx::query("UPDATE cluster_members SET url = $1, updated_at = $2 WHERE id = $3")
                                .bind(&url)
                                .bind(at)
                                .bind(&id)
                                .execute(&mut *tx)
                                .await?;
                        }
                        RowOp::Delete(id) => {
                            sqlx::query("DELETE FROM cluster_members WHERE id = $1")
                                .bind(&id)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                }
                if postgres {
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(CHANNEL)
                        .bind(version.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                true
            }
        });
        Ok((self.membership().await?, changed))
    }

    /// Records a node's progress if it is for the current version; returns whether it was.
    pub async fn record_progress(&self, report: &ProgressReport) -> Result<bool, DbError> {
        let progress = &report.progress;
        let clamp = |value: u64| value.min(i64::MAX as u64) as i64;
        let sql = "UPDATE cluster_members SET progress_version = $1, arcs_total = $2, arcs_done = $3, \
                   keys_moved = $4, done = $5 \
                   WHERE id = $6 AND $1 = (SELECT version FROM cluster_state WHERE id = 1)";
        let updated = on_pool!(self, |pool| sqlx::query(sql)
            .bind(clamp(progress.version))
            .bind(clamp(progress.arcs_total))
            .bind(clamp(progress.arcs_done))
            .bind(clamp(progress.keys_moved))
            .bind(progress.done)
            .bind(&report.node_id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(updated > 0)
    }
}

/// A failed membership change.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Refused.
    #[error(transparent)]
    Refused(#[from] ChangeError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for MembershipError {
    fn from(error: sqlx::Error) -> Self {
        Self::Db(DbError::Sqlx(error))
    }
}

impl From<MembershipError> for ApiError {
    fn from(error: MembershipError) -> Self {
        match error {
            MembershipError::Refused(ChangeError::NotFound(id)) => {
                ApiError::not_found(ChangeError::NotFound(id).to_string())
            }
            MembershipError::Refused(ChangeError::Conflict(message)) => ApiError::conflict(message),
            MembershipError::Db(error) => internal(error),
        }
    }
}

/// The latest membership version this process knows of; watchers wait on it.
#[derive(Debug, Clone)]
pub struct MembershipWatch(watch::Sender<u64>);

impl Default for MembershipWatch {
    fn default() -> Self {
        Self(watch::channel(0).0)
    }
}

impl MembershipWatch {
    /// Raises the known version to `version` (never lowers it).
    pub fn saw(&self, version: u64) {
        self.0.send_if_modified(|known| {
            let newer = version > *known;
            if newer {
                *known = version;
            }
            newer
        });
    }

    /// Waits until the known version passes `after`, or `wait` elapses.
    pub async fn wait_past(&self, after: u64, wait: Duration) {
        let mut receiver = self.0.subscribe();
        let _ = tokio::time::timeout(wait, receiver.wait_for(|version| *version > after)).await;
    }
}

/// Follows the version until shutdown: PostgreSQL notifications when available, and a poll every second.
pub async fn follow(db: Db, watch: MembershipWatch, shutdown: Shutdown) {
    let mut listener = match &db {
        Db::Postgres(pool) => match PgListener::connect_with(pool).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => Some(listener),
                Err(error) => {
                    tracing::warn!(%error, "users: cannot LISTEN for membership changes; polling instead");
                    None
                }
            },
            Err(error) => {
                tracing::warn!(%error, "users: cannot LISTEN for membership changes; polling instead");
                None
            }
        },
        Db::Sqlite(_) => None,
    };
    loop {
        let notified = async {
            match listener.as_mut() {
                Some(listener) => listener.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.wait() => return,
            note = notified => {
                match note {
                    // Only a hint: the channel is shared by every schema (and cluster) in the database, so
                    // its payload may be another one's version; read this one's below.
                    Ok(_) => {}
                    // The listener reconnects on its next receive; meanwhile the poll below covers.
                    Err(error) => {
                        tracing::debug!(%error, "users: membership notifications interrupted");
                        tokio::time::sleep(POLL_INTERVAL).await;
                    }
                }
            }
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        match db.membership_version().await {
            Ok(version) => watch.saw(version),
            Err(error) => tracing::debug!(%error, "users: cannot read the membership version"),
        }
    }
}

fn check_node(node: &NodeInfo) -> Result<(), ApiError> {
    let id_ok = !node.id.is_empty()
        && node.id.len() <= MAX_ID_BYTES
        && node.id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !id_ok {
        return Err(ApiError::bad_request(format!(
            "invalid node id {:?}; use up to {MAX_ID_BYTES} letters, digits, '-', '_' or '.'",
            node.id
        )));
    }
    let url_ok = node.url.len() <= MAX_URL_BYTES
        && reqwest::Url::parse(&node.url).is_ok_and(|url| matches!(url.scheme(), "http" | "https"));
    if !url_ok {
        return Err(ApiError::bad_request(format!("invalid node URL {:?}; expected http(s)://host:port", node.url)));
    }
    Ok(())
}

fn normalized(node: &NodeInfo) -> NodeInfo {
    NodeInfo { id: node.id.trim().to_string(), url: node.url.trim().trim_end_matches('/').to_string() }
}

async fn apply(state: &UsersState, change: Change) -> Result<Json<Membership>, ApiError> {
    let (membership, changed) = state.db.change_membership(&change).await?;
    if changed {
        tracing::info!(version = membership.version, %change, "users: membership changed");
    }
    state.membership.saw(membership.version);
    Ok(Json(membership))
}

/// `GET /membership?after=V&wait=S`.
pub async fn get(
    _: Internal,
    State(state): State<UsersState>,
    ApiQuery(query): ApiQuery<MembershipQuery>,
) -> Result<Json<Membership>, ApiError> {
    if let (Some(after), Some(wait)) = (query.after, query.wait) {
        let wait = Duration::from_secs(wait).min(MAX_WAIT);
        if state.db.membership_version().await.map_err(internal)? <= after {
            state.membership.wait_past(after, wait).await;
        }
    }
    let membership = state.db.membership().await.map_err(internal)?;
    state.membership.saw(membership.version);
    Ok(Json(membership))
}

/// `POST /membership/seed`.
pub async fn seed(
    _: Internal,
    State(state): State<UsersState>,
    ApiJson(request): ApiJson<SeedRequest>,
) -> Result<Json<Membership>, ApiError> {
    let nodes: Vec<NodeInfo> = request.nodes.iter().map(normalized).collect();
    for (index, node) in nodes.iter().enumerate() {
        check_node(node)?;
        if nodes[..index].iter().any(|other| other.id == node.id || other.url == node.url) {
            return Err(ApiError::bad_request(format!("node {} ({}) is listed twice", node.id, node.url)));
        }
    }
    apply(&state, Change::Seed(nodes)).await
}

/// `POST /membership/join`.
pub async fn join(
    _: Internal,
    State(state): State<UsersState>,
    ApiJson(request): ApiJson<JoinRequest>,
) -> Result<Json<Membership>, ApiError> {
    let Some(id) = request.id else {
        return Err(ApiError::bad_request("the node id is missing; send {\"url\": …, \"id\": …}"));
    };
    let node = normalized(&NodeInfo { id, url: request.url });
    check_node(&node)?;
    apply(&state, Change::Join(node)).await
}

/// `POST /membership/leave`.
pub async fn leave(
    _: Internal,
    State(state): State<UsersState>,
    ApiJson(request): ApiJson<LeaveRequest>,
) -> Result<Json<Membership>, ApiError> {
    apply(&state, Change::Leave { id: request.id.trim().to_string(), force: request.force }).await
}

/// `POST /membership/progress`: records the report (ignored if it is for an older version, which
/// the answer's version shows) and completes the transition when this was the last node to finish.
pub async fn progress(
    _: Internal,
    State(state): State<UsersState>,
    ApiJson(report): ApiJson<ProgressReport>,
) -> Result<Json<Membership>, ApiError> {
    let progress = report.progress;
    if progress.arcs_done > progress.arcs_total {
        return Err(ApiError::bad_request("arcs_done is larger than arcs_total"));
    }
    let recorded = state.db.record_progress(&report).await.map_err(internal)?;
    if recorded && progress.done {
        return apply(&state, Change::Complete(progress.version)).await;
    }
    let membership = state.db.membership().await.map_err(internal)?;
    Ok(Json(membership))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: usize) -> NodeInfo {
        NodeInfo { id: format!("node-{i}"), url: format!("http://n{i}") }
    }

    fn with(states: &[MemberState]) -> Membership {
        Membership {
            version: 4,
            members: states
                .iter()
                .enumerate()
                .map(|(i, state)| Member {
                    id: node(i + 1).id,
                    url: node(i + 1).url,
                    state: *state,
                    since: Utc::now(),
                    progress: None,
                })
                .collect(),
        }
    }

    use MemberState::{Active, Down, Joining, Leaving};

    #[test]
    fn seeding_fills_an_empty_membership_and_only_moves_urls_later() {
        assert_eq!(Change::Seed(vec![node(1), node(2)]).to_string(), "seed node-1=http://n1, node-2=http://n2");
        assert_eq!(Change::Leave { id: "node-5".into(), force: true }.to_string(), "leave node-5 (forced)");
        let seeded = plan(&Change::Seed(vec![node(1), node(2)]), &Membership::default()).unwrap();
        assert_eq!(seeded, vec![RowOp::Insert(node(1), Active), RowOp::Insert(node(2), Active)]);
        let current = with(&[Active, Active]);
        let moved = NodeInfo { id: "node-2".into(), url: "http://new".into() };
        assert_eq!(
            plan(&Change::Seed(vec![node(1), moved, node(9)]), &current).unwrap(),
            vec![RowOp::SetUrl("node-2".into(), "http://new".into())]
        );
    }

    #[test]
    fn joins_are_idempotent_and_refuse_taken_urls() {
        let current = with(&[Active, Active, Active]);
        assert_eq!(plan(&Change::Join(node(4)), &current).unwrap(), vec![RowOp::Insert(node(4), Joining)]);
        assert!(plan(&Change::Join(node(2)), &current).unwrap().is_empty());
        let thief = NodeInfo { id: "node-9".into(), url: node(1).url };
        assert!(matches!(plan(&Change::Join(thief), &current), Err(ChangeError::Conflict(_))));
        assert_eq!(plan(&Change::Join(node(1)), &Membership::default()).unwrap(), vec![RowOp::Insert(node(1), Active)]);
        let leaving = with(&[Active, Leaving]);
        assert!(matches!(plan(&Change::Join(node(2)), &leaving), Err(ChangeError::Conflict(_))));
    }

    #[test]
    fn leaving_marks_the_member_and_keeps_the_last_one() {
        let current = with(&[Active, Active, Joining]);
        let leave = |id: &str, force| Change::Leave { id: id.into(), force };
        assert_eq!(plan(&leave("node-1", false), &current).unwrap(), vec![RowOp::SetState("node-1".into(), Leaving)]);
        assert_eq!(plan(&leave("node-1", true), &current).unwrap(), vec![RowOp::SetState("node-1".into(), Down)]);
        assert_eq!(plan(&leave("node-3", false), &current).unwrap(), vec![RowOp::Delete("node-3".into())]);
        assert!(matches!(plan(&leave("node-7", false), &current), Err(ChangeError::NotFound(_))));
        assert!(matches!(plan(&leave("node-1", false), &with(&[Active])), Err(ChangeError::Conflict(_))));
    }

    #[test]
    fn completion_waits_for_every_new_ring_member() {
        let mut current = with(&[Active, Active, Joining, Leaving]);
        assert!(plan(&Change::Complete(4), &current).unwrap().is_empty());
        for member in &mut current.members[..3] {
            member.progress = Some(RebalanceProgress { version: 4, done: true, ..Default::default() });
        }
        assert!(plan(&Change::Complete(3), &current).unwrap().is_empty(), "a stale version completes nothing");
        assert_eq!(
            plan(&Change::Complete(4), &current).unwrap(),
            vec![RowOp::SetState("node-3".into(), Active), RowOp::Delete("node-4".into())]
        );
    }
}
