//! The Rust client's session recovery against the real server (`ServerBuilder::recovery`),
//! with network failures simulated by a proxy (`wsu_tests::proxy`): a cut link (TCP ends
//! without a close frame), a frozen one (half-open: only heartbeats notice), refused
//! reconnections while the session expires or its history is trimmed, and the server's
//! `maxMessageSize` enforced locally.

use std::time::Duration;

use tokio::sync::mpsc;
use wsu::client::{Client, ClientAckError, ClientError, Reconnect, Recovery, StateEvent};
use wsu::{Json, Server, Socket};
use wsu_tests::proxy::Proxy;
use wsu_tests::{TestServer, next, wait_until, within};

fn server(recovery: wsu::Recovery) -> Server {
    Server::builder().recovery(recovery).build().expect("build")
}

fn fast() -> Reconnect {
    Reconnect {
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        ..Reconnect::default()
    }
}

/// A client whose handler for `n` reports every number, and whose state events are reported
/// too, in order.
struct Probe {
    client: Client,
    numbers: mpsc::UnboundedReceiver<u64>,
    states: mpsc::UnboundedReceiver<StateEvent>,
}

async fn probe(
    url: &str,
    configure: impl FnOnce(wsu::client::ClientBuilder) -> wsu::client::ClientBuilder,
) -> Probe {
    let (ntx, numbers) = mpsc::unbounded_channel();
    let (stx, states) = mpsc::unbounded_channel();
    let builder = Client::builder(url)
        .on("n", move |n: u64| {
            let ntx = ntx.clone();
            async move {
                let _ = ntx.send(n);
            }
        })
        .on_state(move |e| {
            let _ = stx.send(e.clone());
        })
        .reconnect(fast());
    let client = within(configure(builder).connect()).await.expect("connect");
    Probe {
        client,
        numbers,
        states,
    }
}

impl Probe {
    /// State events up to and including the next `Connected`.
    async fn until_connected(&mut self) -> Vec<StateEvent> {
        let mut out = Vec::new();
        loop {
            let e = next(&mut self.states).await;
            let done = e == StateEvent::Connected;
            out.push(e);
            if done {
                return out;
            }
        }
    }

    /// The next `Recovery` event (other state events skipped).
    async fn until_recovery(&mut self) -> Recovery {
        loop {
            if let StateEvent::Recovery(r) = next(&mut self.states).await {
                return r;
            }
        }
    }

