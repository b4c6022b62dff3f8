//! A raw client that resumes sessions by hand (PROTOCOL.md §13): it reads the `hello`, keeps
//! the resume token and its position per namespace, and reconnects with `wsu_resume` and
//! `wsu_offsets`, as wsu's own clients do.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::{Client, WAIT};

/// A raw client with a session.
pub struct Session {
    /// The connection.
    pub client: Client,
    /// The `data` of the last `hello`.
    pub hello: Value,
    /// Position per namespace: (epoch, offset) of the last event handled or `recovery` frame.
    pub positions: BTreeMap<String, (String, u64)>,
}

/// Percent-encode as `encodeURIComponent` does.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Session {
    /// Connect fresh to `addr` and read the `hello`.
    pub async fn connect(addr: SocketAddr) -> Session {
        Self::open(addr, String::new(), BTreeMap::new()).await
    }

    async fn open(
        addr: SocketAddr,
        query: String,
        positions: BTreeMap<String, (String, u64)>,
    ) -> Session {
        let url = format!("ws://{addr}/ws{query}");
        let mut client = Client::connect(&url).await;
        let hello = next_raw(&mut client).await;
        assert_eq!(hello["type"], "hello", "first frame: {hello}");
        Session {
            client,
            hello: hello["data"].clone(),
            positions,
        }
    }

    /// The session id.
    pub fn sid(&self) -> String {
        self.hello["sid"].as_str().expect("sid").to_owned()
    }

    /// The resume token.
    pub fn token(&self) -> String {
        self.hello["token"]
            .as_str()
            .expect("a token (recovery on)")
            .to_owned()
    }

    /// The query string that resumes this session with `token` and these positions.
    pub fn resume_query(token: &str, positions: &BTreeMap<String, (String, u64)>) -> String {
        let offsets: serde_json::Map<String, Value> = positions
            .iter()
            .map(|(ns, (epoch, offset))| (ns.clone(), json!({"epoch": epoch, "offset": offset})))
            .collect();
        format!(
            "?wsu_resume={token}&wsu_offsets={}",
            percent_encode(&Value::Object(offsets).to_string())
        )
    }

    /// Drop the TCP connection without a close frame, and reconnect to `addr` with the token and
    /// positions (the same or another node).
    pub async fn drop_and_resume(self, addr: SocketAddr) -> Session {
        let token = self.token();
        let positions = self.positions.clone();
        drop(self.client);
        Self::resume_with(addr, &token, positions).await
    }

    /// Connect to `addr` resuming with an explicit token and positions.
    pub async fn resume_with(
        addr: SocketAddr,
        token: &str,
        positions: BTreeMap<String, (String, u64)>,
    ) -> Session {
        Self::open(addr, Self::resume_query(token, &positions), positions).await
    }

    /// The next frame, hello included, with positions updated from events and `recovery`
    /// frames.
    pub async fn next(&mut self) -> Value {
        let v = next_raw(&mut self.client).await;
        self.track(&v);
        v
    }

    fn track(&mut self, v: &Value) {
        let ns = v["namespace"].as_str().unwrap_or("/").to_owned();
        match v["type"].as_str() {
            Some("event") => {
                if let (Some(o), Some(e)) = (v["offset"].as_u64(), v["epoch"].as_str()) {
                    self.positions.insert(ns, (e.to_owned(), o));
                }
            }
            Some("recovery") => {
                let d = &v["data"];
                self.positions.insert(
                    ns,
                    (
                        d["epoch"].as_str().expect("epoch").to_owned(),
                        d["offset"].as_u64().expect("offset"),
                    ),
                );
            }
            _ => {}
        }
    }

    /// The next `recovery` frame (skipping nothing else: panics on another frame).
    pub async fn recovery(&mut self) -> Value {
        let v = self.next().await;
        assert_eq!(v["type"], "recovery", "expected a recovery frame, got {v}");
        v
    }

    /// Events in arrival order, replayed ones (inside `recovery` frames) included, until
    /// `n` events were collected; other frames are returned separately.
    pub async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        while out.len() < n {
            let v = self.next().await;
            match v["type"].as_str() {
                Some("event") => out.push(v),
                Some("recovery") => {
                    out.extend(v["data"]["events"].as_array().cloned().unwrap_or_default())
                }
                _ => {}
            }
        }
        out
    }
}

/// The next text frame as JSON, hello included (pings and pongs skipped).
pub async fn next_raw(client: &mut Client) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            match client.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(&t).expect("server sent JSON");
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a message, got {other:?}"),
            }
        }
    })
    .await
    .expect("timed out waiting for a message")
}
