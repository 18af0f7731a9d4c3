// Drives the official socket.io-client against a quart-rooms server.
// Usage: node client.mjs URL ALICE_TOKEN BOB_TOKEN
// Prints one JSON line per step. After {"step":"ready"} it waits (up to 10 s)
// for bob to be kicked, which the calling test does through the admin API.
import { io } from "socket.io-client";

const [url, aliceToken, bobToken] = process.argv.slice(2);
const say = (step, data) => console.log(JSON.stringify({ step, ...data }));
const connect = (token) =>
  new Promise((resolve, reject) => {
    const socket = io(url, { auth: { token }, transports: ["websocket"], reconnection: false });
    const welcome = new Promise((ok) => socket.once("welcome", ok));
    socket.once("connect", () => resolve({ socket, welcome }));
    socket.once("connect_error", (err) => reject(err));
  });
const timeout = (ms, what) =>
  new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms));

async function main() {
  try {
    await connect("not-a-token");
    say("bad_token", { refused: false });
  } catch (err) {
    say("bad_token", { refused: true, message: err.message, code: err.data && err.data.code });
  }
  const alice = await connect(aliceToken);
  const bob = await connect(bobToken);
  say("welcome", { alice: await alice.welcome, bob: await bob.welcome });

  const got = { alice: [], bob: [] };
  alice.socket.on("message", (m) => got.alice.push(m));
  bob.socket.on("message", (m) => got.bob.push(m));
  const presence = [];
  alice.socket.on("presence", (p) => presence.push(p));

  say("join_alice", await alice.socket.timeout(5000).emitWithAck("join", { room: "red" }));
  say("join_bob", await bob.socket.timeout(5000).emitWithAck("join", { room: "red" }));
  say("forbidden", await bob.socket.timeout(5000).emitWithAck("join", { room: "blue" }));
  say("send", await alice.socket.timeout(5000).emitWithAck("message", { room: "red", msg: "hi from js", username: "bob" }));
  await Promise.race([
    new Promise((ok) => { const t = setInterval(() => { if (got.bob.length && got.alice.length) { clearInterval(t); ok(); } }, 10); }),
    timeout(5000, "messages"),
  ]);
  say("received", { alice: got.alice, bob: got.bob, presence });

  const kicked = new Promise((ok) => bob.socket.once("kicked", ok));
  say("ready", {});
  say("kicked", await Promise.race([kicked, timeout(10000, "kicked")]));
  say("after_kick", await bob.socket.timeout(5000).emitWithAck("message", { room: "red", msg: "still here?" }));
  alice.socket.disconnect();
  bob.socket.disconnect();
}

main().then(
  () => process.exit(0),
  (err) => { say("error", { message: String(err && err.message) }); process.exit(1); },
);
