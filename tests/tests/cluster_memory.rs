//! The cluster conformance suite (tests/src/cluster.rs) on the in-process engine,
//! `wsu::cluster::MemoryBroker`: three nodes in one process. The same bodies run on Redis
//! (wsu-redis/tests/cluster.rs) and NATS (wsu-nats/tests/cluster.rs).

use std::sync::Arc;

use wsu::cluster::{Engine, MemoryBroker};
use wsu_tests::cluster::{EngineFactory, Setup};

async fn setup(_test: &str) -> Option<Setup> {
    let broker = MemoryBroker::new();
    let factory: EngineFactory = Arc::new(move || {
        let e: Box<dyn Engine> = Box::new(broker.engine());
        Box::pin(async move { e })
    });
    Some((factory, Box::new(())))
}

wsu_tests::cluster_suite!(setup);

/// Without an engine the same operations work on the node's own connections, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_operations() {
    use serde_json::json;
    use wsu::{Json, Published, Server, Socket};
    let server = Server::builder()
        .collect_registered(false)
        .on("whoami", |s: Socket, _d: serde_json::Value| async move {
            Json(s.id().to_string())
        })
        .build()
        .expect("build");
    assert!(server.cluster().is_none());
    let ts = wsu_tests::TestServer::start(server.clone()).await;
    let mut a = ts.client().await;
    let mut b = ts.client().await;
    a.ready().await;
    b.ready().await;
    assert_eq!(server.of("/").sockets_join("room").await.expect("join"), 2);
    let d = server.to("room").emit("hi", &1).expect("emit");
    assert_eq!((d.queued, d.published), (2, Published::NotClustered));
    for c in [&mut a, &mut b] {
        assert_eq!(c.recv_where("event", Some("hi")).await["data"], json!(1));
    }
    let listed = server.to("room").fetch_sockets().await.expect("fetch");
    assert_eq!(listed.len(), 2);
    let answer = |mut c: wsu_tests::Client, v: u32| async move {
        let m = c.recv_where("event", Some("q")).await;
        let id = m["ackId"].as_str().expect("ackId").to_owned();
        c.send(json!({"type": "ack", "namespace": "/", "ackId": id, "data": v}))
            .await;
        c
    };
    let (ta, tb) = (tokio::spawn(answer(a, 1)), tokio::spawn(answer(b, 2)));
    let report = server
        .to("room")
        .emit_with_ack::<_, u32>("q", &"?", std::time::Duration::from_secs(3))
        .await
        .expect("emit");
    assert!(report.is_complete(), "{report:?}");
    let mut got: Vec<u32> = report
        .answers
        .iter()
        .map(|(_, r)| *r.as_ref().expect("ack"))
        .collect();
    got.sort();
    assert_eq!(got, vec![1, 2]);
    let (mut a, _b) = (ta.await.expect("a"), tb.await.expect("b"));
    let one = listed[0].id;
    assert_eq!(
        server
            .of("/")
            .socket(one)
            .sockets_leave("room")
            .await
            .expect("leave"),
        1
    );
    assert_eq!(
        server
            .to("room")
            .fetch_sockets()
            .await
            .expect("fetch")
            .len(),
        1
    );
    assert_eq!(
        server
            .of("/")
            .disconnect_sockets()
            .await
            .expect("disconnect"),
        2
    );
    let _ = a.closed().await;
    ts.stop().await;
    assert_eq!(server.stats().connections, 0);
}

/// Garbage and messages of another format version on the cluster's topics are dropped and
/// counted; the node goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_cluster_messages_are_counted() {
    use serde_json::json;
    let broker = MemoryBroker::new();
    let make = {
        let broker = broker.clone();
        move || {
            wsu::Server::builder()
                .collect_registered(false)
                .engine(broker.engine())
                .cluster(wsu_tests::cluster::test_config("bad"))
                .build()
                .expect("build")
        }
    };
    let (a, b) = (make(), make());
    let tb = wsu_tests::TestServer::start(b.clone()).await;
    let mut c = tb.client().await;
    c.ready().await;
    wsu_tests::cluster::eventually("peers", || {
        a.cluster().expect("c").peers().len() == 1 && b.cluster().expect("c").peers().len() == 1
    })
    .await;
    let rogue = broker.engine();
    for payload in [
        &b"no header line"[..],
        b"{not json}\n",
        br#"{"v":2,"node":"ffffffffffffffff","kind":"b","filter":{"ns":"/"}}
{"type":"event","namespace":"/","event":"x"}"#,
    ] {
        rogue
            .publish("bad.all", bytes::Bytes::copy_from_slice(payload))
            .await
            .expect("publish");
    }
    wsu_tests::cluster::eventually("invalid counted", || b.stats().cluster_invalid >= 3).await;
    a.emit("still", &"working").expect("emit");
    assert_eq!(
        c.recv_where("event", Some("still")).await["data"],
        json!("working")
    );
    tb.stop().await;
    a.shutdown().await;
}

