// docs/ws_event.md: default name, `()` ack, `State<T>` and `Server` parameters.
use std::sync::Mutex;
use wsu::{Server, State, ws_event};

#[derive(Default)]
struct Topic(Mutex<String>);

#[ws_event(namespace = "/room")]
async fn set_topic(State(topic): State<Topic>, server: Server, text: String) {
    *topic.0.lock().expect("lock") = text.clone();
    let _ = server.of("/room").emit("topic", &text);
}

fn main() {
    let server = Server::builder()
        .namespace("/room", |ns| ns)
        .state(Topic::default())
        .build()
        .expect("build");
    let events = server.events();
    assert_eq!(events[0].event, "set_topic");
    assert_eq!(events[0].namespace, "/room");
}
