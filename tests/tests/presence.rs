//! Presence (PROTOCOL.md §13.6): per room, who is there, grouped by user key, with the state
//! sent to a joining connection and joins/leaves to the other members.

use serde_json::{Value, json};
use wsu::{Server, Socket};
use wsu_tests::{Client, TestServer, wait_until};

fn server(presence: bool) -> Server {
    Server::builder()
        .presence(presence)
        .on_connect(|s: Socket| async move {
            if let Some(nick) = s.query("nick").map(str::to_owned) {
                s.set_presence(&nick, &json!({ "nick": nick }))?;
            }
            Ok::<_, wsu::SendError>(())
        })
        .build()
        .expect("build")
}

async fn connect(ts: &TestServer, nick: &str) -> (Client, String) {
    let mut c = ts.client_with(&format!("/ws?nick={nick}"), &[]).await;
    let hello = wsu_tests::resume::next_raw(&mut c).await;
    let sid = hello["data"]["sid"].as_str().expect("sid").to_owned();
    c.send(json!({"type": "join", "room": "lobby", "ackId": "j"}))
        .await;
    // The state, the newcomer included, comes before the join's ack.
    let state = c.recv().await;
    assert_eq!(state["type"], "presence", "{state}");
    let mine = state["data"]["state"][nick].as_array().expect("my key");
    assert!(mine.contains(&entry(&sid, nick)), "{state}");
    assert_eq!(c.recv().await["type"], "ack");
    (c, sid)
}

fn entry(sid: &str, nick: &str) -> Value {
    json!({"sid": sid, "meta": {"nick": nick}})
}

#[tokio::test]
async fn members_see_the_state_then_joins_and_leaves_grouped_by_user() {
    let ts = TestServer::start(server(true)).await;
    let (mut ada, a) = connect(&ts, "ada").await;
    let (mut bob, b) = connect(&ts, "bob").await;
    assert_eq!(
        ada.recv().await,
        json!({"type": "presence", "namespace": "/", "room": "lobby",
               "data": {"joins": {"bob": [entry(&b, "bob")]}, "leaves": {}}})
    );
    // A second tab of ada: grouped under her key.
    let (mut ada2, a2) = connect(&ts, "ada").await;
    let mut tabs = [a.clone(), a2.clone()];
    tabs.sort();
    let p = ts.server.presence("/", "lobby");
    assert_eq!(p.keys().collect::<Vec<_>>(), ["ada", "bob"]);
    let ids: Vec<String> = p["ada"].iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids, tabs, "sorted by connection id");
    assert_eq!(p["bob"][0].meta, json!({"nick": "bob"}));
    for c in [&mut ada, &mut bob] {
        assert_eq!(
            c.recv().await["data"]["joins"],
            json!({"ada": [entry(&a2, "ada")]})
        );
    }
    // bob leaves the room: the others hear it; then ada's second tab drops.
    bob.send(json!({"type": "leave", "room": "lobby"})).await;
    for c in [&mut ada, &mut ada2] {
        let m = c.recv().await;
        assert_eq!(
            m["data"],
            json!({"joins": {}, "leaves": {"bob": [entry(&b, "bob")]}})
        );
    }
    drop(ada2);
    let m = ada.recv().await;
    assert_eq!(m["data"]["leaves"], json!({"ada": [entry(&a2, "ada")]}));
    wait_until(|| {
        ts.server
            .presence("/", "lobby")
            .values()
            .map(Vec::len)
            .sum::<usize>()
            == 1
    })
    .await;
    ts.stop().await;
}

#[tokio::test]
async fn an_identity_set_later_is_announced_as_a_change() {
    let ts = TestServer::start(server(true)).await;
    let (mut ada, _) = connect(&ts, "ada").await;
    // No nick: the connection id is the key, the metadata null.
    let mut anon = ts.client().await;
    anon.send(json!({"type": "join", "room": "lobby", "ackId": "j"}))
        .await;
    let state = anon.recv().await;
    let keys: Vec<&String> = state["data"]["state"]
        .as_object()
        .expect("state")
        .keys()
        .collect();
    assert_eq!(keys.len(), 2);
    anon.recv().await; // ack
    let join = ada.recv().await;
    let (key, entries) = join["data"]["joins"]
        .as_object()
        .expect("joins")
        .iter()
        .next()
        .expect("one");
    assert_eq!(entries[0]["sid"], *key);
    assert_eq!(entries[0]["meta"], Value::Null);
    ts.stop().await;
}

#[tokio::test]
async fn without_presence_no_presence_frame_is_sent() {
    let ts = TestServer::start(server(false)).await;
    let mut c = ts.client_with("/ws?nick=ada", &[]).await;
    c.send(json!({"type": "join", "room": "lobby", "ackId": "j"}))
        .await;
    assert_eq!(c.recv().await["type"], "ack");
    // Still readable on the server.
    assert_eq!(ts.server.presence("/", "lobby")["ada"].len(), 1);
    ts.stop().await;
}
