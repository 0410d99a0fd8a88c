// Node `ws` peer for perf/compare.py (with bufferutil and utf-8-validate): a loop over the
// subscribers sending the same Buffer. Raw contract: /ws/broadcast subscribes, every message on
// /ws/publish goes to every subscriber (opcode kept), /ws/echo echoes; GET /health/ready
// answers 200. Groups (S3): /ws/group/A[,B…] joins groups A, B, … (a Map of Sets), and every
// message on it goes to every member of A, the sender included. Run: node ws-server.mjs [--port P]   (P = 0: a free port). Prints `listening <port>`.

import http from "node:http";
import { WebSocketServer } from "ws";

function portArg(argv) {
  const at = argv.indexOf("--port");
  const value = at >= 0 ? argv[at + 1] : argv.find((a) => /^\d+$/.test(a));
  return Number(value ?? 0);
}

const subscribers = new Set();
const GROUP_PREFIX = "/ws/group/";
/** Group name -> its members. */
const groups = new Map();
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
  const isGroup = path.startsWith(GROUP_PREFIX) && path.length > GROUP_PREFIX.length;
  if (!isGroup && !["/ws/broadcast", "/ws/publish", "/ws/echo"].includes(path)) {
    socket.end("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (isGroup) {
      const names = path.slice(GROUP_PREFIX.length).split(",");
      for (const name of names) {
        let members = groups.get(name);
        if (!members) groups.set(name, (members = new Set()));
        members.add(ws);
      }
      const target = groups.get(names[0]);
      ws.on("message", (data, isBinary) => {
        for (const member of target) member.send(data, { binary: isBinary });
      });
      ws.on("close", () => {
        for (const name of names) {
          const members = groups.get(name);
          members.delete(ws);
          if (members.size === 0) groups.delete(name);
        }
      });
    } else if (path === "/ws/broadcast") {
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
