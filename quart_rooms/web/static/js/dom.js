// Small DOM helpers. Every string from a user or the server goes into the page
// as text (text nodes, textContent, or plain attribute values), never as HTML.

/** The element with this id (the page's markup is fixed, so it exists). */
export function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing element #${id}`);
  return el;
}

/**
 * Make an element. `props`: `class`, `text`, `dataset`, `on<event>` handlers,
 * `true` for boolean attributes; other values become attributes as plain strings.
 * Children are nodes or strings (strings become text nodes).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Show or hide an element through the `hidden` attribute (no inline styles: the CSP forbids them). */
export function show(el, visible = true) {
  el.hidden = !visible;
}

/** A local time for a message: "14:05" today, else "2024-05-01 14:05". */
export function shortTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  const hm = `${pad(date.getHours())}:${pad(date.getMinutes())}`;
  const now = new Date();
  if (date.toDateString() === now.toDateString()) return hm;
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${hm}`;
}

/** A compact local date and time: "2024-05-01 14:05:09". */
export function stamp(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} `
    + `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** A full local date and time, for tooltips. */
export function longTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

/** A random id (crypto.getRandomValues works on plain HTTP too, unlike randomUUID). */
export function randomId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Characters as the server counts them (code points, not UTF-16 units). */
export function charCount(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

/** Transient notices at the top of the page (kicks, expired sessions, errors). */
export function notify(text, kind = "info") {
  const box = $("notices");
  const close = h("button", { type: "button", class: "small", "aria-label": "Dismiss this notice", text: "Dismiss" });
  const notice = h("div", { class: `notice notice-${kind}`, role: kind === "info" ? "status" : "alert" },
    h("p", { text }), close);
  close.addEventListener("click", () => notice.remove());
  box.append(notice);
  while (box.children.length > 4) box.firstElementChild.remove();
  return notice;
}

export function clearNotices() {
  $("notices").replaceChildren();
}
