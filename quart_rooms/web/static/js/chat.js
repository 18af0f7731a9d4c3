// The chat view: the room list, joined rooms with their logs and members, the
// composer, and the live Socket.IO connection (wire contract v1).

import { api, endSession, expiresWithin, onToken, refreshSession, token } from "./api.js";
import { $, charCount, h, longTime, notify, randomId, shortTime, show } from "./dom.js";

const HISTORY_ON_JOIN = 50; // the server sends the latest 50 messages on a plain join
const PAGE = 50; // older messages per HTTP page
const ACK_TIMEOUT = 10_000;
const EXPIRED = "Your session expired. Please sign in again.";
const ENDED = "The server ended your session. Please sign in again.";
// Why the server ended a session (event session_expired {reason}, docs/api.md).
const END_REASONS = {
  account_changed: "An admin disabled your account or set a new password. Please sign in again.",
  account_deleted: "Your account was deleted.",
  signed_out: "You signed out in another tab or window. Please sign in again.",
};

const SEND_ERRORS = {
  forbidden: () => "You may not write in this room.",
  not_in_room: () => "You are not in this room any more. Join it again to write.",
  rate_limited: () => "You are sending too fast. Wait a few seconds, then press Enter again.",
  too_large: () => `Too long: a message may have at most ${state.limits.max_message_chars} characters.`,
  bad_request: (ack) => ack.message || "The server did not accept this message.",
};

const state = {
  me: null,
  limits: { max_message_chars: 2000, messages_per_10s: 20 },
  socket: null,
  stopped: true,
  everConnected: false,
  freshNeeded: false, // the next (re)connection renews the token through the cookie first
  expired: false,
  endedBy: null, // the message for a session the server ended on purpose
  refusals: 0,
  rooms: new Map(), // name -> {name, title, public, role}: rooms the user may join
  joined: new Map(), // name -> JoinedRoom
  items: new Map(), // name -> <li> of the room list
  active: null,
  draft: null, // {room, text, clientId}: a retry of the same text reuses the client_id
  sending: false,
};

/** A room the user is in: its log, members and position in the history. */
class JoinedRoom {
  constructor(name) {
    this.name = name;
    this.role = null;
    this.members = new Set();
    this.unread = 0;
    this.ids = []; // message ids shown, ascending
    this.byId = new Map(); // id -> <li>
    this.noMore = false;
    this.loadingOlder = false;
    this.joining = false;
    this.joinedOnce = false;
    this.stick = true; // follow new messages (the reader is at the bottom)
    this.draftText = "";
    this.olderButton = h("button", { type: "button", class: "small older", text: "Load older messages" });
    this.historyStart = h("p", { class: "history-start note", text: "This is the start of the room.", hidden: true });
    this.list = h("ol", { class: "messages" });
    this.log = h("div", {
      class: "log", role: "log", tabindex: "0", "aria-label": `Messages in ${name}`, dataset: { room: name }, hidden: true,
    }, h("div", { class: "log-top" }, this.olderButton, this.historyStart), this.list);
    this.olderButton.addEventListener("click", () => loadOlder(this));
    // The log shrinks when the composer or the phone keyboard appears: stay at the end.
    new ResizeObserver(() => {
      if (this.stick && !this.log.hidden) this.log.scrollTop = this.log.scrollHeight;
    }).observe(this.log);
    this.log.addEventListener("scroll", () => {
      this.stick = atBottom(this.log);
      if (this.log.scrollTop < 80) loadOlder(this);
    }, { passive: true });
  }

  get lastId() {
    return this.ids.length ? this.ids[this.ids.length - 1] : null;
  }

  get firstId() {
    return this.ids.length ? this.ids[0] : null;
  }

  setNoMore(value) {
    this.noMore = value;
    show(this.olderButton, !value);
    show(this.historyStart, value);
  }
}

function atBottom(log) {
  return log.scrollHeight - log.scrollTop - log.clientHeight < 48;
}

// Connection state -------------------------------------------------------------

function setConn(kind, text) {
  const el = $("conn");
  el.dataset.state = kind;
  el.textContent = text;
}

// Messages -----------------------------------------------------------------------