    /// The `Recovery` events among `events`.
    fn recoveries(events: &[StateEvent]) -> Vec<Recovery> {
        events
            .iter()
            .filter_map(|e| match e {
                StateEvent::Recovery(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    /// Expect exactly these numbers next, in order.
    async fn expect_numbers(&mut self, numbers: impl IntoIterator<Item = u64>) {
        for expected in numbers {
            let got = next(&mut self.numbers).await;
            assert_eq!(
                got, expected,
                "the handler got {got} where {expected} was due"
            );
        }
    }
}

/// A client in room `r` through a proxy; a server broadcasting 1,000 numbers to `r`, paced; the
/// proxy cuts the link mid-stream; the client reconnects through the proxy and resumes. Its
/// handler gets every number exactly once, in order.
#[tokio::test]
async fn a_cut_mid_stream_is_resumed_and_every_broadcast_is_handled_once_in_order() {
    let ts = TestServer::start(server(wsu::Recovery::default())).await;
    let proxy = Proxy::start(ts.addr).await;
    let mut p = probe(&proxy.url(), |b| b).await;
    let first = p.until_connected().await;
    let sid = p.client.session_id().expect("a session id from the hello");
    assert_eq!(
        Probe::recoveries(&first)
            .iter()
            .map(|r| (
                r.namespace.as_str(),
                r.recovered,
                r.reason.as_deref(),
                r.resumed
            ))
            .collect::<Vec<_>>(),
        [("/", false, Some("new"), false)],
        "{first:?}"
    );
    within(p.client.join("r")).await.expect("join");

    let server = ts.server.clone();
    let (sent_tx, mut sent_rx) = tokio::sync::watch::channel(0u64);
    let sender = tokio::spawn(async move {
        for i in 0..1000u64 {
            server.to("r").emit("n", &i).expect("emit");
            sent_tx.send_replace(i + 1);
            if i % 20 == 19 {
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        }
    });
    p.expect_numbers(0..200).await;
    proxy.cut();
    let sent_at_cut = *sent_rx.borrow_and_update();
    p.expect_numbers(200..1000).await;
    within(sender).await.expect("sender");

    let events = p.until_connected().await;
    assert!(
        matches!(
            events.first(),
            Some(StateEvent::Disconnected { code: None, .. })
        ),
        "a cut link ends without a close frame: {events:?}"
    );
    assert!(
        events.contains(&StateEvent::Resumed { sid: sid.clone() }),
        "resumed: {events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, StateEvent::ResumeRefused { .. })),
        "{events:?}"
    );
    let recoveries = Probe::recoveries(&events);
    assert_eq!(recoveries.len(), 1, "{events:?}");
    let r = &recoveries[0];
    assert_eq!(
        (
            r.namespace.as_str(),
            r.recovered,
            r.reason.as_deref(),
            r.resumed
        ),
        ("/", true, None, true),
        "{r:?}"
    );
    assert_eq!(p.client.session_id().as_deref(), Some(sid.as_str()));
    assert!(p.client.is_resumed());
    assert_eq!(p.client.rooms(), ["r"]);
    assert_eq!(proxy.accepted(), 2, "one reconnection");
    // Nothing more: a later broadcast is the next thing handled (no duplicate after 999).
    ts.server.to("r").emit("n", &5000u64).expect("emit");
    p.expect_numbers([5000]).await;
    assert_eq!(ts.server.room_members("/", "r").len(), 1);
    let stats = ts.server.stats();
    assert_eq!((stats.sessions_resumed, stats.sessions_refused), (1, 0));
    println!(
        "cut after {sent_at_cut} of 1000 sent; {} replayed in the recovery frame",
        r.replayed
    );
    p.client.close("bye").await;
    ts.stop().await;
}

/// A frozen link (half-open TCP): the client's heartbeat notices, it reconnects and resumes
/// while the server still holds the old transport, which the server closes with 4003. The
/// broadcasts sent meanwhile (queued for the dead transport) are replayed once.
#[tokio::test]
async fn a_half_open_link_is_resumed_by_taking_the_session_over() {
    let ts = TestServer::start(server(wsu::Recovery::default())).await;
    let proxy = Proxy::start(ts.addr).await;
    let mut p = probe(&proxy.url(), |b| {
        b.heartbeat(Duration::from_millis(50), Duration::from_millis(300))
    })
    .await;
    p.until_connected().await;
    let sid = p.client.session_id().expect("sid");
    within(p.client.join("r")).await.expect("join");
    for i in 0..10u64 {
        ts.server.to("r").emit("n", &i).expect("emit");
    }
    p.expect_numbers(0..10).await;
    proxy.freeze();
    for i in 10..50u64 {
        ts.server.to("r").emit("n", &i).expect("emit");
    }
    p.expect_numbers(10..50).await;
    let events = p.until_connected().await;
    assert!(
        matches!(events.first(), Some(StateEvent::Disconnected { code: None, reason }) if reason == "heartbeat timeout"),
        "{events:?}"
    );
    assert!(
        events.contains(&StateEvent::Resumed { sid: sid.clone() }),
        "{events:?}"
    );
    let recoveries = Probe::recoveries(&events);
    assert_eq!(recoveries.len(), 1, "{events:?}");
    assert_eq!(
        (
            recoveries[0].recovered,
            recoveries[0].replayed,
            recoveries[0].resumed
        ),
        (true, 40, true),
        "{recoveries:?}"
    );
    assert_eq!(p.client.session_id().as_deref(), Some(sid.as_str()));
    ts.server.to("r").emit("n", &77u64).expect("emit");
    p.expect_numbers([77]).await;
    // The old transport was taken over (4003), not kept: one connection on the server.
    wait_until(|| ts.server.stats().connections == 1).await;
    proxy.cut();
    p.client.close("bye").await;
    ts.stop().await;
}

/// After the session TTL the resume is refused: the client says so with the server's reason,
/// joins its rooms again itself, and gets the broadcasts sent after that.
#[tokio::test]
async fn an_expired_session_is_refused_and_the_client_rejoins_its_rooms() {
    let ttl = Duration::from_millis(150);
    let ts = TestServer::start(server(wsu::Recovery::default().session_ttl(ttl))).await;
    let proxy = Proxy::start(ts.addr).await;
    let mut p = probe(&proxy.url(), |b| b).await;
    p.until_connected().await;
    let old_sid = p.client.session_id().expect("sid");
    within(p.client.join("r")).await.expect("join");
    ts.server.to("r").emit("n", &1u64).expect("emit");
    p.expect_numbers([1]).await;

    proxy.refuse();
    proxy.cut();
    wait_until(|| ts.server.stats().sessions_detached == 1).await;
    // Lost for good: sent while the client is away, and its session expires.
    for i in 100..110u64 {
        ts.server.to("r").emit("n", &i).expect("emit");
    }
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    wait_until(|| ts.server.stats().sessions_detached == 0).await;
    assert!(ts.server.room_members("/", "r").is_empty());
    proxy.accept();

    let events = p.until_connected().await;
    assert!(
        events.contains(&StateEvent::ResumeRefused {
            reason: "unknown session".into()
        }),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, StateEvent::Resumed { .. })),
        "{events:?}"
    );
    let recoveries = Probe::recoveries(&events);
    assert_eq!(
        recoveries
            .iter()
            .map(|r| (
                r.namespace.as_str(),
                r.recovered,
                r.reason.as_deref(),
                r.resumed
            ))
            .collect::<Vec<_>>(),
        [("/", false, Some("new"), false)],
        "{events:?}"
    );
    let new_sid = p.client.session_id().expect("sid");
    assert_ne!(new_sid, old_sid, "a fresh session");
    assert!(!p.client.is_resumed());
    // The client joined `r` again itself, before reporting Connected.
    assert_eq!(
        ts.server
            .room_members("/", "r")
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [new_sid]
    );
    ts.server.to("r").emit("n", &2u64).expect("emit");
    p.expect_numbers([2]).await;
    let stats = ts.server.stats();
    assert_eq!((stats.sessions_resumed, stats.sessions_refused), (0, 1));
    p.client.close("bye").await;
    ts.stop().await;
}

/// With a history too short for what the client missed, the resume is accepted but the events
/// are not recovered (`trimmed`); the rooms are restored all the same.
#[tokio::test]
async fn a_trimmed_history_resumes_without_events_but_with_the_rooms() {
    let ts = TestServer::start(server(wsu::Recovery::default().history_size(5))).await;
    let proxy = Proxy::start(ts.addr).await;
    let mut p = probe(&proxy.url(), |b| b).await;
    p.until_connected().await;
    let sid = p.client.session_id().expect("sid");
    within(p.client.join("r")).await.expect("join");
    ts.server.to("r").emit("n", &0u64).expect("emit");
    p.expect_numbers([0]).await;

    proxy.refuse();
    proxy.cut();
    wait_until(|| ts.server.stats().sessions_detached == 1).await;
    for i in 1..=20u64 {
        ts.server.to("r").emit("n", &i).expect("emit");
    }
    proxy.accept();

    let events = p.until_connected().await;
    assert!(
        events.contains(&StateEvent::Resumed { sid: sid.clone() }),
        "{events:?}"
    );
    let recoveries = Probe::recoveries(&events);
    assert_eq!(recoveries.len(), 1, "{events:?}");
    let r = &recoveries[0];
    assert_eq!(
        (
            r.namespace.as_str(),
            r.recovered,
            r.reason.as_deref(),
            r.replayed,
            r.resumed
        ),
        ("/", false, Some("trimmed"), 0, true),
        "{r:?}"
    );
    assert_eq!(p.client.session_id().as_deref(), Some(sid.as_str()));
    // The position is the server's current one: nothing of 1..=20 will come.
    assert_eq!(p.client.position().map(|p| p.offset), Some(21));
    // The room came back with the session.
    ts.server.to("r").emit("n", &100u64).expect("emit");
    p.expect_numbers([100]).await;
    assert_eq!(ts.server.room_members("/", "r").len(), 1);
    p.client.close("bye").await;
    ts.stop().await;
}

/// An emit larger than the server's `maxMessageSize` (from the hello) fails locally with
/// `MessageTooBig`, nothing sent; one of exactly the limit goes through, and the connection
/// stays usable.
#[tokio::test]
async fn an_over_size_emit_fails_locally_and_the_connection_stays_usable() {
    let limit = 1024;
    let ts = TestServer::start(
        Server::builder()
            .recovery(wsu::Recovery::default())
            .max_message_size(limit)
            .on(
                "big",
                |_socket: Socket, s: String| async move { Json(s.len()) },
            )
            .on("note", |socket: Socket, s: String| async move {
                socket.emit("noted", &s.len())?;
                Ok::<_, wsu::SendError>(())
            })
            .build()
            .expect("build"),
    )
    .await;
    let (ntx, mut noted) = mpsc::unbounded_channel();
    let mut p = probe(&ts.url(), |b| {
        b.on("noted", move |n: usize| {
            let ntx = ntx.clone();
            async move {
                let _ = ntx.send(n);
            }
        })
    })
    .await;
    p.until_connected().await;
    assert_eq!(p.client.max_message_size(), Some(limit));
    let sid = p.client.session_id();

    // Emit: one byte over the limit fails at once.
    let probe_len = 2000;
    let size = match p.client.emit("note", &"x".repeat(probe_len)).await {
        Err(ClientError::MessageTooBig { size, limit: l }) => {
            assert_eq!(l, limit);
            size
        }
        other => panic!("expected MessageTooBig, got {other:?}"),
    };
    let overhead = size - probe_len;
    let at_limit = limit - overhead;
    match p.client.emit("note", &"x".repeat(at_limit + 1)).await {
        Err(ClientError::MessageTooBig { size, limit: l }) => {
            assert_eq!((size, l), (limit + 1, limit))
        }
        other => panic!("expected MessageTooBig, got {other:?}"),
    }
    // Exactly the limit: sent, and the server handles it.
    p.client
        .emit("note", &"x".repeat(at_limit))
        .await
        .expect("emit at the limit");
    assert_eq!(next(&mut noted).await, at_limit);

    // The same with an ack.
    let err = p
        .client
        .emit_with_ack::<_, usize>("big", &"y".repeat(probe_len))
        .await
        .expect_err("too big");
    let ClientAckError::Send(ClientError::MessageTooBig { size, .. }) = err else {
        panic!("expected Send(MessageTooBig), got {err:?}");
    };
    let at_limit = limit - (size - probe_len);
    let n: usize = within(p.client.emit_with_ack("big", &"y".repeat(at_limit)))
        .await
        .expect("ack at the limit");
    assert_eq!(n, at_limit);
    assert!(matches!(
        p.client
            .emit_with_ack::<_, usize>("big", &"y".repeat(at_limit + 1))
            .await,
        Err(ClientAckError::Send(ClientError::MessageTooBig { .. }))
    ));

    // Still the same connection: no state change, same session.
    let n: usize = within(p.client.emit_with_ack("big", &"z"))
        .await
        .expect("ack");
    assert_eq!(n, 1);
    assert!(p.client.is_connected());
    assert_eq!(p.client.session_id(), sid);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), p.states.recv())
            .await
            .is_err(),
        "no state event"
    );
    p.client.close("bye").await;
    ts.stop().await;
}

