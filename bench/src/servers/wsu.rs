//! wsu with `#[ws_event]` handlers. `join`/`leave` are wsu protocol messages; `pub` and `echo`
//! are events. Payloads are relayed as raw JSON (never parsed into a tree).

use serde::Deserialize;
use serde_json::value::RawValue;
use wsu::{Server, ws_event};

use super::Broker;
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

/// Environment variable overriding the history size of `wsu-history` (default: wsu's, 10,000).
pub(crate) const HISTORY_SIZE_ENV: &str = "WSU_BENCH_HISTORY_SIZE";

/// The recovery settings of `wsu-history`: wsu's defaults, with the history size taken from
/// [`HISTORY_SIZE_ENV`] when it is set.
fn recovery() -> std::io::Result<wsu::Recovery> {
    let mut r = wsu::Recovery::default();
    if let Ok(v) = std::env::var(HISTORY_SIZE_ENV) {
        let n = v
            .trim()
            .parse()
            .map_err(|_| std::io::Error::other(format!("{HISTORY_SIZE_ENV}={v}: not a number")))?;
        r = r.history_size(n);
    }
    Ok(r)
}

/// Serve; with `history` (the server kind `wsu-history`), with connection-state recovery on
/// (`ServerBuilder::recovery`): sessions, resume tokens and a history per namespace, every
/// broadcast getting an offset.
pub(crate) async fn serve(
    port: u16,
    hb: Heartbeat,
    broker: Option<Broker>,
    history: bool,
) -> std::io::Result<()> {
    let mut builder = Server::builder()
        .ping_interval(hb.interval)
        .read_timeout(hb.interval + hb.timeout);
    if history {
        builder = builder.recovery(recovery()?);
    }
    // A node of a cluster: broadcasts also reach the room's members on the other nodes.
    match broker {
        None => {}
        Some(Broker::Redis(url)) => {
            let engine = wsu_redis::RedisEngine::connect(&url)
                .await
                .map_err(|e| std::io::Error::other(format!("redis engine: {e}")))?;
            builder = builder.engine(engine);
        }
        Some(Broker::Nats(url)) => {
            let engine = wsu_nats::NatsEngine::connect(&url)
                .await
                .map_err(|e| std::io::Error::other(format!("nats engine: {e}")))?;
            builder = builder.engine(engine);
        }
    }
    let server = builder.build().map_err(std::io::Error::other)?;
    let listener = super::bind(port).await?;
    server.serve(listener).await
}
