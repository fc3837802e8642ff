//! `GET /v1/watch`: a tenant's changes as server-sent events, resumable from a cursor (issue 16).
//!
//! The nodes' change feeds ([`crate::daemon::node::feed`]) are read once per gateway, whatever
//! the number of watches: while any watch is open, a [`WatchHub`] keeps one long poll per node
//! and hands every page to the watches. Each watch merges the pages into its own events with a
//! [`Merge`] (each change once although three replicas report it, in version order per key) and
//! reads a node's feed itself only where its cursor is behind the hub's: after a resume, or when
//! it fell behind the hub's pages.
//!
//! A resumed watch first reads back each node's feed before its cursor (the look-back, from the
//! start of the cursor's WAL segment, and of the one before when the cursor is near its start)
//! so a late copy of a change it already delivered is not sent again. When a node's feed no
//! longer holds a cursor's position (past the retention), the stream sends `reset` with a cursor
//! at the present and goes on from there; the client lists again.
//!
//! A watch whose client reads too slowly fills its buffer ([`WATCH_BUFFER_EVENTS`]); when it
//! stays full for [`WATCH_STALL`], the watch is sent `dropped` and ends. The client resumes from
//! its last event's id.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use super::input::{MAX_KEY_BYTES, validate_key};
use super::state::GatewayState;
use super::tenant::Tenant;
use crate::daemon::node::feed::{position, split};
use crate::error::ApiError;
use crate::proto::{NodeFeedEntry, WatchEvent};
use crate::ring::NodeInfo;
use crate::shutdown::Shutdown;
use crate::sync::Lock;
use crate::watch::{Cursor, Kind, Merge};
use crate::wire::read::{Found, Lookup};

/// Events a watch buffers for a client that reads slowly before it is dropped.
pub const WATCH_BUFFER_EVENTS: usize = 4096;
/// How long a watch waits for room in a full buffer before it is dropped.
pub const WATCH_STALL: Duration = Duration::from_secs(10);
/// Default most watches one tenant may have open on one gateway.
pub const DEFAULT_MAX_WATCHES_PER_TENANT: usize = 128;
/// Keys a watch remembers the last delivered version of (the oldest are forgotten past it).
const MERGE_CAPACITY: usize = 50_000;
/// Most bytes of queued events written to the client at once.
const MAX_WRITE_BYTES: usize = 64 << 10;
/// How often a heartbeat comment is sent on a quiet stream.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Changes per feed page.
const FEED_PAGE: usize = 10_000;
/// How long the hub's long poll of a node waits for a change.
const FEED_WAIT: Duration = Duration::from_secs(10);
/// Pages the hub may hold for a watch that is busy; a watch further behind reads the nodes itself.
const HUB_BACKLOG_PAGES: usize = 1024;
/// How long a new watch waits for the hub to learn where the nodes' feeds are.
const HUB_READY: Duration = Duration::from_secs(2);
/// How long the hub keeps reading the feeds after its last watch closed.
const HUB_LINGER: Duration = Duration::from_secs(30);
/// A cursor this close to the start of its WAL segment also looks back into the one before.
const LOOK_BACK_MIN_BYTES: u64 = 1 << 20;
/// Most feed pages one look-back reads from one node.
const LOOK_BACK_MAX_PAGES: usize = 100;

/// A change as the look-back learns it (what the merge needs: key, version, kind).
type Entry = crate::watch::Entry<()>;

fn kind_of(kind: &str) -> Option<Kind> {
    match kind {
        "put" => Some(Kind::Put),
        "delete" => Some(Kind::Delete),
        "expire" => Some(Kind::Expire),
        _ => None,
    }
}

fn entry_of(entry: &NodeFeedEntry) -> Option<Entry> {
    let kind = kind_of(&entry.kind)?;
    Some(Entry { seq: entry.position, key: entry.key.clone(), version: entry.version, kind, meta: () })
}

/// One page of one node's feed as the hub read it: the changes in `(after, next]`.
#[derive(Debug)]
struct FeedBatch {
    node: String,
    after: u64,
    next: u64,
    oldest: u64,
    entries: Vec<NodeFeedEntry>,
}

/// The gateway's readers of the nodes' feeds, shared by its watches.
#[derive(Debug)]
pub struct WatchHub {
    inner: std::sync::Mutex<Hub>,
    pages: broadcast::Sender<Arc<FeedBatch>>,
    /// Notified when a reader learns a node's position.
    tails_changed: tokio::sync::Notify,
    max_per_tenant: usize,
}

