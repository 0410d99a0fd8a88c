// S4-style echo: every connection invokes `Echo(<SIZE-character string>)` on an open-loop
// schedule (a constant arrival rate that does not wait for completions), checks that each
// completion carries back exactly the string sent, and records the round-trip time.
//
// Env: URL, HUB, VUS, CONNS (connections per VU), RATE (invocations per second over all
// connections), DURATION (sending time), SIZE (argument length), TICK_MS (scheduler tick),
// DRAIN (how long to wait for the last completions), RTT_P99_MS. See loadtest/README.md.
//
//   k6 run -e VUS=10 -e CONNS=10 -e RATE=10000 -e DURATION=30s -e SIZE=128 loadtest/k6/echo.js

import { check } from 'k6';
import exec from 'k6/execution';
import { setInterval, clearInterval, setTimeout, clearTimeout } from 'k6/timers';
import { Counter, Trend } from 'k6/metrics';
import { HubConnection, baseSettings, envInt, envStr, padded, parseDuration } from './lib/signalr.js';

const settings = baseSettings();
const VUS = envInt('VUS', 1);
const CONNS = envInt('CONNS', 100);
const RATE = envInt('RATE', 1000);
const SEND_MS = parseDuration(envStr('DURATION', ''), '30s');
const SIZE = envInt('SIZE', 128);
const TICK_MS = envInt('TICK_MS', 10);
const DRAIN_MS = parseDuration(envStr('DRAIN', ''), '5s');
const RTT_P99_MS = envInt('RTT_P99_MS', 100);

const rtt = new Trend('echo_rtt', true);
const sent = new Counter('echo_sent');
const matched = new Counter('echo_ok');
const mismatched = new Counter('echo_mismatched');
const hubErrors = new Counter('echo_hub_errors');
const lost = new Counter('echo_lost');
const connectFailed = new Counter('echo_connect_failed');

export const options = {
  scenarios: {
    echo: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: 1,
      maxDuration: `${Math.ceil((SEND_MS + DRAIN_MS) / 1000) + 60}s`,
      gracefulStop: '10s',
    },
  },
  thresholds: {
    checks: ['rate==1'],
    echo_mismatched: ['count==0'],
    echo_hub_errors: ['count==0'],
    echo_lost: ['count==0'],
    echo_connect_failed: ['count==0'],
    signalr_protocol_errors: ['count==0'],
    echo_rtt: [`p(99)<${RTT_P99_MS}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'p(99.9)', 'max'],
};

// This VU's tallies, added to the counters once at the end: one metric sample per counter
// per VU instead of one per invocation keeps k6's own cost per echo down.
const tally = { sent: 0, ok: 0, mismatched: 0, hubErrors: 0, lost: 0 };

function oneEcho(conn, payload) {
  tally.sent += 1;
  return conn.invoke('Echo', [payload]).then(
    (answer) => {
      const same = answer.error === undefined && answer.result === payload;
      check(answer, { 'Echo completion carries the argument back': () => same });
      if (answer.error !== undefined) {
        tally.hubErrors += 1;
      } else if (same) {
        tally.ok += 1;
        rtt.add(answer.rttMs);
      } else {
        tally.mismatched += 1;
      }
    },
    () => {
      // The connection closed before the completion came back.
      tally.lost += 1;
    },
  );
}

/**
 * Sends on this VU's connections, in turn, at RATE / VUS per second for SEND_MS: one timer
 * per VU (not per connection) keeps the event loop free for completions. Resolves with
 * every invocation's promise.
 */
function runSchedule(conns) {
  return new Promise((resolve) => {
    const calls = [];
    const perVu = RATE / VUS;
    const started = Date.now();
    let count = 0;
    let next = 0;
    const tick = Math.max(1, Math.min(TICK_MS, Math.floor(1000 / perVu)));
    const timer = setInterval(() => {
      const elapsed = Date.now() - started;
      const due = Math.floor((Math.min(elapsed, SEND_MS) * perVu) / 1000) - count;
      for (let i = 0; i < due; i += 1) {
        // Skip connections that closed; each invocation number is used once.
        let tries = 0;
        while (conns[next].conn.closed && tries < conns.length) {
          next = (next + 1) % conns.length;
          tries += 1;
        }
        if (tries === conns.length) {
          break;
        }
        const target = conns[next];
        calls.push(oneEcho(target.conn, padded(`${target.id}:${count}:`, SIZE)));
        count += 1;
        next = (next + 1) % conns.length;
      }
      if (elapsed >= SEND_MS || conns.every((c) => c.conn.closed)) {
        clearInterval(timer);
        resolve(calls);
      }
    }, tick);
  });
}

async function connect(id) {
  const conn = new HubConnection(settings);
  try {
    await conn.start();
  } catch (e) {
    connectFailed.add(1);
    check(false, { 'connected: negotiate, upgrade and handshake answered {}': (ok) => ok });
    console.warn(`connection ${id}: ${e.message}`);
    return null;
  }
  check(true, { 'connected: negotiate, upgrade and handshake answered {}': (ok) => ok });
  return { id, conn };
}

export default async function () {
  Object.assign(tally, { sent: 0, ok: 0, mismatched: 0, hubErrors: 0, lost: 0 });
  const vu = exec.vu.idInTest;
  const opened = await Promise.all(Array.from({ length: CONNS }, (_, i) => connect(`${vu}.${i}`)));
  const conns = opened.filter((c) => c !== null);
  if (conns.length === 0) {
    return;
  }
  const calls = await runSchedule(conns);
  const done = Promise.all(calls).then(() => true);
  let drainTimer = null;
  const expired = new Promise((resolve) => {
    drainTimer = setTimeout(() => resolve(false), DRAIN_MS);
  });
  const drained = await Promise.race([done, expired]);
  clearTimeout(drainTimer);
  for (const { id, conn } of conns) {
    if (!drained && conn.outstanding() > 0) {
      // Still missing after DRAIN: stop() rejects them, and they count as lost.
      console.warn(`connection ${id}: ${conn.outstanding()} completions missing after ${DRAIN_MS} ms`);
    }
    if (conn.closeError) {
      console.warn(`connection ${id}: ${conn.closeError}`);
    }
  }
  await Promise.all(conns.map(({ conn }) => conn.stop()));
  await done;
  sent.add(tally.sent);
  matched.add(tally.ok);
  mismatched.add(tally.mismatched);
  hubErrors.add(tally.hubErrors);
  lost.add(tally.lost);
}
