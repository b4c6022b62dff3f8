//! `#[ws_event]`, `#[ws_connect]` and `#[ws_disconnect]` end to end: handlers defined in this
//! file, collected by default (or named explicitly), driven by raw JSON frames over a real
//! server.
//!
//! Every annotated function of this test binary is collected by every server built with the
//! default `collect_registered(true)`, so: each `(namespace, event)` pair appears once here (the
//! duplicate case is the `ui/pass/duplicate_handler.rs` program), hooks live in namespaces of
//! their own (`/admin`, `/gone`), and every default server gets the states they ask for from
//! [`default_server`]. State also keeps parallel tests apart: each server has its own.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use wsu::{
    BuildError, DisconnectReason, HandlerError, Server, ServerBuilder, Socket, State, ws_connect,
    ws_disconnect, ws_event,
};
use wsu_tests::{Client, Closed, TestServer, next};

// ---- Handlers ----------------------------------------------------------------------------

#[derive(Debug, Deserialize, Serialize)]
struct ChatMessage {
    user: String,
    message: String,
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
    echoed: String,
}

/// Line of `chat`'s name, for `Server::events()` locations.
const CHAT_LINE: u32 = line!() + 2;
#[ws_event(namespace = "/", name = "chat")]
async fn chat(socket: Socket, msg: ChatMessage) -> Status {
    assert_eq!(socket.namespace(), "/");
    Status {
        status: "ok",
        echoed: format!("{}: {}", msg.user, msg.message),
    }
}

/// Calls of `strict`, to check that a payload that does not decode never reaches it.
static STRICT_CALLS: AtomicUsize = AtomicUsize::new(0);

#[derive(Deserialize)]
struct Strict {
    n: u8,
}

#[ws_event]
async fn strict(payload: Strict) -> u8 {
    STRICT_CALLS.fetch_add(1, Ordering::SeqCst);
    payload.n
}

/// `()` return: an ack without `data`.
#[ws_event(name = "touch")]
async fn touch(_: ()) {}

#[derive(Serialize)]
struct Taken {
    suggestion: String,
}

#[ws_event]
async fn nick(name: String) -> Result<String, HandlerError> {
    if name == "admin" {
        return Err(HandlerError::new("nickname taken").with_data(&Taken {
            suggestion: format!("{name}_1"),
        }));
    }
    Ok(name)
}

/// The event name defaults to the function's name.
const SHOUT_LINE: u32 = line!() + 2;
#[ws_event]
async fn shout(text: String) -> String {
    text.to_uppercase()
}

/// A namespaced handler: its `Socket` is scoped to `/admin`.
#[ws_event(namespace = "/admin", name = "kick")]
async fn admin_kick(socket: Socket, id: String) -> String {
    format!("{} kicked {id}", socket.namespace())
}

/// Shared state of the default servers.
#[derive(Default)]
struct Counter(AtomicU64);

/// Where the `/gone` disconnect hook reports (one channel per server).
struct Reports(mpsc::UnboundedSender<String>);

/// Extractors before, around and after the payload.
#[ws_event]
async fn positions(
    server: Server,
    n: u64,
    socket: Socket,
    State(counter): State<Counter>,
) -> Value {
    let total = counter.0.fetch_add(n, Ordering::SeqCst) + n;
    json!({
        "namespace": socket.namespace(),
        "known_to_server": server.socket(*socket.id()).is_some(),
        "total": total,
    })
}

#[ws_event]
async fn state_first(counter: State<Counter>, _: ()) -> u64 {
    counter.0.0.load(Ordering::SeqCst)
}

/// Refuses `/admin` joins without the right `token` query parameter, naming the one it saw.
#[ws_connect(namespace = "/admin")]
async fn admin_only(socket: Socket) -> Result<(), String> {
    match socket.query("token") {
        Some("let-me-in") => Ok(()),
        other => Err(format!("admin token required (got {other:?})")),
    }
}

#[ws_disconnect(namespace = "/gone")]
async fn gone(reason: DisconnectReason, socket: Socket, State(reports): State<Reports>) {
    let _ = reports.0.send(format!(
        "{} left {}: {reason}",
        socket.id(),
        socket.namespace()
    ));
}

/// Not annotated: cannot be registered by name.
async fn plain(_: ()) {}

// ---- Helpers ---------------------------------------------------------------------------

/// A builder with the states the collected handlers need, and the `/gone` reports.
fn default_server() -> (ServerBuilder, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let builder = Server::builder()
        .state(Counter::default())
        .state(Reports(tx));
    (builder, rx)
}

