// A raw identifier names the event without `r#`; `_: ()` is an event without data; every
// parameter position; paths to the extractors; `Option<T>` and raw JSON payloads.
use wsu::ws_event;

#[ws_event]
async fn r#type(_: ()) {}

#[ws_event(namespace = "/x")]
async fn r#match(text: String, socket: wsu::Socket) -> usize {
    let _ = socket;
    text.len()
}

#[ws_event(namespace = "/x")]
async fn optional(value: Option<u32>) -> Option<u32> {
    value
}

#[ws_event(namespace = "/x")]
async fn raw(value: Box<serde_json::value::RawValue>) -> String {
    value.get().to_owned()
}

#[ws_event(namespace = "/x", name = "with space and ünïcode")]
async fn spaced(_: (), server: ::wsu::Server) {
    let _ = server;
}

fn main() {
    let server = wsu::Server::builder().build().expect("build");
    let names: Vec<(String, String)> = server
        .events()
        .into_iter()
        .map(|e| (e.namespace, e.event))
        .collect();
    assert_eq!(
        names,
        [
            ("/".to_owned(), "type".to_owned()),
            ("/x".to_owned(), "match".to_owned()),
            ("/x".to_owned(), "optional".to_owned()),
            ("/x".to_owned(), "raw".to_owned()),
            ("/x".to_owned(), "with space and ünïcode".to_owned()),
        ]
    );
}
