// docs/ws_connect.md.
use wsu::{Socket, ws_connect};

#[ws_connect(namespace = "/admin")]
async fn admin_only(socket: Socket) -> Result<(), String> {
    match socket.query("token") {
        Some("let-me-in") => Ok(()),
        _ => Err("admin token required".to_owned()),
    }
}

// The other forms: no arguments (namespace "/"), `()` return, `Server` and `State<T>`.
struct Motd(&'static str);

#[ws_connect]
async fn welcome(server: wsu::Server, socket: Socket, motd: wsu::State<Motd>) {
    let _ = socket.emit("motd", motd.0.0);
    let _ = server.stats();
}

fn main() {
    let _ = wsu::Server::builder()
        .state(Motd("hello"))
        .build()
        .expect("build");
}
