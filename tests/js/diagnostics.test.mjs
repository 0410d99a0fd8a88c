// The official @microsoft/signalr client (10.x) against ringhub's Diagnostics hub, over JSON and
// MessagePack, with and without negotiation. Run by tests/js_client.rs, which starts the server
// and passes its base URL in HUB_BASE_URL.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const base = process.env.HUB_BASE_URL;
assert.ok(base, "HUB_BASE_URL must be set (tests/js_client.rs starts the server)");
const hubUrl = `${base}/hubs/diagnostics`;

const protocols = {
  json: () => new signalR.JsonHubProtocol(),
  messagepack: () => new MessagePackHubProtocol(),
};

function build(protocol, { skipNegotiation = false, headers } = {}) {
  return new signalR.HubConnectionBuilder()
    .withUrl(hubUrl, {
      transport: signalR.HttpTransportType.WebSockets,
      skipNegotiation,
      headers,
    })
    .withHubProtocol(protocols[protocol]())
    .configureLogging(signalR.LogLevel.None)
    .build();
}

function collect(stream) {
  return new Promise((resolve, reject) => {
    const items = [];
    stream.subscribe({
      next: (item) => items.push(item),
      complete: () => resolve(items),
      error: reject,
    });
  });
}

for (const protocol of Object.keys(protocols)) {
  for (const skipNegotiation of [false, true]) {
    const mode = skipNegotiation ? "skipNegotiation" : "negotiate";

    test(`${protocol}/${mode}: Echo returns its argument, unicode intact`, async () => {
      const connection = build(protocol, { skipNegotiation });
      await connection.start();
      assert.equal(await connection.invoke("Echo", "你好，世界！ κόσμε 😀"), "你好，世界！ κόσμε 😀");
      assert.equal(await connection.invoke("echo", 42), 42);
      assert.deepEqual(await connection.invoke("Echo", { a: [1, 2, { b: null }], c: "d" }), {
        a: [1, 2, { b: null }],
        c: "d",
      });
      await connection.stop();
    });

    test(`${protocol}/${mode}: GetCallerConnectionId matches the client's id`, async () => {
      const connection = build(protocol, { skipNegotiation });
      await connection.start();
      const id = await connection.invoke("GetCallerConnectionId");
      assert.equal(typeof id, "string");
      assert.equal(id.length, 22);
      if (!skipNegotiation) {
        assert.equal(id, connection.connectionId);
      }
      await connection.stop();
    });
  }

  test(`${protocol}: InvokeWithString sends the Message event to the caller`, async () => {
    const connection = build(protocol);
    const received = new Promise((resolve) => connection.on("Message", resolve));
    await connection.start();
    await connection.invoke("InvokeWithString", "hello event");
    assert.equal(await received, "hello event");
    await connection.stop();
  });

  test(`${protocol}: Stream(n) streams 0..n then completes`, async () => {
    const connection = build(protocol);
    await connection.start();
    assert.deepEqual(await collect(connection.stream("Stream", 5)), [0, 1, 2, 3, 4]);
    assert.deepEqual(await collect(connection.stream("Stream", 0)), []);
    const many = await collect(connection.stream("Stream", 1000));
    assert.equal(many.length, 1000);
    assert.equal(many[999], 999);
    await connection.stop();
  });

  test(`${protocol}: cancelling InfiniteStream tells the caller StreamCanceled`, async () => {
    const connection = build(protocol);
    const canceled = new Promise((resolve) => connection.on("StreamCanceled", () => resolve(true)));
    await connection.start();
    const subscription = connection.stream("InfiniteStream").subscribe({ next() {}, complete() {}, error() {} });
    await new Promise((r) => setTimeout(r, 50));
    subscription.dispose();
    assert.equal(await canceled, true);
    // The connection is still usable.
    assert.equal(await connection.invoke("Echo", "after cancel"), "after cancel");
    await connection.stop();
  });

  test(`${protocol}: ThrowException completes with the hub exception text`, async () => {
    const connection = build(protocol);
    await connection.start();
    await assert.rejects(connection.invoke("ThrowException", "custom boom"), {
      message:
        "An unexpected error occurred invoking 'ThrowException' on the server. HubException: custom boom",
    });
    await connection.stop();
  });

  test(`${protocol}: StreamingConcat concatenates an uploaded stream`, async () => {
    const connection = build(protocol);
    await connection.start();
    const subject = new signalR.Subject();
    const result = connection.invoke("StreamingConcat", subject);
    for (const part of ["a", "b", "c", "ü"]) {
      subject.next(part);
    }
    subject.complete();
    assert.equal(await result, "abcü");
    await connection.stop();
  });

  test(`${protocol}: EchoComplexObject round-trips nested values`, async () => {
    const connection = build(protocol);
    await connection.start();
    const value = { name: "x", list: [1, 2.5, true, null, "s"], nested: { deep: { deeper: [] } } };
    assert.deepEqual(await connection.invoke("EchoComplexObject", value), value);
    if (protocol === "messagepack") {
      const bytes = new Uint8Array([0, 1, 2, 250, 255]);
      const date = new Date(Date.UTC(2026, 10, 28, 10, 9, 27, 123));
      const echoed = await connection.invoke("EchoComplexObject", { bytes, date });
      assert.deepEqual(Array.from(echoed.bytes), Array.from(bytes));
      assert.ok(echoed.date instanceof Date, "timestamps stay timestamps in MessagePack");
      assert.equal(echoed.date.getTime(), date.getTime());
    }
    await connection.stop();
  });

  test(`${protocol}: GetHeader reads a header of the connecting request`, async () => {
    const connection = build(protocol, { headers: { "x-ringhub-test": "header value" } });
    await connection.start();
    assert.equal(await connection.invoke("GetHeader", "X-Ringhub-Test"), "header value");
    assert.equal(await connection.invoke("GetHeader", "x-absent"), null);
    await connection.stop();
  });

  test(`${protocol}: wrong calls get ASP.NET's error texts`, async () => {
    const connection = build(protocol);
    await connection.start();
    await assert.rejects(connection.invoke("NoSuchMethod"), { message: "Unknown hub method 'NoSuchMethod'" });
    await assert.rejects(connection.invoke("Stream", 3), {
      message: "The client attempted to invoke the streaming 'Stream' method with a non-streaming invocation.",
    });
    await assert.rejects(collect(connection.stream("Echo", "x")), {
      message: "The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation.",
    });
    await assert.rejects(connection.invoke("Echo"), {
      message: "Failed to invoke 'Echo' due to an error on the server.",
    });
    // Still connected after the errors.
    assert.equal(await connection.invoke("Echo", "ok"), "ok");
    await connection.stop();
  });

  test(`${protocol}: stop then start again gets a new connection`, async () => {
    const connection = build(protocol);
    await connection.start();
    const first = await connection.invoke("GetCallerConnectionId");
    await connection.stop();
    assert.equal(connection.state, signalR.HubConnectionState.Disconnected);
    await connection.start();
    const second = await connection.invoke("GetCallerConnectionId");
    assert.notEqual(first, second);
    await connection.stop();
  });

  test(`${protocol}: a message over 32 KiB closes the connection with ASP.NET's error`, async () => {
    const connection = build(protocol);
    await connection.start();
    const closed = new Promise((resolve) => connection.onclose(resolve));
    connection.invoke("Echo", "x".repeat(40 * 1024)).catch(() => {});
    const error = await closed;
    assert.equal(error?.message, "Server returned an error on close: Connection closed with an error.");
  });

  test(`${protocol}: many concurrent invocations all complete in order`, async () => {
    const connection = build(protocol);
    await connection.start();
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => connection.invoke("Echo", i)));
    assert.deepEqual(results, Array.from({ length: 200 }, (_, i) => i));
    await connection.stop();
  });
}

