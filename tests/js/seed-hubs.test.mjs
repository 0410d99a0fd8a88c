// The official @microsoft/signalr client (10.x) against ringhub's built-in seed hubs
// (NavigationState, Health, connection limits), over JSON and MessagePack. Run by
// tests/js_client.rs, which starts a two-shard server and passes:
//   HUB_BASE_URL, HUB_VIRTUAL_KEY, HUB_VIRTUAL_KEY_2 (another key), HUB_LIMITED_KEY (a key used
//   only by the limit test), HUB_PER_KEY_LIMIT (limits.max_connections_per_key).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const base = process.env.HUB_BASE_URL;
assert.ok(base, "HUB_BASE_URL must be set (tests/js_client.rs starts the server)");
const key = process.env.HUB_VIRTUAL_KEY;
const otherKey = process.env.HUB_VIRTUAL_KEY_2;
const limitedKey = process.env.HUB_LIMITED_KEY;
const perKeyLimit = Number(process.env.HUB_PER_KEY_LIMIT);

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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

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
    assert.match(snapshot.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const [one, two] = await pushed;
    assert.equal(one.status, "Healthy");
    assert.ok(two.uptimeSeconds >= one.uptimeSeconds);
    await Promise.all([health.stop(), watcher.stop()]);
  });
}

test("NavigationState, like every virtual-key hub, refuses a connection without a key", async () => {
  const anonymous = build("/hubs/navigation-state", "json", undefined);
  await assert.rejects(anonymous.start(), /401/);
});

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
