// The official @microsoft/signalr client (10.x) against three ringhub instances sharing one
// Redis backplane (two shards each). Run by tests/backplane.rs, which starts redis-server and the
// instances and passes HUB_URLS (comma-separated base URLs), HUB_VIRTUAL_KEY (+ HUB_KEY_ID) and
// HUB_SERVER_KEY.
import { test } from "node:test";
import assert from "node:assert/strict";
import { eventually, record, sleep } from "./support.mjs";
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const urls = (process.env.HUB_URLS ?? "").split(",").filter(Boolean);
assert.equal(urls.length, 3, "HUB_URLS must name three instances");
const [A, B, C] = urls;
const key = process.env.HUB_VIRTUAL_KEY;
const keyId = process.env.HUB_KEY_ID;
const serverKey = process.env.HUB_SERVER_KEY;

const protocols = {
  json: () => new signalR.JsonHubProtocol(),
  messagepack: () => new MessagePackHubProtocol(),
};

function build(base, path, protocol = "json", token = key) {
  return new signalR.HubConnectionBuilder()
    .withUrl(`${base}${path}`, {
      transport: signalR.HttpTransportType.WebSockets,
      accessTokenFactory: token === undefined ? undefined : () => token,
    })
    .withHubProtocol(protocols[protocol]())
    .configureLogging(signalR.LogLevel.None)
    .build();
}

