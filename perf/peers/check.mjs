// Checks that each raw-contract server (the io_uring floor and the peers) behaves as
// perf/compare.py assumes, before any of them is measured:
// - every message sent on /ws/publish reaches every /ws/broadcast connection, in order, with its
//   opcode (text or binary) and bytes intact, including 16- and 64-bit lengths, and not the
//   publisher itself;
// - a subscriber that stops reading for a while still gets every message, in order, afterwards
//   (the server queues and resumes short writes);
// - a message sent on /ws/group/A[,B…] reaches every member of A (the sender too), in order and
//   intact, and no connection outside A;
// - /ws/echo returns each message as sent; a ping gets a pong with its payload; a close gets a
//   close with the same code; /health/ready answers 200 and an unknown path 404.
//
// Run from the repository root after `npm ci --prefix perf/peers` and
// `cargo build --release -p ringhub-floor`:
//   node perf/peers/check.mjs [--floor target/release/ringhub-floor] [floor floor-coalesce bun uws ws]
// CHECK_ONLY=checkEcho (or another check's function name) runs one check. Exits non-zero if any
// check fails.

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const BUN = path.join(here, "node_modules/@oven/bun-linux-x64/bin/bun");

function floorBinary(argv) {
  const at = argv.indexOf("--floor");
  if (at >= 0) return path.resolve(argv[at + 1]);
  const built = ["release", "debug"].map((p) => path.join(root, "target", p, "ringhub-floor"));
  return built.find((p) => existsSync(p)) ?? built[0];
}

const argv = process.argv.slice(2);
const SERVERS = {
  floor: () => [floorBinary(argv), ["--port", "0"]],
  "floor-coalesce": () => [floorBinary(argv), ["--port", "0", "--coalesce"]],
  bun: () => [BUN, [path.join(here, "bun-server.js"), "--port", "0"]],
  uws: () => [process.execPath, [path.join(here, "uws-server.js"), "--port", "0"]],
  ws: () => [process.execPath, [path.join(here, "ws-server.mjs"), "--port", "0"]],
};
const positional = argv.filter((a, i) => !a.startsWith("--") && argv[i - 1] !== "--floor");
const chosen = positional.length ? positional : Object.keys(SERVERS);

function start(name) {
  const [command, args] = SERVERS[name]();
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  // The server's own stderr is shown only if a check fails.
  child.stderrText = "";
  child.stderr.on("data", (chunk) => { child.stderrText = (child.stderrText + chunk).slice(-4000); });
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`${name}: no "listening" line in 10 s`)), 10_000);
    child.on("error", reject);
    child.on("exit", (code) => reject(new Error(`${name}: exited with ${code} before listening`)));
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const match = /^listening (\S+)$/m.exec(out);
      if (match) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        resolve({ child, port: Number(match[1].split(":").pop()) });
      }
    });
  });
}

function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function connect(port, route) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${route}`, { perMessageDeflate: false });
  ws.received = [];
  ws.on("message", (data, isBinary) => ws.received.push({ data, isBinary }));
  return within(5000, `connect ${route}`, new Promise((resolve, reject) => {
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  }));
}

async function until(ms, what, done) {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function assertSame(got, want, what) {
  if (got.isBinary !== want.isBinary) {
    throw new Error(`${what}: binary=${got.isBinary}, want ${want.isBinary}`);
  }
  const bytes = Buffer.isBuffer(want.data) ? want.data : Buffer.from(want.data);
  if (!bytes.equals(got.data)) {
    throw new Error(`${what}: ${got.data.length} bytes differ from the ${bytes.length} sent`);
  }
}

// Messages of every length class, text and binary, each carrying its index.
function messages(count) {
  const sizes = [1070, 0, 125, 126, 65_535, 65_536, 70_000, 1070, 32_000];
  return Array.from({ length: count }, (_, i) => {
    const size = sizes[i % sizes.length];
    if (i % 2 === 0) {
      const head = `#${i} `;
      return { data: head + "x".repeat(Math.max(0, size - head.length)), isBinary: false };
    }
    return { data: randomBytes(size), isBinary: true };
  });
}

async function checkBroadcast(port) {
  const subscribers = await Promise.all(Array.from({ length: 50 }, () => connect(port, "/ws/broadcast")));
  const publisher = await connect(port, "/ws/publish");
  const sent = messages(200);
  for (const m of sent) publisher.send(m.data, { binary: m.isBinary });
  await until(15_000, "every subscriber gets every message", () =>
    subscribers.every((s) => s.received.length >= sent.length));
  subscribers.forEach((s, n) =>
    sent.forEach((m, i) => assertSame(s.received[i], m, `subscriber ${n} message ${i}`)));
  await new Promise((r) => setTimeout(r, 100));
  if (subscribers.some((s) => s.received.length !== sent.length)) throw new Error("extra messages");
  if (publisher.received.length) throw new Error("the publisher got its own messages");
  for (const ws of [...subscribers, publisher]) ws.terminate();
  return `50 subscribers × ${sent.length} messages of 0–70,000 B`;
}

