// Client-side debug logging: what the client negotiates, which transport it picks, every
// message it sends and receives.
//   HUB_URL=… node debug-logging.mjs
import { HubConnectionBuilder, LogLevel } from "@microsoft/signalr";

const baseUrl = process.env.HUB_URL ?? "http://127.0.0.1:8080";
const hubUrl = `${baseUrl}/hubs/health`;

// #region debug-logging
const connection = new HubConnectionBuilder()
  .withUrl(hubUrl)
  .configureLogging(LogLevel.Debug)
  .build();
// #endregion

await connection.start();
await connection.invoke("GetHealth");
await connection.stop();
