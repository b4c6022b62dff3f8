//! WebSocket close codes used by wsu.

use std::fmt;

/// A WebSocket close code (RFC 6455 §7.4) as sent or received by wsu.
///
/// wsu always sends a close frame with one of these codes and a short reason when it closes a
/// connection itself. Codes `4000..=4499` mean "something went wrong with this connection, the
/// client may reconnect"; codes `4500..=4999` mean "do not reconnect without changing something".
///
/// ```
/// use wsu::CloseCode;
/// assert_eq!(CloseCode::MESSAGE_TOO_BIG.as_u16(), 1009);
/// assert!(CloseCode::HEARTBEAT_TIMEOUT.should_reconnect());
/// assert!(!CloseCode::REFUSED.should_reconnect());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: normal closure (the application closed the connection, or the client did).
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is shutting down.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: WebSocket protocol violation (unmasked frame, reserved bits or opcodes, bad fragmentation).
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1005: no status code was present in the peer's close frame (received only).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection dropped without a close frame (received only, never sent).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a text frame was not valid UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: policy violation: too many invalid messages (refusals for rate never count).
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message was larger than the configured maximum message size.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: an internal error (a connect hook panicked or overran its deadline).
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1013: the server is overloaded; try again later.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 4000: nothing was received within the read timeout (heartbeat lost). Reconnect.
    pub const HEARTBEAT_TIMEOUT: CloseCode = CloseCode(4000);
    /// 4001: the client did not read fast enough and its outbound queue overflowed. Reconnect.
    pub const SLOW_CONSUMER: CloseCode = CloseCode(4001);
    /// 4002: a write did not complete within the write timeout. Reconnect.
    pub const WRITE_TIMEOUT: CloseCode = CloseCode(4002);
    /// 4003: another connection resumed this connection's session (with its resume token;
    /// recovery, PROTOCOL.md §13). Do not reconnect: the session lives on elsewhere.
    pub const SESSION_TAKEN: CloseCode = CloseCode(4003);
    /// 4500: the application refused the connection in its connect hook (for example, failed
    /// authentication). Do not reconnect with the same credentials.
    pub const REFUSED: CloseCode = CloseCode(4500);

    /// A close code from its number.
    pub const fn new(code: u16) -> CloseCode {
        CloseCode(code)
    }

    /// The numeric code.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether a client should reconnect after a close with this code.
    ///
    /// True for 1001, 1006, 1011, 1013 and `4000..=4499` except 4003
    /// ([`SESSION_TAKEN`](CloseCode::SESSION_TAKEN)); false otherwise.
    pub const fn should_reconnect(self) -> bool {
        matches!(self.0, 1001 | 1006 | 1011 | 1013 | 4000..=4002 | 4004..=4499)
    }

    /// A short lowercase name for the code, used in logs and statistics.
    pub const fn name(self) -> &'static str {
        match self.0 {
            1000 => "normal",
            1001 => "going away",
            1002 => "protocol error",
            1005 => "no status",
            1006 => "abnormal",
            1007 => "invalid payload",
            1008 => "policy violation",
            1009 => "message too big",
            1011 => "internal error",
            1013 => "try again later",
            4000 => "heartbeat timeout",
            4001 => "slow consumer",
            4002 => "write timeout",
            4003 => "session resumed elsewhere",
            4500 => "refused",
            _ => "other",
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_halves() {
        assert!(CloseCode::new(4000).should_reconnect());
        assert!(CloseCode::new(4499).should_reconnect());
        assert!(!CloseCode::new(4500).should_reconnect());
        assert!(!CloseCode::SESSION_TAKEN.should_reconnect());
        assert!(CloseCode::new(4004).should_reconnect());
        assert!(!CloseCode::NORMAL.should_reconnect());
        assert!(CloseCode::GOING_AWAY.should_reconnect());
        assert_eq!(CloseCode::SLOW_CONSUMER.to_string(), "4001 (slow consumer)");
    }
}
