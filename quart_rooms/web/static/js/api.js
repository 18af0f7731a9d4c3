// HTTP API client and the session's tokens.
//
// The access token lives only in this module's memory. The refresh token is an
// HttpOnly, SameSite=Strict cookie (Path=/api/auth) that page scripts cannot
// read: POST /api/auth/refresh with an empty body exchanges it for a new
// access token (and rotates the cookie). The login and refresh replies also
// carry refresh_token in their JSON; the page drops it without keeping it.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

const LOCK_NAME = "quart-rooms-refresh";
let accessToken = null;
let expiresAt = 0; // ms since epoch
let refreshTimer = null;
let inFlight = null;
const tokenListeners = new Set();
const endListeners = new Set();

/** Call `fn(token, expiresIn)` whenever a new access token arrives. */
export function onToken(fn) {
  tokenListeners.add(fn);
}

/** Call `fn(reason)` when the session can no longer be renewed. */
export function onSessionEnd(fn) {
  endListeners.add(fn);
}

export function token() {
  return accessToken;
}

/** True when the access token is missing or runs out within `seconds`. */
export function expiresWithin(seconds) {
  return !accessToken || expiresAt - Date.now() < seconds * 1000;
}

function setToken(reply) {
  accessToken = reply.access_token;
  const ttl = Math.max(1, Number(reply.expires_in) || 60);
  expiresAt = Date.now() + ttl * 1000;
  schedule(ttl);
  for (const fn of tokenListeners) fn(accessToken, ttl);
}

/**
 * Renew before the token runs out: a fifth of its life early (at least 2 s, at
 * most a minute), and never later than half its life, since the server counts
 * the lifetime from a whole second that may be almost a second in the past.
 */
function schedule(ttl) {
  clearTimeout(refreshTimer);
  const lead = Math.min(60, Math.max(2, ttl * 0.2));
  refreshTimer = setTimeout(renewInBackground, Math.max(0.5, ttl / 2, ttl - lead) * 1000);
}

async function renewInBackground() {
  try {
    if (!(await refreshSession())) endSession("Your session has ended. Please sign in again.");
  } catch {
    // The server is unreachable; try again soon while the token may still be valid.
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(renewInBackground, 10_000);
  }
}

export function forgetToken() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  accessToken = null;
  expiresAt = 0;
}

export function endSession(reason) {
  forgetToken();
  for (const fn of endListeners) fn(reason);
}

// Throttled background tabs fire timers late: renew when the page is shown again.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && accessToken && expiresWithin(90)) renewInBackground();
});

async function send(method, path, body, headers = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    return await fetch(path, init);
  } catch {
    throw new ApiError(0, "network", "Cannot reach the server.");
  }
}

async function errorOf(response) {
  let error = {};
  try {
    error = (await response.json()).error || {};
  } catch {
    // not JSON: keep the status text
  }
  const retry = Number(response.headers.get("Retry-After"));
  return new ApiError(response.status, error.code || `http_${response.status}`,
    error.message || response.statusText || "The request failed.", Number.isFinite(retry) && retry > 0 ? retry : null);
}

/**
 * Exchange the refresh cookie for a new access token. Resolves true when it
 * worked, false when the server refused (signed out); throws ApiError when
 * the server is busy (429) or failing (5xx), or "network" when it cannot be
 * reached. One refresh at a time, also
 * across tabs (Web Locks), because reusing a spent refresh token revokes it.
 */
export function refreshSession() {
  if (!inFlight) {
    const run = async () => {
      const response = await send("POST", "/api/auth/refresh");
      if (response.ok) {
        setToken(await response.json());
        return true;
      }
      // Busy (429) or failing (5xx): the session is not over; keep the token and try again later.
      if (response.status === 429 || response.status >= 500) throw await errorOf(response);
      forgetToken();
      return false;
    };
    const locked = navigator.locks ? navigator.locks.request(LOCK_NAME, run) : run();
    inFlight = locked.finally(() => { inFlight = null; });
  }
  return inFlight;
}

/** Sign in with a password; throws ApiError (invalid_credentials, rate_limited, ...). */
export async function login(username, password) {
  const response = await send("POST", "/api/auth/login", { username, password });
  if (!response.ok) throw await errorOf(response);
  setToken(await response.json());
}

/** Revoke the refresh cookie on the server and forget the access token. */
export async function logout() {
  const headers = accessToken ? { Authorization: `Bearer ${accessToken}` } : {};
  forgetToken();
  try {
    await send("POST", "/api/auth/logout", undefined, headers);
  } catch {
    // offline: the cookie stays until it expires, the page forgets the session anyway
  }
}

/** A JSON API call with the access token; renews the token once on 401. */
export async function api(method, path, body) {
  for (let attempt = 0; ; attempt += 1) {
    if (!accessToken && attempt === 0 && !(await refreshSession())) {
      endSession("Your session has ended. Please sign in again.");
      throw new ApiError(401, "unauthorized", "Sign in first.");
    }
    const response = await send(method, path, body, { Authorization: `Bearer ${accessToken}` });
    if (response.status === 401 && attempt === 0) {
      if (await refreshSession()) continue;
      endSession("Your session has ended. Please sign in again.");
    }
    if (response.status === 204) return null;
    if (!response.ok) throw await errorOf(response);
    return response.json();
  }
}
