use wsu::ws_event;

struct ChatMessage {
    text: String,
}

#[ws_event]
async fn chat(msg: ChatMessage) -> String {
    msg.text
}

fn main() {}
