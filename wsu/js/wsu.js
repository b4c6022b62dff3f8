// wsu browser client: a dependency-free ES module for wsu servers (and any server speaking the
// websocketutils wire protocol). Types and documentation: wsu.d.ts next to this file.
//
//   import { connect } from '/wsu.js';
//   const client = connect('/ws');
//   client.on('chat', (msg) => console.log(msg));
//   await client.join('lobby');
//   const answer = await client.emitWithAck('chat', { user: 'ann', message: 'hi' });
//
// License: MIT OR Apache-2.0 (as wsu).

/** Default options; see `ConnectOptions` in wsu.d.ts. */
export const DEFAULTS = Object.freeze({
  reconnect: Object.freeze({
    initialDelay: 500,
    maxDelay: 10000,
    factor: 2,
    jitter: 0.5,
    maxAttempts: Infinity,
    onNormalClose: false,
  }),
  ackTimeout: 5000,
  offlineBuffer: 256,
  helloTimeout: 1000,
  heartbeat: Object.freeze({ interval: 20000, timeout: 45000 }),
});

const ROOT = '/';
const NORMAL = 1000;
const MAX_REASON_BYTES = 123;
/** Close code of a transport replaced by a resume of its session elsewhere: never reconnected. */
const RESUMED_ELSEWHERE = 4003;

/** The error type of every failed client operation; `kind` says what happened. */
export class WsuError extends Error {
  /**
   * @param {'timeout'|'disconnected'|'server'|'buffer-full'|'too-large'} kind
   * @param {string} message
   * @param {unknown} [data]
   */
  constructor(kind, message, data) {
    super(message);
    this.name = 'WsuError';
    this.kind = kind;
    this.data = data;
  }
}

/**
 * A message refused locally because its encoded frame is larger than the server's
 * `limits.maxMessageSize` (from the `hello` frame): nothing was sent. `kind` is `'too-large'`.
 */
export class MessageTooLargeError extends WsuError {
  /**
   * @param {number} size the frame's size in bytes (UTF-8)
   * @param {number} limit the server's maxMessageSize
   * @param {string} what what was refused (e.g. 'event "chat"')
   */
  constructor(size, limit, what) {
    super('too-large', `wsu: ${what} is ${size} bytes, larger than the server's maxMessageSize of ${limit} bytes; not sent`);
    this.name = 'MessageTooLargeError';
    this.code = 'WSU_MESSAGE_TOO_LARGE';
    this.size = size;
    this.limit = limit;
  }
}

/**
 * Open a client connection to a wsu server. Returns at once; the client connects (and
 * reconnects) in the background. See wsu.d.ts for the options and the API.
 *
 * @param {string} [url] ws:, wss:, http:, https: or a path ('/ws'); default: '/ws' of this page.
 * @param {object} [options]
 */
export function connect(url, options) {
  return new WsuClient(url, options);
}

/**
 * Whether the client reconnects after a close with `code` (wsu's `CloseCode::should_reconnect`):
 * yes for 1001, 1006, 1011, 1013 and 4000-4499 except 4003 (session resumed elsewhere); for 1000
 * only with `onNormalClose`; no otherwise (4500-4999: refused; 1002, 1005, 1007, 1008, 1009:
 * retrying would fail the same way).
 */
export function shouldReconnect(code, onNormalClose = false) {
  if (code === NORMAL) return onNormalClose;
  if (code === RESUMED_ELSEWHERE) return false; // the session lives on in another transport
  return code === 1001 || code === 1006 || code === 1011 || code === 1013 || (code >= 4000 && code <= 4499);
}

/** The delay before reconnect attempt `attempt` (1-based), before jitter. */
export function backoffDelay(policy, attempt) {
  const raw = policy.initialDelay * Math.pow(policy.factor, Math.max(0, attempt - 1));
  return Math.min(policy.maxDelay, raw);
}

/** `delay` randomised by ±`jitter` (a fraction), never negative nor above `maxDelay`. */
export function withJitter(delay, jitter, maxDelay, random = Math.random) {
  const j = Math.min(1, Math.max(0, jitter));
  const d = delay * (1 + j * (2 * random() - 1));
  return Math.round(Math.min(maxDelay, Math.max(0, d)));
}

function normaliseNamespace(ns) {
  if (ns === undefined || ns === null || ns === '') return ROOT;
  if (typeof ns !== 'string' || ns[0] !== '/') {
    throw new TypeError(`wsu: a namespace must be a string starting with "/", got ${JSON.stringify(ns)}`);
  }
  return ns;
}

function checkName(what, name) {
  if (typeof name !== 'string' || name === '') {
    throw new TypeError(`wsu: ${what} must be a non-empty string`);
  }
  return name;
}

function truncateReason(reason) {
  let s = String(reason ?? '');
  const enc = new TextEncoder();
  while (enc.encode(s).length > MAX_REASON_BYTES) s = s.slice(0, -1);
  return s;
}

