//! Arbitrary text as the data plane's YAML configuration (see
//! dataplane_config::fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dataplane_config::fuzzing::config_yaml(data));
