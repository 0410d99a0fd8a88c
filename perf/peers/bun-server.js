// Bun peer for perf/compare.py: Bun.serve (uWebSockets inside) with topics and server.publish.
// Raw contract: /ws/broadcast subscribes to one topic, every message on /ws/publish is published
// to it (opcode kept), /ws/echo echoes; GET /health/ready answers 200. Groups (S3):
// /ws/group/A[,B…] subscribes to topics A, B, …, and every message on it is published to A, the
// sender included (server.publish, not ws.publish, which would skip the sender).
// Run: node_modules/@oven/bun-linux-x64/bin/bun bun-server.js [--port P]   (P = 0: a free port)
// Prints `listening <port>` once ready.
//
// `--redis redis://HOST:PORT` makes it an S6 (backplane) instance with Bun's built-in Redis
// client: a message on /ws/publish is PUBLISHed to Redis instead of published locally, and
// every message arriving on the subscribed channel is `server.publish`ed to this instance's
// subscribers, so two instances on one Redis relay to each other (and, like ASP.NET's Redis
// backplane, an instance's own messages reach its subscribers through Redis too).

const TOPIC = "broadcast";
const ROUTES = { "/ws/broadcast": "subscribe", "/ws/publish": "publish", "/ws/echo": "echo" };
const GROUP_PREFIX = "/ws/group/";

function portArg(argv) {
  const at = argv.indexOf("--port");
  const value = at >= 0 ? argv[at + 1] : argv.find((a) => /^\d+$/.test(a));
  return Number(value ?? 0);
}

function redisArg(argv) {
  const at = argv.indexOf("--redis");
  return at >= 0 ? argv[at + 1] : undefined;
}

const redisUrl = redisArg(process.argv.slice(2));
let backplane;
if (redisUrl) {
  const publisher = new Bun.RedisClient(redisUrl);
  await publisher.connect();
  const subscriber = await publisher.duplicate();
  await subscriber.subscribe(TOPIC, (message) => server.publish(TOPIC, message));
  backplane = publisher;
  // The open Redis subscription keeps Bun from exiting on SIGINT by default.
  process.on("SIGINT", () => process.exit(0));
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: portArg(process.argv.slice(2)),
  fetch(req, server) {
    const path = new URL(req.url).pathname;
    if (path === "/health/ready") return new Response("");
    let data = { role: ROUTES[path] };
    if (path.startsWith(GROUP_PREFIX) && path.length > GROUP_PREFIX.length) {
      data = { role: "group", groups: path.slice(GROUP_PREFIX.length).split(",") };
    }
    if (!data.role) return new Response("not found", { status: 404 });
    if (server.upgrade(req, { data })) return undefined;
    return new Response("upgrade required", { status: 426 });
  },
  websocket: {
    perMessageDeflate: false,
    maxPayloadLength: 64 * 1024 * 1024,
    // Same buffering allowance as the uWS.js peer; never close a slow reader for it.
    backpressureLimit: 16 * 1024 * 1024,
    closeOnBackpressureLimit: false,
    // No server pings and no idle timeout: connections stay up for the idle scenario.
    idleTimeout: 0,
    sendPings: false,
    open(ws) {
      if (ws.data.role === "subscribe") ws.subscribe(TOPIC);
      else if (ws.data.role === "group") for (const group of ws.data.groups) ws.subscribe(group);
    },
    message(ws, message) {
      if (ws.data.role === "publish") {
        if (backplane) backplane.publish(TOPIC, message);
        else server.publish(TOPIC, message);
      } else if (ws.data.role === "group") server.publish(ws.data.groups[0], message);
      else if (ws.data.role === "echo") ws.send(message);
    },
  },
});

console.log(`listening ${server.port}`);
