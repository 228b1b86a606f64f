//! A connection in some state of its life, driven by arbitrary segments,
//! time and user calls.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netstack::tcp::fuzzing::drive_connection(data));
