// The wsu chat page, on the wsu browser client (served by the chat server at /wsu.js).
//
// Events (see examples/chat/src/protocol.rs): `nick`, `room:join`, `room:leave`, `message`
// (with an ack: pending → ✓), `typing` (volatile); the server sends `message`, `notice`,
// `typing`, `announcement`, and the seed's `chat`. Member lists are wsu's presence
// (`client.presence(room)`, `client.onPresence`): one key per nickname, meta `{nick}`.
//
// Reconnection: wsu.js reconnects by itself (backoff and jitter) and resumes the session when
// the server still has it: same session, rooms kept by the server, and the broadcasts missed
// meanwhile replayed into the handlers below (so they simply appear), then the presence of each
// room sent again. Each time it is connected again, the page announces its nickname again (with
// the `resume` key of the first `nick` ack, so that a new session gets it back from an old one
// the server still keeps). If the session was resumed with nothing lost (`recovered` for `/`),
// the rooms the server still lists for us are kept as they are; otherwise (a new session, or a
// history too short) the page joins its rooms again, merging the history they return. Then it
// sends the messages written while offline. A message whose ack was lost with the connection is
// sent again with the same `cid`: the server does not post it twice.

import { connect } from '/wsu.js';

const MAX_ITEMS = 500; // per room, in the page
const TYPING_REFRESH = 1500; // send "typing" again while typing, at most this often (ms)
const TYPING_IDLE = 3000; // "stopped typing" after this long without a key (ms)
const TYPING_EXPIRY = 5000; // forget someone's "typing" after this long without news (ms)
const GROUP_WINDOW = 5 * 60 * 1000; // consecutive messages of one author within this are grouped
const STORE_KEY = 'wsu-chat-session';
const NICK_RE = /^[\p{L}\p{N}._-]{2,24}$/u;
const ROOM_RE = /^[a-z0-9_-]{1,32}$/;

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

// ---- state ----------------------------------------------------------------------------------

const state = {
  nick: null, // chosen (and accepted) nickname
  resume: null, // its resume key
  server: null, // the server process we talk to (its message ids are only unique within it)
  rooms: new Map(), // name -> Room
  current: null, // the room on screen
  ready: false, // connected, nickname announced and rooms joined: messages go out
  session: 0, // bumped for each (re)connection, to drop the results of an older one
  outbox: [], // my messages waiting for `ready`
  recovery: null, // the `recovery` frame of `/` for the current connection (wsu.js onRecovery)
  nextCid: 1,
  cidPrefix: Math.random().toString(36).slice(2, 8),
};

/** A room as the page knows it. */
function newRoom(name) {
  return { name, members: [], items: [], unread: 0, typing: new Map() };
}

function save() {
  try {
    sessionStorage.setItem(
      STORE_KEY,
      JSON.stringify({
        nick: state.nick,
        resume: state.resume,
        rooms: [...state.rooms.keys()],
        current: state.current,
      }),
    );
    if (state.nick) localStorage.setItem('wsu-chat-nick', state.nick);
  } catch {
    // storage disabled: the session lasts as long as the page
  }
}

function restore() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORE_KEY) ?? 'null');
    if (saved?.nick) {
      state.nick = saved.nick;
      state.resume = saved.resume ?? null;
      for (const name of saved.rooms ?? []) state.rooms.set(name, newRoom(name));
      state.current = state.rooms.has(saved.current) ? saved.current : (saved.rooms?.[0] ?? null);
    }
    $('nick-input').value = localStorage.getItem('wsu-chat-nick') ?? '';
  } catch {
    // nothing saved
  }
}

// ---- connection -----------------------------------------------------------------------------

const client = connect('/ws', {
  reconnect: { initialDelay: 300, maxDelay: 5000, factor: 2, jitter: 0.5 },
  ackTimeout: 8000,
});
window.chatClient = client; // for the browser test and the curious

let wasConnected = false;

