// The official @microsoft/signalr client (10.x) behind a load balancer without sticky sessions:
// two ringhub instances sharing a cluster secret and a Redis backplane, reached through a TCP
// proxy that tests/no_sticky_sessions.rs runs (PROXY_URL). On its control port
// (PROXY_CONTROL_URL), `POST /cut` drops every proxied connection (the network blips) and
// `POST /switch` also sends every later connection to the other instance (the balancer picks
// another one).
import { test } from "node:test";
import assert from "node:assert/strict";
import { sleep } from "./support.mjs";
import * as signalR from "@microsoft/signalr";

const proxy = process.env.PROXY_URL;
const controlUrl = process.env.PROXY_CONTROL_URL;
assert.ok(proxy && controlUrl, "PROXY_URL and PROXY_CONTROL_URL must name the proxy");

function build() {
  return new signalR.HubConnectionBuilder()
    .withUrl(`${proxy}/hubs/chat`, { transport: signalR.HttpTransportType.WebSockets })
    .withStatefulReconnect()
    .withAutomaticReconnect([0, 200, 500, 1000, 2000])
    .configureLogging(signalR.LogLevel.None)
    .build();
}

async function control(what) {
  const response = await fetch(`${controlUrl}/${what}`, { method: "POST" });
  assert.equal(response.status, 200);
}

/// Resolves with what `register` reports, or rejects after `ms`.
function within(ms, register) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nothing within ${ms} ms`)), ms);
    register((value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

test("a dropped socket that reconnects to the same instance resumes the same connection", async () => {
  const connection = build();
  const reconnected = [];
  connection.onreconnected((id) => reconnected.push(id));
  await connection.start();
  const id = connection.connectionId;
  assert.equal(await connection.invoke("WhoAmI"), id);
  await control("cut");
  // The stateful resume is invisible to the application: same id, no reconnect event.
  await sleep(300);
  assert.equal(await connection.invoke("Echo", "after the blip"), "after the blip");
  assert.equal(await connection.invoke("WhoAmI"), id);
  assert.equal(connection.connectionId, id);
  assert.deepEqual(reconnected, []);
  await connection.stop();
});

test("a resume that lands on the other instance falls back to a fresh connection", async () => {
  const connection = build();
  await connection.start();
  const id = connection.connectionId;
  assert.equal(await connection.invoke("WhoAmI"), id);
  const fresh = within(10000, (done) => connection.onreconnected(done));
  // The balancer now sends everything to the other instance, which answers the resume 404.
  await control("switch");
  const newId = await fresh;
  assert.notEqual(newId, id);
  assert.equal(connection.state, signalR.HubConnectionState.Connected);
  assert.equal(await connection.invoke("WhoAmI"), newId);
  assert.equal(await connection.invoke("Echo", "fresh"), "fresh");
  await connection.stop();
});
