/**
 * wsu browser client: a dependency-free ES module for wsu servers (and any server speaking the
 * websocketutils wire protocol: one JSON envelope per WebSocket text message).
 *
 * A wsu server serves this module with `ServerBuilder::serve_client("/wsu.js")` (and these
 * declarations at `/wsu.d.ts`); it also works when copied into any page, with no bundler:
 *
 * ```html
 * <script type="module">
 *   import { connect } from '/wsu.js';
 *   const client = connect('/ws', { query: { token: 'secret' } });
 *   client.onState((s) => console.log(s.state, s.code ?? ''));
 *   client.on('chat', (msg) => console.log(msg));
 *   await client.join('lobby');
 *   const ack = await client.emitWithAck('chat', { user: 'ann', message: 'hi' });
 * </script>
 * ```
 *
 * Guarantees:
 * - Messages are sent in the order they were emitted, across reconnections (the offline buffer is
 *   flushed, in order, before anything emitted later).
 * - Every `emitWithAck`, `join`, `leave`, `joinNamespace`, `leaveNamespace` and `ping` settles:
 *   resolved by the server's answer, or rejected with a {@link WsuError} (a join made while
 *   disconnected waits for the next connection, or for `close()` / giving up).
 * - Joined namespaces and rooms are remembered and joined again after every reconnection,
 *   namespaces first, before the offline buffer is flushed and before the state becomes
 *   `connected` (except after an accepted resume: the server restored them).
 *
 * Sessions (wsu protocol extensions v2; PROTOCOL.md §11):
 * - The server's `hello` frame (the first frame of a connection) is read, never given to
 *   handlers: {@link WsuClient.sessionId}, {@link WsuClient.limits}, and the resume token when
 *   the server has recovery on. Sends whose encoded frame is larger than
 *   `limits.maxMessageSize` fail at once with a {@link MessageTooLargeError}.
 * - With a token, a reconnection asks to resume the session (`wsu_resume` and `wsu_offsets` in
 *   the URL, with the last stream position of each namespace). The server then replays missed
 *   broadcasts in `recovery` frames: they are given to the `on` handlers in order, before any
 *   later message, and reported to {@link WsuClient.onRecovery} listeners.
 * - Room presence (`presence` frames) is tracked: {@link WsuClient.presence},
 *   {@link WsuClient.onPresence}.
 *
 * @module wsu
 */

/** Reconnection with exponential backoff and jitter. */
export interface ReconnectOptions {
  /** Delay before the first reconnection attempt, in ms. Default 500. */
  initialDelay?: number;
  /** Largest delay between attempts, in ms. Default 10000. */
  maxDelay?: number;
  /** Each attempt waits `factor` times longer than the previous one. Default 2. */
  factor?: number;
  /**
   * Randomisation of each delay, as a fraction: the delay is multiplied by a random number in
   * `[1 - jitter, 1 + jitter]` (then capped at `maxDelay`), so that many clients dropped at the
   * same moment do not all come back at once. Default 0.5.
   */
  jitter?: number;
  /**
   * Consecutive failed attempts after which the client gives up (state `gave-up`). Counted
   * from the last successful connection. Default `Infinity`.
   */
  maxAttempts?: number;
  /**
   * Also reconnect after the server closed with 1000 (normal closure: the application called
   * `Socket::close`). Default `false`: a normal close from the server is final.
   */
  onNormalClose?: boolean;
}