function resolveUrl(url, query, resume) {
  const loc = typeof location !== 'undefined' ? location : undefined;
  let u;
  if (url === undefined || url === null || url === '') url = '/ws';
  if (/^(wss?|https?):\/\//i.test(url)) {
    u = new URL(url);
  } else if (loc) {
    u = new URL(url, loc.href);
  } else {
    throw new TypeError('wsu: a relative url needs a page (pass ws://host/path)');
  }
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  const q = typeof query === 'function' ? query() : query;
  if (q) {
    for (const [k, v] of Object.entries(q)) {
      if (v !== undefined && v !== null) u.searchParams.set(k, String(v));
    }
  }
  // Resume parameters (spec: wsu_resume=<token>&wsu_offsets=<encodeURIComponent(JSON)>); any
  // stale one (in the url or the app's query) is replaced, never duplicated.
  if (u.searchParams.has('wsu_resume')) u.searchParams.delete('wsu_resume');
  if (u.searchParams.has('wsu_offsets')) u.searchParams.delete('wsu_offsets');
  if (resume) {
    let extra = `wsu_resume=${encodeURIComponent(resume.token)}`;
    if (resume.offsets) extra += `&wsu_offsets=${encodeURIComponent(resume.offsets)}`;
    const q0 = u.search.replace(/^\?/, '');
    u.search = q0 ? `${q0}&${extra}` : extra;
  }
  return u.toString();
}

function toMessage(err) {
  if (err instanceof Error) return err.message || String(err);
  if (typeof err === 'string') return err;
  try {
    return JSON.stringify(err) ?? String(err);
  } catch {
    return String(err);
  }
}

/** UTF-8 byte length of `text`. */
function utf8Length(text) {
  return new TextEncoder().encode(text).length;
}

function isPosition(epoch, offset) {
  return typeof epoch === 'string' && typeof offset === 'number' && Number.isFinite(offset) && offset >= 0;
}

function copyPresence(state) {
  const out = {};
  for (const [key, conns] of state) out[key] = conns.map((c) => ({ sid: c.sid, meta: c.meta }));
  return out;
}

/** A client connection; made by `connect`. */
export class WsuClient {
  constructor(url, options = {}) {
    const opts = options ?? {};
    this._url = url;
    this._query = opts.query;
    this._WebSocket = opts.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') {
      throw new TypeError('wsu: no WebSocket implementation (pass options.WebSocket)');
    }
    this._reconnect = opts.reconnect === false ? false : { ...DEFAULTS.reconnect, ...(opts.reconnect ?? {}) };
    this._ackTimeout = opts.ackTimeout ?? DEFAULTS.ackTimeout;
    this._bufferLimit = opts.offlineBuffer ?? DEFAULTS.offlineBuffer;
    this._helloTimeout = opts.helloTimeout ?? DEFAULTS.helloTimeout;
    this._heartbeat = opts.heartbeat === false ? false : { ...DEFAULTS.heartbeat, ...(opts.heartbeat ?? {}) };
    this._hbTimer = null; // setInterval of the heartbeat, while a WebSocket is open
    this._lastSeen = 0; // when the open WebSocket last received a frame
    this._hbPingAt = 0; // when the heartbeat's unanswered ping went out (0: none)
    this._abandoned = new Set(); // WebSockets given up by the heartbeat, closed once replaced

    this._state = 'connecting';
    this._closed = false; // no more connections: client close, a 4500-4999 close, or gave up
    this._ws = null;
    this._gen = 0; // bumped for every WebSocket, so late callbacks of an old one are ignored
    this._open = false; // the current WebSocket is open (rejoin may still be running)
    this._ready = false; // open and rejoined: emits go out at once
    this._attempt = 0;
    this._timer = null;
    this._nextId = 0;

    this._handlers = new Map(); // "ns\0event" -> [handler]
    this._stateListeners = new Set();
    this._errorListeners = new Set();
    this._requests = new Map(); // ackId -> {resolve, reject, timer, gen, sent}
    this._buffer = []; // frames waiting for a connection
    this._pings = []; // FIFO of {resolve, reject, start, timer, done}
    this._memberships = new Map(); // key -> {namespace, room, waiters, confirmed}

    // Sessions and recovery (protocol extensions v2).
    this._hello = null; // data of the current connection's hello frame
    this._sid = null;
    this._token = null; // the latest resume token (single use; older ones are forgotten)
    this._limits = null;
    this._recovered = false; // the current connection resumed the previous session
    this._resumeRefused = null; // why the current connection's resume request was refused
    this._resuming = false; // the current WebSocket's URL carries wsu_resume
    this._helloWaiter = null; // {resolve, timer} while the open waits for the hello frame
    this._positions = new Map(); // namespace -> {epoch, offset}
    this._leftOffline = []; // {namespace, room} left while disconnected (told after a resume)
    this._recoveryListeners = new Set();
    this._presenceListeners = new Set();
    this._presence = new Map(); // mkey -> {namespace, room, state: Map(userKey -> [{sid, meta}])}

