//! The `hello` frame: the first frame of every connection (PROTOCOL.md §3.1), telling the client
//! its connection id, the protocol and server versions, and the server's limits.

use serde::Serialize;

use crate::SocketId;
use crate::config::Config;

/// The version of the wsu protocol extensions (`hello`); bumped when they change.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

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
struct Data<'a> {
    protocol: u32,
    server: &'a str,
    sid: String,
    limits: Limits,
}

#[derive(Serialize)]
struct Hello<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    namespace: &'a str,
    data: Data<'a>,
}

/// Encode the `hello` frame of connection `id`.
pub(crate) fn encode(id: SocketId, config: &Config) -> String {
    let hello = Hello {
        kind: "hello",
        namespace: "/",
        data: Data {
            protocol: PROTOCOL_VERSION,
            server: concat!("wsu/", env!("CARGO_PKG_VERSION")),
            sid: id.to_string(),
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
        let text = encode(id, &Config::default());
        assert_eq!(
            text,
            concat!(
                r#"{"type":"hello","namespace":"/","data":{"protocol":1,"server":"wsu/"#,
                env!("CARGO_PKG_VERSION"),
                r#"","sid":"0123456789abcdef","limits":{"maxMessageSize":65536,"ackTimeoutMs":5000,"#,
                r#""pingIntervalMs":15000,"readTimeoutMs":30000,"maxPendingAcks":128,"#,
                r#""maxPendingRequests":64,"rateLimit":null}}}"#
            )
        );
    }
}
