//! socketioxide 0.18 on axum, websocket transport only, as its documentation sets it up.

use serde::Deserialize;
use serde_json::value::RawValue;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::{SocketIo, TransportType};

use crate::settings::{Heartbeat, READ_BUFFER};

/// The payload of `pub`.
#[derive(Deserialize)]
struct Publish {
    room: String,
    data: Box<RawValue>,
}

fn on_connect(socket: SocketRef) {
    socket.on(
        "join",
        async |s: SocketRef, Data(room): Data<String>, ack: AckSender| {
            s.join(room);
            let _ = ack.send(&());
        },
    );
    socket.on(
        "leave",
        async |s: SocketRef, Data(room): Data<String>, ack: AckSender| {
            s.leave(room);
            let _ = ack.send(&());
        },
    );
    socket.on("pub", async |io: SocketIo, Data(p): Data<Publish>| {
        let _ = io.to(p.room).emit("msg", &p.data).await;
    });
    socket.on(
        "echo",
        async |Data(data): Data<Box<RawValue>>, ack: AckSender| {
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
