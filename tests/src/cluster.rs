//! The cluster conformance suite: the same test bodies run against every engine (in memory
//! here, Redis in `wsu-redis/tests/cluster.rs`, NATS in `wsu-nats/tests/cluster.rs`), three
//! `Server`s on three ports in one process.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use wsu::cluster::{ClusterConfig, Engine, EngineError, EngineFuture, EngineSink, SinkEvent};
use wsu::{Json, Published, Server, Socket, SocketId};

use crate::{Client, TestServer};

/// Makes one engine per node, all on the same broker and topic prefix.
pub type EngineFactory =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Box<dyn Engine>> + Send>> + Send + Sync>;

/// Cluster timings short enough for tests: heartbeat 100 ms, node timeout 1 s, requests 1 s.
pub fn test_config(prefix: &str) -> ClusterConfig {
    ClusterConfig::default()
        .prefix(prefix)
        .heartbeat(Duration::from_millis(100), Duration::from_secs(1))
        .request_timeout(Duration::from_secs(1))
}

/// An engine whose node can be cut off from the others (both directions, silently, as a hung
/// node or a network partition would be), to test timeouts and membership expiry.
pub struct Severable {
    inner: Box<dyn Engine>,
    cut: Arc<AtomicBool>,
}

impl Severable {
    /// Wrap an engine; the returned flag cuts it off when set.
    pub fn new(inner: Box<dyn Engine>) -> (Severable, Arc<AtomicBool>) {
        let cut = Arc::new(AtomicBool::new(false));
        (
            Severable {
                inner,
                cut: cut.clone(),
            },
            cut,
        )
    }
}

impl Engine for Severable {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn subscribe(
        &self,
        topics: Vec<String>,
        sink: EngineSink,
    ) -> EngineFuture<'_, Result<(), EngineError>> {
        let (mine, mut rx) = EngineSink::channel(8192);
        let cut = self.cut.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if cut.load(Ordering::Relaxed) {
                    continue;
                }
                match ev {
                    SinkEvent::Message { topic, payload } => {
                        sink.deliver(topic, payload);
                    }
                    SinkEvent::Lost(why) => sink.lost(why),
                    SinkEvent::Restored => sink.restored(),
                    _ => {}
                }
            }
        });
        self.inner.subscribe(topics, mine)
    }

    fn publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> EngineFuture<'static, Result<(), EngineError>> {
        if self.cut.load(Ordering::Relaxed) {
            return Box::pin(async { Ok(()) });
        }
        self.inner.publish(topic, payload)
    }

    // Streams pass through (a node cut off in the suite's tests does not use them).
    fn streams(&self) -> Option<&dyn wsu::cluster::Streams> {
        self.inner.streams()
    }

    fn close(&self) -> EngineFuture<'_, ()> {
        self.inner.close()
    }
}

/// The app every node runs: `whoami` answers the connection's id.
fn app() -> wsu::ServerBuilder {
    Server::builder()
        .collect_registered(false)
        .on("whoami", |s: Socket, _d: Value| async move {
            Json(s.id().to_string())
        })
}

/// Three (or `n`) nodes of one cluster, each serving on its own port, once every node sees
/// all the others.
pub struct Nodes {
    /// The nodes.
    pub nodes: Vec<TestServer>,
    /// Per node, the flag that cuts it off (see [`Severable`]).
    pub cut: Vec<Arc<AtomicBool>>,
}

impl Nodes {
    /// Start `n` nodes on engines from `factory`, with topic prefix `prefix`.
    pub async fn start(factory: &EngineFactory, prefix: &str, n: usize) -> Nodes {
        Self::start_with(factory, prefix, n, |b| b).await
    }

    /// [`start`](Self::start), with each node's builder changed by `configure` first.
    pub async fn start_with(
        factory: &EngineFactory,
        prefix: &str,
        n: usize,
        configure: impl Fn(wsu::ServerBuilder) -> wsu::ServerBuilder,
    ) -> Nodes {
        let mut nodes = Vec::new();
        let mut cut = Vec::new();
        for _ in 0..n {
            let (engine, flag) = Severable::new(factory().await);
            let server = configure(app())
                .engine(engine)
                .cluster(test_config(prefix))
                .build()
                .expect("build node");
            nodes.push(TestServer::start(server).await);
            cut.push(flag);
        }
        let nodes = Nodes { nodes, cut };
        nodes.wait_peers(n - 1).await;
        nodes
    }

