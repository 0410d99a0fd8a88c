// Cross-instance delivery latency through the Redis backplane, with the official client.
// A publisher on instance A calls SendToGroup (Diagnostics hub) with its send time; a member on
// instance B records receive time minus send time (one machine, one clock). Also reads Redis's
// PUBLISH count from INFO commandstats to report Redis commands per delivered message.
// Run by perf/backplane_latency.sh, which starts redis-server and the two instances.
import { createRequire } from "node:module";
import net from "node:net";
const require = createRequire(new URL("../tests/js/", import.meta.url));
const signalR = require("@microsoft/signalr");

const [a, b] = process.env.HUB_URLS.split(",");
const redisPort = Number(process.env.REDIS_PORT);
const count = Number(process.env.COUNT ?? 2000);
const rate = Number(process.env.RATE ?? 500);

function connect(base) {
  const c = new signalR.HubConnectionBuilder()
    .withUrl(`${base}/hubs/diagnostics`, { transport: signalR.HttpTransportType.WebSockets })
    .configureLogging(signalR.LogLevel.None)
    .build();
  return c;
}

function publishCalls() {
  return new Promise((resolve, reject) => {
    const s = net.connect(redisPort, "127.0.0.1");
    let data = "";
    s.on("data", (d) => {
      data += d;
      if (data.includes("\r\n\r\n") || data.endsWith("\r\n") && data.length > 20) {
        const m = data.match(/cmdstat_publish:calls=(\d+)/);
        s.end();
        resolve(m ? Number(m[1]) : 0);
      }
    });
    s.on("error", reject);
    s.write("INFO commandstats\r\n");
  });
}

const publisher = connect(a);
const member = connect(b);
await Promise.all([publisher.start(), member.start()]);
await member.invoke("JoinGroup", "bench");
const latencies = [];
let received = 0;
let done;
const finished = new Promise((r) => (done = r));
member.on("Send", (sentAt) => {
  latencies.push(Number(process.hrtime.bigint() - BigInt(sentAt)) / 1e6);
  if (++received === count) done();
});
const before = await publishCalls();
const interval = 1000 / rate;
const start = performance.now();
for (let i = 0; i < count; i++) {
  const due = start + i * interval;
  const wait = due - performance.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  publisher.send("SendToGroup", "bench", process.hrtime.bigint().toString());
}
await Promise.race([finished, new Promise((r) => setTimeout(r, 30000))]);
const after = await publishCalls();
latencies.sort((x, y) => x - y);
const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))].toFixed(3);
console.log(JSON.stringify({
  messages: count,
  received,
  rate_per_s: rate,
  p50_ms: pct(50),
  p90_ms: pct(90),
  p99_ms: pct(99),
  max_ms: latencies.at(-1).toFixed(3),
  redis_publish_per_message: ((after - before) / count).toFixed(3),
}));
await Promise.all([publisher.stop(), member.stop()]);
process.exit(0);
