//! Procedural macros for [wsu](https://docs.rs/wsu). Do not depend on this crate directly: use the
//! re-exports of the `wsu` crate.
