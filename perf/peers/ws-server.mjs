// Node `ws` peer for perf/compare.py (with bufferutil and utf-8-validate): a loop over the
// subscribers sending the same Buffer. Raw contract: /ws/broadcast subscribes, every message on
// /ws/publish goes to every subscriber (opcode kept), /ws/echo echoes; GET /health/ready
// answers 200. Run: node ws-server.mjs [--port P]   (P = 0: a free port). Prints `listening <port>`.

import http from "node:http";
import { WebSocketServer } from "ws";

function portArg(argv) {
  const at = argv.indexOf("--port");
  const value = at >= 0 ? argv[at + 1] : argv.find((a) => /^\d+$/.test(a));
  return Number(value ?? 0);
}

const subscribers = new Set();
const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  maxPayload: 64 * 1024 * 1024,
  clientTracking: false,
});

const server = http.createServer((req, res) => {
  if (req.url === "/health/ready") res.end();
  else res.writeHead(404).end("not found");
});

server.on("upgrade", (req, socket, head) => {
  const path = req.url.split("?")[0];
  if (!["/ws/broadcast", "/ws/publish", "/ws/echo"].includes(path)) {
    socket.end("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (path === "/ws/broadcast") {
      subscribers.add(ws);
      ws.on("close", () => subscribers.delete(ws));
    } else if (path === "/ws/publish") {
      ws.on("message", (data, isBinary) => {
        for (const subscriber of subscribers) subscriber.send(data, { binary: isBinary });
      });
    } else {
      ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
    }
    ws.on("error", () => {});
  });
});

// Idle connections must not be cut by Node's HTTP timeouts once upgraded, nor the accept
// backlog limit a fast connect ramp.
server.headersTimeout = 0;
server.requestTimeout = 0;
server.listen({ host: "127.0.0.1", port: portArg(process.argv.slice(2)), backlog: 4096 }, () => {
  console.log(`listening ${server.address().port}`);
});
