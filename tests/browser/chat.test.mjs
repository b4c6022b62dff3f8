// The example chat app (examples/chat) in headless Chromium: its real server binary, its page at
// "/". Run through tests/browser/run.sh, which builds the server.
//
// Environment: WSU_CHAT_SERVER (the `chat` binary), CHROMIUM (default /usr/bin/chromium).
//
// Two pages (a wide one, ada, and a phone-sized one, grace) choose nicknames, join #lobby, see
// each other in the member list (wsu's presence), exchange messages whose acks turn "pending"
// into ✓, see each other typing, receive an admin announcement, come back after ada's
// connection is cut without a close frame (the session resumed: the messages grace posted
// meanwhile replayed once, in order), and come back by themselves after the server restarts
// (a new session: rejoining their rooms, announcing their nicknames again, sending what was
// written offline). Ada's page goes through a TCP proxy in this file, which can cut it.
// Screenshots: tests/browser/out/chat.png (wide) and chat-narrow.png (phone).
//
// The tests run in order and share the pages. Every wait is for an expected state (bounded by
// WAIT); nothing sleeps.

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
const SERVER_BIN = process.env.WSU_CHAT_SERVER ?? path.join(root, 'target/debug/chat');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const OUT = path.join(here, 'out');
const WAIT = 10_000;
const ADMIN_TOKEN = 'browser-test-token';
const T = { timeout: 30_000 };

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

/** Start the chat server on `port`; resolves once it prints its "listening" line. */
function startServer(port) {
  return new Promise((resolve, reject) => {
    const child = spawn(SERVER_BIN, [], {
      env: { ...process.env, WSU_ADDR: `127.0.0.1:${port}`, CHAT_ADMIN_TOKEN: ADMIN_TOKEN },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`chat server did not start within ${WAIT} ms: ${out}${err}`));
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
      reject(new Error(`chat server exited (${code ?? signal}) before listening: ${out}${err}`));
    });
  });
}

/** Kill the server at once (as a crash or a restart: the pages see 1006). */
async function killServer(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/**
 * A TCP proxy to the server on `target`: `cut()` destroys every connection through it (no close
 * frame: the server sees the TCP connection end, the page a 1006) and refuses new ones until
 * `restore()`.
 */
function startProxy(target) {
  const pairs = new Set();
  let down = false;
  const srv = net.createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target, '127.0.0.1');
    const pair = [client, upstream];
    pairs.add(pair);
    const close = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    for (const s of pair) {
      s.on('error', close);
      s.on('close', close);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () =>
      resolve({
        port: srv.address().port,
        cut() {
          down = true;
          for (const [a, b] of pairs) {
            a.destroy();
            b.destroy();
          }
          pairs.clear();
        },
        restore() {
          down = false;
        },
        close() {
          this.cut();
          return new Promise((done) => srv.close(done));
        },
      }),
    );
  });
}

/** Wait until `fn` (run in the page) returns a truthy value; returns it. */
async function until(page, fn, arg) {
  const handle = await page.waitForFunction(fn, arg, { timeout: WAIT, polling: 20 });
  return handle.jsonValue();
}

/** The member list on screen. */
const members = (page) => page.$$eval('#members li .who', (els) => els.map((e) => e.textContent));

/** The messages on screen: [nick, text, status] (status of my own: pending / sent / failed). */
const messages = (page) =>
  page.$$eval('#messages .msg', (els) =>
    els.map((li) => {
      const first = li.classList.contains('first') ? li.querySelector('.msg-nick').textContent : null;
      return [first, li.querySelector('.msg-text').textContent, li.dataset.status ?? null];
    }),
  );

async function chooseNick(page, nick, room) {
  await page.fill('#nick-input', nick);
  await page.fill('#room-input', room);
  await page.click('#nick-submit');
  await until(page, () => !document.body.classList.contains('welcoming'));
}

