// Getting started: connect to the Notifications hub with a virtual key, and receive what a
// backend sends to the key's group vkey-{id}.
//   HUB_URL=… HUB_KEY=condt_… HUB_KEY_ID=1 HUB_SERVER_KEY=rhsk_… node getting-started.mjs
import { HubConnectionBuilder, LogLevel } from "@microsoft/signalr";

const baseUrl = process.env.HUB_URL ?? "http://127.0.0.1:8080";
const virtualKey = process.env.HUB_KEY;
const virtualKeyId = process.env.HUB_KEY_ID;
const serverKey = process.env.HUB_SERVER_KEY;

// #region listen
const connection = new HubConnectionBuilder()
  .withUrl(`${baseUrl}/hubs/notifications`, { accessTokenFactory: () => virtualKey })
  .withAutomaticReconnect()
  .configureLogging(LogLevel.Warning)
  .build();

const alerts = [];
connection.on("SystemAlert", (alert) => {
  console.log(`[${alert.severity}] ${alert.message}`);
  alerts.push(alert);
});

await connection.start();
console.log("listening on /hubs/notifications as", connection.connectionId);
// #endregion

// #region backend-send
// What the curl command does, from Node: send SystemAlert to every connection of key 1.
const response = await fetch(`${baseUrl}/api/hubs/notifications/groups/vkey-${virtualKeyId}/:send`, {
  method: "POST",
  headers: { Authorization: `Bearer ${serverKey}`, "Content-Type": "application/json" },
  body: JSON.stringify({
    target: "SystemAlert",
    arguments: [{ severity: "info", message: "Your image is ready" }],
  }),
});
console.log("publish answered", response.status); // 202
// #endregion

while (alerts.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
await connection.stop();
