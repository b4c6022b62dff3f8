//! The client's options, and the upgrade request built from them for every connection attempt.

use std::time::Duration;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Request};

use super::{ClientError, Reconnect};

/// Every option of a client, with its default.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The WebSocket URL (`ws://host:port/path?query`).
    pub(crate) url: String,
    /// Extra request headers, in order.
    pub(crate) headers: Vec<(String, String)>,
    /// Query parameters appended to the URL (percent-encoded), in order.
    pub(crate) query: Vec<(String, String)>,
    /// Default timeout of requests waiting for an answer. Default 5 s (the server's default).
    pub(crate) ack_timeout: Duration,
    /// Longest time from the TCP connect to the server accepting the connection. Default 10 s.
    pub(crate) connect_timeout: Duration,
    /// The reconnection policy; `None` disables reconnection.
    pub(crate) reconnect: Option<Reconnect>,
    /// Offline buffer capacity, in messages. Default 256.
    pub(crate) offline_buffer: usize,
    /// A WebSocket Ping is sent this often. Default 20 s.
    pub(crate) ping_interval: Duration,
    /// The connection is considered lost when nothing arrives for this long. Default 45 s.
    pub(crate) read_timeout: Duration,
    /// The TLS configuration of `wss://` connections: the one given to
    /// `ClientBuilder::tls_config`, else the default one, built by `connect`.
    #[cfg(any(feature = "client-tls", feature = "client-tls-native-roots"))]
    pub(crate) tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Config {
    pub(crate) fn new(url: String) -> Self {
        Config {
            url,
            headers: Vec::new(),
            query: Vec::new(),
            ack_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            reconnect: Some(Reconnect::default()),
            offline_buffer: 256,
            ping_interval: Duration::from_secs(20),
            read_timeout: Duration::from_secs(45),
            #[cfg(any(feature = "client-tls", feature = "client-tls-native-roots"))]
            tls: None,
        }
    }

    /// Whether the URL asks for TLS.
    pub(crate) fn is_wss(&self) -> bool {
        let scheme = self.url.split_once("://").map_or("", |(scheme, _)| scheme);
        scheme.eq_ignore_ascii_case("wss")
    }

    /// Checks the options, and that a request can be built.
    pub(crate) fn validate(&self) -> Result<(), ClientError> {
        let invalid = |option, reason| Err(ClientError::InvalidOption { option, reason });
        if self.ack_timeout.is_zero() {
            return invalid("ack_timeout", "must not be zero");
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must not be zero");
        }
        if self.ping_interval.is_zero() {
            return invalid("heartbeat", "the ping interval must not be zero");
        }
        if self.read_timeout <= self.ping_interval {
            return invalid(
                "heartbeat",
                "the read timeout must be longer than the ping interval",
            );
        }
        if self.is_wss()
            && !cfg!(any(
                feature = "client-tls",
                feature = "client-tls-native-roots"
            ))
        {
            return Err(ClientError::InvalidRequest(format!(
                "url `{}`: `wss://` needs the feature `client-tls` (or `client-tls-native-roots`)",
                self.url
            )));
        }
        self.request().map(|_| ())
    }

    /// The upgrade request: the URL with the query parameters appended, and the headers.
    pub(crate) fn request(&self) -> Result<Request<()>, ClientError> {
        self.request_with(&[])
    }

    /// [`request`](Config::request) with extra query parameters (the resume request): any
    /// parameter of the same name in the URL or the configured query is replaced.
    pub(crate) fn request_with(
        &self,
        extra: &[(String, String)],
    ) -> Result<Request<()>, ClientError> {
        let url = if extra.is_empty() {
            append_query(&self.url, &self.query)
        } else {
            let replaced = |key: &str| extra.iter().any(|(k, _)| k == key);
            let base = strip_params(&self.url, &replaced);
            let mut pairs: Vec<(String, String)> = self
                .query
                .iter()
                .filter(|(k, _)| !replaced(k))
                .cloned()
                .collect();
            pairs.extend_from_slice(extra);
            append_query(&base, &pairs)
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::InvalidRequest(format!("url `{}`: {e}", self.url)))?;
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ClientError::InvalidRequest(format!("header name `{name}`")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| ClientError::InvalidRequest(format!("value of header `{name}`")))?;
            request.headers_mut().append(name, value);
        }
        Ok(request)
    }
}