async fn start_default() -> (TestServer, mpsc::UnboundedReceiver<String>) {
    let (builder, rx) = default_server();
    (
        TestServer::start(builder.build().expect("default build")).await,
        rx,
    )
}

/// Send `event` with `data` and `ackId` in `namespace`.
async fn request(c: &mut Client, namespace: &str, event: &str, data: Value, ack_id: &str) {
    c.send(json!({
        "type": "event", "namespace": namespace, "event": event, "data": data, "ackId": ack_id
    }))
    .await;
}

/// The location `Server::events()` reports for a function of this file at `line`.
fn here(line: u32) -> String {
    format!("{}:{line}", file!())
}

// ---- Acks --------------------------------------------------------------------------------

#[tokio::test]
async fn typed_payload_gives_a_typed_ack() {
    let (server, _) = start_default().await;
    let mut c = server.client().await;
    c.emit_ack("chat", json!({"user": "ann", "message": "hi"}), "1")
        .await;
    assert_eq!(
        c.recv_text().await,
        r#"{"type":"ack","namespace":"/","event":"chat","data":{"status":"ok","echoed":"ann: hi"},"ackId":"1"}"#
    );
    drop(c); // an unread client would hold up the closing handshake of `stop`
    server.stop().await;
}

#[tokio::test]
async fn unit_return_acks_without_data() {
    let (server, _) = start_default().await;
    let mut c = server.client().await;
    c.send(json!({"type": "event", "event": "touch", "ackId": "t"}))
        .await;
    assert_eq!(
        c.recv_text().await,
        r#"{"type":"ack","namespace":"/","event":"touch","ackId":"t"}"#
    );
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn result_ok_is_the_ack_and_err_is_an_error_with_the_ack_id_and_body() {
    let (server, _) = start_default().await;
    let mut c = server.client().await;
    c.emit_ack("nick", json!("ann"), "ok").await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "nick", "data": "ann", "ackId": "ok"})
    );
    c.emit_ack("nick", json!("admin"), "taken").await;
    assert_eq!(
        c.recv().await,
        json!({
            "type": "error", "namespace": "/", "event": "nick", "ackId": "taken",
            "error": "nickname taken", "data": {"suggestion": "admin_1"}
        })
    );
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn without_an_ack_id_a_value_is_dropped_but_an_error_is_reported() {
    let (server, _) = start_default().await;
    let mut c = server.client().await;
    c.send(json!({"type": "event", "event": "shout", "data": "quiet"}))
        .await;
    c.send(json!({"type": "event", "event": "nick", "data": "ann"}))
        .await;
    c.expect_quiet().await;
    c.send(json!({"type": "event", "event": "nick", "data": "admin"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({
            "type": "error", "namespace": "/", "event": "nick",
            "error": "nickname taken", "data": {"suggestion": "admin_1"}
        })
    );
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn a_payload_that_does_not_decode_is_answered_and_the_fn_is_not_called() {
    let (server, _) = start_default().await;
    let mut c = server.client().await;
    c.emit_ack("strict", json!({"n": 7}), "good").await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "strict", "data": 7, "ackId": "good"})
    );
    assert_eq!(STRICT_CALLS.load(Ordering::SeqCst), 1);

    for (data, ack_id, error) in [
        (
            json!({"n": 300}),
            "range",
            "invalid payload: invalid value: integer `300`, expected u8 at line 1 column 8",
        ),
        (
            json!({"m": 1}),
            "missing",
            "invalid payload: missing field `n` at line 1 column 7",
        ),
        (
            json!("n"),
            "type",
            "invalid payload: invalid type: string \"n\", expected struct Strict at line 1 column 3",
        ),
    ] {
        c.emit_ack("strict", data, ack_id).await;
        assert_eq!(
            c.recv().await,
            json!({"type": "error", "namespace": "/", "event": "strict", "ackId": ack_id, "error": error})
        );
    }
    // No `data` at all decodes from `null`, which a struct refuses too.
    c.send(json!({"type": "event", "event": "strict", "ackId": "none"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({
            "type": "error", "namespace": "/", "event": "strict", "ackId": "none",
            "error": "invalid payload: invalid type: null, expected struct Strict at line 1 column 4"
        })
    );
    assert_eq!(
        STRICT_CALLS.load(Ordering::SeqCst),
        1,
        "the fn ran on a bad payload"
    );
    drop(c);
    server.stop().await;
}

// ---- Names, namespaces, extractors --------------------------------------------------------

#[tokio::test]
async fn the_event_name_defaults_to_the_fn_name() {
    let (server, _) = start_default().await;
    let mut c = server.client().await;
    c.emit_ack("shout", json!("hey"), "s").await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "shout", "data": "HEY", "ackId": "s"})
    );
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn extractors_in_any_position_see_this_connection_server_and_state() {
    let (server, _) = start_default().await;
    let mut c = server.client().await;
    c.emit_ack("positions", json!(2), "p1").await;
    assert_eq!(
        c.recv().await["data"],
        json!({"namespace": "/", "known_to_server": true, "total": 2})
    );
    c.emit_ack("positions", json!(5), "p2").await;
    assert_eq!(
        c.recv().await["data"],
        json!({"namespace": "/", "known_to_server": true, "total": 7})
    );
    c.send(json!({"type": "event", "event": "state_first", "ackId": "s"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/", "event": "state_first", "data": 7, "ackId": "s"})
    );
    // The state belongs to the server: another server starts from zero.
    let (other, _) = start_default().await;
    let mut c2 = other.client().await;
    c2.emit_ack("positions", json!(1), "o").await;
    assert_eq!(c2.recv().await["data"]["total"], json!(1));
    drop((c, c2));
    server.stop().await;
    other.stop().await;
}

// ---- Hooks -------------------------------------------------------------------------------

#[tokio::test]
async fn connect_hook_refuses_a_namespace_join_with_a_reason_from_the_query() {
    let (server, _) = start_default().await;
    let mut c = server.client_with("/ws?token=wrong", &[]).await;
    c.send(json!({"type": "join", "namespace": "/admin", "ackId": "j"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({
            "type": "error", "namespace": "/admin", "ackId": "j",
            "error": "join refused: admin token required (got Some(\"wrong\"))"
        })
    );
    request(&mut c, "/admin", "kick", json!("bob"), "k").await;
    assert_eq!(
        c.recv().await,
        json!({
            "type": "error", "namespace": "/admin", "event": "kick", "ackId": "k",
            "error": "namespace not joined"
        })
    );
    // The connection itself (namespace `/`) is unaffected.
    c.emit_ack("shout", json!("still here"), "s").await;
    assert_eq!(c.recv().await["data"], json!("STILL HERE"));

    let mut anon = server.client().await;
    anon.send(json!({"type": "join", "namespace": "/admin", "ackId": "j"}))
        .await;
    assert_eq!(
        anon.recv().await["error"],
        json!("join refused: admin token required (got None)")
    );
    drop((c, anon));
    server.stop().await;
}

#[tokio::test]
async fn connect_hook_admits_and_the_namespaced_handler_runs_there() {
    let (server, _) = start_default().await;
    let mut c = server.client_with("/ws?token=let-me-in", &[]).await;
    c.send(json!({"type": "join", "namespace": "/admin", "ackId": "j"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/admin", "ackId": "j"})
    );
    request(&mut c, "/admin", "kick", json!("bob"), "k").await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/admin", "event": "kick", "data": "/admin kicked bob", "ackId": "k"})
    );
    // `name = "kick"` replaced the fn's name.
    request(&mut c, "/admin", "admin_kick", json!("bob"), "n").await;
    assert_eq!(
        c.recv().await,
        json!({
            "type": "error", "namespace": "/admin", "event": "admin_kick", "ackId": "n",
            "error": "unknown event"
        })
    );
    drop(c);
    server.stop().await;
}

#[tokio::test]
async fn disconnect_hook_runs_once_with_the_close_reason() {
    let (server, mut reports) = start_default().await;
    let mut c = server.client().await;
    c.send(json!({"type": "join", "namespace": "/gone", "ackId": "g"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/gone", "ackId": "g"})
    );
    let id = server.server.sockets()[0];
    assert_eq!(
        c.close(1000, "bye").await,
        Closed::Frame(1000, "bye".to_owned())
    );
    assert_eq!(
        next(&mut reports).await,
        format!("{id} left /gone: closed by client: 1000 (normal) bye")
    );
    server.stop().await;
    assert!(reports.try_recv().is_err(), "the hook ran twice");
}

#[tokio::test]
async fn disconnect_hook_runs_once_on_leave_and_not_again_on_close() {
    let (server, mut reports) = start_default().await;
    let mut c = server.client().await;
    c.send(json!({"type": "join", "namespace": "/gone", "ackId": "g"}))
        .await;
    assert_eq!(c.recv().await["type"], "ack");
    let id = server.server.sockets()[0];
    c.send(json!({"type": "leave", "namespace": "/gone", "ackId": "l"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "ack", "namespace": "/gone", "ackId": "l"})
    );
    assert_eq!(
        next(&mut reports).await,
        format!("{id} left /gone: left the namespace")
    );
    assert_eq!(c.close(1000, "").await, Closed::Frame(1000, String::new()));
    server.stop().await;
    assert!(reports.try_recv().is_err(), "the hook ran again on close");
}

// ---- Introspection and registration -------------------------------------------------------

#[tokio::test]
async fn events_lists_namespace_name_types_and_locations() {
    let (builder, _) = default_server();
    let server = builder.build().expect("build");
    let events = server.events();
    let keys: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.namespace.as_str(), e.event.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("/", "chat"),
            ("/", "nick"),
            ("/", "positions"),
            ("/", "shout"),
            ("/", "state_first"),
            ("/", "strict"),
            ("/", "touch"),
            ("/admin", "kick"),
        ]
    );
    let chat = &events[0];
    assert_eq!(chat.payload_type, "macros::ChatMessage");
    assert_eq!(chat.ack_type, Some("macros::Status"));
    assert_eq!(chat.location.as_deref(), Some(here(CHAT_LINE).as_str()));
    assert!(
        here(CHAT_LINE).starts_with("tests/tests/macros.rs:"),
        "{}",
        here(CHAT_LINE)
    );
    let nick = &events[1];
    assert_eq!(nick.payload_type, "alloc::string::String");
    assert_eq!(
        nick.ack_type,
        Some("core::result::Result<alloc::string::String, wsu::handler::ack::HandlerError>")
    );
    let shout = &events[3];
    assert_eq!(shout.location.as_deref(), Some(here(SHOUT_LINE).as_str()));
    let touch = &events[6];
    assert_eq!((touch.payload_type, touch.ack_type), ("()", Some("()")));
    for e in &events {
        let location = e.location.as_deref().expect("a location");
        assert!(location.starts_with(file!()), "{location}");
    }
}

#[tokio::test]
async fn explicit_registration_serves_only_the_named_fns() {
    let server = Server::builder()
        .collect_registered(false)
        .handler(shout)
        .handler(admin_only)
        .build()
        .expect("build");
    let events = server.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].namespace.as_str(), events[0].event.as_str()),
        ("/", "shout")
    );
    assert_eq!(
        events[0].location.as_deref(),
        Some(here(SHOUT_LINE).as_str())
    );

    let server = TestServer::start(server).await;
    let mut c = server.client().await;
    c.emit_ack("shout", json!("a"), "1").await;
    assert_eq!(c.recv().await["data"], json!("A"));
    c.emit_ack("chat", json!({"user": "u", "message": "m"}), "2")
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "namespace": "/", "event": "chat", "ackId": "2", "error": "unknown event"})
    );
    // The connect hook came along: `/admin` exists and refuses.
    c.send(json!({"type": "join", "namespace": "/admin", "ackId": "j"}))
        .await;
    assert_eq!(
        c.recv().await["error"],
        json!("join refused: admin token required (got None)")
    );
    drop(c);
    server.stop().await;
}