client.onState((s) => {
  // While not connected, what the page shows of the others may be out of date.
  document.body.classList.toggle('offline', s.state !== 'connected');
  if (s.state === 'connected') {
    setConn('connected', 'Online');
    if (wasConnected) flashBanner('ok', 'Back online');
    else hideBanner();
    wasConnected = true;
    startSession(s.resumed === true);
    return;
  }
  state.ready = false;
  state.session += 1;
  state.recovery = null;
  if (s.state === 'connecting') {
    setConn('connecting', 'Connecting…');
  } else if (s.state === 'disconnected' && s.willReconnect) {
    setConn('reconnecting', 'Reconnecting…');
    showBanner('warn', 'Connection lost. Reconnecting…');
  } else if (s.state === 'reconnecting') {
    setConn('reconnecting', 'Reconnecting…');
    const when = s.delay >= 1000 ? ` in ${Math.round(s.delay / 1000)} s` : '';
    showBanner('warn', `Connection lost. Reconnecting${when} (attempt ${s.attempt})…`);
  } else if (s.state === 'gave-up') {
    setConn('offline', 'Offline');
    showBanner('bad', 'Could not reach the server.', 'Retry', () => location.reload());
  } else if (s.state === 'disconnected') {
    setConn('offline', 'Offline');
    const why = {
      4510: s.reason || 'You were removed by an admin.',
      4509: 'Your nickname is now used in another window.',
      4500: s.reason,
    }[s.code];
    showBanner('bad', why ? capitalise(why) + '.' : `Disconnected (${s.code}).`, 'Reconnect', () => location.reload());
  }
  renderTyping();
  renderMembers();
});

client.onError((e) => console.warn('wsu chat:', e.message, e));

// Sent before any answer on a connection: known by the time the `nick` ack arrives.
client.onRecovery((r) => {
  if (r.namespace === '/') state.recovery = r;
});

/**
 * After every (re)connection: nickname, then rooms, then the outbox. `resumed`: the server
 * resumed our session (wsu.js did it; the rooms are the server's to restore).
 */
async function startSession(resumed) {
  const session = ++state.session;
  state.ready = false;
  if (!state.nick) {
    showWelcome();
    return;
  }
  let ack;
  try {
    ack = await announceNick(state.nick);
  } catch (e) {
    if (session !== state.session) return;
    if (e.kind === 'server') {
      // Someone else took the nickname while we were away.
      const nick = state.nick;
      state.nick = null;
      state.resume = null;
      showWelcome(`“${nick}” is taken now. Pick another nickname.`);
    }
    return; // disconnected or timed out: the next connection starts again
  }
  if (session !== state.session) return;
  // Rooms left while offline that a resumed (or taken over) session still has: left now.
  for (const name of ack.rooms) {
    if (!state.rooms.has(name)) client.emitWithAck('room:leave', { room: name }).catch(() => {});
  }
  // Resumed with every missed broadcast replayed: the rooms the server kept need no reload.
  const kept = resumed && state.recovery?.recovered === true ? new Set(ack.rooms) : new Set();
  await enterRooms(session, kept);
}

/** Send `nick` (with our resume key); resolves with the ack, rejects like `emitWithAck`. */
async function announceNick(nick) {
  const ack = await client.emitWithAck('nick', { nick, resume: state.resume ?? undefined });
  // A rename reaches the member lists (ours too) through wsu's presence.
  state.nick = ack.nick;
  state.resume = ack.resume;
  if (state.server !== null && ack.server !== state.server) serverRestarted();
  state.server = ack.server;
  save();
  renderMe();
  return ack;
}

/**
 * The server restarted: its rooms start empty and its message ids start over. What we have
 * stays on screen, without ids (so that new messages with the same ids are not mistaken for
 * them), after a line saying so.
 */
function serverRestarted() {
  for (const room of state.rooms.values()) {
    for (const it of room.items) if (it.kind === 'message') delete it.id;
    room.typing.clear();
    pushItem(room, { kind: 'notice', notice: 'restart', ts: Date.now() });
  }
}

/** Join every room of ours again (but those in `kept`), then let the messages out. */
async function enterRooms(session, kept = new Set()) {
  for (const name of [...state.rooms.keys()]) {
    if (kept.has(name)) {
      state.rooms.get(name).members = membersOf(client.presence(name));
      continue;
    }
    try {
      await joinRoom(name, session);
    } catch (e) {
      if (session !== state.session) return;
      if (e.kind === 'server') dropRoom(name, `Could not rejoin #${name}: ${e.message}`);
      else return;
    }
  }
  if (session !== state.session) return;
  if (!state.rooms.has(state.current)) state.current = state.rooms.keys().next().value ?? null;
  state.ready = true;
  hideWelcome();
  save();
  flushOutbox();
  render();
}

