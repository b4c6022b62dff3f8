//! Hygiene: generated code adds no named items and no warnings. User items are named like
//! anything the macro could generate, and strict lints are denied.
#![deny(
    warnings,
    missing_docs,
    unused,
    non_snake_case,
    non_upper_case_globals,
    unreachable_pub,
    unused_qualifications,
    unused_results,
    unused_import_braces,
    trivial_casts,
    trivial_numeric_casts,
    single_use_lifetimes,
    rust_2018_idioms,
    missing_debug_implementations,
    clippy::all
)]
#![allow(unknown_lints)]

/// Handlers, with items named like the macro's locals and helpers.
pub mod handlers {
    use wsu::{DisconnectReason, Server, Socket, State, ws_connect, ws_disconnect, ws_event};

    /// A constant named like the generated socket binding (a pattern would match against it
    /// if the generated code used a plain identifier).
    #[allow(non_upper_case_globals)]
    pub const __wsu_socket: u8 = 1;
    /// A unit struct named like the generated payload binding.
    #[allow(non_camel_case_types)]
    #[derive(Debug)]
    pub struct __wsu_data;
    /// A static named like a generated argument.
    #[allow(non_upper_case_globals)]
    pub static __wsu_arg0: u8 = 0;
    /// A unit struct named like the reason binding.
    #[allow(non_camel_case_types)]
    #[derive(Debug)]
    pub struct __wsu_reason;
    /// Named like the generated binding of a decoded value.
    #[allow(non_upper_case_globals)]
    pub const __wsu_value: u8 = 0;
    /// Named like the generated binding of an extractor error.
    #[allow(non_camel_case_types)]
    #[derive(Debug)]
    pub struct __wsu_error;
    /// Short names generated code must not bind either.
    #[allow(non_upper_case_globals)]
    pub const e: u8 = 0;
    /// Short names generated code must not bind either.
    #[allow(non_upper_case_globals)]
    pub const v: u8 = 0;
    /// Names a macro could choose for generated helpers.
    #[allow(non_upper_case_globals)]
    pub const __WSU_REGISTRATION_echo: u8 = 2;
    /// Names a macro could choose for generated helpers.
    #[derive(Debug)]
    pub struct EchoRegistration;
    /// Names a macro could choose for generated helpers.
    pub mod __wsu_echo {}

    /// A handler named like the generated socket binding.
    #[ws_event]
    pub async fn __wsu_arg1(socket: Socket, text: String) -> String {
        let _ = socket.id();
        text
    }

    /// Echo the text.
    #[ws_event]
    pub async fn echo(text: String, server: Server, state: State<Shared>) -> String {
        let _ = server.stats();
        let _ = state.0;
        text
    }

    /// State.
    #[derive(Debug)]
    pub struct Shared(pub u8);

    /// A connect hook.
    #[ws_connect(namespace = "/lint")]
    pub async fn connected(socket: Socket) -> Result<(), String> {
        let _ = socket.id();
        Ok(())
    }

    /// A disconnect hook that ignores the reason.
    #[ws_disconnect(namespace = "/lint")]
    pub async fn disconnected(socket: Socket) {
        let _ = socket.id();
    }

    /// A disconnect hook with the reason.
    #[ws_disconnect]
    pub async fn gone(reason: DisconnectReason, socket: Socket) {
        let _ = (reason, socket.id());
    }
}

/// A handler named like a generated binding (`__wsu_data`), next to a `const` named like
/// another one (`__wsu_reason`), at the crate root.
#[wsu::ws_event(namespace = "/lint")]
pub async fn __wsu_data(_: (), socket: wsu::Socket) -> String {
    socket.namespace().to_owned()
}

/// Named like the generated reason binding.
#[allow(non_upper_case_globals)]
pub const __wsu_reason: u8 = 0;

/// A user fn named like the generated socket binding, at the crate root.
pub fn __wsu_socket() -> u8 {
    handlers::__wsu_socket + handlers::__wsu_arg0 + handlers::__WSU_REGISTRATION_echo
}

fn main() {
    let server = wsu::Server::builder()
        .state(handlers::Shared(1))
        .build()
        .expect("build");
    let names: Vec<String> = server.events().into_iter().map(|e| e.event).collect();
    assert_eq!(names, ["__wsu_arg1", "echo", "__wsu_data"]);
    assert_eq!(__wsu_socket(), 3);
    let _ = (
        handlers::__wsu_data,
        handlers::__wsu_reason,
        handlers::__wsu_error,
        handlers::EchoRegistration,
    );
    let _ = (
        handlers::__wsu_value,
        handlers::e,
        handlers::v,
        __wsu_reason,
        __wsu_data,
    );
}
