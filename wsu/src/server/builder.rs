//! Building a server: options, handlers, hooks, namespaces.

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

use super::{Asset, Inner, NamespaceFilter, Server};
use crate::config::{Config, RateLimit, RateLimitPolicy, SlowConsumerPolicy};
use crate::handler::{ErasedHandler, IntoAck, TypedHandler};
use crate::hooks::{self, ConnectHook, ConnectOutcome, DisconnectHook, DisconnectReason};
use crate::id::IdGenerator;
use crate::protocol::names;
use crate::registry::{HandlerEntry, Namespace};
use crate::stats::Counters;
use crate::{BuildError, OriginPolicy, Socket};

/// Handlers and hooks of one namespace, configured inside
/// [`ServerBuilder::namespace`].
///
/// ```
/// use wsu::{Json, Server, Socket};
/// let server = Server::builder()
///     .namespace("/admin", |ns| {
///         ns.on_connect(|socket: Socket| async move {
///             match socket.query("token") {
///                 Some("secret") => Ok(()),
///                 _ => Err("bad token"),
///             }
///         })
///         .on("kick", |_socket: Socket, id: String| async move { Json(id) })
///     })
///     .build()
///     .unwrap();
/// # let _ = server;
/// ```
pub struct NamespaceBuilder {
    name: String,
    handlers: Vec<(String, HandlerEntry)>,
    on_connect: Option<ConnectHook>,
    on_disconnect: Option<DisconnectHook>,
}

impl NamespaceBuilder {
    fn new(name: &str) -> Self {
        NamespaceBuilder {
            name: name.to_owned(),
            handlers: Vec::new(),
            on_connect: None,
            on_disconnect: None,
        }
    }

    /// Register a handler for `event` in this namespace (the seed's `Namespace(..).On`).
    ///
    /// The handler receives the connection (scoped to this namespace) and the payload decoded
    /// from the message's `data` as `T` (a missing `data` decodes from `null`); its return value
    /// is the ack (see [`IntoAck`]). A payload that does not decode is answered with an `error`
    /// (`invalid payload: ...`) and the handler is not called.
    pub fn on<T, F, Fut, R>(mut self, event: &str, handler: F) -> Self
    where
        F: Fn(Socket, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoAck,
        T: DeserializeOwned + Send + 'static,
    {
        let entry = HandlerEntry {
            handler: Arc::new(TypedHandler::new(handler)),
            location: None,
            ack_type: Some(std::any::type_name::<R>()),
        };
        self.handlers.push((event.to_owned(), entry));
        self
    }

    /// Register a type-erased handler with its registration site (used by `#[ws_event]`).
    #[doc(hidden)]
    pub fn on_erased(
        mut self,
        event: &str,
        handler: Arc<dyn ErasedHandler>,
        location: Option<String>,
        ack_type: Option<&'static str>,
    ) -> Self {
        self.handlers.push((
            event.to_owned(),
            HandlerEntry {
                handler,
                location,
                ack_type,
            },
        ));
        self
    }

    /// Run when a connection joins this namespace (for `/`: when it connects). Return `()` to
    /// accept or `Err(reason)` to refuse: a refused join is answered with an `error`
    /// (`join refused: reason`); refusing `/` closes the connection with 4500.
    pub fn on_connect<F, Fut, R>(mut self, hook: F) -> Self
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: ConnectOutcome,
    {
        self.on_connect = Some(hooks::connect_hook(hook));
        self
    }

    /// Run when a connection leaves this namespace, or disconnects while in it.
    pub fn on_disconnect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Socket, DisconnectReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_disconnect = Some(hooks::disconnect_hook(hook));
        self
    }
}