#[test]
fn registering_a_collected_fn_again_is_not_a_duplicate() {
    let (builder, _) = default_server();
    let server = builder.handler(chat).handler(gone).build().expect("build");
    assert_eq!(
        server.events().iter().filter(|e| e.event == "chat").count(),
        1
    );
}

#[test]
fn a_plain_fn_is_not_registered() {
    let err = Server::builder()
        .collect_registered(false)
        .handler(plain)
        .build()
        .expect_err("a build error");
    match &err {
        BuildError::NotRegistered { name } => assert_eq!(name, "macros::plain"),
        other => panic!("expected NotRegistered, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "`macros::plain` is not a #[ws_event], #[ws_connect] or #[ws_disconnect] function"
    );
}

#[test]
fn a_missing_state_fails_the_build() {
    let err = Server::builder()
        .collect_registered(false)
        .handler(shout)
        .handler(positions)
        .build()
        .expect_err("a build error");
    match &err {
        BuildError::MissingState { handler, state } => {
            assert_eq!(handler, "macros::positions");
            assert_eq!(state, "macros::Counter");
        }
        other => panic!("expected MissingState, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "handler `macros::positions` takes `State<macros::Counter>` but no `macros::Counter` was registered with `ServerBuilder::state`"
    );
    // A default build needs every state of every collected fn.
    let err = Server::builder()
        .state(Counter::default())
        .build()
        .expect_err("a build error");
    assert!(
        matches!(&err, BuildError::MissingState { handler, state } if handler == "macros::gone" && state == "macros::Reports"),
        "{err:?}"
    );
}
