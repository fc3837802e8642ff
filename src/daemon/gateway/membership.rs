//! The gateway's side of online membership changes.
//!
//! - [`watch_loop`]: seeds the control plane (the users service) with
//!   `YDHT_NODES` if it has no members yet, then long-polls
//!   `GET /membership` and swaps in a new [`Placement`] at every version.
//!   Until the users service answers, the static `YDHT_NODES` ring serves.
//! - The operator and node endpoints (`/membership…`, cluster secret) are
//!   forwarded to the users service; `join` without an id asks the node's
//!   `/health` for it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use reqwest::Method;

use super::nodes::describe;
use super::placement::Placement;
use super::state::GatewayState;
use crate::auth::cluster::Internal;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::membership::{JoinRequest, LeaveRequest, MAX_WAIT, Membership, MembershipQuery, SeedRequest};
use crate::proto::CLUSTER_SECRET_HEADER;
use crate::shutdown::Shutdown;

/// How long a watcher's long-poll waits at the users service.
const WATCH_WAIT: Duration = Duration::from_secs(10);
/// Pause after a failed call to the users service.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Largest body of a membership request.
const MAX_BODY: usize = 64 * 1024;

impl GatewayState {
    async fn users_call<T: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        query: Option<MembershipQuery>,
        body: Option<&T>,
    ) -> Result<reqwest::Response, ApiError> {
        let url = format!("{}/{path}", self.config.users_url);
        let mut request = crate::requestid::propagate(self.http.request(method, url))
            .header(CLUSTER_SECRET_HEADER, self.config.cluster_secret.expose())
            .timeout(
                Duration::from_secs(query.and_then(|query| query.wait).unwrap_or(0)).min(MAX_WAIT)
                    + Duration::from_secs(5),
            );
        if let Some(query) = query {
            request = request.query(&query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.map_err(|error| {
            ApiError::unavailable(format!(
                "the users service (the membership store) at {} is unreachable: {}; start it or fix YDHT_USERS_URL",
                self.config.users_url,
                describe(error)
            ))
        })
    }

    /// Calls the users service and decodes the membership it answers with (errors passed through).
    async fn membership_call<T: serde::Serialize>(
        &self,
        method: Method,
        path: &str,
        query: Option<MembershipQuery>,
        body: Option<&T>,
    ) -> Result<Membership, ApiError> {
        let response = self.users_call(method, path, query, body).await?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|value| value.get("error").and_then(|error| error.as_str()).map(str::to_string))
                .unwrap_or_else(|| format!("the users service answered {status}"));
            let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            return Err(ApiError::new(status, message));
        }
        serde_json::from_str(&text).map_err(|error| {
            ApiError::new(StatusCode::BAD_GATEWAY, format!("the users service sent an unreadable membership: {error}"))
        })
    }

    /// Offers `YDHT_NODES` as the initial membership (once): it must come before any node's own
    /// join, or the first node to register would make up the cluster alone.
    async fn seed(&self) -> Result<Membership, ApiError> {
        let seed = SeedRequest { nodes: self.config.nodes.clone() };
        let membership = self.membership_call(Method::POST, "membership/seed", None, Some(&seed)).await?;
        self.seeded.store(true, Ordering::Release);
        Ok(membership)
    }

    /// The current membership with fresh progress reports, straight from the users service.
    pub async fn fresh_membership(&self) -> Result<Membership, ApiError> {
        self.membership_call::<()>(Method::GET, "membership", None, None).await
    }

    /// Builds and swaps in the placement of `membership` (ignored while it has no members).
    pub fn apply_membership(&self, membership: &Membership) {
        if membership.members.is_empty() {
            return;
        }
        let current = self.placement();
        if current.layout().version == membership.version {
            return;
        }
        let placement =
            Placement::of_membership(membership, self.config.vnodes, self.config.replicas, Some(current.as_ref()));
        let states: Vec<String> =
            membership.members.iter().map(|member| format!("{}={}", member.id, member.state.as_str())).collect();
        tracing::info!(version = membership.version, members = %states.join(","), "gateway: ring updated");
        self.topology.swap(placement);
    }
}

