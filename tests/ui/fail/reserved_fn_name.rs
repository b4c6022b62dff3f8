use wsu::ws_event;

// The event name defaults to the fn's name: `join` is reserved.
#[ws_event]
async fn join(room: String) -> String {
    room
}

fn main() {}