/** Join `name` (or rejoin it), merging its history. Rejects like `emitWithAck`. */
async function joinRoom(name, session = state.session) {
  const joined = await client.emitWithAck('room:join', { room: name });
  if (session !== state.session) return joined;
  let room = state.rooms.get(joined.room);
  if (!room) {
    room = newRoom(joined.room);
    state.rooms.set(joined.room, room);
  }
  // The room's presence state arrived before the ack.
  room.members = membersOf(client.presence(joined.room));
  mergeHistory(room, joined.history);
  save();
  return joined;
}

function dropRoom(name, why) {
  state.rooms.delete(name);
  state.outbox = state.outbox.filter((m) => m.room !== name);
  if (state.current === name) state.current = state.rooms.keys().next().value ?? null;
  save();
  render();
  if (why) showJoinError(why);
}

// ---- server events --------------------------------------------------------------------------

client.on('message', (m) => {
  const room = state.rooms.get(m.room);
  if (!room) return;
  if (addMessage(room, { kind: 'message', id: m.id, nick: m.nick, text: m.text, ts: m.ts, cid: m.cid })) {
    room.typing.delete(m.nick);
    if (m.room !== state.current || document.hidden) room.unread += 1;
    if (m.room === state.current) {
      renderMessages();
      renderTyping();
    }
    renderRooms();
  }
});

/** The nicknames of a presence state (user key → connections), sorted ignoring case. */
function membersOf(presence) {
  const nicks = Object.entries(presence)
    .filter(([, conns]) => conns.some((c) => typeof c.meta?.nick === 'string'))
    .map(([nick]) => nick);
  const key = (n) => [n.toLowerCase(), n];
  return nicks.sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0;
  });
}

// Member lists: wsu's presence of our rooms (connections without a nickname are left out).
client.onPresence((p) => {
  if (p.namespace !== '/') return;
  const room = state.rooms.get(p.room);
  if (!room) return;
  room.members = membersOf(p.state);
  for (const nick of room.typing.keys()) if (!room.members.includes(nick)) room.typing.delete(nick);
  if (p.room === state.current) {
    renderMembers();
    renderTyping();
  }
});

client.on('notice', (n) => {
  const room = state.rooms.get(n.room);
  if (!room) return;
  if (n.kind === 'nick' && n.from) room.typing.delete(n.from);
  pushItem(room, { kind: 'notice', notice: n.kind, nick: n.nick, from: n.from, ts: n.ts });
  if (n.room === state.current) renderMessages();
});

client.on('typing', (t) => {
  const room = state.rooms.get(t.room);
  if (!room) return;
  clearTimeout(room.typing.get(t.nick));
  if (t.typing) {
    room.typing.set(
      t.nick,
      setTimeout(() => {
        room.typing.delete(t.nick);
        if (room.name === state.current) renderTyping();
      }, TYPING_EXPIRY),
    );
  } else {
    room.typing.delete(t.nick);
  }
  if (t.room === state.current) renderTyping();
});

client.on('announcement', (a) => {
  const targets = a.room ? [state.rooms.get(a.room)].filter(Boolean) : [...state.rooms.values()];
  for (const room of targets) pushItem(room, { kind: 'announcement', text: a.text, ts: a.ts });
  // In the room on screen it is seen; otherwise it is worth a banner.
  if (!targets.some((room) => room.name === state.current)) flashBanner('info', `Announcement: ${a.text}`, 6000);
  renderMessages();
});

// The seed example's `chat` event (sent by `cargo run -p chat --bin client` and by seed clients)
// goes to everyone; shown in #lobby.
client.on('chat', (c) => {
  const room = state.rooms.get('lobby');
  if (!room || typeof c?.message !== 'string') return;
  pushItem(room, { kind: 'message', nick: String(c.user ?? '?'), text: c.message, ts: Date.now(), seed: true });
  if (state.current === 'lobby') renderMessages();
  else room.unread += 1;
  renderRooms();
});