    /// Wait until every node that is not cut off sees exactly `peers` other nodes.
    pub async fn wait_peers(&self, peers: usize) {
        eventually("cluster membership", || {
            self.nodes
                .iter()
                .zip(&self.cut)
                .filter(|(_, c)| !c.load(Ordering::Relaxed))
                .all(|(n, _)| n.server.cluster().expect("clustered").peers().len() == peers)
        })
        .await;
    }

    /// The server of node `i`.
    pub fn server(&self, i: usize) -> &Server {
        &self.nodes[i].server
    }

    /// Connect a client to node `i`, wait for its connect phase, and learn its id.
    pub async fn client(&self, i: usize) -> (Client, SocketId) {
        let mut c = self.nodes[i].client().await;
        c.ready().await;
        c.emit_ack("whoami", json!(null), "whoami").await;
        let got = c.recv_where("ack", None).await;
        let id = SocketId::parse(got["data"].as_str().expect("id")).expect("socket id");
        (c, id)
    }

    /// Stop every node (gracefully) and check that each one's gauges are back to zero.
    pub async fn stop(self) {
        for n in self.nodes {
            let server = n.server.clone();
            n.stop().await;
            let s = server.stats();
            assert_eq!((s.connections, s.rooms, s.pending_acks), (0, 0, 0), "{s:?}");
        }
    }
}

/// Poll `cond` until it holds; panics after 10 s.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn join(c: &mut Client, room: &str) {
    c.send(json!({"type": "join", "namespace": "/", "room": room, "ackId": "j"}))
        .await;
    let m = c.recv_where("ack", None).await;
    assert_eq!(m["ackId"], "j", "{m}");
}

/// The next event, skipping anything else; asserts its name and returns its data.
pub async fn event(c: &mut Client, name: &str) -> Value {
    let m = c.recv_where("event", None).await;
    assert_eq!(m["event"], name, "{m}");
    m["data"].clone()
}

/// Broadcasts to the namespace reach every node's clients, wherever they were sent from.
pub async fn broadcast(factory: EngineFactory, prefix: &str) {
    let nodes = Nodes::start(&factory, prefix, 3).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(nodes.client(i).await.0);
    }
    for from in 0..3 {
        let d = nodes
            .server(from)
            .emit("news", &json!({ "from": from }))
            .expect("emit");
        assert_eq!(d.queued, 1);
        assert_ne!(d.published, Published::Failed);
        assert_ne!(d.published, Published::NotClustered);
        for c in &mut clients {
            assert_eq!(event(c, "news").await, json!({ "from": from }));
        }
    }
    let d = nodes
        .server(1)
        .of("/")
        .emit_confirmed("news", &"confirmed")
        .await
        .expect("emit");
    assert_eq!(d.published, Published::Confirmed);
    for c in &mut clients {
        assert_eq!(event(c, "news").await, json!("confirmed"));
    }
    // A local broadcast stays on its node.
    nodes
        .server(0)
        .of("/")
        .local()
        .emit("here", &0)
        .expect("emit");
    nodes.server(0).emit("marker", &0).expect("emit");
    assert_eq!(event(&mut clients[0], "here").await, json!(0));
    for c in &mut clients {
        assert_eq!(event(c, "marker").await, json!(0));
    }
    let s = nodes.server(2).stats();
    assert_eq!(s.cluster_nodes, 3);
    assert!(s.cluster_connected);
    assert!(s.cluster_received > 0 && s.cluster_published > 0, "{s:?}");
    nodes.stop().await;
}

