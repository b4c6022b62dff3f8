use wsu::{Socket, ws_connect};

#[ws_connect(name = "hello")]
async fn hello(socket: Socket) {
    let _ = socket;
}

fn main() {}