/** Options of {@link connect}. */
export interface ConnectOptions {
  /**
   * Query parameters added to the URL (for example an auth token the server reads with
   * `Socket::query`). A function is called again before every connection attempt, so it can
   * return a fresh token.
   */
  query?: Record<string, string | number | boolean> | (() => Record<string, string | number | boolean>);
  /**
   * Reconnection policy, or `false` for none. Whether a lost connection is retried depends on
   * its close code, as for wsu's Rust client (`CloseCode::should_reconnect`, see
   * {@link shouldReconnect}):
   *
   * | close code | reconnect? |
   * |---|---|
   * | 1006 (dropped without a close frame: network failure, server killed, or could not connect) | yes |
   * | 1001 (server shutting down), 1011, 1013, `4000..=4499` except 4003 | yes |
   * | 4003 (session resumed elsewhere: another transport took over this session) | no |
   * | 1000 (the server application closed the connection) | only with `onNormalClose` |
   * | `4500..=4999` (refused, e.g. bad credentials), 1002, 1005, 1007, 1008, 1009, others | no |
   * | after `close()` | no |
   */
  reconnect?: ReconnectOptions | false;
  /**
   * Default timeout of `emitWithAck`, `ping` and of the server's answers to `join`/`leave`
   * requests, in ms. Default 5000. `Infinity` waits for ever.
   */
  ackTimeout?: number;
  /**
   * Most messages kept while disconnected (default 256). Emits made while the client is not
   * connected (before the first connection, while reconnecting, and while rejoining) are queued
   * and sent in order once connected and rejoined. When the buffer is full, `emit` throws (and
   * `emitWithAck` rejects) a {@link WsuError} of kind `buffer-full`; nothing already queued is
   * dropped. `0` disables buffering. An `emitWithAck` whose timeout expires while still queued
   * is removed from the queue. After `close()` or giving up, the buffer is discarded (its acks
   * reject with `disconnected`).
   */
  offlineBuffer?: number;
  /**
   * How long, in ms, an open connection waits for the server's `hello` frame (the first frame
   * of a wsu server with `hello` on, its default) before rejoining and becoming `connected`.
   * The wait ends at once when the hello, or any other first frame, arrives; it only lasts the
   * full time against a server with `hello(false)`. A connection that asked to resume waits at
   * least `ackTimeout` (without a hello it counts as refused). `0`: do not wait unless resuming.
   * Default 1000.
   */
  helloTimeout?: number;
  /**
   * The client-side heartbeat (browsers do not let a page see the server's WebSocket Pings, and
   * a link that dies silently — sleep, a NAT or Wi-Fi change — may otherwise look open for
   * minutes). After `interval` ms without any frame from the server, a JSON ping is sent (its
   * pong is not given to {@link WsuClient.ping} callers); when nothing at all arrived for
   * `timeout` ms and that ping had `timeout - interval` ms, the connection is given up as lost:
   * state `disconnected` with code 1006 and reason `"heartbeat lost"`, then reconnection (and
   * resume) as for any 1006. The dead WebSocket is not closed at once (a close frame would end
   * the server's session): the server closes it (4003) when the session resumes, and the
   * client closes it once the next connection has its hello. Default `{interval: 20000,
   * timeout: 45000}`; `false` turns it off.
   */
  heartbeat?: HeartbeatOptions | false;
  /** WebSocket implementation; default `globalThis.WebSocket` (give one in Node < 22). */
  WebSocket?: unknown;
}

/** See {@link ConnectOptions.heartbeat}. */
export interface HeartbeatOptions {
  /** Silence, in ms, after which a JSON ping is sent. Default 20000. */
  interval?: number;
  /** Silence, in ms, after which the connection counts as lost. Default 45000. */
  timeout?: number;
}

/** Options naming a namespace; default `"/"`. */
export interface NamespaceOption {
  /** Namespace, starting with `/`. Default `"/"`. */
  namespace?: string;
}

/** Options of {@link WsuClient.emitWithAck}. */
export interface AckOptions extends NamespaceOption {
  /**
   * How long to wait for the ack, in ms, counted from the call (time spent in the offline
   * buffer counts). Default: the client's `ackTimeout`.
   */
  timeout?: number;
}

/** What went wrong, in a {@link WsuError}. */
export type WsuErrorKind =
  /** No answer within the timeout. */
  | 'timeout'
  /** The connection closed before the answer arrived, or the client is closed / gave up. */
  | 'disconnected'
  /** The server answered with an `error` message (`message` is its `error` text, `data` its `data`). */
  | 'server'
  /** The offline buffer is full. */
  | 'buffer-full'
  /** The message's frame is larger than the server's `maxMessageSize` ({@link MessageTooLargeError}). */
  | 'too-large';

