//! Validation of the names a client or an application may use: namespaces, rooms, event names and
//! ack ids.
//!
//! All functions here are pure. Lengths are measured in bytes of UTF-8; "control character" means
//! [`char::is_control`] (C0, DEL and C1, so NUL and `"\u{7f}"` are both refused).

use std::borrow::Cow;
use std::fmt;

/// Longest namespace, room or event name accepted, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 128;

/// Longest ack id accepted, in bytes.
pub(crate) const MAX_ACK_ID_LEN: usize = 128;

/// Event names a client may not send and a handler may not be registered under.
pub(crate) const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "disconnect",
    "error",
    "ping",
    "pong",
    "join",
    "leave",
    "ack",
];

/// Longest prefix, in bytes, kept by [`truncate_for_display`].
const DISPLAY_LEN: usize = 64;

/// Why a name was refused.
///
/// The `Display` text is a lowercase predicate meant to follow the kind of name, e.g.
/// `"event name {err}"` gives `"event name is reserved"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NameError {
    /// The name is the empty string.
    Empty,
    /// The name is longer than the limit (128 bytes).
    TooLong,
    /// The name contains a control character (see [`char::is_control`]).
    ControlCharacter,
    /// A namespace does not start with `/`.
    MissingLeadingSlash,
    /// An event name is one of [`RESERVED_EVENTS`].
    Reserved,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("is empty"),
            Self::TooLong => write!(f, "is longer than {MAX_NAME_LEN} bytes"),
            Self::ControlCharacter => f.write_str("contains a control character"),
            Self::MissingLeadingSlash => f.write_str("must start with `/`"),
            Self::Reserved => f.write_str("is reserved"),
        }
    }
}