/** Add a message unless it is known (same id); my pending one with the same cid gets the id. */
function addMessage(room, m) {
  if (room.items.some((it) => it.kind === 'message' && it.id === m.id)) return false;
  const mine = m.nick === state.nick && m.cid ? room.items.find((it) => it.mine && it.cid === m.cid) : null;
  if (mine) {
    acknowledge(mine, m);
    return true;
  }
  // In id order among messages that have one (history may fill a gap), before my pending ones.
  const at = room.items.findIndex(
    (it) => it.kind === 'message' && (it.id !== undefined ? it.id > m.id : it.mine && it.status !== 'sent'),
  );
  if (at === -1) pushItem(room, m);
  else room.items.splice(at, 0, m);
  return true;
}

function mergeHistory(room, history) {
  for (const m of history) addMessage(room, { kind: 'message', ...m });
  if (room.name === state.current) renderMessages();
}

function pushItem(room, item) {
  room.items.push(item);
  if (room.items.length > MAX_ITEMS) room.items.splice(0, room.items.length - MAX_ITEMS);
}

// ---- sending --------------------------------------------------------------------------------

function sendMessage(text) {
  const room = state.rooms.get(state.current);
  if (!room) return;
  const item = {
    kind: 'message',
    mine: true,
    nick: state.nick,
    text,
    ts: Date.now(),
    room: room.name,
    cid: `${state.cidPrefix}-${state.nextCid++}`,
    status: 'pending',
  };
  pushItem(room, item);
  state.outbox.push(item);
  renderMessages(true);
  flushOutbox();
}

function flushOutbox() {
  if (!state.ready) return;
  const items = state.outbox.splice(0);
  for (const item of items) deliver(item);
}

async function deliver(item) {
  item.status = 'pending';
  item.error = undefined;
  const session = state.session;
  try {
    const ack = await client.emitWithAck('message', { room: item.room, text: item.text, cid: item.cid });
    acknowledge(item, ack);
  } catch (e) {
    if (e.kind === 'server') {
      item.status = 'failed';
      item.error = e.message;
    } else if (session !== state.session || !state.ready) {
      // Lost with the connection: sent again (same cid) once we are back.
      if (!state.outbox.includes(item)) state.outbox.push(item);
    } else {
      item.status = 'failed';
      item.error = e.kind === 'timeout' ? 'no answer from the server' : e.message;
    }
  }
  if (item.room === state.current) renderMessages();
}

function acknowledge(item, ack) {
  item.status = 'sent';
  item.id = ack.id;
  item.ts = ack.ts;
  state.outbox = state.outbox.filter((m) => m !== item);
}

// Typing: volatile, only sent while connected.
let typingRoom = null;
let typingSentAt = 0;
let typingIdle = null;

function typingTick() {
  const text = $('text').value.trim();
  if (!text || !state.current) {
    stopTyping();
    return;
  }
  const now = Date.now();
  if (typingRoom !== state.current || now - typingSentAt > TYPING_REFRESH) {
    if (typingRoom && typingRoom !== state.current) stopTyping();
    if (emitVolatile('typing', { room: state.current, typing: true })) {
      typingRoom = state.current;
      typingSentAt = now;
    }
  }
  clearTimeout(typingIdle);
  typingIdle = setTimeout(stopTyping, TYPING_IDLE);
}

function stopTyping(quiet = false) {
  clearTimeout(typingIdle);
  if (typingRoom && !quiet) emitVolatile('typing', { room: typingRoom, typing: false });
  typingRoom = null;
  typingSentAt = 0;
}

function emitVolatile(event, data) {
  if (!state.ready || client.state !== 'connected') return false;
  try {
    client.emit(event, data);
    return true;
  } catch {
    return false;
  }
}

// ---- rendering ------------------------------------------------------------------------------

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const fullTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

const AVATAR_COLOURS = ['#5b5bd6', '#d6496f', '#1f9d8a', '#e07b24', '#8e4fd1', '#2f7fd8', '#c0473b', '#3f9d3a', '#b5651d', '#d14fa4'];

function avatar(nick, small = false) {
  const a = el('span', small ? 'avatar small' : 'avatar', [...nick][0] ?? '?');
  let h = 2166136261; // FNV-1a
  for (const ch of nick.toLowerCase()) h = Math.imul(h ^ ch.codePointAt(0), 16777619) >>> 0;
  a.style.setProperty('--avatar', AVATAR_COLOURS[h % AVATAR_COLOURS.length]);
  a.setAttribute('aria-hidden', 'true');
  return a;
}

function render() {
  renderMe();
  renderRooms();
  renderHeader();
  renderMessages(true);
  renderMembers();
  renderTyping();
}

