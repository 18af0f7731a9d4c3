#!/usr/bin/env node
// Load generator of the quart-rooms benchmark: one Node.js process, many
// socket.io-client sockets on the websocket transport.
//
// Usage: node loadgen.js '<json config>' | @config.json   (bench/run.py writes the config)
//
// It talks to the runner over its standard streams: JSON lines on stdout
// ({"event": "ready" | "measure_start" | "measure_end" | "idle" | "restart" |
// "result", ...}), and lines on stdin: after "idle" it waits for "go" before it
// closes its sockets; after "restart" it waits for "stopping" (the runner is
// about to stop the server) and "up" (a new server answers on the same port).
// Logs go to stderr. Every phase is bounded in time and the process exits by
// itself after config.deadline_s at the latest.
//
// HTTP (sign-in, refresh, history pages) goes through Node's own fetch (undici,
// HTTP/1.1 with keep-alive, no limit on connections per origin).
"use strict";

const fs = require("fs");
const http = require("http");
const readline = require("readline");
const { io } = require("socket.io-client");

const arg = process.argv[2] || "{}";
const cfg = JSON.parse(arg.startsWith("@") ? fs.readFileSync(arg.slice(1), "utf8") : arg);
const urls = cfg.urls || [cfg.url]; // several nodes: socket k goes to urls[k % urls.length]
const now = () => performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (...args) => console.error("[loadgen]", ...args);
const emitLine = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const deadline = setTimeout(() => {
  log(`deadline of ${cfg.deadline_s} s reached, exiting`);
  emitLine({ event: "error", error: "deadline" });
  process.exit(3);
}, (cfg.deadline_s || 120) * 1000);
deadline.unref();

// Lines from the runner on stdin, one at a time.
const stdinLines = [];
let stdinWaiter = null;
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (stdinWaiter) {
    const wake = stdinWaiter;
    stdinWaiter = null;
    wake(line.trim());
  } else {
    stdinLines.push(line.trim());
  }
});
function nextLine(timeoutMs) {
  return new Promise((resolve) => {
    if (stdinLines.length) {
      resolve(stdinLines.shift());
      return;
    }
    const timer = setTimeout(() => { stdinWaiter = null; resolve(null); }, timeoutMs);
    stdinWaiter = (line) => { clearTimeout(timer); resolve(line); };
  });
}