/** The error of every failed client operation. */
export class WsuError extends Error {
  /** What went wrong. */
  readonly kind: WsuErrorKind;
  /** Human-readable text (for kind `server`: the server's `error` text). */
  readonly message: string;
  /** For kind `server`: the `data` of the server's error message, if any. */
  readonly data: unknown;
  constructor(kind: WsuErrorKind, message: string, data?: unknown);
}

/**
 * Thrown by `emit`, and the rejection of `emitWithAck` / `join` / `joinNamespace`, when the
 * encoded frame (the JSON text, counted in UTF-8 bytes, ack id included) is larger than the
 * server's `limits.maxMessageSize` from its `hello` frame: nothing is sent (the server would close
 * the connection with 1009). The message names both numbers, e.g. `wsu: event "chat" is 70001
 * bytes, larger than the server's maxMessageSize of 65536 bytes; not sent`. Until the first
 * hello the limit is unknown: what is buffered meanwhile is checked when the buffer is flushed
 * (an `emitWithAck` then rejects with this error; a plain `emit` is dropped and the error is
 * reported like an uncaught one).
 */
export class MessageTooLargeError extends WsuError {
  readonly kind: 'too-large';
  readonly name: 'MessageTooLargeError';
  /** Always `"WSU_MESSAGE_TOO_LARGE"`. */
  readonly code: 'WSU_MESSAGE_TOO_LARGE';
  /** The frame's size in bytes (UTF-8). */
  readonly size: number;
  /** The server's `maxMessageSize`, in bytes. */
  readonly limit: number;
  constructor(size: number, limit: number, what: string);
}

/** The server's limits, from its `hello` frame. */
export interface ServerLimits {
  maxMessageSize: number;
  ackTimeoutMs: number;
  pingIntervalMs: number;
  readTimeoutMs: number;
  maxPendingAcks: number;
  maxPendingRequests: number;
  rateLimit: { perSecond: number; burst: number } | null;
}

/** A namespace's stream position: the `epoch` and `offset` of the last broadcast handled. */
export interface StreamPosition {
  epoch: string;
  offset: number;
}

/**
 * A `recovery` frame, given to {@link WsuClient.onRecovery} listeners after its `events` were
 * handed to the handlers. The server sends one per namespace each time the connection becomes a
 * member: for `/` on connecting, for others on joining, and for every namespace a resume restored.
 */
export interface RecoveryEvent {
  /** The namespace. */
  namespace: string;
  /**
   * `true`: the replayed events are exactly what this client missed. `false`: see `reason`; after
   * a resume the rooms are still restored, but the application should reload its state.
   */
  recovered: boolean;
  /**
   * With `recovered: false`: `"new"` (nothing to recover: fresh session or first join),
   * `"no offset"`, `"epoch changed"` (the server's history was lost), `"trimmed"`, `"too many"`.
   */
  reason?: string;
  /** How many missed events were replayed (handed to the `on` handlers, in order). */
  replayed: number;
  /** The namespace's position after these events (the client's position from now on). */
  epoch: string;
  offset: number;
}

/** One connection of a user in a room's presence. */
export interface PresenceConnection {
  /** The connection's session id. */
  sid: string;
  /** What the server's connect hook set with `set_presence` (`null` by default). */
  meta: unknown;
}

/** A room's presence: user key (the sid by default) → its connections (one per tab/device). */
export type PresenceState = Record<string, PresenceConnection[]>;

/** A change of a room's presence, given to {@link WsuClient.onPresence} listeners. */
export interface PresenceEvent {
  namespace: string;
  room: string;
  /** `state`: the server sent the whole state (it replaced the view); `diff`: joins and leaves. */
  kind: 'state' | 'diff';
  /** For `diff`: the connections that joined (empty for `state`). */
  joins: PresenceState;
  /** For `diff`: the connections that left (empty for `state`). */
  leaves: PresenceState;
  /** The room's presence after the change (a copy). */
  state: PresenceState;
}