for (const protocol of Object.keys(protocols)) {
  test(`${protocol}: a hub that does not accept the protocol fails start() with ASP.NET's handshake error`, async () => {
    const other = protocol === "json" ? "messagepack" : "json";
    const refusing = new signalR.HubConnectionBuilder()
      .withUrl(`${base}/hubs/only-${other}`, { transport: signalR.HttpTransportType.WebSockets })
      .withHubProtocol(protocols[protocol]())
      .configureLogging(signalR.LogLevel.None)
      .build();
    await assert.rejects(refusing.start(), {
      message: `Server returned handshake error: The protocol '${protocol}' is not supported.`,
    });
    const accepting = new signalR.HubConnectionBuilder()
      .withUrl(`${base}/hubs/only-${protocol}`, { transport: signalR.HttpTransportType.WebSockets })
      .withHubProtocol(protocols[protocol]())
      .configureLogging(signalR.LogLevel.None)
      .build();
    await accepting.start();
    assert.equal(await accepting.invoke("Echo", "ok"), "ok");
    await accepting.stop();
  });

  test(`${protocol}: negotiate version 0 works with the official client`, async () => {
    const connection = new signalR.HubConnectionBuilder()
      .withUrl(`${hubUrl}?negotiateVersion=0`, { transport: signalR.HttpTransportType.WebSockets })
      .withHubProtocol(protocols[protocol]())
      .configureLogging(signalR.LogLevel.None)
      .build();
    await connection.start();
    assert.equal(await connection.invoke("GetCallerConnectionId"), connection.connectionId);
    await connection.stop();
  });

  test(`${protocol}: with one invocation slot, a call waits for the running one`, async () => {
    const connection = build(protocol);
    await connection.start();
    const order = [];
    const subject = new signalR.Subject();
    const upload = connection.invoke("StreamingConcat", subject).then((r) => order.push(`concat:${r}`));
    const echo = connection.invoke("Echo", "second").then((r) => order.push(`echo:${r}`));
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(order, [], "Echo must wait while StreamingConcat holds the slot");
    subject.next("x");
    subject.complete();
    await Promise.all([upload, echo]);
    assert.deepEqual(order, ["concat:x", "echo:second"]);
    await connection.stop();
  });

  test(`${protocol}: an upload stream to a method that takes none is rejected cleanly`, async () => {
    const connection = build(protocol);
    await connection.start();
    const subject = new signalR.Subject();
    const call = connection.invoke("Echo", subject);
    subject.next("ignored");
    subject.complete();
    await assert.rejects(call, { message: "Failed to invoke 'Echo' due to an error on the server." });
    assert.equal(await connection.invoke("Echo", "fine"), "fine");
    await connection.stop();
  });

  test(`${protocol}: a hub method can ask the caller for a client result`, async () => {
    const connection = build(protocol);
    connection.on("Compute", (x) => x * 2);
    connection.on("Fail", () => {
      throw new Error("boom");
    });
    await connection.start();
    assert.equal(await connection.invoke("GetClientResult", "Compute", 21), 42);
    await assert.rejects(connection.invoke("GetClientResult", "Fail", 1), {
      message: "An unexpected error occurred invoking 'GetClientResult' on the server. HubException: Error: boom",
    });
    await assert.rejects(connection.invoke("GetClientResult", "NoHandler", 1), {
      message:
        "An unexpected error occurred invoking 'GetClientResult' on the server. HubException: Client didn't provide a result.",
    });
    await connection.stop();
  });

  test(`${protocol}: a hub declared in configuration serves its methods and its own message limit`, async () => {
    const connection = new signalR.HubConnectionBuilder()
      .withUrl(`${base}/hubs/configured`, { transport: signalR.HttpTransportType.WebSockets })
      .withHubProtocol(protocols[protocol]())
      .configureLogging(signalR.LogLevel.None)
      .build();
    await connection.start();
    assert.equal(await connection.invoke("shout", "configured"), "configured");
    await assert.rejects(connection.invoke("Echo", 1), { message: "Unknown hub method 'Echo'" });
    const closed = new Promise((resolve) => connection.onclose(resolve));
    connection.invoke("Shout", "y".repeat(2048)).catch(() => {});
    assert.equal((await closed)?.message, "Server returned an error on close: Connection closed with an error.");
  });

  test(`${protocol}: withStatefulReconnect loses and repeats nothing across a dropped socket`, async () => {
    const connection = new signalR.HubConnectionBuilder()
      .withUrl(hubUrl, { transport: signalR.HttpTransportType.WebSockets })
      .withHubProtocol(protocols[protocol]())
      .withStatefulReconnect()
      .configureLogging(signalR.LogLevel.None)
      .build();
    const received = [];
    connection.on("Message", (m) => received.push(m));
    let closed = false;
    connection.onclose(() => (closed = true));
    await connection.start();
    const id = connection.connectionId;
    for (let i = 0; i < 20; i++) {
      await connection.invoke("InvokeWithString", `before-${i}`);
    }
    // Drop the TCP connection under the client, without a close frame.
    connection.connection.transport._webSocket.terminate();
    const sends = Array.from({ length: 20 }, (_, i) => connection.invoke("InvokeWithString", `after-${i}`));
    await Promise.all(sends);
    const expected = [
      ...Array.from({ length: 20 }, (_, i) => `before-${i}`),
      ...Array.from({ length: 20 }, (_, i) => `after-${i}`),
    ];
    assert.deepEqual(received, expected);
    assert.equal(await connection.invoke("GetCallerConnectionId"), id, "same connection after the reconnect");
    assert.equal(closed, false);
    await connection.stop();
  });

  test(`${protocol}: withStatefulReconnect resends stream items lost with the socket, past a full buffer`, async () => {
    const connection = new signalR.HubConnectionBuilder()
      .withUrl(hubUrl, { transport: signalR.HttpTransportType.WebSockets })
      .withHubProtocol(protocols[protocol]())
      .withStatefulReconnect()
      .configureLogging(signalR.LogLevel.None)
      .build();
    await connection.start();
    // 5 000 items are more than the 100 000-byte resend buffer holds unacknowledged (JSON), so
    // the server must also wait for Acks instead of dropping.
    const total = 5000;
    const items = [];
    const done = new Promise((resolve, reject) => {
      connection.stream("Stream", total).subscribe({
        next: (item) => {
          items.push(item);
          if (items.length === 100) {
            connection.connection.transport._webSocket.terminate();
          }
        },
        complete: resolve,
        error: reject,
      });
    });
    await done;
    assert.equal(items.length, total);
    assert.ok(items.every((item, i) => item === i), "every item once, in order");
    await connection.stop();
  });

  test(`${protocol}: withAutomaticReconnect reconnects after the server closes with allowReconnect`, async () => {
    const connection = new signalR.HubConnectionBuilder()
      .withUrl(hubUrl, { transport: signalR.HttpTransportType.WebSockets })
      .withHubProtocol(protocols[protocol]())
      .withAutomaticReconnect([0, 100, 500])
      .configureLogging(signalR.LogLevel.None)
      .build();
    await connection.start();
    const first = connection.connectionId;
    const reconnected = new Promise((resolve) => connection.onreconnected(resolve));
    // Over the 32 KiB limit: the server closes with an error and allowReconnect: true.
    connection.invoke("Echo", "x".repeat(40 * 1024)).catch(() => {});
    const second = await reconnected;
    assert.notEqual(second, first);
    assert.equal(await connection.invoke("Echo", "back"), "back");
    await connection.stop();
  });
}

