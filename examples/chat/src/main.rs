//! The wsu example chat server: the seed example's `chat` event, written with `#[ws_event]`, its
//! WebSocket endpoint at `/ws` and a web page at `/`.
//!
//! Run it with `cargo run -p chat`, then open http://127.0.0.1:8080.
//! Environment: `WSU_ADDR` (default `127.0.0.1:8080`), `WSU_ORIGINS` (comma-separated allowed
//! origins; default: same origin only, plus clients that send no `Origin`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wsu::{SendError, Server, Socket, ws_event};

/// The seed example's chat payload.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct ChatMessage {
    user: String,
    message: String,
}

/// The ack of a chat message.
#[derive(Debug, Serialize)]
struct Status {
    status: &'static str,
}

/// The seed's `chat` handler: broadcast to everyone else in `/`, ack `{"status":"ok"}`.
/// A payload that does not decode is answered with an `error` (by wsu, before this runs).
#[ws_event(namespace = "/", name = "chat")]
async fn chat(socket: Socket, msg: ChatMessage) -> Result<Status, SendError> {
    socket.broadcast().emit("chat", &msg)?;
    Ok(Status { status: "ok" })
}

fn build(origins: Option<String>) -> Result<Server, wsu::BuildError> {
    let mut builder = Server::builder()
        .ping_interval(Duration::from_secs(2))
        .asset(
            "/",
            "text/html; charset=utf-8",
            include_bytes!("../static/index.html").as_slice(),
        );
    if let Some(list) = origins {
        builder = builder.allowed_origins(list.split(',').map(str::trim).filter(|s| !s.is_empty()));
    }
    builder.build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("WSU_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let server = build(std::env::var("WSU_ORIGINS").ok())?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("wsu chat listening on http://{addr} (WebSocket endpoint ws://{addr}/ws)");
    let stopper = server.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            println!("shutting down");
            stopper.shutdown().await;
        }
    });
    server.serve(listener).await?;
    Ok(())
}