/// `url` with `key=value` pairs (percent-encoded) appended to its query, before any fragment.
fn append_query(url: &str, pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return url.to_owned();
    }
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let mut out = String::with_capacity(url.len() + 32);
    out.push_str(base);
    let mut separator = if !base.contains('?') {
        '?'
    } else if base.ends_with('?') || base.ends_with('&') {
        '\0'
    } else {
        '&'
    };
    for (key, value) in pairs {
        if separator != '\0' {
            out.push(separator);
        }
        separator = '&';
        percent_encode(key, &mut out);
        out.push('=');
        percent_encode(value, &mut out);
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// `url` without the query parameters whose (raw) name `drop` selects.
fn strip_params(url: &str, drop: &dyn Fn(&str) -> bool) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let Some((path, query)) = base.split_once('?') else {
        return url.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !drop(p.split_once('=').map_or(*p, |(k, _)| k)))
        .collect();
    let mut out = path.to_owned();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters (`encodeURIComponent`
/// without its `!'()*` exceptions): UTF-8 bytes as `%XX`.
fn percent_encode(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn query_is_appended_and_encoded() {
        let p = pairs(&[("token", "a b&c=d/é"), ("v", "1")]);
        assert_eq!(
            append_query("ws://h/ws", &p),
            "ws://h/ws?token=a%20b%26c%3Dd%2F%C3%A9&v=1"
        );
        assert_eq!(append_query("ws://h/ws?x=1", &p[1..]), "ws://h/ws?x=1&v=1");
        assert_eq!(append_query("ws://h/ws?", &p[1..]), "ws://h/ws?v=1");
        assert_eq!(append_query("ws://h/ws#f", &p[1..]), "ws://h/ws?v=1#f");
        assert_eq!(append_query("ws://h/ws", &[]), "ws://h/ws");
    }

    #[test]
    fn resume_params_replace_stale_ones() {
        let mut c = Config::new("ws://h/ws?a=1&wsu_resume=old&wsu_offsets=x".to_owned());
        c.query = pairs(&[("token", "t"), ("wsu_resume", "older")]);
        let extra = pairs(&[
            ("wsu_resume", "0123456789abcdef.Qm9n-_"),
            ("wsu_offsets", r#"{"/chat":{"epoch":"e","offset":3}}"#),
        ]);
        let r = c.request_with(&extra).unwrap();
        assert_eq!(
            r.uri().to_string(),
            "ws://h/ws?a=1&token=t&wsu_resume=0123456789abcdef.Qm9n-_\
             &wsu_offsets=%7B%22%2Fchat%22%3A%7B%22epoch%22%3A%22e%22%2C%22offset%22%3A3%7D%7D"
        );
        assert_eq!(
            strip_params("ws://h/ws?wsu_resume=1", &|k| k == "wsu_resume"),
            "ws://h/ws"
        );
        assert_eq!(strip_params("ws://h/ws", &|_| true), "ws://h/ws");
    }

    #[test]
    fn request_has_headers() {
        let mut c = Config::new("ws://127.0.0.1:1/ws".to_owned());
        c.headers = pairs(&[("x-api-key", "k1"), ("x-api-key", "k2")]);
        c.query = pairs(&[("token", "t")]);
        let r = c.request().unwrap();
        assert_eq!(r.uri().to_string(), "ws://127.0.0.1:1/ws?token=t");
        let keys: Vec<_> = r.headers().get_all("x-api-key").iter().collect();
        assert_eq!(keys, ["k1", "k2"]);
        c.headers = pairs(&[("bad name", "v")]);
        assert!(matches!(c.request(), Err(ClientError::InvalidRequest(_))));
        c.headers.clear();
        c.url = "not a url".to_owned();
        assert!(matches!(c.request(), Err(ClientError::InvalidRequest(_))));
    }

    #[test]
    fn options_are_checked() {
        let mut c = Config::new("ws://127.0.0.1:1/ws".to_owned());
        assert!(c.validate().is_ok());
        c.read_timeout = c.ping_interval;
        assert!(matches!(
            c.validate(),
            Err(ClientError::InvalidOption {
                option: "heartbeat",
                ..
            })
        ));
        c.read_timeout = Duration::from_secs(45);
        c.url = "WSS://example.com/ws".to_owned();
        assert!(c.is_wss());
        let tls = cfg!(any(
            feature = "client-tls",
            feature = "client-tls-native-roots"
        ));
        match c.validate() {
            Ok(()) => assert!(tls),
            Err(ClientError::InvalidRequest(reason)) => {
                assert!(!tls && reason.contains("feature `client-tls`"), "{reason}");
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
        c.url = "ws://example.com/wss".to_owned();
        assert!(!c.is_wss());
    }
}
