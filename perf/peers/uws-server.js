// uWebSockets.js peer for perf/compare.py (@trufflesuite/uws-js-unofficial, the native addon for
// Node 20): app.publish to one topic. Raw contract: /ws/broadcast subscribes, every message on
// /ws/publish is published (opcode kept), /ws/echo echoes; GET /health/ready answers 200.
// Groups (S3): /ws/group/A[,B…] subscribes to topics A, B, …, and every message on it is published
// to A with app.publish (the sender included; ws.publish would skip it).
// Run: node uws-server.js [--port P]   (P = 0: a free port). Prints `listening <port>`.

const path = require("node:path");

// Load the native addon directly: the package's entry point silently falls back to a `ws`-based
// imitation when the addon does not load, which would make this a second `ws` peer.
const uWS = require(
  path.join(
    path.dirname(require.resolve("@trufflesuite/uws-js-unofficial/package.json")),
    "binaries",
    `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`,
  ),
);

const TOPIC = "broadcast";

function portArg(argv) {
  const at = argv.indexOf("--port");
  const value = at >= 0 ? argv[at + 1] : argv.find((a) => /^\d+$/.test(a));
  return Number(value ?? 0);
}

const common = {
  compression: uWS.DISABLED,
  maxPayloadLength: 64 * 1024 * 1024,
  // Same buffering allowance as the Bun peer; never close a slow reader for it.
  maxBackpressure: 16 * 1024 * 1024,
  closeOnBackpressureLimit: false,
  // No server pings and no idle timeout: connections stay up for the idle scenario.
  idleTimeout: 0,
  sendPingsAutomatically: false,
};

const app = uWS.App();
app.ws("/ws/broadcast", { ...common, open: (ws) => ws.subscribe(TOPIC) });
app.ws("/ws/publish", {
  ...common,
  message: (ws, message, isBinary) => app.publish(TOPIC, message, isBinary),
});
app.ws("/ws/echo", {
  ...common,
  message: (ws, message, isBinary) => ws.send(message, isBinary),
});
const GROUP_PREFIX = "/ws/group/";
app.ws("/ws/group/*", {
  ...common,
  upgrade: (res, req, context) => {
    const groups = req.getUrl().slice(GROUP_PREFIX.length).split(",");
    res.upgrade(
      { groups },
      req.getHeader("sec-websocket-key"),
      req.getHeader("sec-websocket-protocol"),
      req.getHeader("sec-websocket-extensions"),
      context,
    );
  },
  open: (ws) => {
    for (const group of ws.getUserData().groups) ws.subscribe(group);
  },
  message: (ws, message, isBinary) => app.publish(ws.getUserData().groups[0], message, isBinary),
});
app.get("/health/ready", (res) => res.end(""));
app.any("/*", (res) => res.writeStatus("404 Not Found").end("not found"));
app.listen("127.0.0.1", portArg(process.argv.slice(2)), (token) => {
  if (!token) {
    console.error("uws-server: listen failed");
    process.exit(1);
  }
  console.log(`listening ${uWS.us_socket_local_port(token)}`);
});
