//! Benchmark of a storage node's write path: writes/s and latency percentiles
//! at 1, 8 and 64 concurrent writers, with group commit and with one fdatasync
//! per write, measured in the same run, at two layers:
//!
//! - `http`: real HTTP PUTs to the node's router (client and server in this process),
//! - `store`: the node's `Store::write` directly (WAL append + sync + apply), which
//!   isolates what group commit changes from the HTTP stack's CPU cost.
//!
//! Run: `cargo bench --bench node_write` (optionally `-- --seconds N` per cell).
//! Each cell opens a fresh store on a temporary directory (on the same disk as
//! the system temp dir), writes 256-byte values to distinct keys for the
//! given time (split into rounds that alternate group and per-write, so both
//! modes see the same background load), and reports what the writers measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use comfy_table::{Cell, Table};
use hdrhistogram::Histogram;
use tokio::net::TcpListener;
use ydht::auth::cluster::ClusterSecret;
use ydht::config::Secret;
use ydht::daemon::node::{NodeSettings, NodeState, Store, StoreOptions, app};
use ydht::shutdown::Shutdown;
use ydht::wal::{Record, SyncMode};

const WRITERS: [usize; 3] = [1, 8, 64];
const VALUE_BYTES: usize = 256;
const SECRET: &str = "bench";
/// Rounds per cell; the modes alternate between rounds.
const ROUNDS: u32 = 3;

/// Which layer a cell drives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Http,
    Store,
}

impl Layer {
    fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Store => "store",
        }
    }
}

struct Measurement {
    layer: Layer,
    mode: SyncMode,
    writers: usize,
    writes: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    syncs: u64,
}

impl Measurement {
    fn per_second(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64()
    }

    /// Adds another round of the same cell.
    fn absorb(&mut self, round: Measurement) {
        self.writes += round.writes;
        self.elapsed += round.elapsed;
        self.syncs += round.syncs;
        self.latency.add(round.latency).unwrap();
    }
}

async fn measure(layer: Layer, mode: SyncMode, writers: usize, duration: Duration) -> Measurement {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = StoreOptions {
        dir: dir.path().to_path_buf(),
        sync_mode: mode,
        wal_max_bytes: 64 << 20,
        salvage_wal: false,
        feed_retention: ydht::wal::segment::Retention::NONE,
    };
    let (store, _) = tokio::task::spawn_blocking(move || Store::open(&options)).await.unwrap().expect("open store");
    let state = NodeState {
        store: store.clone(),
        secret: ClusterSecret::new(Secret::new(SECRET)),
        settings: Arc::new(NodeSettings {
            node_id: "bench".into(),
            data_dir: dir.path().to_path_buf(),
            max_value_bytes: 1 << 20,
            sync_mode: mode,
            started: Instant::now(),
            follows_membership: false,
        }),
        anti_entropy: None,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = Shutdown::new();
    let server = tokio::spawn(ydht::server::serve(listener, app(state), shutdown.clone()));

    let client = reqwest::Client::builder().pool_max_idle_per_host(writers).build().unwrap();
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let (client, base, store) = (client.clone(), base.clone(), store.clone());
            tokio::spawn(async move {
                let mut latency = Histogram::<u64>::new(3).unwrap();
                let value = bytes::Bytes::from(vec![b'v'; VALUE_BYTES]);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let key = format!("bench-{writer}-{n}");
                    let sent = Instant::now();
                    match layer {
                        Layer::Http => {
                            let response = client
                                .put(format!("{base}/store/{key}"))
                                .header("x-cluster-secret", SECRET)
                                .header("x-version", (n + 1).to_string())
                                .body(value.clone())
                                .send()
                                .await
                                .expect("write");
                            assert!(response.status().is_success(), "write failed: {}", response.status());
                        }
                        Layer::Store => {
                            let record = Record::put(key, n + 1, value.clone(), "application/octet-stream");
                            let answers = store.write(vec![record]).await.expect("write");
                            assert!(answers[0].applied);
                        }
                    }
                    latency.record(sent.elapsed().as_micros() as u64).unwrap();
                    n += 1;
                }
                latency
            })
        })
        .collect();
    let mut latency = Histogram::<u64>::new(3).unwrap();
    for task in tasks {
        latency.add(task.await.unwrap()).unwrap();
    }
    let elapsed = started.elapsed();
    let syncs = store.wal_stats().syncs();
    shutdown.trigger();
    let _ = server.await;
    store.close().await;
    Measurement { layer, mode, writers, writes: latency.len(), elapsed, latency, syncs }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("node_write is a benchmark; run it with `cargo bench --bench node_write`");
        return;
    }
    let seconds = std::env::args()
        .skip_while(|arg| arg != "--seconds")
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or(3.0);
    let duration = Duration::from_secs_f64(seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut cells = Vec::new();
    for layer in [Layer::Http, Layer::Store] {
        for writers in WRITERS {
            // Alternate the two modes in short rounds so both see the same machine load.
            let mut pair: Vec<Measurement> = Vec::new();
            for _ in 0..ROUNDS {
                for mode in [SyncMode::Group, SyncMode::PerWrite] {
                    let round = runtime.block_on(measure(layer, mode, writers, duration / ROUNDS));
                    match pair.iter_mut().find(|cell| cell.mode == mode) {
                        Some(cell) => cell.absorb(round),
                        None => pair.push(round),
                    }
                }
            }
            for cell in &pair {
                eprintln!(
                    "measured {} {} × {writers}: {:.0} writes/s",
                    layer.name(),
                    cell.mode.as_str(),
                    cell.per_second()
                );
            }
            cells.extend(pair);
        }
    }

    let mut table = Table::new();
    table.set_header([
        "layer",
        "sync mode",
        "writers",
        "writes",
        "writes/s",
        "p50 ms",
        "p99 ms",
        "writes per fdatasync",
    ]);
    for cell in &cells {
        table.add_row([
            Cell::new(cell.layer.name()),
            Cell::new(cell.mode.as_str()),
            Cell::new(cell.writers),
            Cell::new(cell.writes),
            Cell::new(format!("{:.0}", cell.per_second())),
            Cell::new(format!("{:.2}", cell.latency.value_at_quantile(0.50) as f64 / 1000.0)),
            Cell::new(format!("{:.2}", cell.latency.value_at_quantile(0.99) as f64 / 1000.0)),
            Cell::new(format!("{:.1}", cell.writes as f64 / cell.syncs.max(1) as f64)),
        ]);
    }
    println!("node write path, {VALUE_BYTES}-byte values, {seconds}s per cell");
    println!("{table}");
    for layer in [Layer::Http, Layer::Store] {
        for writers in WRITERS {
            let rate = |mode| {
                cells
                    .iter()
                    .find(|c| c.layer == layer && c.mode == mode && c.writers == writers)
                    .map_or(0.0, Measurement::per_second)
            };
            println!(
                "{:>5} {writers:>2} writers: group commit is {:.1}× one sync per write",
                layer.name(),
                rate(SyncMode::Group) / rate(SyncMode::PerWrite).max(f64::MIN_POSITIVE)
            );
        }
    }
}
