//! [`wsu::cluster::Streams`] on Redis: the contract (tests/src/streams.rs), topics and streams
//! sharing the subscription connection, and a broker killed and restarted without persistence.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wsu::cluster::{
    Engine, EngineError, EngineReceiver, EngineSink, SinkEvent, StreamLimits, StreamPos, Streams,
};
use wsu_redis::RedisEngine;
use wsu_tests::cluster::EngineFactory;
use wsu_tests::services::{Kind, Service, unique_prefix};

const EVENTUALLY: Duration = Duration::from_secs(10);

fn factory(url: String) -> EngineFactory {
    Arc::new(move || {
        let url = url.clone();
        Box::pin(async move {
            let e: Box<dyn Engine> =
                Box::new(RedisEngine::connect(&url).await.expect("connect to redis"));
            e
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_contract() {
    let Some(service) = Service::start(Kind::Redis, "streams") else {
        return;
    };
    wsu_tests::streams::streams_contract(factory(service.url()), &unique_prefix("streams")).await;
}

async fn next_event(rx: &mut EngineReceiver, what: &str) -> SinkEvent {
    match tokio::time::timeout(EVENTUALLY, rx.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("{what}: sink closed"),
        Err(_) => panic!("{what}: nothing within {EVENTUALLY:?}"),
    }
}

async fn next_entry(rx: &mut EngineReceiver, what: &str) -> (String, StreamPos, Bytes) {
    loop {
        if let SinkEvent::Entry {
            stream,
            pos,
            payload,
        } = next_event(rx, what).await
        {
            return (stream.to_string(), pos, payload);
        }
    }
}

/// Append until the publisher is back (it reconnects on its own).
async fn append_eventually(x: &dyn Streams, stream: &str, payload: &'static [u8]) -> StreamPos {
    let limits = StreamLimits::new(100, Duration::from_secs(60));
    let t = Instant::now();
    loop {
        match x.append(stream, Bytes::from_static(payload), limits).await {
            Ok(p) => return p,
            Err(EngineError::Unavailable(_)) => {
                assert!(t.elapsed() < EVENTUALLY, "never appended again");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("append: {e}"),
        }
    }
}

/// `subscribe` and `start` in either order share the one subscription connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_streams_on_one_subscription() {
    let Some(service) = Service::start(Kind::Redis, "streams_topics") else {
        return;
    };
    let prefix = unique_prefix("streams_topics");
    let topic = format!("{prefix}.all");
    let limits = StreamLimits::new(10, Duration::from_secs(60));
    for streams_first in [false, true] {
        let e = RedisEngine::connect(&service.url()).await.expect("connect");
        let (ts, mut trx) = EngineSink::channel(64);
        let (ss, mut srx) = EngineSink::channel(64);
        let x = e.streams().expect("streams");
        if streams_first {
            x.start(&prefix, ss).await.expect("start");
            e.subscribe(vec![topic.clone()], ts)
                .await
                .expect("subscribe");
        } else {
            e.subscribe(vec![topic.clone()], ts)
                .await
                .expect("subscribe");
            x.start(&prefix, ss).await.expect("start");
        }
        e.publish(&topic, Bytes::from_static(b"m"))
            .await
            .expect("publish");
        let p = x
            .append("/t", Bytes::from_static(b"e"), limits)
            .await
            .expect("append");
        match next_event(&mut trx, "the message").await {
            SinkEvent::Message { topic: t, payload } => {
                assert_eq!((&*t, &payload[..]), (topic.as_str(), &b"m"[..]))
            }
            other => panic!("{other:?}"),
        }
        let (s, pos, payload) = next_entry(&mut srx, "the entry").await;
        assert_eq!((s.as_str(), pos, &payload[..]), ("/t", p, &b"e"[..]));
        assert!(e.is_connected());
        e.close().await;
    }
}

/// Killed and restarted without persistence: both sinks hear Lost / Restored, appends fail
/// with Unavailable meanwhile and work again after, entries are delivered again, and the stream
/// has a new epoch with offsets starting over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_survive_a_broker_restart() {
    let Some(mut svc) = Service::start(Kind::Redis, "streams_fault") else {
        return;
    };
    if !svc.controllable() {
        eprintln!("shared broker from the environment: cannot kill it, fault test skipped");
        return;
    }
    let prefix = unique_prefix("streams_fault");
    let a = RedisEngine::connect(&svc.url()).await.expect("connect");
    let b = RedisEngine::connect(&svc.url()).await.expect("connect");
    let (sa, mut ra) = EngineSink::channel(256);
    let (sb, mut rb) = EngineSink::channel(256);
    let (xa, xb) = (a.streams().expect("streams"), b.streams().expect("streams"));
    xa.start(&prefix, sa).await.expect("start");
    xb.start(&prefix, sb).await.expect("start");
    let limits = StreamLimits::new(100, Duration::from_secs(60));

    let p1 = xb
        .append("/s", Bytes::from_static(b"before"), limits)
        .await
        .expect("append");
    assert_eq!((p1.offset, p1.prev), (1, 0));
    let p2 = xb
        .append("/s", Bytes::from_static(b"before2"), limits)
        .await
        .expect("append");
    assert_eq!(next_entry(&mut ra, "entry 1").await.1, p1);
    assert_eq!(next_entry(&mut ra, "entry 2").await.1, p2);
    xa.put("sess", Bytes::from_static(b"v"), Duration::from_secs(60))
        .await
        .expect("put");

    svc.kill();
    for rx in [&mut ra, &mut rb] {
        loop {
            if let SinkEvent::Lost(_) = next_event(rx, "Lost").await {
                break;
            }
        }
    }
    // During the outage: fails at once, never blocks.
    let t = Instant::now();
    let fut = xb.append("/s", Bytes::from_static(b"lost"), limits);
    assert!(t.elapsed() < Duration::from_millis(100), "append blocked");
    let r = tokio::time::timeout(Duration::from_secs(3), fut)
        .await
        .expect("append outcome during the outage");
    assert!(matches!(r, Err(EngineError::Unavailable(_))), "{r:?}");

    svc.restart();
    for rx in [&mut ra, &mut rb] {
        while next_event(rx, "Restored").await != SinkEvent::Restored {}
    }
    let p = append_eventually(xb, "/s", b"after").await;
    assert_eq!((p.offset, p.prev), (1, 0), "offsets start over: {p:?}");
    assert_ne!(
        p.epoch, p1.epoch,
        "a new epoch after the broker lost the stream"
    );
    for rx in [&mut ra, &mut rb] {
        let (s, pos, payload) = next_entry(rx, "the entry after the restart").await;
        assert_eq!((s.as_str(), &pos, &payload[..]), ("/s", &p, &b"after"[..]));
    }
    // a's publishing connection reconnects on its own too.
    let t = Instant::now();
    while !(a.is_connected() && b.is_connected()) {
        assert!(t.elapsed() < EVENTUALLY, "not connected again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = xa.read("/s", 0, 10).await.expect("read");
    assert_eq!((r.epoch.as_str(), r.top), (p.epoch.as_str(), 1));
    assert_eq!(r.entries, vec![(p.clone(), Bytes::from_static(b"after"))]);
    // A stream nobody appended to since: a fresh epoch, nothing in it.
    let other = xa.read("/other", 0, 10).await.expect("read");
    assert_eq!((other.top, other.entries.len()), (0, 0));
    assert_ne!(other.epoch, p1.epoch);
    assert_eq!(
        xa.take("sess").await.expect("take"),
        None,
        "the store was lost too"
    );
    a.close().await;
    b.close().await;
}