/// The checks shared by every kind of name: non-empty, at most `max` bytes, no control character.
fn check_common(name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max {
        return Err(NameError::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    Ok(())
}

/// Validates a namespace name: non-empty, starts with `/`, at most [`MAX_NAME_LEN`] bytes, no
/// control character.
pub(crate) fn validate_namespace(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if !name.starts_with('/') {
        return Err(NameError::MissingLeadingSlash);
    }
    check_common(name, MAX_NAME_LEN)
}

/// Validates a room name: non-empty, at most [`MAX_NAME_LEN`] bytes, no control character.
///
/// Any other character is allowed, including `:` (so `"a::b"` is a valid room name).
pub(crate) fn validate_room(name: &str) -> Result<(), NameError> {
    check_common(name, MAX_NAME_LEN)
}

/// Validates an event name: non-empty, at most [`MAX_NAME_LEN`] bytes, no control character, and
/// not one of [`RESERVED_EVENTS`] (compared exactly, case-sensitively).
pub(crate) fn validate_event(name: &str) -> Result<(), NameError> {
    check_common(name, MAX_NAME_LEN)?;
    if RESERVED_EVENTS.contains(&name) {
        return Err(NameError::Reserved);
    }
    Ok(())
}

/// Validates an ack id: non-empty, at most [`MAX_ACK_ID_LEN`] bytes, no control character.
pub(crate) fn validate_ack_id(id: &str) -> Result<(), NameError> {
    check_common(id, MAX_ACK_ID_LEN)
}

/// Truncates a name for inclusion in an error message.
///
/// Strings of at most 64 bytes are returned unchanged (borrowed). Longer ones are cut to their
/// longest prefix of at most 64 bytes that ends on a char boundary, and `"…"` is appended (so the
/// result is at most 67 bytes).
pub(crate) fn truncate_for_display(s: &str) -> Cow<'_, str> {
    if s.len() <= DISPLAY_LEN {
        return Cow::Borrowed(s);
    }
    let mut end = DISPLAY_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + '…'.len_utf8());
    out.push_str(&s[..end]);
    out.push('…');
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_texts() {
        assert_eq!(NameError::Empty.to_string(), "is empty");
        assert_eq!(NameError::TooLong.to_string(), "is longer than 128 bytes");
        assert_eq!(
            NameError::ControlCharacter.to_string(),
            "contains a control character"
        );
        assert_eq!(
            NameError::MissingLeadingSlash.to_string(),
            "must start with `/`"
        );
        assert_eq!(NameError::Reserved.to_string(), "is reserved");
        // The `TooLong` text is shared by names and ack ids.
        assert_eq!(MAX_NAME_LEN, MAX_ACK_ID_LEN);
    }

    #[test]
    fn namespace_rules() {
        assert_eq!(validate_namespace("/"), Ok(()));
        assert_eq!(validate_namespace("/chat"), Ok(()));
        assert_eq!(validate_namespace("/a/b::c"), Ok(()));
        assert_eq!(validate_namespace("/ünï"), Ok(()));
        assert_eq!(validate_namespace(""), Err(NameError::Empty));
        assert_eq!(
            validate_namespace("chat"),
            Err(NameError::MissingLeadingSlash)
        );
        assert_eq!(
            validate_namespace(" /chat"),
            Err(NameError::MissingLeadingSlash)
        );
        assert_eq!(
            validate_namespace("/a\0b"),
            Err(NameError::ControlCharacter)
        );
        assert_eq!(
            validate_namespace("/a\u{7f}"),
            Err(NameError::ControlCharacter)
        );
        assert_eq!(validate_namespace("/a\n"), Err(NameError::ControlCharacter));
        assert_eq!(
            validate_namespace("/\u{85}"),
            Err(NameError::ControlCharacter)
        );
    }

    #[test]
    fn namespace_length_limit() {
        let ok = format!("/{}", "a".repeat(127));
        assert_eq!(ok.len(), 128);
        assert_eq!(validate_namespace(&ok), Ok(()));
        let long = format!("/{}", "a".repeat(128));
        assert_eq!(long.len(), 129);
        assert_eq!(validate_namespace(&long), Err(NameError::TooLong));
        // A 10 KB name is refused on length, before any character scan.
        let huge = format!("/{}", "\0".repeat(10_000));
        assert_eq!(validate_namespace(&huge), Err(NameError::TooLong));
        // Multi-byte: "/" + 63 × "é" (2 bytes each) + "a" = 128 bytes; "/" + 64 × "é" = 129 bytes.
        let edge = format!("/{}a", "é".repeat(63));
        assert_eq!(edge.len(), 128);
        assert_eq!(validate_namespace(&edge), Ok(()));
        let over = format!("/{}", "é".repeat(64));
        assert_eq!(over.len(), 129);
        assert_eq!(validate_namespace(&over), Err(NameError::TooLong));
    }

    #[test]
    fn room_rules() {
        assert_eq!(validate_room("lobby"), Ok(()));
        assert_eq!(validate_room("a::b"), Ok(()));
        assert_eq!(validate_room("no/leading/slash/needed"), Ok(()));
        assert_eq!(validate_room(" "), Ok(()));
        assert_eq!(validate_room("日本"), Ok(()));
        assert_eq!(validate_room(""), Err(NameError::Empty));
        assert_eq!(validate_room("\0"), Err(NameError::ControlCharacter));
        assert_eq!(validate_room("a\u{7f}b"), Err(NameError::ControlCharacter));
        assert_eq!(validate_room("a\tb"), Err(NameError::ControlCharacter));
        assert_eq!(validate_room(&"r".repeat(128)), Ok(()));
        assert_eq!(validate_room(&"r".repeat(129)), Err(NameError::TooLong));
        // 42 × "日" (3 bytes) + "ab" = 128 bytes; one more byte is too long.
        let edge = format!("{}ab", "日".repeat(42));
        assert_eq!(edge.len(), 128);
        assert_eq!(validate_room(&edge), Ok(()));
        let over = format!("{}abc", "日".repeat(42));
        assert_eq!(validate_room(&over), Err(NameError::TooLong));
        assert_eq!(validate_room(&"x".repeat(1 << 20)), Err(NameError::TooLong));
    }

    #[test]
    fn event_rules() {
        assert_eq!(validate_event("chat"), Ok(()));
        assert_eq!(validate_event("chat:message"), Ok(()));
        // Reserved names are matched exactly.
        assert_eq!(validate_event("Error"), Ok(()));
        assert_eq!(validate_event("errors"), Ok(()));
        assert_eq!(validate_event(" error"), Ok(()));
        assert_eq!(validate_event(""), Err(NameError::Empty));
        assert_eq!(validate_event("a\0"), Err(NameError::ControlCharacter));
        assert_eq!(validate_event("\u{7f}"), Err(NameError::ControlCharacter));
        assert_eq!(validate_event(&"e".repeat(128)), Ok(()));
        assert_eq!(validate_event(&"e".repeat(129)), Err(NameError::TooLong));
        let edge = format!("{}abcd", "🦀".repeat(31));
        assert_eq!(edge.len(), 128);
        assert_eq!(validate_event(&edge), Ok(()));
        let over = "🦀".repeat(33);
        assert_eq!(over.len(), 132);
        assert_eq!(validate_event(&over), Err(NameError::TooLong));
    }

    #[test]
    fn every_reserved_event_is_refused() {
        assert_eq!(
            RESERVED_EVENTS,
            &[
                "connect",
                "disconnect",
                "error",
                "ping",
                "pong",
                "join",
                "leave",
                "ack"
            ]
        );
        for name in RESERVED_EVENTS {
            assert_eq!(validate_event(name), Err(NameError::Reserved), "{name}");
            // Reserved names are fine as rooms, namespaces (with a slash) and ack ids.
            assert_eq!(validate_room(name), Ok(()));
            assert_eq!(validate_ack_id(name), Ok(()));
            assert_eq!(validate_namespace(&format!("/{name}")), Ok(()));
        }
        assert_eq!(validate_event("connect"), Err(NameError::Reserved));
        assert_eq!(validate_event("disconnect"), Err(NameError::Reserved));
        assert_eq!(validate_event("error"), Err(NameError::Reserved));
        assert_eq!(validate_event("ping"), Err(NameError::Reserved));
        assert_eq!(validate_event("pong"), Err(NameError::Reserved));
        assert_eq!(validate_event("join"), Err(NameError::Reserved));
        assert_eq!(validate_event("leave"), Err(NameError::Reserved));
        assert_eq!(validate_event("ack"), Err(NameError::Reserved));
    }

    #[test]
    fn ack_id_rules() {
        assert_eq!(validate_ack_id("client-ack-1"), Ok(()));
        assert_eq!(validate_ack_id("1"), Ok(()));
        assert_eq!(validate_ack_id(""), Err(NameError::Empty));
        assert_eq!(validate_ack_id("a\0"), Err(NameError::ControlCharacter));
        assert_eq!(validate_ack_id("\u{7f}"), Err(NameError::ControlCharacter));
        assert_eq!(validate_ack_id(&"1".repeat(128)), Ok(()));
        assert_eq!(validate_ack_id(&"1".repeat(129)), Err(NameError::TooLong));
        let edge = "ß".repeat(64);
        assert_eq!(edge.len(), 128);
        assert_eq!(validate_ack_id(&edge), Ok(()));
        let over = format!("{}a", "ß".repeat(64));
        assert_eq!(validate_ack_id(&over), Err(NameError::TooLong));
        assert_eq!(validate_ack_id(&"k".repeat(1024)), Err(NameError::TooLong));
    }

    #[test]
    fn truncate_short_strings_are_borrowed() {
        assert!(matches!(truncate_for_display(""), Cow::Borrowed("")));
        assert!(matches!(
            truncate_for_display("chat"),
            Cow::Borrowed("chat")
        ));
        let exact = "a".repeat(64);
        let out = truncate_for_display(&exact);
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(out, exact.as_str());
    }

    #[test]
    fn truncate_long_strings() {
        let s = "a".repeat(65);
        assert_eq!(truncate_for_display(&s), format!("{}…", "a".repeat(64)));
        let s = "b".repeat(1 << 20);
        assert_eq!(truncate_for_display(&s), format!("{}…", "b".repeat(64)));
    }

    #[test]
    fn truncate_on_char_boundary() {
        // 63 ASCII bytes + "é" (bytes 63..65): the cut at 64 falls inside "é", so it goes back to 63.
        let s = format!("{}é{}", "a".repeat(63), "z".repeat(10));
        assert_eq!(truncate_for_display(&s), format!("{}…", "a".repeat(63)));
        // "🦀" is 4 bytes: 16 crabs are exactly 64 bytes, the 17th is cut whole.
        let s = "🦀".repeat(17);
        assert_eq!(truncate_for_display(&s), format!("{}…", "🦀".repeat(16)));
        // 62 ASCII + "日" (bytes 62..65): back to 62.
        let s = format!("{}日x", "a".repeat(62));
        assert_eq!(truncate_for_display(&s), format!("{}…", "a".repeat(62)));
        // 65 bytes ending exactly after a multi-byte char at 64 keeps it whole.
        let s = format!("{}é!", "a".repeat(62));
        assert_eq!(s.len(), 65);
        assert_eq!(truncate_for_display(&s), format!("{}é…", "a".repeat(62)));
    }
}