/// Rooms, `except` (a connection or a room) and multi-room dedup, across nodes.
pub async fn rooms_except_dedup(factory: EngineFactory, prefix: &str) {
    let nodes = Nodes::start(&factory, prefix, 3).await;
    let (mut c1, id1) = nodes.client(0).await; // rooms a, b
    let (mut c2, _) = nodes.client(1).await; // room a
    let (mut c3, _) = nodes.client(2).await; // room b
    let (mut c4, _) = nodes.client(2).await; // no room
    let (mut c5, _) = nodes.client(1).await; // rooms a, muted
    join(&mut c1, "a").await;
    join(&mut c1, "b").await;
    join(&mut c2, "a").await;
    join(&mut c3, "b").await;
    join(&mut c5, "a").await;
    join(&mut c5, "muted").await;

    // Union of rooms, each member once, from a node with no member.
    nodes
        .server(2)
        .to("a")
        .to("b")
        .emit("ab", &1)
        .expect("emit");
    nodes.server(2).emit("marker", &1).expect("emit");
    for c in [&mut c1, &mut c2, &mut c3, &mut c5] {
        assert_eq!(event(c, "ab").await, json!(1));
        assert_eq!(
            event(c, "marker").await,
            json!(1),
            "a member got `ab` twice"
        );
    }
    assert_eq!(event(&mut c4, "marker").await, json!(1), "c4 is in no room");

    // Except a (remote) connection and a room.
    nodes
        .server(1)
        .to("a")
        .to("b")
        .except(id1)
        .except_room("muted")
        .emit("ab", &2)
        .expect("emit");
    nodes.server(1).emit("marker", &2).expect("emit");
    for c in [&mut c2, &mut c3] {
        assert_eq!(event(c, "ab").await, json!(2));
    }
    for c in [&mut c1, &mut c2, &mut c3, &mut c4, &mut c5] {
        assert_eq!(event(c, "marker").await, json!(2), "excluded but received");
    }
    nodes.stop().await;
}

/// Queries and operations on remote connections: fetch_sockets, rooms, socket_rooms, counts,
/// sockets_join / sockets_leave, and disconnect by id.
pub async fn remote_queries(factory: EngineFactory, prefix: &str) {
    let nodes = Nodes::start(&factory, prefix, 3).await;
    let (mut c0, id0) = nodes.client(0).await;
    let (mut c1, id1) = nodes.client(1).await;
    let (mut c2, id2) = nodes.client(2).await;
    join(&mut c1, "r1").await;
    join(&mut c2, "r2").await;
    let a = nodes.server(0);
    let cluster = a.cluster().expect("clustered");

    let all = a.of("/").fetch_sockets().await.expect("fetch");
    let mut ids: Vec<SocketId> = all.iter().map(|s| s.id).collect();
    let mut want = vec![id0, id1, id2];
    ids.sort();
    want.sort();
    assert_eq!(ids, want);
    let on_b = all.iter().find(|s| s.id == id1).expect("c1");
    assert_eq!(
        on_b.node,
        nodes.server(1).cluster().expect("c").node_id(),
        "reported node"
    );
    assert_eq!(on_b.rooms, vec!["r1".to_owned()]);

    assert_eq!(cluster.rooms("/").await.expect("rooms"), vec!["r1", "r2"]);
    assert_eq!(
        cluster.socket_rooms("/", id2).await.expect("rooms of c2"),
        Some(vec!["r2".to_owned()])
    );
    let in_r1 = a.to("r1").fetch_sockets().await.expect("fetch r1");
    assert_eq!(in_r1.len(), 1);
    assert_eq!(in_r1[0].id, id1);

    // Join everyone (across nodes) to "all", then a room broadcast reaches all three.
    assert_eq!(a.of("/").sockets_join("all").await.expect("join"), 3);
    a.to("all").emit("hi", &"all").expect("emit");
    for c in [&mut c0, &mut c1, &mut c2] {
        assert_eq!(event(c, "hi").await, json!("all"));
    }
    // A remote connection leaves a room.
    assert_eq!(
        a.of("/")
            .socket(id2)
            .sockets_leave("all")
            .await
            .expect("leave"),
        1
    );
    assert_eq!(
        cluster.socket_rooms("/", id2).await.expect("rooms"),
        Some(vec!["r2".to_owned()])
    );
    assert_eq!(a.to("all").fetch_sockets().await.expect("fetch").len(), 2);

    // Disconnect a remote connection by id.
    assert!(cluster.disconnect(id2).await.expect("disconnect"));
    match c2.closed().await {
        crate::Closed::Frame(code, _) => assert_eq!(code, 1000),
        other => panic!("expected a close frame, got {other:?}"),
    }
    eventually("c2 gone", || nodes.server(2).stats().connections == 0).await;
    assert_eq!(a.of("/").fetch_sockets().await.expect("fetch").len(), 2);
    assert!(!cluster.disconnect(id2).await.expect("disconnect"));
    nodes.stop().await;
}

async fn answer_acks(mut c: Client, answer: Value) -> Client {
    let m = c.recv_where("event", Some("vote")).await;
    let ack = m["ackId"].as_str().expect("ackId").to_owned();
    c.send(json!({"type": "ack", "namespace": "/", "ackId": ack, "data": answer}))
        .await;
    c
}

