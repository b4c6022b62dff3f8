//! Handler errors end to end: internal errors (`std::io::Error`, `serde_json::Error`,
//! `Box<dyn Error>`, `HandlerError::internal`) reach the client as `internal error` with their
//! `event` and `ackId` and nothing of their text, and are logged on the server with the
//! connection id; public errors (`wsu::Public`, `HandlerError::new`, strings) are sent as they are.
//!
//! The server log is captured by a subscriber installed for the test's thread (every test runs
//! on a current-thread runtime, so the server's tasks log there too). It enables `INFO` and
//! above only, as a production subscriber would: the connection id must not depend on wsu's
//! `DEBUG` span `wsu.conn`.

use std::error::Error;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use wsu::{HandlerError, Public, Server, Socket, ws_event};
use wsu_tests::{Client, TestServer};

// ---- Handlers ----------------------------------------------------------------------------

/// The secret every internal error below carries.
const SECRET: &str = "secret path /etc/shadow";

#[ws_event]
async fn io_fail(_: ()) -> Result<(), io::Error> {
    Err(io::Error::new(io::ErrorKind::PermissionDenied, SECRET))
}

#[ws_event]
async fn boxed_fail(_: ()) -> Result<u8, Box<dyn Error + Send + Sync>> {
    let n: u8 = "secret-token-42".parse()?;
    Ok(n)
}

/// Fails with `serde_json`'s error, which quotes the offending string.
#[ws_event]
async fn json_fail(text: String) -> Result<u8, serde_json::Error> {
    serde_json::from_value(Value::String(text))
}

/// A user error whose text is meant for the client.
#[derive(Debug)]
struct NickTaken(String);

impl fmt::Display for NickTaken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nickname {} is taken", self.0)
    }
}

impl Error for NickTaken {}

#[ws_event]
async fn public_fail(nick: String) -> Result<(), Public<NickTaken>> {
    Err(NickTaken(nick))?;
    Ok(())
}

/// An internal error with a public typed body.
#[ws_event]
async fn internal_with_body(_: ()) -> Result<(), HandlerError> {
    Err(HandlerError::internal(io::Error::other(SECRET)).with_data(&json!({"code": "internal"})))
}

/// The connection's id, to find it in the log.
#[ws_event]
async fn whoami(socket: Socket, _: ()) -> String {
    socket.id().to_string()
}

fn server() -> Server {
    Server::builder()
        .collect_registered(false)
        .handler(io_fail)
        .handler(boxed_fail)
        .handler(json_fail)
        .handler(public_fail)
        .handler(internal_with_body)
        .handler(whoami)
        // The same through a closure (the `ServerBuilder::on` adapter).
        .on("closure_io_fail", |_: Socket, _: ()| async move {
            Err::<(), _>(io::Error::other(SECRET))
        })
        .on(
            "closure_public_fail",
            |_: Socket, nick: String| async move { Err::<(), _>(Public(NickTaken(nick))) },
        )
        .build()
        .expect("build")
}

// ---- Log capture -------------------------------------------------------------------------

/// Records every enabled event (`INFO` and above) as `LEVEL message field=value ...`.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Line(String);

impl tracing::field::Visit for Line {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}{}", self.0);
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::INFO
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = Line(String::new());
        event.record(&mut line);
        let line = format!("{} {}", event.metadata().level(), line.0);
        self.0.lock().expect("log lock").push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl Capture {
    /// Install it for this thread; the guard uninstalls it.
    fn install() -> (Capture, tracing::subscriber::DefaultGuard) {
        let capture = Capture::default();
        let guard = tracing::subscriber::set_default(capture.clone());
        (capture, guard)
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().expect("log lock").clone()
    }
}

// ---- Helpers -----------------------------------------------------------------------------

/// Send `event` with `data` (and `ackId`, if given) and return the raw text of the answer,
/// checked to contain nothing secret.
async fn answer_text(c: &mut Client, event: &str, data: Value, ack_id: Option<&str>) -> String {
    let mut msg = json!({"type": "event", "event": event, "data": data});
    if let Some(id) = ack_id {
        msg["ackId"] = json!(id);
    }
    c.send(msg).await;
    let text = c.recv_text().await;
    assert!(
        !text.contains("secret"),
        "a secret reached the client: {text}"
    );
    text
}

/// The answer of `event`, parsed.
async fn answer(c: &mut Client, event: &str, data: Value, ack_id: Option<&str>) -> Value {
    let text = answer_text(c, event, data, ack_id).await;
    serde_json::from_str(&text).expect("JSON")
}

/// The `internal error` answer to `event` with this `ackId`.
fn internal(event: &str, ack_id: &str) -> Value {
    json!({
        "type": "error", "namespace": "/", "event": event, "ackId": ack_id,
        "error": "internal error"
    })
}

/// The connection id of `c`, as the server logs it.
async fn id_of(c: &mut Client) -> String {
    let v = answer(c, "whoami", Value::Null, Some("id")).await;
    v["data"].as_str().expect("an id").to_owned()
}

/// The log lines of internal handler errors.
fn internal_logs(capture: &Capture) -> Vec<String> {
    capture
        .lines()
        .into_iter()
        .filter(|l| l.contains("failed with an internal error"))
        .collect()
}

// ---- Tests -------------------------------------------------------------------------------