async function checkSlowSubscriber(port) {
  const slow = await connect(port, "/ws/broadcast");
  const publisher = await connect(port, "/ws/publish");
  slow.pause();
  // Text messages must be valid UTF-8: hex is.
  const sent = Array.from({ length: 100 }, (_, i) =>
    i % 2 ? { data: randomBytes(32_000), isBinary: true } : { data: randomBytes(16_000).toString("hex"), isBinary: false });
  for (const m of sent) publisher.send(m.data, { binary: m.isBinary });
  await new Promise((r) => setTimeout(r, 1000));
  slow.resume();
  await until(15_000, "the paused subscriber catches up", () => slow.received.length >= sent.length)
    .catch((e) => { throw new Error(`${e.message} (${slow.received.length} of ${sent.length}, state ${slow.readyState})`); });
  sent.forEach((m, i) => assertSame(slow.received[i], m, `slow subscriber message ${i}`));
  slow.terminate();
  publisher.terminate();
  return "100 × 32,000 B to a subscriber paused for 1 s";
}

async function checkGroups(port) {
  const a = await Promise.all(Array.from({ length: 10 }, () => connect(port, "/ws/group/a")));
  // A member of b and a: sends to b, receives what either group gets.
  const both = await connect(port, "/ws/group/b,a");
  const onlyB = await connect(port, "/ws/group/b");
  const leaver = await connect(port, "/ws/group/a,b");
  leaver.terminate();
  const toA = messages(20);
  for (const m of toA) a[0].send(m.data, { binary: m.isBinary });
  await until(10_000, "every member of a gets every message", () =>
    [...a, both].every((s) => s.received.length >= toA.length));
  a.forEach((s, n) => toA.forEach((m, i) => assertSame(s.received[i], m, `member ${n} of a, message ${i}`)));
  const toB = { data: "to b", isBinary: false };
  both.send(toB.data);
  await until(10_000, "b's members get b's message", () =>
    onlyB.received.length >= 1 && both.received.length >= toA.length + 1);
  // The first message b's other member gets is b's: nothing sent to a reached it.
  assertSame(onlyB.received[0], toB, "b's only-b member");
  assertSame(both.received[toA.length], toB, "the member of both");
  for (const ws of [...a, both, onlyB]) ws.terminate();
  return `${toA.length} messages to a group of 11 (sender included), none outside it`;
}

async function checkEcho(port) {
  const ws = await connect(port, "/ws/echo");
  const sent = messages(18);
  for (const m of sent) ws.send(m.data, { binary: m.isBinary });
  await until(10_000, "every echo", () => ws.received.length >= sent.length);
  sent.forEach((m, i) => assertSame(ws.received[i], m, `echo ${i}`));

  const ping = randomBytes(16);
  const pong = new Promise((resolve) => ws.once("pong", resolve));
  ws.ping(ping);
  const got = await within(5000, "pong", pong);
  if (!ping.equals(got)) throw new Error("the pong does not carry the ping's payload");

  const closed = new Promise((resolve) => ws.once("close", (code) => resolve(code)));
  ws.close(4001, "bye");
  const code = await within(5000, "close reply", closed);
  if (code !== 4001) throw new Error(`close answered with ${code}, want 4001`);
  return `${sent.length} messages echoed, ping/pong, close 4001`;
}

async function checkHttp(port) {
  const ready = await fetch(`http://127.0.0.1:${port}/health/ready`);
  if (ready.status !== 200) throw new Error(`/health/ready answered ${ready.status}`);
  const status = await new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/nope`);
    ws.on("unexpected-response", (_, res) => { resolve(res.statusCode); ws.terminate(); });
    ws.on("open", () => { resolve(101); ws.terminate(); });
    ws.on("error", () => {});
  });
  if (status !== 404) throw new Error(`an unknown path answered ${status}, want 404`);
  return "/health/ready 200, unknown path 404";
}

let failed = 0;
for (const name of chosen) {
  if (!SERVERS[name]) {
    console.error(`unknown server ${name}; choose from ${Object.keys(SERVERS).join(", ")}`);
    process.exit(2);
  }
  let server;
  try {
    server = await start(name);
    const only = process.env.CHECK_ONLY;
    for (const check of [checkBroadcast, checkSlowSubscriber, checkGroups, checkEcho, checkHttp]) {
      if (only && check.name !== only) continue;
      const what = await within(30_000, check.name, check(server.port));
      console.log(`ok   ${name.padEnd(14)} ${check.name}: ${what}`);
    }
  } catch (error) {
    failed += 1;
    console.log(`FAIL ${name.padEnd(14)} ${error.message}`);
    if (server?.child.stderrText) console.log(`     ${name} stderr:\n${server.child.stderrText}`);
  } finally {
    server?.child.kill();
  }
}
process.exit(failed ? 1 : 0);
