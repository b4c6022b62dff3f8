use wsu::ws_event;

#[ws_event(name = "")]
async fn chat(text: String) -> String {
    text
}

fn main() {}
