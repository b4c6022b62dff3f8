use wsu::ws_event;

#[derive(Debug)]
struct NickTaken;

#[ws_event]
async fn nick(name: String) -> Result<String, NickTaken> {
    if name == "admin" {
        return Err(NickTaken);
    }
    Ok(name)
}

fn main() {}
