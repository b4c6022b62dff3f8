// docs/ws_disconnect.md.
use wsu::{DisconnectReason, Server, Socket, ws_disconnect};

#[ws_disconnect(namespace = "/")]
async fn gone(socket: Socket, server: Server, reason: DisconnectReason) {
    let _ = server.emit("left", &socket.id().to_string());
    println!("{} left: {reason}", socket.id());
}

// Without the reason, and with `-> ()` written out.
#[ws_disconnect(namespace = "/chat")]
async fn left_chat(socket: Socket) -> () {
    let _ = socket;
}

fn main() {
    let _ = wsu::Server::builder().build().expect("build");
}