test("negotiate answers useStatefulReconnect only when asked", async () => {
  const asked = await (await fetch(`${hubUrl}/negotiate?negotiateVersion=1&useStatefulReconnect=true`, { method: "POST" })).json();
  assert.equal(asked.useStatefulReconnect, true);
  const notAsked = await (await fetch(`${hubUrl}/negotiate?negotiateVersion=1`, { method: "POST" })).json();
  assert.equal(notAsked.useStatefulReconnect, undefined);
});

test("negotiate v0 still works (connectionToken = connectionId)", async () => {
  const response = await fetch(`${hubUrl}/negotiate`, { method: "POST" });
  assert.equal(response.status, 200);
  const body = await response.json();
  assert.equal(body.negotiateVersion, 0);
  assert.equal(body.connectionToken, undefined);
  // A v0 client connects with its connection id, so the id is the stateless signed token.
  assert.match(body.connectionId, /^[A-Za-z0-9_-]{59}$/);
  assert.deepEqual(body.availableTransports, [{ transport: "WebSockets", transferFormats: ["Text", "Binary"] }]);
});

test("negotiate rejects a non-integer version with ASP.NET's text", async () => {
  const response = await fetch(`${hubUrl}/negotiate?negotiateVersion=abc`, { method: "POST" });
  assert.deepEqual(await response.json(), { error: "The client requested a non-integer protocol version." });
});