#[tokio::test]
async fn an_io_error_reaches_the_client_as_internal_error_and_the_log_with_the_connection() {
    let (capture, _guard) = Capture::install();
    let server = TestServer::start(server()).await;
    let mut c = server.client().await;
    let id = id_of(&mut c).await;

    let text = answer_text(&mut c, "io_fail", Value::Null, Some("a1")).await;
    assert_eq!(
        text,
        r#"{"type":"error","namespace":"/","event":"io_fail","ackId":"a1","error":"internal error"}"#
    );
    // Without an ackId the error is still reported, still without its text.
    assert_eq!(
        answer(&mut c, "io_fail", Value::Null, None).await,
        json!({"type": "error", "namespace": "/", "event": "io_fail", "error": "internal error"})
    );
    c.expect_quiet().await;

    let logs = internal_logs(&capture);
    assert_eq!(logs.len(), 2, "one log line per failed request: {logs:?}");
    for line in &logs {
        assert!(line.starts_with("ERROR "), "{line}");
        assert!(line.contains(&format!("conn={id}")), "{line}");
        assert!(line.contains(&format!("error={SECRET}")), "{line}");
        assert!(
            line.contains(&format!(
                r#"details=Custom {{ kind: PermissionDenied, error: "{SECRET}" }}"#
            )),
            "{line}"
        );
    }
}

#[tokio::test]
async fn boxed_and_serde_json_errors_are_internal() {
    let (capture, _guard) = Capture::install();
    let server = TestServer::start(server()).await;
    let mut c = server.client().await;
    let id = id_of(&mut c).await;

    assert_eq!(
        answer(&mut c, "boxed_fail", Value::Null, Some("b1")).await,
        internal("boxed_fail", "b1")
    );
    assert_eq!(
        answer(&mut c, "json_fail", json!("secret-string-7"), Some("j1")).await,
        internal("json_fail", "j1")
    );
    c.expect_quiet().await;

    let logs = internal_logs(&capture);
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(logs[0].contains(&format!("conn={id}")), "{}", logs[0]);
    assert!(
        logs[0].contains("error=invalid digit found in string"),
        "{}",
        logs[0]
    );
    assert!(logs[1].contains(&format!("conn={id}")), "{}", logs[1]);
    assert!(
        logs[1].contains(r#"error=invalid type: string "secret-string-7", expected u8"#),
        "{}",
        logs[1]
    );
}

#[tokio::test]
async fn closure_handlers_hide_internal_errors_too() {
    let (capture, _guard) = Capture::install();
    let server = TestServer::start(server()).await;
    let mut c = server.client().await;
    let id = id_of(&mut c).await;

    assert_eq!(
        answer(&mut c, "closure_io_fail", Value::Null, Some("c1")).await,
        internal("closure_io_fail", "c1")
    );
    let logs = internal_logs(&capture);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(logs[0].contains(&format!("conn={id}")), "{}", logs[0]);
    assert!(logs[0].contains(&format!("error={SECRET}")), "{}", logs[0]);
}

#[tokio::test]
async fn an_internal_error_keeps_its_public_body() {
    let (capture, _guard) = Capture::install();
    let server = TestServer::start(server()).await;
    let mut c = server.client().await;
    assert_eq!(
        answer(&mut c, "internal_with_body", Value::Null, Some("w1")).await,
        json!({
            "type": "error", "namespace": "/", "event": "internal_with_body", "ackId": "w1",
            "error": "internal error", "data": {"code": "internal"}
        })
    );
    assert_eq!(internal_logs(&capture).len(), 1);
}

#[tokio::test]
async fn public_errors_are_sent_as_they_are_and_not_logged() {
    let (capture, _guard) = Capture::install();
    let server = TestServer::start(server()).await;
    let mut c = server.client().await;
    for (event, ack_id) in [("public_fail", "p1"), ("closure_public_fail", "p2")] {
        assert_eq!(
            answer(&mut c, event, json!("ann"), Some(ack_id)).await,
            json!({
                "type": "error", "namespace": "/", "event": event, "ackId": ack_id,
                "error": "nickname ann is taken"
            })
        );
    }
    assert!(internal_logs(&capture).is_empty(), "{:?}", capture.lines());
}

/// A Rust client's handler failing with an internal error answers the server's request with
/// `internal error`; the detail is logged on the client's side.
#[tokio::test]
async fn a_client_handler_hides_its_internal_errors_from_the_server() {
    let (capture, _guard) = Capture::install();
    let server = Server::builder()
        .collect_registered(false)
        .on("ask", |socket: Socket, _: ()| async move {
            match socket.emit_with_ack::<_, Value>("question", &()).await {
                Err(wsu::AckError::Rejected(e)) => Ok(e.message().to_owned()),
                other => Err(format!("expected a rejection, got {other:?}")),
            }
        })
        .build()
        .expect("build");
    let server = TestServer::start(server).await;
    let client = wsu::client::Client::builder(server.url())
        .on("question", |_: ()| async move {
            Err::<(), _>(io::Error::other(SECRET))
        })
        .connect()
        .await
        .expect("connect");
    let rejection: String = client.emit_with_ack("ask", &()).await.expect("ack");
    assert_eq!(rejection, "internal error");
    let logs: Vec<String> = capture
        .lines()
        .into_iter()
        .filter(|l| l.contains("a client handler failed with an internal error"))
        .collect();
    assert_eq!(logs.len(), 1, "{:?}", capture.lines());
    assert!(
        logs[0].contains("namespace=/ event=question"),
        "{}",
        logs[0]
    );
    assert!(logs[0].contains(&format!("error={SECRET}")), "{}", logs[0]);
    client.close("done").await;
}