function renderMessage(m) {
  return h("li", { class: m.user === state.me ? "msg own" : "msg", dataset: { id: m.id } },
    h("div", { class: "meta" },
      h("span", { class: "who", text: m.user }),
      h("time", { datetime: m.ts, title: longTime(m.ts), text: shortTime(m.ts) })),
    h("p", { class: "text", text: m.msg }));
}

function insertPosition(ids, id) {
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ids[mid] < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Show messages in id order, each once; returns the ones that were new. */
function addMessages(room, messages) {
  const log = room.log;
  const before = { height: log.scrollHeight, top: log.scrollTop };
  let insertedAbove = false;
  const added = [];
  for (const m of messages) {
    if (!m || !Number.isInteger(m.id) || room.byId.has(m.id)) continue;
    const li = renderMessage(m);
    const at = insertPosition(room.ids, m.id);
    if (at < room.ids.length) {
      room.list.insertBefore(li, room.byId.get(room.ids[at]));
      insertedAbove = true;
    } else {
      room.list.append(li);
    }
    room.ids.splice(at, 0, m.id);
    room.byId.set(m.id, li);
    added.push(m);
  }
  if (added.length) keepPlace(room, before, insertedAbove);
  return added;
}

/** No jumps: follow the end when the reader is there, else keep what they read in place. */
function keepPlace(room, before, insertedAbove) {
  const log = room.log;
  if (log.hidden) return;
  if (room.stick) log.scrollTop = log.scrollHeight;
  else if (insertedAbove) log.scrollTop = before.top + (log.scrollHeight - before.height);
}

function systemLine(room, text) {
  const before = { height: room.log.scrollHeight, top: room.log.scrollTop };
  room.list.append(h("li", { class: "system" }, h("span", { text })));
  keepPlace(room, before, false);
}

async function loadOlder(room) {
  if (room.loadingOlder || room.noMore || room.firstId === null || !state.joined.has(room.name)) return;
  room.loadingOlder = true;
  room.olderButton.textContent = "Loading older messages…";
  try {
    const path = `/api/rooms/${encodeURIComponent(room.name)}/messages?before_id=${room.firstId}&limit=${PAGE}`;
    const data = await api("GET", path);
    const wasStuck = room.stick;
    room.stick = false;
    addMessages(room, data.messages || []);
    room.stick = wasStuck && atBottom(room.log);
    if ((data.messages || []).length < PAGE) room.setNoMore(true);
  } catch (error) {
    if (error.status === 403) dropRoom(room.name, `You no longer have access to room ${room.name}.`);
    else notify(`Could not load older messages: ${error.message}`, "error");
  } finally {
    room.loadingOlder = false;
    room.olderButton.textContent = "Load older messages";
  }
}

// Room list ------------------------------------------------------------------------

function roomItem(name) {
  const button = h("button", { type: "button", class: "room-button", dataset: { room: name } },
    h("span", { class: "room-name" }),
    h("span", { class: "room-title" }),
    h("span", { class: "room-flags" }),
    h("span", { class: "unread", hidden: true }));
  button.addEventListener("click", () => openRoom(name));
  return h("li", { dataset: { room: name } }, button);
}

function renderRoomList() {
  const list = $("room-list");
  const names = [...state.rooms.keys()].sort((a, b) => a.localeCompare(b));
  for (const [name, li] of state.items) {
    if (!state.rooms.has(name)) {
      li.remove();
      state.items.delete(name);
    }
  }
  let previous = null;
  for (const name of names) {
    const info = state.rooms.get(name);
    let li = state.items.get(name);
    if (!li) {
      li = roomItem(name);
      state.items.set(name, li);
    }
    const expected = previous ? previous.nextElementSibling : list.firstElementChild;
    if (expected !== li) (previous ? previous.after(li) : list.prepend(li));
    previous = li;
    const joined = state.joined.get(name);
    const button = li.firstElementChild;
    button.querySelector(".room-name").textContent = name;
    button.querySelector(".room-title").textContent = info.title || "";
    const flags = [];
    if (info.role === "read") flags.push("read only");
    if (!info.public) flags.push("private");
    if (joined) flags.push("joined");
    button.querySelector(".room-flags").textContent = flags.join(" · ");
    const badge = button.querySelector(".unread");
    const unread = joined ? joined.unread : 0;
    badge.textContent = unread ? `${unread} unread` : "";
    show(badge, unread > 0);
    li.classList.toggle("joined", Boolean(joined));
    if (state.active === name) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
  show($("rooms-empty"), names.length === 0);
  const total = [...state.joined.values()].reduce((sum, r) => sum + r.unread, 0);
  document.title = total ? `(${total}) quart-rooms` : "quart-rooms";
}

/** GET /api/rooms: only the rooms this user may join, with the role in each. */
export async function reloadRooms() {
  if (state.stopped) return false;
  let data;
  try {
    data = await api("GET", "/api/rooms");
  } catch (error) {
    if (error.status !== 401) notify(`Could not load the room list: ${error.message}`, "error");
    return false;
  }
  if (state.stopped) return false;
  state.rooms = new Map(data.rooms.map((r) => [r.name, r]));
  for (const name of [...state.joined.keys()]) {
    if (!state.rooms.has(name)) dropRoom(name, `You no longer have access to room ${name}.`);
  }
  renderRoomList();
  return true;
}

// The shown room ---------------------------------------------------------------------

function renderMembers() {
  const room = state.joined.get(state.active);
  const names = room ? [...room.members].sort((a, b) => a.localeCompare(b)) : [];
  $("member-list").replaceChildren(...names.map((n) =>
    h("li", { class: n === state.me ? "me" : "" }, n, n === state.me ? h("span", { class: "note", text: " (you)" }) : null)));
  $("members-summary").textContent = `Members (${names.length})`;
}

function renderPane(notice = "") {
  const room = state.joined.get(state.active);
  const info = state.rooms.get(state.active);
  show($("room-placeholder"), !room);
  show($("room-body"), Boolean(room));
  show($("leave-room"), Boolean(room));
  if (!room) {
    $("room-heading").textContent = "Pick a room";
    $("room-sub").textContent = "";
    $("room-placeholder").textContent = notice || "Choose a room from the list to join it. You can be in several rooms at once.";
    show($("composer"), false);
    show($("read-only-note"), false);
    renderMembers();
    return;
  }
  $("room-heading").textContent = (info && info.title) || room.name;
  const role = room.role || (info && info.role);
  const parts = [room.name];
  if (role) parts.push(role === "write" ? "read and write" : "read only");
  if (info) parts.push(info.public ? "public" : "private");
  if (!room.role) parts.push("joining…");
  $("room-sub").textContent = parts.join(" · ");
  show($("composer"), role === "write"); // from the room list until the join answers: no jump
  show($("read-only-note"), role === "read");
  renderMembers();
}

function setActive(name) {
  const input = $("message-input");
  const previous = state.joined.get(state.active);
  if (previous) {
    previous.draftText = input.value;
    previous.log.hidden = true;
  }
  state.active = name;
  const room = state.joined.get(name);
  if (room) {
    room.log.hidden = false;
    if (room.stick) room.log.scrollTop = room.log.scrollHeight;
    room.unread = 0;
    input.value = room.draftText;
  } else {
    input.value = "";
  }
  $("send-error").textContent = "";
  updateCounter();
  renderPane();
  renderRoomList();
}

function ensureJoined(name) {
  let room = state.joined.get(name);
  if (!room) {
    room = new JoinedRoom(name);
    state.joined.set(name, room);
    $("logs").append(room.log);
    join(room);
  }
  return room;
}

/** Join a room (if not yet) and show it. */
export function openRoom(name) {
  if (!state.rooms.has(name)) return;
  const room = ensureJoined(name);
  setActive(name);
  remember();
  if (room.role === "write") $("message-input").focus();
}

// Which rooms this tab is in survives a reload (names only, in sessionStorage).
const STORE = "quart-rooms.rooms";

function remember() {
  try {
    sessionStorage.setItem(STORE, JSON.stringify({ user: state.me, joined: [...state.joined.keys()], active: state.active }));
  } catch {
    // storage unavailable: a reload starts with no room open
  }
}

function recall(user) {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORE) || "null");
    if (saved && saved.user === user && Array.isArray(saved.joined)) return saved;
  } catch {
    // ignore damaged or unavailable storage
  }
  return null;
}

