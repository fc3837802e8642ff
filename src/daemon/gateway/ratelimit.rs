//! Per-user token buckets: `burst` tokens at most, refilled at `per_minute`
//! tokens per minute. A request takes one token or is refused with the time
//! until the next token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::sync::Lock;
use std::time::Instant;

/// One user's bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

/// The outcome of taking a token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Allowed; this many whole tokens are left.
    Allowed {
        /// Whole tokens left after this request.
        remaining: u64,
    },
    /// Refused; a token will be available after this long.
    Limited {
        /// Time until the next token.
        retry_after: Duration,
    },
}

/// The shared limiter; a std `Mutex` is fine because it is held for a few
/// arithmetic operations and never across an `.await`.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    burst: u32,
    buckets: Mutex<HashMap<i64, TokenBucket>>,
}

/// Buckets kept before full (idle) ones are dropped; a full bucket is the same as none.
const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    /// A limiter refilling `per_minute` tokens per minute up to `burst`; `per_minute == 0` disables it.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self { per_minute, burst: burst.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    /// Whether limiting is on.
    pub fn enabled(&self) -> bool {
        self.per_minute > 0
    }

    /// The per-minute rate, reported as `X-RateLimit-Limit`.
    pub fn limit(&self) -> u32 {
        self.per_minute
    }

    /// The bucket size: what `X-RateLimit-Remaining` shows for a user who has not spent any.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    fn refill_per_second(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    /// Takes one token from `user`'s bucket.
    pub fn check(&self, user: i64) -> Decision {
        self.check_at(user, Instant::now())
    }

    /// Takes one token from `user`'s bucket as of `now` (an explicit clock, for tests).
    pub fn check_at(&self, user: i64, now: Instant) -> Decision {
        if !self.enabled() {
            return Decision::Allowed { remaining: u64::from(self.burst) };
        }
        let capacity = f64::from(self.burst);
        let rate = self.refill_per_second();
        let mut buckets = self.buckets.locked();
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&user) {
            buckets.retain(|_, bucket| {
                bucket.tokens + now.saturating_duration_since(bucket.updated).as_secs_f64() * rate < capacity
            });
        }
        let bucket = buckets.entry(user).or_insert(TokenBucket { tokens: capacity, updated: now });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Decision::Allowed { remaining: bucket.tokens.floor() as u64 }
        } else {
            let missing = 1.0 - bucket.tokens;
            Decision::Limited { retry_after: Duration::from_secs_f64(missing / rate) }
        }
    }
}

impl RateLimiter {
    /// Takes `tokens` more from `user`'s bucket after a request was allowed (the further
    /// operations of a batch). The bucket may go below zero, down to one minute of refill: the
    /// user's next requests wait until it has refilled. Returns the whole tokens left.
    pub fn charge(&self, user: i64, tokens: u64) -> u64 {
        if !self.enabled() {
            return u64::from(self.burst);
        }
        let mut buckets = self.buckets.locked();
        let floor = -f64::from(self.per_minute);
        let bucket =
            buckets.entry(user).or_insert(TokenBucket { tokens: f64::from(self.burst), updated: Instant::now() });
        bucket.tokens = (bucket.tokens - tokens as f64).max(floor);
        bucket.tokens.max(0.0).floor() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_the_per_minute_rate() {
        let limiter = RateLimiter::new(60, 3);
        let start = Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        assert_eq!(limiter.check_at(1, at(0)), Decision::Allowed { remaining: 2 });
        assert_eq!(limiter.check_at(1, at(0)), Decision::Allowed { remaining: 1 });
        assert_eq!(limiter.check_at(1, at(0)), Decision::Allowed { remaining: 0 });
        let Decision::Limited { retry_after } = limiter.check_at(1, at(0)) else { panic!("fourth request is limited") };
        assert!(retry_after > Duration::from_millis(990) && retry_after <= Duration::from_secs(1), "{retry_after:?}");
        // Another user has a bucket of their own.
        assert_eq!(limiter.check_at(2, at(0)), Decision::Allowed { remaining: 2 });
        // 60/minute = one token per second.
        assert_eq!(limiter.check_at(1, at(1000)), Decision::Allowed { remaining: 0 });
        assert!(matches!(limiter.check_at(1, at(1000)), Decision::Limited { .. }));
        // A long pause refills only up to the burst.
        assert_eq!(limiter.check_at(1, at(3_600_000)), Decision::Allowed { remaining: 2 });
    }

    #[test]
    fn a_charge_takes_tokens_into_debt_that_later_requests_wait_out() {
        let limiter = RateLimiter::new(60, 10);
        let start = Instant::now();
        assert_eq!(limiter.check_at(1, start), Decision::Allowed { remaining: 9 });
        assert_eq!(limiter.charge(1, 19), 0, "ten tokens into debt");
        let Decision::Limited { retry_after } = limiter.check_at(1, start) else { panic!("in debt") };
        assert!((10_900..=11_000).contains(&retry_after.as_millis()), "{retry_after:?}");
        assert!(matches!(limiter.check_at(1, start + Duration::from_secs(11)), Decision::Allowed { remaining: 0 }));
        // The debt is bounded by a minute of refill.
        assert_eq!(limiter.charge(2, 1_000_000), 0);
        let Decision::Limited { retry_after } = limiter.check_at(2, Instant::now()) else { panic!("in debt") };
        assert!(retry_after <= Duration::from_secs(61), "{retry_after:?}");
        assert_eq!(RateLimiter::new(0, 10).charge(3, 5), 10, "off: nothing is taken");
    }

    #[test]
    fn default_rate_refills_one_token_every_600_ms() {
        let limiter = RateLimiter::new(100, 10);
        let start = Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        for expected in (0..10).rev() {
            assert_eq!(limiter.check_at(7, at(0)), Decision::Allowed { remaining: expected });
        }
        let Decision::Limited { retry_after } = limiter.check_at(7, at(0)) else { panic!("burst exhausted") };
        assert!((599..=600).contains(&retry_after.as_millis()), "{retry_after:?}");
        assert!(matches!(limiter.check_at(7, at(590)), Decision::Limited { .. }));
        assert_eq!(limiter.check_at(7, at(610)), Decision::Allowed { remaining: 0 });
    }

    #[test]
    fn zero_per_minute_disables_limiting() {
        let limiter = RateLimiter::new(0, 1);
        assert!(!limiter.enabled());
        for _ in 0..1000 {
            assert!(matches!(limiter.check(1), Decision::Allowed { .. }));
        }
    }
}