function renderMe() {
  $('me-nick').textContent = state.nick ?? '';
  $('me-avatar').replaceWith(Object.assign(avatar(state.nick ?? '?'), { id: 'me-avatar' }));
}

function renderRooms() {
  const list = $('rooms');
  list.replaceChildren(
    ...[...state.rooms.values()].map((room) => {
      const li = el('li');
      const b = el('button', 'room-btn');
      b.type = 'button';
      b.dataset.room = room.name;
      b.setAttribute('aria-current', String(room.name === state.current));
      b.append(el('span', 'hash', '#'), el('span', 'name', room.name));
      if (room.unread && room.name !== state.current) b.append(el('span', 'badge', String(room.unread)));
      b.addEventListener('click', () => switchRoom(room.name));
      li.append(b);
      return li;
    }),
  );
  const unread = [...state.rooms.values()].reduce((n, r) => n + r.unread, 0);
  document.title = unread ? `(${unread}) wsu chat` : 'wsu chat';
}

function renderHeader() {
  const room = state.rooms.get(state.current);
  document.querySelector('.chat').classList.toggle('no-room', !room);
  const title = $('room-title');
  title.replaceChildren();
  if (room) {
    title.append(el('span', 'hash', '#'), room.name);
    $('text').placeholder = `Message #${room.name}`;
  } else {
    title.textContent = 'No room';
  }
}

function renderMessages(forceBottom = false) {
  const list = $('messages');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const room = state.rooms.get(state.current);
  if (!room) {
    const empty = el('li', 'empty');
    empty.append(el('span', 'big', 'You are in no room'), 'Join or create one from the list of rooms.');
    list.replaceChildren(empty);
    return;
  }
  const intro = el('li', 'intro');
  const mark = el('span', 'intro-mark', '#');
  mark.setAttribute('aria-hidden', 'true');
  intro.append(
    mark,
    el('span', 'big', `This is the start of #${room.name}`),
    'Everyone in the room sees your messages as you send them. The room lasts as long as someone is in it.',
  );
  const nodes = [intro];
  let prev = null;
  for (const it of room.items) {
    if (it.kind === 'message') {
      const first = !(prev && prev.kind === 'message' && prev.nick === it.nick && !prev.seed && !it.seed && it.ts - prev.ts < GROUP_WINDOW);
      nodes.push(messageNode(it, first));
    } else if (it.kind === 'notice') {
      nodes.push(noticeNode(it));
    } else if (it.kind === 'announcement') {
      const li = el('li', 'announcement');
      const body = el('div');
      body.append(el('b', null, 'Announcement'), it.text);
      li.append(megaphone(), body);
      nodes.push(li);
    }
    prev = it;
  }
  list.replaceChildren(...nodes);
  if (forceBottom || atBottom) list.scrollTop = list.scrollHeight;
}

function messageNode(it, first) {
  const li = el('li', 'msg');
  if (first) li.classList.add('first');
  if (it.mine) {
    li.classList.add('mine');
    li.dataset.status = it.status;
    li.dataset.cid = it.cid;
  }
  if (it.id !== undefined) li.dataset.id = String(it.id);
  li.append(avatar(it.nick));
  const head = el('div', 'msg-head');
  head.append(el('span', 'msg-nick', it.nick));
  if (it.seed) head.append(el('span', 'tag', 'seed client'));
  const time = el('time', 'msg-time', timeFormat.format(it.ts));
  time.dateTime = new Date(it.ts).toISOString();
  time.title = fullTimeFormat.format(it.ts);
  head.append(time);
  const body = el('div', 'msg-body');
  body.append(el('div', 'msg-text', it.text));
  if (it.mine) {
    const status = el('span', 'status', it.status === 'sent' ? '✓' : it.status === 'failed' ? '!' : '');
    status.title =
      it.status === 'sent'
        ? `Received by the server at ${fullTimeFormat.format(it.ts)}`
        : it.status === 'failed'
          ? 'Not sent. Click to try again.'
          : 'Sending…';
    if (it.status === 'failed') {
      status.setAttribute('role', 'button');
      status.addEventListener('click', () => {
        state.outbox.push(it);
        it.status = 'pending';
        renderMessages();
        flushOutbox();
      });
    }
    body.append(status);
  }
  li.append(head, body);
  if (it.status === 'failed' && it.error) li.append(el('div', 'msg-error', `Not sent: ${it.error}`));
  return li;
}