#[derive(Debug, Default)]
struct Hub {
    /// Per node, where the hub's reading got to (the `next` of its last page).
    tails: HashMap<String, u64>,
    /// Which run of the readers is current; readers of an older one stop.
    generation: u64,
    running: bool,
    watches: usize,
    per_tenant: HashMap<i64, usize>,
}

impl WatchHub {
    /// A hub allowing `max_per_tenant` watches per tenant.
    pub fn new(max_per_tenant: usize) -> Self {
        let (pages, _) = broadcast::channel(HUB_BACKLOG_PAGES);
        Self { inner: Default::default(), pages, tails_changed: Default::default(), max_per_tenant }
    }

    /// Watches open now.
    pub fn open(&self) -> usize {
        self.inner.locked().watches
    }

    /// Subscribes to the hub's pages; the tails returned are where the pages it will receive
    /// start (taken under the lock the readers publish under).
    fn subscribe(&self) -> Subscription {
        let hub = self.inner.locked();
        (self.pages.subscribe(), hub.tails.clone())
    }

    /// [`WatchHub::subscribe`] once the readers know where each of `nodes` is (a node that cannot
    /// be read for [`HUB_READY`] is started on when it can).
    async fn subscribe_ready(&self, nodes: &[NodeInfo]) -> Subscription {
        let deadline = tokio::time::Instant::now() + HUB_READY;
        loop {
            let changed = self.tails_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let subscription = self.subscribe();
            let ready = nodes.iter().all(|node| subscription.1.contains_key(&node.id));
            if ready || tokio::time::timeout_at(deadline, changed).await.is_err() {
                return subscription;
            }
        }
    }
}

/// The hub's pages from here on, and where they start per node.
type Subscription = (broadcast::Receiver<Arc<FeedBatch>>, HashMap<String, u64>);

/// A watch's place among its tenant's: freed when the watch ends.
struct Slot {
    state: GatewayState,
    user_id: i64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut hub = self.state.watches.inner.locked();
        hub.watches = hub.watches.saturating_sub(1);
        if let Some(count) = hub.per_tenant.get_mut(&self.user_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                hub.per_tenant.remove(&self.user_id);
            }
        }
    }
}

/// Takes a watch slot for `user_id` (429 past the limit) and starts the hub's readers if
/// they are not running.
fn open_slot(state: &GatewayState, user_id: i64) -> Result<Slot, ApiError> {
    let mut hub = state.watches.inner.locked();
    let count = hub.per_tenant.entry(user_id).or_default();
    if *count >= state.watches.max_per_tenant {
        return Err(ApiError::too_many_requests(
            format!(
                "too many watches open: at most {} per account on one gateway; close one first",
                state.watches.max_per_tenant
            ),
            1,
        ));
    }
    *count += 1;
    hub.watches += 1;
    if !hub.running {
        hub.running = true;
        hub.generation += 1;
        hub.tails.clear();
        tokio::spawn(run_hub(state.clone(), hub.generation));
    }
    Ok(Slot { state: state.clone(), user_id })
}

