// The admin view: users, rooms, grants and the audit log, through the admin HTTP API.

import { api } from "./api.js";
import { reloadRooms } from "./chat.js";
import { $, h, longTime, show, stamp } from "./dom.js";

const NAME_RE = /^[A-Za-z0-9_.-]{1,32}$/;
const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const MIN_PASSWORD = 8;
let wired = false;
let rooms = [];
let uid = 0;
let me = null; // the signed-in admin: no disabling or deleting of oneself (the server refuses it)

const seg = encodeURIComponent;

function status(id, text, kind = "ok") {
  const el = $(id);
  el.textContent = text;
  el.dataset.kind = kind;
}

function failed(id, error) {
  status(id, error.message || "The request failed.", "error");
}

// Users ------------------------------------------------------------------------------

async function loadUsers() {
  try {
    const data = await api("GET", "/api/admin/users");
    renderUsers(data.users);
  } catch (error) {
    failed("users-status", error);
  }
}

function renderUsers(users) {
  $("user-names").replaceChildren(...users.map((u) => h("option", { value: u.username })));
  $("users-body").replaceChildren(...users.map(userRow));
}

/** A button that acts on the second click within 5 s, saying so in the status line (no blocking dialog). */
function twoStep(button, { confirmText, confirmLabel, statusId, prompt, action }) {
  const text = button.textContent;
  const label = button.getAttribute("aria-label");
  let armed = null;
  const disarm = () => {
    clearTimeout(armed);
    armed = null;
    button.textContent = text;
    button.setAttribute("aria-label", label);
    button.classList.remove("armed");
  };
  button.addEventListener("click", async () => {
    if (!armed) {
      button.textContent = confirmText;
      button.setAttribute("aria-label", confirmLabel);
      button.classList.add("armed");
      status(statusId, prompt, "warn");
      armed = setTimeout(disarm, 5000);
      return;
    }
    disarm();
    await action();
  });
}

function userRow(user) {
  const id = `reset-${(uid += 1)}`;
  const self = me !== null && user.username.toLowerCase() === me.toLowerCase();
  const toggle = self ? null : h("button", {
    type: "button", class: "small",
    "aria-label": `${user.disabled ? "Enable" : "Disable"} ${user.username}`,
    text: user.disabled ? "Enable" : "Disable",
  });
  const remove = self ? null : h("button", {
    type: "button", class: "small danger", "aria-label": `Delete user ${user.username}`, text: "Delete user",
  });
  const input = h("input", { id, type: "password", autocomplete: "new-password", minlength: MIN_PASSWORD, maxlength: 1024, required: true });
  const save = h("button", { type: "submit", class: "small primary", text: "Save" });
  const cancel = h("button", { type: "button", class: "small", text: "Cancel" });
  // The hidden username tells password managers whose password this is.
  const account = h("input", { type: "text", autocomplete: "username", value: user.username, readonly: true, hidden: true, tabindex: "-1" });
  const form = h("form", { class: "reset-form", hidden: true, novalidate: true },
    account, h("label", { for: id, text: `New password for ${user.username}` }), input, save, cancel);
  const reset = h("button", {
    type: "button", class: "small", "aria-expanded": "false",
    "aria-label": `Reset the password of ${user.username}`, text: "Reset password",
  });

  toggle?.addEventListener("click", async () => {
    try {
      await api("PATCH", `/api/admin/users/${seg(user.username)}`, { disabled: !user.disabled });
      status("users-status", `${user.username} is now ${user.disabled ? "enabled" : "disabled"}.`);
      await Promise.all([loadUsers(), loadAudit()]);
    } catch (error) {
      failed("users-status", error);
    }
  });
  if (remove) {
    twoStep(remove, {
      confirmText: "Confirm delete",
      confirmLabel: `Confirm: delete user ${user.username}, their grants and sessions`,
      statusId: "users-status",
      prompt: `Press "Confirm delete" to delete ${user.username}. Their messages stay in the rooms.`,
      action: async () => {
        try {
          await api("DELETE", `/api/admin/users/${seg(user.username)}`);
          status("users-status", `User ${user.username} was deleted.`);
          await Promise.all([loadUsers(), loadGrants(), loadAudit()]);
          $("user-form").querySelector("input").focus(); // the row and its buttons are gone
        } catch (error) {
          failed("users-status", error);
        }
      },
    });
  }
  reset.addEventListener("click", () => {
    const open = form.hidden;
    form.hidden = !open;
    reset.setAttribute("aria-expanded", String(open));
    if (open) input.focus();
  });
  cancel.addEventListener("click", () => {
    form.hidden = true;
    input.value = "";
    reset.setAttribute("aria-expanded", "false");
    reset.focus();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (input.value.length < MIN_PASSWORD) {
      status("users-status", `A password needs at least ${MIN_PASSWORD} characters.`, "error");
      input.focus();
      return;
    }
    try {
      await api("PATCH", `/api/admin/users/${seg(user.username)}`, { password: input.value });
      status("users-status", `The password of ${user.username} was reset.`);
      await Promise.all([loadUsers(), loadAudit()]);
    } catch (error) {
      failed("users-status", error);
    }
  });

  return h("tr", { dataset: { user: user.username } },
    h("td", {}, user.username, self ? h("span", { class: "note", text: " (you)" }) : null),
    h("td", { text: user.is_admin ? "Admin" : "User" }),
    h("td", { class: user.disabled ? "bad" : "", text: user.disabled ? "Disabled" : "Active" }),
    h("td", {}, h("div", { class: "actions" }, toggle, reset, remove, form)));
}

