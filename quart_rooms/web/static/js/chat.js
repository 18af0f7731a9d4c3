// The chat view: the room list, joined rooms with their logs and members, the
// composer, moderation (deleting messages, a room's grants), and the live
// Socket.IO connection (wire contract 1.1).

import { api, endSession, expiresWithin, onToken, refreshSession, token } from "./api.js";
import { $, charCount, h, longTime, notify, randomId, shortTime, show } from "./dom.js";

const HISTORY_ON_JOIN = 50; // the server sends the latest 50 messages on a plain join
const PAGE = 50; // older messages per HTTP page
const RECOVERY_PAGE = 200; // the rest of a capped recovery (`more`), per HTTP page
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
  rate_limited: (ack) => {
    const wait = Number(ack.retry_after);
    const when = Number.isFinite(wait) && wait > 0 ? `${Math.ceil(wait)} second${Math.ceil(wait) === 1 ? "" : "s"}` : "a few seconds";
    return `You are sending too fast. Wait ${when}, then press Enter again.`;
  },
  too_large: () => `Too long: a message may have at most ${state.limits.max_message_chars} characters.`,
  bad_request: (ack) => ack.message || "The server did not accept this message.",
};

// How a role reads in the page.
const ROLE_TEXT = { read: "read only", write: "read and write", moderate: "moderator" };
const seg = encodeURIComponent;

const state = {
  me: null,
  isAdmin: false,
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
  roomsSeq: 0, // the newest GET /api/rooms; older answers are dropped
  reloadTimer: null,
};

const canWrite = (role) => role === "write" || role === "moderate";

/** The user's role in a joined room: from the join ack, else from the room list. */
function roleOf(room) {
  const info = state.rooms.get(room.name);
  return room.role || (info && info.role) || null;
}

/** Admins and the room's moderators delete any message and manage the room's grants. */
function canModerate(room) {
  return state.isAdmin || roleOf(room) === "moderate";
}