/// Runs one reader per node while watches are open (and [`HUB_LINGER`] after the last).
async fn run_hub(state: GatewayState, generation: u64) {
    let stop = Shutdown::new();
    let mut readers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut idle_since: Option<tokio::time::Instant> = None;
    loop {
        let nodes = state.placement().all();
        readers.retain(|id, reader| {
            let member = nodes.iter().any(|node| &node.id == id);
            if !member {
                reader.abort();
            }
            member && !reader.is_finished()
        });
        for node in nodes {
            if !readers.contains_key(&node.id) {
                let id = node.id.clone();
                readers.insert(id, tokio::spawn(read_node(state.clone(), node, generation, stop.clone())));
            }
        }
        {
            let mut hub = state.watches.inner.locked();
            if hub.watches > 0 {
                idle_since = None;
            } else if idle_since.get_or_insert_with(tokio::time::Instant::now).elapsed() >= HUB_LINGER
                || state.stopping.is_triggered()
            {
                hub.running = false;
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = state.stopping.wait() => {}
        }
    }
    stop.trigger();
    for (_, reader) in readers {
        reader.abort();
    }
}

/// Long-polls `node`'s feed from its head on and publishes every page.
async fn read_node(state: GatewayState, node: NodeInfo, generation: u64, stop: Shutdown) {
    // After u64::MAX without waiting: an empty page whose `next` is the node's head.
    let mut after = u64::MAX;
    let mut backoff = Duration::from_millis(100);
    loop {
        let wait = if after == u64::MAX { Duration::ZERO } else { FEED_WAIT };
        let page = tokio::select! {
            page = state.nodes.feed(&node.url, after, "", FEED_PAGE, wait) => page,
            _ = stop.wait() => return,
        };
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                tracing::debug!(node = %node.id, %error, "watch: the node's change feed cannot be read; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let mut hub = state.watches.inner.locked();
        if hub.generation != generation {
            return;
        }
        if hub.tails.insert(node.id.clone(), page.next).is_none() {
            state.watches.tails_changed.notify_waiters();
        }
        if after != u64::MAX && (page.next != after || !page.entries.is_empty()) {
            let batch =
                FeedBatch { node: node.id.clone(), after, next: page.next, oldest: page.oldest, entries: page.entries };
            let _ = state.watches.pages.send(Arc::new(batch));
        }
        after = page.next;
    }
}

/// Query of `GET /v1/watch`.
#[derive(Debug, Deserialize)]
pub struct WatchQuery {
    /// Only keys starting with this.
    prefix: Option<String>,
    /// Only this key.
    key: Option<String>,
    /// Resume after this cursor (an event's `id:`), when `Last-Event-ID` cannot be sent.
    since: Option<String>,
    /// `true`: events carry the value.
    values: Option<String>,
}

/// Which keys a watch reports, as storage keys.
#[derive(Debug, Clone)]
struct Filter {
    /// The storage prefix: the tenant's, and the watched prefix or key.
    prefix: String,
    /// Only this storage key.
    exact: Option<String>,
    /// The tenant's prefix length, cut from keys in events.
    tenant_prefix: usize,
    values: bool,
}

impl Filter {
    fn matches(&self, key: &str) -> bool {
        match &self.exact {
            Some(exact) => key == exact,
            None => key.starts_with(&self.prefix),
        }
    }
}

fn parse_values(text: Option<&str>) -> Result<bool, ApiError> {
    match text {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1" | "") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!("values must be true or false, not {other:?}"))),
    }
}

/// `GET /v1/watch?prefix=P | key=K [&since=CURSOR] [&values=true]`: the tenant's changes as
/// server-sent events.
pub async fn watch(
    State(state): State<GatewayState>,
    tenant: Tenant,
    query: Result<Query<WatchQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let exact = match (&query.prefix, &query.key) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give prefix or key, not both")),
        (_, Some(key)) => {
            validate_key(key)?;
            Some(tenant.storage_key(key))
        }
        (Some(prefix), None) if prefix.len() > MAX_KEY_BYTES => {
            return Err(ApiError::bad_request(format!("prefix is longer than a key may be ({MAX_KEY_BYTES} bytes)")));
        }
        _ => None,
    };
    let filter = Filter {
        prefix: exact.clone().unwrap_or_else(|| tenant.storage_key(query.prefix.as_deref().unwrap_or(""))),
        exact,
        tenant_prefix: tenant.prefix().len(),
        values: parse_values(query.values.as_deref())?,
    };
    let last_event_id = match headers.get("last-event-id") {
        Some(value) => {
            Some(value.to_str().map_err(|_| ApiError::bad_request("Last-Event-ID is not visible ASCII text"))?)
        }
        None => None,
    };
    let resume = match last_event_id.filter(|id| !id.trim().is_empty()).or(query.since.as_deref()) {
        Some(text) => Some(Cursor::decode(text).map_err(|error| ApiError::bad_request(error.to_string()))?),
        None => None,
    };
    let slot = open_slot(&state, tenant.user_id)?;
    // A new watch reports every change made after its answer: it subscribes before answering.
    let start = match resume {
        Some(cursor) => Start::Resume(cursor),
        None => Start::Fresh(state.watches.subscribe_ready(&state.placement().all()).await),
    };
    let (events, received) = mpsc::channel(WATCH_BUFFER_EVENTS);
    let dropped = Arc::new(AtomicBool::new(false));
    let merge = Merge::new(Cursor::default(), MERGE_CAPACITY);
    let watch = Watch { state: state.clone(), filter, merge, events, nodes: Vec::new() };
    tokio::spawn(watch.run(start, dropped.clone(), slot));
    let stream = event_stream(received, dropped, HEARTBEAT);
    // `X-Accel-Buffering: no` asks a proxy in front (nginx) to pass events on as they come.
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
        (header::HeaderName::from_static("x-accel-buffering"), "no"),
    ];
    Ok((headers, axum::body::Body::from_stream(stream)).into_response())
}

