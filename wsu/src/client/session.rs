//! Session recovery (PROTOCOL extensions v2): the `hello` frame's session id, resume token and
//! limits, the per-namespace stream positions, the `recovery` frames, and the resume parameters
//! of the reconnection URL.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The `type` of a server frame that the shared decoder does not know.
#[derive(Deserialize)]
struct TypeField<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

/// The server frames of the v2 extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extension {
    Hello,
    Recovery,
    Presence,
}

/// Which extension frame `bytes` is, if any (only called for frames whose `type` the shared
/// decoder did not recognise).
pub(crate) fn extension(bytes: &[u8]) -> Option<Extension> {
    let field: TypeField<'_> = serde_json::from_slice(bytes).ok()?;
    match field.kind.as_deref()? {
        "hello" => Some(Extension::Hello),
        "recovery" => Some(Extension::Recovery),
        "presence" => Some(Extension::Presence),
        _ => None,
    }
}

/// The parts of a `hello` frame's `data` that the client uses.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Hello {
    #[serde(default)]
    pub(crate) sid: Option<String>,
    #[serde(default)]
    pub(crate) token: Option<String>,
    #[serde(default)]
    pub(crate) resume: Option<ResumeAnswer>,
    #[serde(default)]
    pub(crate) limits: Option<Limits>,
}

/// `hello.data.resume`.
#[derive(Debug, Deserialize)]
pub(crate) struct ResumeAnswer {
    pub(crate) accepted: bool,
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

/// `hello.data.limits` (only what the client uses).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Limits {
    #[serde(default)]
    pub(crate) max_message_size: Option<usize>,
}

#[derive(Deserialize)]
struct Frame<T> {
    #[serde(default)]
    namespace: Option<String>,
    data: T,
}

/// Parses a `hello` frame.
pub(crate) fn hello(bytes: &[u8]) -> Option<Hello> {
    serde_json::from_slice::<Frame<Hello>>(bytes)
        .ok()
        .map(|f| f.data)
}

/// A `recovery` frame.
#[derive(Debug)]
pub(crate) struct RecoveryFrame {
    pub(crate) namespace: String,
    pub(crate) recovered: bool,
    pub(crate) reason: Option<String>,
    pub(crate) position: Option<StreamPosition>,
    pub(crate) events: Vec<Box<RawValue>>,
}

#[derive(Deserialize)]
struct RecoveryData {
    #[serde(default)]
    recovered: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    epoch: Option<String>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    events: Vec<Box<RawValue>>,
}

/// Parses a `recovery` frame.
pub(crate) fn recovery(bytes: &[u8]) -> Option<RecoveryFrame> {
    let frame: Frame<RecoveryData> = serde_json::from_slice(bytes).ok()?;
    let namespace = match frame.namespace {
        Some(ns) if !ns.is_empty() => ns,
        _ => "/".to_owned(),
    };
    let d = frame.data;
    let position = match (d.epoch, d.offset) {
        (Some(epoch), Some(offset)) => Some(StreamPosition {
            epoch: epoch.into(),
            offset,
        }),
        _ => None,
    };
    Some(RecoveryFrame {
        namespace,
        recovered: d.recovered,
        reason: d.reason,
        position,
        events: d.events,
    })
}

