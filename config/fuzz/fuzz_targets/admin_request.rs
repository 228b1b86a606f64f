//! Arbitrary bytes as an admin socket request line (see
//! dataplane_config::fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dataplane_config::fuzzing::admin_request(data));
