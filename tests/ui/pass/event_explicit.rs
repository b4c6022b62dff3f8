// docs/ws_event.md: explicit registration; the function stays an ordinary function.
use wsu::{Server, ws_event};

#[ws_event]
async fn echo(text: String) -> String {
    text
}

#[ws_event]
async fn other(text: String) -> String {
    text
}

fn main() {
    let server = Server::builder()
        .collect_registered(false)
        .handler(echo)
        .build()
        .expect("build");
    assert_eq!(server.events().len(), 1);
    assert_eq!(server.events()[0].event, "echo");
    let direct = async { echo("hi".to_owned()).await };
    drop(direct);
}
