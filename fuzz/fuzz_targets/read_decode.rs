//! Fuzzes the `POST /read` request and answer decoders: they must never panic,
//! and whatever they accept must re-encode to exactly the bytes read.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ydht::wire::read;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(keys) = read::decode_request(bytes) {
        assert_eq!(read::encode_request(keys.iter().copied()).expect("decoded keys encode"), bytes);
    }
    let claimed = bytes.get(8..12).map_or(0, |count| u32::from_le_bytes(count.try_into().unwrap()) as usize);
    if let Ok(entries) = read::decode_answer(&bytes.to_vec().into(), claimed) {
        let lookups: Vec<_> = entries.into_iter().map(read::Entry::into_lookup).collect();
        assert_eq!(read::encode_answer(&lookups), bytes);
    }
});
