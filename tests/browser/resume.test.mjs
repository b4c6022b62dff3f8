// The wsu browser client's session features (hello, resume, recovery, presence; the contract of
// /work/notes/spec-15.md, "protocol extensions v2") in headless Chromium against a FAKE server
// written here with `ws`: it serves wsu/js/wsu.js and a page, and speaks the spec's frames byte
// for byte, so the client is tested before (and independently of) the real server.
// Run through tests/browser/run.sh (needs no cargo build).
//
// Environment: CHROMIUM (default /usr/bin/chromium).
//
// Every wait is for an expected frame, connection or page state (bounded by WAIT); the only fixed
// windows check that something does NOT happen (no reconnection after 4003, no rejoin after an
// accepted resume: the latter is checked by the first frame after `connected`, not by a window).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { WebSocketServer } from 'ws';
import { shouldReconnect } from '../../wsu/js/wsu.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const WAIT = 10_000;

// ---- the fake server ----

const SID1 = '0123456789abcdef';
const SID2 = 'fedcba9876543210';
const T1 = '0123456789abcdef.Qm9ndXNfc2VjcmV0X2Zvcl9kb2NzX29ubHlfMTIzNDU2';
const T2 = '0123456789abcdef.U2Vjb25kX3Rva2VuX2Zvcl90aGVfdGVzdF8xMjM0NTY3';
const T3 = 'fedcba9876543210.VGhpcmRfdG9rZW5fZm9yX3RoZV90ZXN0XzEyMzQ1Njc4';
const EPOCH = '5f3a9c1e0b7d2a64';
const ROOT_EPOCH = '9a0c00112233aabb';

/** The spec's hello frame, byte for byte, with the given sid / token / resume / maxMessageSize. */
function hello({ sid = SID1, token = T1, resume, maxMessageSize = 65536 } = {}) {
  const tok = token ? `"token":${JSON.stringify(token)},` : '';
  const res = resume ? `"resume":${resume},` : '';
  const rec = token
    ? ',"recovery":{"sessionTtlMs":120000,"historySize":10000,"historyTtlMs":300000,"maxReplay":10000}'
    : '';
  return (
    `{"type":"hello","namespace":"/","data":{"protocol":2,"server":"wsu/0.1.0","sid":"${sid}",${tok}${res}` +
    `"limits":{"maxMessageSize":${maxMessageSize},"ackTimeoutMs":5000,"pingIntervalMs":15000,"readTimeoutMs":30000,` +
    `"maxPendingAcks":128,"maxPendingRequests":64,"rateLimit":null}${rec}}}`
  );
}

const ACCEPTED = '{"accepted":true}';
const REFUSED = '{"accepted":false,"reason":"unknown session"}';

let httpServer;
let wss;
let port;
let browser;
let profile;
const waiting = []; // resolvers of nextConnection()
const pending = []; // connections nobody waited for yet
const allConnections = [];

/** A connection of the fake server: its upgrade URL, the frames it received, and helpers. */
class Conn {
  constructor(ws, url) {
    this.ws = ws;
    this.url = url; // the raw request target, e.g. "/ws?app=1&wsu_resume=…"
    this.frames = [];
    this.waiters = [];
    this.closed = new Promise((resolve) => ws.once('close', resolve));
    ws.on('message', (data) => {
      const text = data.toString('utf8');
      const w = this.waiters.shift();
      if (w) w(text);
      else this.frames.push(text);
    });
  }