/// The `offset`/`epoch` of an event frame, when it carries both.
pub(crate) fn event_position(bytes: &[u8]) -> Option<StreamPosition> {
    #[derive(Deserialize)]
    struct Fields {
        #[serde(default)]
        offset: Option<u64>,
        #[serde(default)]
        epoch: Option<String>,
    }
    // Most events carry no offset: do not parse them twice.
    if !contains(bytes, b"\"offset\"") {
        return None;
    }
    let f: Fields = serde_json::from_slice(bytes).ok()?;
    Some(StreamPosition {
        epoch: f.epoch?.into(),
        offset: f.offset?,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A position in a namespace's event stream on the server: the `epoch` of its history and the
/// `offset` of the last broadcast the client handled (see [`Client::position`]).
///
/// [`Client::position`]: super::Client::position
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    /// The history's epoch (an opaque string, changed when the server lost the history).
    pub epoch: Arc<str>,
    /// The offset: strictly increasing within an epoch.
    pub offset: u64,
}

/// The outcome of recovering the events of one namespace, reported as
/// [`StateEvent::Recovery`](super::StateEvent::Recovery) each time the connection becomes a
/// member of a namespace on a server with recovery enabled: for `/` when the server accepts the
/// connection, for a namespace when it is joined, and for every namespace a resumed session
/// restores.
///
/// It is reported when the server's `recovery` frame arrives, before the replayed events are
/// handled; the handlers then get those events in order, before anything that arrived later.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// The namespace.
    pub namespace: String,
    /// True when the replayed events are exactly the ones the client missed. False for a fresh
    /// session or a first join (`reason` `new`), or when the missed events could not all be
    /// replayed (`no offset`, `epoch changed`, `trimmed`, `too many`): the application should
    /// then reload its state for this namespace.
    pub recovered: bool,
    /// Why nothing (or not everything) was recovered, when `recovered` is false.
    pub reason: Option<String>,
    /// How many missed events were replayed to the handlers.
    pub replayed: usize,
    /// Whether this connection resumed the previous session (see
    /// [`StateEvent::Resumed`](super::StateEvent::Resumed)).
    pub resumed: bool,
}

/// What a reconnection needs to ask for a resume: the latest token and the positions.
#[derive(Debug, Default)]
pub(crate) struct SessionState {
    /// The session id of the latest `hello`.
    pub(crate) sid: Option<String>,
    /// The latest resume token (single use: replaced by every `hello`).
    pub(crate) token: Option<String>,
    /// The server's `maxMessageSize`, from the latest `hello`.
    pub(crate) max_message_size: Option<usize>,
    /// The last position handled, per namespace.
    pub(crate) positions: BTreeMap<String, StreamPosition>,
    /// Whether the current connection resumed the previous session.
    pub(crate) resumed: bool,
}

impl SessionState {
    /// Takes in a `hello`: its token replaces the previous one (or clears it).
    pub(crate) fn on_hello(&mut self, hello: &Hello) {
        self.sid.clone_from(&hello.sid);
        self.token.clone_from(&hello.token);
        self.max_message_size = hello.limits.as_ref().and_then(|l| l.max_message_size);
        self.resumed = hello.resume.as_ref().is_some_and(|r| r.accepted);
    }

    /// The query parameters of a resume request, when the client holds a token.
    pub(crate) fn resume_query(&self) -> Option<[(String, String); 2]> {
        let token = self.token.clone()?;
        let mut offsets = serde_json::Map::new();
        for (ns, p) in &self.positions {
            offsets.insert(
                ns.clone(),
                serde_json::json!({"epoch": &*p.epoch, "offset": p.offset}),
            );
        }
        let offsets = serde_json::Value::Object(offsets).to_string();
        Some([
            ("wsu_resume".to_owned(), token),
            ("wsu_offsets".to_owned(), offsets),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = r#"{"type":"hello","namespace":"/","data":{"protocol":2,"server":"wsu/0.1.0","sid":"0123456789abcdef","token":"0123456789abcdef.Qm9ndXNfc2VjcmV0X2Zvcl9kb2NzX29ubHlfMTIzNDU2","resume":{"accepted":true},"limits":{"maxMessageSize":65536,"ackTimeoutMs":5000,"pingIntervalMs":15000,"readTimeoutMs":30000,"maxPendingAcks":128,"maxPendingRequests":64,"rateLimit":null},"recovery":{"sessionTtlMs":120000,"historySize":10000,"historyTtlMs":300000,"maxReplay":10000}}}"#;

    #[test]
    fn hello_is_parsed() {
        assert_eq!(extension(HELLO.as_bytes()), Some(Extension::Hello));
        let h = hello(HELLO.as_bytes()).unwrap();
        assert_eq!(h.sid.as_deref(), Some("0123456789abcdef"));
        assert!(h.token.as_deref().unwrap().starts_with("0123456789abcdef."));
        assert!(h.resume.as_ref().unwrap().accepted);
        assert_eq!(h.limits.unwrap().max_message_size, Some(65536));
        // The protocol-1 hello (no token, no resume) parses too.
        let v1 = r#"{"type":"hello","namespace":"/","data":{"protocol":1,"server":"wsu/0.1.0","sid":"a","limits":{"maxMessageSize":10}}}"#;
        let h = hello(v1.as_bytes()).unwrap();
        assert!(h.token.is_none() && h.resume.is_none());
    }

    #[test]
    fn recovery_and_positions_are_parsed() {
        let f = r#"{"type":"recovery","namespace":"/chat","data":{"recovered":true,"epoch":"5f3a9c1e0b7d2a64","offset":1045,"events":[{"type":"event","namespace":"/chat","event":"msg","data":"a","offset":1043,"epoch":"5f3a9c1e0b7d2a64"},{"type":"event","namespace":"/chat","event":"msg","data":"b","offset":1045,"epoch":"5f3a9c1e0b7d2a64"}]}}"#;
        assert_eq!(extension(f.as_bytes()), Some(Extension::Recovery));
        let r = recovery(f.as_bytes()).unwrap();
        assert_eq!(r.namespace, "/chat");
        assert!(r.recovered && r.reason.is_none());
        assert_eq!(r.position.unwrap().offset, 1045);
        assert_eq!(r.events.len(), 2);
        let p = event_position(r.events[1].get().as_bytes()).unwrap();
        assert_eq!((&*p.epoch, p.offset), ("5f3a9c1e0b7d2a64", 1045));
        let refused = r#"{"type":"recovery","namespace":"/","data":{"recovered":false,"reason":"new","epoch":"9a0c","offset":17,"events":[]}}"#;
        let r = recovery(refused.as_bytes()).unwrap();
        assert_eq!((r.recovered, r.reason.as_deref()), (false, Some("new")));
        assert_eq!(
            event_position(br#"{"type":"event","namespace":"/","event":"e","data":"offset"}"#),
            None
        );
        assert_eq!(extension(br#"{"type":"event"}"#), None);
    }

    #[test]
    fn resume_query_carries_the_latest_token_and_positions() {
        let mut s = SessionState::default();
        assert!(s.resume_query().is_none());
        s.on_hello(&hello(HELLO.as_bytes()).unwrap());
        s.positions.insert(
            "/chat".into(),
            StreamPosition {
                epoch: "e1".into(),
                offset: 7,
            },
        );
        let [resume, offsets] = s.resume_query().unwrap();
        assert_eq!(resume.0, "wsu_resume");
        assert!(resume.1.starts_with("0123456789abcdef."));
        assert_eq!(
            offsets,
            (
                "wsu_offsets".to_owned(),
                r#"{"/chat":{"epoch":"e1","offset":7}}"#.to_owned()
            )
        );
        // A hello without a token (recovery disabled) forgets the old one.
        s.on_hello(&Hello::default());
        assert!(s.resume_query().is_none());
    }
}
