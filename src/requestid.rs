//! Request ids (`X-Request-Id`): one id follows a client's request through every service.
//!
//! Every service takes the id a client sends (1–128 visible ASCII characters) or makes one, and
//! answers it on every response, errors included ([`crate::server::request_id_of`]). While the
//! request is served, in a log span holding the id, it is the task's current id ([`current`]):
//! internal requests made for it carry it, and the service that receives one logs within a span
//! holding it — so `grep <id>` over every service's log shows the request's path. An internal
//! request that batches the work of several client requests (the nodes' `/batch` and `/read`,
//! the replicator's `/jobs`) carries their ids comma-separated ([`crate::coalesce`] gathers
//! them, at most [`MAX_IDS`]).
//!
//! Each service logs one `debug` line per request inside that span (`RUST_LOG=ydht=debug`, or
//! `ydht::server=debug` for these lines alone).

use std::future::Future;
use std::sync::Arc;

/// Most ids one batched internal request names.
pub const MAX_IDS: usize = 32;

tokio::task_local! {
    static CURRENT: Arc<str>;
}

/// The id (or comma-separated ids) of the request this task serves, if any.
pub fn current() -> Option<Arc<str>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Runs `future` with `ids` as the current request id(s).
pub async fn scope<F: Future>(ids: Arc<str>, future: F) -> F::Output {
    CURRENT.scope(ids, future).await
}

/// The ids of a batch's requests, comma-separated, each once, at most [`MAX_IDS`].
pub fn join<'a>(ids: impl Iterator<Item = &'a str>) -> Option<Arc<str>> {
    let mut joined = String::new();
    let mut count = 0;
    for id in ids {
        if count == MAX_IDS {
            break;
        }
        if joined.split(',').any(|seen| seen == id) {
            continue;
        }
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(id);
        count += 1;
    }
    (!joined.is_empty()).then(|| Arc::from(joined))
}

/// Adds the current request id(s), if any, to an outgoing internal request.
pub fn propagate(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match current() {
        Some(ids) => request.header(crate::proto::REQUEST_ID_HEADER, ids.as_ref()),
        None => request,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_joined_once_each_and_bounded() {
        assert_eq!(join(["a", "b", "a", "c"].into_iter()).as_deref(), Some("a,b,c"));
        assert_eq!(join(std::iter::empty()), None);
        let many: Vec<String> = (0..100).map(|n| format!("id{n}")).collect();
        let joined = join(many.iter().map(String::as_str)).unwrap();
        assert_eq!(joined.split(',').count(), MAX_IDS);
        let header = axum::http::HeaderValue::from_str(&joined).unwrap();
        assert_eq!(crate::server::request_id_of(Some(&header)), header, "a batch's ids are taken as they are");
    }

    #[tokio::test]
    async fn the_current_id_is_the_scope_s() {
        assert!(current().is_none());
        let seen = scope(Arc::from("r1"), async { current() }).await;
        assert_eq!(seen.as_deref(), Some("r1"));
    }
}
