// The Admin hub: admin keys only; every connection is in group `admin`, and
// SubscribeToVirtualKey(id) adds group `admin-vkey-{id}`.
//   HUB_URL=… HUB_ADMIN_KEY=… HUB_KEY=condt_… HUB_KEY_ID=1 HUB_SERVER_KEY=rhsk_… node admin.mjs
import { HubConnectionBuilder } from "@microsoft/signalr";

const baseUrl = process.env.HUB_URL ?? "http://127.0.0.1:8080";
const adminKey = process.env.HUB_ADMIN_KEY;
const virtualKey = process.env.HUB_KEY;
const virtualKeyId = process.env.HUB_KEY_ID;
const serverKey = process.env.HUB_SERVER_KEY;

// #region admin-connect
const admin = new HubConnectionBuilder()
  .withUrl(`${baseUrl}/hubs/admin`, {
    accessTokenFactory: () => adminKey, // an admin key: its SHA-256 is in auth.admin_key_hashes
  })
  .withAutomaticReconnect()
  .build();

admin.on("VirtualKeyUpdate", (update) => console.log("admin update:", update.message));
await admin.start();
await admin.invoke("SubscribeToVirtualKey", virtualKeyId); // joins admin-vkey-{id}
// #endregion

const heard = new Promise((resolve) => {
  let count = 0;
  admin.on("VirtualKeyUpdate", () => ++count === 2 && resolve());
});

// #region admin-publish
// Backend side: one event for every admin, one for those watching this key.
for (const [group, message] of [
  ["admin", "maintenance at 18:00"],
  [`admin-vkey-${virtualKeyId}`, `key ${virtualKeyId} reached 80% of its budget`],
]) {
  const response = await fetch(`${baseUrl}/api/hubs/admin/groups/${group}/:send`, {
    method: "POST",
    headers: { Authorization: `Bearer ${serverKey}`, "Content-Type": "application/json" },
    body: JSON.stringify({ target: "VirtualKeyUpdate", arguments: [{ message }] }),
  });
  console.log(`sent to ${group}:`, response.status);
}
// #endregion
await heard;

// #region admin-refused
// A virtual key is refused by the Admin hub: negotiate answers 403.
const notAdmin = new HubConnectionBuilder()
  .withUrl(`${baseUrl}/hubs/admin`, { accessTokenFactory: () => virtualKey })
  .build();
try {
  await notAdmin.start();
} catch (error) {
  // "Failed to complete negotiation with the server: Error: {"error":"this hub requires an
  // admin key"}: Status code '403'"
  console.log("virtual key on the Admin hub:", /Status code '(\d+)'/.exec(error.message)?.[1]);
}
// #endregion

await admin.stop();
