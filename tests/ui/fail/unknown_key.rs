use wsu::ws_event;

#[ws_event(namespace = "/", event = "chat")]
async fn chat(text: String) -> String {
    text
}

fn main() {
    let _ = chat("text".to_owned());
}
