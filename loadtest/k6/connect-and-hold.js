// S1-style idle connections: negotiate, WebSocket upgrade, SignalR JSON handshake, then hold
// each connection open for DURATION, sending keep-alive Pings and counting the server's.
//
// Env: URL, HUB, VUS, CONNS (connections per VU), DURATION (hold time of each connection),
// RAMP (new connections per second over the whole test, 0 = all at once), KEEPALIVE,
// SKIP_NEGOTIATE, CONNECT_P99_MS. See loadtest/README.md, "k6 scripts".
//
//   k6 run -e VUS=10 -e CONNS=100 -e DURATION=60s -e RAMP=1000 loadtest/k6/connect-and-hold.js

import { check } from 'k6';
import exec from 'k6/execution';
import { Counter } from 'k6/metrics';
import { HubConnection, baseSettings, delay, envInt, envStr, parseDuration } from './lib/signalr.js';

const settings = baseSettings();
const VUS = envInt('VUS', 1);
const CONNS = envInt('CONNS', 100);
const HOLD_MS = parseDuration(envStr('DURATION', ''), '30s');
const RAMP = envInt('RAMP', 0);
const CONNECT_P99_MS = envInt('CONNECT_P99_MS', 1000);

const total = VUS * CONNS;
const rampMs = RAMP > 0 ? Math.ceil((total * 1000) / RAMP) : 0;

const held = new Counter('hold_completed');
const dropped = new Counter('hold_dropped');
const failed = new Counter('hold_connect_failed');

export const options = {
  scenarios: {
    hold: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: 1,
      maxDuration: `${Math.ceil((rampMs + HOLD_MS) / 1000) + 60}s`,
      gracefulStop: '10s',
    },
  },
  thresholds: {
    checks: ['rate==1'],
    hold_dropped: ['count==0'],
    hold_connect_failed: ['count==0'],
    signalr_protocol_errors: ['count==0'],
    signalr_connect_duration: [`p(99)<${CONNECT_P99_MS}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
};

async function holdOne(index) {
  if (RAMP > 0) {
    await delay((index * 1000) / RAMP);
  }
  const conn = new HubConnection(settings);
  try {
    await conn.start();
  } catch (e) {
    failed.add(1);
    check(false, { 'connected: negotiate, upgrade and handshake answered {}': (ok) => ok });
    console.warn(`connection ${index}: ${e.message}`);
    return;
  }
  check(true, { 'connected: negotiate, upgrade and handshake answered {}': (ok) => ok });
  const stayed = await conn.holdFor(HOLD_MS);
  check(stayed, { 'held open for DURATION': (ok) => ok });
  if (stayed) {
    held.add(1);
  } else {
    dropped.add(1);
    console.warn(`connection ${index} closed early: ${conn.closeError}`);
  }
  await conn.stop();
}

export default async function () {
  const vu = exec.vu.idInTest - 1;
  const opens = [];
  for (let i = 0; i < CONNS; i += 1) {
    // Interleave VUs so that a ramp opens connections evenly across them.
    opens.push(holdOne(i * VUS + vu));
  }
  await Promise.all(opens);
}