/// A broadcast with ack gets every answer from every node, with the expected count.
pub async fn broadcast_acks(factory: EngineFactory, prefix: &str) {
    let nodes = Nodes::start(&factory, prefix, 3).await;
    let mut tasks = Vec::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        for k in 0..2 {
            let (mut c, id) = nodes.client(i).await;
            join(&mut c, "voters").await;
            ids.push(id);
            tasks.push(tokio::spawn(answer_acks(c, json!(i * 10 + k))));
        }
    }
    let report = nodes
        .server(1)
        .to("voters")
        .emit_with_ack::<_, u32>("vote", &"?", Duration::from_secs(3))
        .await
        .expect("emit");
    assert_eq!(report.expected, 6, "{report:?}");
    assert!(report.missing_nodes.is_empty(), "{report:?}");
    assert!(report.is_complete(), "{report:?}");
    let mut got: Vec<u32> = report
        .answers
        .iter()
        .map(|(_, r)| *r.as_ref().expect("ack"))
        .collect();
    got.sort();
    assert_eq!(got, vec![0, 1, 10, 11, 20, 21]);
    let mut answered: Vec<SocketId> = report.answers.iter().map(|(id, _)| *id).collect();
    answered.sort();
    ids.sort();
    assert_eq!(answered, ids);
    for t in tasks {
        t.await.expect("client task");
    }
    nodes.stop().await;
}

/// A node that is gone: a broadcast with ack reports it missing (and still gets the others'
/// answers); queries time out naming it until the membership drops it, then succeed.
pub async fn node_gone(factory: EngineFactory, prefix: &str) {
    let nodes = Nodes::start(&factory, prefix, 3).await;
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (mut c, _) = nodes.client(i).await;
        join(&mut c, "voters").await;
        tasks.push(tokio::spawn(answer_acks(c, json!(i))));
    }
    let gone = nodes.server(2).cluster().expect("c").node_id().to_owned();
    nodes.cut[2].store(true, Ordering::Relaxed);
    let report = nodes
        .server(0)
        .to("voters")
        .emit_with_ack::<_, u32>("vote", &"?", Duration::from_secs(2))
        .await
        .expect("emit");
    assert_eq!(report.missing_nodes, vec![gone.clone()], "{report:?}");
    assert_eq!(report.expected, 2, "{report:?}");
    let mut got: Vec<u32> = report
        .answers
        .iter()
        .map(|(_, r)| *r.as_ref().expect("ack"))
        .collect();
    got.sort();
    assert_eq!(got, vec![0, 1]);
    // Until the node timeout, it is still a member: a query waits for it and names it.
    match nodes.server(0).of("/").fetch_sockets().await {
        Err(wsu::cluster::ClusterError::Timeout { missing }) => assert_eq!(missing, vec![gone]),
        Ok(s) => {
            // The membership already dropped it (a slow machine): only live nodes answered.
            assert_eq!(s.len(), 2);
        }
        Err(e) => panic!("{e}"),
    }
    nodes.wait_peers(1).await;
    let live = nodes
        .server(0)
        .of("/")
        .fetch_sockets()
        .await
        .expect("fetch");
    assert_eq!(
        live.len(),
        2,
        "the cut-off node's connections are gone from queries"
    );
    assert!(nodes.server(0).stats().cluster_request_timeouts >= 1);
    for t in tasks.into_iter().take(2) {
        t.await.expect("client task");
    }
    nodes.stop().await;
}

/// What a suite's setup returns: the engine factory, and whatever must live as long as the
/// test (a broker child process).
pub type Setup = (EngineFactory, Box<dyn std::any::Any + Send>);

/// Generate the suite's tests for one engine: `cluster_suite!(setup)` where
/// `async fn setup(test: &str) -> Option<Setup>` (`None`: the broker is not available, the test
/// is skipped with a message; under CI it fails in `setup`).
#[macro_export]
macro_rules! cluster_suite {
    ($setup:path) => {
        $crate::cluster_suite!(@one $setup, broadcast);
        $crate::cluster_suite!(@one $setup, rooms_except_dedup);
        $crate::cluster_suite!(@one $setup, remote_queries);
        $crate::cluster_suite!(@one $setup, broadcast_acks);
        $crate::cluster_suite!(@one $setup, node_gone);
        $crate::cluster_suite!(@one $setup, recovery_per_node);
        $crate::cluster_suite!(@one $setup, recovery_across_nodes);
        $crate::cluster_suite!(@one $setup, presence_across_nodes);
        $crate::cluster_suite!(@one $setup, recovery_refusals_across_nodes);
    };
    (@one $setup:path, $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some((factory, _guard)) = $setup(stringify!($name)).await else {
                return;
            };
            let prefix = $crate::services::unique_prefix(stringify!($name));
            $crate::cluster::$name(factory, &prefix).await;
        }
    };
}

