//! The echo mode used by the WebSocket conformance run (`conformance/run.sh`,
//! `ServerBuilder::echo_mode`): data frames come back unchanged, never dispatched, and the
//! server's own limits and close codes still apply.

use wsu::Server;
use wsu_tests::{RawWs, TestServer, frame_bytes, opcode, text_frame};

fn echo_server(max_message: usize) -> Server {
    Server::builder()
        .collect_registered(false)
        .echo_mode(true)
        .max_message_size(max_message)
        .build()
        .expect("valid server")
}

#[tokio::test]
async fn echo_mode_sends_data_frames_back_unchanged() {
    let ts = TestServer::start(echo_server(1024)).await;
    let (_, mut ws) = RawWs::connect(ts.addr, &[]).await;
    // Not an envelope, and an envelope: both come back as they are (no error, no pong).
    for text in [
        "hello, not an envelope",
        r#"{"type":"ping","namespace":"/"}"#,
    ] {
        ws.send_raw(&text_frame(text)).await;
        let frame = ws.read_frame().await.expect("an echo");
        assert_eq!(
            (frame.opcode, frame.fin, frame.payload.as_slice()),
            (opcode::TEXT, true, text.as_bytes())
        );
    }
    let binary = [0u8, 1, 2, 0xff, 0xfe];
    ws.send_raw(&frame_bytes(0x80 | opcode::BINARY, &binary, true))
        .await;
    let frame = ws.read_frame().await.expect("an echo");
    assert_eq!(
        (frame.opcode, frame.payload.as_slice()),
        (opcode::BINARY, &binary[..])
    );
    // A fragmented message comes back whole.
    ws.send_raw(&frame_bytes(opcode::TEXT, b"frag", true)).await;
    ws.send_raw(&frame_bytes(0x80 | opcode::CONTINUATION, b"mented", true))
        .await;
    let frame = ws.read_frame().await.expect("an echo");
    assert_eq!(
        (frame.fin, frame.payload.as_slice()),
        (true, &b"fragmented"[..])
    );
    let stats = ts.server.stats();
    assert_eq!((stats.messages_in, stats.protocol_errors), (4, 0));
    ts.stop().await;
}

#[tokio::test]
async fn echo_mode_keeps_the_limits_and_close_codes() {
    let ts = TestServer::start(echo_server(1024)).await;

    let (_, mut ws) = RawWs::connect(ts.addr, &[]).await;
    ws.send_raw(&text_frame(&"x".repeat(1025))).await;
    assert_eq!(
        ws.expect_close().await,
        (1009, "message too big".to_owned())
    );

    let (_, mut ws) = RawWs::connect(ts.addr, &[]).await;
    ws.send_raw(&frame_bytes(0x80 | opcode::TEXT, b"bad \xff utf-8", true))
        .await;
    assert_eq!(ws.expect_close().await.0, 1007);

    let (_, mut ws) = RawWs::connect(ts.addr, &[]).await;
    ws.send_raw(&frame_bytes(0x80 | opcode::TEXT, b"unmasked", false))
        .await;
    assert_eq!(ws.expect_close().await.0, 1002);
    ts.stop().await;
}
