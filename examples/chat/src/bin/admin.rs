//! The admin client of the chat example, on `wsu::client`: joins `/admin` with the token of
//! `CHAT_ADMIN_TOKEN` and runs one command.
//!
//! ```text
//! CHAT_ADMIN_TOKEN=secret cargo run -p chat                       # the server, with /admin on
//! CHAT_ADMIN_TOKEN=secret cargo run -p chat --bin admin -- rooms
//! CHAT_ADMIN_TOKEN=secret cargo run -p chat --bin admin -- users
//! CHAT_ADMIN_TOKEN=secret cargo run -p chat --bin admin -- announce "Back in 5 minutes"
//! CHAT_ADMIN_TOKEN=secret cargo run -p chat --bin admin -- announce "Hi rustaceans" --room rust
//! CHAT_ADMIN_TOKEN=secret cargo run -p chat --bin admin -- kick grace "please be nice"
//! ```
//!
//! The server address is `ws://$WSU_ADDR/ws` (default `127.0.0.1:8080`).

use chat::protocol::{Announce, Announced, Kick, Kicked, RoomInfo, UserInfo};
use wsu::client::Client;

const USAGE: &str = "usage: admin rooms | users | announce TEXT [--room ROOM] | kick NICK [REASON]";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let token = std::env::var("CHAT_ADMIN_TOKEN")
        .map_err(|_| "set CHAT_ADMIN_TOKEN to the server's admin token")?;
    let addr = std::env::var("WSU_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let client = Client::builder(format!("ws://{addr}/ws"))
        .query("token", token)
        .no_reconnect()
        .connect()
        .await?;
    client.join_namespace("/admin").await?;
    let admin = client.of("/admin");

    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["rooms"] => {
            let rooms: Vec<RoomInfo> = admin.emit_with_ack("rooms", &()).await?;
            if rooms.is_empty() {
                println!("no rooms");
            }
            for r in rooms {
                println!(
                    "#{:<20} {:>3} members, {:>5} messages: {}",
                    r.room,
                    r.members.len(),
                    r.messages,
                    r.members.join(", ")
                );
            }
        }
        ["users"] => {
            let users: Vec<UserInfo> = admin.emit_with_ack("users", &()).await?;
            if users.is_empty() {
                println!("no users");
            }
            for u in users {
                println!("{:<24} in {}", u.nick, u.rooms.join(", "));
            }
        }
        ["announce", text, rest @ ..] => {
            let room = match rest {
                [] => None,
                ["--room", room] => Some((*room).to_owned()),
                _ => return Err(USAGE.into()),
            };
            let req = Announce {
                text: (*text).to_owned(),
                room,
            };
            let done: Announced = admin.emit_with_ack("announce", &req).await?;
            println!("announced to {} connections", done.delivered);
        }
        ["kick", nick, reason @ ..] if reason.len() <= 1 => {
            let req = Kick {
                nick: (*nick).to_owned(),
                reason: reason.first().map(|r| (*r).to_owned()),
            };
            let done: Kicked = admin.emit_with_ack("kick", &req).await?;
            println!("kicked {} from {}", done.nick, done.rooms.join(", "));
        }
        _ => return Err(USAGE.into()),
    }
    client.close("done").await;
    Ok(())
}
