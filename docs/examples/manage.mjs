// Managing connections from a backend (REST, server key): add a connection to a group, check
// that the group exists, send to the group and to a user, then close the connection.
//   HUB_URL=… HUB_KEY=condt_… HUB_KEY_ID=1 HUB_SERVER_KEY=rhsk_… node manage.mjs
import { HubConnectionBuilder } from "@microsoft/signalr";

const baseUrl = process.env.HUB_URL ?? "http://127.0.0.1:8080";
const virtualKey = process.env.HUB_KEY;
const virtualKeyId = process.env.HUB_KEY_ID;
const serverKey = process.env.HUB_SERVER_KEY;

const connection = new HubConnectionBuilder()
  .withUrl(`${baseUrl}/hubs/notifications`, { accessTokenFactory: () => virtualKey })
  .withAutomaticReconnect()
  .build();
const received = [];
connection.on("SystemAlert", (alert) => received.push(alert.message));
const closed = new Promise((resolve) => connection.onclose(resolve));
await connection.start();

// #region manage
const api = `${baseUrl}/api/hubs/notifications`;
const headers = { Authorization: `Bearer ${serverKey}`, "Content-Type": "application/json" };
const call = (method, path, body) =>
  fetch(`${api}${path}`, { method, headers, body: body && JSON.stringify(body) });
const id = encodeURIComponent(connection.connectionId);

// Add the connection to group "ops", and check that the group now exists.
console.log("add to ops:", (await call("PUT", `/groups/ops/connections/${id}`)).status); // 200
console.log("ops exists:", (await call("HEAD", "/groups/ops")).status); // 200

// Send to the group, and to every connection of a virtual key (a "user" is its id).
await call("POST", "/groups/ops/:send", { target: "SystemAlert", arguments: [{ message: "to ops" }] });
await call("POST", `/users/${virtualKeyId}/:send`, {
  target: "SystemAlert",
  arguments: [{ message: "to the key" }],
});

// Close the connection: the client gets Close with this reason and does not reconnect.
console.log("close:", (await call("DELETE", `/connections/${id}?reason=maintenance`)).status); // 200
// #endregion

const error = await closed;
console.log("received:", received.join(", "));
console.log("closed by the server:", error.message);
