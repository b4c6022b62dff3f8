use wsu::ws_event;

#[ws_event]
struct Chat {
    text: String,
}

fn main() {
    let _ = Chat {
        text: String::new(),
    }
    .text;
}
