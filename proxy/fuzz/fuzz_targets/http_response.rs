//! Arbitrary bytes into the HTTP/1.1 response path (see proxy::http::fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxy::http::fuzzing::response(data));