async function createUser(event) {
  event.preventDefault();
  const username = $("new-username").value.trim();
  const password = $("new-password").value;
  if (!NAME_RE.test(username)) {
    status("users-status", "A username has 1-32 characters: letters, digits, _ . -", "error");
    $("new-username").focus();
    return;
  }
  if (password.length < MIN_PASSWORD) {
    status("users-status", `A password needs at least ${MIN_PASSWORD} characters.`, "error");
    $("new-password").focus();
    return;
  }
  try {
    await api("POST", "/api/admin/users", { username, password, is_admin: $("new-is-admin").checked });
    status("users-status", `User ${username} was created.`);
    $("user-form").reset();
    await Promise.all([loadUsers(), loadAudit()]);
  } catch (error) {
    failed("users-status", error);
  }
}

// Rooms ------------------------------------------------------------------------------

async function loadRooms() {
  try {
    const data = await api("GET", "/api/admin/rooms");
    rooms = data.rooms;
    renderRooms();
  } catch (error) {
    failed("rooms-status", error);
  }
}

function renderRooms() {
  $("admin-rooms-body").replaceChildren(...rooms.map(roomRow));
  const select = $("grant-room");
  const chosen = select.value;
  select.replaceChildren(...rooms.map((r) => h("option", { value: r.name, text: r.title ? `${r.name} (${r.title})` : r.name })));
  if (rooms.some((r) => r.name === chosen)) select.value = chosen;
  loadGrants();
}

function roomRow(room) {
  const grants = h("button", { type: "button", class: "small", "aria-label": `Grants of ${room.name}`, text: "Grants" });
  const remove = h("button", { type: "button", class: "small danger", "aria-label": `Delete room ${room.name}`, text: "Delete" });
  grants.addEventListener("click", () => {
    $("grant-room").value = room.name;
    loadGrants();
    $("grant-room").focus();
  });
  twoStep(remove, { // two steps instead of a blocking confirm() dialog
    confirmText: "Confirm delete",
    confirmLabel: `Confirm: delete room ${room.name} and its messages`,
    statusId: "rooms-status",
    prompt: `Press "Confirm delete" to delete room ${room.name} and all its messages.`,
    action: async () => {
      try {
        await api("DELETE", `/api/admin/rooms/${seg(room.name)}`);
        status("rooms-status", `Room ${room.name} was deleted.`);
        await Promise.all([loadRooms(), loadAudit()]);
        reloadRooms();
      } catch (error) {
        failed("rooms-status", error);
      }
    },
  });
  const flip = h("button", {
    type: "button", class: "small",
    "aria-label": `Make room ${room.name} ${room.public ? "private" : "public"}`,
    text: room.public ? "Make private" : "Make public",
  });
  flip.addEventListener("click", async () => {
    try {
      await api("PATCH", `/api/admin/rooms/${seg(room.name)}`, { public: !room.public });
      status("rooms-status", `Room ${room.name} is now ${room.public ? "private" : "public"}.`);
      await Promise.all([loadRooms(), loadAudit()]);
      reloadRooms();
    } catch (error) {
      failed("rooms-status", error);
    }
  });
  return h("tr", { dataset: { room: room.name } },
    h("td", { text: room.name }),
    h("td", { text: room.title || "" }),
    h("td", { text: room.public ? "Public" : "Private" }),
    h("td", {}, h("div", { class: "actions" }, flip, grants, remove)));
}

async function createRoom(event) {
  event.preventDefault();
  const name = $("new-room-name").value.trim();
  const title = $("new-room-title").value.trim();
  if (!ROOM_RE.test(name)) {
    status("rooms-status", "A room name has 1-64 characters: letters, digits, _ . -", "error");
    $("new-room-name").focus();
    return;
  }
  try {
    await api("POST", "/api/admin/rooms", { name, title: title || null, public: $("new-room-public").checked });
    status("rooms-status", `Room ${name} was created.`);
    $("room-form").reset();
    await Promise.all([loadRooms(), loadAudit()]);
    reloadRooms();
  } catch (error) {
    failed("rooms-status", error);
  }
}

