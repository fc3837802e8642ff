//! Rate-limited warnings: a failure that repeats per request (a node down, a
//! full queue) logs one line per interval with the count it held back, so an
//! outage cannot fill the disk with the same line.

use crate::sync::Lock;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets through one log line per interval and counts the ones it holds back.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    /// When the last line went out (`None`: never), and how many were held back since.
    /// A std mutex: held for two field updates, never across an await.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, state: Mutex::new((None, 0)) }
    }

    /// `Some(held back since the last line)` when a line may go out now; `None` (counted) otherwise.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.locked();
        let (last, suppressed) = &mut *state;
        if last.is_some_and(|last| now.duration_since(last) < self.interval) {
            *suppressed += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_one_line_through_per_interval_and_counts_the_rest() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(throttle.allow_at(start), Some(0));
        for second in 1..10 {
            assert_eq!(throttle.allow_at(start + Duration::from_secs(second)), None);
        }
        assert_eq!(throttle.allow_at(start + Duration::from_secs(10)), Some(9));
        assert_eq!(throttle.allow_at(start + Duration::from_secs(11)), None);
        assert_eq!(throttle.allow_at(start + Duration::from_secs(25)), Some(1));
    }
}
