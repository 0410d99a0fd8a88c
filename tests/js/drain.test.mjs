// The official @microsoft/signalr client (10.x) behind a load balancer in front of two ringhub
// instances sharing one Redis backplane, while instance A is drained with SIGTERM. Run by
// tests/backplane.rs, which starts redis-server, instance A as a process (HUB_A, HUB_A_PID, with
// shutdown.drain_delay set) and instance B (HUB_B), and passes HUB_SERVER_KEY for REST sends.
//
// The balancer here is a TCP proxy that sends each new connection to A while A's
// /health/ready answers 200, and to B otherwise (as an L4 balancer with health checks does).
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { eventually, sleep } from "./support.mjs";
import * as signalR from "@microsoft/signalr";

const A = process.env.HUB_A;
const B = process.env.HUB_B;
const pidA = Number(process.env.HUB_A_PID);
const serverKey = process.env.HUB_SERVER_KEY;
assert.ok(A && B && pidA && serverKey, "HUB_A, HUB_B, HUB_A_PID and HUB_SERVER_KEY are required");

/// A TCP balancer: new connections go to A while A is ready, else to B. `routes` logs each
/// connection's backend; `sockets` holds the live pairs so a test can cut them.
async function balancer() {
  const a = new URL(A);
  const b = new URL(B);
  const state = { aReady: true, routes: [], pairs: new Set(), polling: true };
  (async () => {
    while (state.polling) {
      try {
        state.aReady = (await fetch(`${A}/health/ready`)).status === 200;
      } catch {
        state.aReady = false;
      }
      await sleep(25);
    }
  })();
  const server = net.createServer((client) => {
    const connect = (target, name, fallback) => {
      const upstream = net.connect(Number(target.port), target.hostname);
      upstream.once("connect", () => {
        state.routes.push(name);
        const pair = { client, upstream };
        state.pairs.add(pair);
        client.pipe(upstream);
        upstream.pipe(client);
        const end = () => {
          state.pairs.delete(pair);
          client.destroy();
          upstream.destroy();
        };
        client.on("error", end).on("close", end);
        upstream.on("error", end).on("close", end);
      });
      upstream.once("error", () => (fallback ? fallback() : client.destroy()));
    };
    if (state.aReady) connect(a, "A", () => connect(b, "B"));
    else connect(b, "B");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  state.url = `http://127.0.0.1:${server.address().port}`;
  state.close = () => {
    state.polling = false;
    for (const { client, upstream } of state.pairs) {
      client.destroy();
      upstream.destroy();
    }
    server.close();
  };
  return state;
}

async function restSend(base, group, target, args) {
  const response = await fetch(`${base}/api/hubs/chat/groups/${group}/:send`, {
    method: "POST",
    headers: { Authorization: `Bearer ${serverKey}`, "Content-Type": "application/json" },
    body: JSON.stringify({ target, arguments: args }),
  });
  return response.status;
}

test("a client drained off one instance reconnects through the balancer to another, losing nothing while connected", async () => {
  const lb = await balancer();
  const group = "drain-group";
  const connection = new signalR.HubConnectionBuilder()
    .withUrl(`${lb.url}/hubs/chat`, { transport: signalR.HttpTransportType.WebSockets })
    .withAutomaticReconnect([0, 100, 250, 500, 1000, 1000, 1000, 1000])
    .withStatefulReconnect()
    .configureLogging(signalR.LogLevel.None)
    .build();
  const ticks = [];
  const marks = []; // [tick count, event] as the connection changes
  connection.on("Tick", (n) => ticks.push(n));
  connection.onreconnecting(() => marks.push([ticks.length, "reconnecting"]));
  connection.onreconnected(async () => {
    marks.push([ticks.length, "reconnected"]);
    await connection.invoke("JoinGroup", group);
  });
  await connection.start();
  await connection.invoke("JoinGroup", group);
  assert.deepEqual(lb.routes, ["A", "A"], "negotiate and the WebSocket went to A");
  const firstId = connection.connectionId;

  // A publisher on B sends a numbered tick every 10 ms; they reach A's client through Redis.
  let next = 0;
  let publishing = true;
  const publisher = (async () => {
    while (publishing) {
      assert.equal(await restSend(B, group, "Tick", [next]), 202);
      next += 1;
      await sleep(10);
    }
  })();
  await eventually(() => assert.ok(ticks.length >= 20));

  // 1. The transport drops (the balancer cuts the TCP connection): stateful reconnect resumes
  //    the same connection on A and resends what was in flight, so no tick is lost.
  for (const { client } of lb.pairs) client.destroy();
  await eventually(() => assert.ok(ticks.length >= 60), 10000);
  assert.equal(connection.connectionId, firstId, "resumed, not a new connection");
  assert.equal(connection.state, signalR.HubConnectionState.Connected);
  assert.deepEqual(ticks, Array.from({ length: ticks.length }, (_, i) => i), "no tick lost or repeated across the transport drop");

  // 2. A is drained: it turns not-ready (the balancer stops choosing it), then tells the
  //    client Close{allowReconnect:true}; the client reconnects through the balancer to B.
  const beforeDrain = ticks.length;
  const marksBefore = marks.length;
  process.kill(pidA, "SIGTERM");
  const reconnected = () => marks.slice(marksBefore).find(([, e]) => e === "reconnected");
  await eventually(() => assert.ok(reconnected()), 20000);
  const reconnectedAt = reconnected()[0];
  await eventually(() => assert.ok(ticks.length >= reconnectedAt + 20), 10000);
  publishing = false;
  await publisher;
  assert.equal(lb.routes.at(-1), "B", `the last connection went to B: ${lb.routes}`);
  assert.notEqual(connection.connectionId, firstId, "a fresh connection on B");

  // While connected to A (the drain delay included, up to its Close) every tick arrived in
  // order; after the reconnect they arrive in order again. Only ticks published between A's
  // Close and the re-join on B are missing: SignalR promises no delivery to a client that is
  // not connected.
  const onA = ticks.slice(0, ticks.findIndex((n, i) => n !== i) === -1 ? ticks.length : ticks.findIndex((n, i) => n !== i));
  assert.ok(onA.length > beforeDrain, `ticks kept arriving from A during the drain delay (${onA.length} vs ${beforeDrain})`);
  const onB = ticks.slice(onA.length);
  assert.ok(onB.length >= 20, `ticks arrive through B (${onB.length})`);
  for (let i = 1; i < onB.length; i++) assert.equal(onB[i], onB[i - 1] + 1, "in order on B");
  await connection.stop();
  lb.close();
});
