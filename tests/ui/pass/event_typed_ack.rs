// docs/ws_event.md: a typed payload and a typed ack; broadcast to the others.
use serde::{Deserialize, Serialize};
use wsu::{Socket, ws_event};

#[derive(Deserialize, Serialize)]
struct ChatMessage {
    user: String,
    message: String,
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

#[ws_event(namespace = "/", name = "chat")]
async fn chat(socket: Socket, msg: ChatMessage) -> Status {
    let _ = socket.broadcast().emit("chat", &msg);
    Status { status: "ok" }
}

fn main() {
    let server = wsu::Server::builder().build().expect("build");
    let events = server.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "chat");
    assert_eq!(events[0].namespace, "/");
}
