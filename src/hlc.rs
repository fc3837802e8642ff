//! Hybrid logical clock: versions that follow wall-clock time but never go
//! backwards and never repeat within a process.
//!
//! A version is a `u64`: the upper 48 bits are Unix milliseconds, the lower 16
//! a logical counter for events within the same millisecond (or while the
//! wall clock lags behind a version already seen).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const LOGICAL_BITS: u32 = 16;

/// A shareable clock; `now` is lock-free.
#[derive(Debug, Default)]
pub struct Hlc {
    last: AtomicU64,
}

/// Packs wall-clock milliseconds into the physical part of a version.
pub fn from_millis(millis: u64) -> u64 {
    millis << LOGICAL_BITS
}

/// The wall-clock milliseconds of a version.
pub fn millis_of(version: u64) -> u64 {
    version >> LOGICAL_BITS
}

/// Wall-clock Unix milliseconds (0 if the clock is before 1970).
pub fn wall_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

impl Hlc {
    /// A clock that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new version, greater than every version this clock issued or observed.
    pub fn now(&self) -> u64 {
        let physical = from_millis(wall_millis());
        let mut previous = self.last.load(Ordering::Relaxed);
        loop {
            let next = physical.max(previous + 1);
            match self.last.compare_exchange_weak(previous, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(actual) => previous = actual,
            }
        }
    }

    /// Records a version seen elsewhere so later `now()` values exceed it.
    pub fn observe(&self, version: u64) {
        self.last.fetch_max(version, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn versions_strictly_increase_and_track_wall_time() {
        let clock = Hlc::new();
        let before = wall_millis();
        let mut last = 0;
        for _ in 0..10_000 {
            let version = clock.now();
            assert!(version > last);
            last = version;
        }
        assert!(millis_of(last) >= before);
    }

    #[test]
    fn observed_versions_are_exceeded() {
        let clock = Hlc::new();
        let future = from_millis(wall_millis() + 60_000) + 7;
        clock.observe(future);
        assert!(clock.now() > future);
    }

    #[test]
    fn concurrent_callers_never_share_a_version() {
        let clock = Arc::new(Hlc::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let clock = Arc::clone(&clock);
                std::thread::spawn(move || (0..5_000).map(|_| clock.now()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = handles.into_iter().flat_map(|handle| handle.join().unwrap()).collect();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count);
    }
}
