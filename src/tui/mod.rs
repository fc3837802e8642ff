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

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use clap::Args;
use ratatui::DefaultTerminal;
use tokio::sync::mpsc;

use crate::client::{GatewayClient, OperatorArgs};
use crate::error::Exit;
pub use state::App;
pub use update::{Event, Flow};

/// Flags of `ydht top`.
#[derive(Args, Clone, Debug)]
pub struct TopArgs {
    /// How often to poll the services, e.g. 500ms, 1s, 5s
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub interval: Duration,

    /// Where the cluster secret comes from.
    #[command(flatten)]
    pub operator: OperatorArgs,

    /// The gateway and the config dir.
    #[command(flatten)]
    pub client: GatewayClient,
}

/// Shortest accepted `--interval`.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest accepted `--interval`.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// Why an `--interval` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum IntervalError {
    /// Not a duration.
    #[error(transparent)]
    Duration(#[from] crate::duration::DurationError),
    /// Too short or too long.
    #[error("interval {0:?} is out of range; use 100ms to 1h")]
    OutOfRange(String),
}

fn parse_interval(text: &str) -> Result<Duration, IntervalError> {
    let interval = crate::duration::parse(text)?;
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
        return Err(IntervalError::OutOfRange(text.to_string()));
    }
    Ok(interval)
}

impl TopArgs {
    /// Runs the dashboard until the user quits.
    /// `gateway` is the base URL resolved from `--gateway` / the config file.
    pub async fn run(self, gateway: &str) -> anyhow::Result<()> {
        let secret = self.operator.require_cluster_secret("ydht top")?;
        if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
            return Err(
                Exit::usage("ydht top needs an interactive terminal; for a one-shot report use `ydht status`").into()
            );
        }
        let timeout = self.interval.clamp(Duration::from_secs(1), Duration::from_secs(5));
        let poller = poller::Poller::new(gateway, secret, timeout)?;
        let app = App::new(gateway.trim_end_matches('/'), self.interval);
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

    #[test]
    fn intervals_are_bounded() {
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_interval("10ms").unwrap_err().to_string().contains("100ms"));
        assert!(parse_interval("2h").is_err());
        assert!(parse_interval("fast").is_err());
    }
}
