use wsu::{Socket, ws_connect};

#[ws_connect]
async fn hello(socket: Socket) -> bool {
    socket.query("token").is_some()
}

fn main() {}
