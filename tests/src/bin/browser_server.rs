//! The server of the browser client's tests (`tests/browser/run.sh`): a wsu server that serves
//! the browser client at `/wsu.js`, a test page at `/`, and the WebSocket endpoint at `/ws`.
//!
//! Usage: `browser_server PORT` (or `WSU_PORT=PORT browser_server`); it listens on
//! `127.0.0.1:PORT` and prints `listening on http://127.0.0.1:PORT` once ready. The port is
//! fixed so that the test can kill the server and start it again on the same address.
//!
//! With `WSU_RECOVERY_TTL_MS=N` set, connection-state recovery is on (`ServerBuilder::recovery`)
//! with a session TTL of N ms (tests/browser/recovery.test.mjs); without it, recovery is off.
//!
//! Events (in `/`, and `echo`/`broadcast` also in `/chat`):
//! - `echo`: acks with its payload.
//! - `never`: never finishes (the client's ack times out; the connection's later requests wait).
//! - `broadcast` `{room, data}`: emits `news` with `data` to the room, except the sender; acks
//!   with the number of recipients.
//! - `ask` `data`: emits `question` with `data` to the sender, waits for its ack and acks with it.
//! - `record` `{key, value}`: appends `value` to the list `key`; `history` `key`: acks with it.
//! - `fail`: answers with the error `nope` and the data `{"code": 42}`.
//! - `kick` `{code, reason}`: closes the connection with that code and reason.
//! - `whoami`: acks with `{sid, recovered, rooms}` of the connection, as the server sees it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use wsu::{AckError, CloseCode, HandlerError, Json, NamespaceBuilder, Recovery, Server, Socket};

/// The test page: loads the client from the server and exposes it as `window.wsu`.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>wsu browser client test</title>
<style>body{font:14px system-ui,sans-serif;margin:1.5em}pre{background:#f4f4f4;padding:.8em}</style>
</head>
<body>
<h1>wsu browser client</h1>
<p>State: <b id="state">loading</b></p>
<pre id="log"></pre>
<script type="module">
  import * as wsu from '/wsu.js';
  window.wsu = wsu;
  window.log = (line) => {
    const el = document.getElementById('log');
    el.textContent += line + '\n';
  };
  window.showState = (s) => {
    document.getElementById('state').textContent = s;
  };
  window.wsuReady = true;
  document.getElementById('state').textContent = 'module loaded';
</script>
</body>
</html>
"#;

/// Payload of `broadcast`.
#[derive(Deserialize)]
struct BroadcastReq {
    room: String,
    data: Value,
}

/// Payload of `record`.
#[derive(Deserialize)]
struct RecordReq {
    key: String,
    value: Value,
}

/// Payload of `kick`.
#[derive(Deserialize)]
struct KickReq {
    code: u16,
    reason: String,
}

type Log = Arc<Mutex<HashMap<String, Vec<Value>>>>;

/// `echo` and `broadcast`, registered in every namespace.
fn common(ns: NamespaceBuilder) -> NamespaceBuilder {
    ns.on(
        "echo",
        |_socket: Socket, data: Value| async move { Json(data) },
    )
    .on(
        "broadcast",
        |socket: Socket, req: BroadcastReq| async move {
            let delivery = socket.to(&req.room).emit("news", &req.data)?;
            Ok::<_, wsu::SendError>(Json(delivery.queued))
        },
    )
}

fn build(recovery: Option<Duration>) -> Result<Server, wsu::BuildError> {
    let log: Log = Arc::default();
    let record_log = log.clone();
    let mut builder = Server::builder();
    if let Some(ttl) = recovery {
        builder = builder.recovery(Recovery::default().session_ttl(ttl));
    }
    builder
        .collect_registered(false)
        .serve_client("/wsu.js")
        .asset("/", "text/html; charset=utf-8", PAGE.as_bytes())
        .namespace("/", common)
        .namespace("/chat", common)
        .on("never", |_socket: Socket, _data: Value| async move {
            std::future::pending::<()>().await;
        })
        .on("ask", |socket: Socket, data: Value| async move {
            let answer: Value = socket.emit_with_ack("question", &data).await?;
            Ok::<_, AckError>(Json(answer))
        })
        .on("record", move |_socket: Socket, req: RecordReq| {
            let log = record_log.clone();
            async move {
                if let Ok(mut log) = log.lock() {
                    log.entry(req.key).or_default().push(req.value);
                }
            }
        })
        .on("history", move |_socket: Socket, key: String| {
            let log = log.clone();
            async move {
                let list = log
                    .lock()
                    .map(|log| log.get(&key).cloned().unwrap_or_default())
                    .unwrap_or_default();
                Json(list)
            }
        })
        .on("fail", |_socket: Socket, _data: Value| async move {
            Err::<(), _>(HandlerError::new("nope").with_data(&json!({ "code": 42 })))
        })
        .on("kick", |socket: Socket, req: KickReq| async move {
            socket.close_with(CloseCode::new(req.code), &req.reason);
        })
        .on("whoami", |socket: Socket, _data: Value| async move {
            let mut rooms = socket.rooms();
            rooms.sort();
            Json(json!({
                "sid": socket.id().to_string(),
                "recovered": socket.recovered(),
                "rooms": rooms,
            }))
        })
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("WSU_PORT").ok())
        .ok_or("usage: browser_server PORT (or WSU_PORT=PORT)")?
        .parse()?;
    let recovery = match std::env::var("WSU_RECOVERY_TTL_MS") {
        Ok(ms) => Some(Duration::from_millis(ms.parse()?)),
        Err(_) => None,
    };
    let server = build(recovery)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    server.serve(listener).await?;
    Ok(())
}
