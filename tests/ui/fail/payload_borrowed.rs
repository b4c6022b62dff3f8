use wsu::ws_event;

#[ws_event]
async fn chat(text: &str) -> usize {
    text.len()
}

fn main() {}
