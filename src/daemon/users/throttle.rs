//! Login throttling: too many failed logins for one email or from one client
//! address within a window → 429 with `Retry-After` until the oldest failure
//! leaves the window. Kept in memory (a restart forgets it), bounded in size.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits of the login throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failed logins allowed per email within `window`.
    pub per_email: usize,
    /// Failed logins allowed per client address within `window`.
    pub per_address: usize,
    /// The sliding window.
    pub window: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self { per_email: 5, per_address: 20, window: Duration::from_secs(15 * 60) }
    }
}

/// Most keys tracked at once; beyond this, failures for new keys are not
/// tracked until old ones expire (the address limit still applies).
const MAX_TRACKED: usize = 100_000;

/// The failure log per key (`email:…` / `addr:…`). A std Mutex is fine: every
/// critical section is a few map operations and never awaits.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginThrottle {
    /// A throttle with `policy`.
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self { policy, failures: Mutex::new(HashMap::new()) }
    }

    fn keys(email: &str, address: &str) -> [(String, usize); 2] {
        [(format!("email:{email}"), 0), (format!("addr:{address}"), 1)]
    }

    fn limit(&self, which: usize) -> usize {
        if which == 0 { self.policy.per_email } else { self.policy.per_address }
    }

    /// `Err(retry_after)` when this email or address has used up its failures.
    pub fn check(&self, email: &str, address: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut wait = Duration::ZERO;
        for (key, which) in Self::keys(email, address) {
            if let Some(log) = failures.get_mut(&key) {
                while log.front().is_some_and(|at| now.duration_since(*at) >= self.policy.window) {
                    log.pop_front();
                }
                let limit = self.limit(which);
                if log.len() >= limit {
                    let oldest_relevant = log[log.len() - limit];
                    wait = wait.max(self.policy.window.saturating_sub(now.duration_since(oldest_relevant)));
                }
            }
        }
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    /// Records a failed login for this email and address.
    pub fn record_failure(&self, email: &str, address: &str) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if failures.len() >= MAX_TRACKED {
            let window = self.policy.window;
            failures.retain(|_, log| log.back().is_some_and(|at| now.duration_since(*at) < window));
        }
        for (key, which) in Self::keys(email, address) {
            if failures.len() >= MAX_TRACKED && !failures.contains_key(&key) {
                continue;
            }
            let limit = self.limit(which);
            let log = failures.entry(key).or_default();
            log.push_back(now);
            while log.len() > limit {
                log.pop_front();
            }
        }
    }

    /// Forgets the failures of `email` after a successful login.
    pub fn clear_email(&self, email: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        failures.remove(&format!("email:{email}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_per_email_and_per_address() {
        let policy = ThrottlePolicy { per_email: 2, per_address: 3, window: Duration::from_secs(60) };
        let throttle = LoginThrottle::new(policy);
        throttle.record_failure("a@x.io", "1.1.1.1");
        assert!(throttle.check("a@x.io", "1.1.1.1").is_ok());
        throttle.record_failure("a@x.io", "1.1.1.1");
        let wait = throttle.check("a@x.io", "2.2.2.2").unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60), "{wait:?}");
        assert!(throttle.check("b@x.io", "1.1.1.1").is_ok(), "address still has one failure left");
        throttle.record_failure("b@x.io", "1.1.1.1");
        assert!(throttle.check("c@x.io", "1.1.1.1").is_err(), "address limit reached");
        assert!(throttle.check("c@x.io", "3.3.3.3").is_ok());
        throttle.clear_email("a@x.io");
        assert!(throttle.check("a@x.io", "2.2.2.2").is_ok());
    }

    #[test]
    fn failures_leave_the_window() {
        let policy = ThrottlePolicy { per_email: 1, per_address: 10, window: Duration::from_millis(1) };
        let throttle = LoginThrottle::new(policy);
        throttle.record_failure("a@x.io", "1.1.1.1");
        let start = Instant::now();
        while throttle.check("a@x.io", "1.1.1.1").is_err() {
            assert!(start.elapsed() < Duration::from_secs(5), "the failure never expired");
            std::thread::yield_now();
        }
    }
}
