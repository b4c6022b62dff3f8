//! Hygiene: the user's module shadows prelude and std names, and has local modules named `wsu`,
//! `serde`, `core`, `std` and `inventory`; the generated code must still resolve.
#![deny(warnings)]
#![allow(dead_code, non_camel_case_types)]

mod handlers {
    // Shadow prelude types and traits used by generated code.
    struct Result;
    struct Option;
    struct Box;
    struct String;
    struct Vec;
    struct Ok;
    struct Err;
    struct Some;
    struct None;
    trait Send {}
    trait Sync {}
    trait Future {}
    trait Fn {}
    trait FnOnce {}
    // Local modules named like the crates the generated code reaches.
    mod wsu {}
    mod serde {}
    mod serde_json {}
    mod inventory {}
    mod core {}
    mod std {}
    // Shadowing macros the generated code might call.
    #[allow(unused_macros)]
    macro_rules! line {
        () => {
            "not a line"
        };
    }
    #[allow(unused_macros)]
    macro_rules! file {
        () => {
            0
        };
    }
    #[allow(unused_macros)]
    macro_rules! submit {
        () => {};
    }

    #[derive(::serde::Deserialize)]
    pub(crate) struct ChatMessage {
        pub(crate) user: ::std::string::String,
    }

    #[::wsu::ws_event(name = "chat")]
    pub(crate) async fn chat(
        socket: ::wsu::Socket,
        msg: ChatMessage,
    ) -> ::core::result::Result<::std::string::String, ::wsu::HandlerError> {
        let _ = socket;
        ::core::result::Result::Ok(msg.user)
    }

    #[::wsu::ws_connect(namespace = "/shadow")]
    pub(crate) async fn join(state: ::wsu::State<u8>) -> ::core::result::Result<(), &'static str> {
        let _ = state;
        ::core::result::Result::Ok(())
    }

    #[::wsu::ws_disconnect(namespace = "/shadow")]
    pub(crate) async fn leave(reason: ::wsu::DisconnectReason) {
        let _ = reason;
    }
}

fn main() {
    let server = ::wsu::Server::builder().state(7u8).build().expect("build");
    let events = server.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "chat");
    assert!(
        events[0]
            .location
            .as_deref()
            .is_some_and(|l| l.ends_with("hygiene_shadowed_names.rs:53")),
        "{events:?}"
    );
    let _ = handlers::chat;
}
