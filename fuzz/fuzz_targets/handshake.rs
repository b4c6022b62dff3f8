//! The HTTP upgrade request reader, the upgrade validation and the Origin normalisation.
//! See `wsu::__private::fuzz::handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsu::__private::fuzz::handshake(data));
