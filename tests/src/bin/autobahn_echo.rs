//! The server of the WebSocket conformance run (`conformance/run.sh`): wsu's real accept path
//! and connection task in echo mode, for the Autobahn test suite's fuzzing client.
//!
//! Usage: `autobahn_echo PORT` (or `WSU_PORT=PORT autobahn_echo`); it listens on
//! `127.0.0.1:PORT`, serves WebSocket upgrades at `/ws`, and prints
//! `listening on ws://127.0.0.1:PORT/ws` once ready.
//!
//! Every text and binary message is echoed back unchanged (`ServerBuilder::echo_mode`, a hidden
//! option for this use only) instead of being decoded as a wsu envelope; everything else is the
//! normal server: the same HTTP upgrade handling, Origin policy (the default), heartbeats,
//! timeouts and close codes (1002 protocol error, 1007 invalid UTF-8, 1009 too big). Two limits
//! differ from the defaults, because the suite's 9.* cases send messages of up to 16 MiB:
//! - the largest message is 16 MiB (default 64 KiB);
//! - the outbound queue holds 32 MiB (default 4 MiB), so that the write buffer (twice that bound)
//!   holds an echoed 16 MiB message.

use std::time::Duration;

use wsu::Server;

/// The largest message accepted (and echoed): the largest the suite sends.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("WSU_PORT").ok())
        .ok_or("usage: autobahn_echo PORT (or WSU_PORT=PORT)")?
        .parse()?;
    let server = Server::builder()
        .collect_registered(false)
        .echo_mode(true)
        .max_message_size(MAX_MESSAGE)
        .max_queued(1024, 2 * MAX_MESSAGE)
        .shutdown_timeout(Duration::from_secs(1))
        .build()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on ws://{}/ws", listener.local_addr()?);
    server.serve(listener).await?;
    Ok(())
}
