//! The JSON envelope of the wire protocol: decoding client frames ([`decode`]) and encoding server
//! messages ([`Outgoing::encode`]).
//!
//! Decoding never builds a `serde_json::Value` and never recurses into `data`. Frames as
//! well-behaved clients send them (known keys, once each, strings where strings belong) are read
//! in one pass ([`decode_fast`]); anything else goes to the careful decoder, which reads the top
//! level into `(key, &RawValue)` pairs (`serde_json` scans raw values iteratively), then
//! interprets each known key on its own, so one bad field does not hide the others and an error
//! reply can still echo `namespace`, `event` and `ackId`. Both give the same answer for the
//! frames the fast path takes (the `decode` fuzz target checks it on every input).

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::error::Category;
use serde_json::value::RawValue;

use super::names::truncate_for_display;

/// Longest [`DecodeError::message`], in chars (including the final `"…"` when cut).
const MAX_ERROR_MESSAGE_CHARS: usize = 200;

/// Up to this many top-level keys, duplicates are found by a linear scan instead of a hash set.
const LINEAR_DUPLICATE_SCAN: usize = 16;

/// The `type` field of the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// `"ping"`: an application-level ping; the server answers with a `pong`.
    Ping,
    /// `"pong"`: the answer to a `ping`.
    Pong,
    /// `"event"`: a named event carrying `data`, optionally with an `ackId`.
    Event,
    /// `"join"`: join a namespace, or a room inside a namespace.
    Join,
    /// `"leave"`: leave a namespace (and all its rooms), or a room.
    Leave,
    /// `"ack"`: the answer to an event that carried an `ackId`.
    Ack,
    /// `"error"`: an error report (server to client).
    Error,
}

impl MessageType {
    /// The wire name of this type: `"ping"`, `"pong"`, `"event"`, `"join"`, `"leave"`, `"ack"`
    /// or `"error"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::Event => "event",
            Self::Join => "join",
            Self::Leave => "leave",
            Self::Ack => "ack",
            Self::Error => "error",
        }
    }

    /// Parses a wire name (exact, case-sensitive); `None` for anything else.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ping" => Some(Self::Ping),
            "pong" => Some(Self::Pong),
            "event" => Some(Self::Event),
            "join" => Some(Self::Join),
            "leave" => Some(Self::Leave),
            "ack" => Some(Self::Ack),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// A decoded client→server message borrowing from the frame.
///
/// `PartialEq` compares `data` by its raw JSON text (`RawValue` has no `PartialEq` of its own).
#[derive(Debug)]
pub(crate) struct Incoming<'a> {
    /// None when `type` is missing, null, or a string that is not one of the seven types.
    pub(crate) kind: Option<MessageType>,
    /// "/" when missing, null or "".
    pub(crate) namespace: Cow<'a, str>,
    /// The event name; None when missing or null.
    pub(crate) event: Option<Cow<'a, str>>,
    /// Raw JSON of `data`, byte-exact as received (so `"data":null` is Some("null")); None when absent.
    pub(crate) data: Option<&'a RawValue>,
    /// The ack correlation id; None when missing or null.
    pub(crate) ack_id: Option<Cow<'a, str>>,
    /// The room name (meaningful for `join` and `leave`); None when missing or null.
    pub(crate) room: Option<Cow<'a, str>>,
    /// The error text of a client `error` answering a server request; None when missing, null
    /// or not a string (never an error: the field is only informative).
    pub(crate) error: Option<Cow<'a, str>>,
}

impl PartialEq for Incoming<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.namespace == other.namespace
            && self.event == other.event
            && self.data.map(RawValue::get) == other.data.map(RawValue::get)
            && self.ack_id == other.ack_id
            && self.room == other.room
            && self.error == other.error
    }
}

/// Why a frame could not be decoded. Carries what could still be read, so the error reply can echo it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError {
    /// Lowercase description, at most 200 chars (cut with "…"), e.g. "field `ackId` must be a string".
    pub(crate) message: String,
    /// The namespace, when a valid string namespace was read (`""` is reported as `"/"`).
    pub(crate) namespace: Option<String>,
    /// The event name, when a valid string event was read.
    pub(crate) event: Option<String>,
    /// The ack id, when a valid string ackId was read.
    pub(crate) ack_id: Option<String>,
}

impl DecodeError {
    /// An error with nothing to echo.
    fn bare(message: String) -> Self {
        Self {
            message: bound_message(message),
            namespace: None,
            event: None,
            ack_id: None,
        }
    }
}

/// Cuts an error message to at most [`MAX_ERROR_MESSAGE_CHARS`] chars, ending with `"…"` when cut.
fn bound_message(message: String) -> String {
    match message.char_indices().nth(MAX_ERROR_MESSAGE_CHARS - 1) {
        // Only cut when there is more than one char from the 200th on.
        Some((cut, _)) if message[cut..].chars().nth(1).is_some() => {
            let mut out = String::with_capacity(cut + '…'.len_utf8());
            out.push_str(&message[..cut]);
            out.push('…');
            out
        }
        _ => message,
    }
}

/// Decodes one client frame (text or binary) into an [`Incoming`] message.
///
/// Rules: empty or whitespace-only input is "empty message"; bad JSON (including invalid UTF-8, a
/// byte-order mark or trailing characters) is "malformed json: …"; a top level other than an
/// object is "message must be a json object"; a repeated key is "duplicate field `key`"; `type`,
/// `namespace`, `event`, `ackId` and `room` must be strings or null ("field `name` must be a
/// string"); `data` may be any JSON value and is kept raw; `error` and unknown keys are ignored.
/// When several fields are wrong, the first one in object order is reported.
pub(crate) fn decode(frame: &[u8]) -> Result<Incoming<'_>, DecodeError> {
    match decode_fast(frame) {
        Some(msg) => Ok(msg),
        None => decode_careful(frame),
    }
}

/// The fast path of [`decode`], for the frames well-behaved clients send: UTF-8, one object
/// whose keys are all known and distinct, string-or-null fields. It reads the frame once, in one
/// pass, and gives up (None) at anything else — unknown or repeated keys, wrong types, bad JSON —
/// leaving the answer to [`decode_careful`]. When it gives an answer, it is the one
/// `decode_careful` gives (checked by the `decode` fuzz target and its corpus).
pub(crate) fn decode_fast(frame: &[u8]) -> Option<Incoming<'_>> {
    decode_fast_text(std::str::from_utf8(frame).ok()?)
}

/// [`decode`] of a text frame, whose UTF-8 the WebSocket layer has already checked.
pub(crate) fn decode_text(text: &str) -> Result<Incoming<'_>, DecodeError> {
    match decode_fast_text(text) {
        Some(msg) => Ok(msg),
        None => decode_careful(text.as_bytes()),
    }
}

