//! A payload decoded into a type that keeps the JSON it came from, to relay it byte for byte.

use std::fmt;
use std::ops::Deref;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A payload decoded as `T` that keeps the exact JSON it was decoded from, and serializes as that
/// JSON.
///
/// Decoding into `T` validates the message, but re-serializing `T` to relay it is lossy: fields
/// `T` does not know are dropped, numbers are reformatted (a 30-digit integer becomes a float or
/// fails), key order and spacing change. `Typed<T>` decodes both ways at once: the handler reads
/// the fields of `T` (through `Deref`), and [`emit`](crate::Socket::emit) (or a broadcast, or an
/// ack) sends the client's `data` exactly as it arrived, without serializing `T` again.
///
/// It works wherever a payload does: the payload parameter of a `#[ws_event]` function or of a
/// closure registered with [`ServerBuilder::on`](crate::ServerBuilder::on), or
/// [`from_raw`](Typed::from_raw) on raw JSON you hold. A message without `data` decodes from
/// `null`, as every payload does (so `Typed<Option<T>>` accepts it, keeping `null`).
///
/// The cost over a plain `T` is one more scan of `data` and a copy of it (kept for the lifetime of
/// the value). `Deserialize` works only with `serde_json` (it captures the raw text); `Serialize`
/// writes the text verbatim with `serde_json` (other serializers see the raw JSON as a string
/// field of a private struct). There is no `DerefMut`: a changed `T` would not be what is sent.
///
/// # Examples
///
/// Relay a validated chat message with its unknown fields and its numbers untouched:
///
/// ```
/// use serde::Deserialize;
/// use wsu::{Json, SendError, Server, Socket, Typed};
///
/// #[derive(Deserialize)]
/// struct Chat {
///     user: String,
///     message: String,
/// }
///
/// let server = Server::builder()
///     .on("chat", |socket: Socket, msg: Typed<Chat>| async move {
///         if msg.message.is_empty() {
///             return Ok(Json("empty"));
///         }
///         // Sent as the client wrote it: `{"user":"ann","message":"hi","n":1e400}` stays so.
///         socket.broadcast().emit("chat", &msg)?;
///         Ok::<_, SendError>(Json("ok"))
///     })
///     .build()
///     .unwrap();
/// # let _ = server;
///
/// let sent = r#"{"user":"ann","message":"hi","n":123456789012345678901234567890}"#;
/// let msg: Typed<Chat> = serde_json::from_str(sent).unwrap();
/// assert_eq!(msg.user, "ann");
/// assert_eq!(msg.raw().get(), sent);
/// assert_eq!(serde_json::to_string(&msg).unwrap(), sent);
/// ```
///
/// The same in a `#[ws_event]` function:
///
/// ```standalone_crate
/// use serde::Deserialize;
/// use wsu::{SendError, Socket, Typed, ws_event};
///
/// #[derive(Deserialize)]
/// struct Chat { user: String, message: String }
///
/// #[ws_event]
/// async fn chat(socket: Socket, msg: Typed<Chat>) -> Result<(), SendError> {
///     if !msg.message.is_empty() {
///         socket.broadcast().emit("chat", &msg)?;
///     }
///     Ok(())
/// }
/// # let server = wsu::Server::builder().build().unwrap();
/// # assert_eq!(server.events()[0].event, "chat");
/// ```
#[derive(Clone)]
pub struct Typed<T> {
    value: T,
    raw: Box<RawValue>,
}

impl<T: DeserializeOwned> Typed<T> {
    /// Decode `raw` as `T`, keeping `raw`.
    ///
    /// # Errors
    /// `raw` does not decode as `T` (the error is `serde_json`'s, positioned in `raw`).
    ///
    /// ```
    /// use serde_json::value::RawValue;
    /// let raw = RawValue::from_string(r#"{"n": 1.50}"#.to_owned()).unwrap();
    /// let typed: wsu::Typed<serde_json::Value> = wsu::Typed::from_raw(raw).unwrap();
    /// assert_eq!(typed["n"], 1.5);
    /// assert_eq!(typed.raw().get(), r#"{"n": 1.50}"#);
    ///
    /// let raw = RawValue::from_string(r#""text""#.to_owned()).unwrap();
    /// assert!(wsu::Typed::<u32>::from_raw(raw).is_err());
    /// ```
    pub fn from_raw(raw: Box<RawValue>) -> Result<Self, serde_json::Error> {
        let value = serde_json::from_str(raw.get())?;
        Ok(Typed { value, raw })
    }
}

