//! The one lock-poisoning policy.
//!
//! Every `std::sync` lock in ydht guards plain data (counters, caches, windows,
//! queues of handles) changed in steps that leave it whole at every point a
//! panic could unwind. A panic while holding one is a bug the panic hook has
//! already reported; the data itself is still usable, so the next holder takes
//! it as it is instead of spreading the panic to every later request. Take locks
//! with [`Lock::locked`], [`ReadWrite::reading`] and [`ReadWrite::writing`];
//! never `lock().unwrap()` or `lock().expect(..)`.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locking a [`Mutex`] by the policy above.
pub trait Lock<T: ?Sized> {
    /// The guard, whether or not an earlier holder panicked.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> Lock<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Locking an [`RwLock`] by the policy above.
pub trait ReadWrite<T: ?Sized> {
    /// A shared guard, whether or not an earlier holder panicked.
    fn reading(&self) -> RwLockReadGuard<'_, T>;
    /// An exclusive guard, whether or not an earlier holder panicked.
    fn writing(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> ReadWrite<T> for RwLock<T> {
    fn reading(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn writing(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_panic_while_holding_a_lock_does_not_spread_to_the_next_holder() {
        let counter = Arc::new(Mutex::new(1));
        let shared = Arc::clone(&counter);
        let panicked = std::thread::spawn(move || {
            let _held = shared.locked();
            panic!("a bug while holding the lock");
        })
        .join();
        assert!(panicked.is_err());
        assert!(counter.is_poisoned());
        *counter.locked() += 1;
        assert_eq!(*counter.locked(), 2);

        let table = Arc::new(RwLock::new(vec![1]));
        let shared = Arc::clone(&table);
        let _ = std::thread::spawn(move || {
            let _held = shared.writing();
            panic!("a bug while writing");
        })
        .join();
        table.writing().push(2);
        assert_eq!(*table.reading(), vec![1, 2]);
    }
}
