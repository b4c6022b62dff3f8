//! The Rust servers under test. Each binds `127.0.0.1:<port>` (0: any), prints
//! `listening <port>` on stdout once it accepts connections, and serves until killed.
//!
//! Every server runs on a single-threaded tokio runtime (the benchmark pins it to one core, as
//! node is), with the heartbeat of [`crate::settings`] (or the one given by `--ping-interval-ms` and
//! `--ping-timeout-ms`) and no logging. Event semantics, the same
//! everywhere: `join` a room (acknowledged), `pub` `{room, data}` broadcasts `msg` with `data`
//! to the room, `echo` acknowledges with its payload.

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

/// Run the server `kind` on a current-thread runtime, with heartbeat `hb`.
pub(crate) fn run(kind: &str, port: u16, hb: Heartbeat) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = match kind {
        "wsu" => rt.block_on(wsu::serve(port, hb)),
        "sioxide" => rt.block_on(sioxide::serve(port, hb)),
        "raw" => rt.block_on(raw::serve(port, hb)),
        other => return Err(format!("unknown server `{other}` (wsu, sioxide, raw)")),
    };
    result.map_err(|e| format!("{kind} server: {e}"))
}
