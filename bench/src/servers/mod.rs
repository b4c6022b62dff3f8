//! The Rust servers under test. Each binds `127.0.0.1:<port>` (0: any), prints
//! `listening <port>` on stdout once it accepts connections, and serves until killed.
//!
//! Every server runs on a single-threaded tokio runtime (the benchmark pins it to one core, as
//! node is), with the heartbeat of [`crate::settings`] (or the one given by `--ping-interval-ms` and
//! `--ping-timeout-ms`) and no logging. Event semantics, the same
//! everywhere: `join` a room (acknowledged), `pub` `{room, data}` broadcasts `msg` with `data`
//! to the room, `echo` acknowledges with its payload.
//!
//! `wsu-history` is wsu with connection-state recovery on (`ServerBuilder::recovery` with
//! wsu's default settings; `WSU_BENCH_HISTORY_SIZE` overrides the history size): every
//! broadcast gets an offset and is kept for replay (issue 15).

use std::io::Write;

use crate::settings::Heartbeat;

pub(crate) mod raw;
pub(crate) mod sioxide;
pub(crate) mod wsu;

/// Bind the listener and announce the port.
pub(crate) async fn bind(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let port = listener.local_addr()?.port();
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening {port}")?;
    out.flush()?;
    Ok(listener)
}

/// The broker a clustered server joins (`wsu-bench server ... --redis URL | --nats URL`).
#[derive(Debug, Clone)]
pub(crate) enum Broker {
    /// A Redis server: wsu-redis for wsu, socketioxide-redis for socketioxide (the URL gets
    /// `?protocol=resp3` where the adapter needs it).
    Redis(String),
    /// A NATS server: wsu-nats (wsu only).
    Nats(String),
}

/// Run the server `kind` on a current-thread runtime, with heartbeat `hb`, alone or (with a
/// `broker`) as a node of a cluster.
pub(crate) fn run(
    kind: &str,
    port: u16,
    hb: Heartbeat,
    broker: Option<Broker>,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = match kind {
        "wsu" => rt.block_on(wsu::serve(port, hb, broker, false)),
        "wsu-history" => rt.block_on(wsu::serve(port, hb, broker, true)),
        "sioxide" => match broker {
            None => rt.block_on(sioxide::serve(port, hb)),
            Some(Broker::Redis(url)) => rt.block_on(sioxide::serve_redis(port, hb, &url)),
            Some(Broker::Nats(_)) => {
                return Err("socketioxide has no NATS adapter (use --redis)".to_owned());
            }
        },
        "raw" if broker.is_some() => return Err("the raw server cannot cluster".to_owned()),
        "raw" => rt.block_on(raw::serve(port, hb)),
        other => {
            return Err(format!(
                "unknown server `{other}` (wsu, wsu-history, sioxide, raw)"
            ));
        }
    };
    result.map_err(|e| format!("{kind} server: {e}"))
}
