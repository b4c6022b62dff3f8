//! The per-connection protocol state machine fed arbitrary sequences of frames, completions,
//! drains, server acks and clock steps; every request with an `ackId` is answered exactly once.
//! See `wsu::__private::fuzz::dispatcher`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsu::__private::fuzz::dispatcher(data));