impl<T> Typed<T> {
    /// The JSON it was decoded from, byte for byte (what it serializes as).
    pub fn raw(&self) -> &RawValue {
        &self.raw
    }

    /// The decoded value (the JSON is dropped).
    pub fn into_inner(self) -> T {
        self.value
    }

    /// The decoded value and the JSON it was decoded from.
    pub fn into_parts(self) -> (T, Box<RawValue>) {
        (self.value, self.raw)
    }
}

impl<T> Deref for Typed<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Typed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Typed")
            .field("value", &self.value)
            .field("raw", &self.raw.get())
            .finish()
    }
}

/// Captures the value's JSON text, then decodes it as `T`.
impl<'de, T: DeserializeOwned> Deserialize<'de> for Typed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Typed::from_raw(raw).map_err(D::Error::custom)
    }
}

/// Writes the JSON it was decoded from, verbatim.
impl<T> Serialize for Typed<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{ack_value, decode_payload};

    #[derive(Debug, Clone, Deserialize, PartialEq)]
    struct Chat {
        user: String,
        message: String,
    }

    const SENT: &str = r#"{"message" : "hi",  "user":"ann","n":123456789012345678901234567890,"x":[1.50,{"y":null}]}"#;

    #[test]
    fn decodes_the_value_and_keeps_the_bytes() {
        let data = RawValue::from_string(SENT.to_owned()).unwrap();
        let typed: Typed<Chat> = decode_payload(Some(&data)).unwrap();
        assert_eq!(
            *typed,
            Chat {
                user: "ann".to_owned(),
                message: "hi".to_owned()
            }
        );
        assert_eq!(typed.raw().get(), SENT);
        assert_eq!(serde_json::to_string(&typed).unwrap(), SENT);
        // As an ack, it is sent as it came too.
        let ack = ack_value(typed.clone()).unwrap().unwrap();
        assert_eq!(ack.get(), SENT);
        let (value, raw) = typed.into_parts();
        assert_eq!(value.user, "ann");
        assert_eq!(raw.get(), SENT);
    }

    #[test]
    fn nested_in_a_message_it_is_written_verbatim() {
        #[derive(Serialize, Deserialize)]
        struct Envelope {
            data: Typed<Chat>,
        }
        let text = format!(r#"{{"data":{SENT}}}"#);
        let env: Envelope = serde_json::from_str(&text).unwrap();
        assert_eq!(env.data.message, "hi");
        assert_eq!(serde_json::to_string(&env).unwrap(), text);
        assert_eq!(env.data.into_inner().user, "ann");
    }

    #[test]
    fn missing_data_decodes_from_null_and_bad_data_fails_like_t() {
        let none: Typed<Option<Chat>> = decode_payload(None).unwrap();
        assert!(none.is_none());
        assert_eq!(none.raw().get(), "null");
        let err = decode_payload::<Typed<Chat>>(None).unwrap_err();
        assert_eq!(
            err.message(),
            "invalid payload: invalid type: null, expected struct Chat at line 1 column 4"
        );
        let data = RawValue::from_string(r#"{"user":"a"}"#.to_owned()).unwrap();
        let typed = decode_payload::<Typed<Chat>>(Some(&data)).unwrap_err();
        let plain = decode_payload::<Chat>(Some(&data)).unwrap_err();
        assert_eq!(typed.message(), plain.message());
        assert_eq!(
            typed.message(),
            "invalid payload: missing field `message` at line 1 column 12"
        );
    }

    #[test]
    fn debug_shows_both() {
        let typed: Typed<u8> = serde_json::from_str("7").unwrap();
        assert_eq!(format!("{typed:?}"), r#"Typed { value: 7, raw: "7" }"#);
    }
}