/// The `Streams` contract on the memory engine.
#[tokio::test]
async fn streams_contract() {
    let (factory, _guard) = setup("streams").await.expect("memory");
    wsu_tests::streams::streams_contract(factory, "wsu-test").await;
}

/// An engine whose streams cannot start (as NATS without JetStream): the node says so, and
/// broadcasts still cross nodes through pub/sub, unnumbered by the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_do_not_start_fall_back_to_pub_sub() {
    use bytes::Bytes;
    use std::time::Duration;
    use wsu::cluster::{
        EngineError, EngineFuture, EngineSink, StreamLimits, StreamPos, StreamRead, Streams,
    };

    struct NoJetStream(wsu::cluster::MemoryEngine);
    fn down<T: Send + 'static>() -> EngineFuture<'static, Result<T, EngineError>> {
        Box::pin(async { Err(EngineError::Other("no JetStream".into())) })
    }
    impl Engine for NoJetStream {
        fn name(&self) -> &'static str {
            "no-jetstream"
        }
        fn subscribe(
            &self,
            topics: Vec<String>,
            sink: EngineSink,
        ) -> EngineFuture<'_, Result<(), EngineError>> {
            self.0.subscribe(topics, sink)
        }
        fn publish(
            &self,
            topic: &str,
            payload: Bytes,
        ) -> EngineFuture<'static, Result<(), EngineError>> {
            self.0.publish(topic, payload)
        }
        fn close(&self) -> EngineFuture<'_, ()> {
            self.0.close()
        }
        fn streams(&self) -> Option<&dyn Streams> {
            Some(self)
        }
    }
    impl Streams for NoJetStream {
        fn start(&self, _: &str, _: EngineSink) -> EngineFuture<'_, Result<(), EngineError>> {
            down()
        }
        fn append(
            &self,
            _: &str,
            _: Bytes,
            _: StreamLimits,
        ) -> EngineFuture<'static, Result<StreamPos, EngineError>> {
            down()
        }
        fn read(
            &self,
            _: &str,
            _: u64,
            _: usize,
        ) -> EngineFuture<'static, Result<StreamRead, EngineError>> {
            down()
        }
        fn put(
            &self,
            _: &str,
            _: Bytes,
            _: Duration,
        ) -> EngineFuture<'static, Result<(), EngineError>> {
            down()
        }
        fn take(&self, _: &str) -> EngineFuture<'static, Result<Option<Bytes>, EngineError>> {
            down()
        }
    }

    let broker = MemoryBroker::new();
    let factory: EngineFactory = Arc::new(move || {
        let e: Box<dyn Engine> = Box::new(NoJetStream(broker.engine()));
        Box::pin(async move { e })
    });
    let nodes = wsu_tests::cluster::Nodes::start_with(&factory, "fallback", 2, |b| {
        b.recovery(wsu::Recovery::default())
    })
    .await;
    let mut c = wsu_tests::resume::Session::connect(nodes.nodes[1].addr).await;
    c.recovery().await;
    c.client
        .send(serde_json::json!({"type": "join", "room": "r", "ackId": "j"}))
        .await;
    assert_eq!(c.next().await["type"], "ack");
    let d = nodes.server(0).to("r").emit("n", &7).expect("emit");
    assert_ne!(
        d.published,
        wsu::Published::Failed,
        "pub/sub, not the broken streams"
    );
    let m = c.events(1).await;
    assert_eq!(m[0]["data"], 7);
    // Numbered by node B itself (per-node recovery).
    assert_eq!(m[0]["offset"], 1);
    drop(c);
    nodes.stop().await;
}
