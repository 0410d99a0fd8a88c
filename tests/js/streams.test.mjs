// Streamed responses with the official @microsoft/signalr client (10.x), over JSON and
// MessagePack: ContentGeneration's `StreamResponse(requestId)` streams what a backend posts to
// `POST /api/hubs/content-generation/streams/response-{requestId}/:item|:complete|:error`.
// Run by tests/js_client.rs, which starts a two-shard server and passes:
//   HUB_BASE_URL, HUB_VIRTUAL_KEY, HUB_SERVER_KEY, HUB_STREAM_WINDOW_MS
//   (signalr.stream_backlog_window, short so the suite can outwait it).
import { test } from "node:test";
import assert from "node:assert/strict";
import { eventually, sleep } from "./support.mjs";
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const base = process.env.HUB_BASE_URL;
assert.ok(base, "HUB_BASE_URL must be set (tests/js_client.rs starts the server)");
const key = process.env.HUB_VIRTUAL_KEY;
const serverKey = process.env.HUB_SERVER_KEY;
const windowMs = Number(process.env.HUB_STREAM_WINDOW_MS);
assert.ok(windowMs > 0, "HUB_STREAM_WINDOW_MS must be set");

const protocols = {
  json: () => new signalR.JsonHubProtocol(),
  messagepack: () => new MessagePackHubProtocol(),
};

async function connect(protocol, count = 1) {
  const connections = Array.from({ length: count }, () =>
    new signalR.HubConnectionBuilder()
      .withUrl(`${base}/hubs/content-generation`, {
        transport: signalR.HttpTransportType.WebSockets,
        accessTokenFactory: () => key,
      })
      .withHubProtocol(protocols[protocol]())
      .configureLogging(signalR.LogLevel.None)
      .build(),
  );
  await Promise.all(connections.map((c) => c.start()));
  return connections;
}

/// POSTs to the request's stream key with the server key; `body` is JSON-encoded unless a
/// string.
async function post(requestId, action, body) {
  const path = `streams/response-${encodeURIComponent(requestId)}/:${action}`;
  const response = await fetch(`${base}/api/hubs/content-generation/${path}`, {
    method: "POST",
    headers: { Authorization: `Bearer ${serverKey}`, "Content-Type": "application/json" },
    body: body === undefined ? "" : typeof body === "string" ? body : JSON.stringify(body),
  });
  assert.equal(response.status, 202, await response.text());
}

const item = (requestId, value) => post(requestId, "item", { item: value });

/// Streams `StreamResponse(requestId)`: the items so far, a promise of all of them (resolved
/// by the Completion, rejected by an error), and the subscription.
function follow(connection, requestId) {
  const items = [];
  let subscription;
  const done = new Promise((resolve, reject) => {
    subscription = connection.stream("StreamResponse", requestId).subscribe({
      next: (value) => items.push(value),
      complete: () => resolve(items),
      error: reject,
    });
  });
  done.catch(() => {});
  return { items, done, subscription };
}

const chunk = (n) => ({ delta: `token-${n} `, index: n });

