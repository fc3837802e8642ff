//! A server (node, replicator, …) run as a task inside the test process, for tests that
//! need no separate binary: started by the test with its own `Shutdown`, stopped on drop.

use tokio::task::JoinHandle;
use ydht::shutdown::Shutdown;

/// A server running in this process; dropping it triggers its shutdown.
pub struct InProcess {
    /// Its base URL.
    pub url: String,
    shutdown: Shutdown,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    /// Runs `serve` (a server future that stops when `shutdown` triggers) as a task.
    pub fn spawn<F>(url: String, shutdown: Shutdown, serve: F) -> Self
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self { url, shutdown, task: Some(tokio::spawn(serve)) }
    }

    /// Shuts it down and waits until it has stopped cleanly.
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}