// Grants -----------------------------------------------------------------------------

async function loadGrants() {
  const room = $("grant-room").value;
  const body = $("grants-body");
  if (!room) {
    body.replaceChildren();
    show($("grants-empty"), false);
    return;
  }
  $("grants-caption").textContent = `Grants in ${room}`;
  try {
    const data = await api("GET", `/api/admin/rooms/${seg(room)}/grants`);
    if ($("grant-room").value !== room) return;
    body.replaceChildren(...data.grants.map((g) => grantRow(room, g)));
    show($("grants-empty"), data.grants.length === 0);
  } catch (error) {
    failed("grants-status", error);
  }
}

function grantRow(room, grant) {
  const role = h("select", { "aria-label": `Role of ${grant.username} in ${room}` },
    h("option", { value: "write", text: "write" }), h("option", { value: "read", text: "read" }),
    h("option", { value: "moderate", text: "moderate" }));
  role.value = grant.role;
  const revoke = h("button", { type: "button", class: "small danger", "aria-label": `Revoke ${grant.username} from ${room}`, text: "Revoke" });
  role.addEventListener("change", async () => {
    try {
      await api("PUT", `/api/admin/rooms/${seg(room)}/grants/${seg(grant.username)}`, { role: role.value });
      status("grants-status", `${grant.username} now has ${role.value} in ${room}.`);
      await loadAudit();
    } catch (error) {
      failed("grants-status", error);
      role.value = grant.role;
    }
  });
  revoke.addEventListener("click", async () => {
    try {
      await api("DELETE", `/api/admin/rooms/${seg(room)}/grants/${seg(grant.username)}`);
      status("grants-status", `${grant.username} no longer has access to ${room}.`);
      await Promise.all([loadGrants(), loadAudit()]);
      reloadRooms();
    } catch (error) {
      failed("grants-status", error);
    }
  });
  return h("tr", { dataset: { user: grant.username } },
    h("td", { text: grant.username }), h("td", {}, role), h("td", {}, h("div", { class: "actions" }, revoke)));
}

async function putGrant(event) {
  event.preventDefault();
  const room = $("grant-room").value;
  const username = $("grant-user").value.trim();
  const role = $("grant-role").value;
  if (!room) {
    status("grants-status", "Create a room first.", "error");
    return;
  }
  if (!NAME_RE.test(username)) {
    status("grants-status", "Enter the username to grant.", "error");
    $("grant-user").focus();
    return;
  }
  try {
    await api("PUT", `/api/admin/rooms/${seg(room)}/grants/${seg(username)}`, { role });
    const may = { write: "read and write", read: "read", moderate: "moderate" }[role];
    status("grants-status", `${username} may now ${may} in ${room}.`);
    $("grant-user").value = "";
    await Promise.all([loadGrants(), loadAudit()]);
    reloadRooms();
  } catch (error) {
    failed("grants-status", error);
  }
}

// Audit ------------------------------------------------------------------------------

async function loadAudit() {
  try {
    const data = await api("GET", "/api/admin/audit?limit=100");
    $("audit-body").replaceChildren(...data.entries.map((e) => h("tr", {},
      h("td", {}, h("time", { datetime: e.ts, title: longTime(e.ts), text: stamp(e.ts) })),
      h("td", { text: e.actor }),
      h("td", { text: e.action }),
      h("td", { text: e.target }))));
  } catch {
    // shown by the other sections' status lines when the session is gone
  }
}

// The view ---------------------------------------------------------------------------

function wire() {
  if (wired) return;
  wired = true;
  $("user-form").addEventListener("submit", createUser);
  $("room-form").addEventListener("submit", createRoom);
  $("grant-form").addEventListener("submit", putGrant);
  $("grant-room").addEventListener("change", loadGrants);
  $("audit-reload").addEventListener("click", loadAudit);
}

/** Show fresh data each time the admin view opens. */
export async function open(user) {
  me = user ? user.username : null;
  wire();
  await Promise.all([loadUsers(), loadRooms(), loadAudit()]);
}

/** Forget everything shown (sign-out). */
export function reset() {
  rooms = [];
  me = null;
  for (const id of ["users-body", "admin-rooms-body", "grants-body", "audit-body", "grant-room", "user-names"]) $(id).replaceChildren();
  for (const id of ["users-status", "rooms-status", "grants-status"]) $(id).textContent = "";
  show($("grants-empty"), false);
}