/// Recovery in a cluster, as it stands (PROTOCOL.md §13): each node numbers every broadcast it
/// delivers, its own and other nodes', in its own history. A client that drops and resumes on
/// the node it left gets everything it missed, sent from any node, once and in order; its token
/// means nothing to another node (a fresh session there).
pub async fn recovery_per_node(factory: EngineFactory, prefix: &str) {
    use crate::resume::Session;
    // The engine without its streams (as a third-party engine may be).
    let factory: EngineFactory = Arc::new(move || {
        let f = factory.clone();
        Box::pin(async move { Box::new(WithoutStreams(f().await)) as Box<dyn Engine> })
    });
    let nodes = Nodes::start_with(&factory, prefix, 2, |b| {
        b.recovery(wsu::Recovery::default())
    })
    .await;
    let (a_addr, b_addr) = (nodes.nodes[0].addr, nodes.nodes[1].addr);
    let mut s = Session::connect(a_addr).await;
    s.recovery().await;
    s.client
        .send(json!({"type": "join", "room": "r", "ackId": "j"}))
        .await;
    assert_eq!(s.next().await["type"], "ack");
    // The room exists on node A once B knows about it: B's broadcasts are filtered on A.
    for i in 0..5 {
        nodes.server(1).to("r").emit("n", &i).expect("emit");
    }
    let seen = s.events(5).await;
    let token = s.token();
    let positions = s.positions.clone();
    drop(s);
    eventually("session detached", || {
        nodes.server(0).stats().sessions_detached == 1
    })
    .await;
    for i in 5..105 {
        nodes.server(i % 2).to("r").emit("n", &i).expect("emit");
    }
    // Another node does not know the session.
    let other = Session::resume_with(b_addr, &token, positions.clone()).await;
    assert_eq!(other.hello["resume"]["reason"], "unknown session");
    drop(other);
    let mut back = Session::resume_with(a_addr, &token, positions).await;
    assert_eq!(back.hello["resume"]["accepted"], true, "{}", back.hello);
    let r = back.recovery().await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    let mut all = seen;
    all.extend(r["data"]["events"].as_array().cloned().unwrap_or_default());
    // B's last broadcasts may still be on their way to node A: they arrive live, after.
    let rest = 105 - all.len();
    all.extend(back.events(rest).await);
    let mut got: Vec<i64> = all.iter().map(|e| e["data"].as_i64().expect("n")).collect();
    // Broadcasts from the two nodes interleave in arrival order on node A; each one once.
    assert_eq!(got.len(), 105, "{got:?}");
    got.sort_unstable();
    assert_eq!(got, (0..105).collect::<Vec<_>>());
    let offsets: Vec<u64> = all
        .iter()
        .map(|e| e["offset"].as_u64().expect("offset"))
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    drop(back);
    nodes.stop().await;
}

