//! `NatsEngine` against a real `nats-server` child process (see `wsu_tests::services`).

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wsu::cluster::{Engine, EngineError, EngineReceiver, EngineSink, SinkEvent};
use wsu_nats::NatsEngine;
use wsu_tests::services::{Kind, Service, unique_prefix};

/// For "eventually" conditions: generous, so that a loaded machine does not fail the test.
const EVENTUALLY: Duration = Duration::from_secs(10);

async fn engine(svc: &Service) -> NatsEngine {
    NatsEngine::connect(&svc.url())
        .await
        .expect("connect to nats-server")
}

async fn subscribed(engine: &NatsEngine, topics: &[&str], capacity: usize) -> EngineReceiver {
    let (sink, rx) = EngineSink::channel(capacity);
    engine
        .subscribe(topics.iter().map(|t| t.to_string()).collect(), sink)
        .await
        .expect("subscribe");
    rx
}

async fn next_event(rx: &mut EngineReceiver, within: Duration) -> SinkEvent {
    tokio::time::timeout(within, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no event within {within:?}"))
        .expect("sink closed")
}

async fn next_message(rx: &mut EngineReceiver) -> (String, Bytes) {
    match next_event(rx, EVENTUALLY).await {
        SinkEvent::Message { topic, payload } => (topic.to_string(), payload),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The outcome of a publish future, which must resolve within `within`.
async fn resolved<T>(fut: impl Future<Output = T>, within: Duration) -> T {
    tokio::time::timeout(within, fut)
        .await
        .unwrap_or_else(|_| panic!("publish did not resolve within {within:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_each_publish_reaches_both() {
    let Some(svc) = Service::start(Kind::Nats, "two_engines") else {
        return;
    };
    let topic = format!("{}.all", unique_prefix("two_engines"));
    let (a, b) = (engine(&svc).await, engine(&svc).await);
    assert_eq!(a.name(), "nats");
    assert!(a.is_connected());
    let mut ra = subscribed(&a, &[&topic], 16).await;
    let mut rb = subscribed(&b, &[&topic], 16).await;

    let from_a = Bytes::from_static(b"\x00from a\xff\r\n");
    let from_b = Bytes::from(vec![7u8; 70_000]);
    a.publish(&topic, from_a.clone()).await.expect("publish a");
    for rx in [&mut ra, &mut rb] {
        assert_eq!(next_message(rx).await, (topic.clone(), from_a.clone()));
    }
    b.publish(&topic, from_b.clone()).await.expect("publish b");
    for rx in [&mut ra, &mut rb] {
        assert_eq!(next_message(rx).await, (topic.clone(), from_b.clone()));
    }
    // An empty payload is a message too.
    a.publish(&topic, Bytes::new())
        .await
        .expect("publish empty");
    assert_eq!(next_message(&mut rb).await, (topic.clone(), Bytes::new()));
    assert_eq!((ra.dropped(), rb.dropped()), (0, 0));
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_are_kept_apart() {
    let Some(svc) = Service::start(Kind::Nats, "subjects") else {
        return;
    };
    let p = unique_prefix("subjects");
    let (all, mine, other) = (
        format!("{p}.all"),
        format!("{p}.node.a"),
        format!("{p}.node.b"),
    );
    let (a, b) = (engine(&svc).await, engine(&svc).await);
    let mut ra = subscribed(&a, &[&all, &mine], 16).await;
    b.publish(&other, Bytes::from_static(b"not for a"))
        .await
        .expect("publish other");
    b.publish(&mine, Bytes::from_static(b"for a"))
        .await
        .expect("publish mine");
    assert_eq!(
        next_message(&mut ra).await,
        (mine.clone(), Bytes::from_static(b"for a"))
    );
    b.publish(&all, Bytes::from_static(b"all"))
        .await
        .expect("publish all");
    assert_eq!(
        next_message(&mut ra).await,
        (all.clone(), Bytes::from_static(b"all"))
    );
    assert!(
        a.publish("bad subject", Bytes::new()).await.is_err(),
        "a subject with a space is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_publishes_arrive_in_order() {
    let Some(svc) = Service::start(Kind::Nats, "order") else {
        return;
    };
    const N: u32 = 2_000;
    let topic = format!("{}.all", unique_prefix("order"));
    let (a, b) = (engine(&svc).await, engine(&svc).await);
    let mut rb = subscribed(&b, &[&topic], N as usize + 16).await;
    // Ordered at call time: the futures are only awaited afterwards.
    let pending: Vec<_> = (0..N)
        .map(|i| a.publish(&topic, Bytes::from(i.to_be_bytes().to_vec())))
        .collect();
    for (i, p) in pending.into_iter().enumerate() {
        p.await.unwrap_or_else(|e| panic!("publish {i}: {e}"));
    }
    for i in 0..N {
        let (t, payload) = next_message(&mut rb).await;
        assert_eq!(t, topic);
        assert_eq!(
            &payload[..],
            &i.to_be_bytes()[..],
            "message {i} out of order"
        );
    }
    assert_eq!(rb.dropped(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_and_backlog() {
    let Some(svc) = Service::start(Kind::Nats, "limits") else {
        return;
    };
    let topic = format!("{}.all", unique_prefix("limits"));
    let a = NatsEngine::builder(svc.url())
        .publish_queue(1)
        .connect()
        .await
        .expect("connect");
    // nats-server's default max_payload, as the server announced it.
    assert_eq!(a.max_payload(), 1 << 20);
    let max = a.max_payload();
    assert_eq!(
        a.publish(&topic, Bytes::from(vec![0u8; max + 1])).await,
        Err(EngineError::TooLarge { size: max + 1, max })
    );
    a.publish(&topic, Bytes::from(vec![0u8; max]))
        .await
        .expect("a payload of exactly max_payload");

    // A queue of one fills up when publishes come faster than the publisher task flushes.
    let mut pending = Vec::new();
    let mut backlog = false;
    for i in 0..200_000u32 {
        let mut fut = a.publish(&topic, Bytes::from(i.to_be_bytes().to_vec()));
        match futures_util::FutureExt::now_or_never(&mut fut) {
            Some(Err(EngineError::Backlog)) => {
                backlog = true;
                break;
            }
            Some(r) => r.unwrap_or_else(|e| panic!("publish {i}: {e}")),
            None => pending.push(fut),
        }
    }
    assert!(backlog, "a queue of one never reported Backlog");
    // Whatever was queued is still published.
    for p in pending {
        p.await.expect("a queued publish");
    }
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_lost_unavailable_restored_resubscribed() {
    let Some(mut svc) = Service::start(Kind::Nats, "outage") else {
        return;
    };
    if !svc.controllable() {
        eprintln!("shared nats-server from WSU_NATS_URL: cannot kill it, outage test skipped");
        return;
    }
    let topic = format!("{}.all", unique_prefix("outage"));
    let (a, b) = (engine(&svc).await, engine(&svc).await);
    let mut ra = subscribed(&a, &[&topic], 64).await;
    let mut rb = subscribed(&b, &[&topic], 64).await;
    a.publish(&topic, Bytes::from_static(b"before"))
        .await
        .expect("publish before the outage");
    assert_eq!(next_message(&mut rb).await.1, Bytes::from_static(b"before"));
    assert_eq!(next_message(&mut ra).await.1, Bytes::from_static(b"before"));

    let killed = Instant::now();
    svc.kill();
    for rx in [&mut ra, &mut rb] {
        match next_event(rx, Duration::from_secs(3)).await {
            SinkEvent::Lost(why) => assert!(why.contains("127.0.0.1"), "{why}"),
            other => panic!("expected Lost, got {other:?}"),
        }
    }
    let lost_after = killed.elapsed();
    // The state flips together with the Lost event; allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    while a.is_connected() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!a.is_connected());
    for i in 0..20u8 {
        let r = resolved(
            a.publish(&topic, Bytes::from(vec![i])),
            Duration::from_secs(1),
        )
        .await;
        assert!(
            matches!(r, Err(EngineError::Unavailable(_))),
            "publish during the outage: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let restarted = Instant::now();
    svc.restart();
    for rx in [&mut ra, &mut rb] {
        match next_event(rx, EVENTUALLY).await {
            SinkEvent::Restored => {}
            other => panic!("expected Restored, got {other:?}"),
        }
    }
    let restored_after = restarted.elapsed();
    assert!(a.is_connected() && b.is_connected());
    // The first publish after Restored reaches both: the subscriptions were renewed.
    a.publish(&topic, Bytes::from_static(b"after"))
        .await
        .expect("publish after the outage");
    assert_eq!(next_message(&mut rb).await.1, Bytes::from_static(b"after"));
    assert_eq!(next_message(&mut ra).await.1, Bytes::from_static(b"after"));
    let delivered_after = restarted.elapsed();
    b.publish(&topic, Bytes::from_static(b"from b"))
        .await
        .expect("publish from b after the outage");
    assert_eq!(next_message(&mut ra).await.1, Bytes::from_static(b"from b"));
    eprintln!(
        "nats outage: Lost {lost_after:?} after kill; Restored {restored_after:?} and first \
         message delivered {delivered_after:?} after restart"
    );
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_engine_refuses_publishes() {
    let Some(svc) = Service::start(Kind::Nats, "close") else {
        return;
    };
    let topic = format!("{}.all", unique_prefix("close"));
    let (a, b) = (engine(&svc).await, engine(&svc).await);
    let mut rb = subscribed(&b, &[&topic], 16).await;
    // Queued before close: flushed by close.
    let last = a.publish(&topic, Bytes::from_static(b"last"));
    let started = Instant::now();
    a.close().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "close took {took:?}");
    assert_eq!(last.await, Ok(()));
    assert_eq!(next_message(&mut rb).await.1, Bytes::from_static(b"last"));
    assert_eq!(
        a.publish(&topic, Bytes::from_static(b"x")).await,
        Err(EngineError::Closed)
    );
    let (sink, _rx) = EngineSink::channel(1);
    assert_eq!(
        a.subscribe(vec![topic.clone()], sink).await,
        Err(EngineError::Closed)
    );
    a.close().await; // twice is fine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_fails_with_its_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let r = tokio::time::timeout(EVENTUALLY, NatsEngine::connect(&url))
        .await
        .expect("connect gives up");
    match r {
        Err(EngineError::Unavailable(why)) => assert!(why.contains(&url), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_engine_unsubscribes() {
    let Some(svc) = Service::start(Kind::Nats, "drop") else {
        return;
    };
    let topic = format!("{}.all", unique_prefix("drop"));
    let (a, b) = (engine(&svc).await, engine(&svc).await);
    let mut ra = subscribed(&a, &[&topic], 16).await;
    drop(a);
    // The forwarding task stopped with the engine: the sink's last clone is gone.
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        b.publish(&topic, Bytes::from_static(b"x"))
            .await
            .expect("publish");
        if let Ok(None) = tokio::time::timeout(Duration::from_millis(100), ra.recv()).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped engine still delivers"
        );
    }
}

/// A TCP proxy in front of the server that can go silent: open connections swallow every byte
/// both ways but stay open (a peer that hangs without closing), new ones are closed at once.
struct Blackhole {
    url: String,
    silent: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    async fn start(upstream: &str) -> Blackhole {
        use std::sync::atomic::{AtomicBool, Ordering};
        let upstream = upstream.trim_start_matches("nats://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let url = format!("nats://{}", listener.local_addr().expect("addr"));
        let silent = std::sync::Arc::new(AtomicBool::new(false));
        let flag = silent.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if flag.load(Ordering::Relaxed) {
                    // New connections are refused while silent: async-nats 0.46 has no timeout
                    // on the INFO handshake, so a connection that never speaks would hang the
                    // reconnection for good (see the crate documentation).
                    drop(client);
                    continue;
                }
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (mut from, mut to) in [(cr, sw), (sr, cw)] {
                    let flag = flag.clone();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if !flag.load(Ordering::Relaxed)
                                && to.write_all(&buf[..n]).await.is_err()
                            {
                                break;
                            }
                        }
                    });
                }
            }
        });
        Blackhole { url, silent, task }
    }

    fn silence(&self, on: bool) {
        self.silent.store(on, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_is_noticed_by_pings() {
    let Some(svc) = Service::start(Kind::Nats, "silent") else {
        return;
    };
    let topic = format!("{}.all", unique_prefix("silent"));
    let proxy = Blackhole::start(&svc.url()).await;
    let a = NatsEngine::connect(&proxy.url)
        .await
        .expect("connect through the proxy");
    let b = engine(&svc).await;
    let mut ra = subscribed(&a, &[&topic], 64).await;
    b.publish(&topic, Bytes::from_static(b"before"))
        .await
        .expect("publish");
    assert_eq!(next_message(&mut ra).await.1, Bytes::from_static(b"before"));

    let silenced = Instant::now();
    proxy.silence(true);
    match next_event(&mut ra, EVENTUALLY).await {
        SinkEvent::Lost(_) => {}
        other => panic!("expected Lost, got {other:?}"),
    }
    let lost_after = silenced.elapsed();
    let deadline = Instant::now() + Duration::from_secs(3);
    while a.is_connected() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Stay silent long enough for reconnection attempts to hang on the proxy and time out.
    for _ in 0..10 {
        let r = resolved(
            a.publish(&topic, Bytes::from_static(b"x")),
            Duration::from_secs(1),
        )
        .await;
        assert!(matches!(r, Err(EngineError::Unavailable(_))), "{r:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let unsilenced = Instant::now();
    proxy.silence(false);
    match next_event(&mut ra, EVENTUALLY).await {
        SinkEvent::Restored => {}
        other => panic!("expected Restored, got {other:?}"),
    }
    let restored_after = unsilenced.elapsed();
    b.publish(&topic, Bytes::from_static(b"after"))
        .await
        .expect("publish");
    assert_eq!(next_message(&mut ra).await.1, Bytes::from_static(b"after"));
    eprintln!(
        "nats silent server: Lost {lost_after:?} after silence (pings every 500 ms); \
         Restored {restored_after:?} after the server spoke again"
    );
}