/// Seeds the membership from `YDHT_NODES`, then follows it until shutdown.
pub async fn watch_loop(state: GatewayState, shutdown: Shutdown) {
    let mut known: Option<u64> = None;
    loop {
        let call = async {
            match known {
                None => state.seed().await,
                Some(after) => {
                    let query = MembershipQuery { after: Some(after), wait: Some(WATCH_WAIT.as_secs()) };
                    state.membership_call::<()>(Method::GET, "membership", Some(query), None).await
                }
            }
        };
        let outcome = tokio::select! {
            () = shutdown.wait() => return,
            outcome = call => outcome,
        };
        match outcome {
            Ok(membership) => {
                state.apply_membership(&membership);
                known = Some(membership.version);
                continue;
            }
            Err(error) => tracing::debug!(error = %error.message, "gateway: membership not available yet"),
        }
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(RETRY_DELAY) => {}
        }
    }
}

fn json_response(membership: Membership) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(membership)).into_response()
}

/// `GET /membership?after=V&wait=S` (cluster secret).
pub async fn get(
    _: Internal,
    State(state): State<GatewayState>,
    query: Result<Query<MembershipQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    // A long poll (`wait`) must not hold the gateway's shutdown for its whole wait: when the
    // gateway stops, the node following it gets a 503 at once and retries elsewhere or later.
    let call = state.membership_call::<()>(Method::GET, "membership", Some(query), None);
    let membership = tokio::select! {
        outcome = call => outcome?,
        () = state.stopping.wait() => {
            return Err(ApiError::unavailable("the gateway is shutting down; ask again in a moment"));
        }
    };
    state.apply_membership(&membership);
    Ok(json_response(membership))
}

/// `POST /membership/join {url, id?}` (cluster secret).
pub async fn join(
    _: Internal,
    State(state): State<GatewayState>,
    ApiJson(mut request): ApiJson<JoinRequest, MAX_BODY>,
) -> Result<Response, ApiError> {
    if !state.seeded.load(Ordering::Acquire) {
        state.seed().await?;
    }
    request.url = request.url.trim().trim_end_matches('/').to_string();
    if !reqwest::Url::parse(&request.url).is_ok_and(|url| matches!(url.scheme(), "http" | "https")) {
        return Err(ApiError::bad_request(format!("invalid node URL {:?}; expected http(s)://host:port", request.url)));
    }
    // The gateway must reach the node, and the node must follow the membership to take part.
    let health = state.nodes.health(&request.url).await.map_err(|error| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the gateway cannot reach the node at {}: {error}; check the URL and that it runs", request.url),
        )
    })?;
    if !health.follows_membership {
        return Err(ApiError::conflict(format!(
            "the node at {} does not follow the cluster membership; restart it with --join GATEWAY_URL (YDHT_JOIN), \
             which also registers it",
            request.url
        )));
    }
    match request.id.as_deref().map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) if id != health.node_id => {
            return Err(ApiError::bad_request(format!(
                "the node at {} is {}, not {id}; pass its own id (or none)",
                request.url, health.node_id
            )));
        }
        _ => request.id = Some(health.node_id),
    }
    let membership = state.membership_call(Method::POST, "membership/join", None, Some(&request)).await?;
    state.apply_membership(&membership);
    Ok(json_response(membership))
}

/// `POST /membership/leave {id, force}` (cluster secret).
pub async fn leave(
    _: Internal,
    State(state): State<GatewayState>,
    ApiJson(request): ApiJson<LeaveRequest, MAX_BODY>,
) -> Result<Response, ApiError> {
    let membership = state.membership_call(Method::POST, "membership/leave", None, Some(&request)).await?;
    state.apply_membership(&membership);
    Ok(json_response(membership))
}

/// `POST /membership/progress` (cluster secret): a node's rebalancing report.
pub async fn progress(
    _: Internal,
    State(state): State<GatewayState>,
    ApiJson(report): ApiJson<crate::membership::ProgressReport, MAX_BODY>,
) -> Result<Response, ApiError> {
    let membership = state.membership_call(Method::POST, "membership/progress", None, Some(&report)).await?;
    state.apply_membership(&membership);
    Ok(json_response(membership))
}