/// The response body of a watch: the events `received` as SSE text, several per write when they
/// queue up; a heartbeat comment after `heartbeat` of quiet; `dropped` at the end when the watch
/// was dropped for a slow client.
fn event_stream(
    received: mpsc::Receiver<String>,
    dropped: Arc<AtomicBool>,
    heartbeat: Duration,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, Infallible>> {
    futures_util::stream::unfold((received, dropped, false), move |(mut received, dropped, done)| async move {
        if done {
            return None;
        }
        let first = match tokio::time::timeout(heartbeat, received.recv()).await {
            Err(_) => {
                return Some((
                    Ok::<_, Infallible>(bytes::Bytes::from_static(b": heartbeat\n\n")),
                    (received, dropped, false),
                ));
            }
            Ok(first) => first,
        };
        match first {
            // Whatever else is queued goes out in the same write.
            Some(mut text) => {
                while text.len() < MAX_WRITE_BYTES {
                    match received.try_recv() {
                        Ok(more) => text.push_str(&more),
                        Err(_) => break,
                    }
                }
                Some((Ok(bytes::Bytes::from(text)), (received, dropped, false)))
            }
            None if dropped.load(Ordering::Acquire) => {
                let error = format!(
                    "the watch was dropped: its client left {WATCH_BUFFER_EVENTS} events unread for {} s; reconnect \
                     with Last-Event-ID set to the last event's id to resume",
                    WATCH_STALL.as_secs()
                );
                let text = sse_event("dropped", None, &serde_json::json!({ "error": error }).to_string());
                Some((Ok(bytes::Bytes::from(text)), (received, dropped, true)))
            }
            None => None,
        }
    })
}

/// One server-sent event as text (`data` is one line: compact JSON).
fn sse_event(event: &str, id: Option<&str>, data: &str) -> String {
    let mut text = String::with_capacity(event.len() + data.len() + id.map_or(0, str::len) + 24);
    text.push_str("event: ");
    text.push_str(event);
    if let Some(id) = id {
        text.push_str("\nid: ");
        text.push_str(id);
    }
    text.push_str("\ndata: ");
    text.push_str(data);
    text.push_str("\n\n");
    text
}

/// Where a watch starts.
enum Start {
    /// At the present: subscribed already.
    Fresh(Subscription),
    /// After a cursor.
    Resume(Cursor),
}

/// Why a watch stops sending.
enum Stop {
    /// The client went away.
    Client,
    /// The client's buffer stayed full: it is sent `dropped`.
    Dropped,
    /// A node's feed no longer holds the cursor's position.
    Gap,
}

/// One open watch.
struct Watch {
    state: GatewayState,
    filter: Filter,
    merge: Merge,
    /// Events as SSE text.
    events: mpsc::Sender<String>,
    /// The ring's nodes as last looked up.
    nodes: Vec<Arc<NodeInfo>>,
}

impl Watch {
    async fn run(mut self, start: Start, dropped: Arc<AtomicBool>, _slot: Slot) {
        let stopping = self.state.stopping.clone();
        let events = self.events.clone();
        let stop = tokio::select! {
            stop = self.serve(start) => stop,
            _ = events.closed() => Stop::Client,
            _ = stopping.wait() => Stop::Client,
        };
        if let Stop::Dropped = stop {
            self.state.metrics.watch_dropped();
            dropped.store(true, Ordering::Release);
        }
    }

    /// Sends the watch's events until the client goes away or is dropped.
    async fn serve(&mut self, start: Start) -> Stop {
        let mut pages = match self.start(start).await {
            Ok(pages) => pages,
            Err(Stop::Gap) => match self.reset().await {
                Ok(pages) => pages,
                Err(stop) => return stop,
            },
            Err(stop) => return stop,
        };
        loop {
            let batch = match pages.recv().await {
                Ok(batch) => batch,
                // Pages skipped: the next one starts after this watch's position, which reads the gap itself.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return Stop::Client,
            };
            match self.take(&batch).await {
                Ok(()) => {}
                Err(Stop::Gap) => match self.reset().await {
                    Ok(fresh) => pages = fresh,
                    Err(stop) => return stop,
                },
                Err(stop) => return stop,
            }
        }
    }

    /// Looks back (when resuming), subscribes to the hub and catches up to it.
    async fn start(&mut self, start: Start) -> Result<broadcast::Receiver<Arc<FeedBatch>>, Stop> {
        let nodes = self.state.placement().all();
        let (pages, tails) = match start {
            Start::Fresh(subscription) => subscription,
            Start::Resume(cursor) => {
                self.merge = Merge::new(cursor, MERGE_CAPACITY);
                for node in &nodes {
                    self.look_back(node).await?;
                }
                self.state.watches.subscribe_ready(&nodes).await
            }
        };
        for (node, tail) in &tails {
            self.merge.start(node, *tail);
        }
        for node in &nodes {
            if let (Some(consumed), Some(tail)) = (self.merge.cursor().position(&node.id), tails.get(&node.id))
                && consumed < *tail
            {
                // A node that cannot be read now is read when the hub's next page of it comes.
                let _ = self.catch_up(node, *tail).await;
            }
        }
        Ok(pages)
    }

    /// Sends `reset` with a cursor at the present and goes on from there.
    async fn reset(&mut self) -> Result<broadcast::Receiver<Arc<FeedBatch>>, Stop> {
        let (pages, tails) = self.state.watches.subscribe();
        let mut cursor = Cursor::default();
        for (node, tail) in &tails {
            cursor.set(node, *tail);
        }
        let error = "changes since the cursor are past the nodes' change-log retention and cannot be sent; \
                     list the keys again, then go on from this event's id";
        let event = sse_event("reset", Some(&cursor.encode()), &serde_json::json!({ "error": error }).to_string());
        self.merge = Merge::new(cursor, MERGE_CAPACITY);
        self.send(event).await?;
        Ok(pages)
    }

    /// Reads `node`'s feed before the cursor's position in it to learn what was delivered.
    async fn look_back(&mut self, node: &NodeInfo) -> Result<(), Stop> {
        let Some(consumed) = self.merge.cursor().position(&node.id) else {
            return Ok(());
        };
        let (generation, offset) = split(consumed);
        let from = if offset < LOOK_BACK_MIN_BYTES { generation.saturating_sub(1) } else { generation };
        let mut after = position(from, 0);
        for _ in 0..LOOK_BACK_MAX_PAGES {
            let page =
                match self.state.nodes.feed(&node.url, after, &self.filter.prefix, FEED_PAGE, Duration::ZERO).await {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::debug!(node = %node.id, %error, "watch: no look-back into a node that cannot be read");
                        return Ok(());
                    }
                };
            if self.merge.gap(&node.id, page.oldest) {
                return Err(Stop::Gap);
            }
            let entries: Vec<Entry> = page.entries.iter().filter_map(entry_of).collect();
            self.merge.seed(&node.id, &entries);
            if page.entries.is_empty() || page.next >= consumed || page.next <= after {
                return Ok(());
            }
            after = page.next;
        }
        Ok(())
    }

    /// Reads `node`'s feed itself from the watch's position up to `to` (where the hub's pages go on).
    async fn catch_up(&mut self, node: &NodeInfo, to: u64) -> Result<(), Stop> {
        while let Some(after) = self.merge.cursor().position(&node.id).filter(|after| *after < to) {
            let page =
                match self.state.nodes.feed(&node.url, after, &self.filter.prefix, FEED_PAGE, Duration::ZERO).await {
                    Ok(page) => page,
                    // Read again when the hub's next page of this node comes.
                    Err(_) => return Ok(()),
                };
            if self.merge.gap(&node.id, page.oldest) {
                return Err(Stop::Gap);
            }
            for entry in page.entries.iter().filter(|entry| entry.position <= to) {
                self.offer(node, entry).await?;
            }
            let reached = page.next.min(to);
            if reached <= after {
                break;
            }
            self.merge.advance(&node.id, reached);
        }
        Ok(())
    }

    /// The node `id` of the ring (looked up in the placement only when it is not known yet).
    fn node(&mut self, id: &str) -> Option<Arc<NodeInfo>> {
        if let Some(node) = self.nodes.iter().find(|node| node.id == id) {
            return Some(Arc::clone(node));
        }
        self.nodes = self.state.placement().all().into_iter().map(Arc::new).collect();
        self.nodes.iter().find(|node| node.id == id).cloned()
    }

    /// Takes one of the hub's pages.
    async fn take(&mut self, batch: &FeedBatch) -> Result<(), Stop> {
        self.merge.start(&batch.node, batch.after);
        let consumed = self.merge.cursor().position(&batch.node).unwrap_or(batch.after);
        if batch.next <= consumed {
            return Ok(());
        }
        let Some(node) = self.node(&batch.node) else {
            return Ok(());
        };
        if batch.after > consumed {
            self.catch_up(&node, batch.after).await?;
            if self.merge.cursor().position(&batch.node).is_some_and(|reached| reached < batch.after) {
                // The node could not be read: the next page tries again.
                return Ok(());
            }
        }
        if self.merge.gap(&batch.node, batch.oldest) {
            return Err(Stop::Gap);
        }
        for entry in &batch.entries {
            self.offer(&node, entry).await?;
        }
        self.merge.advance(&batch.node, batch.next);
        Ok(())
    }

    /// Sends `entry` of `node`'s feed when it is this watch's and news.
    async fn offer(&mut self, node: &NodeInfo, entry: &NodeFeedEntry) -> Result<(), Stop> {
        if !self.filter.matches(&entry.key) {
            return Ok(());
        }
        let Some(kind) = kind_of(&entry.kind) else {
            return Ok(());
        };
        if !self.merge.take(&node.id, entry.position, &entry.key, entry.version, kind) {
            return Ok(());
        }
        let event = self.event(node, entry, kind).await;
        self.send(event).await?;
        self.state.metrics.watch_event();
        Ok(())
    }

    /// Queues `event` for the client, waiting up to [`WATCH_STALL`] for room.
    async fn send(&self, event: String) -> Result<(), Stop> {
        match self.events.send_timeout(event, WATCH_STALL).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(Stop::Dropped),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Stop::Client),
        }
    }

    /// The SSE event of a change `node` reported, with the cursor after it (with `values`, its
    /// value is read from that node, which holds the change or a newer one).
    async fn event(&self, node: &NodeInfo, entry: &NodeFeedEntry, kind: Kind) -> String {
        let live = kind == Kind::Put;
        let mut data = WatchEvent {
            key: entry.key.get(self.filter.tenant_prefix..).unwrap_or_default().to_string(),
            version: entry.version,
            size: if live { entry.size } else { 0 },
            content_type: live.then(|| entry.content_type.clone()),
            expires_at: entry
                .expires_at
                .filter(|_| live)
                .and_then(|at| chrono::DateTime::from_timestamp_millis(at as i64)),
            value: None,
            value_base64: None,
            superseded: false,
        };
        if self.filter.values && live {
            match self.state.nodes.read(&node.url, &entry.key).await.map(|replica| replica.lookup) {
                Ok(Lookup::Found(Found { version, value, .. })) if version == entry.version => {
                    match std::str::from_utf8(&value) {
                        Ok(text) => data.value = Some(text.to_string()),
                        Err(_) => data.value_base64 = Some(base64::engine::general_purpose::STANDARD.encode(&value)),
                    }
                }
                _ => data.superseded = true,
            }
        }
        let json = serde_json::to_string(&data).unwrap_or_default();
        sse_event(kind.as_str(), Some(&self.merge.cursor().encode()), &json)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    async fn next_text(
        stream: &mut (impl futures_util::Stream<Item = Result<bytes::Bytes, Infallible>> + Unpin),
    ) -> Option<String> {
        stream.next().await.map(|chunk| String::from_utf8(chunk.unwrap().to_vec()).unwrap())
    }

    /// A quiet stream gets a heartbeat comment after the interval, not before; queued events go
    /// out in one write; a dropped watch ends with `dropped`.
    #[tokio::test(start_paused = true)]
    async fn the_stream_beats_batches_and_ends_with_dropped() {
        let (events, received) = mpsc::channel(16);
        let dropped = Arc::new(AtomicBool::new(false));
        let mut stream = Box::pin(event_stream(received, dropped.clone(), Duration::from_secs(15)));

        let started = tokio::time::Instant::now();
        assert_eq!(next_text(&mut stream).await.as_deref(), Some(": heartbeat\n\n"));
        assert_eq!(started.elapsed(), Duration::from_secs(15), "after 15 s of quiet, not before");

        events.send(sse_event("put", Some("w1.a"), "{}")).await.unwrap();
        events.send(sse_event("delete", Some("w1.b"), "{}")).await.unwrap();
        let both = next_text(&mut stream).await.unwrap();
        assert_eq!(both, "event: put\nid: w1.a\ndata: {}\n\nevent: delete\nid: w1.b\ndata: {}\n\n");

        dropped.store(true, Ordering::Release);
        drop(events);
        let last = next_text(&mut stream).await.unwrap();
        assert!(last.starts_with("event: dropped\ndata: {\"error\":"), "{last}");
        assert!(next_text(&mut stream).await.is_none(), "the stream ends after dropped");
    }
}
