use wsu::ws_event;

#[ws_event]
async fn echo<T: serde::Serialize>(value: T) -> T {
    value
}

fn main() {}
