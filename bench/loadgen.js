#!/usr/bin/env node
// Load generator of the quart-rooms benchmark: one Node.js process, many
// socket.io-client sockets on the websocket transport.
//
// Usage: node loadgen.js '<json config>'   (bench/run.py writes the config)
//
// It talks to the runner over its standard streams: JSON lines on stdout
// ({"event": "ready" | "measure_start" | "measure_end" | "idle" | "result", ...}),
// and, after "idle", it waits for one line on stdin before it closes its
// sockets. Logs go to stderr. Every phase is bounded in time and the process
// exits by itself after config.deadline_s at the latest.
"use strict";

const { io } = require("socket.io-client");

const cfg = JSON.parse(process.argv[2] || "{}");
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

// Latency histogram: 20 us buckets up to 20 s.
class Hist {
  constructor() {
    this.res = 0.02; // ms per bucket
    this.buckets = new Uint32Array(1000000);
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
    const res = await fetch(`${cfg.url}/api/auth/login`, {
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

// Connect one socket; resolves with it once connected, rejects on connect_error.
function openSocket(token) {
  const opts = {
    transports: ["websocket"],
    forceNew: true,
    reconnection: false,
    timeout: 20000,
    perMessageDeflate: cfg.deflate ? { threshold: 0 } : false,
  };
  if (token) opts.auth = { token };
  const socket = io(cfg.url, opts);
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
    sockets[k] = await openSocket(tokens.get(userOf(k)));
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
      const socket = await openSocket(tokens.get(userOf(k)));
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
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, 60000);
    process.stdin.once("data", () => { clearTimeout(timer); resolve(); });
  });
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
    sockets[k] = await openSocket(tokens.get(userOf(k)));
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

async function main() {
  const scenarios = { fanout, connect, many_rooms: manyRooms };
  const run = scenarios[cfg.scenario];
  if (!run) throw new Error(`unknown scenario ${cfg.scenario}`);
  const tokens = await login(cfg.users);
  if (cfg.auth) log(`signed in ${tokens.size} users over HTTP`);
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