/// The same while the handlers are stuck: events wait in the handler queue (full) and in the
/// connection task (reading paused) when the link dies; the client notices through its pings
/// and resumes while the handlers are still stuck. Those queued for the handlers are handled;
/// those held back in the connection task are replayed; none twice, none lost.
#[tokio::test]
async fn a_link_lost_while_the_handlers_are_stuck_loses_and_duplicates_nothing() {
    // Room for the whole burst on the server: the client is not a slow consumer (see below).
    let ts = TestServer::start(
        Server::builder()
            .recovery(wsu::Recovery::default())
            .max_queued(10_000, 64 << 20)
            .build()
            .expect("build"),
    )
    .await;
    let proxy = Proxy::start(ts.addr).await;
    let (ntx, mut numbers) = mpsc::unbounded_channel();
    let (state_tx, mut states) = mpsc::unbounded_channel();
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let (stuck_tx, mut stuck) = mpsc::unbounded_channel();
    let client = within(
        Client::builder(proxy.url())
            .on("n", {
                let gate = gate.clone();
                move |n: u64| {
                    let (ntx, gate, stuck_tx) = (ntx.clone(), gate.clone(), stuck_tx.clone());
                    async move {
                        if n == 150 {
                            let _ = stuck_tx.send(());
                            gate.notified().await;
                        }
                        let _ = ntx.send(n);
                    }
                }
            })
            .heartbeat(Duration::from_millis(20), Duration::from_secs(5))
            .on_state(move |e| {
                let _ = state_tx.send(e.clone());
            })
            .reconnect(fast())
            .connect(),
    )
    .await
    .expect("connect");
    within(client.join("r")).await.expect("join");
    for i in 0..3000u64 {
        ts.server.to("r").emit("n", &i).expect("emit");
    }
    for expected in 0..150 {
        assert_eq!(next(&mut numbers).await, expected);
    }
    next(&mut stuck).await;
    // Let the handler queue fill and the connection task stall, then cut.
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.cut();
    wait_until(|| !client.is_connected()).await;
    // The reconnection happens while the handlers are still stuck.
    wait_until(|| proxy.accepted() == 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.notify_one();
    for expected in 150..3000 {
        let got = next(&mut numbers).await;
        assert_eq!(
            got, expected,
            "the handler got {got} where {expected} was due"
        );
    }
    ts.server.to("r").emit("n", &5000u64).expect("emit");
    assert_eq!(next(&mut numbers).await, 5000);
    assert!(client.is_resumed());
    let mut seen = Vec::new();
    while let Ok(e) = states.try_recv() {
        seen.push(e);
    }
    let disconnects: Vec<_> = seen
        .iter()
        .filter(|e| matches!(e, StateEvent::Disconnected { .. }))
        .collect();
    assert!(
        matches!(
            disconnects[..],
            [StateEvent::Disconnected { code: None, .. }]
        ),
        "one loss, noticed by a write: {seen:?}"
    );
    let recoveries = Probe::recoveries(&seen);
    assert_eq!(recoveries.len(), 2, "{seen:?}");
    assert!(
        recoveries[1].recovered && recoveries[1].replayed > 0,
        "{seen:?}"
    );
    client.close("bye").await;
    ts.stop().await;
}

/// A burst the client cannot take fast enough: the server closes it as a slow consumer (4001)
/// and keeps its session; the client resumes and gets the whole burst replayed, in order.
#[tokio::test]
async fn a_slow_consumer_closed_with_4001_resumes_and_gets_the_burst_replayed() {
    let ts = TestServer::start(server(wsu::Recovery::default())).await;
    let mut p = probe(&ts.url(), |b| b).await;
    p.until_connected().await;
    let sid = p.client.session_id().expect("sid");
    within(p.client.join("r")).await.expect("join");
    // More than the default outbound queue (1,024 messages), queued at once.
    for i in 0..3000u64 {
        ts.server.to("r").emit("n", &i).expect("emit");
    }
    p.expect_numbers(0..3000).await;
    let events = p.until_connected().await;
    assert!(
        matches!(
            events.first(),
            Some(StateEvent::Disconnected {
                code: Some(4001),
                ..
            })
        ),
        "{events:?}"
    );
    assert!(
        events.contains(&StateEvent::Resumed { sid: sid.clone() }),
        "{events:?}"
    );
    let recoveries = Probe::recoveries(&events);
    assert_eq!(recoveries.len(), 1, "{events:?}");
    assert!(
        recoveries[0].recovered && recoveries[0].replayed > 0,
        "{recoveries:?}"
    );
    ts.server.to("r").emit("n", &5000u64).expect("emit");
    p.expect_numbers([5000]).await;
    p.client.close("bye").await;
    ts.stop().await;
}

/// Rooms of another namespace come back with the session, with one `Recovery` per namespace;
/// the events missed in each are replayed to that namespace's handlers. Two cuts in a row: the
/// second resume uses the token of the first resumed connection (tokens are single use).
#[tokio::test]
async fn namespaces_are_resumed_twice_in_a_row_with_their_own_positions() {
    let ts = TestServer::start(
        Server::builder()
            .recovery(wsu::Recovery::default())
            .namespace("/chat", |ns| ns)
            .build()
            .expect("build"),
    )
    .await;
    let proxy = Proxy::start(ts.addr).await;
    let (ctx, mut chat) = mpsc::unbounded_channel();
    let mut p = probe(&proxy.url(), |b| {
        b.on_ns("/chat", "n", move |n: u64| {
            let ctx = ctx.clone();
            async move {
                let _ = ctx.send(n);
            }
        })
    })
    .await;
    p.until_connected().await;
    let sid = p.client.session_id().expect("sid");
    within(p.client.join("r")).await.expect("join r");
    within(p.client.of("/chat").join("c"))
        .await
        .expect("join /chat c");
    let r = p.until_recovery().await;
    assert_eq!(
        (r.namespace.as_str(), r.reason.as_deref()),
        ("/chat", Some("new"))
    );
    for round in 0..2u64 {
        let base = round * 100;
        ts.server.to("r").emit("n", &base).expect("emit");
        ts.server
            .of("/chat")
            .to("c")
            .emit("n", &(base + 50))
            .expect("emit");
        p.expect_numbers([base]).await;
        assert_eq!(next(&mut chat).await, base + 50);
        proxy.refuse();
        proxy.cut();
        wait_until(|| ts.server.stats().sessions_detached == 1).await;
        for i in 1..=5 {
            ts.server.to("r").emit("n", &(base + i)).expect("emit");
            ts.server
                .of("/chat")
                .to("c")
                .emit("n", &(base + 50 + i))
                .expect("emit");
        }
        proxy.accept();
        let events = p.until_connected().await;
        assert!(
            events.contains(&StateEvent::Resumed { sid: sid.clone() }),
            "round {round}: {events:?}"
        );
        let mut recoveries: Vec<_> = Probe::recoveries(&events)
            .into_iter()
            .map(|r| (r.namespace, r.recovered, r.replayed, r.resumed))
            .collect();
        recoveries.sort();
        assert_eq!(
            recoveries,
            [
                ("/".to_owned(), true, 5, true),
                ("/chat".to_owned(), true, 5, true)
            ],
            "round {round}: {events:?}"
        );
        p.expect_numbers(base + 1..=base + 5).await;
        for i in 1..=5 {
            assert_eq!(next(&mut chat).await, base + 50 + i);
        }
    }
    assert_eq!(p.client.session_id().as_deref(), Some(sid.as_str()));
    ts.server
        .of("/chat")
        .to("c")
        .emit("n", &999u64)
        .expect("emit");
    assert_eq!(next(&mut chat).await, 999);
    let stats = ts.server.stats();
    assert_eq!((stats.sessions_resumed, stats.sessions_refused), (2, 0));
    p.client.close("bye").await;
    ts.stop().await;
}

/// A join whose answer never came (sent into a dead link, or given up while buffered offline)
/// leaves the room remembered: the server's resumed session does not have it, so the client
/// must join it again even though the resume restored the rest.
#[tokio::test]
async fn a_join_lost_in_a_dead_link_is_sent_again_after_a_resume() {
    let ts = TestServer::start(server(wsu::Recovery::default())).await;
    let proxy = Proxy::start(ts.addr).await;
    let mut p = probe(&proxy.url(), |b| b.ack_timeout(Duration::from_millis(200))).await;
    p.until_connected().await;
    within(p.client.join("r")).await.expect("join r");
    // Lost in flight: the link is frozen, then cut.
    proxy.freeze();
    let client = p.client.clone();
    let lost = tokio::spawn(async move { client.join("s").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.refuse();
    proxy.cut();
    let lost = within(lost).await.expect("join task");
    assert!(
        matches!(
            lost,
            Err(ClientAckError::Disconnected | ClientAckError::Timeout)
        ),
        "{lost:?}"
    );
    // Given up while buffered offline.
    wait_until(|| !p.client.is_connected()).await;
    let buffered = within(p.client.join("t")).await;
    assert!(
        matches!(buffered, Err(ClientAckError::Timeout)),
        "{buffered:?}"
    );
    assert_eq!(p.client.rooms(), ["r", "s", "t"]);
    proxy.accept();
    let events = p.until_connected().await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, StateEvent::Resumed { .. })),
        "{events:?}"
    );
    let mut rooms = ts.server.rooms("/");
    rooms.sort();
    assert_eq!(
        rooms,
        ["r", "s", "t"],
        "the server has every room the client remembers"
    );
    for (i, room) in ["r", "s", "t"].into_iter().enumerate() {
        ts.server.to(room).emit("n", &(i as u64)).expect("emit");
    }
    p.expect_numbers([0, 1, 2]).await;
    p.client.close("bye").await;
    ts.stop().await;
}