for (const protocol of Object.keys(protocols)) {
  test(`${protocol}: chunks posted before and after subscribing arrive in order, then the completion`, async () => {
    const id = `order-${protocol}`;
    const [client] = await connect(protocol);
    await item(id, chunk(0));
    await item(id, chunk(1));
    const stream = follow(client, id);
    // The backlog arrives first; once it did, the subscription is in place.
    await eventually(() => assert.equal(stream.items.length, 2));
    for (let n = 2; n < 60; n++) await item(id, chunk(n));
    await post(id, "complete");
    const items = await stream.done;
    assert.deepEqual(items, Array.from({ length: 60 }, (_, n) => chunk(n)));
    await client.stop();
  });

  test(`${protocol}: :error rejects the client's stream with the text`, async () => {
    const id = `error-${protocol}`;
    const [client] = await connect(protocol);
    const stream = follow(client, id);
    await item(id, "partial");
    await eventually(() => assert.deepEqual(stream.items, ["partial"]));
    await post(id, "error", { error: "The model is overloaded" });
    await assert.rejects(stream.done, (error) => error.message === "The model is overloaded");
    // The connection is fine afterwards.
    const again = follow(client, `${id}-after`);
    await item(`${id}-after`, null);
    await post(`${id}-after`, "complete", {});
    assert.deepEqual(await again.done, [null]);
    await client.stop();
  });

  test(`${protocol}: every subscriber, on either shard, gets every chunk`, async () => {
    const id = `fanout-${protocol}`;
    // Six connections land on both shards (tokens spread across them).
    const clients = await connect(protocol, 6);
    await item(id, chunk(0));
    const streams = clients.map((c) => follow(c, id));
    await eventually(() => streams.forEach((s) => assert.equal(s.items.length, 1)));
    for (let n = 1; n < 20; n++) await item(id, chunk(n));
    await post(id, "complete");
    const expected = Array.from({ length: 20 }, (_, n) => chunk(n));
    for (const items of await Promise.all(streams.map((s) => s.done))) {
      assert.deepEqual(items, expected);
    }
    await Promise.all(clients.map((c) => c.stop()));
  });

  test(`${protocol}: disposing a subscription stops delivery to that client only`, async () => {
    const id = `cancel-${protocol}`;
    const [quitter, stayer] = await connect(protocol, 2);
    const left = follow(quitter, id);
    const stays = follow(stayer, id);
    await item(id, 1);
    await eventually(() => [left, stays].forEach((s) => assert.deepEqual(s.items, [1])));
    left.subscription.dispose();
    await sleep(100);
    await item(id, 2);
    await item(id, 3);
    await post(id, "complete");
    assert.deepEqual(await stays.done, [1, 2, 3]);
    await sleep(100);
    assert.deepEqual(left.items, [1]);
    // The cancelled client can stream the key again, and gets the whole (ended) stream.
    assert.deepEqual(await follow(quitter, id).done, [1, 2, 3]);
    await Promise.all([quitter.stop(), stayer.stop()]);
  });

  test(`${protocol}: a client subscribing after :complete within the window gets everything`, async () => {
    const id = `late-${protocol}`;
    for (let n = 0; n < 5; n++) await item(id, chunk(n));
    await post(id, "complete");
    const clients = await connect(protocol, 4);
    for (const items of await Promise.all(clients.map((c) => follow(c, id).done))) {
      assert.deepEqual(items, Array.from({ length: 5 }, (_, n) => chunk(n)));
    }
    await Promise.all(clients.map((c) => c.stop()));
  });

  test(`${protocol}: after the window nothing is replayed`, async () => {
    const id = `expired-${protocol}`;
    await item(id, "old");
    await post(id, "complete");
    await sleep(windowMs + 500);
    const [client] = await connect(protocol);
    const stream = follow(client, id);
    await sleep(300);
    assert.deepEqual(stream.items, []);
    // The subscription waits for a new stream on the key.
    await item(id, "new");
    await post(id, "complete");
    assert.deepEqual(await stream.done, ["new"]);
    await client.stop();
  });
}

test("the stream API refuses bad bodies and hubs without streams", async () => {
  const call = (path, body) =>
    fetch(`${base}/api/hubs/${path}`, {
      method: "POST",
      headers: { Authorization: `Bearer ${serverKey}`, "Content-Type": "application/json" },
      body,
    });
  let response = await call("content-generation/streams/response-x/:item", '{"value":1}');
  assert.equal(response.status, 400);
  assert.match((await response.json()).error, /"item"/);
  response = await call("image-generation/streams/response-x/:item", '{"item":1}');
  assert.equal(response.status, 404);
  assert.equal((await response.json()).error, "hub 'image-generation' has no stream-key method");
});
