// The Health hub is anonymous: no key. GetHealth() answers a snapshot, and the same snapshot
// is pushed as HealthStatus every health.push_interval (5 s by default).
//   HUB_URL=… node health.mjs
import { HubConnectionBuilder } from "@microsoft/signalr";

const baseUrl = process.env.HUB_URL ?? "http://127.0.0.1:8080";

// #region health
const health = new HubConnectionBuilder()
  .withUrl(`${baseUrl}/hubs/health`) // anonymous: no accessTokenFactory
  .withAutomaticReconnect()
  .build();

const pushed = new Promise((resolve) => health.on("HealthStatus", resolve));
await health.start();

const snapshot = await health.invoke("GetHealth");
console.log(`${snapshot.status}: ${snapshot.connections} connections,`,
  `backplane ${snapshot.backplane.kind} ${snapshot.backplane.state}`);
console.log("by hub:", snapshot.connectionsByHub);
console.log("pushed:", (await pushed).status);
// #endregion

await health.stop();
