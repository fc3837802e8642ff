//! Throttles of the unauthenticated endpoints, kept in memory (a restart
//! forgets them) and bounded in size:
//!
//! - [`LoginThrottle`]: too many failed logins for one email or from one
//!   client address within a window → 429 with `Retry-After` until the oldest
//!   failure leaves the window. An attempt is counted when it begins, in the
//!   same critical section as the check, so parallel guesses cannot slip past.
//! - [`SignupLimit`]: sign-ups per client address within an hour.
//!
//! Client addresses are counted by [`address_key`]: per IPv4 address and per IPv6 /64.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::extract::address_key;
use crate::sync::Lock;

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

/// Most keys one window tracks at once; beyond this (after dropping the
/// expired ones), new keys are not tracked until old ones expire. The other
/// limits still apply, and password hashing is bounded on its own.
const MAX_TRACKED: usize = 100_000;

/// Events per key within a sliding window, at most `limit` remembered per key.
#[derive(Debug)]
struct SlidingWindow {
    limit: usize,
    window: Duration,
    events: HashMap<String, VecDeque<Instant>>,
}

impl SlidingWindow {
    fn new(limit: usize, window: Duration) -> Self {
        Self { limit, window, events: HashMap::new() }
    }

    /// How long until `key` may have one more event (zero: now).
    fn wait(&mut self, key: &str, now: Instant) -> Duration {
        let Some(log) = self.events.get_mut(key) else { return Duration::ZERO };
        while log.front().is_some_and(|at| now.duration_since(*at) >= self.window) {
            log.pop_front();
        }
        if log.len() < self.limit {
            return Duration::ZERO;
        }
        let oldest_relevant = log[log.len() - self.limit];
        self.window.saturating_sub(now.duration_since(oldest_relevant)).max(Duration::from_millis(1))
    }

    fn record(&mut self, key: &str, now: Instant) {
        if self.events.len() >= MAX_TRACKED && !self.events.contains_key(key) {
            let window = self.window;
            self.events.retain(|_, log| log.back().is_some_and(|at| now.duration_since(*at) < window));
            if self.events.len() >= MAX_TRACKED {
                return;
            }
        }
        let log = self.events.entry(key.to_string()).or_default();
        log.push_back(now);
        while log.len() > self.limit {
            log.pop_front();
        }
    }

    /// Takes back the event of `key` recorded at `at`.
    fn forget(&mut self, key: &str, at: Instant) {
        if let Some(log) = self.events.get_mut(key) {
            if let Some(position) = log.iter().position(|recorded| *recorded == at) {
                log.remove(position);
            }
            if log.is_empty() {
                self.events.remove(key);
            }
        }
    }

    fn clear(&mut self, key: &str) {
        self.events.remove(key);
    }
}

/// The failed-login windows per email and per address. A std Mutex is fine:
/// every critical section is a few map operations and never awaits.
#[derive(Debug)]
pub struct LoginThrottle {
    windows: Mutex<LoginWindows>,
}

#[derive(Debug)]
struct LoginWindows {
    per_email: SlidingWindow,
    per_address: SlidingWindow,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(ThrottlePolicy::default())
    }
}

impl LoginThrottle {
    /// A throttle with `policy`.
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            windows: Mutex::new(LoginWindows {
                per_email: SlidingWindow::new(policy.per_email, policy.window),
                per_address: SlidingWindow::new(policy.per_address, policy.window),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoginWindows> {
        self.windows.locked()
    }

    /// Starts a login attempt: `Err(retry_after)` when this email or address
    /// has used up its failures; otherwise the attempt is counted as a failure
    /// at once, in the same critical section as the check, so parallel attempts
    /// cannot all pass the check before any of them is recorded. The returned
    /// [`Attempt`] takes the count back if the login succeeds.
    pub fn begin(&self, email: &str, address: &str) -> Result<Attempt<'_>, Duration> {
        let now = Instant::now();
        let address = address_key(address);
        let mut windows = self.lock();
        let wait = windows.per_email.wait(email, now).max(windows.per_address.wait(&address, now));
        if !wait.is_zero() {
            return Err(wait);
        }
        windows.per_email.record(email, now);
        windows.per_address.record(&address, now);
        Ok(Attempt { throttle: self, email: email.to_string(), address, at: now })
    }
}

/// A login attempt already counted as a failure by [`LoginThrottle::begin`];
/// dropping it leaves it counted.
#[derive(Debug)]
#[must_use = "a dropped attempt counts as a failed login"]
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    email: String,
    address: String,
    at: Instant,
}

impl Attempt<'_> {
    /// The password was wrong (or the email unknown): the attempt stays counted.
    pub fn failed(self) {}

    /// The login succeeded: the email's failures are forgotten, and this
    /// attempt no longer counts against the address.
    pub fn succeeded(self) {
        let mut windows = self.throttle.lock();
        windows.per_email.clear(&self.email);
        windows.per_address.forget(&self.address, self.at);
    }

    /// The attempt could not be judged (the server failed or was too busy):
    /// it counts neither against the email nor the address.
    pub fn not_judged(self) {
        let mut windows = self.throttle.lock();
        windows.per_email.forget(&self.email, self.at);
        windows.per_address.forget(&self.address, self.at);
    }
}

