use wsu::ws_event;

struct Status {
    ok: bool,
}

#[ws_event]
async fn chat(text: String) -> Status {
    Status {
        ok: !text.is_empty(),
    }
}

fn main() {}