async function send(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

let port;
let server;
let proxy; // between ada's page (`wide`) and the server
let browser;
let profile;
let wide;
let phone;
const pageErrors = [];

before(async () => {
  port = await freePort();
  server = await startServer(port);
  proxy = await startProxy(port);
  profile = await mkdtemp(path.join(os.tmpdir(), 'wsu-chat-chromium-'));
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
    viewport: { width: 1280, height: 800 },
    deviceScaleFactor: 1,
  });
  wide = browser.pages()[0] ?? (await browser.newPage());
  phone = await browser.newPage();
  await phone.setViewportSize({ width: 390, height: 760 });
  for (const [label, page, at] of [
    ['wide', wide, proxy.port],
    ['phone', phone, port],
  ]) {
    page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`));
    await page.goto(`http://127.0.0.1:${at}/`);
    await until(page, () => window.chatReady === true && window.chatClient.state === 'connected');
  }
}, { timeout: 60_000 });

after(async () => {
  await browser?.close();
  await proxy?.close();
  if (server) await killServer(server);
  if (profile) await rm(profile, { recursive: true, force: true });
});

test('the page asks for a nickname, and checks it before asking the server', T, async () => {
  assert.equal(await wide.evaluate(() => document.body.classList.contains('welcoming')), true);
  assert.equal(await wide.textContent('#welcome-conn-text'), 'Connected');
  await mkdir(OUT, { recursive: true });
  await wide.screenshot({ path: path.join(OUT, 'chat-welcome.png') });
  await wide.fill('#nick-input', 'a');
  await wide.click('#nick-submit');
  assert.match(await wide.textContent('#nick-error'), /2 to 24/);
});

test('two pages choose nicknames, join #lobby and see each other in the member list', T, async () => {
  await chooseNick(wide, 'ada', 'lobby');
  assert.deepEqual(await members(wide), ['ada']);
  // The same nickname in another case is taken (the server says so).
  await phone.fill('#nick-input', 'ADA');
  await phone.click('#nick-submit');
  await until(phone, () => document.getElementById('nick-error').textContent !== '');
  assert.equal(await phone.textContent('#nick-error'), 'Nickname is taken.');
  await chooseNick(phone, 'grace', '#Lobby');
  assert.equal(await phone.textContent('#room-title'), '#lobby');
  await until(wide, () => document.querySelectorAll('#members li').length === 2);
  assert.deepEqual(await members(wide), ['ada', 'grace']);
  assert.deepEqual(await members(phone), ['ada', 'grace']);
  assert.equal(await wide.textContent('#room-sub'), '2 online');
  // The join is in ada's log.
  assert.match(await wide.textContent('#messages .notice'), /grace joined/);
});

test('messages go both ways; each of mine turns from pending to ✓ when the server acks it', T, async () => {
  await send(wide, 'Hi Grace! The server acked this one.');
  await until(wide, () => document.querySelector('#messages .msg.mine')?.dataset.status === 'sent');
  assert.equal(await wide.textContent('#messages .msg.mine .status'), '✓');
  await until(phone, () => document.querySelectorAll('#messages .msg').length === 1);
  await send(phone, 'Hello Ada, typing from a phone-sized page.');
  await send(phone, 'Both of these are grouped under my name.');
  await until(phone, () => [...document.querySelectorAll('#messages .msg.mine')].every((m) => m.dataset.status === 'sent'));
  await until(wide, () => document.querySelectorAll('#messages .msg').length === 3);
  assert.deepEqual(await messages(wide), [
    ['ada', 'Hi Grace! The server acked this one.', 'sent'],
    ['grace', 'Hello Ada, typing from a phone-sized page.', null],
    [null, 'Both of these are grouped under my name.', null],
  ]);
  assert.deepEqual(await messages(phone), [
    ['ada', 'Hi Grace! The server acked this one.', null],
    ['grace', 'Hello Ada, typing from a phone-sized page.', 'sent'],
    [null, 'Both of these are grouped under my name.', 'sent'],
  ]);
});

