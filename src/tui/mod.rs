//! `ydht top`: the live operator dashboard (ratatui + crossterm).
//!
//! - [`state`]: the model ([`App`]) — what is shown, nothing about how.
//! - [`update`]: the one [`Event`] enum (terminal input, polled data, ticks,
//!   signals) and [`App::update`], the only place the model changes.
//! - [`poller`]: HTTP polling of the gateway's `/cluster` and every service's
//!   `/metrics` and `/health` into a [`poller::Snapshot`].
//! - [`readings`]: defensive parsing of what the services report.
//! - [`ui`]: rendering; reads `&App` only.
//!
//! This file wires them to a real terminal: input is read on a thread,
//! polling, ticks and signals are tasks, and all of them feed one channel
//! the main loop drains. The terminal is restored on every exit path: normal
//! return, error, Ctrl-C (a key in raw mode), SIGINT/SIGTERM/SIGHUP, and
//! panics (ratatui's panic hook).

pub mod poller;
pub mod readings;
pub mod state;
pub mod ui;
pub mod update;

use std::fmt;
use std::io::{ErrorKind, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use clap::Args;
use ratatui::DefaultTerminal;
use tokio::sync::mpsc;

use crate::config::{CLUSTER_SECRET_FILE, Secret, default_data_dir};
use crate::error::Exit;
pub use state::App;
pub use update::{Event, Flow};

/// Flags of `ydht top`.
#[derive(Args, Clone)]
pub struct TopArgs {
    /// Base URL of the gateway to watch
    #[arg(long, env = "YDHT_GATEWAY_URL", default_value = "http://127.0.0.1:8080")]
    pub gateway: String,

    /// How often to poll the services, e.g. 500ms, 1s, 5s
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,

    /// Cluster secret for the internal endpoints [default: read from <data-dir>/cluster.secret]
    #[arg(long, env = "YDHT_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,

    /// Data dir holding cluster.secret when no secret is given [default: the platform data dir]
    #[arg(long, env = "YDHT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl fmt::Debug for TopArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopArgs")
            .field("gateway", &self.gateway)
            .field("interval", &self.interval)
            .field("cluster_secret", &self.cluster_secret.as_ref().map(|_| "<hidden>"))
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

/// Shortest accepted `--interval`.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest accepted `--interval`.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = crate::duration::parse(text).map_err(|error| error.to_string())?;
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
        return Err(format!("interval {text:?} is out of range; use 100ms to 1h"));
    }
    Ok(interval)
}

impl TopArgs {
    /// The cluster secret: the flag / `YDHT_CLUSTER_SECRET`, else `<data-dir>/cluster.secret`.
    /// Never generates one: a new secret would match no running server.
    pub fn resolve_secret(&self) -> anyhow::Result<Secret> {
        if let Some(secret) = self.cluster_secret.as_deref().filter(|secret| !secret.is_empty()) {
            return Ok(Secret::new(secret));
        }
        let dir = match &self.data_dir {
            Some(dir) => dir.clone(),
            None => default_data_dir()?,
        };
        let path = dir.join(CLUSTER_SECRET_FILE);
        let hint =
            "pass --cluster-secret (or set YDHT_CLUSTER_SECRET), or --data-dir pointing at the servers' data dir";
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Ok(Secret::new(text.trim())),
            Ok(_) => Err(Exit::usage(format!("no cluster secret: {} is empty; {hint}", path.display())).into()),
            Err(error) if error.kind() == ErrorKind::NotFound => {
                Err(Exit::usage(format!("no cluster secret: {} does not exist; {hint}", path.display())).into())
            }
            Err(error) => Err(Exit::usage(format!("cannot read {}: {error}; {hint}", path.display())).into()),
        }
    }

    /// Runs the dashboard until the user quits.
    pub async fn run(self) -> anyhow::Result<()> {
        let url = reqwest::Url::parse(&self.gateway).map_err(|error| {
            Exit::usage(format!("invalid --gateway URL {:?}: {error}; e.g. http://127.0.0.1:8080", self.gateway))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(
                Exit::usage(format!("--gateway must be an http:// or https:// URL, not {:?}", self.gateway)).into()
            );
        }
        let secret = self.resolve_secret()?;
        if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
            return Err(
                Exit::usage("ydht top needs an interactive terminal; for a one-shot report use `ydht status`").into()
            );
        }
        let timeout = self.interval.clamp(Duration::from_secs(1), Duration::from_secs(5));
        let poller = poller::Poller::new(&self.gateway, secret, timeout)?;
        let app = App::new(self.gateway.trim_end_matches('/'), self.interval);
        run_dashboard(app, poller, self.interval).await
    }
}

/// Owns the terminal while the dashboard runs; dropping it restores the terminal.
struct TerminalGuard {
    terminal: DefaultTerminal,
}