/// [`decode_fast`] of text.
fn decode_fast_text(text: &str) -> Option<Incoming<'_>> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let msg = (&mut deserializer).deserialize_map(FastVisitor).ok()?;
    deserializer.end().ok()?;
    Some(msg)
}

/// The visitor behind [`decode_fast`]: any error (a `custom` one for what it does not handle)
/// sends the frame to the careful decoder.
struct FastVisitor;

impl<'de> Visitor<'de> for FastVisitor {
    type Value = Incoming<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut msg = Incoming {
            kind: None,
            namespace: Cow::Borrowed("/"),
            event: None,
            data: None,
            ack_id: None,
            room: None,
            error: None,
        };
        let mut seen = 0u8;
        while let Some(key) = map.next_key::<JsonStr<'de>>()? {
            let bit = match &*key.0 {
                "type" => 1,
                "namespace" => 2,
                "event" => 4,
                "ackId" => 8,
                "room" => 16,
                "error" => 32,
                "data" => 64,
                _ => return Err(de::Error::custom("unknown key")),
            };
            if seen & bit != 0 {
                return Err(de::Error::custom("duplicate key"));
            }
            seen |= bit;
            if bit == 64 {
                msg.data = Some(map.next_value::<&'de RawValue>()?);
                continue;
            }
            let value = map.next_value::<Option<JsonStr<'de>>>()?.map(|s| s.0);
            match bit {
                1 => msg.kind = value.and_then(|t| MessageType::parse(&t)),
                2 => {
                    if let Some(ns) = value.filter(|ns| !ns.is_empty()) {
                        msg.namespace = ns;
                    }
                }
                4 => msg.event = value,
                8 => msg.ack_id = value,
                16 => msg.room = value,
                _ => msg.error = value,
            }
        }
        Ok(msg)
    }
}

/// The careful decoder behind [`decode`]: two phases (the top level as `(key, raw value)` pairs,
/// then each known key on its own), so that an error names the first bad field and still carries
/// what can be echoed.
pub(crate) fn decode_careful(frame: &[u8]) -> Result<Incoming<'_>, DecodeError> {
    if frame
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Err(DecodeError::bare("empty message".to_owned()));
    }
    let pairs = read_top_level(frame)?;
    interpret(&pairs)
}

/// A JSON string: borrowed from the input when it had no escapes, owned otherwise.
struct JsonStr<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for JsonStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(JsonStrVisitor)
    }
}

/// The visitor behind [`JsonStr`].
struct JsonStrVisitor;

impl<'de> Visitor<'de> for JsonStrVisitor {
    type Value = JsonStr<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(JsonStr(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(JsonStr(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(JsonStr(Cow::Owned(v)))
    }
}

/// The top-level members of a frame, in order, with their raw values.
type Pairs<'de> = Vec<(Cow<'de, str>, &'de RawValue)>;

/// Reads the top-level object into [`Pairs`]; records in `entered` whether it was an object.
struct TopLevel<'c> {
    /// Set when `serde_json` calls `visit_map`, i.e. the top level is an object.
    entered: &'c Cell<bool>,
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Pairs<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        self.entered.set(true);
        let mut pairs = Vec::with_capacity(8);
        while let Some((key, value)) = map.next_entry::<JsonStr<'de>, &'de RawValue>()? {
            pairs.push((key.0, value));
        }
        Ok(pairs)
    }
}

/// Phase one: the top level as `(key, raw value)` pairs, rejecting trailing characters.
fn read_top_level(frame: &[u8]) -> Result<Pairs<'_>, DecodeError> {
    // Text (checked once here) is read as a `str`, so that `serde_json` does not check the UTF-8
    // of every key and raw value again; other bytes are read as a slice (same results, with the
    // UTF-8 errors).
    match std::str::from_utf8(frame) {
        Ok(text) => top_level_of(serde_json::Deserializer::from_str(text)),
        Err(_) => top_level_of(serde_json::Deserializer::from_slice(frame)),
    }
}

fn top_level_of<'de, R: serde_json::de::Read<'de>>(
    mut deserializer: serde_json::Deserializer<R>,
) -> Result<Pairs<'de>, DecodeError> {
    let entered = Cell::new(false);
    let result = (&mut deserializer)
        .deserialize_map(TopLevel { entered: &entered })
        .and_then(|pairs| deserializer.end().map(|()| pairs));
    result.map_err(|e| {
        // A non-object top level is a type error raised before `visit_map` runs; syntax and EOF
        // errors (even inside a non-object) stay "malformed json".
        if !entered.get() && e.classify() == Category::Data {
            DecodeError::bare("message must be a json object".to_owned())
        } else {
            DecodeError::bare(format!("malformed json: {e}"))
        }
    })
}

/// The state of one string-or-null field while interpreting the pairs.
enum Field<'a> {
    /// The key was not present.
    Missing,
    /// The value was `null`.
    Null,
    /// The value was a string.
    Str(Cow<'a, str>),
    /// Wrong JSON type, bad string or duplicate key: never echoed.
    Invalid,
}

impl<'a> Field<'a> {
    /// The string, if one was read.
    fn into_option(self) -> Option<Cow<'a, str>> {
        match self {
            Self::Str(s) => Some(s),
            Self::Missing | Self::Null | Self::Invalid => None,
        }
    }
}

/// Reads a raw value that must be a string or null. `Err` holds the error message.
fn string_or_null<'a>(key: &str, raw: &'a RawValue) -> Result<Field<'a>, String> {
    let text: &'a str = raw.get();
    // serde_json strips whitespace around raw values, so the first byte tells the JSON type.
    match text.as_bytes().first() {
        // Fast path: without escapes the string is the text between the quotes (serde_json has
        // already checked the raw value, control characters and UTF-8 included).
        Some(b'"') if text.len() >= 2 && !text.contains('\\') => {
            Ok(Field::Str(Cow::Borrowed(&text[1..text.len() - 1])))
        }
        Some(b'"') => match serde_json::from_str::<JsonStr<'a>>(text) {
            Ok(s) => Ok(Field::Str(s.0)),
            // Raw scanning accepts some strings that do not decode (e.g. a lone surrogate escape).
            Err(e) => Err(format!("malformed json: field `{key}`: {e}")),
        },
        _ if text == "null" => Ok(Field::Null),
        _ => Err(format!("field `{key}` must be a string")),
    }
}