test('a room of ada only: grace does not see it', T, async () => {
  await wide.fill('#join-input', 'rust');
  await wide.press('#join-input', 'Enter');
  await until(wide, () => document.getElementById('room-title').textContent === '#rust');
  await send(wide, 'Only in #rust');
  await until(wide, () => document.querySelector('#messages .msg.mine')?.dataset.status === 'sent');
  assert.deepEqual(
    await wide.$$eval('#rooms .room-btn .name', (els) => els.map((e) => e.textContent)),
    ['lobby', 'rust'],
  );
  await wide.click('#rooms .room-btn[data-room="lobby"]');
  await until(wide, () => document.getElementById('room-title').textContent === '#lobby');
  assert.equal((await messages(phone)).length, 3);
});

/**
 * Send an admin request from a page of its own (the wsu browser client with the admin token);
 * returns the ack's data.
 */
async function adminRequest(event, data) {
  const admin = await browser.newPage();
  try {
    await admin.goto(`http://127.0.0.1:${port}/wsu.js`);
    return await admin.evaluate(
      async ({ token, event, data }) => {
        const { connect } = await import('/wsu.js');
        const c = connect('/ws', { query: { token }, reconnect: false });
        try {
          await c.joinNamespace('/admin');
          return await c.emitWithAck(event, data, { namespace: '/admin' });
        } finally {
          c.close();
        }
      },
      { token: ADMIN_TOKEN, event, data },
    );
  } finally {
    await admin.close();
  }
}

const users = async () => (await adminRequest('users')).map((u) => [u.nick, u.rooms]);

test('an admin announcement reaches both pages', T, async () => {
  assert.deepEqual(await users(), [
    ['ada', ['lobby', 'rust']],
    ['grace', ['lobby']],
  ]);
  // Everyone in "/": both pages and the admin's own connection.
  assert.deepEqual(await adminRequest('announce', { text: 'Maintenance at 18:00 UTC' }), { delivered: 3 });
  for (const page of [wide, phone]) {
    await until(page, () => document.querySelector('#messages .announcement')?.textContent.includes('Maintenance'));
  }
});

test('ada sees grace typing', T, async () => {
  await phone.fill('#text', '');
  await phone.type('#text', 'I am writing a long answ', { delay: 5 });
  await until(wide, () => document.getElementById('typing').textContent === 'grace is typing…');
  assert.equal(await wide.evaluate(() => document.querySelector('#members li[data-nick="grace"]').classList.contains('is-typing')), true);
});

test('screenshots (wide and phone), and no uncaught page errors', T, async () => {
  await mkdir(OUT, { recursive: true });
  await wide.screenshot({ path: path.join(OUT, 'chat.png') });
  await phone.screenshot({ path: path.join(OUT, 'chat-narrow.png') });
  assert.deepEqual(pageErrors, []);
});

test('sending stops the typing indicator', T, async () => {
  await phone.press('#text', 'Enter');
  await until(wide, () => document.getElementById('typing').textContent === '');
  await until(wide, () => document.querySelectorAll('#messages .msg').length === 4);
});