/// Options, handlers and hooks of a [`Server`]; see [`Server::builder`].
///
/// Every option has a default taken from the seed where it had one (write timeout 10 s, read
/// timeout 30 s, ack timeout 5 s, ping every 15 s) and a bound everywhere else; see
/// [`Config`] for each default.
///
/// ```
/// use std::time::Duration;
/// use wsu::{Server, Socket, SlowConsumerPolicy};
///
/// let server = Server::builder()
///     .allowed_origins(["https://chat.example"])        // WithOrigins
///     .buffer_sizes(4096, 32 * 1024)                    // WithBufferSize
///     .timeouts(Duration::from_secs(30), Duration::from_secs(10)) // WithTimeout
///     .ping_interval(Duration::from_secs(15))           // WithPingInterval
///     .on_connect(|socket: Socket| async move {         // WithHooks
///         println!("{} connected", socket.id());
///     })
///     .slow_consumer(SlowConsumerPolicy::Disconnect)
///     .build()
///     .unwrap();
/// # let _ = server;
/// ```
pub struct ServerBuilder {
    config: Config,
    namespaces: Vec<NamespaceBuilder>,
    allow_namespace: Option<NamespaceFilter>,
    on_connect: Option<ConnectHook>,
    on_disconnect: Option<DisconnectHook>,
    state: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    assets: HashMap<String, Asset>,
    errors: Vec<BuildError>,
    collect_registered: bool,
    explicit: Vec<(TypeId, &'static str)>,
    engine: Option<Arc<dyn crate::cluster::Engine>>,
    cluster: crate::cluster::ClusterConfig,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerBuilder {
    /// A builder with the default configuration and only the namespace `/`.
    pub fn new() -> Self {
        ServerBuilder {
            config: Config::default(),
            namespaces: vec![NamespaceBuilder::new("/")],
            allow_namespace: None,
            on_connect: None,
            on_disconnect: None,
            state: HashMap::new(),
            assets: HashMap::new(),
            errors: Vec::new(),
            collect_registered: true,
            explicit: Vec::new(),
            engine: None,
            cluster: crate::cluster::ClusterConfig::default(),
        }
    }

    /// Whether [`build`](Self::build) includes every `#[ws_event]`, `#[ws_connect]` and
    /// `#[ws_disconnect]` function linked into the program (default `true`). Turn it off to
    /// build a server from chosen functions only, with [`handler`](Self::handler) (tests,
    /// libraries, several servers in one process).
    ///
    /// Functions in a crate that the final binary never references are not linked, and so not
    /// registered: reference such a crate with `use handlers_crate as _;`.
    pub fn collect_registered(mut self, collect: bool) -> Self {
        self.collect_registered = collect;
        self
    }

    /// Register one `#[ws_event]`, `#[ws_connect]` or `#[ws_disconnect]` function explicitly,
    /// by naming it. Registering a function that is also collected automatically is not a
    /// duplicate.
    ///
    /// ```standalone_crate
    /// use wsu::{Server, ws_event};
    ///
    /// #[ws_event(name = "echo")]
    /// async fn echo(text: String) -> String {
    ///     text
    /// }
    ///
    /// let server = Server::builder().collect_registered(false).handler(echo).build().unwrap();
    /// assert_eq!(server.events()[0].event, "echo");
    /// ```
    ///
    /// # Errors
    /// [`build`](Self::build) fails with [`BuildError::NotRegistered`] if `f` is not an
    /// annotated function.
    pub fn handler<F: 'static>(mut self, f: F) -> Self {
        self.explicit.push((
            crate::registration::type_id_of(&f),
            std::any::type_name::<F>(),
        ));
        self
    }

    /// Apply the registrations chosen for this server.
    fn apply_registrations(&mut self) -> Result<(), BuildError> {
        use crate::registration::{self, Kind, Registration};
        let all: Vec<&'static Registration> = registration::all().collect();
        let mut chosen: Vec<&'static Registration> = if self.collect_registered {
            all.clone()
        } else {
            Vec::new()
        };
        for (id, name) in std::mem::take(&mut self.explicit) {
            let found: Vec<&'static Registration> = all
                .iter()
                .copied()
                .filter(|r| (r.fn_type)() == id)
                .collect();
            if found.is_empty() {
                return Err(BuildError::NotRegistered {
                    name: name.to_owned(),
                });
            }
            for r in found {
                if !chosen.iter().any(|c| std::ptr::eq(*c, r)) {
                    chosen.push(r);
                }
            }
        }
        // Deterministic order: by source location.
        chosen.sort_by(|a, b| (a.file, a.line).cmp(&(b.file, b.line)));
        for r in chosen {
            for state in r.states {
                let (id, state_name) = state();
                if !self.state.contains_key(&id) {
                    return Err(BuildError::MissingState {
                        handler: (r.fn_name)().to_owned(),
                        state: state_name.to_owned(),
                    });
                }
            }
            let location = r.location();
            let ns = self.ns_mut(r.namespace);
            match r.kind {
                Kind::Event {
                    event,
                    call,
                    payload_type,
                    ack_type,
                } => {
                    let handler = Arc::new(registration::FnHandler { call, payload_type });
                    ns.handlers.push((
                        event.to_owned(),
                        HandlerEntry {
                            handler,
                            location: Some(location),
                            ack_type: Some(ack_type()),
                        },
                    ));
                }
                Kind::Connect(call) => {
                    if ns.on_connect.is_some() {
                        return Err(BuildError::DuplicateHook {
                            namespace: r.namespace.to_owned(),
                            hook: "connect",
                            location,
                        });
                    }
                    ns.on_connect = Some(Arc::new(call));
                }
                Kind::Disconnect(call) => {
                    if ns.on_disconnect.is_some() {
                        return Err(BuildError::DuplicateHook {
                            namespace: r.namespace.to_owned(),
                            hook: "disconnect",
                            location,
                        });
                    }
                    ns.on_disconnect = Some(Arc::new(call));
                }
            }
        }
        Ok(())
    }

