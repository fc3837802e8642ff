//! Fuzzes the `POST /batch` body decoder: it must never panic, and whatever
//! it accepts must re-encode to exactly the body it read.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ydht::wire::batch;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(records) = batch::decode(bytes) {
        assert_eq!(batch::encode(&records).expect("decoded records encode"), bytes);
    }
});