function forget() {
  try {
    sessionStorage.removeItem(STORE);
  } catch {
    // nothing to forget
  }
}

function restoreRooms(saved) {
  if (!saved || state.stopped) return;
  for (const name of saved.joined) if (state.rooms.has(name)) ensureJoined(name);
  if (state.joined.has(saved.active)) setActive(saved.active);
  remember();
}

async function join(room) {
  const socket = state.socket;
  if (!socket || !socket.connected || room.joining) return;
  room.joining = true;
  const since = room.lastId;
  const payload = since === null ? { room: room.name } : { room: room.name, since_id: since };
  let ack;
  try {
    ack = await socket.timeout(ACK_TIMEOUT).emitWithAck("join", payload);
  } catch {
    room.joining = false;
    if (socket.connected && state.joined.get(room.name) === room) setTimeout(() => join(room), 2000);
    return;
  }
  room.joining = false;
  if (state.joined.get(room.name) !== room) {
    if (ack && ack.ok) socket.emit("leave", { room: room.name });
    return;
  }
  if (!ack || !ack.ok) {
    const code = ack && ack.error;
    if (code === "forbidden" || code === "no_such_room") dropRoom(room.name, `You may not enter room ${room.name}.`);
    else systemLine(room, `Could not join: ${(ack && ack.message) || code || "no answer"}.`);
    return;
  }
  room.role = ack.role;
  const info = state.rooms.get(room.name);
  if (info) info.role = ack.role;
  room.members = new Set(ack.members || []);
  const history = ack.history || [];
  if (since === null && room.ids.length === 0 && history.length < HISTORY_ON_JOIN) room.setNoMore(true);
  const added = addMessages(room, history);
  if (room.joinedOnce) {
    const missed = added.filter((m) => m.user !== state.me);
    if (state.active !== room.name || document.hidden) room.unread += missed.length;
    systemLine(room, added.length ? `Reconnected; ${added.length} new message${added.length === 1 ? "" : "s"} since.` : "Reconnected.");
  }
  room.joinedOnce = true;
  if (state.active === room.name) {
    renderPane();
    if (room.role === "write" && document.activeElement === document.body) $("message-input").focus();
  }
  renderRoomList();
}

