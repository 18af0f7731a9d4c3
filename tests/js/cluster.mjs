// Drives many official socket.io-client sockets against one or more quart-rooms nodes.
// Usage: node cluster.mjs CONFIG_JSON
// CONFIG: {
//   room, total (messages every member should receive), inflight (unacknowledged per sender),
//   transports (omit for the client's default: long-polling first, then the websocket upgrade),
//   stagger_ms (connect one client at a time, this long apart; omit to connect all at once),
//   timeout_ms, clients: [{name, url, token, send (messages to send)}]
// }
// Every client connects and joins; then the senders send; each member records the ids of the
// `message` events it gets. Prints one JSON line:
// {clients: [{name, transport, join, acks: [ack in send order], received: [ids], errors: [...]}]}
import { io } from "socket.io-client";

const cfg = JSON.parse(process.argv[2]);
const timeoutMs = cfg.timeout_ms ?? 30000;

function open(client) {
  const options = { auth: { token: client.token }, reconnection: false, forceNew: true, timeout: 10000 };
  if (cfg.transports) options.transports = cfg.transports;
  const state = { name: client.name, received: [], acks: [], errors: [], join: null };
  return new Promise((resolve) => {
    const socket = io(client.url, options);
    state.socket = socket;
    socket.on("message", (m) => state.received.push(m.id));
    socket.on("connect_error", (err) => {
      state.errors.push({ event: "connect_error", message: String(err && err.message), data: err && err.data });
      resolve(state);
    });
    socket.on("disconnect", (reason) => state.errors.push({ event: "disconnect", reason }));
    socket.once("connect", () => resolve(state));
  });
}

async function send(state, count) {
  let next = 0;
  state.acks = new Array(count).fill(null);
  async function lane() {
    while (next < count) {
      const i = next++;
      try {
        state.acks[i] = await state.socket.timeout(15000).emitWithAck("message", { room: cfg.room, msg: `${state.name}-${i}` });
      } catch (err) {
        state.acks[i] = { ok: false, error: `client: ${err && err.message}` };
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(cfg.inflight ?? 8, count) }, lane));
}

async function main() {
  let states;
  if (cfg.stagger_ms) { // one connection at a time, so workers that share a port each get some
    states = [];
    for (const c of cfg.clients) {
      states.push(await open(c));
      await new Promise((ok) => setTimeout(ok, cfg.stagger_ms));
    }
  } else {
    states = await Promise.all(cfg.clients.map(open));
  }
  await Promise.all(states.map(async (s) => {
    if (!s.socket.connected) return;
    try {
      s.join = await s.socket.timeout(10000).emitWithAck("join", { room: cfg.room });
    } catch (err) {
      s.join = { ok: false, error: `client: ${err && err.message}` };
    }
  }));
  await Promise.all(cfg.clients.map((c, i) => (c.send && states[i].join && states[i].join.ok ? send(states[i], c.send) : null)));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && states.some((s) => s.socket.connected && s.received.length < cfg.total)) {
    await new Promise((ok) => setTimeout(ok, 20));
  }
  await new Promise((ok) => setTimeout(ok, 300)); // anything sent twice arrives meanwhile
  const out = states.map((s) => ({
    name: s.name,
    transport: s.socket.io.engine ? s.socket.io.engine.transport.name : null,
    join: s.join && { ok: s.join.ok, error: s.join.error, members: s.join.members },
    acks: s.acks,
    received: s.received,
    errors: s.errors,
  }));
  console.log(JSON.stringify({ clients: out }));
  for (const s of states) s.socket.disconnect();
}

main().then(
  () => process.exit(0),
  (err) => { console.error(String(err && err.stack)); process.exit(1); },
);
