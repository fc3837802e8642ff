//! Fuzzes the snapshot decoder: it must never panic, and when it accepts a
//! file the count it returns is the number of records it handed over.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ydht::wal::snapshot;

fuzz_target!(|bytes: &[u8]| {
    let mut loaded = 0usize;
    if let Ok(count) = snapshot::decode(bytes, |_| loaded += 1) {
        assert_eq!(count, loaded);
    }
});
