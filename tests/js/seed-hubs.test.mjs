// The official @microsoft/signalr client (10.x) against ringhub's built-in seed hubs
// (NavigationState, Health, connection limits), over JSON and MessagePack. Run by
// tests/js_client.rs, which starts a two-shard server and passes:
//   HUB_BASE_URL, HUB_VIRTUAL_KEY, HUB_VIRTUAL_KEY_2 (another key), HUB_LIMITED_KEY (a key used
//   only by the limit test), HUB_PER_KEY_LIMIT (limits.max_connections_per_key).
import { test } from "node:test";
import assert from "node:assert/strict";
import { eventually, record, sleep } from "./support.mjs";
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const base = process.env.HUB_BASE_URL;
assert.ok(base, "HUB_BASE_URL must be set (tests/js_client.rs starts the server)");
const key = process.env.HUB_VIRTUAL_KEY;
const otherKey = process.env.HUB_VIRTUAL_KEY_2;
const limitedKey = process.env.HUB_LIMITED_KEY;
const perKeyLimit = Number(process.env.HUB_PER_KEY_LIMIT);
const serverKey = process.env.HUB_SERVER_KEY;
const adminKey = process.env.HUB_ADMIN_KEY;
const keyId = process.env.HUB_VIRTUAL_KEY_ID;

const protocols = {
  json: () => new signalR.JsonHubProtocol(),
  messagepack: () => new MessagePackHubProtocol(),
};

function build(path, protocol, token, options = {}) {
  return new signalR.HubConnectionBuilder()
    .withUrl(`${base}${path}`, {
      transport: signalR.HttpTransportType.WebSockets,
      accessTokenFactory: token === undefined ? undefined : () => token,
      ...options,
    })
    .withHubProtocol(protocols[protocol]())
    .configureLogging(signalR.LogLevel.None)
    .build();
}