/** Connection states. */
export type ConnectionState =
  /** The first connection is being opened (the initial state). */
  | 'connecting'
  /** Connected, namespaces and rooms rejoined, offline buffer flushed. */
  | 'connected'
  /** The connection closed; `willReconnect` says whether `reconnecting` follows. */
  | 'disconnected'
  /** Waiting `delay` ms before attempt number `attempt`, then trying (state unchanged while trying). */
  | 'reconnecting'
  /** `maxAttempts` attempts failed in a row; the client is closed. */
  | 'gave-up';

/** A state change, given to {@link WsuClient.onState} listeners. */
export interface StateEvent {
  /** The new state. */
  state: ConnectionState;
  /**
   * WebSocket close code of the connection (or failed attempt) that ended, for `disconnected`,
   * `reconnecting` and `gave-up`: e.g. 1000 (normal), 1001 (server going away), 1006 (dropped,
   * or could not connect), 4000..=4499 (reconnect), 4500..=4999 (refused: no reconnection).
   */
  code?: number;
  /** Close reason, with `code`. */
  reason?: string;
  /**
   * For `reconnecting`: the number of the coming attempt (1-based); for `connected`: how many
   * attempts it took (0 for a first try); otherwise the attempts made so far.
   */
  attempt: number;
  /** For `reconnecting`: the delay before the attempt, in ms (after jitter). */
  delay?: number;
  /** For `disconnected`, `reconnecting` and `gave-up`: whether the client will try again. */
  willReconnect?: boolean;
  /**
   * For `connected`: whether the server accepted to resume the previous session (namespaces
   * and rooms restored by the server, missed events replayed); `false` for a fresh session.
   */
  resumed?: boolean;
  /**
   * For `connected`, only when this connection asked to resume and the server refused: why
   * (the hello's `resume.reason`: `"invalid token"`, `"unknown session"`, `"session busy"`;
   * `"no hello"` or `"resume not supported"` when the server's hello did not answer). The
   * namespaces and rooms were rejoined; the application should reload its state.
   */
  resumeRefused?: string;
}

/** An `error` message from the server that answers no request of this client. */
export interface ServerErrorEvent {
  /** Namespace of the error (default `"/"`). */
  namespace: string;
  /** Event the error is about, if the server named one. */
  event?: string;
  /** The server's error text (e.g. `"namespace not joined"`, `"unknown event"`). */
  message: string;
  /** The error's `data`, if any. */
  data?: unknown;
}

/** What an event handler receives besides the payload. */
export interface EventInfo {
  /** Namespace of the event. */
  namespace: string;
  /** Event name. */
  event: string;
  /** The server's ack id, when the server waits for an answer (the handler's return value). */
  ackId?: string;
}

/**
 * An event handler. When the server asked for an ack (`Socket::emit_with_ack`), the return
 * value of the first handler registered for the event (or the value its Promise resolves to)
 * is the ack's `data` (`undefined` sends no `data`, which the server reads as `null`).
 *
 * A handler that throws (or whose Promise rejects), or returns a value that JSON cannot encode,
 * answers with an `error` message carrying the ack id instead of an `ack`:
 * `{"type":"error","namespace":…,"event":…,"ackId":…,"error":"<the error's message>"}`, as wsu's
 * Rust client does. An event with an ack id and no handler at all is answered the same way with
 * the text `no handler for <event>`. On a wsu server, the `emit_with_ack` that asked then fails
 * with `AckError::Rejected`, whose message is that text (cut to 64 bytes). Only the first
 * handler's outcome answers; the errors of the others are reported like uncaught errors. An
 * answer is only sent on the connection that carried the request.
 */
export type EventHandler<T = any, R = unknown> = (data: T, info: EventInfo) => R | Promise<R>;

/** A client connection to a wsu server; made by {@link connect}. */
export class WsuClient {
  /** The current state (starts as `connecting`). */
  readonly state: ConnectionState;

