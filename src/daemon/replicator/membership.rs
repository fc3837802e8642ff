//! The replicator's view of the cluster membership ([`crate::membership`]).
//!
//! Jobs name their targets by URL, as the gateway saw the ring when it wrote. A
//! node can leave the cluster while copies for it wait in the queue — for a node
//! removed with `ydht cluster leave --force`, for good. With `--users-url`, the
//! replicator follows the membership (long-polling the users service, as the
//! gateway does) and, at every version and for every job it accepts, settles
//! the copies meant for a node that is no longer a live member: the key's
//! current owners that the job does not target yet get the write instead (a new
//! durable job), and the old copies are finished in the queue log.

use std::collections::HashSet;
use std::time::Duration;

use crate::config::Secret;
use crate::membership::{Layout, MemberState, Membership, MembershipQuery};
use crate::proto::CLUSTER_SECRET_HEADER;
use crate::shutdown::Shutdown;

use super::state::Replicator;

/// How long one long-poll waits at the users service.
const WATCH_WAIT: Duration = Duration::from_secs(10);
/// Pause after a failed call to the users service.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Where copies may go at one membership version.
#[derive(Debug, Clone)]
pub struct Owners {
    /// The membership version.
    pub version: u64,
    layout: Layout,
    /// URLs (without a trailing slash) of the members that still take writes: all but those declared down.
    live: HashSet<String>,
}

fn normalized(url: &str) -> &str {
    url.trim_end_matches('/')
}

impl Owners {
    /// The owners of `membership`; `None` while it has no members (nothing is known yet).
    pub fn of(membership: &Membership, vnodes: usize, replicas: usize) -> Option<Self> {
        if membership.members.is_empty() {
            return None;
        }
        let live = membership
            .members
            .iter()
            .filter(|member| member.state != MemberState::Down)
            .map(|member| normalized(&member.url).to_string())
            .collect();
        Some(Self { version: membership.version, layout: Layout::new(membership, vnodes, replicas), live })
    }

    /// Whether the node at `url` is a member that takes writes.
    pub fn is_live(&self, url: &str) -> bool {
        self.live.contains(normalized(url))
    }

    /// Where a job for `key` whose `targets` include nodes that left should go instead: its live
    /// targets, plus the key's current owners it does not target yet. `None` when every target is
    /// live, or when no owner is left to take the copies (the job is kept as it is).
    pub fn retarget(&self, key: &str, targets: &[String]) -> Option<Vec<String>> {
        if targets.iter().all(|target| self.is_live(target)) {
            return None;
        }
        let mut kept: Vec<String> = targets.iter().filter(|target| self.is_live(target)).cloned().collect();
        for owner in self.layout.new_owners(key) {
            let url = normalized(&owner.url);
            if !targets.iter().any(|target| normalized(target) == url) {
                kept.push(url.to_string());
            }
        }
        (!kept.is_empty()).then_some(kept)
    }

    /// The key's current owners that are not among `targets`.
    pub fn missing_owners(&self, key: &str, targets: &[String]) -> Vec<String> {
        self.layout
            .new_owners(key)
            .into_iter()
            .map(|owner| normalized(&owner.url).to_string())
            .filter(|url| !targets.iter().any(|target| normalized(target) == url))
            .collect()
    }
}

/// Follows the membership at the users service `users_url` until shutdown, applying every version.
pub async fn follow(state: Replicator, users_url: String, secret: Secret, shutdown: Shutdown) {
    let http = crate::tls::client_builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("the HTTP client configuration is valid");
    let mut known: Option<u64> = None;
    let mut reported_failure = false;
    loop {
        let query = MembershipQuery { after: known, wait: known.map(|_| WATCH_WAIT.as_secs()) };
        let call = fetch(&http, &users_url, &secret, query);
        let outcome = tokio::select! {
            () = shutdown.wait() => return,
            outcome = call => outcome,
        };
        match outcome {
            Ok(membership) => {
                reported_failure = false;
                if known != Some(membership.version) {
                    known = Some(membership.version);
                    state.apply_membership(&membership).await;
                }
                continue;
            }
            Err(error) if !reported_failure => {
                reported_failure = true;
                tracing::warn!(%error, users = %users_url, "replicator: cannot follow the cluster membership yet; retrying");
            }
            Err(error) => tracing::debug!(%error, "replicator: membership still unavailable"),
        }
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(RETRY_DELAY) => {}
        }
    }
}

async fn fetch(
    http: &reqwest::Client,
    users_url: &str,
    secret: &Secret,
    query: MembershipQuery,
) -> Result<Membership, FetchError> {
    let response = http
        .get(format!("{users_url}/membership"))
        .query(&query)
        .header(CLUSTER_SECRET_HEADER, secret.expose())
        .timeout(Duration::from_secs(query.wait.unwrap_or(0)) + Duration::from_secs(5))
        .send()
        .await
        .map_err(|error| FetchError::Unreachable(error.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status(status));
    }
    response.json().await.map_err(|error| FetchError::Unreadable(error.without_url()))
}

/// Why the membership could not be fetched from the users service.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// No answer.
    #[error("{0}")]
    Unreachable(reqwest::Error),
    /// An error status.
    #[error("the users service answered {0}")]
    Status(reqwest::StatusCode),
    /// Not a membership.
    #[error("unreadable membership: {0}")]
    Unreadable(reqwest::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::Member;
    use chrono::Utc;

    fn membership(states: &[MemberState]) -> Membership {
        let members = states
            .iter()
            .enumerate()
            .map(|(i, state)| Member {
                id: format!("node-{}", i + 1),
                url: format!("http://n{}", i + 1),
                state: *state,
                since: Utc::now(),
                progress: None,
            })
            .collect();
        Membership { version: 3, members }
    }

    #[test]
    fn copies_for_a_node_that_left_go_to_the_keys_current_owners() {
        use MemberState::{Active, Down};
        assert!(Owners::of(&Membership::default(), 50, 3).is_none());
        let owners = Owners::of(&membership(&[Active, Active, Active, Active, Down]), 50, 3).unwrap();
        assert!(owners.is_live("http://n1/") && !owners.is_live("http://n5") && !owners.is_live("http://gone"));
        for i in 0..200 {
            let key = format!("7/k{i}");
            let current: Vec<String> = owners.layout.new_owners(&key).into_iter().map(|node| node.url).collect();
            let live_target = current[1].clone();
            assert_eq!(owners.retarget(&key, std::slice::from_ref(&live_target)), None, "all live: unchanged");
            let targets = vec![live_target.clone(), "http://n5".to_string()];
            let retargeted = owners.retarget(&key, &targets).unwrap();
            assert!(!retargeted.contains(&"http://n5".to_string()));
            assert_eq!(retargeted[0], live_target);
            let mut expected = current.clone();
            expected.sort();
            let mut got = retargeted.clone();
            got.sort();
            assert_eq!(got, expected, "the live target plus the other current owners");
            assert_eq!(owners.missing_owners(&key, &targets).len(), 2);
        }
    }
}