/// Phase two: interprets the known keys, finding duplicates and wrong types.
fn interpret<'a>(pairs: &[(Cow<'a, str>, &'a RawValue)]) -> Result<Incoming<'a>, DecodeError> {
    let mut kind = Field::Missing;
    let mut namespace = Field::Missing;
    let mut event = Field::Missing;
    let mut ack_id = Field::Missing;
    let mut room = Field::Missing;
    let mut data = None;
    let mut error = None;
    let mut problem: Option<String> = None;
    let mut seen: HashSet<&str> = HashSet::new();

    for (index, (key, raw)) in pairs.iter().enumerate() {
        let key: &str = key;
        let duplicate = if pairs.len() <= LINEAR_DUPLICATE_SCAN {
            pairs[..index].iter().any(|(k, _)| k == key)
        } else {
            !seen.insert(key)
        };
        let slot = match key {
            "type" => Some(&mut kind),
            "namespace" => Some(&mut namespace),
            "event" => Some(&mut event),
            "ackId" => Some(&mut ack_id),
            "room" => Some(&mut room),
            "data" => {
                if !duplicate {
                    data = Some(*raw);
                }
                None
            }
            // `error` from a client is informative: read when it is a string, else ignored.
            "error" => {
                if !duplicate {
                    error = string_or_null(key, raw).ok().and_then(Field::into_option);
                }
                None
            }
            // Unknown keys are ignored.
            _ => None,
        };
        if duplicate {
            if let Some(slot) = slot {
                *slot = Field::Invalid;
            }
            if problem.is_none() {
                problem = Some(format!("duplicate field `{}`", truncate_for_display(key)));
            }
            continue;
        }
        if let Some(slot) = slot {
            *slot = match string_or_null(key, raw) {
                Ok(field) => field,
                Err(message) => {
                    problem.get_or_insert(message);
                    Field::Invalid
                }
            };
        }
    }

    let namespace = namespace.into_option().map(|ns| {
        if ns.is_empty() {
            Cow::Borrowed("/")
        } else {
            ns
        }
    });
    if let Some(message) = problem {
        return Err(DecodeError {
            message: bound_message(message),
            namespace: namespace.map(Cow::into_owned),
            event: event.into_option().map(Cow::into_owned),
            ack_id: ack_id.into_option().map(Cow::into_owned),
        });
    }
    Ok(Incoming {
        kind: kind.into_option().and_then(|t| MessageType::parse(&t)),
        namespace: namespace.unwrap_or(Cow::Borrowed("/")),
        event: event.into_option(),
        data,
        ack_id: ack_id.into_option(),
        room: room.into_option(),
        error,
    })
}

/// An outgoing message (server→client, and client→server for the `client` feature). `D` is the
/// payload type (any `Serialize`, including `RawValue` for relayed data).
///
/// Encoded keys, in order: `type`, `namespace`, `room`, `event`, `data`, `ackId`, `error`; `None`
/// fields are omitted (an empty string is written as is).
#[derive(Debug)]
pub(crate) struct Outgoing<'a, D: ?Sized = RawValue> {
    /// The `type` field.
    pub(crate) kind: MessageType,
    /// The `namespace` field.
    pub(crate) namespace: Option<&'a str>,
    /// The `room` field (client `join`/`leave` requests only).
    pub(crate) room: Option<&'a str>,
    /// The `event` field.
    pub(crate) event: Option<&'a str>,
    /// The `data` field, serialized with `D`'s `Serialize` (a `RawValue` is written verbatim).
    pub(crate) data: Option<&'a D>,
    /// The `ackId` field.
    pub(crate) ack_id: Option<&'a str>,
    /// The `error` field.
    pub(crate) error: Option<&'a str>,
}

impl<D: ?Sized> Clone for Outgoing<'_, D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<D: ?Sized> Copy for Outgoing<'_, D> {}