/// Resolves with the next `count` arguments of event `name`, or rejects after `ms`.
function next(connection, name, count = 1, ms = 5000) {
  return new Promise((resolve, reject) => {
    const got = [];
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${name} (${got.length}/${count})`)), ms);
    const handler = (arg) => {
      got.push(arg);
      if (got.length === count) {
        clearTimeout(timer);
        connection.off(name, handler);
        resolve(count === 1 ? got[0] : got);
      }
    };
    connection.on(name, handler);
  });
}

for (const protocol of Object.keys(protocols)) {
  test(`${protocol}: NavigationState sends an update to every connection of the key, on any shard, with currentView`, async () => {
    // Several connections of one key land on both shards (tokens spread across shards).
    const connections = [0, 1, 2, 3].map(() => build("/hubs/navigation-state", protocol, key));
    const stranger = build("/hubs/navigation-state", protocol, otherKey);
    await Promise.all([...connections, stranger].map((c) => c.start()));
    let strangerGot = 0;
    stranger.on("NavigationUpdated", () => strangerGot++);
    const state = { view: `conversation-detail-${protocol}`, conversationId: "123" };
    const updates = connections.map((c) => next(c, "NavigationUpdated"));
    await connections[0].invoke("UpdateNavigation", state);
    for (const update of await Promise.all(updates)) {
      assert.deepEqual(update, { ...state, currentView: state.view });
    }
    assert.deepEqual(await connections[3].invoke("GetNavigationState"), {
      ...state,
      currentView: state.view,
    });
    await sleep(100);
    assert.equal(strangerGot, 0, "another key's connection hears nothing");
    assert.equal(await stranger.invoke("GetNavigationState"), null);
    await Promise.all([...connections, stranger].map((c) => c.stop()));
  });

  test(`${protocol}: a new NavigationState connection receives the current state right after connecting`, async () => {
    const first = build("/hubs/navigation-state", protocol, key);
    await first.start();
    const state = { view: `settings-${protocol}`, tab: 2 };
    await first.invoke("UpdateNavigation", state);
    // Eight fresh connections: some are served by the other shard, which has the state too.
    for (let i = 0; i < 8; i++) {
      const late = build("/hubs/navigation-state", protocol, key);
      const initial = next(late, "NavigationUpdated");
      await late.start();
      assert.deepEqual(await initial, { ...state, currentView: state.view });
      await late.stop();
    }
    await first.stop();
  });

  test(`${protocol}: the last of concurrent updates from two shards wins everywhere`, async () => {
    const a = build("/hubs/navigation-state", protocol, key);
    const b = build("/hubs/navigation-state", protocol, key);
    await Promise.all([a.start(), b.start()]);
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).invoke("UpdateNavigation", { view: `v${i}` })),
    );
    await a.invoke("UpdateNavigation", { view: "final" });
    await sleep(50);
    for (const c of [a, b]) {
      assert.equal((await c.invoke("GetNavigationState")).currentView, "final");
    }
    await Promise.all([a.stop(), b.stop()]);
  });

  test(`${protocol}: Health is anonymous, answers GetHealth and pushes HealthStatus periodically`, async () => {
    const watcher = build("/hubs/navigation-state", protocol, key);
    await watcher.start();
    const health = build("/hubs/health", protocol, undefined);
    const pushed = next(health, "HealthStatus", 2);
    await health.start();
    const snapshot = await health.invoke("GetHealth");
    assert.equal(snapshot.status, "Healthy");
    assert.equal(typeof snapshot.version, "string");
    assert.ok(snapshot.uptimeSeconds >= 0);
    assert.ok(snapshot.connections >= 2, JSON.stringify(snapshot));
    assert.ok(snapshot.connectionsByHub["navigation-state"] >= 1, JSON.stringify(snapshot));
    assert.ok(snapshot.connectionsByHub.health >= 1, JSON.stringify(snapshot));
    assert.equal(typeof snapshot.messagesPerSecond, "number");
    assert.equal(snapshot.backplane.state, "up");
    assert.match(snapshot.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$/);
    const [one, two] = await pushed;
    assert.equal(one.status, "Healthy");
    assert.ok(two.uptimeSeconds >= one.uptimeSeconds);
    await Promise.all([health.stop(), watcher.stop()]);
  });
}

for (const protocol of Object.keys(protocols)) {
  test(`${protocol}: the auth matrix of the seed hubs`, async () => {
    const refused = async (path, token, status) => {
      const connection = build(path, protocol, token);
      await assert.rejects(connection.start(), new RegExp(String(status)), `${path} with ${token}`);
    };
    for (const path of ["/hubs/navigation-state", "/hubs/image-generation", "/hubs/notifications"]) {
      await refused(path, undefined, 401); // no token
      await refused(path, "condt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 401); // unknown key
      await refused(path, "not-a-key", 401); // malformed
      await refused(path, process.env.HUB_DISABLED_KEY, 401);
      await refused(path, process.env.HUB_EXPIRED_KEY, 401);
    }
    await refused("/hubs/admin", key, 403); // a virtual key on the Admin hub
    for (const [path, token] of [
      ["/hubs/admin", adminKey],
      ["/hubs/navigation-state", adminKey], // admin keys go wherever virtual keys go
      ["/hubs/health", undefined], // anonymous
      ["/hubs/health", key],
    ]) {
      const connection = build(path, protocol, token);
      await connection.start();
      await connection.stop();
    }
  });
}

test("a key at its connection limit gets 429 from negotiate and is admitted again after one leaves", async () => {
  assert.ok(perKeyLimit > 0, "HUB_PER_KEY_LIMIT must be set");
  const held = [];
  for (let i = 0; i < perKeyLimit; i++) {
    const c = build("/hubs/image-generation", "json", limitedKey);
    await c.start();
    held.push(c);
  }
  const response = await fetch(`${base}/hubs/image-generation/negotiate?negotiateVersion=1`, {
    method: "POST",
    headers: { Authorization: `Bearer ${limitedKey}` },
  });
  assert.equal(response.status, 429);
  assert.match((await response.json()).error, /connection limit/);
  const over = build("/hubs/image-generation", "json", limitedKey);
  await assert.rejects(over.start(), /429/);
  // skipNegotiation goes straight to the upgrade, which enforces the same limit.
  const direct = build("/hubs/image-generation", "json", limitedKey, { skipNegotiation: true });
  await assert.rejects(direct.start());
  // Other keys are not affected.
  const other = build("/hubs/image-generation", "json", otherKey);
  await other.start();
  await other.stop();
  await held.pop().stop();
  await sleep(50);
  const again = build("/hubs/image-generation", "json", limitedKey);
  await again.start();
  await Promise.all([again, ...held].map((c) => c.stop()));
});

// ---- Events pushed by backends through the REST publish API (server key) ----

/// POSTs `{target, arguments}` to `/api/hubs/{hub}/{path}:send` with the server key.
async function publish(hub, path, target, args) {
  const response = await fetch(`${base}/api/hubs/${hub}/${path}:send`, {
    method: "POST",
    headers: { Authorization: `Bearer ${serverKey}`, "Content-Type": "application/json" },
    body: JSON.stringify({ target, arguments: args }),
  });
  assert.equal(response.status, 202, await response.text());
}

for (const protocol of Object.keys(protocols)) {
  for (const [hub, group, event] of [
    ["image-generation", "image", "ImageGenerationProgress"],
    ["video-generation", "video", "VideoGenerationCompleted"],
  ]) {
    test(`${protocol}: ${hub} events reach only the task's subscribers, on both shards`, async () => {
      const task = `task_${protocol}_${hub}`;
      const subscribers = [0, 1, 2].map(() => build(`/hubs/${hub}`, protocol, key));
      const bystander = build(`/hubs/${hub}`, protocol, key);
      await Promise.all([...subscribers, bystander].map((c) => c.start()));
      await Promise.all(subscribers.map((c) => c.invoke("SubscribeToTask", task)));
      const heard = subscribers.map((c) => record(c, event));
      const strayed = record(bystander, event);
      const payload = { taskId: task, status: "running", progressPercentage: 40 };
      await publish(hub, `groups/${group}-${task}/`, event, [payload]);
      await eventually(() => heard.forEach((h) => assert.deepEqual(h, [payload])));
      // Unsubscribed members hear nothing more.
      await subscribers[0].invoke("UnsubscribeFromTask", task);
      await publish(hub, `groups/${group}-${task}/`, event, [{ ...payload, progressPercentage: 50 }]);
      await eventually(() => assert.equal(heard[1].length, 2));
      await sleep(50);
      assert.equal(heard[0].length, 1);
      assert.equal(strayed.length, 0);
      await Promise.all([...subscribers, bystander].map((c) => c.stop()));
    });
  }

  test(`${protocol}: Notifications reach the key's connections and everyone, never another key`, async () => {
    const mine = build("/hubs/notifications", protocol, key);
    const theirs = build("/hubs/notifications", protocol, otherKey);
    await Promise.all([mine.start(), theirs.start()]);
    const mineGot = record(mine, "SystemAlert");
    const theirsGot = record(theirs, "SystemAlert");
    await publish("notifications", `groups/vkey-${keyId}/`, "SystemAlert", [{ message: "yours" }]);
    await publish("notifications", "", "SystemAlert", [{ message: "everyone" }]);
    await eventually(() => assert.deepEqual(mineGot, [{ message: "yours" }, { message: "everyone" }]));
    await eventually(() => assert.deepEqual(theirsGot, [{ message: "everyone" }]));
    await Promise.all([mine.stop(), theirs.stop()]);
  });

  test(`${protocol}: Admin connections are in 'admin' and subscribe to a key's admin group`, async () => {
    const admin = build("/hubs/admin", protocol, adminKey);
    await admin.start();
    await admin.invoke("SubscribeToVirtualKey", String(keyId));
    const got = record(admin, "VirtualKeyUpdate");
    await publish("admin", "groups/admin/", "VirtualKeyUpdate", [{ to: "all admins" }]);
    await publish("admin", `groups/admin-vkey-${keyId}/`, "VirtualKeyUpdate", [{ to: "key watchers" }]);
    await eventually(() => assert.deepEqual(got, [{ to: "all admins" }, { to: "key watchers" }]));
    await admin.stop();
  });

  test(`${protocol}: ContentGeneration subscribers get both the typed and the unified group`, async () => {
    const client = build("/hubs/content-generation", protocol, key);
    await client.start();
    await client.invoke("SubscribeToTask", "t9", "image");
    await client.invoke("SubscribeToAllTasks");
    await assert.rejects(client.invoke("SubscribeToTask", "t9", "audio"), /Invalid content type/);
    const got = record(client, "ContentGenerationProgress");
    for (const group of ["image-t9", "content-t9", `vkey-${keyId}-content`]) {
      await publish("content-generation", `groups/${group}/`, "ContentGenerationProgress", [{ group }]);
    }
    await eventually(() => assert.equal(got.length, 3));
    await client.stop();
  });

  test(`${protocol}: a burst of 1000 progress events is conflated to the rate and ends with the final state`, async (t) => {
    const task = `burst_${protocol}`;
    const client = build("/hubs/image-generation", protocol, key);
    await client.start();
    await client.invoke("SubscribeToTask", task);
    const got = record(client, "ImageProgress");
    const started = Date.now();
    for (let i = 0; i < 1000; i++) {
      await publish("image-generation", `groups/image-${task}/`, "ImageProgress", [
        { taskId: task, percentage: i / 10, status: "running" },
      ]);
    }
    await publish("image-generation", `groups/image-${task}/`, "ImageProgress", [
      { taskId: task, percentage: 100, status: "completed" },
    ]);
    await eventually(() => assert.equal(got.at(-1)?.status, "completed"));
    const seconds = (Date.now() - started) / 1000;
    await sleep(300);
    const rate = Number(process.env.HUB_CONFLATE_RATE);
    // At most one per interval (plus the first and the final), never a backlog.
    assert.ok(got.length <= Math.ceil(seconds * rate) + 2, `${got.length} events in ${seconds}s`);
    assert.equal(got.at(-1).status, "completed", "nothing stale follows the final");
    t.diagnostic(`1001 events published in ${seconds.toFixed(2)} s arrived as ${got.length}`);
    for (let i = 1; i < got.length; i++) {
      assert.ok(got[i].percentage >= got[i - 1].percentage, "never out of order");
    }
    await client.stop();
  });
}

