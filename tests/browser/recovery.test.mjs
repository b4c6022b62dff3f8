// Connection-state recovery of the browser client (wsu/js/wsu.js) in headless Chromium against a
// REAL wsu server with recovery on (tests/src/bin/browser_server.rs, WSU_RECOVERY_TTL_MS), the
// page reaching it through a TCP proxy written here (node:net) that can cut the link abruptly:
// both sockets destroyed, no close frame, as a network failure. Run through tests/browser/run.sh.
//
// Environment: WSU_BROWSER_SERVER (the server binary), CHROMIUM (default /usr/bin/chromium).
//
// Page A (the one that loses its link) loads the page and opens its WebSocket through the proxy;
// page B talks to the server directly and broadcasts. The tests run in order and share both.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const SERVER_BIN = process.env.WSU_BROWSER_SERVER ?? path.join(root, 'target/debug/browser_server');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const OUT = path.join(here, 'out');
const WAIT = 10_000;
/** The server's session TTL: long enough for test 1's short outage, short enough to wait out. */
const SESSION_TTL_MS = 2000;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Start the test server (recovery on) on `port`; resolves once it prints its "listening" line. */
function startServer(port) {
  return new Promise((resolve, reject) => {
    const child = spawn(SERVER_BIN, [String(port)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, WSU_RECOVERY_TTL_MS: String(SESSION_TTL_MS) },
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server did not start within ${WAIT} ms: ${out}${err}`));
    }, WAIT);
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('listening on')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code ?? signal}) before listening: ${out}${err}`));
    });
  });
}

