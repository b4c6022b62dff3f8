use wsu::ws_event;

#[ws_event]
async fn chat(user: String, message: String) -> String {
    format!("{user}: {message}")
}

fn main() {
    let _ = chat("a".to_owned(), "b".to_owned());
}
