// Connection management: reconnect policies, stateful reconnect, timeouts, and retrying a
// refused start (429 when a limit is reached, 503 when the server is at its connection limit).
//   HUB_URL=… HUB_KEY=condt_… node reconnect.mjs
import { HubConnectionBuilder, HubConnectionState } from "@microsoft/signalr";

const baseUrl = process.env.HUB_URL ?? "http://127.0.0.1:8080";
const virtualKey = process.env.HUB_KEY;
const url = `${baseUrl}/hubs/image-generation`;
const options = { accessTokenFactory: () => virtualKey };

// #region retry-delays
// Conduit's SDK: retry at once, then after 2, 10 and 30 seconds, then give up (onclose).
const fixed = new HubConnectionBuilder()
  .withUrl(url, options)
  .withAutomaticReconnect([0, 2000, 10000, 30000])
  .build();
// #endregion

// #region retry-policy
// Keep trying forever, backing off to 30 s with jitter, so a drained or restarted fleet is not
// hit by every client at the same moment.
const forever = new HubConnectionBuilder()
  .withUrl(url, options)
  .withAutomaticReconnect({
    nextRetryDelayInMilliseconds: ({ previousRetryCount }) =>
      Math.min(30000, 500 * 2 ** previousRetryCount) * (0.5 + Math.random() / 2),
  })
  .build();
// #endregion

// #region stateful
// Stateful reconnect: a dropped socket is resumed on the same connection, and the messages
// sent meanwhile are replayed (ringhub keeps the session for signalr.disconnect_timeout, 15 s).
const stateful = new HubConnectionBuilder()
  .withUrl(url, options)
  .withAutomaticReconnect()
  .withStatefulReconnect({ bufferSize: 100000 })
  .build();
stateful.serverTimeoutInMilliseconds = 30000; // ringhub pings every 15 s (signalr.keepalive_interval)
stateful.keepAliveIntervalInMilliseconds = 15000;
// #endregion

// #region start-retry
// start() is not retried by withAutomaticReconnect: retry it yourself.
async function startWithRetry(connection, attempts = 10) {
  for (let attempt = 1; ; attempt++) {
    try {
      await connection.start();
      return;
    } catch (error) {
      // e.g. "…Status code '429'" (a connection limit), "…'503'" (the server is full)
      if (attempt === attempts) throw error;
      console.log(`start failed (${error.message}); retrying`);
      await new Promise((resolve) => setTimeout(resolve, Math.min(30000, 1000 * attempt)));
    }
  }
}
// #endregion

for (const [name, connection] of Object.entries({ fixed, forever, stateful })) {
  await startWithRetry(connection);
  await connection.invoke("SubscribeToTask", `task_${name}`);
  console.log(name, connection.state === HubConnectionState.Connected ? "connected" : connection.state);
  await connection.stop();
}
