// Connection lifecycle: the server closes the connection (here: a hub message over the 32 KiB
// limit, which ringhub answers with Close + allowReconnect), the client reconnects on its own,
// then the app stops it.
//   HUB_URL=… HUB_KEY=condt_… node lifecycle.mjs
import { HubConnectionBuilder } from "@microsoft/signalr";

const baseUrl = process.env.HUB_URL ?? "http://127.0.0.1:8080";
const virtualKey = process.env.HUB_KEY;

const connection = new HubConnectionBuilder()
  .withUrl(`${baseUrl}/hubs/navigation-state`, { accessTokenFactory: () => virtualKey })
  .withAutomaticReconnect()
  .build();

// #region lifecycle
connection.onreconnecting((error) => {
  console.log("Connection lost, attempting to reconnect...", error?.message ?? "");
});

connection.onreconnected((connectionId) => {
  console.log("Successfully reconnected as", connectionId);
});

connection.onclose((error) => {
  console.log("Connection closed", error ? `with error: ${error.message}` : "cleanly");
});
// #endregion

const reconnected = new Promise((resolve) => connection.onreconnected(resolve));
await connection.start();

// #region too-large
try {
  await connection.invoke("UpdateNavigation", { view: "x".repeat(40 * 1024) });
} catch (error) {
  // The server closed the connection: "Server returned an error on close: Connection closed
  // with an error." withAutomaticReconnect() reconnects, since ringhub allows it.
  console.log("invoke failed:", error.message);
}
// #endregion

await reconnected;
await connection.invoke("UpdateNavigation", { view: "after-reconnect" });
await connection.stop();
