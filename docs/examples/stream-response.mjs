// A streamed response: the client streams a key (ContentGeneration's StreamResponse(requestId)
// streams `response-{requestId}`), the backend posts the chunks as it generates them.
//   HUB_URL=… HUB_KEY=condt_… HUB_SERVER_KEY=rhsk_… node stream-response.mjs
import { HubConnectionBuilder } from "@microsoft/signalr";

const baseUrl = process.env.HUB_URL ?? "http://127.0.0.1:8080";
const virtualKey = process.env.HUB_KEY;
const serverKey = process.env.HUB_SERVER_KEY;

const connection = new HubConnectionBuilder()
  .withUrl(`${baseUrl}/hubs/content-generation`, { accessTokenFactory: () => virtualKey })
  .withAutomaticReconnect()
  .build();
await connection.start();
const requestId = crypto.randomUUID();

// #region stream-client
let answer = "";
const done = new Promise((resolve, reject) => {
  connection.stream("StreamResponse", requestId).subscribe({
    next: (chunk) => (answer += chunk.delta),
    complete: () => resolve(answer),
    error: (err) => reject(err), // err.message is the backend's `error` text
  });
});
// #endregion

// #region stream-backend
// Backend side: append items, then end the stream (or fail it with :error).
async function post(action, body) {
  const url = `${baseUrl}/api/hubs/content-generation/streams/response-${requestId}/:${action}`;
  const response = await fetch(url, {
    method: "POST",
    headers: { Authorization: `Bearer ${serverKey}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status !== 202) throw new Error(`${response.status} ${await response.text()}`);
}

for (const delta of ["Hello", ", ", "world"]) {
  await post("item", { item: { delta } });
}
await post("complete");
// #endregion

console.log("streamed answer:", await done);

// #region stream-late
// A client that subscribes after the backend finished still gets the kept chunks
// (signalr.stream_backlog_window, 30 s by default), then the completion.
const replayed = [];
await new Promise((resolve, reject) =>
  connection.stream("StreamResponse", requestId).subscribe({
    next: (chunk) => replayed.push(chunk.delta),
    complete: resolve,
    error: reject,
  }),
);
console.log("replayed to a late subscriber:", replayed.join(""));
// #endregion

await connection.stop();
