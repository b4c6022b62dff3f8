//! wsu with `#[ws_event]` handlers. `join`/`leave` are wsu protocol messages; `pub` and `echo`
//! are events. Payloads are relayed as raw JSON (never parsed into a tree).

use serde::Deserialize;
use serde_json::value::RawValue;
use wsu::{Server, ws_event};

use crate::settings::Heartbeat;

/// The payload of `pub`.
#[derive(Deserialize)]
struct Publish {
    room: String,
    data: Box<RawValue>,
}

/// Broadcast `msg` with the payload's `data` to its room (encoded once, by wsu).
#[ws_event(name = "pub")]
async fn publish(server: Server, p: Publish) {
    let _ = server.to(&p.room).emit("msg", &p.data);
}

/// Acknowledge with the payload, byte for byte.
#[ws_event]
async fn echo(data: Box<RawValue>) -> Box<RawValue> {
    data
}

pub(crate) async fn serve(port: u16, hb: Heartbeat) -> std::io::Result<()> {
    let server = Server::builder()
        .ping_interval(hb.interval)
        .read_timeout(hb.interval + hb.timeout)
        .build()
        .map_err(std::io::Error::other)?;
    let listener = super::bind(port).await?;
    server.serve(listener).await
}
