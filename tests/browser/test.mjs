// The wsu browser client (wsu/js/wsu.js) in headless Chromium against a real wsu server
// (tests/src/bin/browser_server.rs). Run through tests/browser/run.sh, which builds the server.
//
// Environment: WSU_BROWSER_SERVER (the server binary), CHROMIUM (default /usr/bin/chromium).
//
// The tests run in order and share two pages (A and B) and the server, which one test kills and
// starts again on the same port. Every wait is for an expected state or message (bounded by
// WAIT); the only fixed window is the one that checks that a refused client does NOT reconnect.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { backoffDelay, DEFAULTS, shouldReconnect, withJitter } from '../../wsu/js/wsu.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const SERVER_BIN = process.env.WSU_BROWSER_SERVER ?? path.join(root, 'target/debug/browser_server');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const OUT = path.join(here, 'out');
const WAIT = 10_000;

/** A free TCP port on 127.0.0.1 (bound then released). */
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

/** Start the test server on `port`; resolves once it prints its "listening" line. */
function startServer(port) {
  return new Promise((resolve, reject) => {
    const child = spawn(SERVER_BIN, [String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
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

/** Kill the server at once (like a crash: clients see 1006) and wait for it to be gone. */
async function killServer(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/** Wait until `fn` (run in the page) returns a truthy value; returns it. */
async function until(page, fn, arg) {
  const handle = await page.waitForFunction(fn, arg, { timeout: WAIT, polling: 20 });
  return handle.jsonValue();
}

/** Create a client in the page as `window[name]`, recording its states and `news` events. */
async function makeClient(page, name, options = {}) {
  await page.evaluate(
    ({ name, options, url }) => {
      const rec = { states: [], news: [], chatNews: [], errors: [] };
      const c = window.wsu.connect(url ?? '/ws', options);
      c.onState((s) => {
        rec.states.push(s);
        window.log(`${name}: state ${JSON.stringify(s)}`);
        if (name === 'c') window.showState(s.state);
      });
      c.onError((e) => rec.errors.push(e));
      c.on('news', (d) => {
        rec.news.push(d);
        window.log(`${name}: news ${JSON.stringify(d)}`);
      });
      c.on('news', (d) => rec.chatNews.push(d), { namespace: '/chat' });
      c.on('question', (d) => {
        if (d === 'throw') throw new Error('page says no');
        return { answer: d, from: name };
      });
      window[name] = c;
      window[`${name}Rec`] = rec;
    },
    { name, options, url: options.url },
  );
}

/** Every test fails (instead of hanging) when a promise it awaits never settles. */
const T = { timeout: 30_000 };

const FAST = { initialDelay: 50, maxDelay: 400, factor: 2, jitter: 0.5 };

let port;
let server;
let browser;
let profile;
let pageA;
let pageB;
const pageErrors = [];

before(async () => {
  port = await freePort();
  server = await startServer(port);
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
  for (const [label, page] of [
    ['A', pageA],
    ['B', pageB],
  ]) {
    page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`));
    await page.goto(`http://127.0.0.1:${port}/`);
    await until(page, () => window.wsuReady === true);
  }
}, { timeout: 60_000 });

after(async () => {
  await browser?.close();
  if (server) await killServer(server);
  if (profile) await rm(profile, { recursive: true, force: true });
});

test('backoff: exponential, capped, jittered within bounds (pure functions, in node)', T, async () => {
  const policy = { ...DEFAULTS.reconnect };
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6, 7].map((n) => backoffDelay(policy, n)),
    [500, 1000, 2000, 4000, 8000, 10000, 10000],
  );
  assert.equal(withJitter(1000, 0.5, 10000, () => 0), 500);
  assert.equal(withJitter(1000, 0.5, 10000, () => 0.5), 1000);
  assert.equal(withJitter(1000, 0.5, 10000, () => 0.999999), 1500);
  assert.equal(withJitter(8000, 0.5, 10000, () => 0.999999), 10000);
  assert.equal(withJitter(1000, 0, 10000, Math.random), 1000);
  const codes = [1000, 1001, 1002, 1005, 1006, 1008, 1009, 1011, 1013, 3000, 4000, 4499, 4500, 4999];
  assert.deepEqual(
    codes.filter((c) => shouldReconnect(c)),
    [1001, 1006, 1011, 1013, 4000, 4499],
  );
  assert.equal(shouldReconnect(1000, true), true);
});

test('the server serves the client module and its declarations', T, async () => {
  const res = await pageA.evaluate(async () => {
    const js = await fetch('/wsu.js');
    const dts = await fetch('/wsu.d.ts');
    return {
      jsType: js.headers.get('content-type'),
      js: await js.text(),
      dtsType: dts.headers.get('content-type'),
      dts: await dts.text(),
    };
  });
  assert.equal(res.jsType, 'text/javascript; charset=utf-8');
  assert.match(res.js, /export function connect\(/);
  assert.equal(res.dtsType, 'text/plain; charset=utf-8');
  assert.match(res.dts, /export function connect\(url\?: string, options\?: ConnectOptions\): WsuClient;/);
});

test('two pages connect', T, async () => {
  await makeClient(pageA, 'c', { reconnect: FAST, ackTimeout: 3000 });
  await makeClient(pageB, 'c', { reconnect: FAST, ackTimeout: 3000 });
  for (const page of [pageA, pageB]) {
    await until(page, () => window.c.state === 'connected');
    const states = await page.evaluate(() => window.cRec.states.map((s) => s.state));
    assert.deepEqual(states, ['connecting', 'connected']);
  }
});

test('emitWithAck: the echo handler answers with the payload; ping measures the round trip', T, async () => {
  const out = await pageA.evaluate(async () => {
    const echoed = await window.c.emitWithAck('echo', { text: 'héllo', n: [1, 2.5, null] });
    const rtt = await window.c.ping();
    return { echoed, rtt };
  });
  assert.deepEqual(out.echoed, { text: 'héllo', n: [1, 2.5, null] });
  assert.equal(typeof out.rtt, 'number');
  assert.ok(out.rtt >= 0 && out.rtt < WAIT, `rtt ${out.rtt}`);
});

test('rooms and namespaces: a broadcast reaches the other page', T, async () => {
  await pageB.evaluate(async () => {
    await window.c.join('lobby');
    await window.c.joinNamespace('/chat');
    await window.c.join('ops', { namespace: '/chat' });
  });
  await pageA.evaluate(() => window.c.joinNamespace('/chat'));
  const queued = await pageA.evaluate(() => window.c.emitWithAck('broadcast', { room: 'lobby', data: { n: 1 } }));
  assert.equal(queued, 1);
  assert.deepEqual(await until(pageB, () => window.cRec.news.length === 1 && window.cRec.news), [{ n: 1 }]);
  const queuedChat = await pageA.evaluate(() =>
    window.c.emitWithAck('broadcast', { room: 'ops', data: 'chat-1' }, { namespace: '/chat' }),
  );
  assert.equal(queuedChat, 1);
  assert.deepEqual(await until(pageB, () => window.cRec.chatNews.length === 1 && window.cRec.chatNews), [
    'chat-1',
  ]);
  // The sender is excluded, and A is in neither room.
  assert.deepEqual(await pageA.evaluate(() => [window.cRec.news, window.cRec.chatNews]), [[], []]);
});

test('a server-requested ack is answered by the page handler (its return value, or its error)', T, async () => {
  const answer = await pageA.evaluate(() => window.c.emitWithAck('ask', 'hello'));
  assert.deepEqual(answer, { answer: 'hello', from: 'c' });
  // The page answers with an `error` carrying the ack id: the server's `emit_with_ack` fails with
  // `AckError::Rejected`, which the `ask` handler returns as its own error.
  const out = await pageA.evaluate(async () => {
    const grab = (p) =>
      p.then(
        (v) => ({ ok: v }),
        (e) => ({ kind: e.kind, message: e.message, data: e.data }),
      );
    const thrown = await grab(window.c.emitWithAck('ask', 'throw'));
    // A client without a `question` handler answers "no handler for question".
    const bare = window.wsu.connect('/ws', { reconnect: false });
    const unhandled = await grab(bare.emitWithAck('ask', 'anyone?'));
    bare.close('done');
    return { thrown, unhandled };
  });
  assert.deepEqual(out.thrown, {
    kind: 'server',
    message: 'the client answered with an error: page says no',
    data: undefined,
  });
  assert.deepEqual(out.unhandled, {
    kind: 'server',
    message: 'the client answered with an error: no handler for question',
    data: undefined,
  });
});

test('server errors reject with kind "server"; uncorrelated ones reach onError', T, async () => {
  const out = await pageA.evaluate(async () => {
    const grab = (p) =>
      p.then(
        (v) => ({ ok: v }),
        (e) => ({ name: e.name, isWsuError: e instanceof window.wsu.WsuError, kind: e.kind, message: e.message, data: e.data }),
      );
    const fail = await grab(window.c.emitWithAck('fail'));
    const unknown = await grab(window.c.emitWithAck('no-such-event', 1));
    window.c.emit('echo', 1, { namespace: '/not-joined' });
    return { fail, unknown };
  });
  assert.deepEqual(out.fail, { name: 'WsuError', isWsuError: true, kind: 'server', message: 'nope', data: { code: 42 } });
  assert.deepEqual(out.unknown, {
    name: 'WsuError',
    isWsuError: true,
    kind: 'server',
    message: 'unknown event',
    data: undefined,
  });
  const errors = await until(pageA, () => window.cRec.errors.length === 1 && window.cRec.errors);
  assert.deepEqual(errors, [{ namespace: '/not-joined', message: 'namespace not joined', event: 'echo' }]);
});

test('ack timeout: a handler that never answers rejects with kind "timeout"; close stops the client', T, async () => {
  // A client of its own: the never-ending request holds its connection's request queue.
  await makeClient(pageA, 'slow', { reconnect: FAST });
  const out = await pageA.evaluate(async () => {
    const started = performance.now();
    const err = await window.slow.emitWithAck('never', null, { timeout: 300 }).then(
      () => null,
      (e) => ({ kind: e.kind, message: e.message }),
    );
    const elapsed = performance.now() - started;
    window.slow.close('done');
    let thrown = null;
    try {
      window.slow.emit('echo', 1);
    } catch (e) {
      thrown = e.kind;
    }
    return { err, elapsed, state: window.slow.state, last: window.slowRec.states.at(-1), thrown };
  });
  assert.deepEqual(out.err, { kind: 'timeout', message: 'no ack for "never" within 300 ms' });
  assert.ok(out.elapsed >= 290 && out.elapsed < 3000, `elapsed ${out.elapsed}`);
  assert.equal(out.state, 'disconnected');
  assert.deepEqual(out.last, { state: 'disconnected', attempt: 0, code: 1000, reason: 'done', willReconnect: false });
  assert.equal(out.thrown, 'disconnected');
});

test('close codes: 4000..4499 reconnect, 4500..4999 and 1000 do not (unless onNormalClose)', T, async () => {
  const quick = { ...FAST, initialDelay: 10, maxDelay: 20 };
  await makeClient(pageB, 'k1', { reconnect: FAST });
  await makeClient(pageB, 'k2', { reconnect: quick });
  await makeClient(pageB, 'k3', { reconnect: quick });
  await makeClient(pageB, 'k4', { reconnect: { ...quick, onNormalClose: true } });
  await until(pageB, () => ['k1', 'k2', 'k3', 'k4'].every((k) => window[k].state === 'connected'));
  await pageB.evaluate(() => window.k1.emit('kick', { code: 4001, reason: 'slow' }));
  await until(pageB, () => window.k1Rec.states.filter((s) => s.state === 'connected').length === 2);
  const k1 = await pageB.evaluate(() => window.k1Rec.states.map((s) => [s.state, s.code, s.reason]));
  assert.deepEqual(k1.slice(2, 4), [
    ['disconnected', 4001, 'slow'],
    ['reconnecting', 4001, 'slow'],
  ]);
  assert.deepEqual(k1.at(-1), ['connected', undefined, undefined]);

  await pageB.evaluate(() => {
    window.k2.emit('kick', { code: 4500, reason: 'go away' });
    window.k3.emit('kick', { code: 1000, reason: 'bye' });
    window.k4.emit('kick', { code: 1000, reason: 'bye' });
  });
  await until(pageB, () => window.k2.state === 'disconnected' && window.k3.state === 'disconnected');
  await until(pageB, () => window.k4Rec.states.filter((s) => s.state === 'connected').length === 2);
  // Absence of a reconnection: k2 and k3 would retry after 5..20 ms; give them 300 ms.
  await new Promise((r) => setTimeout(r, 300));
  const [k2, k3] = await pageB.evaluate(() =>
    [window.k2Rec, window.k3Rec].map((rec) => rec.states.map((s) => [s.state, s.code, s.reason, s.willReconnect])),
  );
  const start = [
    ['connecting', undefined, undefined, undefined],
    ['connected', undefined, undefined, undefined],
  ];
  assert.deepEqual(k2, [...start, ['disconnected', 4500, 'go away', false]]);
  assert.deepEqual(k3, [...start, ['disconnected', 1000, 'bye', false]]);
  await pageB.evaluate(() => {
    window.k1.close();
    window.k4.close();
  });
});

test('gave-up after maxAttempts; buffered acks then reject with kind "disconnected"', T, async () => {
  const deadPort = await freePort();
  await makeClient(pageA, 'dead', {
    url: `ws://127.0.0.1:${deadPort}/ws`,
    reconnect: { initialDelay: 20, maxDelay: 40, factor: 2, jitter: 0, maxAttempts: 2 },
  });
  await pageA.evaluate(() => {
    window.deadAck = window.dead.emitWithAck('echo', 1, { timeout: 60_000 }).then(
      () => 'resolved',
      (e) => e.kind,
    );
  });
  await until(pageA, () => window.dead.state === 'gave-up');
  const states = await pageA.evaluate(() => window.deadRec.states.map((s) => [s.state, s.attempt, s.delay ?? null]));
  assert.deepEqual(states, [
    ['connecting', 0, null],
    ['reconnecting', 1, 20],
    ['reconnecting', 2, 40],
    ['gave-up', 2, null],
  ]);
  assert.equal(await pageA.evaluate(() => window.deadAck), 'disconnected');
});

test('server restart: reconnect, rejoin rooms and namespaces, flush the offline buffer', T, async () => {
  await killServer(server);
  server = null;
  for (const page of [pageA, pageB]) {
    await until(page, () => window.c.state === 'reconnecting');
    const dropped = await page.evaluate(() => window.cRec.states.find((s) => s.state === 'disconnected'));
    assert.equal(dropped.code, 1006);
    assert.equal(dropped.willReconnect, true);
  }
  // While the server is down: emits are buffered, joins remembered, a small buffer overflows.
  const offline = await pageA.evaluate(() => {
    const c = window.c;
    for (let i = 1; i <= 3; i++) c.emit('record', { key: 'offline', value: i });
    window.pendingEcho = c.emitWithAck('echo', 'while-down', { timeout: 30_000 });
    window.pendingJoin = c.join('late-room').then(() => 'joined');
    const small = window.wsu.connect('/ws', { offlineBuffer: 2, reconnect: { initialDelay: 50, maxDelay: 200 } });
    window.small = small;
    small.emit('record', { key: 'small', value: 'a' });
    small.emit('record', { key: 'small', value: 'b' });
    let overflow = null;
    try {
      small.emit('record', { key: 'small', value: 'c' });
    } catch (e) {
      overflow = { kind: e.kind, message: e.message };
    }
    return { state: c.state, overflow };
  });
  assert.equal(offline.state, 'reconnecting');
  assert.deepEqual(offline.overflow, { kind: 'buffer-full', message: 'offline buffer full (2 messages)' });

  server = await startServer(port);
  for (const page of [pageA, pageB]) {
    await until(page, () => window.c.state === 'connected');
    const states = await page.evaluate(() => window.cRec.states.map((s) => s.state));
    assert.deepEqual(states.slice(0, 3), ['connecting', 'connected', 'disconnected']);
    assert.equal(states.at(-1), 'connected');
    assert.ok(states.slice(3, -1).every((s) => s === 'reconnecting') && states.length >= 5, states.join());
  }
  const flushed = await pageA.evaluate(async (wait) => {
    const within = (p) =>
      Promise.race([p, new Promise((resolve) => setTimeout(() => resolve('still pending'), wait))]);
    return {
      echo: await within(window.pendingEcho),
      join: await within(window.pendingJoin),
      offline: await window.c.emitWithAck('history', 'offline'),
    };
  }, WAIT);
  assert.deepEqual(flushed, { echo: 'while-down', join: 'joined', offline: [1, 2, 3] });
  await until(pageA, () => window.small.state === 'connected');
  assert.deepEqual(await pageA.evaluate(() => window.small.emitWithAck('history', 'small')), ['a', 'b']);

  // B's rooms were joined again: broadcasts from A reach it, in "/" and in "/chat".
  assert.equal(await pageA.evaluate(() => window.c.emitWithAck('broadcast', { room: 'lobby', data: { n: 2 } })), 1);
  await until(pageB, () => window.cRec.news.length === 2);
  assert.deepEqual(await pageB.evaluate(() => window.cRec.news), [{ n: 1 }, { n: 2 }]);
  assert.equal(
    await pageA.evaluate(() =>
      window.c.emitWithAck('broadcast', { room: 'ops', data: 'chat-2' }, { namespace: '/chat' }),
    ),
    1,
  );
  await until(pageB, () => window.cRec.chatNews.length === 2);
  assert.deepEqual(await pageB.evaluate(() => window.cRec.chatNews), ['chat-1', 'chat-2']);
  // And A's room joined while the server was down works too.
  assert.equal(await pageB.evaluate(() => window.c.emitWithAck('broadcast', { room: 'late-room', data: 'late' })), 1);
  await until(pageA, () => window.cRec.news.length === 1);
  assert.deepEqual(await pageA.evaluate(() => window.cRec.news), ['late']);
  await pageA.evaluate(() => window.small.close());
});

test('screenshots, and no uncaught page errors', T, async () => {
  await mkdir(OUT, { recursive: true });
  await pageA.screenshot({ path: path.join(OUT, 'page-a.png'), fullPage: true });
  await pageB.screenshot({ path: path.join(OUT, 'page-b.png'), fullPage: true });
  assert.deepEqual(pageErrors, []);
});