// One HTTP/1.1 request on a connection of its own (`Connection: close`), as each
// page, in a browser of its own, makes after a server restart; resolves with what
// the storm reads of a fetch Response. (Node's fetch shares one keep-alive pool for
// every page of the process: a request on a connection the server has just closed
// fails there, where a browser would send it again.)
function request(url, { method = "GET", headers = {}, body, timeoutMs = 20000 } = {}) {
  return new Promise((resolve, reject) => {
    const extra = { connection: "close" };
    if (body !== undefined) extra["content-length"] = Buffer.byteLength(body);
    const req = http.request(url, { method, headers: { ...headers, ...extra }, agent: false }, (res) => {
      const chunks = [];
      res.on("data", (chunk) => chunks.push(chunk));
      res.on("error", reject);
      res.on("end", () => {
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString("utf8");
        resolve({
          status: res.statusCode,
          headers: { get: (name) => res.headers[name.toLowerCase()] ?? null },
          text: async () => text,
          json: async () => JSON.parse(text),
        });
      });
    });
    const timer = setTimeout(() => {
      const err = new Error(`no answer within ${timeoutMs} ms`);
      err.name = "TimeoutError";
      req.destroy(err);
    }, timeoutMs);
    req.on("error", (err) => { clearTimeout(timer); reject(err); });
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function networkError(err) {
  return `network: ${err.code || (err.cause && err.cause.code) || err.name}`;
}

function bump(counts, key, by = 1) {
  counts[key] = (counts[key] || 0) + by;
}

// Latency histogram: 20 us buckets up to 20 s by default; the sign-in burst
// and the storm use 1 ms buckets up to 5 minutes.
class Hist {
  constructor(res = 0.02, maxMs = 20000) {
    this.res = res; // ms per bucket
    this.buckets = new Uint32Array(Math.ceil(maxMs / res));
    this.n = 0;
    this.max = 0;
  }
  add(ms) {
    let i = Math.floor(ms / this.res);
    if (i < 0) i = 0;
    if (i >= this.buckets.length) i = this.buckets.length - 1;
    this.buckets[i]++;
    this.n++;
    if (ms > this.max) this.max = ms;
  }
  q(p) {
    if (this.n === 0) return null;
    const want = Math.ceil(this.n * p);
    let seen = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      seen += this.buckets[i];
      if (seen >= want) return +((i + 1) * this.res).toFixed(2);
    }
    return +this.max.toFixed(2);
  }
  summary() {
    return { n: this.n, p50_ms: this.q(0.5), p99_ms: this.q(0.99), max_ms: +this.max.toFixed(2) };
  }
}

async function pool(count, limit, fn) {
  let next = 0;
  const workers = [];
  for (let w = 0; w < Math.min(limit, count); w++) {
    workers.push((async () => {
      while (next < count) {
        const k = next++;
        await fn(k);
      }
    })());
  }
  await Promise.all(workers);
}

// Real tokens: sign in over HTTP as each bench user (quart-rooms only).
async function login(users) {
  const tokens = new Map();
  if (!cfg.auth) return tokens;
  await pool(users.length, 4, async (k) => {
    const name = users[k];
    const res = await fetch(`${urls[0]}/api/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: name, password: cfg.password }),
      signal: AbortSignal.timeout(20000),
    });
    if (res.status !== 200) throw new Error(`login of ${name} answered ${res.status}: ${await res.text()}`);
    tokens.set(name, (await res.json()).access_token);
  });
  return tokens;
}

function userOf(k) {
  return cfg.users[k % cfg.users.length];
}

function urlOf(k) {
  return urls[k % urls.length];
}

// Connect one socket; resolves with it once connected, rejects on connect_error.
function openSocket(token, url = urls[0]) {
  const opts = {
    transports: ["websocket"],
    forceNew: true,
    reconnection: false,
    timeout: 20000,
    perMessageDeflate: cfg.deflate ? { threshold: 0 } : false,
  };
  if (token) opts.auth = { token };
  const socket = io(url, opts);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { socket.close(); reject(new Error("connect timeout")); }, 20000);
    socket.once("connect", () => { clearTimeout(timer); resolve(socket); });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      socket.close();
      reject(new Error(`connect_error: ${err.message} ${JSON.stringify(err.data || null)}`));
    });
  });
}

async function join(socket, room) {
  const ack = await socket.timeout(20000).emitWithAck("join", { room });
  if (!ack || ack.ok !== true) throw new Error(`join ${room}: ${JSON.stringify(ack)}`);
  // Contract 1.1: a join ack carries the room's epoch (the reference has none).
  if (cfg.auth && typeof ack.epoch !== "string") throw new Error(`join ${room}: no epoch in ${JSON.stringify(ack).slice(0, 200)}`);
  return ack;
}

function closeAll(sockets) {
  for (const s of sockets) if (s) s.close();
}

function cpuMs(start) {
  const u = process.cpuUsage(start);
  return (u.user + u.system) / 1000;
}

// --- fan-out: R receivers and S senders in one room ---------------------------
async function fanout(tokens) {
  const R = cfg.receivers;
  const S = cfg.senders;
  const W = cfg.window;
  const room = cfg.room;
  const sockets = new Array(R + S);
  await pool(R + S, cfg.connect_concurrency, async (k) => {
    sockets[k] = await openSocket(tokens.get(userOf(k)), urlOf(k));
    await join(sockets[k], room);
  });
  log(`fanout: ${R} receivers and ${S} senders joined ${room}`);

  let measuring = false;
  let deliveries = 0;
  const lat = new Hist(); // send -> arrival at any socket
  const rtt = new Hist(); // send -> back at its sender
  const stats = sockets.map(() => ({ received: 0, ooo: 0, lastId: -Infinity }));

  // Sender state.
  const senders = [];
  for (let s = 0; s < S; s++) {
    senders.push({ seq: 0, inflight: 0, acked: 0, returned: 0, errors: 0, running: false });
  }
  const ackErrors = {};

  for (let k = 0; k < R + S; k++) {
    const st = stats[k];
    const senderIdx = k >= R ? k - R : -1;
    sockets[k].on("message", (m) => {
      const t = now();
      st.received++;
      if (m.id <= st.lastId) st.ooo++;
      else st.lastId = m.id;
      const parts = m.msg.split(":");
      const from = +parts[0];
      const sentAt = +parts[2];
      if (measuring) {
        deliveries++;
        lat.add(t - sentAt);
      }
      if (from === senderIdx) {
        const sd = senders[senderIdx];
        sd.returned++;
        sd.inflight--;
        if (measuring) rtt.add(t - sentAt);
        pump(senderIdx);
      }
    });
  }

  function pump(s) {
    const sd = senders[s];
    const socket = sockets[R + s];
    while (sd.running && sd.inflight < W) {
      sd.inflight++;
      const seq = ++sd.seq;
      socket.timeout(30000).emit("message", { room, msg: `${s}:${seq}:${now().toFixed(3)}` }, (err, ack) => {
        if (!err && ack && ack.ok === true) {
          sd.acked++;
          return;
        }
        const code = err ? "ack_timeout" : (ack && ack.error) || "bad_ack";
        ackErrors[code] = (ackErrors[code] || 0) + 1;
        sd.errors++;
        if (!err) { // refused: it will not come back, free its slot
          sd.inflight--;
          pump(s);
        }
      });
    }
  }

  for (let s = 0; s < S; s++) { senders[s].running = true; pump(s); }
  const { t0, t1, genCpu } = await measureWindow((on) => { measuring = on; });
  for (const sd of senders) sd.running = false;
  await drain(senders); // every message back at its sender, the last broadcasts at every receiver
  const stored = senders.reduce((a, sd) => a + sd.acked, 0);
  let lost = 0;
  let lostMaxPerReceiver = 0;
  let ooo = 0;
  let oooMaxPerReceiver = 0;
  for (const st of stats) {
    const l = Math.max(0, stored - st.received);
    lost += l;
    lostMaxPerReceiver = Math.max(lostMaxPerReceiver, l);
    ooo += st.ooo;
    oooMaxPerReceiver = Math.max(oooMaxPerReceiver, st.ooo);
  }
  const seconds = (t1 - t0) / 1000;
  closeAll(sockets);
  return {
    receivers: R,
    senders: S,
    window: W,
    seconds,
    deliveries,
    deliveries_per_s: deliveries / seconds,
    latency: lat.summary(),
    round_trip: rtt.summary(),
    messages_stored: stored,
    still_in_flight: senders.reduce((a, sd) => a + sd.inflight, 0),
    ack_errors: ackErrors,
    lost_total: lost,
    lost_max_per_receiver: lostMaxPerReceiver,
    out_of_order_total: ooo,
    out_of_order_max_per_receiver: oooMaxPerReceiver,
    generator_cpu: genCpu,
  };
}

// Warm up, then measure for cfg.duration_s: tells the runner when the window
// opens and closes, and returns its times and the generator's CPU share.
async function measureWindow(setMeasuring) {
  await sleep(cfg.warmup_s * 1000);
  const cpu0 = process.cpuUsage();
  const t0 = now();
  setMeasuring(true);
  emitLine({ event: "measure_start" });
  await sleep(cfg.duration_s * 1000);
  setMeasuring(false);
  const t1 = now();
  emitLine({ event: "measure_end" });
  return { t0, t1, genCpu: cpuMs(cpu0) / (t1 - t0) };
}

// Wait (bounded by cfg.drain_s) until nothing is in flight, then a little
// more for the last broadcasts to arrive.
async function drain(items) {
  const until = now() + cfg.drain_s * 1000;
  while (now() < until && items.some((item) => item.inflight > 0)) await sleep(20);
  await sleep(300);
}

// --- connect: N clients, at most C in flight, each connecting and joining ------
async function connect(tokens) {
  const N = cfg.clients;
  const sockets = new Array(N);
  const lat = new Hist();
  const errors = {};
  emitLine({ event: "measure_start" });
  const cpu0 = process.cpuUsage();
  const t0 = now();
  await pool(N, cfg.connect_concurrency, async (k) => {
    const start = now();
    try {
      const socket = await openSocket(tokens.get(userOf(k)), urlOf(k));
      sockets[k] = socket;
      await join(socket, cfg.rooms[Math.floor(k / cfg.per_room) % cfg.rooms.length]);
      lat.add(now() - start);
    } catch (err) {
      const code = String(err.message).slice(0, 80);
      errors[code] = (errors[code] || 0) + 1;
    }
  });
  const t1 = now();
  const genCpu = cpuMs(cpu0) / (t1 - t0);
  emitLine({ event: "measure_end" });
  const connected = sockets.filter((s) => s && s.connected).length;
  // Idle: the runner measures the server's memory, then says go on.
  emitLine({ event: "idle", connected });
  await nextLine(60000); // "go"
  const stillConnected = sockets.filter((s) => s && s.connected).length;
  closeAll(sockets);
  const seconds = (t1 - t0) / 1000;
  return {
    clients: N,
    concurrency: cfg.connect_concurrency,
    deflate: !!cfg.deflate,
    seconds,
    connected,
    still_connected_after_idle: stillConnected,
    connects_per_s: (N - Object.values(errors).reduce((a, b) => a + b, 0)) / seconds,
    latency: lat.summary(),
    errors,
    generator_cpu: genCpu,
  };
}

// --- many rooms: P rooms of 2 members, every member sending ------------------
async function manyRooms(tokens) {
  const P = cfg.rooms.length;
  const M = cfg.members;
  const W = cfg.window;
  const N = P * M;
  const sockets = new Array(N);
  await pool(N, cfg.connect_concurrency, async (k) => {
    sockets[k] = await openSocket(tokens.get(userOf(k)), urlOf(k));
    await join(sockets[k], cfg.rooms[Math.floor(k / M)]);
  });
  log(`many rooms: ${N} sockets joined ${P} rooms`);

  let measuring = false;
  let acked = 0;
  let delivered = 0;
  const ackLat = new Hist();
  const ackErrors = {};
  const storedPerRoom = new Array(P).fill(0);
  const stats = sockets.map(() => ({ received: 0, ooo: 0, lastId: -Infinity, inflight: 0, running: false }));

  for (let k = 0; k < N; k++) {
    const st = stats[k];
    sockets[k].on("message", (m) => {
      st.received++;
      if (m.id <= st.lastId) st.ooo++;
      else st.lastId = m.id;
      if (measuring) delivered++;
    });
  }

  function pump(k) {
    const st = stats[k];
    const roomIdx = Math.floor(k / M);
    while (st.running && st.inflight < W) {
      st.inflight++;
      const sentAt = now();
      sockets[k].timeout(30000).emit("message", { room: cfg.rooms[roomIdx], msg: `${k}:${sentAt.toFixed(3)}` }, (err, ack) => {
        st.inflight--;
        if (!err && ack && ack.ok === true) {
          storedPerRoom[roomIdx]++;
          if (measuring) {
            acked++;
            ackLat.add(now() - sentAt);
          }
        } else {
          const code = err ? "ack_timeout" : (ack && ack.error) || "bad_ack";
          ackErrors[code] = (ackErrors[code] || 0) + 1;
        }
        pump(k);
      });
    }
  }

  for (let k = 0; k < N; k++) { stats[k].running = true; pump(k); }
  const { t0, t1, genCpu } = await measureWindow((on) => { measuring = on; });
  for (const st of stats) st.running = false;
  await drain(stats);
  let lost = 0;
  let ooo = 0;
  let lostMax = 0;
  for (let k = 0; k < N; k++) {
    const l = Math.max(0, storedPerRoom[Math.floor(k / M)] - stats[k].received);
    lost += l;
    lostMax = Math.max(lostMax, l);
    ooo += stats[k].ooo;
  }
  const seconds = (t1 - t0) / 1000;
  closeAll(sockets);
  return {
    rooms: P,
    members: M,
    window: W,
    seconds,
    acked,
    acked_per_s: acked / seconds,
    deliveries_per_s: delivered / seconds,
    ack_latency: ackLat.summary(),
    ack_errors: ackErrors,
    still_in_flight: stats.reduce((a, st) => a + st.inflight, 0),
    lost_total: lost,
    lost_max_per_member: lostMax,
    out_of_order_total: ooo,
    generator_cpu: genCpu,
  };
}

// --- sign-in burst: every user signs in at once over HTTP --------------------
// Each user POSTs /api/auth/login at the same moment (one fetch each, so one
// HTTP/1.1 connection each); a 429 is retried after its Retry-After, as a
// patient client would, unless Retry-After is longer than cfg.max_retry_after_s
// (an account locked by the failure throttle): that user gives up.
function statusClass(status) {
  if (status === 0) return "network";
  if (status >= 200 && status < 300) return "2xx";
  if (status === 429) return "429";
  if (status >= 500) return "5xx";
  return String(status);
}

async function errorText(res) {
  const text = await res.text();
  try {
    const e = JSON.parse(text).error || {};
    return `${res.status} ${e.code || "?"}: ${e.message || ""}`.slice(0, 120);
  } catch {
    return `${res.status}: ${text.slice(0, 80)}`;
  }
}

async function signin() {
  const users = cfg.signin_users;
  const first = {}; // outcome of each user's first attempt
  const all = {}; // outcome of every attempt
  const reasons = {}; // non-2xx answers by status, code and message
  const requestLat = new Hist(1, 300000); // each request
  const userLat = new Hist(1, 300000); // first attempt -> signed in, retries included
  let signedIn = 0;
  let gaveUp = 0;
  let attempts = 0;
  emitLine({ event: "measure_start" });
  const cpu0 = process.cpuUsage();
  const t0 = now();
  let lastSignedIn = t0;
  await Promise.all(users.map(async (name) => {
    const start = now();
    for (let attempt = 0; attempt < cfg.max_attempts; attempt++) {
      const t = now();
      let status = 0;
      let retryAfter = 1;
      attempts++;
      try {
        const res = await fetch(`${urls[0]}/api/auth/login`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ username: name, password: cfg.password }),
          signal: AbortSignal.timeout(60000),
        });
        status = res.status;
        if (status === 200) {
          const body = await res.json();
          if (typeof body.access_token !== "string" || typeof body.refresh_token !== "string") status = -1;
        } else {
          const ra = Number(res.headers.get("retry-after"));
          if (Number.isFinite(ra) && ra > 0) retryAfter = ra;
          bump(reasons, await errorText(res));
        }
      } catch (err) {
        bump(reasons, networkError(err));
      }
      requestLat.add(now() - t);
      const cls = status === -1 ? "bad_reply" : statusClass(status);
      if (attempt === 0) bump(first, cls);
      bump(all, cls);
      if (status === 200) {
        signedIn++;
        lastSignedIn = now();
        userLat.add(lastSignedIn - start);
        return;
      }
      if (status === 429 && retryAfter > cfg.max_retry_after_s) break; // locked out for the window
      if (status >= 400 && status < 500 && status !== 429) break; // will not change on a retry
      await sleep(status === 429 ? retryAfter * 1000 : 1000);
    }
    gaveUp++;
  }));
  const t1 = now();
  const genCpu = cpuMs(cpu0) / (t1 - t0);
  emitLine({ event: "measure_end" });
  const seconds = (lastSignedIn - t0) / 1000;
  return {
    users: users.length,
    seconds_until_all: (t1 - t0) / 1000,
    seconds_until_last_signed_in: seconds,
    signed_in: signedIn,
    gave_up: gaveUp,
    attempts,
    sign_ins_per_s: seconds > 0 ? signedIn / seconds : 0,
    first_attempt: first,
    all_attempts: all,
    reasons,
    request_latency: requestLat.summary(),
    user_latency: userLat.summary(),
    generator_cpu: genCpu,
  };
}

// --- reconnect storm: every page comes back after a server restart ------------
// N pages, each its own sign-in session (quart-rooms) with one socket in one of
// the rooms, plus a sender page in every room that keeps posting through the
// restart. A page behaves like quart_rooms/web/static/js/chat.js: socket.io's own
// reconnection (500 ms doubling to 5 s, +-50 % jitter); once the transport is
// open the auth callback first refreshes the token over HTTP (POST
// /api/auth/refresh) after a drop, then the socket connects with the new access
// token and joins its rooms again with since_id (the last id up to which it has
// no gap) and the epoch of its last join ack; `more: true` is read over HTTP
// with after_id, `reset: true` clears the room. At the end every page must hold
// every stored message id of its rooms exactly once (in order over the socket).
// The reference has no accounts and no storage: its pages reconnect and join
// again without a token or since_id, and are not checked for loss.
function makeStats() {
  return {
    refresh: {}, // after the restart, by status class
    page_gets: {}, // GET /api/rooms and /api/rooms/{room}/grants after the restart, by status class
    refresh_initial: {}, // page loads before it
    refresh_reasons: {},
    connect_errors: {}, // refusals by code
    join_errors: {},
    disconnect_reasons: {},
    refused_unavailable: 0, // the page itself would stay offline after this one (it reconnects only on unauthorized/token_expired)
    signed_out: 0, // a refresh answered 401: the page would ask for the password again
    transport_errors: 0, // reconnection attempts that could not reach the server
    attempts: 0,
    resets: 0,
    more: 0,
    pages: 0,
    bad_acks: 0,
    bad_welcomes: 0,
    welcomes: 0,
    max_recovery: null, // from welcome's limits
    rejoins: 0, // joins with since_id
    recovered: 0, // messages in their histories
    recovered_max: 0,
    redelivered: 0, // ids held already that a later join's history sent again (asked for: info only)
    refreshLat: new Hist(1, 300000),
  };
}

class Page {
  constructor(stats, index, url, refreshToken, roomNames, check, backoff = [500, 5000], renewOnDrop = true) {
    this.stats = stats;
    this.index = index;
    this.url = url;
    this.refreshToken = refreshToken;
    this.access = null;
    this.freshNeeded = true; // a page load renews its token first
    this.check = check;
    this.backoff = backoff; // socket.io reconnectionDelay, reconnectionDelayMax (ms)
    this.renewOnDrop = renewOnDrop; // a page renews its token after a drop; the sender keeps its own
    this.rooms = new Map();
    for (const name of roomNames) this.rooms.set(name, this.newRoom());
    this.phase = "initial";
    this.failed = null;
    this.refusals = 0;
    this.ready = null; // resolves when every room is joined for the first time
    this.readyWaiter = null;
    this.back = false;
    this.backAt = null;
    this.downAt = null;
    this.attemptStart = null;
    this.onBack = null;
    this.onJoined = null;
    this.socket = null;
    this.refreshing = null;
  }

  newRoom() {
    return {
      epoch: null, joined: false, joining: false, baseline: null, contig: null,
      all: new Set(), segSeen: new Set(), segLast: -Infinity, dup: 0, ooo: 0, joinTries: 0, joinSentAt: null,
    };
  }

  // main.js boot(): a page load renews its token before the socket exists, then starts it.
  async load() {
    if (cfg.auth && this.freshNeeded) {
      if ((await this.refresh()) === 200) this.freshNeeded = false;
    }
    return this.start();
  }

  start() {
    const opts = {
      transports: ["websocket"],
      forceNew: true,
      autoConnect: false,
      reconnection: true,
      reconnectionDelay: this.backoff[0],
      reconnectionDelayMax: this.backoff[1],
      randomizationFactor: 0.5,
      timeout: 10000,
      perMessageDeflate: false,
    };
    if (cfg.auth) {
      opts.auth = (cb) => {
        this.tokenForConnect().then((token) => { if (token !== null) cb({ token }); });
      };
    }
    const socket = io(this.url, opts);
    this.socket = socket;
    this.ready = new Promise((resolve) => { this.readyWaiter = resolve; });
    socket.io.on("reconnect_attempt", () => {
      this.stats.attempts++;
      this.attemptStart = now();
    });
    socket.on("connect", () => {
      this.refusals = 0;
      if (this.phase === "storm" && cfg.auth) this.get("/api/rooms"); // chat.js reloadRooms() after a reconnect
      this.joinAll();
    });
    socket.on("disconnect", (reason) => {
      bump(this.stats.disconnect_reasons, reason);
      if (this.renewOnDrop) this.freshNeeded = true;
      for (const st of this.rooms.values()) { st.joined = false; st.joining = false; }
      if (this.phase === "storm" && this.downAt === null) this.downAt = now();
      this.back = false;
      if (reason === "io server disconnect" && !this.failed) { // the page renews, then connects again
        this.tokenForConnect().then((token) => { if (token !== null && !this.failed) socket.connect(); });
      }
    });
    socket.on("connect_error", (err) => {
      const code = err && err.data && err.data.code;
      if (code) bump(this.stats.connect_errors, code);
      if (code === "unauthorized" || code === "token_expired") {
        this.refusals++;
        this.freshNeeded = true;
        if (this.refusals > 3) {
          this.fail(`refused: ${code}`);
          return;
        }
        setTimeout(() => { if (!this.failed) socket.connect(); }, 500 * this.refusals);
      } else if (code) {
        if (code === "unavailable") this.stats.refused_unavailable++;
        // The page shows "refused" and stays offline here; the bench counts it and tries again.
        setTimeout(() => { if (!this.failed) socket.connect(); }, 1000);
      } else {
        this.stats.transport_errors++; // socket.io reconnects by itself
      }
    });
    socket.on("welcome", (w) => {
      this.stats.welcomes++;
      if (!w || !w.limits || typeof w.limits.max_recovery !== "number") this.stats.bad_welcomes++;
      else this.stats.max_recovery = w.limits.max_recovery;
    });
    socket.on("message", (m) => {
      const st = m && this.rooms.get(m.room);
      if (st) this.take(st, m, true);
    });
    this.attemptStart = now();
    socket.connect();
    return this.ready;
  }

  fail(why) {
    if (this.failed) return;
    this.failed = why;
    if (this.socket) this.socket.close();
    if (this.readyWaiter) this.readyWaiter();
    if (this.onBack) this.onBack(this);
  }

  // A GET the page makes beside its joins (not waited for): counted by status.
  async get(path) {
    let status = 0;
    try {
      const res = await request(`${this.url}${path}`, { headers: { authorization: `Bearer ${this.access}` }, timeoutMs: 120000 });
      status = res.status;
    } catch {
      status = 0;
    }
    bump(this.stats.page_gets, statusClass(status));
  }

  // One refresh at a time (chat.js refreshSession): a refresh token works once,
  // and a second refresh with the same one would end the sign-in session.
  refresh() {
    if (!this.refreshing) this.refreshing = this.refreshOnce().finally(() => { this.refreshing = null; });
    return this.refreshing;
  }

  // At the first load a busy server (429) shows "reload in a moment": the user reloads
  // after Retry-After. After a drop, chat.js keeps its token instead (tokenForConnect).
  async refreshOnce() {
    for (;;) {
      const status = await this.refreshAttempt();
      if (status !== 429 || this.phase !== "initial") return status;
      await sleep(this.retryAfterS * 1000);
    }
  }

  async refreshAttempt() {
    const counts = this.phase === "initial" ? this.stats.refresh_initial : this.stats.refresh;
    const t = now();
    let status = 0;
    try {
      const res = await request(`${this.url}/api/auth/refresh`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ refresh_token: this.refreshToken }),
        timeoutMs: 120000, // chat.js sets none; the bench's bound
      });
      status = res.status;
      if (status === 200) {
        const body = await res.json();
        this.access = body.access_token;
        this.refreshToken = body.refresh_token;
      } else {
        if (status === 429) this.retryAfterS = Number(res.headers.get("retry-after")) || 1;
        bump(this.stats.refresh_reasons, await errorText(res));
      }
    } catch (err) {
      bump(this.stats.refresh_reasons, networkError(err));
    }
    if (this.phase !== "initial") this.stats.refreshLat.add(now() - t);
    bump(counts, statusClass(status));
    return status;
  }

  // chat.js socketToken(): renew after a drop; a refusal ends the session; an
  // unreachable or failing server leaves the old token (a refusal brings us back).
  async tokenForConnect() {
    if (this.freshNeeded) {
      const status = await this.refresh();
      if (status === 401) {
        this.stats.signed_out++;
        this.fail("signed_out");
        return null;
      }
      if (status === 200) this.freshNeeded = false;
    }
    return this.access || "";
  }

  joinAll() {
    for (const [name, st] of this.rooms) this.join(name, st);
  }

  // The ack is handled in its callback, synchronously: with several packets in one
  // TCP read, socket.io runs callbacks and `message` handlers in wire order, but an
  // `await emitWithAck()` would resume only after the later messages were handled.
  join(name, st) {
    const socket = this.socket;
    if (!socket.connected || st.joining || st.joined || this.failed) return;
    st.joining = true;
    st.joinTries++;
    st.joinSentAt = now();
    const payload = { room: name };
    if (this.check && st.contig !== null) {
      payload.since_id = st.contig;
      if (st.epoch) payload.epoch = st.epoch;
    }
    socket.timeout(10000).emit("join", payload, (err, reply) => {
      st.joining = false;
      const ack = err ? { ok: false, error: "timeout" } : reply;
      if (!socket.connected) return; // dropped meanwhile: the next connect joins again
      if (!ack || ack.ok !== true) {
        const code = (ack && ack.error) || "bad_ack";
        bump(this.stats.join_errors, code);
        if (code === "forbidden" || code === "no_such_room") this.fail(`join: ${code}`);
        else setTimeout(() => this.join(name, st), 2000);
        return;
      }
      if (cfg.auth && typeof ack.epoch !== "string") this.stats.bad_acks++;
      if (ack.reset) {
        this.stats.resets++;
        Object.assign(st, this.newRoom());
      }
      st.epoch = typeof ack.epoch === "string" ? ack.epoch : st.epoch;
      const history = Array.isArray(ack.history) ? ack.history : [];
      if (st.baseline === null) { // the first join: what the room held before the bench posted
        st.baseline = history.length ? history[history.length - 1].id : 0;
        st.contig = st.baseline;
      }
      if (payload.since_id !== undefined && !ack.reset) {
        this.stats.rejoins++;
        this.stats.recovered += history.length;
        this.stats.recovered_max = Math.max(this.stats.recovered_max, history.length);
      }
      // A new segment: from here every id after since_id comes once, in order (history, then live).
      st.segSeen = new Set();
      st.segLast = payload.since_id !== undefined && !ack.reset ? payload.since_id : -Infinity;
      for (const m of history) this.take(st, m, true);
      if (this.phase === "storm" && cfg.auth) this.get(`/api/rooms/${encodeURIComponent(name)}/grants`); // chat.js loadGrants()
      if (ack.more) {
        this.stats.more++;
        this.recover(name, st, history.length ? history[history.length - 1].id : payload.since_id, socket);
      } else {
        this.joined(st);
      }
    });
  }

  // `more: true`: read the rest over HTTP (after_id), as chat.js readRest() does.
  async recover(name, st, after, socket) {
    for (;;) {
      const page = await this.readPage(name, after);
      if (page === null) break; // counted; the next rejoin asks from contig again
      this.stats.pages++;
      for (const m of page) this.take(st, m, false);
      if (page.length) after = page[page.length - 1].id;
      if (page.length < 200) break;
    }
    if (socket.connected) this.joined(st);
  }

  joined(st) {
    st.joined = true;
    if ([...this.rooms.values()].every((r) => r.joined)) this.joinedAll();
  }

  async readPage(name, after) {
    for (let tries = 0; tries < 3; tries++) {
      try {
        const res = await request(`${this.url}/api/rooms/${encodeURIComponent(name)}/messages?after_id=${after}&limit=200`, {
          headers: { authorization: `Bearer ${this.access}` },
          timeoutMs: 60000,
        });
        if (res.status === 200) return (await res.json()).messages || [];
        bump(this.stats.join_errors, `page: ${await errorText(res)}`);
        if (res.status === 401) await this.refresh();
      } catch (err) {
        bump(this.stats.join_errors, `page: ${networkError(err)}`);
      }
      await sleep(500);
    }
    return null;
  }

  // Checks, per connection segment (a join ack and the live messages after it):
  // no id twice, ids rising. An id held already that comes again in a later
  // segment was asked for (since_id below it) and is only counted as info.
  take(st, m, viaSocket) {
    if (!m || !Number.isInteger(m.id)) return;
    if (viaSocket) {
      if (st.segSeen.has(m.id)) {
        st.dup++;
      } else {
        st.segSeen.add(m.id);
        if (m.id <= st.segLast) st.ooo++;
        if (st.all.has(m.id)) this.stats.redelivered++;
      }
      if (m.id > st.segLast) st.segLast = m.id;
    }
    st.all.add(m.id);
    if (st.contig !== null) while (st.all.has(st.contig + 1)) st.contig++;
  }

  joinedAll() {
    if (this.readyWaiter) {
      const wake = this.readyWaiter;
      this.readyWaiter = null;
      wake();
    }
    if (this.phase === "storm" && !this.back && this.downAt !== null) {
      this.back = true;
      this.backAt = now();
      if (this.onBack) this.onBack(this);
    }
    if (this.onJoined) this.onJoined();
  }
}

async function storm() {
  const N = cfg.clients;
  const rooms = cfg.rooms;
  const check = !!cfg.auth; // the reference keeps no ids across its restart
  const stats = makeStats();
  const tokens = cfg.refresh_tokens || [];
  const pages = [];
  for (let k = 0; k < N; k++) {
    pages.push(new Page(stats, k, urlOf(k), tokens[k], [rooms[Math.floor(k / cfg.per_room) % rooms.length]], check));
  }
  // The sender is a client (a bot, say) that retries every 100-200 ms with its still
  // valid access token: it is back before the herd and posts while the pages
  // reconnect, so they have missed messages to recover.
  const sender = new Page(stats, N, urls[0], tokens[N], rooms, check, [100, 200], false);
  const everyone = [...pages, sender];

  // Page loads: renew, connect, join (at most connect_concurrency at a time).
  const t0 = now();
  await pool(everyone.length, cfg.connect_concurrency, async (k) => {
    const page = everyone[k];
    await Promise.race([page.load(), sleep(120000)]);
    if (page.readyWaiter) page.fail("load: not joined within 120 s");
  });
  const setupFailed = everyone.filter((p) => p.failed).map((p) => p.failed);
  if (setupFailed.length) throw new Error(`${setupFailed.length} pages could not load: ${setupFailed.slice(0, 3)}`);
  log(`storm: ${N} pages in ${rooms.length} rooms and a sender in all of them, loaded in ${((now() - t0) / 1000).toFixed(1)} s`);

  // The sender: a message every 1/rate s, round robin over the rooms, each
  // with a client_id; sent while connected and in every room, at most
  // send_window in flight; unacked ones (unavailable, not_in_room, no ack)
  // are sent again with the same client_id, as docs/api.md says.
  const truth = new Map(rooms.map((r) => [r, new Set()]));
  const queue = []; // messages not acked yet, oldest first
  const ackedIds = new Map(); // client_id -> id
  const send = { produced: 0, acked: 0, resent: 0, errors: {}, id_mismatch: 0, inflight: 0 };
  let producing = true;
  let seq = 0;
  const canSend = () => sender.socket.connected && [...sender.rooms.values()].every((r) => r.joined);
  function pumpSender() {
    if (!canSend()) return;
    for (const item of queue) {
      if (send.inflight >= cfg.send_window) break;
      if (item.inflight) continue;
      item.inflight = true;
      send.inflight++;
      if (item.tries++ > 0) send.resent++;
      sender.socket.timeout(10000).emit("message", { room: item.room, msg: item.msg, client_id: item.cid }, (err, ack) => {
        item.inflight = false;
        send.inflight--;
        if (!err && ack && ack.ok === true) {
          const prev = ackedIds.get(item.cid);
          if (prev !== undefined && prev !== ack.id) send.id_mismatch++;
          ackedIds.set(item.cid, ack.id);
          truth.get(item.room).add(ack.id);
          send.acked++;
          const i = queue.indexOf(item);
          if (i >= 0) queue.splice(i, 1);
        } else {
          bump(send.errors, err ? "no_ack" : (ack && ack.error) || "bad_ack");
        }
        setTimeout(pumpSender, err || !(ack && ack.ok) ? 200 : 0);
      });
    }
  }
  sender.onJoined = () => pumpSender();
  const producer = setInterval(() => {
    if (!producing) return;
    const room = rooms[seq % rooms.length];
    seq++;
    queue.push({ cid: `storm-${seq}`, room, msg: `storm ${seq}`, tries: 0, inflight: false });
    send.produced++;
    pumpSender();
  }, 1000 / cfg.send_rate);

  await sleep(cfg.pre_s * 1000);

  // The restart: the runner stops the server (SIGTERM, it drains) and starts it again.
  let restartAt = null;
  let upAt = null;
  let allBackAt = null;
  let backCount = 0;
  let resolveAllBack;
  const allBack = new Promise((resolve) => { resolveAllBack = resolve; });
  for (const p of everyone) {
    p.onBack = () => {
      backCount++;
      if (backCount === everyone.length) resolveAllBack();
    };
  }
  for (const p of everyone) p.phase = "storm";
  emitLine({ event: "restart" });
  if ((await nextLine(120000)) !== "stopping") throw new Error("the runner did not restart the server");
  restartAt = now();
  if ((await nextLine(180000)) !== "up") throw new Error("the server did not come back");
  upAt = now();
  const cpu0 = process.cpuUsage();
  emitLine({ event: "measure_start" });
  await Promise.race([allBack, sleep(cfg.back_deadline_s * 1000)]);
  allBackAt = now();
  const genCpu = cpuMs(cpu0) / (allBackAt - upAt);
  emitLine({ event: "measure_end" });
  const notBack = everyone.filter((p) => !p.back || p.failed);
  log(`storm: ${everyone.length - notBack.length} of ${everyone.length} pages back ${((allBackAt - upAt) / 1000).toFixed(2)} s after the server answered`);

  // Keep posting a little, then let everything arrive.
  await sleep(cfg.post_s * 1000);
  producing = false;
  clearInterval(producer);
  // Not everyone back: the server is overloaded; do not wait as long for the sender.
  const sendUntil = now() + (notBack.length ? Math.min(30, cfg.send_drain_s) : cfg.send_drain_s) * 1000;
  while (queue.length && now() < sendUntil) {
    pumpSender();
    await sleep(50);
  }
  const drainedAfter = (now() - allBackAt) / 1000;
  const complete = () => !check || everyone.every((p) => p.failed || !p.back || [...p.rooms].every(([name, st]) => {
    for (const id of truth.get(name)) if (!st.all.has(id)) return false;
    return true;
  }));
  // Acked means stored and queued to every socket of the room on the server; an
  // overloaded server may still be writing those queues out: wait (bounded).
  const settleStart = now();
  const settleUntil = settleStart + cfg.settle_s * 1000;
  while (!complete() && now() < settleUntil) await sleep(100);
  const settledAfter = (now() - settleStart) / 1000;
  await sleep(300); // late doubles, if any

  // Checks.
  let lost = 0;
  let lostMax = 0;
  let doubled = 0;
  let ooo = 0;
  let extra = 0;
  let gaps = 0;
  for (const [, ids] of check ? truth : []) {
    const sorted = [...ids].sort((a, b) => a - b);
    for (let i = 1; i < sorted.length; i++) gaps += sorted[i] - sorted[i - 1] - 1;
  }
  const lostSample = [];
  if (check) {
    for (const p of everyone) {
      if (p.failed || !p.back) continue; // counted as not back; it never asked for what it missed
      let pageLost = 0;
      for (const [name, st] of p.rooms) {
        const want = truth.get(name);
        for (const id of want) {
          if (st.all.has(id)) continue;
          pageLost++;
          if (lostSample.length < 20) lostSample.push({ page: p.index, room: name, id, contig: st.contig, back_ms: p.backAt !== null ? Math.round(p.backAt - upAt) : null });
        }
        for (const id of st.all) if (id > st.baseline && !want.has(id)) extra++;
        doubled += st.dup;
        ooo += st.ooo;
      }
      lost += pageLost;
      lostMax = Math.max(lostMax, pageLost);
    }
  }
  const backAfterUp = new Hist(1, 300000);
  const downtime = new Hist(1, 300000);
  const attempt = new Hist(1, 300000);
  for (const p of everyone) {
    if (!p.back || p.failed) continue;
    backAfterUp.add(p.backAt - upAt);
    if (p.downAt !== null) downtime.add(p.backAt - p.downAt);
    if (p.attemptStart !== null) attempt.add(p.backAt - p.attemptStart);
  }
  const notBackSample = notBack.slice(0, 10).map((p) => ({
    page: p.index,
    failed: p.failed,
    connected: p.socket.connected,
    sid: p.socket.id || null,
    refreshing: p.refreshing !== null,
    fresh_needed: p.freshNeeded,
    down_ms: p.downAt !== null ? Math.round(p.downAt - restartAt) : null,
    rooms: [...p.rooms].slice(0, 3).map(([name, st]) => ({
      name, joined: st.joined, joining: st.joining, tries: st.joinTries, contig: st.contig,
      last_join_ms: st.joinSentAt !== null ? Math.round(st.joinSentAt - upAt) : null,
    })),
  }));
  const stored = [...truth.values()].reduce((a, s) => a + s.size, 0);
  closeAll(everyone.map((p) => p.socket));
  const { refreshLat, ...counts } = stats;
  return {
    clients: N,
    rooms: rooms.length,
    pages: everyone.length,
    checked: check,
    back: everyone.length - notBack.length,
    not_back: notBack.length,
    failed: everyone.filter((p) => p.failed).map((p) => p.failed).reduce((o, why) => { bump(o, why); return o; }, {}),
    down_s: (upAt - restartAt) / 1000,
    all_back_after_restart_s: (allBackAt - restartAt) / 1000,
    all_back_after_up_s: (allBackAt - upAt) / 1000,
    back_after_up: backAfterUp.summary(),
    downtime: downtime.summary(),
    last_attempt: attempt.summary(), // the attempt that worked: transport open, refresh, connect, every join acked
    refresh_latency: refreshLat.summary(),
    ...counts,
    sender_back_after_up_s: sender.backAt !== null && upAt !== null ? (sender.backAt - upAt) / 1000 : null,
    sender: { produced: send.produced, acked: send.acked, resent: send.resent, errors: send.errors,
      unacked_left: queue.length, id_mismatch: send.id_mismatch, rate_per_s: cfg.send_rate },
    messages_stored: stored,
    sender_drained_s: drainedAfter, // from all back to the sender's last ack
    settled_s: settledAfter, // after that, until every page held every acked id (or the bound)
    lost_sample: lostSample,
    not_back_sample: notBackSample,
    id_gaps_in_acks: gaps,
    lost_total: lost,
    lost_max_per_page: lostMax,
    doubled_total: doubled,
    out_of_order_total: ooo,
    extra_total: extra,
    generator_cpu: genCpu,
  };
}

async function main() {
  const scenarios = { fanout, connect, many_rooms: manyRooms, signin, storm };
  const run = scenarios[cfg.scenario];
  if (!run) throw new Error(`unknown scenario ${cfg.scenario}`);
  const own = cfg.scenario === "signin" || cfg.scenario === "storm"; // these sign in their own way
  const tokens = own ? new Map() : await login(cfg.users);
  if (cfg.auth && !own) log(`signed in ${tokens.size} users over HTTP`);
  emitLine({ event: "ready" });
  const result = await run(tokens);
  emitLine({ event: "result", scenario: cfg.scenario, result });
  // Give socket closes a moment to go out, then leave.
  await sleep(200);
  process.exit(0);
}

main().catch((err) => {
  log(err && err.stack ? err.stack : String(err));
  emitLine({ event: "error", error: String(err && err.message ? err.message : err) });
  process.exit(2);
});
