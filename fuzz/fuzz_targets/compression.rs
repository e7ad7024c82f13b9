#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cqlmirror_sim::fuzzing::compression(data));