  /** The next text frame from the client (parsed), waiting up to WAIT. */
  next() {
    const f = this.frames.shift();
    if (f !== undefined) return Promise.resolve(JSON.parse(f));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no frame from the client within ${WAIT} ms`)), WAIT);
      this.waiters.push((text) => {
        clearTimeout(timer);
        resolve(JSON.parse(text));
      });
    });
  }

  send(text) {
    this.ws.send(text);
  }

  /** Answer the client's next frame, which must be a join of `namespace` / `room`, with an ack. */
  async ackJoin(namespace, room) {
    const f = await this.next();
    assert.equal(f.type, 'join', `expected a join, got ${JSON.stringify(f)}`);
    assert.equal(f.namespace, namespace);
    assert.equal(f.room, room);
    this.send(`{"type":"ack","namespace":"${namespace}","ackId":"${f.ackId}"}`);
    return f;
  }

  /** Drop the TCP connection without a close frame (the browser sees 1006). */
  drop() {
    this.ws.terminate();
    return this.closed;
  }

  query() {
    return new URL(this.url, 'http://x').search.slice(1);
  }
}

function nextConnection() {
  const c = pending.shift();
  if (c) return Promise.resolve(c);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no connection within ${WAIT} ms`)), WAIT);
    waiting.push((conn) => {
      clearTimeout(timer);
      resolve(conn);
    });
  });
}

const PAGE = `<!doctype html><meta charset="utf-8"><title>wsu resume</title>
<script type="module">
  import * as wsu from '/wsu.js';
  window.wsu = wsu;
  window.wsuReady = true;
</script>`;

