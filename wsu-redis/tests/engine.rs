//! The Redis engine against a real `redis-server` (a child process per test, see
//! `wsu_tests::services`): delivery, order, limits, a broker killed and restarted, close/drop.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wsu::cluster::{Engine, EngineError, EngineReceiver, EngineSink, SinkEvent};
use wsu_redis::RedisEngine;
use wsu_tests::services::{Kind, Service, unique_prefix};

/// For "eventually" conditions: generous, so that a loaded machine does not fail the test.
const EVENTUALLY: Duration = Duration::from_secs(10);

async fn connect(url: &str) -> RedisEngine {
    match RedisEngine::connect(url).await {
        Ok(e) => e,
        Err(e) => panic!("connect {url}: {e}"),
    }
}

async fn subscribed(engine: &RedisEngine, topics: &[&str], capacity: usize) -> EngineReceiver {
    let (sink, rx) = EngineSink::channel(capacity);
    let topics = topics.iter().map(|t| t.to_string()).collect();
    engine
        .subscribe(topics, sink)
        .await
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    rx
}

async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: nothing within {limit:?}"),
    }
}

async fn next_event(rx: &mut EngineReceiver, what: &str) -> SinkEvent {
    match within(EVENTUALLY, what, rx.recv()).await {
        Some(ev) => ev,
        None => panic!("{what}: sink closed"),
    }
}

/// The next message, which must be `payload` on `topic`.
async fn expect_message(rx: &mut EngineReceiver, topic: &str, payload: &[u8]) {
    match next_event(rx, "a message").await {
        SinkEvent::Message {
            topic: t,
            payload: p,
        } => {
            assert_eq!(&*t, topic);
            assert_eq!(&p[..], payload);
        }
        other => panic!("expected a message on {topic}, got {other:?}"),
    }
}

