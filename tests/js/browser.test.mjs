// The status page and the official browser client in headless Chromium (Debian's, driven by
// playwright-core; no Playwright browser download). Run by tests/status_page.rs, which starts
// a two-shard server (HUB_BASE_URL; CORS allows HUB_APP_ORIGIN only; Health pushes every
// 500 ms), a server whose Health hub needs a virtual key (HUB_KEYED_BASE_URL), and two static
// origins that serve the official @microsoft/signalr browser bundle (HUB_APP_ORIGIN,
// HUB_FOREIGN_ORIGIN); HUB_VIRTUAL_KEY is a key of both servers, HUB_CHROMIUM the browser.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import * as signalR from "@microsoft/signalr";

const base = process.env.HUB_BASE_URL;
const keyedBase = process.env.HUB_KEYED_BASE_URL;
const appOrigin = process.env.HUB_APP_ORIGIN;
const foreignOrigin = process.env.HUB_FOREIGN_ORIGIN;
const key = process.env.HUB_VIRTUAL_KEY;
for (const [name, value] of Object.entries({ base, keyedBase, appOrigin, foreignOrigin, key })) {
  assert.ok(value, `${name} must be set (tests/status_page.rs sets it)`);
}

const WAIT = { timeout: 20000 };
let browser;

before(async () => {
  browser = await chromium.launch({ executablePath: process.env.HUB_CHROMIUM ?? "/usr/bin/chromium" });
});
after(async () => {
  await browser?.close();
});

/// A fresh page that records CSP violations, page errors and every URL it requests.
async function openPage() {
  const context = await browser.newContext();
  const page = await context.newPage();
  const seen = { errors: [], requests: [], sockets: [] };
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (e) =>
      window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`),
    );
  });
  page.on("pageerror", (e) => seen.errors.push(e.message));
  page.on("console", (m) => m.type() === "error" && seen.errors.push(m.text()));
  page.on("request", (r) => seen.requests.push(r.url()));
  page.on("websocket", (w) => seen.sockets.push(w.url()));
  return { context, page, seen };
}

/// The number shown in element `id` (grouping separators removed).
async function number(page, id) {
  const text = await page.textContent(`#${id}`);
  return Number(text.replace(/[^0-9.]/g, ""));
}

/// Waits until the number shown in `id` is `op` (">", ">=" or "==") `than`.
function waitNumber(page, id, op, than) {
  return page.waitForFunction(
    ({ id, op, than }) => {
      const text = document.getElementById(id).textContent;
      const value = Number(text.replace(/[^0-9.]/g, ""));
      if (text === "–" || Number.isNaN(value)) return false;
      return op === ">" ? value > than : op === ">=" ? value >= than : value === than;
    },
    { id, op, than },
    WAIT,
  );
}

function client(path, token) {
  return new signalR.HubConnectionBuilder()
    .withUrl(`${base}${path}`, {
      transport: signalR.HttpTransportType.WebSockets,
      accessTokenFactory: () => token,
    })
    .configureLogging(signalR.LogLevel.None)
    .build();
}

