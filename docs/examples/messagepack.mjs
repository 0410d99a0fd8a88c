// The MessagePack hub protocol: smaller frames, binary payloads. Every seed hub speaks both
// JSON and MessagePack; a message published once reaches clients of either protocol.
//   HUB_URL=… HUB_KEY=condt_… node messagepack.mjs
import { HubConnectionBuilder } from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const baseUrl = process.env.HUB_URL ?? "http://127.0.0.1:8080";
const virtualKey = process.env.HUB_KEY;

// #region messagepack
const connection = new HubConnectionBuilder()
  .withUrl(`${baseUrl}/hubs/navigation-state`, { accessTokenFactory: () => virtualKey })
  .withHubProtocol(new MessagePackHubProtocol())
  .withAutomaticReconnect()
  .build();
// #endregion

await connection.start();
await connection.invoke("UpdateNavigation", { view: "over-messagepack" });
const state = await connection.invoke("GetNavigationState");
console.log("state over MessagePack:", state.currentView);
await connection.stop();