function megaphone() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 20 20');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', 'M3 8v4h3l6 4V4L6 8H3zM15 7.5a3.5 3.5 0 0 1 0 5M7 12l1 4');
  svg.append(path);
  return svg;
}

function noticeNode(it) {
  const li = el('li', 'notice');
  const span = el('span');
  if (it.notice === 'restart') {
    span.append('The server restarted · ', timeFormat.format(it.ts));
    li.append(span);
    return li;
  }
  const who = el('b', null, it.nick);
  const text = {
    join: ' joined',
    leave: ' left',
    kick: ' was removed by an admin',
    nick: ` is the new name of ${it.from}`,
  }[it.notice];
  span.append(who, text ?? '', ` · ${timeFormat.format(it.ts)}`);
  li.append(span);
  return li;
}

function renderMembers() {
  const room = state.rooms.get(state.current);
  const members = room?.members ?? [];
  $('member-count').textContent = String(members.length);
  $('member-pill').textContent = String(members.length);
  $('room-sub').textContent = !room ? '' : state.ready ? `${members.length} online` : 'waiting for the server…';
  $('members').replaceChildren(
    ...members.map((nick) => {
      const li = el('li');
      li.dataset.nick = nick;
      if (room.typing.has(nick)) li.classList.add('is-typing');
      li.append(avatar(nick, true), el('span', 'who', nick));
      if (nick === state.nick) li.append(el('span', 'you', 'you'));
      li.append(el('span', 'presence-dot'));
      return li;
    }),
  );
}

function renderTyping() {
  const room = state.rooms.get(state.current);
  const nicks = room && state.ready ? [...room.typing.keys()].filter((n) => n !== state.nick) : [];
  const box = $('typing');
  for (const li of $('members').children) li.classList.toggle('is-typing', nicks.includes(li.dataset.nick));
  if (!nicks.length) {
    box.replaceChildren();
    return;
  }
  const dots = el('span', 'dots');
  dots.append(el('i'), el('i'), el('i'));
  const names =
    nicks.length === 1
      ? `${nicks[0]} is typing…`
      : nicks.length === 2
        ? `${nicks[0]} and ${nicks[1]} are typing…`
        : `${nicks.length} people are typing…`;
  box.replaceChildren(dots, names);
}

// ---- banner and connection indicator --------------------------------------------------------

let bannerTimer = null;

function showBanner(kind, text, action, onAction) {
  clearTimeout(bannerTimer);
  const banner = $('banner');
  banner.dataset.kind = kind;
  $('banner-text').textContent = text;
  const button = $('banner-action');
  button.hidden = !action;
  button.textContent = action ?? '';
  button.onclick = onAction ?? null;
  banner.hidden = false;
}

function flashBanner(kind, text, ms = 2500) {
  showBanner(kind, text);
  bannerTimer = setTimeout(hideBanner, ms);
}

function hideBanner() {
  clearTimeout(bannerTimer);
  $('banner').hidden = true;
}

function setConn(kind, text) {
  for (const id of ['conn', 'welcome-conn']) $(id).dataset.state = kind;
  $('conn-text').textContent = text;
  $('welcome-conn-text').textContent = kind === 'connected' ? 'Connected' : text;
}