// Group fan-out: with two shards, six connections land on both; sends reach every member on
// every shard exactly once, in both protocols, and nobody else.
async function member(protocol, { stateful = false } = {}) {
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(hubUrl, { transport: signalR.HttpTransportType.WebSockets })
    .withHubProtocol(protocols[protocol]())
    .configureLogging(signalR.LogLevel.None);
  if (stateful) {
    builder = builder.withStatefulReconnect();
  }
  const connection = builder.build();
  const received = [];
  connection.on("Send", (m) => received.push(m));
  await connection.start();
  return { connection, received };
}

async function settle(condition, ms = 5000) {
  const until = Date.now() + ms;
  while (!condition() && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 10));
  }
}

test("group sends reach every member on every shard, in both protocols, and nobody else", async () => {
  const members = [];
  for (let i = 0; i < 6; i++) {
    members.push(await member(i % 2 === 0 ? "json" : "messagepack"));
  }
  const [a, b, c, d, e, f] = members;
  for (const m of [a, b, c, d]) {
    await m.connection.invoke("JoinGroup", "g1");
  }
  for (const m of [e, f]) {
    await m.connection.invoke("JoinGroup", "g2");
  }
  await e.connection.invoke("SendToGroup", "g1", { text: "hello g1", n: 1 });
  await settle(() => [a, b, c, d].every((m) => m.received.length === 1));
  for (const m of [a, b, c, d]) {
    assert.deepEqual(m.received, [{ text: "hello g1", n: 1 }]);
  }
  assert.deepEqual(e.received, []);
  assert.deepEqual(f.received, []);

  await b.connection.invoke("LeaveGroup", "g1");
  await a.connection.invoke("SendToGroup", "g1", "second");
  await settle(() => [a, c, d].every((m) => m.received.length === 2));
  assert.deepEqual(b.received, [{ text: "hello g1", n: 1 }], "left the group");
  for (const m of [a, c, d]) {
    assert.equal(m.received[1], "second");
  }

  await f.connection.invoke("SendToAll", "everyone");
  await settle(() => members.every((m) => m.received.includes("everyone")));
  for (const m of members) {
    assert.equal(m.received.filter((x) => x === "everyone").length, 1);
  }
  await Promise.all(members.map((m) => m.connection.stop()));
});

