//! Fuzzes the replicator's `POST /jobs` body decoder: it must never panic, and
//! whatever it accepts must re-encode to exactly the body it read.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ydht::wire::jobs;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(decoded) = jobs::decode(bytes) {
        let again = jobs::encode(decoded.iter().map(|job| (job.targets.as_str(), job.record.borrowed())))
            .expect("decoded jobs encode");
        assert_eq!(again, bytes);
    }
});
