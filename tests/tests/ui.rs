//! Compile-time behaviour of `#[ws_event]`, `#[ws_connect]` and `#[ws_disconnect]`: every misuse
//! gives one error under the offending token (`ui/fail`, with the expected `.stderr`), and every
//! documented form, plus the hygiene cases, compiles and runs (`ui/pass`).
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test -p wsu-tests --test ui`
//! after a toolchain or dependency upgrade, then review them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/fail/*.rs");
    t.pass("ui/pass/*.rs");
}
