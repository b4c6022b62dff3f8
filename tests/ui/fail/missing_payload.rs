use wsu::{Socket, ws_event};

#[ws_event]
async fn chat(socket: Socket) {
    let _ = socket;
}

fn main() {}
