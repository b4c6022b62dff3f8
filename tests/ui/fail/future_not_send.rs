use std::rc::Rc;
use wsu::{Socket, ws_event};

#[ws_event]
async fn chat(socket: Socket, text: String) -> String {
    let local = Rc::new(text);
    let _ = socket.emit_with_ack::<_, String>("question", &*local).await;
    (*local).clone()
}

fn main() {}
