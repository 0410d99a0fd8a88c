// The browser example of the docs (docs/examples/browser.html) in headless Chromium (Debian's,
// driven by playwright-core). Run by tests/docs_examples.rs, which serves the page and the
// official browser bundle from another origin (HUB_PAGE_URL; CORS allows it) and starts a
// server (HUB_BASE_URL) where HUB_VIRTUAL_KEY is a key; HUB_CHROMIUM is the browser.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const base = process.env.HUB_BASE_URL;
const pageUrl = process.env.HUB_PAGE_URL;
const key = process.env.HUB_VIRTUAL_KEY;
for (const [name, value] of Object.entries({ base, pageUrl, key })) {
  assert.ok(value, `${name} must be set (tests/docs_examples.rs sets it)`);
}

const WAIT = { timeout: 20000 };
let browser;

before(async () => {
  browser = await chromium.launch({ executablePath: process.env.HUB_CHROMIUM ?? "/usr/bin/chromium" });
});
after(async () => {
  await browser?.close();
});

test("the browser example connects through CORS with access_token and shows the navigation it sends", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  const sockets = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  page.on("websocket", (w) => sockets.push(w.url()));
  await page.goto(pageUrl);
  await page.fill("#server", base);
  await page.fill("#key", key);
  await page.click('#connect button');
  await page.waitForFunction(() => document.getElementById("state").textContent === "connected", null, WAIT);
  await page.waitForSelector("#navigate:not([disabled])", WAIT);
  await page.click("#navigate");
  await page.waitForFunction(
    () => document.getElementById("log").textContent.includes("User navigated to: conversation-detail"),
    null,
    WAIT,
  );
  assert.deepEqual(errors, [], "no page or console error");
  assert.equal(sockets.length, 1);
  const socket = new URL(sockets[0]);
  assert.equal(socket.pathname, "/hubs/navigation-state");
  assert.equal(socket.searchParams.get("access_token"), key, "the key goes in the WebSocket's query");
  await context.close();
});