    fn ns_mut(&mut self, name: &str) -> &mut NamespaceBuilder {
        let idx = match self.namespaces.iter().position(|n| n.name == name) {
            Some(i) => i,
            None => {
                self.namespaces.push(NamespaceBuilder::new(name));
                self.namespaces.len() - 1
            }
        };
        &mut self.namespaces[idx]
    }

    /// Register a handler for `event` in the default namespace `/` (the seed's `On`). See
    /// [`NamespaceBuilder::on`].
    pub fn on<T, F, Fut, R>(self, event: &str, handler: F) -> Self
    where
        F: Fn(Socket, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoAck,
        T: DeserializeOwned + Send + 'static,
    {
        self.namespace("/", |ns| ns.on(event, handler))
    }

    /// Declare a namespace and configure its handlers and hooks (the seed's `Namespace`).
    /// Clients may join declared namespaces; calling this again for the same name adds to it.
    pub fn namespace(
        mut self,
        name: &str,
        configure: impl FnOnce(NamespaceBuilder) -> NamespaceBuilder,
    ) -> Self {
        let idx = {
            self.ns_mut(name);
            self.namespaces
                .iter()
                .position(|n| n.name == name)
                .unwrap_or(0)
        };
        let ns = std::mem::replace(&mut self.namespaces[idx], NamespaceBuilder::new(name));
        self.namespaces[idx] = configure(ns);
        self
    }

    /// Register a type-erased handler (used by `#[ws_event]`).
    #[doc(hidden)]
    pub fn on_erased(
        self,
        namespace: &str,
        event: &str,
        handler: Arc<dyn ErasedHandler>,
        location: Option<String>,
        ack_type: Option<&'static str>,
    ) -> Self {
        self.namespace(namespace, |ns| {
            ns.on_erased(event, handler, location, ack_type)
        })
    }

    /// Let clients join namespaces that were not declared, when `allow(name)` is true. Such
    /// namespaces have no handlers (use them for broadcasts); they are created on the first join
    /// and removed when their last member leaves.
    pub fn allow_namespaces(
        mut self,
        allow: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.allow_namespace = Some(Arc::new(allow));
        self
    }

    /// Run once per connection, after the upgrade and before any of its messages is handled
    /// (the connect half of the seed's `WithHooks`). The hook can emit to the client and await
    /// its acks, read the upgrade request with [`Socket::request`], and refuse the connection
    /// by returning `Err(reason)`: the client is then closed with 4500 and the reason.
    pub fn on_connect<F, Fut, R>(mut self, hook: F) -> Self
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: ConnectOutcome,
    {
        self.on_connect = Some(hooks::connect_hook(hook));
        self
    }

    /// Run once per connection when it ends, with the reason (the close half of the seed's
    /// `WithHooks`), within the [hook deadline](ServerBuilder::hook_timeout); a panic in it is
    /// contained and counted. The one exception: connections still open at the very end of the
    /// [shutdown grace period](ServerBuilder::shutdown_timeout) are dropped, and a disconnect hook
    /// running then is cancelled (one not yet started does not run).
    pub fn on_disconnect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Socket, DisconnectReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_disconnect = Some(hooks::disconnect_hook(hook));
        self
    }

