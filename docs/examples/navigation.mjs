// NavigationState: every connection of a key shares the key's latest navigation state.
//   HUB_URL=http://127.0.0.1:8080 HUB_KEY=condt_… node navigation.mjs
import { HubConnectionBuilder } from "@microsoft/signalr";

const baseUrl = process.env.HUB_URL ?? "http://127.0.0.1:8080";
const virtualKey = process.env.HUB_KEY;

function connect() {
  return new HubConnectionBuilder()
    .withUrl(`${baseUrl}/hubs/navigation-state`, { accessTokenFactory: () => virtualKey })
    .withAutomaticReconnect()
    .build();
}

// Two tabs of the same user (the same virtual key).
const connection = connect();
const otherTab = connect();
await Promise.all([connection.start(), otherTab.start()]);
const heardInOtherTab = new Promise((resolve) =>
  otherTab.on("NavigationUpdated", (state) => state.view === "conversation-detail" && resolve(state)),
);

// #region navigation
// Subscribe to navigation updates (sent to every connection of the key, this one included)
connection.on("NavigationUpdated", (state) => {
  console.log("User navigated to:", state.currentView);
});

// Update navigation
await connection.invoke("UpdateNavigation", {
  view: "conversation-detail",
  conversationId: "123",
});
// #endregion

const seen = await heardInOtherTab;
console.log("the other tab heard conversation", seen.conversationId);

// #region get-state
const state = await connection.invoke("GetNavigationState"); // null until the key's first update
console.log("current view:", state?.currentView);
// #endregion

// #region initial-state
// A connection opened later gets the key's current state right after it connects.
const lateTab = connect();
const initial = new Promise((resolve) => lateTab.on("NavigationUpdated", resolve));
await lateTab.start();
console.log("late tab starts at:", (await initial).currentView);
// #endregion

await Promise.all([connection.stop(), otherTab.stop(), lateTab.stop()]);
