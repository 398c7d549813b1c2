#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pdx_node::fuzzing::he_proof(data));