test("a stateful member misses nothing sent to its group while its socket was down", async () => {
  const sender = await member("json");
  const listener = await member("messagepack", { stateful: true });
  await listener.connection.invoke("JoinGroup", "resilient");
  for (let i = 0; i < 10; i++) {
    await sender.connection.invoke("SendToGroup", "resilient", i);
  }
  await settle(() => listener.received.length === 10);
  listener.connection.connection.transport._webSocket.terminate();
  for (let i = 10; i < 30; i++) {
    await sender.connection.invoke("SendToGroup", "resilient", i);
  }
  await settle(() => listener.received.length >= 30);
  assert.deepEqual(listener.received, Array.from({ length: 30 }, (_, i) => i));
  await sender.connection.stop();
  await listener.connection.stop();
});

test("task subscriptions are groups named from a template: events reach only the task's subscribers", async () => {
  const connect = async (protocol) => {
    const connection = new signalR.HubConnectionBuilder()
      .withUrl(`${base}/hubs/tasks`, { transport: signalR.HttpTransportType.WebSockets })
      .withHubProtocol(protocols[protocol]())
      .configureLogging(signalR.LogLevel.None)
      .build();
    const received = [];
    connection.on("Send", (m) => received.push(m));
    await connection.start();
    return { connection, received };
  };
  const one = await connect("json");
  const two = await connect("messagepack");
  const sender = await connect("json");
  await one.connection.invoke("SubscribeToTask", "task-1");
  await two.connection.invoke("SubscribeToTask", "task-2");
  await sender.connection.invoke("Notify", "task-1", { percentage: 50 });
  await sender.connection.invoke("Notify", "task-2", { percentage: 75 });
  await settle(() => one.received.length === 1 && two.received.length === 1);
  assert.deepEqual(one.received, [{ percentage: 50 }]);
  assert.deepEqual(two.received, [{ percentage: 75 }]);
  await one.connection.invoke("UnsubscribeFromTask", "task-1");
  await sender.connection.invoke("Notify", "task-1", { percentage: 100 });
  await sender.connection.invoke("Notify", "task-2", { percentage: 100 });
  await settle(() => two.received.length === 2);
  assert.deepEqual(one.received, [{ percentage: 50 }], "unsubscribed");
  assert.deepEqual(sender.received, []);
  await Promise.all([one, two, sender].map((c) => c.connection.stop()));
});