    resolveUrl(this._url, undefined); // a bad url is the caller's error: throw now
    this._openSocket();
    // Announced after the caller had a chance to call onState.
    queueMicrotask(() => {
      if (this._state === 'connecting') this._setState({ state: 'connecting' });
    });
  }

  /** The current connection state. */
  get state() {
    return this._state;
  }

  /** Listen to state changes; returns a function that removes the listener. */
  onState(cb) {
    this._stateListeners.add(cb);
    return () => this._stateListeners.delete(cb);
  }

  /** The session id (the hello frame's `sid`; after an accepted resume, the resumed session's). */
  get sessionId() {
    return this._sid;
  }

  /** Whether the current connection resumed the previous session (hello `resume.accepted`). */
  get recovered() {
    return this._recovered;
  }

  /**
   * Why the server refused the current connection's resume request (the hello's
   * `resume.reason`: 'invalid token', 'unknown session', 'session busy'; 'no hello' or
   * 'resume not supported' when the hello said nothing), or null (no resume asked, or accepted).
   */
  get resumeRefused() {
    return this._resumeRefused;
  }

  /** The server's `limits` from the latest hello frame, or null. */
  get limits() {
    return this._limits;
  }

  /** The stream position per namespace: `{ [namespace]: {epoch, offset} }` (a copy). */
  get positions() {
    const out = {};
    for (const [ns, p] of this._positions) out[ns] = { epoch: p.epoch, offset: p.offset };
    return out;
  }

  /** Listen to `recovery` frames (one per namespace per membership); returns an unsubscribe function. */
  onRecovery(cb) {
    this._recoveryListeners.add(cb);
    return () => this._recoveryListeners.delete(cb);
  }

  /** Listen to presence changes of rooms; returns an unsubscribe function. */
  onPresence(cb) {
    this._presenceListeners.add(cb);
    return () => this._presenceListeners.delete(cb);
  }

  /** The presence state of `room` (of `options.namespace`): user key -> [{sid, meta}] (a copy). */
  presence(room, options = {}) {
    const p = this._presence.get(this._mkey(normaliseNamespace(options?.namespace), checkName('room', room)));
    return p ? copyPresence(p.state) : {};
  }

  /** Listen to `error` messages of the server that answer no request of this client. */
  onError(cb) {
    this._errorListeners.add(cb);
    return () => this._errorListeners.delete(cb);
  }

  /** Handle server events; returns a function that removes the handler. */
  on(event, handler, options = {}) {
    const key = this._key(normaliseNamespace(options?.namespace), checkName('event', event));
    if (typeof handler !== 'function') throw new TypeError('wsu: a handler must be a function');
    let list = this._handlers.get(key);
    if (!list) this._handlers.set(key, (list = []));
    list.push(handler);
    return () => this.off(event, handler, options);
  }

  /** Remove a handler added with `on` (all handlers of the event when `handler` is omitted). */
  off(event, handler, options = {}) {
    const key = this._key(normaliseNamespace(options?.namespace), event);
    const list = this._handlers.get(key);
    if (!list) return;
    if (handler === undefined) {
      this._handlers.delete(key);
      return;
    }
    const i = list.indexOf(handler);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this._handlers.delete(key);
  }

  /** Send an event (no ack). Buffered while disconnected; throws WsuError when it cannot be. */
  emit(event, data, options = {}) {
    const frame = this._eventFrame(event, data, options?.namespace);
    this._send(frame, null);
  }

  /** Send an event and wait for the server's ack. */
  emitWithAck(event, data, options = {}) {
    let frame;
    try {
      frame = this._eventFrame(event, data, options?.namespace);
    } catch (e) {
      return Promise.reject(e);
    }
    const timeout = options?.timeout ?? this._ackTimeout;
    return new Promise((resolve, reject) => {
      const id = this._newId();
      frame.ackId = id;
      const req = { resolve, reject, timer: null, gen: -1, sent: false, entry: null };
      try {
        this._send(frame, req);
      } catch (e) {
        reject(e);
        return;
      }
      this._requests.set(id, req);
      if (Number.isFinite(timeout)) {
        req.timer = setTimeout(() => {
          this._requests.delete(id);
          if (req.entry) req.entry.cancelled = true;
          reject(new WsuError('timeout', `no ack for "${frame.event}" within ${timeout} ms`));
        }, Math.max(0, timeout));
      }
    });
  }

  /** Join a room (of `options.namespace`, default "/"); remembered and re-joined after reconnecting. */
  join(room, options = {}) {
    return this._join(normaliseNamespace(options?.namespace), checkName('room', room));
  }

  /** Leave a room; it is no longer re-joined. */
  leave(room, options = {}) {
    return this._leave(normaliseNamespace(options?.namespace), checkName('room', room));
  }

  /** Join a namespace; remembered and re-joined (before rooms) after reconnecting. */
  joinNamespace(namespace) {
    return this._join(normaliseNamespace(namespace), null);
  }

  /** Leave a namespace and all its rooms; they are no longer re-joined. */
  leaveNamespace(namespace) {
    return this._leave(normaliseNamespace(namespace), null);
  }

  /** A JSON ping; resolves with the round-trip time in milliseconds. */
  ping(options = {}) {
    if (!this._open) {
      return Promise.reject(new WsuError('disconnected', 'not connected'));
    }
    const timeout = options?.timeout ?? this._ackTimeout;
    return new Promise((resolve, reject) => {
      const p = { resolve, reject, start: now(), timer: null, done: false };
      this._pings.push(p);
      if (Number.isFinite(timeout)) {
        p.timer = setTimeout(() => {
          // Stays in the queue: its pong, if it ever comes, must not answer a later ping.
          p.done = true;
          reject(new WsuError('timeout', `no pong within ${timeout} ms`));
        }, Math.max(0, timeout));
      }
      this._raw({ type: 'ping', namespace: ROOT });
    });
  }

  /** Close with code 1000 and `reason`; the client does not reconnect. */
  close(reason = '') {
    if (this._closed && !this._ws) return;
    this._token = null; // a closed session cannot be resumed
    const ws = this._ws;
    this._finish('client closed');
    if (ws) {
      try {
        ws.close(NORMAL, truncateReason(reason));
      } catch {
        // already closing
      }
    }
    this._setState({ state: 'disconnected', code: NORMAL, reason: String(reason ?? ''), willReconnect: false });
  }

  // ---- internals ----

  _key(namespace, name) {
    return `${namespace}\u0000${name}`;
  }

  _newId() {
    this._nextId += 1;
    return String(this._nextId);
  }

  _eventFrame(event, data, namespace) {
    const frame = { type: 'event', namespace: normaliseNamespace(namespace), event: checkName('event', event) };
    if (data !== undefined) frame.data = data;
    return frame;
  }

  _setState(change) {
    this._state = change.state;
    const ev = { attempt: this._attempt, ...change };
    for (const cb of [...this._stateListeners]) {
      try {
        cb(ev);
      } catch (e) {
        reportLater(e);
      }
    }
  }

  _emitError(err) {
    for (const cb of [...this._errorListeners]) {
      try {
        cb(err);
      } catch (e) {
        reportLater(e);
      }
    }
  }

  _raw(msg) {
    this._ws.send(JSON.stringify(msg));
  }

  /** Send now when ready, else buffer; `req` is the ack request, if any. */
  _send(frame, req) {
    // Encoded at once: data that JSON cannot encode fails here, not at flush time.
    const text = JSON.stringify(frame);
    this._checkSize(text, frame);
    if (this._ready) {
      if (req) {
        req.gen = this._gen;
        req.sent = true;
      }
      this._ws.send(text);
      return;
    }
    if (this._closed) {
      throw new WsuError('disconnected', 'the client is closed');
    }
    const live = this._buffer.filter((e) => !e.cancelled).length;
    if (live >= this._bufferLimit) {
      throw new WsuError('buffer-full', `offline buffer full (${this._bufferLimit} messages)`);
    }
    const entry = { text, req, cancelled: false };
    if (req) req.entry = entry;
    this._buffer.push(entry);
  }

  /** Throw a MessageTooLargeError when `text` exceeds the server's maxMessageSize. */
  _checkSize(text, frame) {
    const limit = this._limits?.maxMessageSize;
    if (typeof limit !== 'number' || !Number.isFinite(limit) || text.length * 3 <= limit) return;
    const size = utf8Length(text);
    if (size <= limit) return;
    if (!frame) frame = JSON.parse(text);
    const what = frame.type === 'event' ? `event "${frame.event}"` : `${frame.type} of "${frame.room ?? frame.namespace}"`;
    throw new MessageTooLargeError(size, limit, what);
  }

  _flush() {
    const entries = this._buffer;
    this._buffer = [];
    for (const e of entries) {
      if (e.cancelled) continue;
      // Buffered before the first hello told the limit: refused now, not sent.
      try {
        this._checkSize(e.text, null);
      } catch (err) {
        if (e.req) {
          this._dropRequest(e.req);
          e.req.reject(err);
        } else {
          reportLater(err);
        }
        continue;
      }
      if (e.req) {
        e.req.gen = this._gen;
        e.req.sent = true;
        e.req.entry = null;
      }
      this._ws.send(e.text);
    }
  }

  _dropRequest(req) {
    for (const [id, r] of this._requests) {
      if (r === req) {
        this._requests.delete(id);
        if (r.timer) clearTimeout(r.timer);
        return;
      }
    }
  }

  /** The resume parameters for the next attempt, or null without a token. */
  _resumeParams() {
    if (!this._token) return null;
    const offsets = {};
    for (const [ns, p] of this._positions) offsets[ns] = { epoch: p.epoch, offset: p.offset };
    return { token: this._token, offsets: this._positions.size ? JSON.stringify(offsets) : null };
  }

  _openSocket() {
    this._gen += 1;
    const gen = this._gen;
    let ws;
    try {
      const resume = this._resumeParams();
      const url = resolveUrl(this._url, this._query, resume);
      this._resuming = resume !== null;
      ws = new this._WebSocket(url);
    } catch (e) {
      // A malformed URL is not worth retrying.
      this._finish('invalid url');
      this._setState({ state: 'gave-up', code: 0, reason: toMessage(e), willReconnect: false });
      return;
    }
    this._ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      if (gen === this._gen) this._onOpen(gen);
    };
    ws.onmessage = (ev) => {
      if (gen === this._gen) this._onMessage(ev.data);
    };
    ws.onclose = (ev) => {
      if (gen === this._gen) this._onClose(ev.code, ev.reason);
    };
    ws.onerror = () => {
      // Always followed by a close event.
    };
  }

  /** Resolves with the hello's data, or null (first frame not a hello, or helloTimeout). */
  _waitHello() {
    if (this._hello) return Promise.resolve(this._hello);
    const timeout = this._resuming ? Math.max(this._helloTimeout, this._ackTimeout) : this._helloTimeout;
    if (!(timeout > 0)) return Promise.resolve(null);
    return new Promise((resolve) => {
      const w = { resolve, timer: null };
      w.timer = Number.isFinite(timeout) ? setTimeout(() => this._endHelloWait(null), timeout) : null;
      this._helloWaiter = w;
    });
  }

  _endHelloWait(value) {
    const w = this._helloWaiter;
    if (!w) return;
    this._helloWaiter = null;
    if (w.timer) clearTimeout(w.timer);
    w.resolve(value);
  }

  async _onOpen(gen) {
    this._open = true;
    this._startHeartbeat(gen);
    this._hello = null;
    this._recovered = false;
    this._resumeRefused = null;
    const hello = await this._waitHello();
    if (gen !== this._gen || !this._open) return;
    const resumed = this._resuming && hello?.resume?.accepted === true;
    this._recovered = resumed;
    // The session now lives on this transport (or was not resumed): the dead ones can go. A
    // close frame on them cannot end the session any more.
    this._closeAbandoned();
    if (this._resuming && !resumed) {
      const why = hello?.resume?.reason;
      this._resumeRefused = typeof why === 'string' && why !== '' ? why : hello ? 'resume not supported' : 'no hello';
    }
    let all = [...this._memberships.values()];
    const leftOffline = this._leftOffline;
    this._leftOffline = [];
    if (resumed) {
      // The server restored the session's namespaces and rooms: only what was joined while
      // disconnected is joined, and what was left meanwhile is left now.
      all = all.filter((m) => !m.confirmed);
      for (const l of leftOffline) {
        if (!this._memberships.has(this._mkey(l.namespace, l.room))) {
          this._membershipRequest('leave', l.namespace, l.room).catch(() => {});
        }
      }
    } else {
      // A fresh session: positions and presence views of the old one are meaningless.
      this._positions.clear();
      this._presence.clear();
    }
    // Namespaces first, then rooms (a room join also joins its namespace, but a namespace's
    // connect hook must decide before its rooms are entered).
    const ordered = [...all.filter((m) => m.room === null), ...all.filter((m) => m.room !== null)];
    const joins = ordered.map((m) => this._rejoin(m));
    await Promise.all(joins);
    if (gen !== this._gen || !this._open) return;
    const attempt = this._attempt;
    this._attempt = 0;
    this._ready = true;
    this._flush();
    const change = { state: 'connected', attempt, resumed };
    if (this._resumeRefused !== null) change.resumeRefused = this._resumeRefused;
    this._setState(change);
  }

  async _rejoin(m) {
    try {
      await this._membershipRequest('join', m.namespace, m.room);
      m.confirmed = true;
      this._settleWaiters(m, null);
    } catch (e) {
      if (e.kind === 'disconnected') return; // kept: tried again on the next connection
      if (e.kind === 'server' && this._memberships.get(this._mkey(m.namespace, m.room)) === m) {
        this._memberships.delete(this._mkey(m.namespace, m.room)); // refused: not retried
      }
      this._settleWaiters(m, e);
    }
  }

  _settleWaiters(m, err) {
    const waiters = m.waiters;
    m.waiters = [];
    for (const w of waiters) {
      if (err) w.reject(err);
      else w.resolve();
    }
  }

  _mkey(namespace, room) {
    return room === null ? namespace : `${namespace}\u0000${room}`;
  }

  /** Send a join/leave with an ack id on the open socket; resolves on the server's ack. */
  _membershipRequest(type, namespace, room) {
    return new Promise((resolve, reject) => {
      if (!this._open) {
        reject(new WsuError('disconnected', 'not connected'));
        return;
      }
      const id = this._newId();
      const req = { resolve, reject, timer: null, gen: this._gen, sent: true, entry: null };
      this._requests.set(id, req);
      if (Number.isFinite(this._ackTimeout)) {
        req.timer = setTimeout(() => {
          this._requests.delete(id);
          reject(new WsuError('timeout', `no answer to ${type} within ${this._ackTimeout} ms`));
        }, Math.max(0, this._ackTimeout));
      }
      const msg = { type, namespace };
      if (room !== null) msg.room = room;
      msg.ackId = id;
      this._raw(msg);
    });
  }

  _join(namespace, room) {
    const key = this._mkey(namespace, room);
    let m = this._memberships.get(key);
    if (!m) {
      m = { namespace, room, waiters: [], confirmed: false };
    }
    if (this._closed) {
      return Promise.reject(new WsuError('disconnected', 'the client is closed'));
    }
    // The frame the join will be sent as (with the next ack id): refused at once when too large.
    const probe = { type: 'join', namespace };
    if (room !== null) probe.room = room;
    probe.ackId = String(this._nextId + 1);
    try {
      this._checkSize(JSON.stringify(probe), probe);
    } catch (e) {
      return Promise.reject(e);
    }
    this._memberships.set(key, m);
    const wait = () => new Promise((resolve, reject) => m.waiters.push({ resolve, reject }));
    if (!this._open) return wait();
    return this._membershipRequest('join', namespace, room).then(
      () => {
        m.confirmed = true;
        this._settleWaiters(m, null);
      },
      (e) => {
        if (e.kind === 'disconnected' && !this._closed && this._memberships.get(key) === m) {
          return wait(); // sent but not answered: settled by the rejoin
        }
        if (e.kind === 'server' && this._memberships.get(key) === m) this._memberships.delete(key);
        throw e;
      },
    );
  }

  _leave(namespace, room) {
    const drop = (key) => {
      const m = this._memberships.get(key);
      if (!m) return;
      this._memberships.delete(key);
      this._presence.delete(key);
      for (const pk of [...this._presence.keys()]) {
        if (m.room === null && this._presence.get(pk).namespace === m.namespace) this._presence.delete(pk);
      }
      // Left while disconnected: a resumed session still has it, so it is left after the resume.
      if (!this._open && m.confirmed && this._token) this._leftOffline.push({ namespace: m.namespace, room: m.room });
      this._settleWaiters(m, new WsuError('disconnected', 'left before the join was confirmed'));
    };
    drop(this._mkey(namespace, room));
    if (room === null) {
      for (const m of [...this._memberships.values()]) {
        if (m.namespace === namespace) drop(this._mkey(m.namespace, m.room));
      }
    }
    if (!this._open) return Promise.resolve();
    return this._membershipRequest('leave', namespace, room).then(() => undefined);
  }

  _onMessage(raw) {
    this._lastSeen = now();
    this._hbPingAt = 0;
    let msg;
    try {
      msg = JSON.parse(typeof raw === 'string' ? raw : new TextDecoder().decode(raw));
    } catch {
      this._emitError({ namespace: ROOT, message: 'invalid message from the server' });
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    const namespace = msg.namespace || ROOT;
    if (msg.type !== 'hello') this._endHelloWait(null); // the server sends no hello
    switch (msg.type) {
      case 'hello':
        this._onHello(msg.data);
        break;
      case 'recovery':
        this._onRecovery(namespace, msg.data);
        break;
      case 'presence':
        this._onPresence(namespace, msg.room, msg.data);
        break;
      case 'event':
        this._onEvent(namespace, msg);
        break;
      case 'ack': {
        const req = this._takeRequest(msg.ackId);
        if (req) req.resolve(msg.data);
        break;
      }
      case 'error': {
        const req = this._takeRequest(msg.ackId);
        const text = typeof msg.error === 'string' ? msg.error : 'error';
        if (req) {
          req.reject(new WsuError('server', text, msg.data));
        } else {
          const err = { namespace, message: text };
          if (typeof msg.event === 'string') err.event = msg.event;
          if (msg.data !== undefined) err.data = msg.data;
          this._emitError(err);
        }
        break;
      }
      case 'pong':
        this._onPong();
        break;
      case 'ping':
        if (this._open) this._raw({ type: 'pong', namespace });
        break;
      default:
        break;
    }
  }

  _onHello(data) {
    if (!data || typeof data !== 'object') return;
    this._hello = data;
    if (typeof data.sid === 'string') this._sid = data.sid;
    // Single use: the latest token replaces the older one; none means no recovery on this server.
    this._token = typeof data.token === 'string' && data.token !== '' ? data.token : null;
    if (data.limits && typeof data.limits === 'object') this._limits = data.limits;
    this._endHelloWait(data);
  }

  _onRecovery(namespace, data) {
    if (!data || typeof data !== 'object') return;
    const events = Array.isArray(data.events) ? data.events : [];
    // Handed to the handlers in order, before any later frame (this runs synchronously).
    for (const ev of events) {
      if (ev && typeof ev === 'object' && ev.type === 'event' && typeof ev.event === 'string') {
        this._onEvent(ev.namespace || namespace, ev);
      }
    }
    if (isPosition(data.epoch, data.offset)) {
      this._positions.set(namespace, { epoch: data.epoch, offset: data.offset });
    }
    const info = {
      namespace,
      recovered: data.recovered === true,
      replayed: events.length,
      epoch: data.epoch,
      offset: data.offset,
    };
    if (typeof data.reason === 'string') info.reason = data.reason;
    for (const cb of [...this._recoveryListeners]) {
      try {
        cb(info);
      } catch (e) {
        reportLater(e);
      }
    }
  }

  _onPresence(namespace, room, data) {
    if (typeof room !== 'string' || !data || typeof data !== 'object') return;
    const key = this._mkey(namespace, room);
    let view = this._presence.get(key);
    if (!view) {
      view = { namespace, room, state: new Map() };
      this._presence.set(key, view);
    }
    const list = (conns) => (Array.isArray(conns) ? conns.filter((c) => c && typeof c.sid === 'string') : []);
    let change;
    if (data.state && typeof data.state === 'object') {
      view.state = new Map();
      for (const [user, conns] of Object.entries(data.state)) {
        const l = list(conns).map((c) => ({ sid: c.sid, meta: c.meta ?? null }));
        if (l.length) view.state.set(user, l);
      }
      change = { namespace, room, kind: 'state', joins: {}, leaves: {} };
    } else {
      const joins = data.joins && typeof data.joins === 'object' ? data.joins : {};
      const leaves = data.leaves && typeof data.leaves === 'object' ? data.leaves : {};
      for (const [user, conns] of Object.entries(joins)) {
        const cur = view.state.get(user) ?? [];
        for (const c of list(conns)) {
          const i = cur.findIndex((x) => x.sid === c.sid);
          const entry = { sid: c.sid, meta: c.meta ?? null };
          if (i >= 0) cur[i] = entry;
          else cur.push(entry);
        }
        if (cur.length) view.state.set(user, cur);
      }
      for (const [user, conns] of Object.entries(leaves)) {
        const cur = view.state.get(user);
        if (!cur) continue;
        const gone = new Set(list(conns).map((c) => c.sid));
        const rest = cur.filter((x) => !gone.has(x.sid));
        if (rest.length) view.state.set(user, rest);
        else view.state.delete(user);
      }
      change = { namespace, room, kind: 'diff', joins, leaves };
    }
    change.state = copyPresence(view.state);
    for (const cb of [...this._presenceListeners]) {
      try {
        cb(change);
      } catch (e) {
        reportLater(e);
      }
    }
  }

  _takeRequest(id) {
    if (typeof id !== 'string') return null;
    const req = this._requests.get(id);
    if (!req) return null;
    this._requests.delete(id);
    if (req.timer) clearTimeout(req.timer);
    return req;
  }

  _onPong() {
    const p = this._pings.shift();
    if (!p || p.done) return;
    p.done = true;
    if (p.timer) clearTimeout(p.timer);
    p.resolve(now() - p.start);
  }

  _onEvent(namespace, msg) {
    const list = this._handlers.get(this._key(namespace, msg.event)) ?? [];
    const info = { namespace, event: msg.event, ackId: msg.ackId };
    const ackId = typeof msg.ackId === 'string' ? msg.ackId : undefined;
    const gen = this._gen;
    let answer;
    // The last position handled (set before the handlers, so it stays set if one throws).
    if (isPosition(msg.epoch, msg.offset)) {
      this._positions.set(namespace, { epoch: msg.epoch, offset: msg.offset });
    }
    if (list.length === 0) {
      answer = Promise.reject(new Error(`no handler for ${msg.event}`));
    } else {
      for (const [i, handler] of [...list].entries()) {
        let out;
        try {
          out = Promise.resolve(handler(msg.data, info));
        } catch (e) {
          out = Promise.reject(e);
        }
        if (i === 0) answer = out;
        else out.catch(reportLater);
      }
    }
    if (ackId === undefined) {
      answer.catch((e) => {
        if (list.length > 0) reportLater(e);
      });
      return;
    }
    // An ack id belongs to the connection that carried it: answers to an older one are dropped.
    const live = () => gen === this._gen && this._open;
    // A failed handler (or no handler) answers with an `error` carrying the ack id, as the Rust
    // client does; the server's `emit_with_ack` then fails with `AckError::Rejected`.
    const fail = (e) => {
      if (!live()) return;
      this._raw({ type: 'error', namespace, event: msg.event, ackId, error: toMessage(e) });
    };
    const reply = (data) => {
      if (!live()) return;
      const frame = { type: 'ack', namespace, event: msg.event, ackId };
      if (data !== undefined) frame.data = data;
      try {
        this._raw(frame);
      } catch (e) {
        fail(e); // the value cannot be sent as JSON (a BigInt, a cycle...)
      }
    };
    answer.then(reply, fail);
  }

  /**
   * The client-side heartbeat: after `interval` ms without any frame a JSON ping goes out (its
   * pong is not given to `ping()` callers); when it stays unanswered for `timeout - interval`
   * ms more the link is dead. Timers of background tabs may fire late: the link is only given
   * up after a ping had its full time.
   */
  _startHeartbeat(gen) {
    this._stopHeartbeat();
    this._lastSeen = now();
    this._hbPingAt = 0;
    const hb = this._heartbeat;
    if (!hb || !(hb.interval > 0) || !Number.isFinite(hb.interval)) return;
    const grace = Math.max(0, (Number.isFinite(hb.timeout) ? hb.timeout : Infinity) - hb.interval);
    const tick = Math.max(10, Math.min(hb.interval, grace || hb.interval) / 2);
    this._hbTimer = setInterval(() => {
      if (gen !== this._gen || !this._open) {
        this._stopHeartbeat();
        return;
      }
      const t = now();
      if (t - this._lastSeen < hb.interval) return;
      if (this._hbPingAt === 0) {
        this._hbPingAt = t;
        this._pings.push({ done: true }); // its pong must not answer an application's ping
        try {
          this._raw({ type: 'ping', namespace: ROOT });
        } catch {
          // closing: the close event follows
        }
      } else if (t - this._hbPingAt >= grace) {
        this._heartbeatLost();
      }
    }, tick);
  }

  _stopHeartbeat() {
    if (this._hbTimer) clearInterval(this._hbTimer);
    this._hbTimer = null;
  }

  /**
   * The link died without telling us. The WebSocket is NOT closed now: a close frame reaching
   * the server would end the session; the server closes it (4003) when the session resumes on
   * the next transport, and the client closes it once that transport has its hello.
   */
  _heartbeatLost() {
    const ws = this._ws;
    this._gen += 1; // its late callbacks are ignored
    if (ws) {
      ws.onmessage = null;
      ws.onclose = null;
      ws.onopen = null;
      this._abandoned.add(ws);
    }
    this._onClose(1006, 'heartbeat lost');
  }

  _closeAbandoned() {
    for (const ws of this._abandoned) {
      try {
        ws.close(NORMAL, 'heartbeat lost');
      } catch {
        // already closed
      }
    }
    this._abandoned.clear();
  }

  _onClose(code, reason) {
    this._stopHeartbeat();
    const wasOpen = this._open;
    this._ws = null;
    this._open = false;
    this._ready = false;
    this._endHelloWait(null);
    this._failInFlight(new WsuError('disconnected', `connection closed (${code}${reason ? `: ${reason}` : ''})`));
    const final = !this._reconnect || !shouldReconnect(code, this._reconnect.onNormalClose);
    if (final) {
      this._finish(`connection closed (${code})`);
      this._setState({ state: 'disconnected', code, reason, willReconnect: false });
      return;
    }
    if (wasOpen) {
      this._setState({ state: 'disconnected', code, reason, willReconnect: true });
    }
    this._scheduleReconnect(code, reason);
  }

  _scheduleReconnect(code, reason) {
    const policy = this._reconnect;
    if (this._attempt >= policy.maxAttempts) {
      this._finish('gave up reconnecting');
      this._setState({ state: 'gave-up', code, reason, willReconnect: false });
      return;
    }
    this._attempt += 1;
    const delay = withJitter(backoffDelay(policy, this._attempt), policy.jitter, policy.maxDelay);
    this._setState({ state: 'reconnecting', code, reason, delay, willReconnect: true });
    this._timer = setTimeout(() => {
      this._timer = null;
      if (!this._closed) this._openSocket();
    }, delay);
  }

  /** Reject what was sent on the connection that just ended (buffered emits stay). */
  _failInFlight(err) {
    for (const [id, req] of [...this._requests]) {
      if (req.sent) {
        this._requests.delete(id);
        if (req.timer) clearTimeout(req.timer);
        req.reject(err);
      }
    }
    const pings = this._pings;
    this._pings = [];
    for (const p of pings) {
      if (p.done) continue;
      p.done = true;
      if (p.timer) clearTimeout(p.timer);
      p.reject(err);
    }
  }

  /** No more connections: fail everything that waits. */
  _finish(why) {
    this._closed = true;
    this._stopHeartbeat();
    this._closeAbandoned();
    if (this._timer) {
      clearTimeout(this._timer);
      this._timer = null;
    }
    this._gen += 1; // ignore the callbacks of the current WebSocket
    this._ws = null;
    this._open = false;
    this._ready = false;
    this._endHelloWait(null);
    const err = new WsuError('disconnected', why);
    for (const [, req] of this._requests) {
      if (req.timer) clearTimeout(req.timer);
      req.reject(err);
    }
    this._requests.clear();
    this._buffer = [];
    this._failInFlight(err);
    for (const m of this._memberships.values()) this._settleWaiters(m, err);
  }
}

function now() {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}

function reportLater(e) {
  // A listener's or handler's own error: surface it like an uncaught one, without breaking us.
  setTimeout(() => {
    throw e;
  }, 0);
}

export default { connect, WsuClient, WsuError, MessageTooLargeError, DEFAULTS, backoffDelay, withJitter, shouldReconnect };