/// Skip events until one matches; returns how long it took.
async fn wait_for(rx: &mut EngineReceiver, what: &str, f: impl Fn(&SinkEvent) -> bool) -> Duration {
    let t = Instant::now();
    loop {
        let ev = next_event(rx, what).await;
        if f(&ev) {
            return t.elapsed();
        }
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < EVENTUALLY,
            "{what}: not within {EVENTUALLY:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.elapsed()
}

async fn publish_ok(engine: &RedisEngine, topic: &str, payload: &[u8]) {
    let r = within(
        EVENTUALLY,
        "publish outcome",
        engine.publish(topic, Bytes::copy_from_slice(payload)),
    )
    .await;
    assert_eq!(r, Ok(()), "publish on {topic}");
}

/// Clients connected to the server, from `INFO clients` (this probe included).
async fn connected_clients(url: &str) -> usize {
    let client = redis::Client::open(url).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("probe connection");
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(&mut c)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("connected_clients in INFO")
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_deliver_to_both_sinks_byte_exact() {
    let Some(svc) = Service::start(Kind::Redis, "two_engines") else {
        return;
    };
    let url = svc.url();
    // The second engine's URL has no `protocol=resp3`: the engine adds it.
    let plain = url.replace("?protocol=resp3", "");
    assert_ne!(plain, url);
    let a = connect(&url).await;
    let b = connect(&plain).await;
    assert_eq!(a.name(), "redis");
    assert_eq!(a.max_payload(), 1 << 20);
    assert!(a.is_connected());

    let topic = unique_prefix("two_engines");
    let other = format!("{topic}_other");
    let mut rx_a = subscribed(&a, &[&topic], 64).await;
    let mut rx_b = subscribed(&b, &[&topic], 64).await;

    let from_a: Vec<u8> = (0..=255u8).chain([0, 0xff, b'\r', b'\n']).collect();
    publish_ok(&a, &topic, &from_a).await;
    expect_message(&mut rx_a, &topic, &from_a).await;
    expect_message(&mut rx_b, &topic, &from_a).await;

    // Not subscribed: never delivered; an empty payload is a message like any other.
    publish_ok(&b, &other, b"nobody listens").await;
    publish_ok(&b, &topic, b"").await;
    expect_message(&mut rx_a, &topic, b"").await;
    expect_message(&mut rx_b, &topic, b"").await;

    let big = vec![0x5a; 1 << 20];
    publish_ok(&b, &topic, &big).await;
    expect_message(&mut rx_a, &topic, &big).await;
    expect_message(&mut rx_b, &topic, &big).await;
    assert_eq!((rx_a.dropped(), rx_b.dropped()), (0, 0));

    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_publishes_arrive_in_order() {
    let Some(svc) = Service::start(Kind::Redis, "order") else {
        return;
    };
    let a = connect(&svc.url()).await;
    let b = connect(&svc.url()).await;
    let topic = unique_prefix("order");
    let mut rx = subscribed(&b, &[&topic], 4096).await;

    const N: u32 = 2000;
    // All queued first (ordered at call time), awaited afterwards.
    let outcomes: Vec<_> = (0..N)
        .map(|i| a.publish(&topic, Bytes::copy_from_slice(&i.to_be_bytes())))
        .collect();
    for (i, r) in futures_util::future::join_all(outcomes)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(r, Ok(()), "publish {i}");
    }
    for i in 0..N {
        expect_message(&mut rx, &topic, &i.to_be_bytes()).await;
    }
    assert_eq!(rx.dropped(), 0);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_payload_is_refused() {
    let Some(svc) = Service::start(Kind::Redis, "too_large") else {
        return;
    };
    let e = RedisEngine::builder(svc.url())
        .max_payload(1024)
        .connect()
        .await
        .expect("connect");
    assert_eq!(e.max_payload(), 1024);
    let topic = unique_prefix("too_large");
    let mut rx = subscribed(&e, &[&topic], 16).await;
    let r = e.publish(&topic, Bytes::from(vec![1; 1025])).await;
    assert_eq!(
        r,
        Err(EngineError::TooLarge {
            size: 1025,
            max: 1024
        })
    );
    publish_ok(&e, &topic, &[2; 1024]).await;
    expect_message(&mut rx, &topic, &[2; 1024]).await;
    e.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_gives_backlog() {
    let Some(svc) = Service::start(Kind::Redis, "backlog") else {
        return;
    };
    let e = RedisEngine::builder(svc.url())
        .publish_queue(4)
        .connect()
        .await
        .expect("connect");
    let topic = unique_prefix("backlog");
    // A burst far faster than round trips to Redis: the queue of 4 fills.
    let payload = Bytes::from(vec![7; 16 << 10]);
    let outcomes: Vec<_> = (0..10_000)
        .map(|_| e.publish(&topic, payload.clone()))
        .collect();
    let (mut ok, mut backlog) = (0, 0);
    for r in futures_util::future::join_all(outcomes).await {
        match r {
            Ok(()) => ok += 1,
            Err(EngineError::Backlog) => backlog += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(ok >= 4, "the first publishes fit: {ok}");
    assert!(
        backlog > 0,
        "no Backlog in a burst of 10,000 on a queue of 4"
    );
    // The queue empties: publishing works again.
    publish_ok(&e, &topic, b"after").await;
    e.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_and_restarted() {
    let Some(mut svc) = Service::start(Kind::Redis, "fault") else {
        return;
    };
    if !svc.controllable() {
        eprintln!("shared broker from the environment: cannot kill it, fault test skipped");
        return;
    }
    let a = connect(&svc.url()).await;
    let b = connect(&svc.url()).await;
    let topic = unique_prefix("fault");
    let mut rx = subscribed(&a, &[&topic], 256).await;
    publish_ok(&b, &topic, b"before").await;
    expect_message(&mut rx, &topic, b"before").await;

    svc.kill();
    let lost = wait_for(&mut rx, "Lost", |ev| matches!(ev, SinkEvent::Lost(_))).await;
    assert!(lost < Duration::from_secs(3), "Lost after {lost:?}");
    eventually("b notices the outage", || !b.is_connected()).await;
    assert!(!a.is_connected());

    // During the outage: the call returns at once, the outcome within 1 s, Unavailable.
    for i in 0..5 {
        for e in [&a, &b] {
            let t = Instant::now();
            let fut = e.publish(&topic, Bytes::from_static(b"lost"));
            assert!(
                t.elapsed() < Duration::from_millis(100),
                "publish call blocked"
            );
            let r = within(
                Duration::from_secs(1),
                "publish outcome during the outage",
                fut,
            )
            .await;
            assert!(
                matches!(r, Err(EngineError::Unavailable(_))),
                "publish {i} during the outage: {r:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    svc.restart();
    let restored = wait_for(&mut rx, "Restored", |ev| *ev == SinkEvent::Restored).await;
    eprintln!("Lost {lost:?} after the kill, Restored {restored:?} after the restart");
    // Backoff is at most 2 s (+25 % jitter) between attempts: Restored within 2.5 s, plus slack.
    assert!(
        restored < Duration::from_secs(5),
        "Restored after {restored:?}"
    );

    // b's publisher reconnects on its own; a is resubscribed, so a new publish reaches it.
    let t = Instant::now();
    loop {
        match b.publish(&topic, Bytes::from_static(b"after")).await {
            Ok(()) => break,
            Err(EngineError::Unavailable(_)) => {
                assert!(t.elapsed() < EVENTUALLY, "b never reconnected");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("publish after restart: {e}"),
        }
    }
    eprintln!("b publishing again {:?} after Restored", t.elapsed());
    wait_for(
        &mut rx,
        "the message published after the restart",
        |ev| matches!(ev, SinkEvent::Message { payload, .. } if &payload[..] == b"after"),
    )
    .await;
    eventually("both engines connected again", || {
        a.is_connected() && b.is_connected()
    })
    .await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_while_down_restores_later() {
    let Some(mut svc) = Service::start(Kind::Redis, "sub_down") else {
        return;
    };
    if !svc.controllable() {
        return;
    }
    let a = connect(&svc.url()).await;
    svc.kill();
    eventually("a notices the outage", || {
        // Publishing only queues: poll the connection state instead.
        !a.is_connected()
    })
    .await;
    let topic = unique_prefix("sub_down");
    let (sink, mut rx) = EngineSink::channel(16);
    let r = a.subscribe(vec![topic.clone()], sink).await;
    assert!(matches!(r, Err(EngineError::Unavailable(_))), "{r:?}");
    svc.restart();
    wait_for(&mut rx, "Restored", |ev| *ev == SinkEvent::Restored).await;
    eventually("a reconnects", || a.is_connected()).await;
    publish_ok(&a, &topic, b"hello").await;
    expect_message(&mut rx, &topic, b"hello").await;
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_flushes_then_stops_everything() {
    let Some(svc) = Service::start(Kind::Redis, "close") else {
        return;
    };
    let url = svc.url();
    // Before the probe: its connection's driver task lingers a little after it is dropped.
    let baseline_tasks = alive_tasks();
    let baseline_clients = connected_clients(&url).await;
    let a = connect(&url).await;
    let b = connect(&url).await;
    let topic = unique_prefix("close");
    let _rx_a = subscribed(&a, &[&topic], 16).await;
    let mut rx_b = subscribed(&b, &[&topic], 256).await;
    assert!(alive_tasks() > baseline_tasks);

    // Queued, then closed at once: close flushes them.
    let outcomes: Vec<_> = (0..100u8)
        .map(|i| a.publish(&topic, Bytes::from(vec![i])))
        .collect();
    let t = Instant::now();
    a.close().await;
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "close took {:?}",
        t.elapsed()
    );
    for r in futures_util::future::join_all(outcomes).await {
        assert_eq!(r, Ok(()));
    }
    for i in 0..100u8 {
        expect_message(&mut rx_b, &topic, &[i]).await;
    }

    assert!(!a.is_connected());
    assert_eq!(
        a.publish(&topic, Bytes::new()).await,
        Err(EngineError::Closed)
    );
    let (sink, _rx) = EngineSink::channel(1);
    assert_eq!(
        a.subscribe(vec!["x".into()], sink).await,
        Err(EngineError::Closed)
    );
    a.close().await; // twice is fine

    b.close().await;
    eventually("every engine task stopped", || {
        alive_tasks() == baseline_tasks
    })
    .await;
    let mut clients = connected_clients(&url).await;
    let t = Instant::now();
    while clients != baseline_clients && t.elapsed() < EVENTUALLY {
        tokio::time::sleep(Duration::from_millis(20)).await;
        clients = connected_clients(&url).await;
    }
    assert_eq!(clients, baseline_clients, "connections left open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_engine_stops_its_tasks() {
    let Some(svc) = Service::start(Kind::Redis, "drop") else {
        return;
    };
    let baseline = alive_tasks();
    let a = connect(&svc.url()).await;
    let topic = unique_prefix("drop");
    let _rx = subscribed(&a, &[&topic], 16).await;
    assert!(alive_tasks() > baseline);
    drop(a);
    eventually("every engine task stopped", || alive_tasks() == baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_name_the_url() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let url = format!("redis://user:secret@127.0.0.1:{port}/");
    match RedisEngine::connect(&url).await {
        Err(EngineError::Unavailable(msg)) => {
            assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
            assert!(!msg.contains("secret"), "password in the error: {msg}");
        }
        other => panic!("{other:?}"),
    }
    match RedisEngine::connect("http://nope").await {
        Err(EngineError::Other(msg)) => assert!(msg.contains("http://nope"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

/// `redis-server`'s pid, from `INFO server`.
async fn server_pid(url: &str) -> String {
    let client = redis::Client::open(url).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("probe connection");
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut c)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(|p| p.trim().to_owned())
        .expect("process_id in INFO")
}

fn signal(pid: &str, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill {sig} {pid}");
}

/// A broker that hangs (SIGSTOP: the sockets stay open, nothing answers) is noticed by the PING
/// probes, and the engine recovers when it resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_broker_is_noticed_by_ping() {
    let Some(svc) = Service::start(Kind::Redis, "hung") else {
        return;
    };
    if !svc.controllable() {
        return;
    }
    let pid = server_pid(&svc.url()).await;
    let a = connect(&svc.url()).await;
    let b = connect(&svc.url()).await;
    let topic = unique_prefix("hung");
    let mut rx = subscribed(&a, &[&topic], 64).await;

    signal(&pid, "-STOP");
    let lost = wait_for(&mut rx, "Lost", |ev| matches!(ev, SinkEvent::Lost(_))).await;
    let down = eventually("b notices", || !b.is_connected()).await;
    eprintln!("hung broker: Lost after {lost:?}, b's publisher down after {down:?}");
    // PING every 1 s, 1 s timeout.
    assert!(lost < Duration::from_secs(5), "Lost after {lost:?}");
    let r = within(
        Duration::from_secs(1),
        "publish outcome",
        b.publish(&topic, Bytes::from_static(b"x")),
    )
    .await;
    assert!(matches!(r, Err(EngineError::Unavailable(_))), "{r:?}");

    signal(&pid, "-CONT");
    let restored = wait_for(&mut rx, "Restored", |ev| *ev == SinkEvent::Restored).await;
    eprintln!("resumed broker: Restored after {restored:?}");
    eventually("b reconnects", || b.is_connected()).await;
    publish_ok(&b, &topic, b"resumed").await;
    wait_for(
        &mut rx,
        "the message published after resuming",
        |ev| matches!(ev, SinkEvent::Message { payload, .. } if &payload[..] == b"resumed"),
    )
    .await;
    a.close().await;
    b.close().await;
}

/// A flood of messages delays the answer to the subscription's PING behind them: that must not
/// look like an outage (no `Lost`, nothing dropped). Also prints how fast it went (no timing is
/// asserted): `cargo test -p wsu-redis --release -- --nocapture flood`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_not_an_outage() {
    let Some(svc) = Service::start(Kind::Redis, "flood") else {
        return;
    };
    let a = connect(&svc.url()).await;
    let b = connect(&svc.url()).await;
    let topic = unique_prefix("flood");
    let mut rx = subscribed(&b, &[&topic], 1 << 17).await;
    let payload = Bytes::from(vec![b'x'; 100]);

    // One at a time, each awaited: the round trip.
    const ONE_BY_ONE: usize = 2_000;
    let t = Instant::now();
    for _ in 0..ONE_BY_ONE {
        assert_eq!(a.publish(&topic, payload.clone()).await, Ok(()));
    }
    let each = t.elapsed() / ONE_BY_ONE as u32;

    // In chunks of 4096 queued at once, then awaited: the pipeline batches.
    const N: usize = 100_000;
    let t = Instant::now();
    let mut sent = 0;
    while sent < N {
        let n = (N - sent).min(4096);
        let futs: Vec<_> = (0..n).map(|_| a.publish(&topic, payload.clone())).collect();
        for r in futures_util::future::join_all(futs).await {
            assert_eq!(r, Ok(()));
        }
        sent += n;
    }
    let published = t.elapsed();
    let mut got = 0;
    while got < N + ONE_BY_ONE {
        match next_event(&mut rx, "flood message").await {
            SinkEvent::Message { .. } => got += 1,
            other => panic!("during the flood: {other:?}"),
        }
    }
    let received = t.elapsed();
    eprintln!(
        "100 B publishes: {each:?} each one at a time; {N} in chunks of 4096 published in \
         {published:?}, received in {received:?} ({:.0}/s), {} dropped",
        N as f64 / received.as_secs_f64(),
        rx.dropped()
    );
    assert_eq!(rx.dropped(), 0);
    a.close().await;
    b.close().await;
}
