// docs/ws_event.md: `Result` for failures, with a typed error body.
use serde::Serialize;
use wsu::{HandlerError, ws_event};

#[derive(Serialize)]
struct Taken {
    suggestion: String,
}

#[ws_event]
async fn nick(name: String) -> Result<String, HandlerError> {
    if name == "admin" {
        return Err(HandlerError::new("nickname taken").with_data(&Taken {
            suggestion: format!("{name}_1"),
        }));
    }
    Ok(name)
}

// Other documented error types: `String`, `&'static str`, `Json<E>`, wsu's own errors, and a
// `Result` named through a path.
#[ws_event]
async fn plain_string(n: u32) -> Result<u32, String> {
    Ok(n)
}

#[ws_event]
async fn typed_body(n: u32) -> std::result::Result<(), wsu::Json<Taken>> {
    if n == 0 {
        return Err(wsu::Json(Taken {
            suggestion: "one".to_owned(),
        }));
    }
    Ok(())
}

#[ws_event]
async fn send_error(socket: wsu::Socket, n: u32) -> Result<(), wsu::SendError> {
    socket.emit("n", &n)
}

fn main() {
    let server = wsu::Server::builder().build().expect("build");
    let names: Vec<String> = server.events().into_iter().map(|e| e.event).collect();
    assert_eq!(names, ["nick", "plain_string", "send_error", "typed_body"]);
}