before(async () => {
  const js = await readFile(path.join(root, 'wsu/js/wsu.js'));
  httpServer = http.createServer((req, res) => {
    if (req.url === '/wsu.js') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
      res.end(js);
    } else if (req.url === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(PAGE);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  wss = new WebSocketServer({ noServer: true });
  httpServer.on('upgrade', (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => {
      const conn = new Conn(ws, req.url);
      allConnections.push(conn);
      const w = waiting.shift();
      if (w) w(conn);
      else pending.push(conn);
    });
  });
  await new Promise((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  port = httpServer.address().port;
  profile = await mkdtemp(path.join(os.tmpdir(), 'wsu-resume-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu'],
  });
});

after(async () => {
  await browser?.close();
  for (const c of allConnections) c.ws.terminate();
  wss?.close();
  await new Promise((resolve) => (httpServer ? httpServer.close(resolve) : resolve()));
  if (profile) await rm(profile, { recursive: true, force: true });
});

/** A fresh page with the module loaded and `window.log` (everything the client reported). */
async function newPage() {
  assert.equal(pending.length, 0, 'a connection was left over by an earlier test');
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.log('page error:', e.message));
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.waitForFunction(() => window.wsuReady === true, null, { timeout: WAIT });
  return page;
}

/** Start a client in `page` recording states, events, recoveries and presence in window.log. */
function startClient(page, url, options = {}) {
  return page.evaluate(
    ({ url, options }) => {
      window.log = [];
      const client = window.wsu.connect(url, { reconnect: { initialDelay: 50, maxDelay: 200, jitter: 0 }, ...options });
      window.client = client;
      client.onState((s) => window.log.push({ kind: 'state', state: s.state, code: s.code, resumed: s.resumed, willReconnect: s.willReconnect }));
      client.onRecovery((r) => window.log.push({ ...r, kind: 'recovery' }));
      client.onPresence((p) => window.log.push({ ...p, kind: 'presence', change: p.kind }));
      for (const ev of ['msg', 'hello', 'direct']) {
        client.on(ev, (data, info) => window.log.push({ kind: 'event', event: ev, namespace: info.namespace, data }), { namespace: '/chat' });
        client.on(ev, (data, info) => window.log.push({ kind: 'event', event: ev, namespace: info.namespace, data }));
      }
    },
    { url, options },
  );
}

async function until(page, fn, arg) {
  const h = await page.waitForFunction(fn, arg, { timeout: WAIT, polling: 10 });
  return h.jsonValue();
}

/** Wait until window.log has `n` entries of kind `state` with `state`; returns the last one. */
function untilState(page, state, n = 1) {
  return until(
    page,
    ({ state, n }) => {
      const l = window.log.filter((e) => e.kind === 'state' && e.state === state);
      return l.length >= n ? l[n - 1] : null;
    },
    { state, n },
  );
}

const ofKind = (page, kind) => page.evaluate((kind) => window.log.filter((e) => e.kind === kind), kind);

// ---- the tests ----

test('shouldReconnect: 4003 (session resumed elsewhere) is final, other 4000-4499 are not', () => {
  assert.equal(shouldReconnect(4003), false);
  assert.equal(shouldReconnect(4003, true), false);
  assert.equal(shouldReconnect(4000), true);
  assert.equal(shouldReconnect(4002), true);
  assert.equal(shouldReconnect(4004), true);
});

test('hello: sid, token and limits are kept, hello reaches no handler, over-size sends are refused locally', async () => {
  const page = await newPage();
  const LIMIT = 200;
  await startClient(page, '/ws');
  const c = await nextConnection();
  assert.equal(c.query(), '', 'a first connection carries no resume parameters');
  c.send(hello({ maxMessageSize: LIMIT }));
  await untilState(page, 'connected');
  const info = await page.evaluate(() => ({
    sid: window.client.sessionId,
    recovered: window.client.recovered,
    limit: window.client.limits?.maxMessageSize,
  }));
  assert.deepEqual(info, { sid: SID1, recovered: false, limit: LIMIT });

  // The frame `{"type":"event","namespace":"/","event":"big","data":"<s>"}`: exactly at the
  // limit it goes out; one byte more (a 2-byte "é" instead of "e") is refused.
  const base = Buffer.byteLength('{"type":"event","namespace":"/","event":"big","data":""}');
  const fits = 'e'.repeat(LIMIT - base);
  const over = 'é' + 'e'.repeat(LIMIT - base - 1);
  const r = await page.evaluate(
    async ({ fits, over }) => {
      const c = window.client;
      const out = {};
      try {
        c.emit('big', over);
        out.emit = 'sent';
      } catch (e) {
        out.emit = { name: e.name, kind: e.kind, code: e.code, size: e.size, limit: e.limit, message: e.message, isWsu: e instanceof window.wsu.WsuError, isTooLarge: e instanceof window.wsu.MessageTooLargeError };
      }
      try {
        await c.emitWithAck('big', 'x'.repeat(300));
        out.ack = 'resolved';
      } catch (e) {
        out.ack = { kind: e.kind, code: e.code, size: e.size };
      }
      try {
        await c.join('r'.repeat(300), { namespace: '/chat' });
        out.join = 'resolved';
      } catch (e) {
        out.join = { kind: e.kind, code: e.code, limit: e.limit };
      }
      c.emit('big', fits);
      c.emit('after', 1);
      return out;
    },
    { fits, over },
  );
  assert.equal(r.emit.name, 'MessageTooLargeError');
  assert.equal(r.emit.kind, 'too-large');
  assert.equal(r.emit.code, 'WSU_MESSAGE_TOO_LARGE');
  assert.equal(r.emit.size, LIMIT + 1);
  assert.equal(r.emit.limit, LIMIT);
  assert.ok(r.emit.isWsu && r.emit.isTooLarge);
  assert.match(r.emit.message, new RegExp(`${LIMIT + 1} bytes.*${LIMIT} bytes`));
  assert.equal(r.ack.kind, 'too-large');
  assert.equal(r.ack.code, 'WSU_MESSAGE_TOO_LARGE');
  assert.ok(r.ack.size > 300);
  assert.deepEqual(r.join, { kind: 'too-large', code: 'WSU_MESSAGE_TOO_LARGE', limit: LIMIT });
  // Nothing of the refused ones was sent: the first frames are the one that fits, then "after".
  const f1 = await c.next();
  assert.deepEqual(f1, { type: 'event', namespace: '/', event: 'big', data: fits });
  const f2 = await c.next();
  assert.deepEqual(f2, { type: 'event', namespace: '/', event: 'after', data: 1 });
  // hello reached no handler (an `on('hello')` handler is registered in "/" and "/chat").
  assert.deepEqual(await ofKind(page, 'event'), []);
  await page.evaluate(() => window.client.close());
  await c.closed;
  await page.close();
});

test('what is buffered before the first hello is checked against its limit when flushed', async () => {
  const page = await newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await startClient(page, '/ws');
  // Emitted at once, before the connection is open: the limit is not known yet.
  await page.evaluate(() => {
    window.client.emit('early-big', 'x'.repeat(500));
    window.early = window.client.emitWithAck('early-big-ack', 'y'.repeat(500)).then(
      () => 'resolved',
      (e) => `${e.kind} ${e.code} ${e.limit}`,
    );
    window.client.emit('early-small', 1);
  });
  const c = await nextConnection();
  c.send(hello({ maxMessageSize: 300 }));
  assert.deepEqual(await c.next(), { type: 'event', namespace: '/', event: 'early-small', data: 1 });
  assert.equal(await page.evaluate(() => window.early), 'too-large WSU_MESSAGE_TOO_LARGE 300');
  await page.evaluate(() => window.client.close());
  await c.closed;
  assert.deepEqual(c.frames, [], 'nothing but early-small was sent');
  // The dropped plain emit is reported like an uncaught error.
  assert.ok(errors.some((m) => /"early-big" is 562 bytes.*maxMessageSize of 300 bytes/.test(m)), errors.join('; '));
  await page.close();
});

test('resume: positions, the reconnect URL, accepted resume (no rejoin, replay in order), refused resume (rejoin)', async () => {
  const page = await newPage();
  // The app's own parameters: in the URL (with a stale wsu_resume) and in `query`.
  await startClient(page, '/ws?v=1&wsu_resume=stale', { query: { app: 'x y' } });
  const c1 = await nextConnection();
  assert.equal(c1.query(), 'v=1&app=x+y', 'the stale wsu_resume is removed, the app parameters kept');
  c1.send(hello({ sid: SID1, token: T1 }));
  await untilState(page, 'connected');
  c1.send(`{"type":"recovery","namespace":"/","data":{"recovered":false,"reason":"new","epoch":"${ROOT_EPOCH}","offset":17,"events":[]}}`);
  const joined = page.evaluate(() => window.client.join('lobby', { namespace: '/chat' }).then(() => 'joined'));
  const j = await c1.next();
  assert.deepEqual(j, { type: 'join', namespace: '/chat', room: 'lobby', ackId: j.ackId });
  // The spec's order: the recovery frame of the newly joined namespace, then the join's ack.
  c1.send(`{"type":"recovery","namespace":"/chat","data":{"recovered":false,"reason":"new","epoch":"${EPOCH}","offset":1040,"events":[]}}`);
  c1.send(`{"type":"ack","namespace":"/chat","ackId":"${j.ackId}"}`);
  assert.equal(await joined, 'joined');
  c1.send(`{"type":"event","namespace":"/chat","event":"msg","data":{"text":"hi"},"offset":1042,"epoch":"${EPOCH}"}`);
  c1.send(`{"type":"event","namespace":"/","event":"msg","data":"root","offset":20,"epoch":"${ROOT_EPOCH}"}`);
  // A direct emit carries no offset: it does not move the position.
  c1.send('{"type":"event","namespace":"/chat","event":"direct","data":"d"}');
  await until(page, () => window.log.filter((e) => e.kind === 'event').length === 3);
  const pos1 = await page.evaluate(() => window.client.positions);
  assert.deepEqual(pos1, { '/': { epoch: ROOT_EPOCH, offset: 20 }, '/chat': { epoch: EPOCH, offset: 1042 } });
  const rec1 = await ofKind(page, 'recovery');
  assert.deepEqual(
    rec1.map((r) => [r.namespace, r.recovered, r.reason, r.replayed]),
    [['/', false, 'new', 0], ['/chat', false, 'new', 0]],
  );

  // Drop the TCP connection: the client resumes with the latest token and its positions.
  await c1.drop();
  const c2 = await nextConnection();
  const offsets1 = encodeURIComponent(JSON.stringify({ '/': { epoch: ROOT_EPOCH, offset: 20 }, '/chat': { epoch: EPOCH, offset: 1042 } }));
  assert.equal(c2.query(), `v=1&app=x+y&wsu_resume=${T1}&wsu_offsets=${offsets1}`);
  // Accepted: the server restored "/chat" and "lobby"; it replays what was missed, then live.
  c2.send(hello({ sid: SID1, token: T2, resume: ACCEPTED }));
  c2.send(`{"type":"recovery","namespace":"/","data":{"recovered":true,"epoch":"${ROOT_EPOCH}","offset":20,"events":[]}}`);
  c2.send(
    `{"type":"recovery","namespace":"/chat","data":{"recovered":true,"epoch":"${EPOCH}","offset":1045,"events":[` +
      `{"type":"event","namespace":"/chat","event":"msg","data":"a","offset":1043,"epoch":"${EPOCH}"},` +
      `{"type":"event","namespace":"/chat","event":"msg","data":"b","offset":1045,"epoch":"${EPOCH}"}]}}`,
  );
  c2.send(`{"type":"event","namespace":"/chat","event":"msg","data":"c","offset":1046,"epoch":"${EPOCH}"}`);
  const st2 = await untilState(page, 'connected', 2);
  assert.equal(st2.resumed, true);
  // No rejoin: the first frame the client sends on this connection is the app's own.
  await page.evaluate(() => window.client.emit('probe', 2));
  assert.deepEqual(await c2.next(), { type: 'event', namespace: '/', event: 'probe', data: 2 });
  await until(page, () => window.log.filter((e) => e.kind === 'event').length === 6);
  const log2 = await page.evaluate(() => window.log.filter((e) => e.kind === 'event' || e.kind === 'recovery'));
  const tail = log2.slice(-5).map((e) => (e.kind === 'event' ? `event ${e.namespace} ${e.data}` : `recovery ${e.namespace} ${e.recovered} ${e.replayed}`));
  assert.deepEqual(tail, ['recovery / true 0', 'event /chat a', 'event /chat b', 'recovery /chat true 2', 'event /chat c']);
  assert.deepEqual(await page.evaluate(() => ({ sid: window.client.sessionId, recovered: window.client.recovered })), { sid: SID1, recovered: true });
  assert.deepEqual(await page.evaluate(() => window.client.positions['/chat']), { epoch: EPOCH, offset: 1046 });

  // Drop again: the URL carries the LATEST token (T2) and the position of live event "c".
  await c2.drop();
  const c3 = await nextConnection();
  const offsets2 = encodeURIComponent(JSON.stringify({ '/': { epoch: ROOT_EPOCH, offset: 20 }, '/chat': { epoch: EPOCH, offset: 1046 } }));
  assert.equal(c3.query(), `v=1&app=x+y&wsu_resume=${T2}&wsu_offsets=${offsets2}`);
  // Refused: a fresh session; the client rejoins what it remembers, as after any reconnect.
  c3.send(hello({ sid: SID2, token: T3, resume: REFUSED }));
  c3.send(`{"type":"recovery","namespace":"/","data":{"recovered":false,"reason":"new","epoch":"${ROOT_EPOCH}","offset":21,"events":[]}}`);
  await c3.ackJoin('/chat', 'lobby');
  const st3 = await untilState(page, 'connected', 3);
  assert.equal(st3.resumed, false);
  assert.deepEqual(await page.evaluate(() => ({ sid: window.client.sessionId, recovered: window.client.recovered })), { sid: SID2, recovered: false });
  // The old session's positions are gone; "/" has the new one.
  assert.deepEqual(await page.evaluate(() => window.client.positions), { '/': { epoch: ROOT_EPOCH, offset: 21 } });
  await page.evaluate(() => window.client.close());
  await c3.closed;
  await page.close();
});

test('close 4003 (session resumed elsewhere) is not reconnected', async () => {
  const page = await newPage();
  await startClient(page, '/ws');
  const c = await nextConnection();
  c.send(hello());
  await untilState(page, 'connected');
  c.ws.close(4003, 'session resumed elsewhere');
  const st = await untilState(page, 'disconnected');
  assert.equal(st.code, 4003);
  assert.equal(st.willReconnect, false);
  // Reconnection would come after 50 ms; wait well beyond it.
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(pending.length, 0, 'the client reconnected after 4003');
  assert.deepEqual((await ofKind(page, 'state')).map((s) => s.state), ['connecting', 'connected', 'disconnected']);
  await page.close();
});

test('presence: state replaces, diffs apply, listeners get each change', async () => {
  const page = await newPage();
  await startClient(page, '/ws');
  const c = await nextConnection();
  c.send(hello());
  await untilState(page, 'connected');
  const joined = page.evaluate(() => window.client.join('lobby', { namespace: '/chat' }));
  const j = await c.next();
  c.send(`{"type":"ack","namespace":"/chat","ackId":"${j.ackId}"}`);
  await joined;
  const presence = () => page.evaluate(() => window.client.presence('lobby', { namespace: '/chat' }));
  assert.deepEqual(await presence(), {});
  c.send('{"type":"presence","namespace":"/chat","room":"lobby","data":{"state":{"ada":[{"sid":"0123456789abcdef","meta":{"nick":"ada"}}]}}}');
  await until(page, () => window.log.filter((e) => e.kind === 'presence').length === 1);
  assert.deepEqual(await presence(), { ada: [{ sid: '0123456789abcdef', meta: { nick: 'ada' } }] });
  // A second tab of bob, then one of ada, joins; then ada's first tab leaves.
  c.send('{"type":"presence","namespace":"/chat","room":"lobby","data":{"joins":{"bob":[{"sid":"1111111111111111","meta":null}],"ada":[{"sid":"2222222222222222","meta":{"nick":"ada2"}}]},"leaves":{}}}');
  c.send('{"type":"presence","namespace":"/chat","room":"lobby","data":{"joins":{},"leaves":{"ada":[{"sid":"0123456789abcdef","meta":{"nick":"ada"}}]}}}');
  await until(page, () => window.log.filter((e) => e.kind === 'presence').length === 3);
  assert.deepEqual(await presence(), {
    ada: [{ sid: '2222222222222222', meta: { nick: 'ada2' } }],
    bob: [{ sid: '1111111111111111', meta: null }],
  });
  // The last connection of a key leaves: the key is gone.
  c.send('{"type":"presence","namespace":"/chat","room":"lobby","data":{"joins":{},"leaves":{"bob":[{"sid":"1111111111111111","meta":null}]}}}');
  await until(page, () => window.log.filter((e) => e.kind === 'presence').length === 4);
  assert.deepEqual(await presence(), { ada: [{ sid: '2222222222222222', meta: { nick: 'ada2' } }] });
  // A state replaces everything.
  c.send('{"type":"presence","namespace":"/chat","room":"lobby","data":{"state":{"cy":[{"sid":"3333333333333333","meta":1}]}}}');
  await until(page, () => window.log.filter((e) => e.kind === 'presence').length === 5);
  assert.deepEqual(await presence(), { cy: [{ sid: '3333333333333333', meta: 1 }] });
  const log = await ofKind(page, 'presence');
  assert.deepEqual(log.map((p) => [p.namespace, p.room, p.change]), [
    ['/chat', 'lobby', 'state'],
    ['/chat', 'lobby', 'diff'],
    ['/chat', 'lobby', 'diff'],
    ['/chat', 'lobby', 'diff'],
    ['/chat', 'lobby', 'state'],
  ]);
  assert.deepEqual(log[2].leaves, { ada: [{ sid: '0123456789abcdef', meta: { nick: 'ada' } }] });
  assert.deepEqual(log[2].state, { bob: [{ sid: '1111111111111111', meta: null }], ada: [{ sid: '2222222222222222', meta: { nick: 'ada2' } }] });
  // Other rooms are untouched.
  assert.deepEqual(await page.evaluate(() => window.client.presence('lobby')), {});
  await page.evaluate(() => window.client.close());
  await c.closed;
  await page.close();
});
