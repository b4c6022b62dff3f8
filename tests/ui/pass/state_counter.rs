// extract.rs (State) and the builder's `handler` example.
use std::sync::atomic::{AtomicU64, Ordering};
use wsu::{State, ws_event};

#[derive(Default)]
struct Counter(AtomicU64);

#[ws_event(name = "count")]
async fn count(State(counter): State<Counter>, _: ()) -> u64 {
    counter.0.fetch_add(1, Ordering::Relaxed) + 1
}

fn main() {
    let server = wsu::Server::builder()
        .state(Counter::default())
        .build()
        .expect("build");
    assert_eq!(server.events()[0].event, "count");
    assert_eq!(server.events()[0].payload_type, "()");
    assert_eq!(server.events()[0].ack_type, Some("u64"));
}