function dropRoom(name, text) {
  const room = state.joined.get(name);
  if (room) {
    room.log.remove();
    state.joined.delete(name);
  }
  state.rooms.delete(name);
  if (state.draft && state.draft.room === name) state.draft = null;
  if (state.active === name) {
    const hadFocus = $("room-pane").contains(document.activeElement);
    state.active = null;
    $("message-input").value = "";
    renderPane(text);
    if (hadFocus) $("room-placeholder").focus(); // the composer is gone: keep keyboard users in the pane
  }
  renderRoomList();
  remember();
  notify(text, "warn");
}

function leaveRoom() {
  const name = state.active;
  const room = state.joined.get(name);
  if (!room) return;
  if (state.socket && state.socket.connected) state.socket.emit("leave", { room: name });
  room.log.remove();
  state.joined.delete(name);
  state.active = null;
  $("message-input").value = "";
  renderPane(`You left room ${name}. Choose it again to rejoin.`);
  renderRoomList();
  remember();
  const button = state.items.get(name);
  if (button) button.firstElementChild.focus();
}

// Sending ---------------------------------------------------------------------------

function updateCounter() {
  const max = state.limits.max_message_chars;
  const n = charCount($("message-input").value);
  const el = $("composer-count");
  el.classList.toggle("over", n > max);
  if (n > max) el.textContent = `${n} / ${max} characters: ${n - max} too many`;
  else if (n >= max * 0.8) el.textContent = `${n} / ${max} characters`;
  else el.textContent = "";
}

