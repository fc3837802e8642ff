//! One shutdown signal shared by every task of a process.
//!
//! Servers take a [`Shutdown`] so tests can stop them without sending a
//! process signal, and `ydht serve all` can stop six services with one
//! Ctrl-C.

use tokio::sync::watch;

/// A cheap-clone handle: any clone can trigger shutdown, every clone can wait for it.
#[derive(Clone, Debug)]
pub struct Shutdown {
    sender: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A handle that has not been triggered yet.
    pub fn new() -> Self {
        let (sender, _) = watch::channel(false);
        Self { sender }
    }

    /// Asks every waiter to stop. Triggering twice is harmless.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Whether shutdown was already requested.
    pub fn is_triggered(&self) -> bool {
        *self.sender.borrow()
    }

    /// Completes once shutdown has been requested (immediately if it already was).
    pub async fn wait(&self) {
        let mut receiver = self.sender.subscribe();
        // An error means every sender is gone, which cannot happen while `self` lives.
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }

    /// Triggers this handle on the first SIGINT (Ctrl-C) or SIGTERM.
    pub fn trigger_on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested; draining in-flight requests");
            this.trigger();
        });
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_returns_after_trigger_from_a_clone() {
        let shutdown = Shutdown::new();
        let waiter = shutdown.clone();
        let task = tokio::spawn(async move { waiter.wait().await });
        assert!(!shutdown.is_triggered());
        shutdown.clone().trigger();
        task.await.unwrap();
        assert!(shutdown.is_triggered());
        // Waiting after the fact completes at once.
        shutdown.wait().await;
    }
}
