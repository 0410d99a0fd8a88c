// Quick start: connect to a virtual-key hub with the official client.
//   HUB_URL=http://127.0.0.1:8080 HUB_KEY=condt_… node quick-start.mjs
// #region connect
import { HubConnectionBuilder } from "@microsoft/signalr";

const baseUrl = process.env.HUB_URL ?? "http://127.0.0.1:8080";
const virtualKey = process.env.HUB_KEY; // condt_…, from `ringhub keys add --name dev`

const connection = new HubConnectionBuilder()
  .withUrl(`${baseUrl}/hubs/navigation-state`, {
    accessTokenFactory: () => virtualKey,
  })
  .withAutomaticReconnect()
  .build();

await connection.start();
console.log("connected, connection id", connection.connectionId);
// #endregion

await connection.stop();
console.log("stopped");
