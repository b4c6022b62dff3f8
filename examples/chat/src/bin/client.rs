//! A command-line client for the chat example, built on `wsu::client`. It does what the seed's
//! example client did: join room `lobby`, send a `chat` event with an ack and print the ack, send
//! a JSON ping every 10 s, and print everything it receives.
//!
//! Run the server (`cargo run -p chat`), then `cargo run -p chat --bin client [URL]` (default
//! `ws://127.0.0.1:8080/ws`). Stop with Ctrl-C. Restart the server meanwhile to see the client
//! reconnect and rejoin `lobby`. Its chat also appears in the web page's `#lobby`; the messages
//! of the page's `#lobby` reach it too (it joined the room with a protocol `join`), as do admin
//! announcements.

use std::time::Duration;

use chat::protocol::{ChatMessage, Status};
use wsu::client::{Client, ErrorEvent, StateEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".to_owned());
    println!("connecting to {url}");
    let client = Client::builder(url.as_str())
        // Print every event (no typed handler is registered, so all of them land here).
        .on_any(|namespace, event, data| {
            let data = data.map_or("null", |d| d.get());
            println!("<- event {namespace} {event}: {data}");
        })
        .on_error(|error: ErrorEvent| println!("<- error: {error}"))
        .on_state(|event: &StateEvent| match event {
            StateEvent::Connected => println!("-- connected"),
            StateEvent::Disconnected { code, reason } => {
                println!("-- disconnected (code {code:?}): {reason}");
            }
            StateEvent::Reconnecting { attempt, delay } => {
                println!("-- reconnecting, attempt {attempt} in {delay:?}");
            }
            StateEvent::GaveUp => println!("-- gave up reconnecting"),
            other => println!("-- {other:?}"),
        })
        .connect()
        .await?;

    client.join("lobby").await?;
    println!("<- ack: joined lobby");

    // The same payload and ack types as the server's handler.
    let chat = ChatMessage {
        user: "rust-client".to_owned(),
        message: "hello from the wsu client".to_owned(),
    };
    match client.emit_with_ack::<_, Status>("chat", &chat).await {
        Ok(ack) => println!("<- ack chat: status {}", ack.status),
        Err(e) => println!("<- chat failed: {e}"),
    }

    let mut pings = tokio::time::interval(Duration::from_secs(10));
    pings.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = pings.tick() => match client.ping().await {
                Ok(rtt) => println!("<- pong after {rtt:?}"),
                Err(e) => println!("-- ping failed: {e}"),
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    client.close("bye").await;
    println!("closed");
    Ok(())
}
