//! Failed API-key checks per client address: past `per_minute` failures in a
//! minute, requests from that address whose key is not already known to be
//! valid get 429 with `Retry-After` until the minute is over, so a client
//! guessing keys cannot turn each guess into a users-service lookup.
//! Addresses are keyed by [`address_key`] (IPv6 per /64).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::extract::address_key;
use crate::sync::Lock;

/// Default failed key checks allowed per address and minute.
pub const DEFAULT_AUTH_FAILURES_PER_MINUTE: u32 = 30;

/// The window failures are counted in.
const WINDOW: Duration = Duration::from_secs(60);

/// Most addresses tracked at once; past it (after dropping windows that are
/// over), new addresses are not tracked until old ones expire. The negative
/// key cache still spares the users service repeated wrong keys.
const MAX_ADDRESSES: usize = 10_000;

/// Failure counts per address in fixed one-minute windows. A std `Mutex`:
/// held for a map operation, never across an `.await`.
#[derive(Debug)]
pub struct AuthFailures {
    per_minute: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl AuthFailures {
    /// At most `per_minute` failures per address and minute; `0` turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, windows: Mutex::new(HashMap::new()) }
    }

    /// How long `address` must wait before its key is checked again, if it used up its failures.
    pub fn blocked(&self, address: &str) -> Option<Duration> {
        self.blocked_at(address, Instant::now())
    }

    fn blocked_at(&self, address: &str, now: Instant) -> Option<Duration> {
        if self.per_minute == 0 {
            return None;
        }
        let windows = self.windows.locked();
        let (started, failures) = windows.get(&address_key(address))?;
        let left = WINDOW.saturating_sub(now.saturating_duration_since(*started));
        (*failures >= self.per_minute && !left.is_zero()).then_some(left)
    }

    /// Counts a failed key check from `address`.
    pub fn record(&self, address: &str) {
        self.record_at(address, Instant::now());
    }

    fn record_at(&self, address: &str, now: Instant) {
        if self.per_minute == 0 {
            return;
        }
        let key = address_key(address);
        let mut windows = self.windows.locked();
        if windows.len() >= MAX_ADDRESSES && !windows.contains_key(&key) {
            windows.retain(|_, (started, _)| now.saturating_duration_since(*started) < WINDOW);
            if windows.len() >= MAX_ADDRESSES {
                return;
            }
        }
        let window = windows.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(window.0) >= WINDOW {
            *window = (now, 0);
        }
        window.1 = window.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_past_its_failures_until_the_minute_is_over() {
        let failures = AuthFailures::new(3);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(failures.blocked_at("10.0.0.1", start), None);
            failures.record_at("10.0.0.1", start);
        }
        assert_eq!(failures.blocked_at("10.0.0.1", start), Some(WINDOW));
        assert_eq!(failures.blocked_at("10.0.0.1", start + Duration::from_secs(45)), Some(Duration::from_secs(15)));
        assert_eq!(failures.blocked_at("10.0.0.2", start), None, "another address");
        assert_eq!(failures.blocked_at("10.0.0.1", start + WINDOW), None, "a new minute");
        failures.record_at("10.0.0.1", start + WINDOW);
        assert_eq!(failures.blocked_at("10.0.0.1", start + WINDOW), None, "the count started over");
        let off = AuthFailures::new(0);
        (0..10).for_each(|_| off.record_at("10.0.0.1", start));
        assert_eq!(off.blocked_at("10.0.0.1", start), None);
    }

    #[test]
    fn the_table_stays_bounded() {
        let failures = AuthFailures::new(1);
        let now = Instant::now();
        for n in 0..MAX_ADDRESSES as u32 + 10 {
            failures.record_at(&std::net::Ipv4Addr::from(n).to_string(), now);
        }
        assert_eq!(failures.windows.locked().len(), MAX_ADDRESSES);
    }
}