test("the status page loads under its CSP, connects to the Health hub and its numbers follow the traffic", async () => {
  const { context, page, seen } = await openPage();
  const response = await page.goto(`${base}/`);
  assert.match(response.headers()["content-security-policy"], /^default-src 'none'; script-src 'sha256-/);
  await page.waitForSelector('#state[data-state="connected"]', WAIT);
  await waitNumber(page, "connections", ">=", 1);
  const connections = await number(page, "connections");
  const deliveries = await number(page, "deliveries");
  const received = await number(page, "messages-received");

  // Traffic: three official-client connections of one key, and updates every one of them hears.
  const clients = [0, 1, 2].map(() => client("/hubs/navigation-state", key));
  await Promise.all(clients.map((c) => c.start()));
  await waitNumber(page, "connections", ">=", connections + 3);
  await page.waitForFunction(
    () => document.querySelector('#by-hub tr[data-hub="navigation-state"] td.n')?.textContent === "3",
    null,
    WAIT,
  );
  // Updates (each heard by three connections) until the page shows a busy message rate; the
  // idle rate is the page's own polling, about one message a second. Bounded: at most 600.
  const BUSY_RATE = 5;
  for (let i = 0; i < 600; i++) {
    await clients[i % 3].invoke("UpdateNavigation", { view: `browser-${i}` });
    if ((await number(page, "messages-per-second")) > BUSY_RATE) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  await waitNumber(page, "deliveries", ">", deliveries);
  await waitNumber(page, "messages-received", ">", received);
  await waitNumber(page, "messages-per-second", ">", BUSY_RATE);

  await Promise.all(clients.map((c) => c.stop()));
  await waitNumber(page, "connections", "==", connections);
  assert.equal(await page.textContent('#by-hub tr[data-hub="navigation-state"] td.n'), "0");
  assert.equal(await page.textContent("#backplane-state"), "up");
  assert.equal(await number(page, "shards"), 2);

  assert.deepEqual(await page.evaluate(() => window.__cspViolations), [], "no CSP violation");
  assert.deepEqual(seen.errors, [], "no page or console error");
  const own = (url) => url.startsWith(`${base}/`) || url.startsWith(`${base.replace("http", "ws")}/`);
  assert.deepEqual(seen.requests.filter((u) => !own(u)), [], "nothing loaded from elsewhere");
  assert.equal(seen.sockets.length, 1);
  assert.match(seen.sockets[0], /\/hubs\/health\?id=/);
  await context.close();
});

test("the status page reconnects with backoff after its WebSocket drops, and says so", async () => {
  const { context, page } = await openPage();
  const routes = [];
  await page.routeWebSocket(/\/hubs\/health\?/, (ws) => {
    const server = ws.connectToServer();
    routes.push({ ws, server });
  });
  await page.goto(`${base}/`);
  await page.waitForSelector('#state[data-state="connected"]', WAIT);
  await routes[0].ws.close({ code: 1011, reason: "dropped by the test" });
  await routes[0].server.close();
  await page.waitForFunction(() => document.getElementById("notice").textContent.includes("Connection lost"), null, WAIT);
  await page.waitForSelector('#state[data-state="connected"]', WAIT);
  assert.equal(routes.length, 2, "one new connection");
  await waitNumber(page, "connections", ">=", 1);
  await context.close();
});

test("a Health hub that needs a key: the page says so, refuses a wrong key and connects with the right one", async () => {
  const { context, page } = await openPage();
  await page.goto(`${keyedBase}/`);
  await page.waitForSelector('#state[data-state="needs-key"]', WAIT);
  assert.ok(await page.isVisible("#key-form"));
  assert.match(await page.textContent("#notice"), /needs a virtual key/);

  await page.fill("#key", "condt_NotAKeyNotAKeyNotAKeyNotAKey123");
  await page.click('#key-form button[type="submit"]');
  await page.waitForFunction(() => document.getElementById("notice").textContent.includes("refused"), null, WAIT);
  assert.equal(await page.getAttribute("#state", "data-state"), "needs-key");

  await page.fill("#key", key);
  await page.click('#key-form button[type="submit"]');
  await page.waitForSelector('#state[data-state="connected"]', WAIT);
  await waitNumber(page, "connections", ">=", 1);
  assert.ok(!(await page.isVisible("#key-form")));
  // The key stays with the tab: a reload connects without asking.
  await page.reload();
  await page.waitForSelector('#state[data-state="connected"]', WAIT);
  await context.close();
});

test("the official browser bundle on another origin connects to a virtual-key hub through the CORS preflight and access_token", async () => {
  const { context, page, seen } = await openPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  const preflights = [];
  cdp.on("Network.responseReceived", (e) => {
    if (e.type === "Preflight") {
      preflights.push({ url: e.response.url, status: e.response.status, headers: e.response.headers });
    }
  });
  await page.goto(`${appOrigin}/`);
  const result = await page.evaluate(
    async ({ url, key }) => {
      const connection = new signalR.HubConnectionBuilder()
        .withUrl(url, { accessTokenFactory: () => key })
        .configureLogging(signalR.LogLevel.Warning)
        .build();
      // The first push may be the key's current state (sent on connect); wait for ours.
      const pushed = new Promise((resolve) =>
        connection.on("NavigationUpdated", (state) => state.view === "from-another-origin" && resolve(state)),
      );
      await connection.start();
      await connection.invoke("UpdateNavigation", { view: "from-another-origin" });
      const event = await pushed;
      const state = await connection.invoke("GetNavigationState");
      await connection.stop();
      return { event, state };
    },
    { url: `${base}/hubs/navigation-state`, key },
  );
  const expected = { view: "from-another-origin", currentView: "from-another-origin" };
  assert.deepEqual(result, { event: expected, state: expected });

  const negotiate = `${base}/hubs/navigation-state/negotiate`;
  const preflight = preflights.find((p) => p.url.startsWith(negotiate));
  assert.ok(preflight, `a CORS preflight of negotiate; saw ${JSON.stringify(preflights)}`);
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers["access-control-allow-origin"], appOrigin);
  assert.match(preflight.headers["access-control-allow-headers"], /authorization/i);
  assert.equal(seen.sockets.length, 1);
  const socket = new URL(seen.sockets[0]);
  assert.equal(socket.origin, base.replace("http", "ws"));
  assert.equal(socket.pathname, "/hubs/navigation-state");
  assert.equal(socket.searchParams.get("access_token"), key, "browsers send the key in the query");
  await context.close();
});

test("the official browser bundle on an origin CORS does not allow cannot negotiate", async () => {
  const { context, page, seen } = await openPage();
  await page.goto(`${foreignOrigin}/`);
  const error = await page.evaluate(
    async ({ url, key }) => {
      const connection = new signalR.HubConnectionBuilder()
        .withUrl(url, { accessTokenFactory: () => key })
        .configureLogging(signalR.LogLevel.None)
        .build();
      try {
        await connection.start();
        return null;
      } catch (e) {
        return String(e && e.message);
      }
    },
    { url: `${base}/hubs/navigation-state`, key },
  );
  assert.match(error ?? "connected", /negotiat/i);
  assert.equal(seen.sockets.length, 0, "no WebSocket was opened");
  assert.ok(seen.errors.some((e) => /CORS/.test(e)), `the browser reports CORS: ${seen.errors}`);
  await context.close();
});