// The seed hubs and their keys (tests/js_client.rs creates a virtual key and an admin key).
const virtualKey = process.env.HUB_VIRTUAL_KEY;
const adminKey = process.env.HUB_ADMIN_KEY;

function seedConnection(protocol, path, key) {
  return new signalR.HubConnectionBuilder()
    .withUrl(`${base}${path}`, {
      transport: signalR.HttpTransportType.WebSockets,
      ...(key === undefined ? {} : { accessTokenFactory: () => key }),
    })
    .withHubProtocol(protocols[protocol]())
    .configureLogging(signalR.LogLevel.None)
    .build();
}

for (const protocol of Object.keys(protocols)) {
  test(`${protocol}: seed hubs admit keys as configured (the auth matrix)`, async () => {
    assert.ok(virtualKey && adminKey, "HUB_VIRTUAL_KEY and HUB_ADMIN_KEY must be set");
    await assert.rejects(seedConnection(protocol, "/hubs/image-generation").start(), /401/);
    await assert.rejects(
      seedConnection(protocol, "/hubs/image-generation", "condt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").start(),
      /401/,
    );
    await assert.rejects(seedConnection(protocol, "/hubs/admin", virtualKey).start(), /403/);
    const content = seedConnection(protocol, "/hubs/content-generation", virtualKey);
    await content.start();
    await content.invoke("SubscribeToTask", "task_1", "image");
    await content.invoke("SubscribeToAllTasks");
    await assert.rejects(content.invoke("SubscribeToTask", "task_1", "audio"), {
      message:
        "An unexpected error occurred invoking 'SubscribeToTask' on the server. HubException: Invalid content type 'audio'. Expected 'image' or 'video'.",
    });
    await content.stop();
    for (const [path, key] of [
      ["/hubs/image-generation", virtualKey],
      ["/hubs/video-generation", virtualKey],
      ["/hubs/notifications", virtualKey],
      ["/hubs/image-generation", adminKey],
      ["/hubs/admin", adminKey],
    ]) {
      const connection = seedConnection(protocol, path, key);
      await connection.start();
      if (path === "/hubs/admin") {
        await connection.invoke("SubscribeToVirtualKey", "1");
      } else if (path !== "/hubs/notifications") {
        await connection.invoke("SubscribeToTask", "task_0123");
        await connection.invoke("UnsubscribeFromTask", "task_0123");
      }
      await connection.stop();
    }
  });
}