test('a cut connection resumes its session: the messages missed are shown once, in order', T, async () => {
  const sid = await wide.evaluate(() => window.chatClient.sessionId);
  const texts = (page) => page.$$eval('#messages .msg-text', (els) => els.map((e) => e.textContent));
  const before = await texts(wide);
  // Count the page's room joins from now on.
  await wide.evaluate(() => {
    const c = window.chatClient;
    const emitWithAck = c.emitWithAck.bind(c);
    window.roomJoins = 0;
    c.emitWithAck = (event, ...rest) => {
      if (event === 'room:join') window.roomJoins += 1;
      return emitWithAck(event, ...rest);
    };
  });
  proxy.cut();
  await until(wide, () => document.getElementById('conn').dataset.state === 'reconnecting');
  // Ada's session waits on the server: she is gone from grace's member list (wsu's presence),
  // but she did not leave (no notice), and her nickname is still hers.
  await until(phone, () => document.querySelectorAll('#members li').length === 1);
  assert.deepEqual(await members(phone), ['grace']);
  const missed = ['While you were away (1)', 'While you were away (2)', 'While you were away (3)'];
  for (const text of missed) await send(phone, text);
  await until(phone, () => [...document.querySelectorAll('#messages .msg.mine')].every((m) => m.dataset.status === 'sent'));
  assert.doesNotMatch(await phone.textContent('#messages'), /ada left/);
  assert.deepEqual((await users()).map(([nick]) => nick), ['ada', 'grace']);

  proxy.restore();
  await until(wide, () => window.chatClient.state === 'connected' && document.getElementById('room-sub').textContent === '2 online');
  assert.equal(await wide.evaluate(() => window.chatClient.recovered), true, 'the session was resumed');
  assert.equal(await wide.evaluate(() => window.chatClient.sessionId), sid);
  await until(wide, (n) => document.querySelectorAll('#messages .msg-text').length === n, before.length + missed.length);
  assert.deepEqual(await texts(wide), [...before, ...missed], 'each missed message once, in order');
  for (const page of [wide, phone]) {
    await until(page, () => document.querySelectorAll('#members li').length === 2);
    assert.deepEqual(await members(page), ['ada', 'grace']);
  }
  // Still in both rooms, without having joined them again.
  assert.equal(await wide.evaluate(() => window.roomJoins), 0);
  assert.deepEqual(await users(), [
    ['ada', ['lobby', 'rust']],
    ['grace', ['lobby']],
  ]);
  await send(wide, 'Back without a reload');
  await until(phone, () => [...document.querySelectorAll('#messages .msg-text')].some((m) => m.textContent === 'Back without a reload'));
  await until(wide, () => [...document.querySelectorAll('#messages .msg.mine')].at(-1)?.dataset.status === 'sent');
  assert.deepEqual(pageErrors, []);
});

test('server restart: the pages reconnect, rejoin, and send what was written offline', T, async () => {
  await killServer(server);
  server = null;
  for (const page of [wide, phone]) {
    await until(page, () => document.getElementById('banner').textContent.includes('Reconnecting'));
    assert.equal(await page.evaluate(() => document.getElementById('conn').dataset.state), 'reconnecting');
  }
  // Written while the server is down: shown at once, pending.
  await send(wide, 'Written while the server was down');
  await until(wide, () => [...document.querySelectorAll('#messages .msg.mine')].at(-1)?.dataset.status === 'pending');
  await wide.screenshot({ path: path.join(OUT, 'chat-reconnecting.png') });

  assert.equal(await wide.textContent('#room-sub'), 'waiting for the server…');

  server = await startServer(port);
  // Nicknames announced again and rooms rejoined: the new, empty server knows both.
  for (const page of [wide, phone]) {
    await until(page, () => document.getElementById('room-sub').textContent === '2 online');
    assert.equal(await page.evaluate(() => document.getElementById('conn').dataset.state), 'connected');
    assert.deepEqual(await members(page), ['ada', 'grace']);
  }
  assert.deepEqual(await users(), [
    ['ada', ['lobby', 'rust']],
    ['grace', ['lobby']],
  ]);
  assert.match(await wide.textContent('#messages'), /The server restarted/);
  // The offline message was sent after the rejoin and acked; grace received it.
  await until(wide, () => [...document.querySelectorAll('#messages .msg.mine')].every((m) => m.dataset.status === 'sent'));
  await until(phone, () => [...document.querySelectorAll('#messages .msg-text')].some((m) => m.textContent === 'Written while the server was down'));
  // And the rooms work as before.
  await send(phone, 'Welcome back');
  await until(wide, () => [...document.querySelectorAll('#messages .msg-text')].some((m) => m.textContent === 'Welcome back'));
  await wide.click('#rooms .room-btn[data-room="rust"]');
  await until(wide, () => document.getElementById('room-title').textContent === '#rust');
  await send(wide, 'Still in #rust');
  await until(wide, () => [...document.querySelectorAll('#messages .msg.mine')].at(-1)?.dataset.status === 'sent');
  assert.deepEqual(pageErrors, []);
});