function capitalise(s) {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

// ---- welcome (nickname) ---------------------------------------------------------------------

let renaming = false;

function showWelcome(error = '', rename = false) {
  renaming = rename;
  document.body.classList.add('welcoming');
  $('nick-form').classList.toggle('rename', rename);
  $('welcome-title').textContent = rename ? 'Change your nickname' : 'Welcome to wsu chat';
  $('welcome-text').textContent = rename
    ? 'Everyone in your rooms will see the new name.'
    : 'Pick a nickname and a room. Rooms are created as soon as someone joins them.';
  $('nick-submit').textContent = rename ? 'Save' : 'Join the chat';
  $('nick-error').textContent = error;
  $('nick-submit').disabled = false;
  if (rename) $('nick-input').value = state.nick ?? '';
  setTimeout(() => $('nick-input').focus(), 0);
}

function hideWelcome() {
  document.body.classList.remove('welcoming');
  renaming = false;
}

$('nick-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const nick = $('nick-input').value.trim();
  const roomName = normaliseRoom($('room-input').value || 'lobby');
  if (!NICK_RE.test(nick)) {
    $('nick-error').textContent = 'Nicknames are 2 to 24 letters, digits, “-”, “_” or “.”.';
    return;
  }
  if (!renaming && !ROOM_RE.test(roomName)) {
    $('nick-error').textContent = 'Room names are 1 to 32 of a-z, 0-9, “-” and “_”.';
    return;
  }
  $('nick-error').textContent = '';
  $('nick-submit').disabled = true;
  try {
    await announceNick(nick);
    if (!renaming) {
      // A new room is joined here, so that a refusal shows on this card.
      if (!state.rooms.has(roomName)) await joinRoom(roomName);
      state.current = roomName;
      await enterRooms(state.session);
    }
    hideWelcome();
    render();
    $('text').focus();
  } catch (e) {
    $('nick-error').textContent =
      e.kind === 'server' ? capitalise(e.message) + '.' : 'The server is not reachable right now. Try again in a moment.';
  } finally {
    $('nick-submit').disabled = false;
  }
});

$('rename').addEventListener('click', () => showWelcome('', true));
document.addEventListener('keydown', (e) => {
  if (e.key === 'Escape' && renaming) hideWelcome();
});

// ---- rooms ----------------------------------------------------------------------------------

function normaliseRoom(input) {
  const s = input.trim();
  return (s.startsWith('#') ? s.slice(1) : s).toLowerCase();
}

function showJoinError(text) {
  $('join-error').textContent = text;
}

$('join-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = normaliseRoom($('join-input').value);
  if (!name) return;
  showJoinError('');
  if (state.rooms.has(name)) {
    $('join-input').value = '';
    switchRoom(name);
    return;
  }
  if (!ROOM_RE.test(name)) {
    showJoinError('Use 1 to 32 of a-z, 0-9, “-” and “_”.');
    return;
  }
  try {
    await joinRoom(name);
    $('join-input').value = '';
    switchRoom(name);
  } catch (e) {
    showJoinError(e.kind === 'server' ? capitalise(e.message) + '.' : 'Not connected; try again in a moment.');
  }
});

function switchRoom(name) {
  if (typingRoom && typingRoom !== name) stopTyping();
  state.current = name;
  const room = state.rooms.get(name);
  if (room) room.unread = 0;
  closeDrawers();
  save();
  render();
  if (matchMedia('(min-width: 761px)').matches) $('text').focus();
}

$('leave').addEventListener('click', async () => {
  const name = state.current;
  if (!name) return;
  if (typingRoom === name) stopTyping();
  try {
    await client.emitWithAck('room:leave', { room: name });
  } catch (e) {
    // Not in it on the server any more, or offline: forget it all the same (it is not rejoined).
    if (e.kind !== 'server') console.warn('leave', e);
  }
  dropRoom(name);
});

// ---- composer -------------------------------------------------------------------------------

const text = $('text');

function autosize() {
  text.style.height = 'auto';
  text.style.height = `${Math.min(text.scrollHeight, 160)}px`;
}

text.addEventListener('input', () => {
  autosize();
  typingTick();
});

text.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('composer').requestSubmit();
  }
});

$('composer').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const value = text.value.trim();
  if (!value || !state.current) return;
  stopTyping(true); // the message itself ends "typing" for the others
  sendMessage(value);
  text.value = '';
  autosize();
});

// ---- drawers (narrow screens) ---------------------------------------------------------------

function closeDrawers() {
  $('app').dataset.drawer = 'none';
}

$('toggle-rooms').addEventListener('click', () => {
  $('app').dataset.drawer = $('app').dataset.drawer === 'rooms' ? 'none' : 'rooms';
});
$('toggle-members').addEventListener('click', () => {
  $('app').dataset.drawer = $('app').dataset.drawer === 'members' ? 'none' : 'members';
});
$('scrim').addEventListener('click', closeDrawers);

document.addEventListener('visibilitychange', () => {
  if (!document.hidden) {
    const room = state.rooms.get(state.current);
    if (room) room.unread = 0;
    renderRooms();
  }
});

// ---- start ----------------------------------------------------------------------------------

restore();
render();
if (!state.nick) showWelcome();
window.chatReady = true;
