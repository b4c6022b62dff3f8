//! Dispatch overhead of a `#[ws_event]` handler: decode the payload, call the function, encode
//! the ack, through the registered call (what the dispatcher runs for each event), against
//! calling the function directly with an already decoded payload, and against the serde_json
//! work alone (decode the payload, encode the ack).
//!
//! `cargo bench -p wsu-tests --bench dispatch -- --warm-up-time 1 --measurement-time 3`

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use wsu::__private::{EventFn, Kind, Registration, inventory, type_id_of};
use wsu::{Server, Socket, ws_event};
use wsu_tests::{RawWs, upgrade_request};

#[derive(Clone, Deserialize, Serialize)]
struct ChatMessage {
    user: String,
    message: String,
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

#[ws_event(name = "chat")]
async fn chat(msg: ChatMessage) -> Status {
    black_box(&msg);
    Status { status: "ok" }
}

const PAYLOAD: &str = r#"{"user":"bench","message":"hello world"}"#;

/// The registered call of `chat`, as the dispatcher sees it.
fn registered_call() -> EventFn {
    let id = type_id_of(&chat);
    inventory::iter::<Registration>
        .into_iter()
        .find(|r| (r.fn_type)() == id)
        .map(|r| match r.kind {
            Kind::Event { call, .. } => call,
            _ => panic!("`chat` is an event handler"),
        })
        .expect("`chat` is registered")
}

/// A `Socket` of a real connection, served over an in-memory stream (the public API offers no
/// detached one). The runtime and the client end are returned to keep the connection open.
fn connected_socket() -> (
    tokio::runtime::Runtime,
    Socket,
    RawWs<tokio::io::DuplexStream>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = Server::builder()
        .collect_registered(false)
        .ping_interval(Duration::from_secs(3600))
        .read_timeout(Duration::from_secs(7200))
        .on_connect(move |socket: Socket| {
            let _ = tx.send(socket);
            async {}
        })
        .build()
        .expect("build");
    let (socket, client) = rt.block_on(async {
        let (client, server_end) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move { server.serve_connection(server_end, None).await });
        let request = upgrade_request("bench", "/ws", &[]);
        let (head, client) = RawWs::handshake(client, request.as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        (rx.recv().await.expect("the connect hook ran"), client)
    });
    (rt, socket, client)
}

fn dispatch(c: &mut Criterion) {
    let call = registered_call();
    let (_rt, socket, _client) = connected_socket();
    let raw: Box<RawValue> = RawValue::from_string(PAYLOAD.to_owned()).expect("valid JSON");
    let decoded: ChatMessage = serde_json::from_str(PAYLOAD).expect("payload");

    let mut g = c.benchmark_group("dispatch");
    g.bench_function("registered call (decode + call + ack encode)", |b| {
        b.iter(|| {
            let reply = call(socket.clone(), Some(black_box(&*raw)))
                .now_or_never()
                .expect("the handler completes at once");
            black_box(reply.expect("an ack"))
        })
    });
    g.bench_function("direct call (decoded payload)", |b| {
        b.iter_batched(
            || decoded.clone(),
            |msg| {
                chat(black_box(msg))
                    .now_or_never()
                    .expect("the handler completes at once")
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("serde_json alone (decode + encode)", |b| {
        b.iter(|| {
            let msg: ChatMessage = serde_json::from_str(black_box(raw.get())).expect("payload");
            black_box(&msg);
            serde_json::value::to_raw_value(&Status { status: "ok" }).expect("ack")
        })
    });
    g.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