/// What cannot be recovered across nodes says why: a forged token (the session survives it),
/// a trimmed stream (rooms still restored), an expired session.
pub async fn recovery_refusals_across_nodes(factory: EngineFactory, prefix: &str) {
    use crate::resume::Session;
    if factory().await.streams().is_none() {
        println!("SKIPPED recovery_refusals_across_nodes: this engine has no streams");
        return;
    }
    let nodes = Nodes::start_with(&factory, prefix, 2, |b| {
        b.recovery(
            wsu::Recovery::default()
                .history_size(5)
                .session_ttl(Duration::from_millis(1500)),
        )
    })
    .await;
    let (a_addr, b_addr) = (nodes.nodes[0].addr, nodes.nodes[1].addr);
    let member = |addr| async move {
        let mut s = Session::connect(addr).await;
        s.recovery().await;
        s.client
            .send(json!({"type": "join", "room": "r", "ackId": "j"}))
            .await;
        assert_eq!(s.next().await["type"], "ack");
        s
    };
    let s = member(a_addr).await;
    let (token, sid, positions) = (s.token(), s.sid(), s.positions.clone());
    drop(s);
    eventually("session parked", || {
        nodes.server(0).stats().sessions_parked == 1
    })
    .await;
    // Far more broadcasts than the stream keeps.
    for i in 0..40 {
        nodes.server(i % 2).to("r").emit("n", &i).expect("emit");
    }
    // A forged token (the right id, another secret) on node B: refused, the session lives on.
    let mut forged = token.clone();
    let last = forged.pop().expect("char");
    forged.push(if last == 'A' { 'Q' } else { 'A' });
    let mut f = Session::resume_with(b_addr, &forged, positions.clone()).await;
    assert_eq!(f.hello["resume"]["reason"], "invalid token", "{}", f.hello);
    // (A clean close: its own fresh session ends, and is not parked.)
    f.client.close(1000, "bye").await;
    let mut back = Session::resume_with(b_addr, &token, positions).await;
    assert_eq!(back.hello["resume"]["accepted"], true, "{}", back.hello);
    assert_eq!(back.sid(), sid);
    let r = back.recovery().await;
    assert_eq!(r["data"]["recovered"], false, "{r}");
    assert_eq!(r["data"]["reason"], "trimmed");
    // Its rooms are restored all the same. (Broadcasts the node had not delivered yet when it
    // resumed may still arrive first, each after the recovery frame's position.)
    let at = r["data"]["offset"].as_u64().expect("offset");
    nodes.server(0).to("r").emit("n", &99).expect("emit");
    loop {
        let e = back.events(1).await;
        assert!(e[0]["offset"].as_u64().expect("offset") > at, "{e:?}");
        if e[0]["data"] == 99 {
            break;
        }
    }
    // Dropped again, and not back within the session TTL: gone on every node.
    back.client.send(json!({"type": "ping"})).await;
    while back.next().await["type"] != "pong" {}
    let token = back.token();
    drop(back);
    eventually("session parked", || {
        nodes.server(1).stats().sessions_parked == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late = Session::resume_with(a_addr, &token, std::collections::BTreeMap::new()).await;
    assert_eq!(
        late.hello["resume"]["reason"], "unknown session",
        "{}",
        late.hello
    );
    drop(late);
    nodes.stop().await;
}

/// Presence across nodes: a joiner's state lists the members of every node, joins and leaves
/// cross nodes, and when a node dies its members leave, for the others, once the membership
/// drops it (the node timeout).
pub async fn presence_across_nodes(factory: EngineFactory, prefix: &str) {
    let nodes = Nodes::start_with(&factory, prefix, 2, |b| b.presence(true)).await;
    async fn join(c: &mut Client) -> Value {
        c.send(json!({"type": "join", "room": "p", "ackId": "j"}))
            .await;
        let state = c.recv().await;
        assert_eq!(state["type"], "presence", "{state}");
        assert_eq!(c.recv().await["type"], "ack");
        state
    }
    let (mut a, a_id) = nodes.client(0).await;
    let state = join(&mut a).await;
    assert_eq!(state["data"]["state"].as_object().map(|o| o.len()), Some(1));
    eventually("node B knows a", || {
        nodes.server(1).presence("/", "p").len() == 1
    })
    .await;
    let (mut b, b_id) = nodes.client(1).await;
    let state = join(&mut b).await;
    let keys: Vec<String> = state["data"]["state"]
        .as_object()
        .expect("state")
        .keys()
        .cloned()
        .collect();
    let mut want = vec![a_id.to_string(), b_id.to_string()];
    want.sort();
    assert_eq!(keys, want, "the state lists both nodes' members");
    // a (on node A) hears b's join, from node B.
    let diff = a.recv().await;
    assert_eq!(diff["type"], "presence", "{diff}");
    assert_eq!(
        diff["data"]["joins"][b_id.to_string()][0]["sid"],
        b_id.to_string()
    );
    eventually("both nodes list both", || {
        nodes.server(0).presence("/", "p").len() == 2
            && nodes.server(1).presence("/", "p").len() == 2
    })
    .await;
    // b leaves the room: a hears it.
    b.send(json!({"type": "leave", "room": "p", "ackId": "l"}))
        .await;
    assert_eq!(b.recv().await["type"], "ack");
    let diff = a.recv().await;
    assert_eq!(
        diff["data"]["leaves"][b_id.to_string()][0]["sid"],
        b_id.to_string(),
        "{diff}"
    );
    // b comes back, then node B dies (goes silent): a hears b leave once B is dropped.
    join(&mut b).await;
    let diff = a.recv().await;
    assert_eq!(
        diff["data"]["joins"][b_id.to_string()][0]["sid"],
        b_id.to_string(),
        "{diff}"
    );
    nodes.cut[1].store(true, Ordering::Relaxed);
    let started = tokio::time::Instant::now();
    let diff = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = a.recv().await;
            if m["type"] == "presence" {
                return m;
            }
        }
    })
    .await
    .expect("a leave within the node timeout");
    assert_eq!(
        diff["data"]["leaves"][b_id.to_string()][0]["sid"],
        b_id.to_string(),
        "{diff}"
    );
    println!("a dead node's member left after {:?}", started.elapsed());
    assert_eq!(nodes.server(0).presence("/", "p").len(), 1);
    nodes.cut[1].store(false, Ordering::Relaxed);
    drop((a, b));
    nodes.stop().await;
}

