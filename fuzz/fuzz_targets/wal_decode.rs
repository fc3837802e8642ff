//! Fuzzes the WAL decoders: a whole segment file (`decode_segment`) and a
//! single frame (`record::decode`). They must never panic, and whatever they
//! accept must re-encode to exactly the bytes they read.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ydht::wal::record::{self, Decoded};
use ydht::wal::segment;

fuzz_target!(|bytes: &[u8]| {
    if let Decoded::Record(found, used) = record::decode(bytes) {
        let mut again = Vec::new();
        record::encode(&found, &mut again).expect("a decoded record encodes");
        assert_eq!(again, &bytes[..used]);
    }
    let mut replayed = Vec::new();
    let (end, _) = segment::decode_segment(bytes, |found| replayed.push(found));
    assert!(end <= bytes.len());
    if end > 0 {
        let mut again = record::file_header(segment::WAL_MAGIC).to_vec();
        for found in &replayed {
            record::encode_entry(found, &mut again).expect("a decoded entry encodes");
        }
        assert_eq!(again, &bytes[..end]);
    }
});
