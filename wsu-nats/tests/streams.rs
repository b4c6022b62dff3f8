//! [`wsu::cluster::Streams`] on JetStream: the contract (tests/src/streams.rs) and a broker
//! restart, on a `nats-server -js` child process.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wsu::cluster::{Engine, EngineSink, SinkEvent, StreamLimits};
use wsu_nats::NatsEngine;
use wsu_tests::cluster::EngineFactory;
use wsu_tests::services::{Kind, Service, unique_prefix};

fn factory(url: String) -> EngineFactory {
    Arc::new(move || {
        let url = url.clone();
        Box::pin(async move {
            let e: Box<dyn Engine> =
                Box::new(NatsEngine::connect(&url).await.expect("connect to nats"));
            e
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_contract() {
    let Some(service) = Service::start(Kind::Nats, "streams_contract") else {
        return;
    };
    wsu_tests::streams::streams_contract(
        factory(service.url()),
        &unique_prefix("streams_contract"),
    )
    .await;
}

/// The next entry on `rx` (skipping `Lost` / `Restored`).
async fn next_entry(rx: &mut wsu::cluster::EngineReceiver) -> (String, u64, u64, Bytes) {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("timed out waiting for an entry")
            .expect("sink open");
        if let SinkEvent::Entry {
            stream,
            pos,
            payload,
        } = ev
        {
            return (stream.to_string(), pos.offset, pos.prev, payload);
        }
    }
}

/// Kill and restart the server (same store directory): appends fail fast while it is away,
/// `Lost` / `Restored` are reported, and afterwards appends chain on and are delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_broker_restart() {
    let Some(mut service) = Service::start(Kind::Nats, "streams_broker_restart") else {
        return;
    };
    if !service.controllable() {
        eprintln!("SKIPPED: streams_broker_restart needs a nats child process (not WSU_*_URL)");
        assert!(!wsu_tests::services::in_ci(), "CI must run the fault test");
        return;
    }
    let prefix = unique_prefix("streams_broker_restart");
    let a = NatsEngine::connect(&service.url()).await.expect("connect");
    let b = NatsEngine::connect(&service.url()).await.expect("connect");
    let (sa, mut ra) = EngineSink::channel(1024);
    let (sb, mut rb) = EngineSink::channel(1024);
    let (xa, xb) = (a.streams().expect("streams"), b.streams().expect("streams"));
    xa.start(&prefix, sa).await.expect("start");
    xb.start(&prefix, sb).await.expect("start");
    let limits = StreamLimits::new(100, Duration::from_secs(60));

    let p1 = xa
        .append("/n", Bytes::from_static(b"before"), limits)
        .await
        .expect("append");
    assert_eq!(next_entry(&mut rb).await.1, p1.offset);
    assert_eq!(next_entry(&mut ra).await.1, p1.offset);

    service.kill();
    // Noticed at once (the socket closes); appends then fail fast.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.is_connected() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "disconnect not seen"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = tokio::time::Instant::now();
    let r = xa.append("/n", Bytes::from_static(b"lost"), limits).await;
    assert!(
        matches!(r, Err(wsu::cluster::EngineError::Unavailable(_))),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(100), "fails fast");

    service.restart();
    for rx in [&mut ra, &mut rb] {
        let mut lost = false;
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(15), rx.recv())
                .await
                .expect("timed out waiting for Restored")
                .expect("sink open");
            match ev {
                SinkEvent::Lost(_) => lost = true,
                SinkEvent::Restored => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(lost, "Lost before Restored");
    }

    // The stream survived (file storage): same epoch, the chain goes on, delivery works.
    let p2 = xb
        .append("/n", Bytes::from_static(b"after"), limits)
        .await
        .expect("append after restart");
    assert_eq!(
        (p2.prev, &p2.epoch),
        (p1.offset, &p1.epoch),
        "{p1:?} {p2:?}"
    );
    for rx in [&mut ra, &mut rb] {
        let (s, offset, prev, payload) = next_entry(rx).await;
        assert_eq!((s.as_str(), offset, prev), ("/n", p2.offset, p1.offset));
        assert_eq!(&payload[..], b"after");
    }
    let read = xa.read("/n", 0, 10).await.expect("read");
    assert_eq!(read.top, p2.offset);
    assert_eq!(read.entries.len(), 2);
    a.close().await;
    b.close().await;
}

/// Two nodes appending to one stream at once: every entry chains on the one before it (the
/// losers of the expected-last-sequence race retry), and each node's appends keep call order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_concurrent_appends_chain() {
    let Some(service) = Service::start(Kind::Nats, "streams_concurrent") else {
        return;
    };
    let prefix = unique_prefix("streams_concurrent");
    let a = NatsEngine::connect(&service.url()).await.expect("connect");
    let b = NatsEngine::connect(&service.url()).await.expect("connect");
    let (sa, _ra) = EngineSink::channel(1024);
    let (sb, _rb) = EngineSink::channel(1024);
    let (xa, xb) = (a.streams().expect("streams"), b.streams().expect("streams"));
    xa.start(&prefix, sa).await.expect("start");
    xb.start(&prefix, sb).await.expect("start");
    let limits = StreamLimits::new(1000, Duration::from_secs(60));
    let run = |x: &'static str, s: &dyn wsu::cluster::Streams| {
        // Queued now, in this order; awaited together.
        let futs: Vec<_> = (0..25)
            .map(|i| s.append("/c", Bytes::from(format!("{x}{i}")), limits))
            .collect();
        futures_util::future::join_all(futs)
    };
    let (pa, pb) = tokio::join!(run("a", xa), run("b", xb));
    let pa: Vec<_> = pa.into_iter().map(|r| r.expect("append")).collect();
    let pb: Vec<_> = pb.into_iter().map(|r| r.expect("append")).collect();
    for p in [&pa, &pb] {
        assert!(p.windows(2).all(|w| w[0].offset < w[1].offset), "{p:?}");
    }
    let read = xa.read("/c", 0, 100).await.expect("read");
    assert_eq!(read.entries.len(), 50);
    assert_eq!(read.entries[0].0.prev, 0);
    for w in read.entries.windows(2) {
        assert_eq!(w[1].0.prev, w[0].0.offset, "chain");
    }
    a.close().await;
    b.close().await;
}