async function rest(base, method, path, body) {
  const response = await fetch(`${base}/api/hubs/${path}`, {
    method,
    headers: { Authorization: `Bearer ${serverKey}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return response.status;
}

test("a REST send to a group reaches its members on every instance, in both protocols, and nobody else", async () => {
  const task = "task_backplane_group";
  const members = [build(A, "/hubs/image-generation", "json"), build(B, "/hubs/image-generation", "messagepack"), build(C, "/hubs/image-generation", "json")];
  const bystander = build(B, "/hubs/image-generation", "messagepack");
  await Promise.all([...members, bystander].map((c) => c.start()));
  await Promise.all(members.map((c) => c.invoke("SubscribeToTask", task)));
  const heard = members.map((c) => record(c, "TaskLog"));
  const strayed = record(bystander, "TaskLog");
  for (let i = 0; i < 20; i++) {
    assert.equal(await rest(C, "POST", `image-generation/groups/image-${task}/:send`, {
      target: "TaskLog",
      arguments: [{ taskId: task, step: i, nested: { list: [1, "two", null] } }],
    }), 202);
  }
  await eventually(() => heard.forEach((h) => assert.equal(h.length, 20)));
  for (const h of heard) {
    assert.deepEqual(h.map((e) => e.step), Array.from({ length: 20 }, (_, i) => i), "in order");
    assert.deepEqual(h[0].nested, { list: [1, "two", null] });
  }
  await sleep(100);
  assert.equal(strayed.length, 0);
  await Promise.all([...members, bystander].map((c) => c.stop()));
});

test("a broadcast reaches every connection of the hub on every instance", async () => {
  const connections = [A, B, C].map((base, i) => build(base, "/hubs/notifications", i % 2 ? "messagepack" : "json"));
  await Promise.all(connections.map((c) => c.start()));
  const heard = connections.map((c) => record(c, "SystemAlert"));
  assert.equal(await rest(B, "POST", "notifications/:send", { target: "SystemAlert", arguments: ["maintenance"] }), 202);
  await eventually(() => heard.forEach((h) => assert.deepEqual(h, ["maintenance"])));
  await Promise.all(connections.map((c) => c.stop()));
});

test("a user send reaches the key's connections on every instance", async () => {
  const mine = [build(A, "/hubs/notifications"), build(C, "/hubs/notifications", "messagepack")];
  await Promise.all(mine.map((c) => c.start()));
  const heard = mine.map((c) => record(c, "Notify"));
  assert.equal(await rest(B, "POST", `notifications/users/${keyId}/:send`, { target: "Notify", arguments: [{ to: "you" }] }), 202);
  await eventually(() => heard.forEach((h) => assert.deepEqual(h, [{ to: "you" }])));
  await Promise.all(mine.map((c) => c.stop()));
});

test("a send to one connection reaches it on another instance, and only it", async () => {
  const target = build(B, "/hubs/notifications");
  const other = build(B, "/hubs/notifications");
  await Promise.all([target.start(), other.start()]);
  const heard = record(target, "Direct");
  const strayed = record(other, "Direct");
  assert.equal(await rest(A, "POST", `notifications/connections/${target.connectionId}/:send`, { target: "Direct", arguments: [1] }), 202);
  await eventually(() => assert.deepEqual(heard, [1]));
  await sleep(100);
  assert.equal(strayed.length, 0);
  await Promise.all([target.stop(), other.stop()]);
});

test("adding and removing a connection on another instance to a group is acknowledged and takes effect", async () => {
  const member = build(C, "/hubs/notifications", "messagepack");
  await member.start();
  const heard = record(member, "Ops");
  assert.equal(await rest(A, "PUT", `notifications/groups/ops/connections/${member.connectionId}`), 200);
  assert.equal(await rest(B, "POST", "notifications/groups/ops/:send", { target: "Ops", arguments: ["first"] }), 202);
  await eventually(() => assert.deepEqual(heard, ["first"]));
  assert.equal(await rest(A, "DELETE", `notifications/groups/ops/connections/${member.connectionId}`), 200);
  assert.equal(await rest(B, "POST", "notifications/groups/ops/:send", { target: "Ops", arguments: ["second"] }), 202);
  await sleep(200);
  assert.deepEqual(heard, ["first"]);
  // A connection that exists nowhere is not acknowledged.
  assert.equal(await rest(A, "PUT", "notifications/groups/ops/connections/AAAAAAAAAAAAAAAAAAAAAA"), 404);
  await member.stop();
});

test("a hub method's group send crosses instances", async () => {
  const [a, b, c] = [A, B, C].map((base) => build(base, "/hubs/diagnostics", "json", undefined));
  await Promise.all([a, b, c].map((x) => x.start()));
  await a.invoke("JoinGroup", "room");
  await b.invoke("JoinGroup", "room");
  const heard = [a, b].map((x) => record(x, "Send"));
  const strayed = record(c, "Send");
  await c.invoke("SendToGroup", "room", "hello from C");
  await eventually(() => heard.forEach((h) => assert.deepEqual(h, ["hello from C"])));
  await sleep(100);
  assert.equal(strayed.length, 0);
  await Promise.all([a, b, c].map((x) => x.stop()));
});

test("NavigationState follows a key across instances: updates, the state on connect, and the getter", async () => {
  const [a, c] = [build(A, "/hubs/navigation-state"), build(C, "/hubs/navigation-state", "messagepack")];
  await Promise.all([a.start(), c.start()]);
  const heard = [a, c].map((x) => record(x, "NavigationUpdated"));
  const state = { view: "conversation-detail", conversationId: "123" };
  await a.invoke("UpdateNavigation", state);
  const expected = { ...state, currentView: "conversation-detail" };
  await eventually(() => heard.forEach((h) => assert.deepEqual(h, [expected])));
  assert.deepEqual(await a.invoke("GetNavigationState"), expected);
  assert.deepEqual(await c.invoke("GetNavigationState"), expected);
  const late = build(B, "/hubs/navigation-state");
  const initial = new Promise((resolve) => late.on("NavigationUpdated", resolve));
  await late.start();
  assert.deepEqual(await initial, expected);
  await Promise.all([a.stop(), c.stop(), late.stop()]);
});

test("a streamed response posted through one instance reaches its subscribers on the others, in order", async () => {
  const [b, c] = [build(B, "/hubs/content-generation"), build(C, "/hubs/content-generation", "messagepack")];
  await Promise.all([b.start(), c.start()]);
  const collect = (x) =>
    new Promise((resolve, reject) => {
      const items = [];
      x.stream("StreamResponse", "req-backplane").subscribe({
        next: (item) => items.push(item),
        complete: () => resolve(items),
        error: reject,
      });
    });
  const streams = [collect(b), collect(c)];
  await sleep(100);
  for (let i = 0; i < 30; i++) {
    assert.equal(await rest(A, "POST", "content-generation/streams/response-req-backplane/:item", { item: { delta: i } }), 202);
  }
  assert.equal(await rest(A, "POST", "content-generation/streams/response-req-backplane/:complete"), 202);
  for (const items of await Promise.all(streams)) {
    assert.deepEqual(items.map((x) => x.delta), Array.from({ length: 30 }, (_, i) => i));
  }
  await Promise.all([b.stop(), c.stop()]);
});

test("existence checks and closes reach connections on other instances", async () => {
  const member = build(C, "/hubs/notifications");
  await member.start();
  assert.equal(await rest(A, "PUT", `notifications/groups/watchers/connections/${member.connectionId}`), 200);
  assert.equal(await rest(A, "HEAD", `notifications/connections/${member.connectionId}`), 200);
  assert.equal(await rest(A, "HEAD", "notifications/connections/AAAAAAAAAAAAAAAAAAAAAA"), 404);
  assert.equal(await rest(B, "HEAD", "notifications/groups/watchers"), 200);
  assert.equal(await rest(B, "HEAD", "notifications/groups/nobody-here"), 404);
  assert.equal(await rest(A, "HEAD", `notifications/users/${keyId}`), 200);
  const closed = new Promise((resolve) => member.onclose(resolve));
  assert.equal(await rest(A, "DELETE", `notifications/connections/${member.connectionId}?reason=maintenance`), 200);
  const error = await closed;
  assert.match(String(error), /maintenance/);
  assert.equal(await rest(A, "DELETE", "notifications/connections/AAAAAAAAAAAAAAAAAAAAAA"), 404);
});
