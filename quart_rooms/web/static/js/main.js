// Entry point: sign-in, the session across reloads, and switching between views.

import * as admin from "./admin.js";
import { api, login, logout, onSessionEnd, refreshSession } from "./api.js";
import * as chat from "./chat.js";
import { $, clearNotices, show } from "./dom.js";

const VIEWS = ["signin-view", "chat-view", "admin-view"];
let me = null;

function showView(id) {
  document.body.classList.remove("booting");
  document.body.dataset.view = id;
  show($("booting"), false);
  for (const view of VIEWS) show($(view), view === id);
  $("nav-chat").setAttribute("aria-pressed", String(id === "chat-view"));
  $("nav-admin").setAttribute("aria-pressed", String(id === "admin-view"));
}

function showSignIn(note = "") {
  me = null;
  show($("nav"), false);
  show($("conn"), false);
  $("signin-note").textContent = note;
  $("signin-error").textContent = "";
  $("signin-password").value = "";
  showView("signin-view");
  $("signin-username").focus();
}

/** The view for the address: #admin for admins, else the chat. */
function route() {
  if (!me) return;
  if (location.hash === "#admin" && me.is_admin) {
    showView("admin-view");
    admin.open(me);
  } else {
    showView("chat-view");
  }
}

async function startSession() {
  let info;
  try {
    info = await api("GET", "/api/me");
  } catch (error) {
    showSignIn(error.status === 0 ? "Cannot reach the server. Reload the page to try again." : "");
    return;
  }
  me = info;
  $("whoami").textContent = me.username;
  show($("nav-chat"), me.is_admin); // only admins have a second view to switch to
  show($("nav-admin"), me.is_admin);
  show($("nav"), true);
  show($("conn"), true);
  chat.start(me);
  route();
}

function waitText(seconds) {
  if (!seconds) return "a few minutes";
  if (seconds < 90) return `${seconds} seconds`;
  return `${Math.ceil(seconds / 60)} minutes`;
}

function signInMessage(error) {
  switch (error.code) {
    case "invalid_credentials":
      return "Wrong username or password.";
    case "rate_limited":
      return `Too many failed sign-ins. Wait ${waitText(error.retryAfter)}, then try again.`;
    case "network":
      return "Cannot reach the server. Check the connection and try again.";
    case "bad_request":
      return "Enter your username and password.";
    default:
      return error.message || "Signing in failed.";
  }
}

async function onSignIn(event) {
  event.preventDefault();
  const username = $("signin-username").value.trim();
  const password = $("signin-password").value;
  const error = $("signin-error");
  if (!username || !password) {
    error.textContent = "Enter your username and password.";
    (username ? $("signin-password") : $("signin-username")).focus();
    return;
  }
  const button = $("signin-submit");
  button.disabled = true;
  error.textContent = "";
  try {
    await login(username, password);
  } catch (failure) {
    error.textContent = signInMessage(failure);
    $("signin-password").select();
    $("signin-password").focus();
    return;
  } finally {
    button.disabled = false;
  }
  $("signin-password").value = "";
  $("signin-note").textContent = "";
  clearNotices();
  await startSession();
}

async function onSignOut() {
  chat.stop();
  admin.reset();
  await logout();
  clearNotices();
  if (location.hash) history.replaceState(null, "", location.pathname);
  showSignIn("You have signed out.");
}

function goTo(hash) {
  if (location.hash !== hash) history.pushState(null, "", hash || location.pathname);
  route();
}

async function boot() {
  $("signin-form").addEventListener("submit", onSignIn);
  $("sign-out").addEventListener("click", onSignOut);
  $("nav-chat").addEventListener("click", () => goTo(""));
  $("nav-admin").addEventListener("click", () => goTo("#admin"));
  window.addEventListener("popstate", route);
  window.addEventListener("hashchange", route);
  onSessionEnd((reason) => {
    if (!me) return;
    chat.stop();
    admin.reset();
    clearNotices();
    showSignIn(reason);
  });
  if (typeof window.io !== "function") {
    showSignIn("The page did not load completely (the Socket.IO client is missing). Reload the page.");
    return;
  }
  let signedIn = false;
  try {
    signedIn = await refreshSession(); // the HttpOnly refresh cookie keeps us signed in across reloads
  } catch (error) {
    showSignIn(error && error.code === "rate_limited"
      ? "The server is busy. Reload the page in a moment."
      : "Cannot reach the server. Reload the page to try again.");
    return;
  }
  if (signedIn) await startSession();
  else showSignIn();
}

boot();
