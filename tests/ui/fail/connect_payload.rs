use wsu::{Socket, ws_connect};

#[ws_connect(namespace = "/admin")]
async fn admin(socket: Socket, token: String) -> Result<(), String> {
    let _ = socket;
    if token.is_empty() {
        Err("token required".to_owned())
    } else {
        Ok(())
    }
}

fn main() {}