  /**
   * The session id: the `sid` of the latest `hello` frame (after an accepted resume, the resumed
   * session's, unchanged), or `null` before the first hello (or with a server without hello).
   */
  readonly sessionId: string | null;

  /**
   * Whether the current connection resumed the previous session (its hello said
   * `resume.accepted`). `false` on a first connection, after a refused resume (the client then
   * rejoined its namespaces and rooms) and without recovery on the server.
   */
  readonly recovered: boolean;

  /**
   * Why the server refused the current connection's resume request (see
   * {@link StateEvent.resumeRefused}), or `null`: no resume asked (first connection, or the
   * server gave no token) or it was accepted.
   */
  readonly resumeRefused: string | null;

  /** The server's limits from the latest hello frame, or `null`. */
  readonly limits: ServerLimits | null;

  /**
   * The stream position of each namespace (a copy): from the last `recovery` frame or the last
   * handled event carrying an `offset`, whichever is later. It is what a resume sends in
   * `wsu_offsets`; cleared when a connection starts a fresh session.
   */
  readonly positions: Record<string, StreamPosition>;

  /**
   * Listen to `recovery` frames (see {@link RecoveryEvent}); called after the frame's events
   * were handed to the handlers, before any later message is handled. Returns a function that
   * removes the listener.
   */
  onRecovery(listener: (event: RecoveryEvent) => void): () => void;

  /**
   * Listen to the presence changes of the rooms this client is in (needs
   * `ServerBuilder::presence(true)`). Returns a function that removes the listener.
   */
  onPresence(listener: (event: PresenceEvent) => void): () => void;

  /**
   * The presence of `room` of `options.namespace` (default `"/"`), a copy: `{}` before the
   * server sent its state. A `state` frame replaces it; `joins`/`leaves` apply (a user key
   * without connections is removed). Leaving the room (or its namespace), and a fresh session
   * after a refused resume, forget it.
   */
  presence(room: string, options?: NamespaceOption): PresenceState;

  /**
   * Listen to state changes. The initial `connecting` state is announced in a microtask, so a
   * listener added right after `connect()` sees it. Returns a function that removes the listener.
   */
  onState(listener: (event: StateEvent) => void): () => void;

  /**
   * Listen to `error` messages from the server that do not answer a request of this client
   * (those reject the request's Promise instead): for example an `emit` to a namespace not
   * joined. Returns a function that removes the listener.
   */
  onError(listener: (error: ServerErrorEvent) => void): () => void;

  /**
   * Handle the server's `event` in `options.namespace` (default `"/"`); see {@link EventHandler}
   * for acks. Several handlers may be registered for one event; all are called in order.
   * Returns a function that removes this handler.
   */
  on<T = any, R = unknown>(event: string, handler: EventHandler<T, R>, options?: NamespaceOption): () => void;

  /** Remove a handler added with `on` (every handler of the event when `handler` is omitted). */
  off(event: string, handler?: EventHandler<any, any>, options?: NamespaceOption): void;

  /**
   * Send an event without ack. While not connected it is queued in the offline buffer.
   *
   * @throws {WsuError} `buffer-full` when the offline buffer is full; `disconnected` after
   *   `close()`, a refusing close code or giving up; {@link MessageTooLargeError} (kind
   *   `too-large`) when the frame is larger than the server's `maxMessageSize`.
   * @throws {TypeError} for an empty event name, a namespace not starting with `/`, or data
   *   that JSON cannot encode.
   */
  emit(event: string, data?: unknown, options?: NamespaceOption): void;

  /**
   * Send an event with an ack id and resolve with the `data` of the server's `ack` (the
   * handler's return value). Rejects with a {@link WsuError}: `timeout` (no ack within
   * `options.timeout`), `disconnected` (the connection closed after the event was sent: it is
   * not re-sent, since the server may have handled it), `server` (the server answered with an
   * `error` carrying this ack id: unknown event, invalid payload, the handler's error...),
   * `buffer-full`, `too-large` ({@link MessageTooLargeError}, nothing sent); or with a
   * `TypeError` for an invalid name or data that JSON cannot encode.
   */
  emitWithAck<R = unknown>(event: string, data?: unknown, options?: AckOptions): Promise<R>;

