//! The `Origin` check made before every WebSocket upgrade (Cross-Site WebSocket Hijacking
//! protection).

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv6Addr;

use tokio_tungstenite::tungstenite::http::{self, header};

/// Which browser origins may open a WebSocket connection.
///
/// The policy is checked before the upgrade: a refused request gets `403 Forbidden` and no hook
/// runs. This protects against Cross-Site WebSocket Hijacking: a browser lets any page open a
/// WebSocket to any server and sends the user's cookies along, but it always sends the page's
/// `Origin` header too, and a page cannot forge it. Checking `Origin` against the origins you
/// trust stops a hostile page from opening a connection in the user's name.
///
/// Three policies:
/// - [`OriginPolicy::same_origin`] (the [`Default`]): a browser request is allowed when its
///   `Origin` names the same host and port as the request's `Host` header (host names compared
///   case-insensitively, default ports filled in from the origin's scheme: 80 for `http`/`ws`,
///   443 for `https`/`wss`). The scheme itself is not compared, since behind a TLS-terminating
///   proxy the server cannot know which one the browser used; use an allow-list to pin it. A
///   proxy that rewrites `Host` makes every browser request cross-origin: use an allow-list then.
/// - [`OriginPolicy::allow_list`]: exactly the listed origins, compared after normalisation
///   (scheme and host lower-cased, default port removed, a trailing `/` ignored). `https://app.example`
///   admits `HTTPS://APP.EXAMPLE` and `https://app.example:443`, but not
///   `https://app.example.evil.com`, `http://app.example` or `https://app.example:8443`.
///   An empty list admits no browser at all.
/// - [`OriginPolicy::any`]: every origin. Unsafe as soon as connections are authenticated with
///   cookies (or anything else the browser adds by itself, such as HTTP auth or client
///   certificates).
///
/// Whichever the policy, `Origin: null` (sent by sandboxed iframes, `file:` pages and some
/// redirects) and unparsable origins are refused except by [`OriginPolicy::any`].
///
/// Requests without an `Origin` header come from non-browser clients (command-line tools, native
/// apps, servers; the seed's Go client sends none). They are allowed by default; refuse them with
/// [`OriginPolicy::allow_missing`]`(false)` when only browsers should connect. Non-browser
/// clients can send any `Origin` they like, so this check is no authentication: it only stops
/// browsers from being used against their own users.
///
/// # Example
///
/// ```
/// use wsu::OriginPolicy;
///
/// // Only the app's own site may connect, and only from a browser.
/// let policy = OriginPolicy::allow_list(["https://app.example"])?.allow_missing(false);
/// assert!(policy.allows(Some("https://app.example"), Some("app.example")));
/// assert!(policy.allows(Some("HTTPS://App.Example:443"), Some("app.example")));
/// assert!(!policy.allows(Some("https://evil.example"), Some("app.example")));
/// assert!(!policy.allows(Some("https://app.example.evil.com"), Some("app.example")));
/// assert!(!policy.allows(Some("null"), Some("app.example")));
/// assert!(!policy.allows(None, Some("app.example")));
///
/// // The default: pages served by this same host and port, and any non-browser client.
/// let policy = OriginPolicy::default();
/// assert!(policy.allows(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
/// assert!(!policy.allows(Some("http://localhost:8080"), Some("127.0.0.1:8080")));
/// assert!(policy.allows(None, Some("127.0.0.1:8080")));
///
/// // A typo in the list is an error, not a silently useless entry.
/// let err = OriginPolicy::allow_list(["app.example"]).unwrap_err();
/// assert_eq!(err.to_string(), "invalid origin `app.example`");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPolicy {
    /// Which `Origin` values are allowed.
    mode: Mode,
    /// Whether a request without an `Origin` header is allowed.
    allow_missing: bool,
}

/// The rule applied to requests that carry an `Origin` header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// The origin's host and effective port equal the `Host` header's.
    SameOrigin,
    /// Every origin, even unparsable ones.
    Any,
    /// Exactly these normalised origins.
    List(BTreeSet<String>),
}