/// An engine with its [`Streams`](wsu::cluster::Streams) hidden.
struct WithoutStreams(Box<dyn Engine>);

impl Engine for WithoutStreams {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn max_payload(&self) -> usize {
        self.0.max_payload()
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
}

/// Recovery across nodes, on an engine with [`Streams`](wsu::cluster::Streams): every node
/// numbers broadcasts with the engine's offsets (members on two nodes see the same offset), a
/// dropped client's session waits in the engine, and the client resumes on another node with
/// everything it missed, from every node, once and in offset order. An engine without streams
/// skips this body.
pub async fn recovery_across_nodes(factory: EngineFactory, prefix: &str) {
    use crate::resume::Session;
    if factory().await.streams().is_none() {
        println!("SKIPPED recovery_across_nodes: this engine has no streams");
        return;
    }
    let nodes = Nodes::start_with(&factory, prefix, 2, |b| {
        b.recovery(wsu::Recovery::default().session_ttl(Duration::from_secs(30)))
    })
    .await;
    let (a_addr, b_addr) = (nodes.nodes[0].addr, nodes.nodes[1].addr);
    let join = |mut s: Session| async move {
        s.recovery().await;
        s.client
            .send(json!({"type": "join", "room": "r", "ackId": "j"}))
            .await;
        assert_eq!(s.next().await["type"], "ack");
        s
    };
    let mut s = join(Session::connect(a_addr).await).await;
    let mut witness = join(Session::connect(b_addr).await).await;
    for i in 0..5 {
        let d = nodes.server(i % 2).to("r").emit("n", &i).expect("emit");
        assert_ne!(d.published, wsu::Published::Failed);
    }
    let seen = s.events(5).await;
    let theirs = witness.events(5).await;
    let pos = |e: &Value| {
        (
            e["offset"].as_u64().expect("offset"),
            e["epoch"].as_str().map(str::to_owned),
        )
    };
    assert_eq!(
        seen.iter().map(pos).collect::<Vec<_>>(),
        theirs.iter().map(pos).collect::<Vec<_>>(),
        "the same numbering on both nodes"
    );
    // 1,000 broadcasts from both nodes; the client loses its TCP connection in the middle of
    // them and comes back on the other node while they go on.
    let (na, nb) = (nodes.server(0).clone(), nodes.server(1).clone());
    let sender = tokio::spawn(async move {
        for i in 5..1005 {
            let node = if i % 2 == 0 { &na } else { &nb };
            node.to("r").emit("n", &i).expect("emit");
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let mut seen = seen;
    seen.extend(s.events(200).await);
    let token = s.token();
    let sid = s.sid();
    let positions = s.positions.clone();
    drop(s);
    eventually("session parked in the engine", || {
        nodes.server(0).stats().sessions_parked == 1
    })
    .await;
    // Back on the other node.
    let mut back = Session::resume_with(b_addr, &token, positions.clone()).await;
    assert_eq!(back.hello["resume"]["accepted"], true, "{}", back.hello);
    assert_eq!(back.sid(), sid);
    let r = back.recovery().await;
    assert_eq!(r["data"]["recovered"], true, "{r}");
    let mut all = seen;
    all.extend(r["data"]["events"].as_array().cloned().unwrap_or_default());
    let rest = 1005 - all.len();
    all.extend(back.events(rest).await);
    sender.await.expect("sender");
    let offsets: Vec<u64> = all
        .iter()
        .map(|e| e["offset"].as_u64().expect("offset"))
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "in offset order: {offsets:?}"
    );
    let mut got: Vec<i64> = all.iter().map(|e| e["data"].as_i64().expect("n")).collect();
    got.sort_unstable();
    assert_eq!(got, (0..1005).collect::<Vec<_>>(), "each once");
    // The member that never left saw the same stream, in the same order.
    let theirs = witness.events(1000).await;
    assert_eq!(
        all[5..].iter().map(pos).collect::<Vec<_>>(),
        theirs.iter().map(pos).collect::<Vec<_>>()
    );
    // Still in its room, on the new node.
    nodes.server(0).to("r").emit("n", &1005).expect("emit");
    assert_eq!(back.events(1).await[0]["data"], 1005);
    // The session was taken: once its client spoke on the new connection, the token cannot
    // be used again, on either node.
    back.client.send(json!({"type": "ping"})).await;
    loop {
        if back.next().await["type"] == "pong" {
            break;
        }
    }
    for addr in [a_addr, b_addr] {
        let again = Session::resume_with(addr, &token, positions.clone()).await;
        assert_eq!(again.hello["resume"]["accepted"], false, "{}", again.hello);
    }
    drop((back, witness));
    nodes.stop().await;
}

/// The next event called `name` within `within`, skipping other messages; `None` on timeout.
async fn event_within(c: &mut Client, name: &str, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(tokio::time::Instant::now())?;
        // `Client::recv` panics after 5 s: keep each wait shorter.
        match tokio::time::timeout(left.min(Duration::from_secs(1)), c.recv()).await {
            Ok(m) if m["type"] == "event" && m["event"] == name => return Some(m["data"].clone()),
            Ok(_) => {}
            Err(_) => {}
        }
    }
}

/// Fault: the broker is killed and restarted under a steady broadcast. Both nodes keep serving
/// their own connections during the outage, count it, reconnect and resubscribe; cross-node
/// delivery resumes (the time it took is printed); gauges are back to zero at the end.
pub async fn broker_restart(
    factory: EngineFactory,
    prefix: &str,
    broker: &mut crate::services::Service,
) {
    assert!(broker.controllable(), "needs a broker child process");
    let nodes = Nodes::start(&factory, prefix, 2).await;
    let (mut on_a, _) = nodes.client(0).await;
    let (mut on_b, _) = nodes.client(1).await;
    let a = nodes.server(0).clone();
    let running = Arc::new(AtomicBool::new(true));
    let ticker = {
        let running = running.clone();
        let a = a.clone();
        tokio::spawn(async move {
            let mut seq = 0u64;
            while running.load(Ordering::Relaxed) {
                seq += 1;
                let _ = a.emit("tick", &seq);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seq
        })
    };
    // Cross-node delivery works before the fault.
    assert!(
        event_within(&mut on_b, "tick", Duration::from_secs(5))
            .await
            .is_some()
    );

    broker.kill();
    eventually("both nodes see the outage", || {
        (0..2).all(|i| !nodes.server(i).stats().cluster_connected)
    })
    .await;
    // Local traffic goes on: A's own client still gets A's ticks; B still answers requests.
    for _ in 0..5 {
        assert!(
            event_within(&mut on_a, "tick", Duration::from_secs(2))
                .await
                .is_some(),
            "local delivery stopped"
        );
    }
    on_b.emit_ack("whoami", json!(null), "during-outage").await;
    let m = on_b.recv_where("ack", None).await;
    assert_eq!(m["ackId"], "during-outage");
    // Queries fail fast or time out; they do not hang.
    let q = tokio::time::timeout(Duration::from_secs(5), a.of("/").fetch_sockets()).await;
    assert!(q.is_ok(), "a cluster query hung during the outage");
    eventually("failed publishes counted", || {
        a.stats().cluster_publish_failed > 0
    })
    .await;

    let restarted = tokio::time::Instant::now();
    broker.restart();
    eventually("both nodes reconnect", || {
        (0..2).all(|i| nodes.server(i).stats().cluster_connected)
    })
    .await;
    // Drain what B got before; then a tick published after the restart must arrive.
    let resumed = event_within(&mut on_b, "tick", Duration::from_secs(15)).await;
    assert!(
        resumed.is_some(),
        "cross-node delivery did not resume within 15 s of the restart"
    );
    eprintln!(
        "[{}] cross-node delivery resumed {} ms after the broker restart",
        nodes.server(0).cluster().expect("c").engine(),
        restarted.elapsed().as_millis()
    );
    nodes.wait_peers(1).await;
    running.store(false, Ordering::Relaxed);
    let sent = ticker.await.expect("ticker");
    assert!(sent > 0);
    for i in 0..2 {
        let s = nodes.server(i).stats();
        assert!(s.cluster_outages >= 1, "{s:?}");
    }
    drop((on_a, on_b));
    nodes.stop().await;
}