import net from "node:net";
import crypto from "node:crypto";

/// A raw SignalR JSON client that subscribes to a task and then stops reading its socket.
async function stalledSubscriber(path, token, task) {
  const url = new URL(`${base}${path}`);
  const socket = net.connect(Number(url.port), url.hostname);
  await new Promise((resolve, reject) => socket.once("connect", resolve).once("error", reject));
  const frame = (text) => {
    const payload = Buffer.from(text);
    const mask = crypto.randomBytes(4);
    const header = payload.length < 126
      ? Buffer.from([0x81, 0x80 | payload.length])
      : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
    const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
    return Buffer.concat([header, mask, masked]);
  };
  socket.write(
    `GET ${url.pathname}?access_token=${token} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${crypto.randomBytes(16).toString("base64")}\r\n` +
      "Sec-WebSocket-Version: 13\r\n\r\n",
  );
  let seen = "";
  await new Promise((resolve) => {
    const onData = (chunk) => {
      seen += chunk.toString("latin1");
      if (seen.includes("\x1e")) {
        socket.off("data", onData);
        resolve();
      }
    };
    socket.on("data", onData);
    socket.write(frame('{"protocol":"json","version":1}\x1e'));
  });
  const subscribed = new Promise((resolve) => {
    const onData = (chunk) => {
      if (chunk.toString("latin1").includes('"invocationId":"1"')) {
        socket.off("data", onData);
        resolve();
      }
    };
    socket.on("data", onData);
  });
  socket.write(frame(`{"type":1,"invocationId":"1","target":"SubscribeToTask","arguments":["${task}"]}\x1e`));
  await subscribed;
  socket.pause(); // From here on nothing is read: the kernel buffers fill, then ringhub's queue.
  // Reading again later drains what was buffered; a socket ringhub gave up on then ends.
  const drain = (ms) =>
    new Promise((resolve) => {
      let bytes = 0;
      const timer = setTimeout(() => resolve({ ended: false, bytes }), ms);
      socket.on("data", (chunk) => (bytes += chunk.length));
      socket.once("close", () => {
        clearTimeout(timer);
        resolve({ ended: true, bytes });
      });
      socket.resume();
    });
  return { socket, drain };
}