impl OriginPolicy {
    /// Only same-origin browser requests (the `Origin` host and port equal the request's `Host`
    /// header's, after normalisation), and requests without an `Origin` header (non-browser
    /// clients). This is the default.
    pub fn same_origin() -> Self {
        Self {
            mode: Mode::SameOrigin,
            allow_missing: true,
        }
    }

    /// Any origin, and requests without one. This was the seed's behaviour when its origin list
    /// was empty; it is unsafe when connections are authenticated with cookies.
    pub fn any() -> Self {
        Self {
            mode: Mode::Any,
            allow_missing: true,
        }
    }

    /// Exactly these origins (`scheme://host[:port]`), plus requests without an `Origin` header
    /// unless [`OriginPolicy::allow_missing`]`(false)` is added.
    ///
    /// Each entry is normalised: scheme and host lower-cased, the default port of `http`, `ws`
    /// (80), `https` and `wss` (443) removed, one trailing `/` ignored, IPv6 hosts kept in
    /// brackets. An entry with a path, query, fragment or user info, without a scheme, or equal
    /// to `null` is refused with [`InvalidOrigin`] naming it. An empty list admits no browser.
    pub fn allow_list<I, S>(origins: I) -> Result<Self, InvalidOrigin>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = BTreeSet::new();
        for origin in origins {
            let origin = origin.as_ref();
            let normalised =
                normalize_origin(origin).ok_or_else(|| InvalidOrigin(origin.to_owned()))?;
            list.insert(normalised);
        }
        Ok(Self {
            mode: Mode::List(list),
            allow_missing: true,
        })
    }

    /// Whether requests without an `Origin` header are allowed (default `true`: non-browser
    /// clients such as the seed's Go client send none). `false` refuses them with 403, as the
    /// seed did when it had an origin list.
    #[must_use]
    pub fn allow_missing(mut self, allow: bool) -> Self {
        self.allow_missing = allow;
        self
    }

    /// Decide for one request, given its `Origin` header and its `Host` header (or the authority
    /// of an absolute request target). Pass `Some` whenever an `Origin` header is present, even an
    /// empty one: only `None` counts as "no `Origin`".
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return self.allow_missing;
        };
        match &self.mode {
            Mode::Any => true,
            Mode::List(list) => normalize_origin(origin).is_some_and(|o| list.contains(&o)),
            Mode::SameOrigin => host.is_some_and(|host| is_same_origin(origin, host)),
        }
    }

    /// Decide for a parsed request head: reads `Origin` and the host (the authority of an
    /// absolute request target, else the `Host` header) and calls [`OriginPolicy::allows`].
    ///
    /// Several `Origin` headers, or one that is not UTF-8, count as an unparsable origin (refused
    /// unless the policy is [`OriginPolicy::any`]); several `Host` headers count as none.
    pub(crate) fn allows_request(&self, parts: &http::request::Parts) -> bool {
        let mut origins = parts.headers.get_all(header::ORIGIN).iter();
        let origin = match (origins.next(), origins.next()) {
            (None, _) => None,
            (Some(value), None) => Some(value.to_str().unwrap_or("")),
            (Some(_), Some(_)) => Some(""),
        };
        let host = match parts.uri.authority() {
            Some(authority) => Some(authority.as_str()),
            None => {
                let mut hosts = parts.headers.get_all(header::HOST).iter();
                match (hosts.next(), hosts.next()) {
                    (Some(value), None) => value.to_str().ok(),
                    _ => None,
                }
            }
        };
        self.allows(origin, host)
    }
}

impl Default for OriginPolicy {
    /// [`OriginPolicy::same_origin`].
    fn default() -> Self {
        Self::same_origin()
    }
}

/// An origin given to [`OriginPolicy::allow_list`] that could not be parsed as
/// `scheme://host[:port]`. [`InvalidOrigin::origin`] returns it as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOrigin(String);

impl InvalidOrigin {
    /// The offending entry, exactly as it was given.
    pub fn origin(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InvalidOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid origin `{}`", self.0)
    }
}

impl std::error::Error for InvalidOrigin {}