async function sendMessage() {
  const input = $("message-input");
  const error = $("send-error");
  const name = state.active;
  const room = state.joined.get(name);
  const text = input.value;
  if (!room || state.sending || !text.trim()) return;
  if (!state.socket || !state.socket.connected) {
    error.textContent = "Not connected right now. Your message is kept; send it again once connected.";
    return;
  }
  if (!room.role) {
    error.textContent = "Still joining the room. Your message is kept; send it again in a moment.";
    return;
  }
  if (!state.draft || state.draft.room !== name || state.draft.text !== text) {
    state.draft = { room: name, text, clientId: randomId() };
  }
  const draft = state.draft;
  state.sending = true;
  $("send").disabled = true;
  let ack;
  try {
    ack = await state.socket.timeout(ACK_TIMEOUT).emitWithAck("message", { room: name, msg: text, client_id: draft.clientId });
  } catch {
    ack = { ok: false, error: "timeout", message: "No answer from the server. Press Enter to try again." };
  } finally {
    state.sending = false;
    $("send").disabled = false;
  }
  if (ack && ack.ok) {
    if (state.draft === draft) state.draft = null;
    if (state.active === name && input.value === text) {
      input.value = "";
      updateCounter();
    }
    if (room.draftText === text) room.draftText = "";
    error.textContent = "";
    addMessages(room, [{ id: ack.id, ts: ack.ts, room: name, user: state.me, msg: text }]);
    room.stick = true;
    room.log.scrollTop = room.log.scrollHeight;
    return;
  }
  const explain = SEND_ERRORS[ack && ack.error];
  if (state.active === name) error.textContent = explain ? explain(ack) : (ack && ack.message) || "The message was not sent.";
}

// The socket -----------------------------------------------------------------------

/** The token for a (re)connection: renewed through the cookie first after a drop. */
async function socketToken() {
  try {
    if (state.freshNeeded || expiresWithin(30)) {
      const ok = await refreshSession();
      if (!ok) {
        sessionOver(state.expired ? EXPIRED : ENDED);
        return null;
      }
      state.freshNeeded = false;
    }
  } catch {
    // The server is not answering yet: try with what we have; a refusal brings us back here.
  }
  return token() || "";
}

function sessionOver(reason) {
  if (state.stopped) return;
  endSession(reason);
}

function connect() {
  const socket = window.io({
    path: "/socket.io/",
    // WebSocket first, long-polling only if it fails: polling needs sticky sessions,
    // which `serve --workers N` on one port cannot give (docs/deploy.md).
    transports: ["websocket", "polling"],
    tryAllTransports: true,
    autoConnect: false,
    reconnectionDelay: 500,
    reconnectionDelayMax: 5000,
    timeout: 10_000,
    auth: (cb) => {
      socketToken().then((t) => {
        if (t !== null && state.socket === socket) cb({ token: t });
      });
    },
  });
  state.socket = socket;

  socket.on("connect", () => {
    state.refusals = 0;
    state.expired = false;
    setConn("online", "Connected");
    if (state.everConnected) reloadRooms();
    state.everConnected = true;
    for (const room of state.joined.values()) join(room);
  });

  socket.on("disconnect", (reason) => {
    state.freshNeeded = true;
    for (const room of state.joined.values()) room.joining = false;
    if (state.stopped || state.socket !== socket) return;
    if (reason === "io server disconnect") {
      setConn("offline", "Disconnected by the server");
      resumeAfterServerDisconnect(socket);
    } else {
      setConn("reconnecting", "Connection lost; reconnecting…");
    }
  });

  socket.io.on("reconnect_attempt", (attempt) => {
    if (!state.stopped) setConn("reconnecting", `Connection lost; reconnecting (attempt ${attempt})…`);
  });

  socket.on("connect_error", (err) => {
    if (state.stopped || state.socket !== socket) return;
    const code = err && err.data && err.data.code;
    if (code === "unauthorized" || code === "token_expired") {
      state.refusals += 1;
      state.freshNeeded = true;
      if (state.refusals > 3) {
        sessionOver(ENDED);
        return;
      }
      setConn("reconnecting", "Renewing the session…");
      setTimeout(() => { if (state.socket === socket && !state.stopped) socket.connect(); }, 500 * state.refusals);
    } else if (code === "too_many_sockets") {
      setConn("offline", "Refused: too many open connections");
      notify("The server refused the connection: your account has too many open connections. Close another tab or window, then reload this page.", "error");
    } else if (code) {
      setConn("offline", "Refused by the server");
      notify(`The server refused the connection: ${(err.data && err.data.message) || code}`, "error");
    } else {
      setConn("reconnecting", "Cannot reach the server; retrying…");
    }
  });

  socket.on("welcome", (data) => {
    if (data && data.limits) state.limits = { ...state.limits, ...data.limits };
    updateCounter();
  });

  socket.on("message", (m) => {
    const room = m && state.joined.get(m.room);
    if (!room) return;
    const added = addMessages(room, [m]);
    if (added.length && m.user !== state.me && (state.active !== m.room || document.hidden)) {
      room.unread += 1;
      renderRoomList();
    }
  });

  socket.on("presence", (p) => {
    const room = p && state.joined.get(p.room);
    if (!room || typeof p.user !== "string") return;
    if (p.action === "joined") {
      room.members.add(p.user);
      systemLine(room, `${p.user} joined`);
    } else if (p.action === "left") {
      room.members.delete(p.user);
      systemLine(room, `${p.user} left`);
    }
    if (state.active === p.room) renderMembers();
  });

  socket.on("kicked", (k) => {
    if (!k || !state.joined.has(k.room)) return;
    dropRoom(k.room, k.reason === "room_deleted"
      ? `Room ${k.room} was deleted; you are no longer in it.`
      : `You no longer have access to room ${k.room}; you were removed from it.`);
  });

  socket.on("session_expired", (info) => {
    const reason = info && info.reason;
    if (END_REASONS[reason]) {
      state.endedBy = END_REASONS[reason];
      return;
    }
    state.expired = true;
    notify("Your session expired. Trying to renew it…", "warn");
  });

  setConn("connecting", "Connecting…");
  socket.connect();
}