  /**
   * Join `room` of `options.namespace` (default `"/"`; the namespace is joined too). Resolves
   * when the server confirms. The room is remembered and joined again after every reconnection;
   * called while disconnected, it resolves once joined after reconnecting. Rejects with kind
   * `server` when the server refuses (the room is then forgotten), `timeout`, `too-large`
   * (a room name making the frame larger than `maxMessageSize`), or `disconnected` when the
   * client is closed. After an accepted resume only the rooms joined while disconnected are
   * joined again (the server restored the others); those left while disconnected are left then.
   */
  join(room: string, options?: NamespaceOption): Promise<void>;

  /** Leave `room` (forgotten at once: not joined again after reconnecting). Resolves when the
   * server confirms, or at once while disconnected. */
  leave(room: string, options?: NamespaceOption): Promise<void>;

  /**
   * Join a namespace (declared by the server, or allowed by its `allow_namespaces`); its
   * connect hook may refuse (kind `server`, e.g. `"join refused: bad token"`). Remembered and
   * joined again after every reconnection, before rooms. The connection is always in `"/"`.
   */
  joinNamespace(namespace: string): Promise<void>;

  /** Leave a namespace and all its rooms (all forgotten at once). */
  leaveNamespace(namespace: string): Promise<void>;

  /**
   * A JSON ping (`{"type":"ping"}`): resolves with the round-trip time in milliseconds.
   * Rejects with `disconnected` when not connected, `timeout` after `options.timeout`
   * (default `ackTimeout`).
   */
  ping(options?: { timeout?: number }): Promise<number>;

  /**
   * Close the connection with code 1000 and `reason` (at most 123 bytes are sent). The client
   * does not reconnect; pending acks and joins reject with `disconnected`, the offline buffer is
   * discarded, and the state becomes `disconnected` (code 1000) at once.
   */
  close(reason?: string): void;
}

/**
 * Open a client. Returns at once: the client connects in the background (state `connecting`),
 * and emits made meanwhile are buffered.
 *
 * @param url `ws://` or `wss://` URL of the server's WebSocket endpoint; `http(s)://` URLs and
 *   paths relative to the page (`"/ws"`) are converted. Default `"/ws"` on the page's host.
 * @throws {TypeError} for an invalid URL.
 */
export function connect(url?: string, options?: ConnectOptions): WsuClient;

/**
 * Whether the client reconnects after a close with `code`: true for 1001, 1006, 1011, 1013 and
 * `4000..=4499` except 4003 (session resumed elsewhere); for 1000 only when `onNormalClose`;
 * false otherwise.
 */
export function shouldReconnect(code: number, onNormalClose?: boolean): boolean;

/** The defaults of {@link ConnectOptions}. */
export const DEFAULTS: Readonly<{
  reconnect: Readonly<Required<ReconnectOptions>>;
  ackTimeout: number;
  offlineBuffer: number;
  helloTimeout: number;
  heartbeat: Readonly<Required<HeartbeatOptions>>;
}>;

/**
 * Delay before reconnection attempt `attempt` (1-based) without jitter:
 * `min(maxDelay, initialDelay * factor^(attempt-1))`.
 */
export function backoffDelay(
  policy: Pick<Required<ReconnectOptions>, 'initialDelay' | 'maxDelay' | 'factor'>,
  attempt: number,
): number;

/** `delay` multiplied by a random factor in `[1 - jitter, 1 + jitter]`, within `[0, maxDelay]`. */
export function withJitter(delay: number, jitter: number, maxDelay: number, random?: () => number): number;

declare const _default: {
  connect: typeof connect;
  WsuClient: typeof WsuClient;
  WsuError: typeof WsuError;
  MessageTooLargeError: typeof MessageTooLargeError;
  DEFAULTS: typeof DEFAULTS;
  backoffDelay: typeof backoffDelay;
  withJitter: typeof withJitter;
  shouldReconnect: typeof shouldReconnect;
};
export default _default;
