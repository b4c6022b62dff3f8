//! socketioxide 0.18 on axum, websocket transport only, as its documentation sets it up.

use serde::Deserialize;
use serde_json::value::RawValue;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::{SocketIo, TransportType};

use crate::settings::{Heartbeat, READ_BUFFER};

/// The payload of `pub`.
#[derive(Deserialize)]
struct Publish {
    room: String,
    data: Box<RawValue>,
}

fn on_connect<A: Adapter>(socket: SocketRef<A>) {
    socket.on(
        "join",
        async |s: SocketRef<A>, Data(room): Data<String>, ack: AckSender<A>| {
            s.join(room);
            let _ = ack.send(&());
        },
    );
    socket.on(
        "leave",
        async |s: SocketRef<A>, Data(room): Data<String>, ack: AckSender<A>| {
            s.leave(room);
            let _ = ack.send(&());
        },
    );
    socket.on("pub", async |io: SocketIo<A>, Data(p): Data<Publish>| {
        let _ = io.to(p.room).emit("msg", &p.data).await;
    });
    socket.on(
        "echo",
        async |Data(data): Data<Box<RawValue>>, ack: AckSender<A>| {
            let _ = ack.send(&data);
        },
    );
}

pub(crate) async fn serve(port: u16, hb: Heartbeat) -> std::io::Result<()> {
    let (layer, io) = SocketIo::builder()
        .ping_interval(hb.interval)
        .ping_timeout(hb.timeout)
        .transports([TransportType::Websocket])
        .ws_read_buffer_size(READ_BUFFER)
        .build_layer();
    io.ns("/", async |s: SocketRef| on_connect(s));
    let app = axum::Router::new().layer(layer);
    let listener = super::bind(port).await?;
    // axum's own recipe for TCP_NODELAY.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}

/// A node of a cluster on Redis: socketioxide-redis's adapter, set up as its documentation
/// shows (a RESP3 connection; `protocol=resp3` is added to `url` if it has no protocol).
pub(crate) async fn serve_redis(port: u16, hb: Heartbeat, url: &str) -> std::io::Result<()> {
    use socketioxide_redis::{RedisAdapter, RedisAdapterCtr};
    let url = if url.contains("protocol=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{}/?protocol=resp3", url.trim_end_matches('/'))
    };
    let client = redis::Client::open(url.as_str()).map_err(std::io::Error::other)?;
    let adapter = RedisAdapterCtr::new_with_redis(&client)
        .await
        .map_err(|e| std::io::Error::other(format!("redis adapter: {e}")))?;
    let (layer, io) = SocketIo::builder()
        .ping_interval(hb.interval)
        .ping_timeout(hb.timeout)
        .transports([TransportType::Websocket])
        .ws_read_buffer_size(READ_BUFFER)
        .with_adapter::<RedisAdapter<_>>(adapter)
        .build_layer();
    io.ns("/", async |s: SocketRef<RedisAdapter<_>>| on_connect(s))
        .await
        .map_err(|e| std::io::Error::other(format!("redis adapter init: {e}")))?;
    let app = axum::Router::new().layer(layer);
    let listener = super::bind(port).await?;
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}
