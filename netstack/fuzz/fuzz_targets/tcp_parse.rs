//! Arbitrary bytes into the TCP segment parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netstack::tcp::fuzzing::parse_segment(data));
