//! Scripts of frames into a whole stack (see netstack::fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netstack::fuzzing::frames(data));
