use wsu::ws_event;

#[ws_event]
fn chat(text: String) -> String {
    text
}

fn main() {
    // The function is kept as written: no second error here.
    let _ = chat("hi".to_owned());
}
