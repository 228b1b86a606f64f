//! Arbitrary Envoy resources through the translation (see
//! control_agent::fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| control_agent::fuzzing::xds_resource(data));