/// Default sign-ups allowed per client address and hour.
pub const DEFAULT_SIGNUPS_PER_HOUR: usize = 20;

/// Sign-ups per client address within an hour; `0` turns the limit off.
#[derive(Debug)]
pub struct SignupLimit {
    window: Option<Mutex<SlidingWindow>>,
}

impl SignupLimit {
    /// At most `per_hour` sign-ups per address and hour (none when `0`).
    pub fn new(per_hour: usize) -> Self {
        let window = (per_hour > 0).then(|| Mutex::new(SlidingWindow::new(per_hour, Duration::from_secs(3600))));
        Self { window }
    }

    /// Counts a sign-up attempt from `address`; `Err(retry_after)` when the
    /// address has used up its sign-ups for the hour.
    pub fn take(&self, address: &str) -> Result<(), Duration> {
        let Some(window) = &self.window else { return Ok(()) };
        let now = Instant::now();
        let address = address_key(address);
        let mut window = window.locked();
        let wait = window.wait(&address, now);
        if !wait.is_zero() {
            return Err(wait);
        }
        window.record(&address, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_email: usize, per_address: usize, window: Duration) -> LoginThrottle {
        LoginThrottle::new(ThrottlePolicy { per_email, per_address, window })
    }

    #[test]
    fn blocks_after_the_limit_per_email_and_per_address() {
        let throttle = throttle(2, 3, Duration::from_secs(60));
        throttle.begin("a@x.io", "1.1.1.1").unwrap().failed();
        throttle.begin("a@x.io", "1.1.1.1").unwrap().failed();
        let wait = throttle.begin("a@x.io", "2.2.2.2").unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60), "{wait:?}");
        throttle.begin("b@x.io", "1.1.1.1").expect("the address has one failure left").failed();
        assert!(throttle.begin("c@x.io", "1.1.1.1").is_err(), "address limit reached");
        throttle.begin("c@x.io", "3.3.3.3").expect("another address").succeeded();
    }

    #[test]
    fn success_clears_the_email_and_refunds_the_address() {
        let throttle = throttle(2, 2, Duration::from_secs(60));
        throttle.begin("a@x.io", "1.1.1.1").unwrap().failed();
        throttle.begin("a@x.io", "1.1.1.1").unwrap().succeeded();
        // The address has one failure left (the success was taken back), the email two.
        throttle.begin("a@x.io", "1.1.1.1").unwrap().failed();
        assert!(throttle.begin("b@x.io", "1.1.1.1").is_err());
        throttle.begin("a@x.io", "2.2.2.2").unwrap().not_judged();
        throttle.begin("a@x.io", "2.2.2.2").expect("an unjudged attempt does not count").failed();
        assert!(throttle.begin("a@x.io", "2.2.2.2").is_err(), "two failures for a@x.io");
    }

    #[test]
    fn attempts_count_when_they_begin() {
        // Attempts still being judged hold their place: parallel guesses beyond
        // the limit are refused before any of them is verified.
        let throttle = throttle(5, 100, Duration::from_secs(60));
        let begun: Vec<_> = (0..60).filter_map(|_| throttle.begin("a@x.io", "1.1.1.1").ok()).collect();
        assert_eq!(begun.len(), 5);
        begun.into_iter().for_each(Attempt::failed);
    }

    #[test]
    fn failures_leave_the_window() {
        let throttle = throttle(1, 10, Duration::from_millis(1));
        throttle.begin("a@x.io", "1.1.1.1").unwrap().failed();
        let start = Instant::now();
        while throttle.begin("a@x.io", "1.1.1.1").is_err() {
            assert!(start.elapsed() < Duration::from_secs(5), "the failure never expired");
            std::thread::yield_now();
        }
    }

    #[test]
    fn signups_are_limited_per_address_and_hour() {
        let limit = SignupLimit::new(2);
        limit.take("2001:db8::1").unwrap();
        limit.take("2001:db8::2").unwrap();
        let wait = limit.take("2001:db8::3").unwrap_err();
        assert!(wait > Duration::from_secs(3500) && wait <= Duration::from_secs(3600), "{wait:?}");
        limit.take("2001:db9::1").expect("another /64");
        let off = SignupLimit::new(0);
        assert!((0..100).all(|_| off.take("1.1.1.1").is_ok()));
    }

    #[test]
    fn the_tables_stay_bounded() {
        let mut window = SlidingWindow::new(1, Duration::from_secs(60));
        let now = Instant::now();
        for n in 0..MAX_TRACKED + 10 {
            window.record(&n.to_string(), now);
        }
        assert_eq!(window.events.len(), MAX_TRACKED);
    }
}
