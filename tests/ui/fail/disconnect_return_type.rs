use wsu::{DisconnectReason, ws_disconnect};

#[ws_disconnect]
async fn gone(reason: DisconnectReason) -> bool {
    reason.to_string().is_empty()
}

fn main() {}
