//! Procedural macros for [wsu](https://docs.rs/wsu). Do not depend on this crate directly: use the
//! re-exports of the `wsu` crate (`wsu::ws_event`, `wsu::ws_connect`, `wsu::ws_disconnect`), whose
//! documentation has the examples.
//!
//! The macros are thin: they check the function's shape, report each mistake once under the
//! offending token, keep the function unchanged, and emit one `inventory::submit!` inside an
//! anonymous `const _: () = { ... };` (no named items reach the user's module).

use proc_macro::TokenStream;

mod args;
mod emit;
mod signature;

/// Turn an `async fn` into a registered event handler. See `wsu::ws_event`.
#[proc_macro_attribute]
pub fn ws_event(attr: TokenStream, item: TokenStream) -> TokenStream {
    emit::expand(emit::Macro::Event, attr.into(), item.into()).into()
}

/// Register an `async fn` as a namespace connect hook. See `wsu::ws_connect`.
#[proc_macro_attribute]
pub fn ws_connect(attr: TokenStream, item: TokenStream) -> TokenStream {
    emit::expand(emit::Macro::Connect, attr.into(), item.into()).into()
}

/// Register an `async fn` as a namespace disconnect hook. See `wsu::ws_disconnect`.
#[proc_macro_attribute]
pub fn ws_disconnect(attr: TokenStream, item: TokenStream) -> TokenStream {
    emit::expand(emit::Macro::Disconnect, attr.into(), item.into()).into()
}
