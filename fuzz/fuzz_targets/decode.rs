//! The envelope decoder as a pure function: no panic, a typed error with a bounded message,
//! and decode(encode(x)) == x for what the encoder can carry. See `wsu::__private::fuzz::decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsu::__private::fuzz::decode(data));