/** A room the user is in: its log, members and position in the history. */
class JoinedRoom {
  constructor(name) {
    this.name = name;
    this.role = null;
    this.epoch = null; // from the join ack; sent back with since_id when rejoining
    this.members = new Set(); // online in the room now (join ack and presence)
    this.grants = null; // username -> role (GET /api/rooms/{room}/grants), null until loaded
    this.joinSeq = 0; // a newer join ends an older recovery read
    this.recovering = false; // reading the rest of a capped recovery over HTTP
    this.cursor = null; // while recovering: every message up to this id is shown
    this.liveFloor = null; // while recovering: the first id that arrived live
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

  /** The since_id of a rejoin: the last id up to which the log has no gap. */
  get sinceId() {
    return this.recovering ? this.cursor : this.lastId;
  }

  /** Forget every message shown (the room was made again: its ids start over). */
  clear() {
    this.list.replaceChildren();
    this.ids = [];
    this.byId.clear();
    this.setNoMore(false);
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

// Links: http and https URLs only, as text with a checked href (never markup).
const URL_PATTERN = /\bhttps?:\/\/[^\s<>"'`]+/gi;
const CLOSERS = { ")": "(", "]": "[", "}": "{" };

function countOf(text, char) {
  let n = 0;
  for (const c of text) if (c === char) n += 1;
  return n;
}

/** A URL without the punctuation that ends the sentence around it ("see https://x.org/a."). */
function trimUrl(url) {
  let end = url.length;
  while (end > 0) {
    const c = url[end - 1];
    const open = CLOSERS[c];
    if (".,;:!?*".includes(c) || (open && countOf(url.slice(0, end), c) > countOf(url.slice(0, end), open))) end -= 1;
    else break;
  }
  return url.slice(0, end);
}

/** The href for a link, or null unless it is a well-formed http: or https: URL. */
function safeHref(text) {
  try {
    const url = new URL(text);
    return (url.protocol === "http:" || url.protocol === "https:") && url.hostname ? url.href : null;
  } catch {
    return null;
  }
}

/** Message text as text nodes, with its http(s) URLs as links that open in a new tab. */
function linkify(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(URL_PATTERN)) {
    const shown = trimUrl(match[0]);
    const href = safeHref(shown);
    if (!href) continue;
    if (match.index > last) nodes.push(text.slice(last, match.index));
    nodes.push(h("a", { href, rel: "noopener noreferrer", target: "_blank", text: shown }));
    last = match.index + shown.length;
  }
  if (last < text.length) nodes.push(text.slice(last));
  return nodes;
}

function tombstone() {
  return h("p", { class: "text tombstone", text: "message deleted" });
}

function renderMessage(room, m) {
  const li = h("li", { class: m.user === state.me ? "msg own" : "msg", dataset: { id: m.id, user: m.user } },
    h("div", { class: "meta" },
      h("span", { class: "who", text: m.user }),
      h("time", { datetime: m.ts, title: longTime(m.ts), text: shortTime(m.ts) })),
    m.deleted ? tombstone() : h("p", { class: "text" }, linkify(String(m.msg ?? ""))));
  if (m.deleted) li.classList.add("deleted");
  syncActions(room, li);
  return li;
}

/** A message shows a delete button when this user may delete it: their own, or any for moderators and admins. */
function syncActions(room, li) {
  const allowed = !li.classList.contains("deleted") && (li.dataset.user === state.me || canModerate(room));
  const button = li.querySelector("button.delete");
  if (allowed && !button) li.querySelector(".meta").append(deleteButton(room, li));
  else if (!allowed && button) button.remove();
}

function syncAllActions(room) {
  for (const li of room.byId.values()) syncActions(room, li);
}

/** Delete in two clicks ("Delete", then "Confirm delete" within 5 s), like the admin view's deletions. */
function deleteButton(room, li) {
  const id = Number(li.dataset.id);
  const who = li.dataset.user;
  const time = li.querySelector("time").textContent;
  const label = `Delete the message from ${who} at ${time}`;
  const button = h("button", { type: "button", class: "small delete", "aria-label": label, text: "Delete" });
  let armed = null;
  const disarm = () => {
    clearTimeout(armed);
    armed = null;
    button.textContent = "Delete";
    button.setAttribute("aria-label", label);
    button.classList.remove("armed");
  };
  button.addEventListener("click", async () => {
    if (!armed) {
      button.textContent = "Confirm delete";
      button.setAttribute("aria-label", `Confirm: delete the message from ${who} at ${time}`);
      button.classList.add("armed");
      armed = setTimeout(disarm, 5000);
      return;
    }
    disarm();
    button.disabled = true;
    try {
      await api("DELETE", `/api/rooms/${seg(room.name)}/messages/${id}`);
      markDeleted(room, id);
    } catch (error) {
      button.disabled = false;
      if (error.status === 404) markDeleted(room, id);
      else notify(error.status === 403 ? "You may not delete this message." : `Could not delete the message: ${error.message}`, "error");
    }
  });
  return button;
}

/** A message became a tombstone: its text goes, who and when stay. */
function markDeleted(room, id) {
  const li = room.byId.get(id);
  if (!li || li.classList.contains("deleted")) return;
  const hadFocus = li.contains(document.activeElement);
  li.classList.add("deleted");
  li.querySelector(".text").replaceWith(tombstone());
  syncActions(room, li);
  if (hadFocus) room.log.focus(); // the button is gone: keep keyboard users in the log
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
    if (!m || !Number.isInteger(m.id)) continue;
    if (room.byId.has(m.id)) {
      if (m.deleted) markDeleted(room, m.id); // a tombstone for a message already shown
      continue;
    }
    const li = renderMessage(room, m);
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
    const path = `/api/rooms/${seg(room.name)}/messages?before_id=${room.firstId}&limit=${PAGE}`;
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
    if (info.role === "moderate") flags.push("moderator");
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
  const seq = (state.roomsSeq += 1);
  let data;
  try {
    data = await api("GET", "/api/rooms");
  } catch (error) {
    if (error.status !== 401) notify(`Could not load the room list: ${error.message}`, "error");
    return false;
  }
  if (state.stopped || seq !== state.roomsSeq) return false; // a newer reload answers instead
  state.rooms = new Map(data.rooms.map((r) => [r.name, r]));
  for (const name of [...state.joined.keys()]) {
    if (!state.rooms.has(name)) dropRoom(name, `You no longer have access to room ${name}.`);
  }
  for (const room of state.joined.values()) {
    const role = state.rooms.get(room.name).role;
    if (room.role && room.role !== role) setRole(room, role);
  }
  renderRoomList();
  if (state.active) renderPane();
  return true;
}

/** Several access changes at once (a room made public) load the list once. */
function reloadRoomsSoon() {
  clearTimeout(state.reloadTimer);
  state.reloadTimer = setTimeout(reloadRooms, 100);
}

/** `access {room, role}`: the user's role in a room was gained, changed or lost (role null). */
function onAccess(change) {
  if (!change || typeof change.room !== "string") return;
  const name = change.room;
  const role = ROLE_TEXT[change.role] ? change.role : null;
  if (role === null) {
    // Sockets in the room got `kicked` just before; this covers the room list and the other rooms.
    if (state.rooms.has(name) || state.joined.has(name)) dropRoom(name, `You no longer have access to room ${name}.`);
    return;
  }
  const info = state.rooms.get(name);
  if (!info) {
    // Title and visibility come with the list: load it again.
    if (!state.isAdmin) notify(`You now have access to room ${name} (${ROLE_TEXT[role]}).`, "info");
    reloadRoomsSoon();
    return;
  }
  if (info.role !== role) notify(`Your role in room ${name} is now: ${ROLE_TEXT[role]}.`, "info");
  info.role = role;
  const room = state.joined.get(name);
  if (room) setRole(room, role);
  renderRoomList();
}

/** A joined room's role changed: composer, delete buttons and the access panel follow. */
function setRole(room, role) {
  room.role = role;
  const info = state.rooms.get(room.name);
  if (info) info.role = role;
  syncAllActions(room);
  if (state.active === room.name) renderPane();
  loadGrants(room); // the member list shows this user's grant too
}

// The shown room ---------------------------------------------------------------------

const MEMBER_ROLE = { read: "reads", write: "writes", moderate: "moderator" };

/**
 * Everyone with a grant (online or not) and everyone online in the room
 * (admins, and anyone in a public room, need no grant), online first.
 */
function renderMembers() {
  const room = state.joined.get(state.active);
  const people = new Map(); // lower-case name -> {name, role, online}
  if (room && room.grants) {
    for (const [name, role] of room.grants) people.set(name.toLowerCase(), { name, role, online: false });
  }
  if (room) {
    for (const name of room.members) {
      const known = people.get(name.toLowerCase());
      if (known) known.online = true;
      else people.set(name.toLowerCase(), { name, role: null, online: true });
    }
  }
  const sorted = [...people.values()].sort((a, b) => (b.online - a.online) || a.name.localeCompare(b.name));
  $("member-list").replaceChildren(...sorted.map((p) => {
    const me = p.name === state.me;
    return h("li", { class: `member ${p.online ? "online" : "offline"}${me ? " me" : ""}`, dataset: { user: p.name, online: String(p.online) } },
      h("span", { class: "presence-dot", "aria-hidden": "true" }),
      h("span", { class: "member-who" },
        h("span", { class: "member-name", text: p.name }), me ? h("span", { class: "note", text: " (you)" }) : null),
      h("span", { class: "member-detail" },
        h("span", { class: "member-state", text: p.online ? "online" : "offline" }),
        p.role ? h("span", { class: "member-role", text: ` · ${MEMBER_ROLE[p.role] || p.role}` }) : null));
  }));
  const online = sorted.filter((p) => p.online).length;
  const count = !room ? "" : room.grants ? `${online} of ${sorted.length} online` : `${online} online`;
  $("members-summary").replaceChildren("Members", count ? h("span", { class: "note", text: ` ${count}` }) : null);
}

/** GET /api/rooms/{room}/grants: who has access (the member list, and the access panel). */
async function loadGrants(room) {
  let data;
  try {
    data = await api("GET", `/api/rooms/${seg(room.name)}/grants`);
  } catch (error) {
    if (error.status !== 403 && error.status !== 401) notify(`Could not load the members of ${room.name}: ${error.message}`, "error");
    return; // 403: access is gone, and `kicked` / `access` say so
  }
  if (state.joined.get(room.name) !== room) return;
  room.grants = new Map((data.grants || []).map((g) => [g.username, g.role]));
  if (state.active === room.name) {
    renderMembers();
    renderAccessPanel();
  }
}

// The access panel (moderators and admins): a room's grants ----------------------------

function accessOpen() {
  return !$("access-panel").hidden;
}

function toggleAccessPanel(open) {
  const room = state.joined.get(state.active);
  const wanted = open && Boolean(room) && canModerate(room);
  show($("access-panel"), wanted);
  $("manage-access").setAttribute("aria-expanded", String(wanted));
  if (wanted) {
    $("access-status").textContent = "";
    renderAccessPanel();
    loadGrants(room);
    $("access-user").focus();
  }
}

/** Admins use the admin routes (they may also give `moderate`); moderators the room's own. */
function grantPath(room, username) {
  const base = state.isAdmin ? "/api/admin/rooms" : "/api/rooms";
  return `${base}/${seg(room)}/grants/${seg(username)}`;
}

function accessStatus(text, kind = "ok") {
  const el = $("access-status");
  el.textContent = text;
  el.dataset.kind = kind;
}

function grantableRoles() {
  return state.isAdmin ? ["write", "read", "moderate"] : ["write", "read"];
}

function renderAccessPanel() {
  const room = state.joined.get(state.active);
  const allowed = Boolean(room) && canModerate(room);
  show($("manage-access"), allowed);
  if (!allowed) {
    if (accessOpen()) {
      const hadFocus = $("access-panel").contains(document.activeElement);
      show($("access-panel"), false);
      $("manage-access").setAttribute("aria-expanded", "false");
      if (hadFocus && room) room.log.focus();
    }
    return;
  }
  if (!accessOpen()) return;
  $("access-heading").textContent = `Manage access to ${room.name}`;
  const select = $("access-role");
  const chosen = select.value;
  const labels = { write: "write (read and post)", read: "read only", moderate: "moderate" };
  select.replaceChildren(...grantableRoles().map((r) => h("option", { value: r, text: labels[r] })));
  if (grantableRoles().includes(chosen)) select.value = chosen;
  const grants = room.grants ? [...room.grants].sort((a, b) => a[0].localeCompare(b[0])) : [];
  $("access-list").replaceChildren(...grants.map(([username, role]) => grantItem(room, username, role)));
  show($("access-empty"), Boolean(room.grants) && grants.length === 0);
}

function grantItem(room, username, role) {
  const item = h("li", { class: "grant", dataset: { user: username } }, h("span", { class: "grant-name", text: username }));
  if (!grantableRoles().includes(role)) { // a moderator's grant: only admins change it
    item.append(h("span", { class: "grant-role", text: ROLE_TEXT[role] || role }));
    return item;
  }
  const select = h("select", { "aria-label": `Role of ${username} in ${room.name}` },
    grantableRoles().map((r) => h("option", { value: r, text: r })));
  select.value = role;
  const revoke = h("button", { type: "button", class: "small danger", "aria-label": `Revoke ${username} from ${room.name}`, text: "Revoke" });
  select.addEventListener("change", async () => {
    try {
      await api("PUT", grantPath(room.name, username), { role: select.value });
      accessStatus(`${username} now has ${select.value} in ${room.name}.`);
    } catch (error) {
      select.value = role;
      accessStatus(error.message || "The change failed.", "error");
    }
    await loadGrants(room);
  });
  revoke.addEventListener("click", async () => {
    try {
      await api("DELETE", grantPath(room.name, username));
      accessStatus(`${username} no longer has access to ${room.name}.`);
      $("access-user").focus(); // the row goes away
    } catch (error) {
      accessStatus(error.message || "Revoking failed.", "error");
    }
    await loadGrants(room);
  });
  item.append(select, h("div", { class: "actions" }, revoke));
  return item;
}

async function submitGrant(event) {
  event.preventDefault();
  const room = state.joined.get(state.active);
  if (!room) return;
  const input = $("access-user");
  const username = input.value.trim();
  const role = $("access-role").value;
  if (!/^[A-Za-z0-9_.-]{1,32}$/.test(username)) {
    accessStatus("Enter the username to grant (letters, digits, _ . -).", "error");
    input.focus();
    return;
  }
  try {
    await api("PUT", grantPath(room.name, username), { role });
    accessStatus(`${username} may now ${role === "read" ? "read" : role === "write" ? "read and write" : "moderate"} in ${room.name}.`);
    input.value = "";
  } catch (error) {
    accessStatus(error.status === 404 ? `There is no user named ${username}.` : error.message || "Granting failed.", "error");
    input.focus();
  }
  await loadGrants(room);
}

function renderPane(notice = "") {
  const room = state.joined.get(state.active);
  const info = state.rooms.get(state.active);
  show($("room-placeholder"), !room);
  show($("room-body"), Boolean(room));
  show($("leave-room"), Boolean(room));
  if (!room) {
    renderAccessPanel();
    $("room-heading").textContent = "Pick a room";
    $("room-sub").textContent = "";
    $("room-placeholder").textContent = notice || "Choose a room from the list to join it. You can be in several rooms at once.";
    show($("composer"), false);
    show($("read-only-note"), false);
    renderMembers();
    return;
  }
  $("room-heading").textContent = (info && info.title) || room.name;
  const role = roleOf(room);
  const parts = [room.name];
  if (role) parts.push(ROLE_TEXT[role] || role);
  if (info) parts.push(info.public ? "public" : "private");
  if (!room.role) parts.push("joining…");
  $("room-sub").textContent = parts.join(" · ");
  const composerHadFocus = $("composer").contains(document.activeElement);
  show($("composer"), canWrite(role)); // from the room list until the join answers: no jump
  show($("read-only-note"), role === "read");
  if (composerHadFocus && !canWrite(role)) room.log.focus(); // writing was taken away
  renderMembers();
  renderAccessPanel();
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
  if (previous !== room) {
    show($("access-panel"), false); // the panel belongs to the room it was opened in
    $("manage-access").setAttribute("aria-expanded", "false");
  }
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

// Phones and tablets without a keyboard: focusing the box would cover the room with the on-screen keyboard.
const TOUCH_ONLY = window.matchMedia("(hover: none) and (pointer: coarse)");

/** Join a room (if not yet) and show it; the message box takes the focus where the user may write. */
export function openRoom(name) {
  if (!state.rooms.has(name)) return;
  const room = ensureJoined(name);
  setActive(name);
  remember();
  if (room.joinedOnce) loadGrants(room); // who has access may have changed while another room was shown
  if (canWrite(roleOf(room)) && !TOUCH_ONLY.matches) $("message-input").focus();
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
  const seq = (room.joinSeq += 1);
  const since = room.sinceId;
  const payload = { room: room.name };
  if (since !== null) {
    payload.since_id = since;
    if (room.epoch) payload.epoch = room.epoch; // a room made again since answers `reset`
  }
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
  const info = state.rooms.get(room.name);
  if (info) info.role = ack.role;
  room.role = ack.role;
  room.epoch = typeof ack.epoch === "string" ? ack.epoch : room.epoch;
  room.members = new Set(ack.members || []);
  const history = ack.history || [];
  if (ack.reset) room.clear(); // deleted and made again: the old ids mean nothing now
  if ((since === null || ack.reset) && room.ids.length === 0 && history.length < HISTORY_ON_JOIN) room.setNoMore(true);
  room.recovering = Boolean(ack.more);
  room.liveFloor = null;
  if (room.recovering) room.cursor = history.length ? history[history.length - 1].id : since;
  const wasJoined = room.joinedOnce;
  room.joinedOnce = true;
  let added = addMessages(room, history);
  syncAllActions(room);
  if (state.active === room.name) {
    renderPane();
    if (canWrite(room.role) && document.activeElement === document.body && !TOUCH_ONLY.matches) $("message-input").focus();
  }
  renderRoomList();
  loadGrants(room);
  if (room.recovering) {
    const rest = await readRest(room, seq);
    if (rest === null) return; // a newer join took over, or the room is gone
    added = added.concat(rest);
  }
  if (ack.reset) {
    systemLine(room, "This room was deleted and made again; showing its latest messages.");
  } else if (wasJoined) {
    const missed = added.filter((m) => m.user !== state.me);
    if (state.active !== room.name || document.hidden) room.unread += missed.length;
    systemLine(room, added.length ? `Reconnected; ${added.length} new message${added.length === 1 ? "" : "s"} since.` : "Reconnected.");
    renderRoomList();
  }
}

/**
 * A recovery capped at max_recovery (`more: true`): read the rest with
 * GET .../messages?after_id= (oldest first) up to the first message that came
 * live. Returns the messages added, or null when a newer join took over.
 */
async function readRest(room, seq) {
  const added = [];
  for (;;) {
    let data;
    try {
      data = await api("GET", `/api/rooms/${seg(room.name)}/messages?after_id=${room.cursor}&limit=${RECOVERY_PAGE}`);
    } catch (error) {
      if (room.joinSeq !== seq || state.joined.get(room.name) !== room) return null;
      if (error.status === 403) {
        dropRoom(room.name, `You no longer have access to room ${room.name}.`);
        return null;
      }
      systemLine(room, "Some missed messages could not be loaded; they will be fetched after the next reconnection.");
      return null; // `recovering` stays: the next join asks from the cursor again
    }
    if (room.joinSeq !== seq || state.joined.get(room.name) !== room) return null;
    const page = data.messages || [];
    added.push(...addMessages(room, page));
    if (page.length) room.cursor = page[page.length - 1].id;
    const reachedLive = room.liveFloor !== null && room.cursor >= room.liveFloor - 1;
    if (page.length < RECOVERY_PAGE || reachedLive) break;
  }
  room.recovering = false;
  return added;
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
  if (!room.role && !room.joining) {
    error.textContent = "Still joining the room. Your message is kept; send it again in a moment.";
    return;
  }
  // While the join is on its way the message may follow it: the server handles a socket's events in order.
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
    } else if (reason === "ping timeout") {
      setConn("reconnecting", "No answer from the server; reconnecting…");
    } else {
      // "transport close" / "transport error": the server closed the connection (a restart or a
      // graceful shutdown) or the network dropped; Socket.IO reconnects with backoff.
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
    if (room.recovering && room.liveFloor === null) room.liveFloor = m.id;
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

  socket.on("message_deleted", (d) => {
    const room = d && state.joined.get(d.room);
    if (room && Number.isInteger(d.id)) markDeleted(room, d.id);
  });

  socket.on("access", onAccess);

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
  $("manage-access").addEventListener("click", () => toggleAccessPanel(!accessOpen()));
  $("access-close").addEventListener("click", () => {
    toggleAccessPanel(false);
    $("manage-access").focus();
  });
  $("access-form").addEventListener("submit", submitGrant);
  $("members").addEventListener("toggle", () => {
    const room = state.joined.get(state.active);
    if ($("members").open && room) loadGrants(room); // fresh when someone looks
  });
  if (window.matchMedia("(max-width: 699px)").matches) $("members").open = false; // phones: more room for messages
}

/** Start the chat for a signed-in user: load the rooms, open the live connection. */
export function start(me) {
  wire();
  stop({ forgetRooms: false });
  state.me = me.username;
  state.isAdmin = Boolean(me.is_admin);
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
  clearTimeout(state.reloadTimer);
  $("message-input").value = "";
  $("send-error").textContent = "";
  show($("access-panel"), false);
  $("access-list").replaceChildren();
  $("access-status").textContent = "";
  renderPane();
  renderRoomList();
  setConn("offline", "Not connected");
}
