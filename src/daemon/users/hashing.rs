//! Bounded password hashing: argon2id costs 19 MiB and tens of milliseconds of
//! one core per hash, so unbounded sign-ups and logins would exhaust memory and
//! starve everything else (the database pool's connections included). At most
//! `slots` hashes run at once (about one per core); a request waits for a slot
//! at most `queue_deadline`, then gets 503 with `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::auth::password;
use crate::error::ApiError;

/// Default longest wait for a hashing slot.
pub const DEFAULT_QUEUE_DEADLINE: Duration = Duration::from_secs(5);

/// The hashing slots. Cheap to share behind the service state.
#[derive(Debug)]
pub struct PasswordHasher {
    slots: Arc<Semaphore>,
    queue_deadline: Duration,
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new(default_slots(), DEFAULT_QUEUE_DEADLINE)
    }
}

/// One slot per available core.
pub fn default_slots() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

impl PasswordHasher {
    /// At most `slots` (at least 1) hashes at once; waits at most `queue_deadline` for one.
    pub fn new(slots: usize, queue_deadline: Duration) -> Self {
        Self { slots: Arc::new(Semaphore::new(slots.max(1))), queue_deadline }
    }

    /// Hashes a new password (sign-up).
    pub async fn hash(&self, pass: &str) -> Result<String, ApiError> {
        let pass = pass.to_string();
        self.run(move || password::hash(&pass)).await?.map_err(|error| ApiError::internal(error.to_string()))
    }

    /// Whether `pass` matches the stored PHC string (login).
    pub async fn verify(&self, pass: &str, stored: String) -> Result<bool, ApiError> {
        let pass = pass.to_string();
        self.run(move || password::verify(&pass, &stored)).await
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let busy = || {
            let mut error = ApiError::unavailable("the server is busy checking other passwords; retry in a moment");
            error.retry_after = Some(1);
            error
        };
        let permit = tokio::time::timeout(self.queue_deadline, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        tokio::task::spawn_blocking(move || {
            let outcome = work();
            drop(permit);
            outcome
        })
        .await
        .map_err(|error| ApiError::internal(format!("password hashing failed: {error}")))
    }

    /// Hashing slots free right now.
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_that_cannot_get_a_slot_in_time_gets_503_with_retry_after() {
        let hasher = PasswordHasher::new(1, Duration::from_millis(50));
        let held = hasher.slots.clone().acquire_owned().await.unwrap();
        let error = hasher.hash("password-123").await.unwrap_err();
        assert_eq!(error.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.retry_after, Some(1));
        drop(held);
        let hash = hasher.hash("password-123").await.unwrap();
        assert!(hasher.verify("password-123", hash).await.unwrap());
        assert_eq!(hasher.free_slots(), 1, "the slot is given back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_hashes_run_at_once_than_there_are_slots() {
        let hasher = Arc::new(PasswordHasher::new(2, Duration::from_secs(60)));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (hasher, running, most) = (hasher.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    hasher
                        .run(move || {
                            use std::sync::atomic::Ordering::SeqCst;
                            let now = running.fetch_add(1, SeqCst) + 1;
                            most.fetch_max(now, SeqCst);
                            let _ = password::hash("password-123");
                            running.fetch_sub(1, SeqCst);
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let most = most.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} hashes ran at once");
    }
}