async function killServer(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/**
 * A TCP proxy on 127.0.0.1 to `target`. `cut()` destroys every link at once (no close frame
 * reaches either side); while `down`, new connections are destroyed as soon as they are
 * accepted (the browser sees 1006 and keeps retrying) and nothing reaches the server.
 * `cutClientSide()` destroys only the browser's side and leaves the server's socket open and
 * silent (a half-open link, from the server's point of view). `blackhole()` keeps both
 * sockets open but forwards nothing more (a link that died silently: neither side is told).
 * `upstreamBytes` counts what the browser sent.
 */
async function startProxy(target) {
  const links = new Set();
  const proxy = {
    down: false,
    upstreamBytes: 0,
    accepted: 0,
    port: 0,
    cut() {
      for (const l of links) {
        l.client.destroy();
        l.upstream.destroy();
      }
      links.clear();
    },
    cutClientSide() {
      for (const l of links) {
        l.client.unpipe(l.upstream);
        l.upstream.unpipe(l.client);
        l.upstream.pause(); // nothing read, nothing answered: the server sees a silent peer
        l.client.destroy();
        l.halfOpen = true;
      }
    },
    blackhole() {
      for (const l of links) {
        l.client.unpipe(l.upstream);
        l.upstream.unpipe(l.client);
        l.client.pause();
        l.upstream.pause(); // both sockets stay open; nothing goes through either way
        l.halfOpen = true;
      }
    },
    destroyAll() {
      for (const l of links) {
        l.client.destroy();
        l.upstream.destroy();
      }
      links.clear();
    },
  };
  const srv = net.createServer((client) => {
    proxy.accepted += 1;
    if (proxy.down) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target, '127.0.0.1');
    const link = { client, upstream, halfOpen: false };
    links.add(link);
    const end = () => {
      if (link.halfOpen) return;
      links.delete(link);
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (d) => {
      proxy.upstreamBytes += d.length;
    });
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  proxy.port = srv.address().port;
  proxy.close = () =>
    new Promise((resolve) => {
      proxy.destroyAll();
      srv.close(() => resolve());
    });
  return proxy;
}

async function until(page, fn, arg) {
  const handle = await page.waitForFunction(fn, arg, { timeout: WAIT, polling: 20 });
  return handle.jsonValue();
}

/** A client in the page as `window[name]`, recording states, recovery frames and events. */
async function makeClient(page, name, options = {}) {
  await page.evaluate(
    ({ name, options }) => {
      const rec = { states: [], recoveries: [], news: [], chatNews: [], errors: [] };
      const c = window.wsu.connect('/ws', options);
      c.onState((s) => {
        rec.states.push(s);
        window.log(`${name}: state ${JSON.stringify(s)}`);
      });
      c.onRecovery((r) => {
        rec.recoveries.push(r);
        window.log(`${name}: recovery ${JSON.stringify(r)}`);
      });
      c.onError((e) => rec.errors.push(e));
      c.on('news', (d, info) => rec.news.push(d));
      c.on('news', (d) => rec.chatNews.push(d), { namespace: '/chat' });
      window[name] = c;
      window[`${name}Rec`] = rec;
    },
    { name, options },
  );
}

const T = { timeout: 30_000 };
/** A's client-side heartbeat: a JSON ping after 300 ms of silence; lost after 1 s without a frame. */
const HEARTBEAT = { interval: 300, timeout: 1000 };
const FAST = { initialDelay: 50, maxDelay: 200, factor: 2, jitter: 0.5 };
const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);

let port;
let server;
let proxy;
let browser;
let profile;
let pageA;
let pageB;
const pageErrors = [];

before(async () => {
  port = await freePort();
  server = await startServer(port);
  proxy = await startProxy(port);
  profile = await mkdtemp(path.join(os.tmpdir(), 'wsu-chromium-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 900, height: 700 },
  });
  pageA = browser.pages()[0] ?? (await browser.newPage());
  pageB = await browser.newPage();
  for (const [label, page, p] of [
    ['A', pageA, proxy.port],
    ['B', pageB, port],
  ]) {
    page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`));
    await page.goto(`http://127.0.0.1:${p}/`);
    await until(page, () => window.wsuReady === true);
  }
}, { timeout: 60_000 });

after(async () => {
  await browser?.close();
  await proxy?.close();
  if (server) await killServer(server);
  if (profile) await rm(profile, { recursive: true, force: true });
});

/** Broadcast `values` from page B to `room` (of `namespace`), one acked emit after the other. */
function broadcast(room, values, namespace = '/') {
  return pageB.evaluate(
    async ({ room, values, namespace }) => {
      for (const data of values) await window.b.emitWithAck('broadcast', { room, data }, { namespace });
    },
    { room, values, namespace },
  );
}

/** The number of `connected` states of A's client. */
const connections = () => pageA.evaluate(() => window.aRec.states.filter((s) => s.state === 'connected').length);

test('A (through the proxy) and B connect; the hello carries a token; A joins rooms in "/" and "/chat"', T, async () => {
  await makeClient(pageA, 'a', { reconnect: FAST, ackTimeout: 3000, heartbeat: HEARTBEAT });
  await makeClient(pageB, 'b', { reconnect: FAST, ackTimeout: 3000 });
  await until(pageA, () => window.a.state === 'connected');
  await until(pageB, () => window.b.state === 'connected');
  await pageA.evaluate(async () => {
    await window.a.join('r');
    await window.a.join('r', { namespace: '/chat' });
  });
  await pageB.evaluate(() => window.b.joinNamespace('/chat'));
  const a = await pageA.evaluate(() => ({
    sid: window.a.sessionId,
    recovered: window.a.recovered,
    token: typeof window.a._token,
    recoveries: window.aRec.recoveries.map((r) => [r.namespace, r.recovered, r.reason, r.replayed]),
    positions: Object.keys(window.a.positions).sort(),
    limits: window.a.limits?.maxMessageSize,
  }));
  assert.match(a.sid, /^[0-9a-f]{16}$/);
  assert.equal(a.recovered, false);
  assert.equal(a.token, 'string');
  assert.deepEqual(a.recoveries, [
    ['/', false, 'new', 0],
    ['/chat', false, 'new', 0],
  ]);
  assert.deepEqual(a.positions, ['/', '/chat']);
  assert.equal(a.limits, 65536);
  // Live broadcasts carry positions, and reach A once.
  await broadcast('r', ['live-0']);
  await broadcast('r', ['chat-live-0'], '/chat');
  await until(pageA, () => window.aRec.news.length === 1 && window.aRec.chatNews.length === 1);
});

test('1. link cut (1006): the page resumes its session and gets every missed broadcast once, in order', T, async () => {
  const before = await pageA.evaluate(() => ({ sid: window.a.sessionId, positions: window.a.positions }));
  // A stream from B that the cut falls in the middle of: some events arrive live, some are in
  // flight when the link dies, the rest are sent while A is away.
  const N = 60;
  const sending = pageB.evaluate(
    async ({ N }) => {
      for (let i = 0; i < N; i++) {
        await window.b.emitWithAck('broadcast', { room: 'r', data: i });
        await window.b.emitWithAck('broadcast', { room: 'r', data: `c${i}` }, { namespace: '/chat' });
        if (i % 10 === 9) await new Promise((r) => setTimeout(r, 5));
      }
    },
    { N },
  );
  await until(pageA, () => window.aRec.news.length >= 11);
  proxy.down = true;
  proxy.cut();
  await until(pageA, () => window.a.state === 'reconnecting');
  await sending;
  const dropped = await pageA.evaluate(() => window.aRec.states.find((s) => s.state === 'disconnected'));
  assert.equal(dropped.code, 1006);
  assert.equal(dropped.willReconnect, true);
  // B sent everything while A was (at least partly) away; now A may come back.
  const seenBefore = await pageA.evaluate(() => window.aRec.news.length - 1);
  assert.ok(seenBefore < N, `A saw ${seenBefore} of ${N} before the cut`);
  proxy.down = false;
  await until(pageA, () => window.a.state === 'connected' && window.aRec.states.at(-1).state === 'connected');
  await until(pageA, (N) => window.aRec.news.length >= N + 1 && window.aRec.chatNews.length >= N + 1, N);
  const a = await pageA.evaluate(() => ({
    sid: window.a.sessionId,
    recovered: window.a.recovered,
    last: window.aRec.states.at(-1),
    news: window.aRec.news,
    chatNews: window.aRec.chatNews,
    recoveries: window.aRec.recoveries.slice(2),
    positions: window.a.positions,
  }));
  assert.equal(a.sid, before.sid, 'the same session id');
  assert.equal(a.recovered, true);
  assert.equal(a.last.resumed, true);
  assert.deepEqual(a.news, ['live-0', ...range(0, N)], 'every message once, in order ("/")');
  assert.deepEqual(a.chatNews, ['chat-live-0', ...range(0, N).map((i) => `c${i}`)], 'once, in order ("/chat")');
  const byNs = Object.fromEntries(a.recoveries.map((r) => [r.namespace, r]));
  assert.equal(a.recoveries.length, 2, JSON.stringify(a.recoveries));
  for (const ns of ['/', '/chat']) {
    assert.equal(byNs[ns].recovered, true, JSON.stringify(byNs[ns]));
    assert.equal(byNs[ns].reason, undefined);
    assert.equal(byNs[ns].epoch, before.positions[ns].epoch, 'same epoch');
    assert.ok(byNs[ns].offset > before.positions[ns].offset);
    assert.deepEqual(a.positions[ns], { epoch: byNs[ns].epoch, offset: byNs[ns].offset });
  }
  // A had handled at least 10 of the stream (news[0] is 'live-0') before the cut.
  assert.ok(byNs['/'].replayed >= 1 && byNs['/'].replayed <= N - 10, `replayed ${byNs['/'].replayed}`);
  // The server restored the rooms (the client did not rejoin them), and says it resumed.
  const who = await pageA.evaluate(() => window.a.emitWithAck('whoami'));
  assert.deepEqual(who, { sid: before.sid, recovered: true, rooms: ['r'] });
  // Live again: a later broadcast arrives once.
  await broadcast('r', ['after']);
  await until(pageA, () => window.aRec.news.at(-1) === 'after');
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(await pageA.evaluate(() => window.aRec.news.filter((d) => d === 'after').length), 1);
});

test('half-open link: the resume closes the old transport (4003) on the server; the page is not hurt', T, async () => {
  const before = await pageA.evaluate(() => ({ sid: window.a.sessionId, n: window.aRec.news.length }));
  const count = await connections();
  // Only the browser's side dies: the server still holds a silent, open transport.
  proxy.cutClientSide();
  await until(pageA, (count) => window.aRec.states.filter((s) => s.state === 'connected').length === count + 1, count);
  const a = await pageA.evaluate(() => ({ sid: window.a.sessionId, recovered: window.a.recovered, state: window.a.state }));
  assert.deepEqual(a, { sid: before.sid, recovered: true, state: 'connected' });
  await broadcast('r', ['after-half-open']);
  await until(pageA, () => window.aRec.news.at(-1) === 'after-half-open');
  assert.equal(await pageA.evaluate(() => window.aRec.news.length), before.n + 1);
  proxy.destroyAll(); // the stale server-side socket too (and A's live link: it resumes again)
  await until(pageA, (count) => window.aRec.states.filter((s) => s.state === 'connected').length === count + 2, count);
  assert.equal(await pageA.evaluate(() => window.a.recovered), true);
});

test('silently dead link: the client heartbeat notices, reconnects and resumes; nothing lost or doubled', T, async () => {
  const before = await pageA.evaluate(() => ({ sid: window.a.sessionId, n: window.aRec.news.length }));
  const count = await connections();
  proxy.blackhole();
  // Sent into the dead link (the server's socket still accepts writes): handled only by the replay.
  await broadcast('r', ['bh-0', 'bh-1', 'bh-2']);
  const started = Date.now();
  await until(pageA, () => window.aRec.states.at(-1).state !== 'connected');
  const elapsed = Date.now() - started;
  await until(pageA, (count) => window.aRec.states.filter((s) => s.state === 'connected').length === count + 1, count);
  const a = await pageA.evaluate((n) => ({
    sid: window.a.sessionId,
    recovered: window.a.recovered,
    dropped: window.aRec.states.filter((s) => s.state === 'disconnected').at(-1),
    news: window.aRec.news.slice(n),
  }), before.n);
  assert.ok(elapsed < 3 * HEARTBEAT.timeout, `noticed after ${elapsed} ms`);
  assert.deepEqual([a.dropped.code, a.dropped.reason, a.dropped.willReconnect], [1006, 'heartbeat lost', true]);
  assert.equal(a.sid, before.sid);
  assert.equal(a.recovered, true);
  await until(pageA, (n) => window.aRec.news.length >= n + 3, before.n);
  await broadcast('r', ['bh-after']);
  await until(pageA, () => window.aRec.news.at(-1) === 'bh-after');
  assert.deepEqual(await pageA.evaluate((n) => window.aRec.news.slice(n), before.n), ['bh-0', 'bh-1', 'bh-2', 'bh-after']);
  proxy.destroyAll();
  await until(pageA, (count) => window.aRec.states.filter((s) => s.state === 'connected').length === count + 2, count);
});

test('2a. resume refused after the session TTL: recovered false with the reason; rooms rejoined', T, async () => {
  const before = await pageA.evaluate(() => ({ sid: window.a.sessionId, r: window.aRec.recoveries.length }));
  const count = await connections();
  proxy.down = true;
  proxy.cut();
  await until(pageA, () => window.a.state === 'reconnecting');
  // Sent while A is away, to a session that then expires: never replayed.
  await broadcast('r', ['lost']);
  await new Promise((r) => setTimeout(r, SESSION_TTL_MS + 1000));
  proxy.down = false;
  await until(pageA, (count) => window.aRec.states.filter((s) => s.state === 'connected').length === count + 1, count);
  const a = await pageA.evaluate((n) => ({
    sid: window.a.sessionId,
    recovered: window.a.recovered,
    last: window.aRec.states.at(-1),
    recoveries: window.aRec.recoveries.slice(n).map((r) => [r.namespace, r.recovered, r.reason, r.replayed]),
  }), before.r);
  assert.notEqual(a.sid, before.sid, 'a fresh session');
  assert.equal(a.recovered, false);
  assert.equal(a.last.resumed, false);
  assert.equal(a.last.resumeRefused, 'unknown session');
  assert.deepEqual(a.recoveries, [
    ['/', false, 'new', 0],
    ['/chat', false, 'new', 0],
  ]);
  const who = await pageA.evaluate(() => window.a.emitWithAck('whoami'));
  assert.deepEqual(who, { sid: a.sid, recovered: false, rooms: ['r'] });
  await broadcast('r', ['after-expiry']);
  await broadcast('r', ['chat-after-expiry'], '/chat');
  await until(pageA, () => window.aRec.news.at(-1) === 'after-expiry' && window.aRec.chatNews.at(-1) === 'chat-after-expiry');
  assert.equal(await pageA.evaluate(() => window.aRec.news.includes('lost')), false);
});

test('2b. resume refused after a server restart: recovered false, new epoch, rooms rejoined', T, async () => {
  const before = await pageA.evaluate(() => ({
    sid: window.a.sessionId,
    r: window.aRec.recoveries.length,
    positions: window.a.positions,
  }));
  const count = await connections();
  await killServer(server);
  server = null;
  await until(pageA, () => window.a.state === 'reconnecting');
  server = await startServer(port);
  await until(pageA, (count) => window.aRec.states.filter((s) => s.state === 'connected').length === count + 1, count);
  await until(pageB, () => window.b.state === 'connected');
  const a = await pageA.evaluate((n) => ({
    sid: window.a.sessionId,
    recovered: window.a.recovered,
    last: window.aRec.states.at(-1),
    recoveries: window.aRec.recoveries.slice(n),
    positions: window.a.positions,
  }), before.r);
  assert.notEqual(a.sid, before.sid);
  assert.equal(a.recovered, false);
  assert.equal(a.last.resumed, false);
  // The new process has another secret (invalid token) and no sessions (unknown session).
  assert.ok(['invalid token', 'unknown session'].includes(a.last.resumeRefused), a.last.resumeRefused);
  assert.deepEqual(
    a.recoveries.map((r) => [r.namespace, r.recovered, r.reason]),
    [
      ['/', false, 'new'],
      ['/chat', false, 'new'],
    ],
  );
  for (const ns of ['/', '/chat']) assert.notEqual(a.positions[ns].epoch, before.positions[ns].epoch, 'new epoch');
  await broadcast('r', ['after-restart']);
  await until(pageA, () => window.aRec.news.at(-1) === 'after-restart');
  // And the new session resumes in its turn.
  const sid = a.sid;
  proxy.cut();
  await until(pageA, (count) => window.aRec.states.filter((s) => s.state === 'connected').length === count + 2, count);
  assert.deepEqual(await pageA.evaluate(() => [window.a.sessionId, window.a.recovered]), [sid, true]);
});

test('3. an over-size emit is refused in the page with MessageTooLargeError; nothing is sent', T, async () => {
  await until(pageA, () => window.a.state === 'connected');
  const sentBefore = proxy.upstreamBytes;
  const out = await pageA.evaluate(async () => {
    const c = window.a;
    const big = 'x'.repeat(70_000);
    let thrown = null;
    try {
      c.emit('record', { key: 'big', value: big });
    } catch (e) {
      thrown = {
        name: e.name,
        isWsuError: e instanceof window.wsu.WsuError,
        isTooLarge: e instanceof window.wsu.MessageTooLargeError,
        kind: e.kind,
        code: e.code,
        size: e.size,
        limit: e.limit,
        message: e.message,
      };
    }
    const rejected = await c.emitWithAck('record', { key: 'big', value: big }).then(
      () => null,
      (e) => ({ name: e.name, kind: e.kind, size: e.size }),
    );
    return { thrown, rejected, state: c.state };
  });
  const size = JSON.stringify({ type: 'event', namespace: '/', event: 'record', data: { key: 'big', value: 'x'.repeat(70_000) } }).length;
  assert.deepEqual(out.thrown, {
    name: 'MessageTooLargeError',
    isWsuError: true,
    isTooLarge: true,
    kind: 'too-large',
    code: 'WSU_MESSAGE_TOO_LARGE',
    size,
    limit: 65536,
    message: `wsu: event "record" is ${size} bytes, larger than the server's maxMessageSize of 65536 bytes; not sent`,
  });
  assert.equal(out.rejected?.name, 'MessageTooLargeError');
  assert.equal(out.rejected.kind, 'too-large');
  assert.ok(out.rejected.size > size, `the acked frame (with its ackId) is ${out.rejected.size} bytes`);
  assert.equal(out.state, 'connected');
  assert.ok(proxy.upstreamBytes - sentBefore < 1000, `${proxy.upstreamBytes - sentBefore} bytes went out`);
  // The connection is intact (no 1009), and the server never got the record.
  assert.deepEqual(await pageA.evaluate(() => window.a.emitWithAck('history', 'big')), []);
  assert.equal(await pageA.evaluate(() => window.aRec.states.at(-1).state), 'connected');
});

test('screenshots, and no uncaught page errors', T, async () => {
  await mkdir(OUT, { recursive: true });
  await pageA.screenshot({ path: path.join(OUT, 'recovery-a.png'), fullPage: true });
  assert.deepEqual(pageErrors, []);
});