async function resumeAfterServerDisconnect(socket) {
  let ok = null;
  try {
    ok = await refreshSession();
  } catch {
    ok = null; // unreachable: reconnect anyway and renew when it answers
  }
  if (state.stopped || state.socket !== socket) return;
  if (ok === false) {
    sessionOver(state.endedBy || (state.expired ? EXPIRED : ENDED));
    return;
  }
  if (state.expired && ok) notify("Your session was renewed; you are connected again.", "info");
  state.freshNeeded = ok !== true;
  setConn("connecting", "Connecting…");
  socket.connect();
}

// The live connection renews its token too, not only HTTP calls.
onToken((fresh) => {
  const socket = state.socket;
  if (!socket || !socket.connected) return;
  socket.timeout(ACK_TIMEOUT).emitWithAck("refresh", { token: fresh }).catch(() => {});
});

document.addEventListener("visibilitychange", () => {
  const room = state.joined.get(state.active);
  if (!document.hidden && room && room.unread) {
    room.unread = 0;
    renderRoomList();
  }
});

// Start and stop ----------------------------------------------------------------------

let wired = false;

function wire() {
  if (wired) return;
  wired = true;
  const input = $("message-input");
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    }
  });
  input.addEventListener("input", () => {
    updateCounter();
    if (state.draft && state.draft.text !== input.value) $("send-error").textContent = "";
  });
  $("leave-room").addEventListener("click", leaveRoom);
  $("rooms-reload").addEventListener("click", reloadRooms);
  if (window.matchMedia("(max-width: 699px)").matches) $("members").open = false; // phones: more room for messages
}

/** Start the chat for a signed-in user: load the rooms, open the live connection. */
export function start(me) {
  wire();
  stop({ forgetRooms: false });
  state.me = me.username;
  state.stopped = false;
  state.endedBy = null;
  state.everConnected = false;
  state.freshNeeded = false;
  const saved = recall(me.username);
  reloadRooms().then((ok) => { if (ok) restoreRooms(saved); });
  connect();
}

/** Close the connection and forget every room (sign-out, ended session). */
export function stop({ forgetRooms = true } = {}) {
  if (forgetRooms) forget();
  state.stopped = true;
  const socket = state.socket;
  state.socket = null;
  if (socket) socket.disconnect();
  for (const room of state.joined.values()) room.log.remove();
  state.joined.clear();
  state.rooms.clear();
  state.active = null;
  state.draft = null;
  $("message-input").value = "";
  $("send-error").textContent = "";
  renderPane();
  renderRoomList();
  setConn("offline", "Not connected");
}