/// A leave whose answer never came: the resumed session still has the room on the server, so
/// the client must leave it again, or it keeps getting the room's broadcasts.
#[tokio::test]
async fn a_leave_lost_in_a_dead_link_is_sent_again_after_a_resume() {
    let ts = TestServer::start(server(wsu::Recovery::default())).await;
    let proxy = Proxy::start(ts.addr).await;
    let mut p = probe(&proxy.url(), |b| b.ack_timeout(Duration::from_millis(200))).await;
    p.until_connected().await;
    for room in ["r", "s", "t"] {
        within(p.client.join(room)).await.expect("join");
    }
    proxy.freeze();
    let client = p.client.clone();
    let lost = tokio::spawn(async move { client.leave("s").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.refuse();
    proxy.cut();
    let lost = within(lost).await.expect("leave task");
    assert!(lost.is_err(), "{lost:?}");
    wait_until(|| !p.client.is_connected()).await;
    let buffered = within(p.client.leave("t")).await;
    assert!(
        matches!(buffered, Err(ClientAckError::Timeout)),
        "{buffered:?}"
    );
    assert_eq!(p.client.rooms(), ["r"]);
    proxy.accept();
    let events = p.until_connected().await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, StateEvent::Resumed { .. })),
        "{events:?}"
    );
    assert_eq!(
        ts.server.rooms("/"),
        ["r"],
        "the server left what the client left"
    );
    for (i, room) in ["s", "t", "r"].into_iter().enumerate() {
        ts.server.to(room).emit("n", &(i as u64)).expect("emit");
    }
    p.expect_numbers([2]).await;
    p.client.close("bye").await;
    ts.stop().await;
}
