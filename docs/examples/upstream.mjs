// An upstream method: ringhub POSTs the invocation to your backend and completes it with the
// answer. Needs a hub bound to this backend (upstream.toml):
//   ringhub --config upstream.toml   (plus your auth settings)
//   HUB_URL=… HUB_KEY=condt_… BACKEND_PORT=9000 node upstream.mjs
import http from "node:http";
import { HubConnectionBuilder } from "@microsoft/signalr";

const baseUrl = process.env.HUB_URL ?? "http://127.0.0.1:8080";
const virtualKey = process.env.HUB_KEY;
const port = Number(process.env.BACKEND_PORT ?? 9000);

// #region upstream-backend
// Your backend: one POST per invocation, one per connect and disconnect.
const backend = http.createServer(async (request, response) => {
  let body = "";
  for await (const chunk of request) body += chunk;
  const call = JSON.parse(body);
  if (request.url === "/assistant/events") {
    console.log(`${call.event}: ${call.connectionId} (key ${call.virtualKeyId})`);
    response.writeHead(204).end();
  } else if (call.arguments[0] === "") {
    // Any non-2xx status fails the invocation; the client sees the body's `error` text.
    response.writeHead(422, { "Content-Type": "application/json" });
    response.end(JSON.stringify({ error: "Ask needs a question" }));
  } else {
    // A 2xx body is the invocation's result.
    response.writeHead(200, { "Content-Type": "application/json" });
    response.end(JSON.stringify({ answer: `You asked: ${call.arguments[0]}`, key: call.virtualKeyId }));
  }
});
backend.listen(port, "127.0.0.1");
// #endregion
await new Promise((resolve) => backend.once("listening", resolve));

const connection = new HubConnectionBuilder()
  .withUrl(`${baseUrl}/hubs/assistant`, { accessTokenFactory: () => virtualKey })
  .build();
await connection.start();

// #region upstream-client
const reply = await connection.invoke("Ask", "What is ringhub?");
console.log(reply.answer);

try {
  await connection.invoke("Ask", "");
} catch (error) {
  // "An unexpected error occurred invoking 'Ask' on the server. HubException: Ask needs a question"
  console.log(error.message);
}
// #endregion

await connection.stop();
await new Promise((resolve) => setTimeout(resolve, 300)); // let the disconnect event arrive
backend.close();