impl<D: ?Sized + Serialize> Outgoing<'_, D> {
    /// Constructor with everything None except kind.
    pub(crate) fn new(kind: MessageType) -> Self {
        Self {
            kind,
            namespace: None,
            room: None,
            event: None,
            data: None,
            ack_id: None,
            error: None,
        }
    }

    /// Encodes the message as one JSON object (the text of a WebSocket text frame).
    ///
    /// Fails only when `D`'s `Serialize` implementation fails (e.g. a map with non-string keys).
    pub(crate) fn encode(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

impl Outgoing<'_, RawValue> {
    /// [`encode`](Outgoing::encode) for messages whose parts are all strings or raw JSON (acks,
    /// errors, pongs: the hot path of acknowledged requests): the same bytes, written directly
    /// instead of through `serde_json`'s serializer.
    pub(crate) fn encode_raw(&self) -> String {
        // The exact length when no string needs escaping (the usual case): a buffer that is
        // full becomes a `Bytes` without another allocation.
        let keys = [
            (self.namespace, "namespace"),
            (self.room, "room"),
            (self.event, "event"),
            (self.ack_id, "ackId"),
            (self.error, "error"),
        ];
        let len = keys
            .iter()
            .filter_map(|(v, k)| v.map(|v| v.len() + k.len() + 6))
            .sum::<usize>()
            + self.data.map_or(0, |d| d.get().len() + 8)
            + self.kind.as_str().len()
            + 11;
        let mut out = String::with_capacity(len);
        out.push_str(r#"{"type":""#);
        out.push_str(self.kind.as_str());
        out.push('"');
        let field = |out: &mut String, key: &str, value: Option<&str>| {
            if let Some(v) = value {
                out.push_str(",\"");
                out.push_str(key);
                out.push_str("\":");
                push_json_str(out, v);
            }
        };
        field(&mut out, "namespace", self.namespace);
        field(&mut out, "room", self.room);
        field(&mut out, "event", self.event);
        if let Some(data) = self.data {
            out.push_str(r#","data":"#);
            out.push_str(data.get());
        }
        field(&mut out, "ackId", self.ack_id);
        field(&mut out, "error", self.error);
        out.push('}');
        out
    }
}

/// Append `s` as a JSON string, escaped exactly as `serde_json` does.
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // Serializing a `str` cannot fail.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

impl<D: ?Sized + Serialize> Serialize for Outgoing<'_, D> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = 1
            + usize::from(self.namespace.is_some())
            + usize::from(self.room.is_some())
            + usize::from(self.event.is_some())
            + usize::from(self.data.is_some())
            + usize::from(self.ack_id.is_some())
            + usize::from(self.error.is_some());
        let mut map = serializer.serialize_map(Some(len))?;
        map.serialize_entry("type", self.kind.as_str())?;
        if let Some(namespace) = self.namespace {
            map.serialize_entry("namespace", namespace)?;
        }
        if let Some(room) = self.room {
            map.serialize_entry("room", room)?;
        }
        if let Some(event) = self.event {
            map.serialize_entry("event", event)?;
        }
        if let Some(data) = self.data {
            map.serialize_entry("data", data)?;
        }
        if let Some(ack_id) = self.ack_id {
            map.serialize_entry("ackId", ack_id)?;
        }
        if let Some(error) = self.error {
            map.serialize_entry("error", error)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_raw_writes_what_serde_json_writes() {
        let data =
            serde_json::value::RawValue::from_string(r#"{"a": [1, 2.50, "\u00e9"]}"#.to_owned())
                .expect("valid json");
        let names = [
            "",
            "/",
            "/chat",
            "plain",
            "quote\"d",
            "back\\slash",
            "tab\there",
            "nul\u{0}x",
            "del\u{7f}",
            "\u{1f}",
            "é ü 漢字 🚀",
            "line\nbreak",
        ];
        for kind in [
            MessageType::Ack,
            MessageType::Error,
            MessageType::Pong,
            MessageType::Event,
        ] {
            for (i, name) in names.iter().enumerate() {
                let other = names[(i + 3) % names.len()];
                let mut m = Outgoing::<RawValue>::new(kind);
                m.namespace = Some(name);
                m.event = (i % 2 == 0).then_some(other);
                m.room = (i % 3 == 0).then_some(name);
                m.data = (i % 4 != 1).then_some(&*data);
                m.ack_id = (i % 3 != 2).then_some(other);
                m.error = (i % 5 == 0).then_some(name);
                let raw = m.encode_raw();
                assert_eq!(raw, m.encode().expect("encodes"), "{m:?}");
                let plain = [name, &other]
                    .iter()
                    .all(|s| s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
                if plain {
                    assert_eq!(raw.len(), raw.capacity(), "exact size for {m:?}");
                }
            }
            let bare = Outgoing::<RawValue>::new(kind);
            assert_eq!(bare.encode_raw(), bare.encode().expect("encodes"));
        }
    }

    #[test]
    fn fast_path_takes_plain_frames_and_agrees_with_the_careful_decoder() {
        let taken = [
            r#"{"type":"event","namespace":"/","event":"chat","data":{"a":[1,2.50]},"ackId":"1"}"#,
            r#"{"type":"join","namespace":"","room":"lobby","ackId":null}"#,
            r#" { "type" : "ping" } "#,
            r#"{"type":"nope","namespace":null,"event":"e\u0041\n","data":null}"#,
            r#"{"type":"error","ackId":"7","error":"no","data":[1]}"#,
            r#"{}"#,
        ];
        for frame in taken {
            let fast = decode_fast(frame.as_bytes()).expect(frame);
            assert_eq!(Ok(fast), decode_careful(frame.as_bytes()), "{frame}");
        }
        let refused = [
            "",
            "  ",
            "[]",
            "null",
            r#"{"type":"event"} x"#,
            r#"{"type":"event","type":"event"}"#,
            r#"{"type":"event","typ\u0065":"join"}"#,
            r#"{"type":"event","extra":1}"#,
            r#"{"type":1}"#,
            r#"{"error":2}"#,
            r#"{"data":1,"data":2}"#,
            r#"{"event":"\ud800"}"#,
            r#"{"type":"event""#,
        ];
        for frame in refused {
            assert!(decode_fast(frame.as_bytes()).is_none(), "{frame}");
        }
        assert!(decode_fast(b"{\"event\":\"\xff\"}").is_none());
        assert_eq!(
            ok(r#"{"type":"event","extra":1}"#).kind,
            Some(MessageType::Event)
        );
    }

    const ALL_TYPES: [MessageType; 7] = [
        MessageType::Ping,
        MessageType::Pong,
        MessageType::Event,
        MessageType::Join,
        MessageType::Leave,
        MessageType::Ack,
        MessageType::Error,
    ];

    fn ok(frame: &str) -> Incoming<'_> {
        match decode(frame.as_bytes()) {
            Ok(incoming) => incoming,
            Err(e) => panic!("{frame:?} failed: {e:?}"),
        }
    }

    fn err(frame: &[u8]) -> DecodeError {
        match decode(frame) {
            Ok(incoming) => panic!("{frame:?} decoded: {incoming:?}"),
            Err(e) => e,
        }
    }

    fn err_message(frame: &[u8]) -> String {
        err(frame).message
    }

    fn bare(message: &str) -> DecodeError {
        DecodeError {
            message: message.to_owned(),
            namespace: None,
            event: None,
            ack_id: None,
        }
    }

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    fn is_borrowed(s: Option<&Cow<'_, str>>) -> bool {
        matches!(s, Some(Cow::Borrowed(_)))
    }

    #[test]
    fn message_type_names() {
        let names = ["ping", "pong", "event", "join", "leave", "ack", "error"];
        for (kind, name) in ALL_TYPES.iter().zip(names) {
            assert_eq!(kind.as_str(), name);
            assert_eq!(MessageType::parse(name), Some(*kind));
        }
        for bad in [
            "", "Ping", "PING", " ping", "ping ", "events", "connect", "ack\0",
        ] {
            assert_eq!(MessageType::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn empty_messages() {
        for frame in [&b""[..], b" ", b"\n", b" \t\r\n  "] {
            assert_eq!(decode(frame), Err(bare("empty message")), "{frame:?}");
        }
    }

    #[test]
    fn malformed_json() {
        let cases: [(&[u8], &str); 11] = [
            (
                b"hello",
                "malformed json: expected value at line 1 column 1",
            ),
            (
                b"{\"type\":",
                "malformed json: EOF while parsing a value at line 1 column 8",
            ),
            (
                b"\xEF\xBB\xBF{\"type\":\"ping\"}",
                "malformed json: expected value at line 1 column 1",
            ),
            (
                b"{\"type\":\"ping\"} x",
                "malformed json: trailing characters at line 1 column 17",
            ),
            (
                b"{\"type\":\"ping\"}{\"type\":\"ping\"}",
                "malformed json: trailing characters at line 1 column 16",
            ),
            (
                b"{\"type\":\"ping\",}",
                "malformed json: trailing comma at line 1 column 16",
            ),
            (
                b"{type:\"ping\"}",
                "malformed json: key must be a string at line 1 column 2",
            ),
            (
                b"{\"type\":'ping'}",
                "malformed json: expected value at line 1 column 9",
            ),
            (
                b"{",
                "malformed json: EOF while parsing an object at line 1 column 1",
            ),
            (
                b"{\"data\":[1,2}",
                "malformed json: expected `,` or `]` at line 1 column 13",
            ),
            (
                b"nul",
                "malformed json: EOF while parsing a value at line 1 column 3",
            ),
        ];
        for (frame, message) in cases {
            assert_eq!(decode(frame), Err(bare(message)), "{frame:?}");
        }
    }

    #[test]
    fn malformed_json_echoes_nothing() {
        // Fields read before the syntax error are not echoed: phase one failed.
        let e = err(br#"{"namespace":"/x","event":"chat","ackId":"a1","data":"#);
        assert_eq!(
            e,
            bare("malformed json: EOF while parsing a value at line 1 column 53")
        );
    }

    #[test]
    fn top_level_must_be_an_object() {
        for frame in [
            &b"[]"[..],
            b"null",
            b"\"x\"",
            b"5",
            b"-1.5",
            b"true",
            b" [1, 2] ",
            b"[{\"type\":\"ping\"}]",
        ] {
            assert_eq!(
                decode(frame),
                Err(bare("message must be a json object")),
                "{frame:?}"
            );
        }
    }

    #[test]
    fn deep_top_level_array_does_not_recurse() {
        let frame = "[".repeat(100_000) + &"]".repeat(100_000);
        let result = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || decode(frame.as_bytes()).map(|_| ()))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(result, Err(bare("message must be a json object")));
    }

    #[test]
    fn duplicate_keys() {
        assert_eq!(err_message(br#"{"a":1,"a":2}"#), "duplicate field `a`");
        assert_eq!(
            err_message(br#"{"type":"ping","type":"pong"}"#),
            "duplicate field `type`"
        );
        assert_eq!(
            err_message(br#"{"data":1,"data":1}"#),
            "duplicate field `data`"
        );
        assert_eq!(
            err_message(br#"{"error":"x","error":"x"}"#),
            "duplicate field `error`"
        );
        // Keys are compared after unescaping.
        assert_eq!(
            err_message(br#"{"type":"ping","\u0074ype":"pong"}"#),
            "duplicate field `type`"
        );
        // The empty key is a key like any other.
        assert_eq!(err_message(br#"{"":1,"":2}"#), "duplicate field ``");
        // The first duplicate in object order is reported.
        assert_eq!(
            err_message(br#"{"b":1,"a":1,"a":2,"b":2}"#),
            "duplicate field `a`"
        );
    }

    #[test]
    fn duplicate_key_is_truncated() {
        let key = "k".repeat(1000);
        let frame = format!(r#"{{"{key}":1,"{key}":2}}"#);
        assert_eq!(
            err_message(frame.as_bytes()),
            format!("duplicate field `{}…`", "k".repeat(64))
        );
    }

    #[test]
    fn duplicate_keys_among_many() {
        // More keys than the linear scan handles: the hash set path.
        let mut frame = String::from("{");
        for i in 0..1000 {
            frame.push_str(&format!(r#""k{i}":{i},"#));
        }
        frame.push_str(r#""event":"chat","k500":0}"#);
        let e = err(frame.as_bytes());
        assert_eq!(e.message, "duplicate field `k500`");
        assert_eq!(e.event.as_deref(), Some("chat"));

        // Many distinct keys are fine.
        let mut frame = String::from(r#"{"type":"ping""#);
        for i in 0..100_000 {
            frame.push_str(&format!(r#","k{i}":{{}}"#));
        }
        frame.push('}');
        assert_eq!(ok(&frame).kind, Some(MessageType::Ping));
    }

    #[test]
    fn duplicate_echoes_other_fields_but_not_itself() {
        let e = err(br#"{"namespace":"/n","event":"chat","ackId":"a1","x":1,"x":2}"#);
        assert_eq!(
            e,
            DecodeError {
                message: "duplicate field `x`".to_owned(),
                namespace: Some("/n".to_owned()),
                event: Some("chat".to_owned()),
                ack_id: Some("a1".to_owned()),
            }
        );
        let e = err(br#"{"ackId":"a1","event":"chat","ackId":"a2"}"#);
        assert_eq!(
            e,
            DecodeError {
                message: "duplicate field `ackId`".to_owned(),
                namespace: None,
                event: Some("chat".to_owned()),
                ack_id: None,
            }
        );
        let e = err(br#"{"namespace":"/a","namespace":"/a","event":"e","event":5}"#);
        assert_eq!(
            e,
            DecodeError {
                message: "duplicate field `namespace`".to_owned(),
                namespace: None,
                event: None,
                ack_id: None,
            }
        );
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let m = ok(
            r#"{"type":"ping","foo":{"bar":[1,2,{"x":null}]},"v":2,"room2":5,"Type":1,"ackid":[]}"#,
        );
        assert_eq!(
            m,
            Incoming {
                kind: Some(MessageType::Ping),
                namespace: Cow::Borrowed("/"),
                event: None,
                data: None,
                ack_id: None,
                room: None,
                error: None,
            }
        );
    }

    #[test]
    fn type_field() {
        for kind in ALL_TYPES {
            let frame = format!(r#"{{"type":"{}"}}"#, kind.as_str());
            assert_eq!(ok(&frame).kind, Some(kind));
        }
        assert_eq!(ok(r#"{"type":"p\u0069ng"}"#).kind, Some(MessageType::Ping));
        assert_eq!(ok(r#"{"type":"hello"}"#).kind, None);
        assert_eq!(ok(r#"{"type":"Ping"}"#).kind, None);
        assert_eq!(ok(r#"{"type":""}"#).kind, None);
        assert_eq!(ok(r#"{"type":null}"#).kind, None);
        assert_eq!(ok(r#"{}"#).kind, None);
        for value in ["1", "true", "false", "{}", "[]", "[\"ping\"]", "-0", "1e3"] {
            let frame = format!(r#"{{"type":{value}}}"#);
            assert_eq!(
                decode(frame.as_bytes()),
                Err(bare("field `type` must be a string")),
                "{frame}"
            );
        }
    }

    #[test]
    fn minimal_messages() {
        assert_eq!(
            ok(r#"{"type":"ping"}"#),
            Incoming {
                kind: Some(MessageType::Ping),
                namespace: Cow::Borrowed("/"),
                event: None,
                data: None,
                ack_id: None,
                room: None,
                error: None,
            }
        );
        assert_eq!(
            ok(r#"{}"#),
            Incoming {
                kind: None,
                namespace: Cow::Borrowed("/"),
                event: None,
                data: None,
                ack_id: None,
                room: None,
                error: None,
            }
        );
    }

    #[test]
    fn full_event_message() {
        let frame = r#" { "type" : "event", "namespace":"/chat", "event":"chat",
            "data" : {"user":"ann", "message":"hi"} , "ackId":"client-ack-1", "room":"lobby" } "#;
        let m = ok(frame);
        assert_eq!(m.kind, Some(MessageType::Event));
        assert_eq!(m.namespace, "/chat");
        assert_eq!(m.event.as_deref(), Some("chat"));
        // Whitespace around the value is dropped, inside it is kept.
        assert_eq!(
            m.data.map(RawValue::get),
            Some(r#"{"user":"ann", "message":"hi"}"#)
        );
        assert_eq!(m.ack_id.as_deref(), Some("client-ack-1"));
        assert_eq!(m.room.as_deref(), Some("lobby"));
        assert!(is_borrowed(Some(&m.namespace)));
        assert!(is_borrowed(m.event.as_ref()));
        assert!(is_borrowed(m.ack_id.as_ref()));
        assert!(is_borrowed(m.room.as_ref()));
    }

    #[test]
    fn namespace_defaults() {
        for frame in [
            r#"{"type":"ping"}"#,
            r#"{"type":"ping","namespace":null}"#,
            r#"{"type":"ping","namespace":""}"#,
        ] {
            let m = ok(frame);
            assert_eq!(m.namespace, "/", "{frame}");
            assert!(is_borrowed(Some(&m.namespace)));
        }
        assert_eq!(ok(r#"{"namespace":"/x"}"#).namespace, "/x");
        // Not validated here: names.rs does that.
        assert_eq!(ok(r#"{"namespace":"x"}"#).namespace, "x");
        assert_eq!(ok(r#"{"namespace":" "}"#).namespace, " ");
    }

    #[test]
    fn string_fields_accept_string_or_null() {
        let m = ok(r#"{"event":null,"ackId":null,"room":null}"#);
        assert_eq!((m.event, m.ack_id, m.room), (None, None, None));
        let m = ok(r#"{"event":"","ackId":"","room":""}"#);
        assert_eq!(m.event.as_deref(), Some(""));
        assert_eq!(m.ack_id.as_deref(), Some(""));
        assert_eq!(m.room.as_deref(), Some(""));
    }

    #[test]
    fn string_fields_reject_other_types() {
        for (key, wire) in [
            ("namespace", "namespace"),
            ("event", "event"),
            ("ackId", "ackId"),
            ("room", "room"),
        ] {
            for value in [
                "5",
                "-0",
                "1.5e10",
                "true",
                "false",
                "{}",
                "[]",
                r#"["x"]"#,
                r#"{"a":"b"}"#,
            ] {
                let frame = format!(r#"{{"type":"event","{key}":{value}}}"#);
                assert_eq!(
                    err_message(frame.as_bytes()),
                    format!("field `{wire}` must be a string"),
                    "{frame}"
                );
            }
        }
    }

    #[test]
    fn numeric_ack_id_echoes_the_rest() {
        let e = err(br#"{"type":"event","namespace":"/x","event":"chat","ackId":5}"#);
        assert_eq!(
            e,
            DecodeError {
                message: "field `ackId` must be a string".to_owned(),
                namespace: Some("/x".to_owned()),
                event: Some("chat".to_owned()),
                ack_id: None,
            }
        );
    }

    #[test]
    fn echo_is_independent_of_order() {
        // The bad field comes first; the good ones after it are still echoed.
        let e = err(br#"{"type":1,"ackId":"a1","event":"e\n","namespace":"/n"}"#);
        assert_eq!(
            e,
            DecodeError {
                message: "field `type` must be a string".to_owned(),
                namespace: Some("/n".to_owned()),
                event: Some("e\n".to_owned()),
                ack_id: Some("a1".to_owned()),
            }
        );
        // An empty namespace is echoed after defaulting, a null one is not echoed.
        let e = err(br#"{"namespace":"","event":[]}"#);
        assert_eq!(e.message, "field `event` must be a string");
        assert_eq!(e.namespace.as_deref(), Some("/"));
        let e = err(br#"{"namespace":null,"event":[],"ackId":null}"#);
        assert_eq!(e.namespace, None);
        assert_eq!(e.ack_id, None);
        // A bad namespace is not echoed.
        let e = err(br#"{"namespace":7,"event":"chat","ackId":"z"}"#);
        assert_eq!(
            e,
            DecodeError {
                message: "field `namespace` must be a string".to_owned(),
                namespace: None,
                event: Some("chat".to_owned()),
                ack_id: Some("z".to_owned()),
            }
        );
    }

    #[test]
    fn first_error_in_object_order_is_reported() {
        assert_eq!(
            err_message(br#"{"room":1,"type":2,"ackId":3}"#),
            "field `room` must be a string"
        );
        assert_eq!(
            err_message(br#"{"ackId":3,"room":1,"type":2}"#),
            "field `ackId` must be a string"
        );
        assert_eq!(
            err_message(br#"{"x":1,"event":2,"x":3}"#),
            "field `event` must be a string"
        );
        assert_eq!(
            err_message(br#"{"x":1,"x":3,"event":2}"#),
            "duplicate field `x`"
        );
    }

    #[test]
    fn error_key_from_client_is_ignored() {
        for value in [r#""boom""#, "5", "null", "{}"] {
            let frame = format!(r#"{{"type":"ping","error":{value}}}"#);
            let m = ok(&frame);
            assert_eq!(m.kind, Some(MessageType::Ping));
        }
    }

    #[test]
    fn data_is_kept_raw() {
        let cases = [
            ("null", "null"),
            ("0", "0"),
            ("-0", "-0"),
            ("12345678901234567890123", "12345678901234567890123"),
            ("1.000000000000000000001", "1.000000000000000000001"),
            ("1e400", "1e400"),
            (r#""s\u00e9""#, r#""s\u00e9""#),
            ("[ 1 , 2 ]", "[ 1 , 2 ]"),
            (r#"{"b":1,"a":2,"b":3}"#, r#"{"b":1,"a":2,"b":3}"#),
            (" \n true \t", "true"),
        ];
        for (value, expected) in cases {
            let frame = format!(r#"{{"type":"event","event":"e","data":{value}}}"#);
            let m = ok(&frame);
            assert_eq!(m.data.map(RawValue::get), Some(expected), "{frame}");
        }
        assert!(ok(r#"{"type":"event"}"#).data.is_none());
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let m = ok(
            r#"{"namespace":"/\u00e9","event":"a\"b","ackId":"\\","room":"r\u0000\ud83e\udd80"}"#,
        );
        assert_eq!(m.namespace, "/é");
        assert!(matches!(m.namespace, Cow::Owned(_)));
        assert_eq!(m.event.as_deref(), Some("a\"b"));
        assert!(matches!(m.event, Some(Cow::Owned(_))));
        assert_eq!(m.ack_id.as_deref(), Some("\\"));
        assert!(matches!(m.ack_id, Some(Cow::Owned(_))));
        assert_eq!(m.room.as_deref(), Some("r\0🦀"));
        assert!(matches!(m.room, Some(Cow::Owned(_))));
        // Unescaped non-ASCII is borrowed.
        let m = ok(r#"{"namespace":"/日本","event":"🦀"}"#);
        assert!(is_borrowed(Some(&m.namespace)));
        assert!(is_borrowed(m.event.as_ref()));
        assert_eq!(m.event.as_deref(), Some("🦀"));
    }

    #[test]
    fn bad_escapes() {
        // A lone surrogate passes the raw scan but not string decoding: the other fields are echoed.
        let e = err(br#"{"event":"\ud800","ackId":"a1"}"#);
        assert_eq!(
            e,
            DecodeError {
                message:
                    "malformed json: field `event`: unexpected end of hex escape at line 1 column 8"
                        .to_owned(),
                namespace: None,
                event: None,
                ack_id: Some("a1".to_owned()),
            }
        );
        // In a key, it is a phase-one error.
        assert_eq!(
            decode(br#"{"\ud800":1}"#),
            Err(bare(
                "malformed json: unexpected end of hex escape at line 1 column 9"
            ))
        );
        assert_eq!(
            err_message(br#"{"event":"\x"}"#),
            "malformed json: invalid escape at line 1 column 12"
        );
        // In `data`, a lone surrogate is relayed as is.
        let m = ok(r#"{"data":"\ud800"}"#);
        assert_eq!(m.data.map(RawValue::get), Some(r#""\ud800""#));
    }

    #[test]
    fn binary_frames_with_invalid_utf8() {
        let cases: [&[u8]; 9] = [
            b"\xff",
            b"\xff{}",
            b"{\"event\":\"\xff\"}",
            b"{\"\xff\":1}",
            b"{\"data\":\"\xc3\"}",
            b"{\"data\":[\"ok\",{\"x\":\"\xe6\x97\"}]}",
            b"{\"type\":\"ping\"}\xff",
            b"{\"type\":\"ping\",\"ackId\":\"\xed\xa0\x80\"}",
            b"{\xc3\xa9:1}",
        ];
        for frame in cases {
            let message = err_message(frame);
            assert!(
                message.starts_with("malformed json: "),
                "{frame:?}: {message}"
            );
        }
        assert_eq!(
            decode(b"{\"event\":\"\xff\"}"),
            Err(bare(
                "malformed json: invalid unicode code point at line 1 column 11"
            ))
        );
        // A valid envelope in a binary frame decodes like a text frame.
        let frame: Vec<u8> = br#"{"type":"event","event":"chat","data":[1]}"#.to_vec();
        let m = decode(&frame).unwrap();
        assert_eq!(m.kind, Some(MessageType::Event));
        assert_eq!(m.data.map(RawValue::get), Some("[1]"));
    }

    #[test]
    fn all_short_byte_strings_never_panic() {
        // Exhaustive over a small alphabet: every result is Ok or a bounded error.
        let alphabet: &[u8] = b"{}[]\":,\\ n0e\xff";
        let mut frame = Vec::new();
        for n in 0..=4u32 {
            let count = alphabet.len().pow(n);
            for mut i in 0..count {
                frame.clear();
                for _ in 0..n {
                    frame.push(alphabet[i % alphabet.len()]);
                    i /= alphabet.len();
                }
                if let Err(e) = decode(&frame) {
                    assert!(e.message.chars().count() <= 200);
                }
            }
        }
    }

    #[test]
    fn deeply_nested_data_does_not_overflow_the_stack() {
        let depth = 100_000;
        let data = "[".repeat(depth) + &"]".repeat(depth);
        let frame = format!(r#"{{"type":"event","event":"deep","data":{data},"x":{data}}}"#);
        let result = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let outcome = match decode(frame.as_bytes()) {
                    Ok(m) => Ok((m.kind, m.data.map(|d| d.get().len()))),
                    Err(e) => Err(e),
                };
                // Deep values in other positions: no recursion either.
                let typed = format!(r#"{{"type":{data}}}"#);
                let unterminated = format!(r#"{{"data":{}"#, "[".repeat(depth));
                (
                    outcome,
                    decode(typed.as_bytes()).map(|_| ()),
                    decode(unterminated.as_bytes()).map(|_| ()),
                )
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(result.0, Ok((Some(MessageType::Event), Some(2 * depth))));
        assert_eq!(result.1, Err(bare("field `type` must be a string")));
        assert_eq!(
            result.2,
            Err(bare(
                "malformed json: EOF while parsing a list at line 1 column 100008"
            ))
        );
    }

    #[test]
    fn one_mib_of_tiny_objects() {
        let mut data = String::from("[");
        while data.len() < 1024 * 1024 {
            data.push_str("{},");
        }
        data.push_str("{}]");
        let frame = format!(r#"{{"type":"event","event":"bulk","data":{data}}}"#);
        let m = ok(&frame);
        assert_eq!(m.data.map(RawValue::get), Some(data.as_str()));
        // Borrowed from the frame: no copy of the payload.
        let start = frame.as_ptr() as usize;
        let ptr = m.data.map_or(0, |d| d.get().as_ptr() as usize);
        assert!(ptr >= start && ptr < start + frame.len());
    }

    #[test]
    fn message_bound() {
        assert_eq!(bound_message("short".to_owned()), "short");
        let exact = "é".repeat(200);
        assert_eq!(bound_message(exact.clone()), exact);
        let long = "é".repeat(201);
        let cut = bound_message(long);
        assert_eq!(cut, format!("{}…", "é".repeat(199)));
        assert_eq!(cut.chars().count(), 200);
        assert_eq!(
            bound_message("x".repeat(100_000)),
            format!("{}…", "x".repeat(199))
        );
    }

    #[test]
    fn encode_pong() {
        let mut out = Outgoing::<RawValue>::new(MessageType::Pong);
        out.namespace = Some("/");
        assert_eq!(out.encode().unwrap(), r#"{"type":"pong","namespace":"/"}"#);
        assert_eq!(
            Outgoing::<RawValue>::new(MessageType::Ping)
                .encode()
                .unwrap(),
            r#"{"type":"ping"}"#
        );
    }

    #[test]
    fn encode_error() {
        let mut out = Outgoing::<RawValue>::new(MessageType::Error);
        out.namespace = Some("/x");
        out.error = Some("namespace not joined");
        assert_eq!(
            out.encode().unwrap(),
            r#"{"type":"error","namespace":"/x","error":"namespace not joined"}"#
        );
    }

    #[test]
    fn encode_ack() {
        let data = raw(r#"{"status":"ok"}"#);
        let out = Outgoing {
            kind: MessageType::Ack,
            namespace: Some("/"),
            room: None,
            event: Some("chat"),
            data: Some(&*data),
            ack_id: Some("client-ack-1"),
            error: None,
        };
        assert_eq!(
            out.encode().unwrap(),
            r#"{"type":"ack","namespace":"/","event":"chat","data":{"status":"ok"},"ackId":"client-ack-1"}"#
        );
    }

    #[test]
    fn encode_key_order_with_every_field() {
        let data = raw("[1]");
        let out = Outgoing {
            kind: MessageType::Event,
            namespace: Some("/n"),
            room: Some("r"),
            event: Some("e"),
            data: Some(&*data),
            ack_id: Some("a"),
            error: Some("x"),
        };
        assert_eq!(
            out.encode().unwrap(),
            r#"{"type":"event","namespace":"/n","room":"r","event":"e","data":[1],"ackId":"a","error":"x"}"#
        );
        // Empty strings are written, only None is omitted.
        let mut out = Outgoing::<RawValue>::new(MessageType::Event);
        out.event = Some("");
        assert_eq!(out.encode().unwrap(), r#"{"type":"event","event":""}"#);
    }

    #[test]
    fn encode_relays_raw_data_byte_identical() {
        let text = r#"{"n":12345678901234567890123,"f":-0,"d":1.000000000000000000001}"#;
        let data = raw(text);
        let mut out = Outgoing::<RawValue>::new(MessageType::Event);
        out.namespace = Some("/");
        out.event = Some("relay");
        out.data = Some(&data);
        let encoded = out.encode().unwrap();
        assert_eq!(
            encoded,
            format!(r#"{{"type":"event","namespace":"/","event":"relay","data":{text}}}"#)
        );
        // And back through the decoder, still byte-identical.
        assert_eq!(ok(&encoded).data.map(RawValue::get), Some(text));
    }

    #[test]
    fn encode_typed_data_and_escapes() {
        #[derive(serde::Serialize)]
        struct Chat<'a> {
            user: &'a str,
            n: u8,
        }
        let chat = Chat { user: "ann", n: 2 };
        let mut out = Outgoing::new(MessageType::Event);
        out.event = Some("chat");
        out.data = Some(&chat);
        assert_eq!(
            out.encode().unwrap(),
            r#"{"type":"event","event":"chat","data":{"user":"ann","n":2}}"#
        );
        let text = String::from("a\"b\\c\n\u{0}\u{7f}é");
        let mut out = Outgoing::<str>::new(MessageType::Error);
        out.error = Some("bad \"name\"\u{1}");
        out.data = Some(text.as_str());
        assert_eq!(
            out.encode().unwrap(),
            "{\"type\":\"error\",\"data\":\"a\\\"b\\\\c\\n\\u0000\u{7f}é\",\"error\":\"bad \\\"name\\\"\\u0001\"}"
        );
        let value = serde_json::json!({"k": [1, null]});
        let mut out = Outgoing::<serde_json::Value>::new(MessageType::Ack);
        out.ack_id = Some("1");
        out.data = Some(&value);
        assert_eq!(
            out.encode().unwrap(),
            r#"{"type":"ack","data":{"k":[1,null]},"ackId":"1"}"#
        );
    }

    #[test]
    fn encode_error_from_data_is_reported() {
        let mut bad = std::collections::BTreeMap::new();
        bad.insert(vec![1u8], 1u8);
        let mut out = Outgoing::new(MessageType::Event);
        out.data = Some(&bad);
        assert!(out.encode().is_err());
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }

        fn string(&mut self) -> String {
            const CHARS: &[char] = &[
                'a', 'b', 'z', 'A', '0', '9', ' ', '/', ':', '"', '\\', '\n', '\t', '\0', '\u{1f}',
                '\u{7f}', '\u{85}', 'é', '日', '🦀', '\u{2028}', '\u{feff}', '{', '}',
            ];
            let len = self.below(12);
            (0..len).map(|_| CHARS[self.below(CHARS.len())]).collect()
        }

        fn opt_string(&mut self) -> Option<String> {
            if self.chance(30) {
                None
            } else {
                Some(self.string())
            }
        }

        fn space(&mut self) -> &'static str {
            [" ", "", "", "\n", "\t", "  "][self.below(6)]
        }

        fn json(&mut self, depth: usize) -> String {
            let choice = if depth == 0 {
                self.below(6)
            } else {
                self.below(8)
            };
            match choice {
                0 => "null".to_owned(),
                1 => ["true", "false"][self.below(2)].to_owned(),
                2 => [
                    "0",
                    "-0",
                    "12345678901234567890123",
                    "1.000000000000000000001",
                    "-1.5e-300",
                    "1E400",
                    "42",
                ][self.below(7)]
                .to_owned(),
                3 | 4 => serde_json::to_string(&self.string()).unwrap(),
                5 => r#""\u00e9\ud83e\udd80\/""#.to_owned(),
                6 => {
                    let n = self.below(4);
                    let items: Vec<String> = (0..n).map(|_| self.json(depth - 1)).collect();
                    let sep = format!("{},{}", self.space(), self.space());
                    format!("[{}{}{}]", self.space(), items.join(&sep), self.space())
                }
                _ => {
                    let n = self.below(4);
                    let items: Vec<String> = (0..n)
                        .map(|_| {
                            let key = serde_json::to_string(&self.string()).unwrap();
                            format!(
                                "{key}{}:{}{}",
                                self.space(),
                                self.space(),
                                self.json(depth - 1)
                            )
                        })
                        .collect();
                    format!("{{{}{}}}", items.join(","), self.space())
                }
            }
        }
    }

    #[test]
    fn round_trip_generated_envelopes() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..500 {
            let kind = ALL_TYPES[rng.below(ALL_TYPES.len())];
            let namespace = rng.opt_string();
            let event = rng.opt_string();
            let ack_id = rng.opt_string();
            let error = rng.opt_string();
            let data = if rng.chance(30) {
                None
            } else {
                Some(raw(&rng.json(3)))
            };
            let out = Outgoing {
                kind,
                namespace: namespace.as_deref(),
                room: None,
                event: event.as_deref(),
                data: data.as_deref(),
                ack_id: ack_id.as_deref(),
                error: error.as_deref(),
            };
            let encoded = out.encode().unwrap();
            let m = match decode(encoded.as_bytes()) {
                Ok(m) => m,
                Err(e) => panic!("{encoded}: {e:?}"),
            };
            let expected_namespace = match namespace.as_deref() {
                None | Some("") => "/",
                Some(ns) => ns,
            };
            assert_eq!(m.kind, Some(kind), "{encoded}");
            assert_eq!(m.namespace, expected_namespace, "{encoded}");
            assert_eq!(m.event.as_deref(), event.as_deref(), "{encoded}");
            assert_eq!(
                m.data.map(RawValue::get),
                data.as_deref().map(RawValue::get),
                "{encoded}"
            );
            assert_eq!(m.ack_id.as_deref(), ack_id.as_deref(), "{encoded}");
            assert_eq!(m.room, None, "{encoded}");
            // Encoding the decoded message again gives the same bytes (for a non-empty namespace).
            if namespace.as_deref().is_some_and(|ns| !ns.is_empty()) {
                let again = Outgoing {
                    kind: m.kind.unwrap(),
                    namespace: Some(&*m.namespace),
                    room: None,
                    event: m.event.as_deref(),
                    data: m.data,
                    ack_id: m.ack_id.as_deref(),
                    error: error.as_deref(),
                };
                assert_eq!(again.encode().unwrap(), encoded);
            }
        }
    }
}