    /// Set the Origin policy (see [`OriginPolicy`]).
    pub fn origins(mut self, policy: OriginPolicy) -> Self {
        self.config.origins = policy;
        self
    }

    /// Allow exactly these origins (the seed's `WithOrigins`). Requests without `Origin` stay
    /// allowed (non-browser clients); use [`origins`](Self::origins) with
    /// [`OriginPolicy::allow_missing`] to refuse them.
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        match OriginPolicy::allow_list(origins) {
            Ok(p) => self.config.origins = p,
            Err(e) => self.errors.push(BuildError::InvalidOrigin(e)),
        }
        self
    }

    /// The upgrade path used by [`Server::serve`]. Default `/ws`.
    pub fn path(mut self, path: &str) -> Self {
        self.config.path = path.to_owned();
        self
    }

    /// Read and write buffer sizes per connection (the seed's `WithBufferSize`). Default 4 KiB
    /// and 32 KiB. The read buffer is allocated up front for every connection.
    pub fn buffer_sizes(mut self, read: usize, write: usize) -> Self {
        self.config.read_buffer_size = read;
        self.config.write_buffer_size = write;
        self
    }

    /// Read and write timeouts (the seed's `WithTimeout`). Default 30 s and 10 s.
    pub fn timeouts(mut self, read: Duration, write: Duration) -> Self {
        self.config.read_timeout = read;
        self.config.write_timeout = write;
        self
    }

    /// Close connections from which nothing arrived (data or pong) for this long. Default 30 s.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.config.read_timeout = timeout;
        self
    }

    /// Close connections whose writes stall for this long. Default 10 s.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_timeout = timeout;
        self
    }

    /// Interval of server pings (the seed's `WithPingInterval`). Default 15 s. Must be shorter
    /// than the read timeout.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.config.ping_interval = interval;
        self
    }

    /// Default timeout of server→client acks. Default 5 s.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.config.ack_timeout = timeout;
        self
    }

    /// Time allowed for the HTTP upgrade request. Default 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// Largest message accepted from clients (larger: close 1009). Default 64 KiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// Outbound queue bound per connection, in messages and in bytes. Default 1024 and 4 MiB.
    pub fn max_queued(mut self, messages: usize, bytes: usize) -> Self {
        self.config.max_queued_messages = messages;
        self.config.max_queued_bytes = bytes;
        self
    }

    /// What to do when a client's outbound queue is full. Default: disconnect (4001).
    pub fn slow_consumer(mut self, policy: SlowConsumerPolicy) -> Self {
        self.config.slow_consumer = policy;
        self
    }

    /// Maximum open connections; further upgrades get `503 Service Unavailable`.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.config.max_connections = Some(max);
        self
    }

    /// Client requests queued behind a running handler, per connection. Default 64.
    pub fn max_pending_requests(mut self, max: usize) -> Self {
        self.config.max_pending_requests = max;
        self
    }

    /// Server→client acks awaiting an answer, per connection. Default 128.
    pub fn max_pending_acks(mut self, max: usize) -> Self {
        self.config.max_pending_acks = max;
        self
    }

    /// Rooms per connection (all namespaces together). Default 256.
    pub fn max_rooms_per_connection(mut self, max: usize) -> Self {
        self.config.max_rooms_per_connection = max;
        self
    }

    /// Namespaces per connection. Default 32.
    pub fn max_namespaces_per_connection(mut self, max: usize) -> Self {
        self.config.max_namespaces_per_connection = max;
        self
    }

    /// Invalid messages tolerated per connection within `window` before closing it with 1008.
    /// Default 20 per 10 s.
    pub fn max_invalid_messages(mut self, max: u32, window: Duration) -> Self {
        self.config.max_invalid_messages = max;
        self.config.invalid_message_window = window;
        self
    }

    /// Limit client requests per connection (token bucket: `per_second` sustained, `burst` at
    /// once). Default: unlimited. Requests over the limit are delayed by backpressure (the
    /// connection stops reading until a token is due); see [`rate_limit_policy`] to refuse them
    /// instead.
    ///
    /// [`rate_limit_policy`]: ServerBuilder::rate_limit_policy
    pub fn rate_limit(mut self, per_second: f64, burst: f64) -> Self {
        let policy = self.config.rate_limit.map(|r| r.policy).unwrap_or_default();
        self.config.rate_limit = Some(RateLimit {
            per_second,
            burst,
            policy,
        });
        self
    }

    /// What happens to requests over the [`rate_limit`](ServerBuilder::rate_limit): delayed
    /// ([`RateLimitPolicy::Backpressure`], the default) or answered with `rate limit exceeded`
    /// ([`RateLimitPolicy::Reject`]). Has no effect without a rate limit.
    ///
    /// ```
    /// use wsu::{RateLimitPolicy, Server};
    /// let server = Server::builder()
    ///     .rate_limit(20.0, 40.0)
    ///     .rate_limit_policy(RateLimitPolicy::Reject)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(server.config().rate_limit.unwrap().policy, RateLimitPolicy::Reject);
    /// ```
    pub fn rate_limit_policy(mut self, policy: RateLimitPolicy) -> Self {
        if let Some(r) = &mut self.config.rate_limit {
            r.policy = policy;
        }
        self
    }

    /// The grace period of [`Server::shutdown`]: queued messages drain for most of it, then
    /// connections are closed, and what is still running when it ends (a hung hook, say) is
    /// cancelled. `shutdown` returns within this time. Default 10 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// Deadline of hook runs: the connect phase of a connection (the server's and `/`'s connect
    /// hooks together, then the join of `/`), a namespace's connect hook for one join, and each
    /// disconnect hook. A run past it is cancelled and counted in
    /// [`Stats::hook_timeouts`](crate::Stats::hook_timeouts); a connection whose connect phase
    /// overran is closed with 1011, a join whose hook overran is answered `internal error`.
    /// Default 10 s.
    pub fn hook_timeout(mut self, timeout: Duration) -> Self {
        self.config.hook_timeout = timeout;
        self
    }

    /// Whether every connection starts with a `hello` frame (default `true`): the connection
    /// id, the protocol and server versions and the server's limits (maximum message size, ack
    /// timeout, ping interval, rate limit…), which wsu's clients use, for example to refuse an
    /// over-size message locally. Clients written for the seed print or ignore it; one that
    /// fails on an unknown message type needs it off (PROTOCOL.md §3.1).
    pub fn hello(mut self, on: bool) -> Self {
        self.config.hello = on;
        self
    }

    /// Turn on connection-state recovery (default off): sessions that outlive a dropped
    /// transport, a secret resume token in every `hello`, and a bounded history per namespace
    /// from which a resumed session gets every broadcast it missed (PROTOCOL.md §13). See
    /// [`Recovery`](crate::Recovery) for the settings. Needs `hello` on.
    ///
    /// ```
    /// let server = wsu::Server::builder()
    ///     .recovery(wsu::Recovery::default())
    ///     .build()
    ///     .unwrap();
    /// # drop(server);
    /// ```
    pub fn recovery(mut self, recovery: crate::Recovery) -> Self {
        self.config.recovery = Some(recovery);
        self
    }

    /// Turn presence on (default off): per room, who is there — each connection under the
    /// user key its connect hook gave with [`Socket::set_presence`] (its id otherwise), with
    /// that metadata — readable with [`Server::presence`], and sent to the room's members as
    /// `presence` frames: the whole state to a connection joining the room, joins and leaves
    /// to the others (PROTOCOL.md §13.6).
    ///
    /// ```
    /// let server = wsu::Server::builder()
    ///     .presence(true)
    ///     .on_connect(|socket: wsu::Socket| async move {
    ///         let nick = socket.query("nick").unwrap_or("anonymous").to_owned();
    ///         socket.set_presence(&nick, &serde_json::json!({ "nick": nick }))
    ///     })
    ///     .build()
    ///     .unwrap();
    /// assert!(server.presence("/", "lobby").is_empty());
    /// ```
    pub fn presence(mut self, on: bool) -> Self {
        self.config.presence = on;
        self
    }

    /// Echo every text and binary message back unchanged, instead of decoding and dispatching
    /// it. Everything else is as usual: the same accept path, limits, heartbeats and close
    /// codes. For WebSocket conformance testing (Autobahn, `conformance/`) only: not public API.
    #[doc(hidden)]
    pub fn echo_mode(mut self, on: bool) -> Self {
        self.config.echo_mode = on;
        self
    }

    /// Join a cluster through `engine`: broadcasts reach every node's connections, and
    /// [`Server::cluster`] queries and acts on all of them. Build inside a tokio runtime (the
    /// node's tasks start there). Without an engine the server is a single node.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let broker = wsu::cluster::MemoryBroker::new();
    /// let server = wsu::Server::builder().engine(broker.engine()).build().unwrap();
    /// assert!(server.cluster().is_some());
    /// # }
    /// ```
    pub fn engine(mut self, engine: impl crate::cluster::Engine) -> Self {
        self.engine = Some(Arc::new(engine));
        self
    }

    /// Cluster settings (topic prefix, heartbeat, timeouts); see [`ClusterConfig`](crate::cluster::ClusterConfig).
    /// Only used with an [`engine`](Self::engine).
    pub fn cluster(mut self, config: crate::cluster::ClusterConfig) -> Self {
        self.cluster = config;
        self
    }

    /// Share application state with handlers: read it back with [`Server::state`] (one value
    /// per type).
    pub fn state<S: Send + Sync + 'static>(mut self, state: S) -> Self {
        self.state.insert(TypeId::of::<S>(), Arc::new(state));
        self
    }

    /// Serve a static file at `path` for plain `GET`/`HEAD` requests to [`Server::serve`] (for
    /// example a web page or the browser client).
    pub fn asset(
        mut self,
        path: &str,
        content_type: &str,
        body: impl Into<Cow<'static, [u8]>>,
    ) -> Self {
        self.assets.insert(
            path.to_owned(),
            Asset {
                content_type: content_type.to_owned(),
                body: body.into(),
            },
        );
        self
    }

    /// Serve the browser client ([`BROWSER_CLIENT_JS`](crate::BROWSER_CLIENT_JS)) at `path`, as
    /// `text/javascript; charset=utf-8`, and its TypeScript declarations
    /// ([`BROWSER_CLIENT_DTS`](crate::BROWSER_CLIENT_DTS)) at the same path with `.d.ts` in place
    /// of `.js` (or `.d.ts` appended; as `text/plain`), like Socket.IO serves its client.
    ///
    /// ```
    /// let server = wsu::Server::builder().serve_client("/wsu.js").build().unwrap();
    /// // A page then does: <script type="module">import { connect } from '/wsu.js';</script>
    /// # let _ = server;
    /// ```
    pub fn serve_client(self, path: &str) -> Self {
        let dts = match path.strip_suffix(".js") {
            Some(stem) => format!("{stem}.d.ts"),
            None => format!("{path}.d.ts"),
        };
        self.asset(
            path,
            "text/javascript; charset=utf-8",
            crate::BROWSER_CLIENT_JS.as_bytes(),
        )
        .asset(
            &dts,
            "text/plain; charset=utf-8",
            crate::BROWSER_CLIENT_DTS.as_bytes(),
        )
    }

    /// Check everything and build the server.
    ///
    /// # Errors
    /// An invalid namespace or event name (including reserved event names), a duplicate
    /// handler, an unparsable origin, or an option that cannot work.
    pub fn build(mut self) -> Result<Server, BuildError> {
        if let Some(e) = self.errors.drain(..).next() {
            return Err(e);
        }
        self.apply_registrations()?;
        let c = &self.config;
        let checks: [(bool, &'static str, &'static str); 8] = [
            (
                c.read_timeout.is_zero(),
                "read_timeout",
                "must be greater than zero",
            ),
            (
                c.write_timeout.is_zero(),
                "write_timeout",
                "must be greater than zero",
            ),
            (
                c.ping_interval.is_zero(),
                "ping_interval",
                "must be greater than zero",
            ),
            (
                c.ping_interval >= c.read_timeout,
                "ping_interval",
                "must be shorter than the read timeout",
            ),
            (
                c.read_buffer_size == 0 || c.max_message_size == 0,
                "buffer_sizes",
                "must be greater than zero",
            ),
            (
                c.max_queued_messages == 0 || c.max_queued_bytes == 0,
                "max_queued",
                "must be greater than zero",
            ),
            (
                c.recovery.is_some() && (!c.hello || c.echo_mode),
                "recovery",
                "needs the `hello` frame (it carries the resume token): do not turn `hello` off",
            ),
            (
                c.recovery.is_some_and(|r| r.session_ttl.is_zero()),
                "recovery",
                "`session_ttl` must be greater than zero",
            ),
        ];
        if let Some((_, option, reason)) = checks.iter().find(|(bad, _, _)| *bad) {
            return Err(BuildError::InvalidOption { option, reason });
        }
        if !c.path.starts_with('/') {
            return Err(BuildError::InvalidOption {
                option: "path",
                reason: "must start with `/`",
            });
        }

        let cluster = match self.engine {
            Some(engine) => {
                self.cluster
                    .check()
                    .map_err(|reason| BuildError::InvalidOption {
                        option: "cluster",
                        reason,
                    })?;
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    return Err(BuildError::InvalidOption {
                        option: "engine",
                        reason: "a server with an engine must be built inside a tokio runtime",
                    });
                };
                Some((
                    crate::cluster::node::Node::new(engine, self.cluster, self.config.recovery),
                    rt,
                ))
            }
            None => None,
        };
        let counters = Arc::new(Counters::default());
        let node = cluster.as_ref().map(|(node, _)| node.clone());
        let mut namespaces = HashMap::new();
        for nsb in self.namespaces {
            names::validate_namespace(&nsb.name)
                .map_err(|e| BuildError::name("namespace", &nsb.name, e))?;
            let mut handlers = crate::registry::HandlerMap::default();
            for (event, entry) in nsb.handlers {
                names::validate_event(&event).map_err(|e| BuildError::name("event", &event, e))?;
                if let Some(first) = handlers.get(event.as_str()) {
                    return Err(BuildError::DuplicateHandler {
                        namespace: nsb.name.clone(),
                        event,
                        first: first.location.clone(),
                        second: entry.location,
                    });
                }
                handlers.insert(event.into_boxed_str(), entry);
            }
            let name: Arc<str> = Arc::from(nsb.name.as_str());
            namespaces.insert(
                name.clone(),
                Arc::new(Namespace::new(
                    name,
                    true,
                    handlers,
                    nsb.on_connect,
                    nsb.on_disconnect,
                    self.config.recovery.as_ref(),
                    super::presence_ctx(&self.config, &counters, node.as_ref()),
                )),
            );
        }

        let (shutdown, _) = watch::channel(false);
        let (kill, _) = watch::channel(false);
        let sessions = self
            .config
            .recovery
            .map(|r| crate::session::store::Sessions::new(&r));
        let inner = Arc::new(Inner {
            sessions,
            config: self.config,
            namespaces: RwLock::new(namespaces),
            allow_namespace: self.allow_namespace,
            on_connect: self.on_connect,
            on_disconnect: self.on_disconnect,
            connections: Mutex::new(HashMap::new()),
            counters,
            ids: IdGenerator::new(),
            state: self.state,
            assets: self.assets,
            shutdown,
            kill,
            kill_at: std::sync::OnceLock::new(),
            all_closed: Notify::new(),
            cluster: cluster.as_ref().map(|(node, _)| node.clone()),
        });
        if let Some((node, rt)) = &cluster {
            node.start(Arc::downgrade(&inner), rt);
        }
        Ok(Server { inner })
    }
}