for (const protocol of Object.keys(protocols)) {
  test(`${protocol}: a stalled subscriber is closed while a fast one on the same group receives everything`, async () => {
    const task = `slow_${protocol}`;
    const fast = build("/hubs/image-generation", protocol, key);
    await fast.start();
    await fast.invoke("SubscribeToTask", task);
    const got = record(fast, "ImageGenerationCompleted");
    const slow = await stalledSubscriber("/hubs/image-generation", otherKey, task);
    const blob = "x".repeat(16 * 1024);
    const total = 600; // ~10 MB: more than the socket buffers and the 1 MiB queue bound.
    for (let i = 0; i < total; i++) {
      await publish("image-generation", `groups/image-${task}/`, "ImageGenerationCompleted", [{ i, blob }]);
    }
    await eventually(() => assert.equal(got.length, total), 20000);
    assert.deepEqual(got.map((g) => g.i), Array.from({ length: total }, (_, i) => i));
    // ringhub gives up on the stalled socket (queue over signalr.max_outbound while its write
    // is blocked, or a write stalled past websocket.send_timeout).
    await sleep(1000);
    const { ended, bytes } = await slow.drain(15000);
    assert.ok(ended, "the stalled subscriber was closed by the server");
    assert.ok(bytes < total * blob.length, `it did not get everything (${bytes} bytes)`);
    slow.socket.destroy();
    await fast.stop();
  });
}