/// A parsed origin: lower-case scheme and host, explicit port (`None` when absent or default).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    /// Lower-case scheme, e.g. `https`.
    scheme: String,
    /// Lower-case host name, IPv4 address, or bracketed IPv6 address (RFC 5952 form).
    host: String,
    /// The port when given and not the scheme's default.
    port: Option<u16>,
}

impl Origin {
    /// Parse `scheme://host[:port]` with at most one trailing `/`. `null` and anything else that
    /// is not an origin give `None`.
    fn parse(s: &str) -> Option<Self> {
        let s = s.trim_ascii();
        let (scheme, rest) = s.split_once("://")?;
        let mut scheme_chars = scheme.chars();
        let first_is_alpha = scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if !first_is_alpha
            || !scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return None;
        }
        let scheme = scheme.to_ascii_lowercase();
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = parse_authority(authority)?;
        let port = port.filter(|p| Some(*p) != default_port(&scheme));
        Some(Self { scheme, host, port })
    }

    /// The port a connection to this origin uses: the explicit one, else the scheme's default
    /// (`None` for schemes without a known default).
    fn effective_port(&self) -> Option<u16> {
        self.port.or_else(|| default_port(&self.scheme))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

/// The default port of `scheme` (lower-case), for the four schemes that have one here.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Parse `host[:port]` as found in an origin or a `Host` header: a host name or IPv4 address
/// (characters `A-Z a-z 0-9 - . _ ~`, lower-cased) or a bracketed IPv6 address (re-serialised in
/// RFC 5952 form), then an optional port of 1 to 5 digits up to 65535.
fn parse_authority(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(inner_and_rest) = s.strip_prefix('[') {
        let (inner, rest) = inner_and_rest.split_once(']')?;
        let addr: Ipv6Addr = inner.parse().ok()?;
        let port = match rest {
            "" => None,
            _ => Some(rest.strip_prefix(':')?),
        };
        (format!("[{addr}]"), port)
    } else {
        let (host, port) = match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        };
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~'));
        if !valid_host {
            return None;
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(digits) => Some(parse_port(digits)?),
    };
    Some((host, port))
}

/// Parse a port: 1 to 5 ASCII digits, at most 65535.
fn parse_port(digits: &str) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `origin` names the same host and effective port as the `host` header, the origin's
/// scheme supplying the default port for both.
fn is_same_origin(origin: &str, host: &str) -> bool {
    let Some(origin) = Origin::parse(origin) else {
        return false;
    };
    let Some((host, port)) = parse_authority(host.trim_ascii()) else {
        return false;
    };
    origin.host == host && origin.effective_port() == port.or_else(|| default_port(&origin.scheme))
}

/// Normalise an origin: `scheme://host[:port]` with scheme and host lower-cased, the default port
/// (http 80, https 443, ws 80, wss 443) removed, no path, query, fragment or user info (a
/// trailing `/` alone is tolerated), IPv6 hosts kept in brackets (in RFC 5952 form); `null` and
/// anything unparsable give `None`. Any scheme made of `[a-z0-9+.-]` (starting with a letter) is
/// accepted, but default ports are only known for the four above.
pub(crate) fn normalize_origin(s: &str) -> Option<String> {
    Origin::parse(s).map(|o| o.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(origins: &[&str]) -> OriginPolicy {
        OriginPolicy::allow_list(origins).expect("valid list")
    }

    fn parts(headers: &[(&str, &[u8])], uri: &str) -> http::request::Parts {
        let mut builder = http::Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let (parts, ()) = builder.body(()).expect("request").into_parts();
        parts
    }

    #[test]
    fn normalize_origin_cases() {
        let cases: [(&str, Option<&str>); 30] = [
            ("https://app.example", Some("https://app.example")),
            ("HTTPS://APP.EXAMPLE", Some("https://app.example")),
            ("https://app.example:443", Some("https://app.example")),
            ("https://app.example/", Some("https://app.example")),
            ("https://app.example:8443", Some("https://app.example:8443")),
            ("https://app.example:80", Some("https://app.example:80")),
            ("http://app.example:80", Some("http://app.example")),
            ("http://app.example:443", Some("http://app.example:443")),
            ("ws://a:80", Some("ws://a")),
            ("wss://a:443/", Some("wss://a")),
            ("http://127.0.0.1:8080", Some("http://127.0.0.1:8080")),
            ("http://[::1]:8080", Some("http://[::1]:8080")),
            ("http://[0:0:0:0:0:0:0:1]", Some("http://[::1]")),
            ("http://[2001:DB8::1]:80", Some("http://[2001:db8::1]")),
            ("app+x.y-z://Host:1", Some("app+x.y-z://host:1")),
            (
                "chrome-extension://abcdef",
                Some("chrome-extension://abcdef"),
            ),
            ("  https://app.example  ", Some("https://app.example")),
            ("null", None),
            ("", None),
            ("app.example", None),
            ("https://", None),
            ("https://app.example//", None),
            ("https://app.example/path", None),
            ("https://app.example?q", None),
            ("https://app.example#f", None),
            ("https://user@app.example", None),
            ("https://app.example:", None),
            ("https://app.example:65536", None),
            ("1http://a", None),
            ("https://[::1", None),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_origin(input).as_deref(), expected, "{input:?}");
        }
        for bad in [
            "https://app.example:8443:1",
            "https://app example",
            "https://app.example:-1",
            "https://[not-ip]",
            "https://[::1]x",
            "https://[::1]:",
            "https://app.éxample",
            "ht tp://a",
            "https://a\nb",
        ] {
            assert_eq!(normalize_origin(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn allow_list_refuses_other_origins_and_look_alikes() {
        let policy = list(&["https://app.example"]);
        let host = Some("app.example");
        for refused in [
            "https://evil.example",
            "https://app.example.evil.com",
            "https://evil.com/app.example",
            "http://app.example",
            "wss://app.example",
            "https://app.example:8443",
            "https://sub.app.example",
            "null",
            "",
            "garbage",
        ] {
            assert!(!policy.allows(Some(refused), host), "{refused:?}");
        }
        for allowed in [
            "https://app.example",
            "HTTPS://APP.EXAMPLE",
            "https://app.example:443",
            "https://app.example/",
        ] {
            assert!(policy.allows(Some(allowed), host), "{allowed:?}");
        }
        // The Host header plays no part in an allow-list decision.
        assert!(policy.allows(Some("https://app.example"), None));
        assert!(policy.allows(Some("https://app.example"), Some("other.example")));
    }

    #[test]
    fn allow_list_entries_are_normalised() {
        let policy = list(&["HTTPS://App.Example:443/", "http://localhost:3000"]);
        assert!(policy.allows(Some("https://app.example"), None));
        assert!(policy.allows(Some("http://LOCALHOST:3000"), None));
        assert!(!policy.allows(Some("http://localhost"), None));
        assert_eq!(
            policy,
            list(&[
                "http://localhost:3000",
                "https://app.example",
                "https://app.example"
            ])
        );
    }

    #[test]
    fn allow_list_rejects_invalid_entries() {
        let err = OriginPolicy::allow_list(["https://ok.example", "https://bad.example/path"])
            .expect_err("invalid");
        assert_eq!(err, InvalidOrigin("https://bad.example/path".to_owned()));
        assert_eq!(err.origin(), "https://bad.example/path");
        assert_eq!(err.to_string(), "invalid origin `https://bad.example/path`");
        let err = OriginPolicy::allow_list(vec!["null".to_owned()]).expect_err("null");
        assert_eq!(err.to_string(), "invalid origin `null`");
        let err = OriginPolicy::allow_list([String::new()]).expect_err("empty");
        assert_eq!(err.to_string(), "invalid origin ``");
    }

    #[test]
    fn empty_allow_list_refuses_every_browser() {
        let policy = OriginPolicy::allow_list(Vec::<String>::new()).expect("empty list");
        assert!(!policy.allows(Some("https://app.example"), Some("app.example")));
        assert!(policy.allows(None, Some("app.example")));
    }

    #[test]
    fn missing_origin_policy() {
        for policy in [
            OriginPolicy::same_origin(),
            OriginPolicy::any(),
            list(&["https://app.example"]),
        ] {
            assert!(policy.allows(None, Some("app.example")));
            assert!(policy.allows(None, None));
            let strict = policy.allow_missing(false);
            assert!(!strict.allows(None, Some("app.example")));
            assert!(!strict.allows(None, None));
            assert!(strict.clone().allow_missing(true).allows(None, None));
        }
    }

    #[test]
    fn same_origin_compares_host_and_effective_port() {
        let policy = OriginPolicy::same_origin();
        let cases: [(&str, Option<&str>, bool); 19] = [
            ("http://127.0.0.1:8080", Some("127.0.0.1:8080"), true),
            ("http://127.0.0.1:8080", Some("localhost:8080"), false),
            ("http://localhost:8080", Some("127.0.0.1:8080"), false),
            ("http://127.0.0.1:8080", Some("127.0.0.1:8081"), false),
            ("http://127.0.0.1:8080", Some("127.0.0.1"), false),
            ("http://x", Some("x:80"), true),
            ("http://x:80", Some("x"), true),
            ("http://x", Some("x"), true),
            ("https://x", Some("x"), true),
            ("https://x", Some("x:443"), true),
            ("https://x", Some("x:80"), false),
            ("http://x", Some("x:443"), false),
            ("HTTP://App.Example", Some("APP.example"), true),
            ("http://[::1]:8080", Some("[0::1]:8080"), true),
            ("http://[::1]:8080", Some("[::2]:8080"), false),
            ("http://app.example.evil.com", Some("app.example"), false),
            ("null", Some("app.example"), false),
            ("http://x", None, false),
            ("http://x", Some("x/path"), false),
        ];
        for (origin, host, expected) in cases {
            assert_eq!(
                policy.allows(Some(origin), host),
                expected,
                "{origin:?} {host:?}"
            );
        }
        assert_eq!(OriginPolicy::default(), policy);
    }

    #[test]
    fn any_allows_everything() {
        let policy = OriginPolicy::any();
        for origin in ["https://evil.example", "null", "", "garbage"] {
            assert!(
                policy.allows(Some(origin), Some("app.example")),
                "{origin:?}"
            );
        }
    }

    #[test]
    fn allows_request_reads_the_headers() {
        let policy = OriginPolicy::same_origin();
        let same = parts(&[("host", b"a:1"), ("origin", b"http://a:1")], "/ws");
        assert!(policy.allows_request(&same));
        let cross = parts(&[("host", b"a:1"), ("origin", b"http://b:1")], "/ws");
        assert!(!policy.allows_request(&cross));
        let missing = parts(&[("host", b"a:1")], "/ws");
        assert!(policy.allows_request(&missing));
        assert!(!policy.clone().allow_missing(false).allows_request(&missing));
        let empty = parts(&[("host", b"a:1"), ("origin", b"")], "/ws");
        assert!(!policy.allows_request(&empty));
        let not_utf8 = parts(&[("host", b"a:1"), ("origin", b"http://a:1\xff")], "/ws");
        assert!(!policy.allows_request(&not_utf8));
        assert!(OriginPolicy::any().allows_request(&not_utf8));
        let twice = parts(
            &[
                ("host", b"a:1"),
                ("origin", b"http://a:1"),
                ("origin", b"http://a:1"),
            ],
            "/ws",
        );
        assert!(!policy.allows_request(&twice));
        let two_hosts = parts(
            &[
                ("host", b"a:1"),
                ("host", b"a:1"),
                ("origin", b"http://a:1"),
            ],
            "/ws",
        );
        assert!(!policy.allows_request(&two_hosts));
        // An absolute request target's authority wins over the Host header.
        let absolute = parts(
            &[("host", b"b:1"), ("origin", b"http://a:1")],
            "http://a:1/ws",
        );
        assert!(policy.allows_request(&absolute));
        let list = list(&["https://app.example"]);
        let listed = parts(&[("origin", b"https://APP.example:443")], "/ws");
        assert!(list.allows_request(&listed));
    }
}
