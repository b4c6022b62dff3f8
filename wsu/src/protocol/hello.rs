//! The `hello` frame: the first frame of every connection (PROTOCOL.md §3.1), telling the client
//! its connection id, its resume token (with recovery on) and how a resume it asked for went,
//! the protocol and server versions, and the server's limits.

use serde::Serialize;

use crate::SocketId;
use crate::config::Config;

/// The version of the wsu protocol extensions (`hello`); bumped when they change.
pub(crate) const PROTOCOL_VERSION: u32 = 2;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RateLimitInfo {
    per_second: f64,
    burst: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Limits {
    max_message_size: usize,
    ack_timeout_ms: u128,
    ping_interval_ms: u128,
    read_timeout_ms: u128,
    max_pending_acks: usize,
    max_pending_requests: usize,
    rate_limit: Option<RateLimitInfo>,
}

#[derive(Serialize)]
struct ResumeInfo<'a> {
    accepted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecoveryInfo {
    session_ttl_ms: u128,
    history_size: usize,
    history_ttl_ms: u128,
    max_replay: usize,
}

#[derive(Serialize)]
struct Data<'a> {
    protocol: u32,
    server: &'a str,
    sid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resume: Option<ResumeInfo<'a>>,
    limits: Limits,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery: Option<RecoveryInfo>,
}

#[derive(Serialize)]
struct Hello<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    namespace: &'a str,
    data: Data<'a>,
}

/// Encode the `hello` frame of connection `id`: with its resume `token`, and, when the
/// connection asked to resume, whether it did (`Err(reason)`: a fresh session).
pub(crate) fn encode(
    id: SocketId,
    config: &Config,
    token: Option<&str>,
    resume: Option<Result<(), &str>>,
) -> String {
    let hello = Hello {
        kind: "hello",
        namespace: "/",
        data: Data {
            protocol: PROTOCOL_VERSION,
            server: concat!("wsu/", env!("CARGO_PKG_VERSION")),
            sid: id.to_string(),
            token,
            resume: resume.map(|r| ResumeInfo {
                accepted: r.is_ok(),
                reason: r.err(),
            }),
            recovery: config.recovery.map(|r| RecoveryInfo {
                session_ttl_ms: r.session_ttl.as_millis(),
                history_size: r.history_size,
                history_ttl_ms: r.history_ttl.as_millis(),
                max_replay: r.max_replay,
            }),
            limits: Limits {
                max_message_size: config.max_message_size,
                ack_timeout_ms: config.ack_timeout.as_millis(),
                ping_interval_ms: config.ping_interval.as_millis(),
                read_timeout_ms: config.read_timeout.as_millis(),
                max_pending_acks: config.max_pending_acks,
                max_pending_requests: config.max_pending_requests,
                rate_limit: config.rate_limit.as_ref().map(|r| RateLimitInfo {
                    per_second: r.per_second,
                    burst: r.burst,
                }),
            },
        },
    };
    serde_json::to_string(&hello).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let id = SocketId::parse("0123456789abcdef").unwrap();
        let text = encode(id, &Config::default(), None, None);
        assert_eq!(
            text,
            concat!(
                r#"{"type":"hello","namespace":"/","data":{"protocol":2,"server":"wsu/"#,
                env!("CARGO_PKG_VERSION"),
                r#"","sid":"0123456789abcdef","limits":{"maxMessageSize":65536,"ackTimeoutMs":5000,"#,
                r#""pingIntervalMs":15000,"readTimeoutMs":30000,"maxPendingAcks":128,"#,
                r#""maxPendingRequests":64,"rateLimit":null}}}"#
            )
        );
    }

    #[test]
    fn shape_with_recovery() {
        let id = SocketId::parse("0123456789abcdef").unwrap();
        let config = Config {
            recovery: Some(crate::Recovery::default()),
            ..Config::default()
        };
        let text = encode(id, &config, Some("tok"), Some(Err("unknown session")));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["data"]["token"], "tok");
        assert_eq!(
            v["data"]["resume"],
            serde_json::json!({"accepted": false, "reason": "unknown session"})
        );
        assert_eq!(
            v["data"]["recovery"],
            serde_json::json!({"sessionTtlMs": 120000, "historySize": 10000, "historyTtlMs": 300000, "maxReplay": 10000})
        );
        let text = encode(id, &config, Some("tok"), Some(Ok(())));
        assert!(text.contains(r#""resume":{"accepted":true}"#), "{text}");
    }
}
