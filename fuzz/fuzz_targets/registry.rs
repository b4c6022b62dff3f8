//! A stateful driver of the registry (connect / join / leave / emit / broadcast / acks /
//! disconnect) checked against a model after every step. See `wsu::__private::fuzz::registry`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsu::__private::fuzz::registry(data));