impl TerminalGuard {
    /// Enters raw mode and the alternate screen, and installs ratatui's panic hook
    /// (which restores the terminal before the panic message is printed).
    fn enter() -> anyhow::Result<Self> {
        match ratatui::try_init() {
            Ok(terminal) => Ok(Self { terminal }),
            Err(error) => {
                ratatui::restore();
                Err(Exit::usage(format!("cannot set up the terminal: {error}")).into())
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

async fn run_dashboard(mut app: App, poller: poller::Poller, interval: Duration) -> anyhow::Result<()> {
    let (sender, mut events) = mpsc::channel(64);
    let mut guard = TerminalGuard::enter()?;
    let input = InputReader::spawn(sender.clone());
    let tasks = [poller::spawn(poller, interval, sender.clone()), spawn_ticks(sender.clone()), spawn_signals(sender)];
    let result = main_loop(&mut guard.terminal, &mut app, &mut events).await;
    for task in tasks {
        task.abort();
    }
    input.stop();
    drop(guard);
    result
}

async fn main_loop(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    events: &mut mpsc::Receiver<Event>,
) -> anyhow::Result<()> {
    terminal.draw(|frame| ui::render(app, frame))?;
    while let Some(event) = events.recv().await {
        if app.update(event) == Flow::Quit {
            return Ok(());
        }
        // Fold whatever else is already queued into one redraw.
        while let Ok(event) = events.try_recv() {
            if app.update(event) == Flow::Quit {
                return Ok(());
            }
        }
        terminal.draw(|frame| ui::render(app, frame))?;
    }
    Err(anyhow::anyhow!("the dashboard's event sources stopped unexpectedly"))
}

/// How long quitting waits for the input thread to notice it should stop.
const INPUT_STOP_WAIT: Duration = Duration::from_millis(500);

/// Reads terminal input on its own thread (crossterm's reads block) and forwards it.
struct InputReader {
    stop: Arc<AtomicBool>,
    finished: std::sync::mpsc::Receiver<()>,
}

impl InputReader {
    fn spawn(sender: mpsc::Sender<Event>) -> Self {
        use ratatui::crossterm::event;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let (finish, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                // Poll with a timeout so a stop request is noticed promptly and no
                // key typed after `ydht top` exits is swallowed by this thread.
                let input = match event::poll(Duration::from_millis(100)) {
                    Ok(false) => continue,
                    Ok(true) => event::read().map(Event::Input),
                    Err(error) => Err(error),
                };
                // Lost terminal input (e.g. the terminal closed) ends the dashboard.
                let event = input.unwrap_or(Event::Terminate);
                let last = event == Event::Terminate;
                if sender.blocking_send(event).is_err() || last {
                    break;
                }
            }
            let _ = finish.send(());
        });
        Self { stop, finished }
    }

    /// Asks the thread to stop and waits for it, but at most [`INPUT_STOP_WAIT`]:
    /// on a terminal that was closed, crossterm's poll can keep spinning, and the
    /// thread then ends with the process instead.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.finished.recv_timeout(INPUT_STOP_WAIT);
    }
}

/// Sends the wall-clock time every second so relative times stay current.
fn spawn_ticks(sender: mpsc::Sender<Event>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticker.tick().await;
            if sender.send(Event::Tick(poller::unix_ms(SystemTime::now()))).await.is_err() {
                return;
            }
        }
    })
}

/// Turns SIGINT, SIGTERM and SIGHUP into [`Event::Terminate`].
fn spawn_signals(sender: mpsc::Sender<Event>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut interrupt), Ok(mut terminate), Ok(mut hangup)) =
                (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()))
            else {
                return;
            };
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
                _ = hangup.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
        }
        let _ = sender.send(Event::Terminate).await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(secret: Option<&str>, data_dir: Option<PathBuf>) -> TopArgs {
        TopArgs {
            gateway: "http://127.0.0.1:8080".into(),
            interval: Duration::from_secs(1),
            cluster_secret: secret.map(str::to_string),
            data_dir,
        }
    }

    #[test]
    fn the_secret_comes_from_the_flag_or_the_data_dir_and_is_never_generated() {
        assert_eq!(args(Some("abc"), None).resolve_secret().unwrap().expose(), "abc");
        let dir = tempfile::tempdir().unwrap();
        let error = args(None, Some(dir.path().to_path_buf())).resolve_secret().unwrap_err();
        assert_eq!(crate::error::exit_code_of(&error), crate::error::exit::USAGE);
        assert!(error.to_string().contains("--cluster-secret"), "{error}");
        assert!(!dir.path().join(CLUSTER_SECRET_FILE).exists(), "top must not generate a secret");
        std::fs::write(dir.path().join(CLUSTER_SECRET_FILE), "s3cret\n").unwrap();
        assert_eq!(args(None, Some(dir.path().to_path_buf())).resolve_secret().unwrap().expose(), "s3cret");
        assert!(!format!("{:?}", args(Some("abc"), None)).contains("abc"));
    }

    #[test]
    fn intervals_are_bounded() {
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_interval("10ms").unwrap_err().contains("100ms"));
        assert!(parse_interval("2h").is_err());
        assert!(parse_interval("fast").is_err());
    }
}
