// S3-style group delivery: subscribers join GROUP on the Diagnostics hub (`JoinGroup`),
// count the numbered `Send` events they receive, and check that none was lost, duplicated
// or late, against the end marker every publisher sends last (lib/sequence.js).
//
// Publishers:
// - PUBLISH=hub (default): this script also runs PUBLISHERS hub connections that invoke
//   `SendToGroup(GROUP, <numbered message>)` at RATE messages per second in all, starting
//   START_DELAY after the subscribers, for DURATION;
// - PUBLISH=none: subscribers only, paired with another process, e.g. rest-publish.js with
//   the same GROUP; they wait for EXPECT_PUBLISHERS end markers, at most DURATION.
//
// Env: URL, HUB, VUS, CONNS (subscriber connections per VU), GROUP, PUBLISH, PUBLISHERS,
// EXPECT_PUBLISHERS, RATE, DURATION, SIZE, START_DELAY, DRAIN, LATENCY_P99_MS, TICK_MS.
// See loadtest/README.md, "k6 scripts".
//
//   k6 run -e VUS=10 -e CONNS=10 -e RATE=100 -e DURATION=30s loadtest/k6/subscribe-group.js

import { check } from 'k6';
import exec from 'k6/execution';
import { setInterval, clearInterval } from 'k6/timers';
import { Counter, Trend } from 'k6/metrics';
import { HubConnection, baseSettings, envInt, envStr, parseDuration } from './lib/signalr.js';
import { SequenceTracker, endMarker, numbered } from './lib/sequence.js';

const settings = baseSettings();
const VUS = envInt('VUS', 1);
const CONNS = envInt('CONNS', 100);
const GROUP = envStr('GROUP', 'k6-group');
const PUBLISH = envStr('PUBLISH', 'hub');
if (PUBLISH !== 'hub' && PUBLISH !== 'none') {
  throw new Error(`PUBLISH must be 'hub' or 'none', not '${PUBLISH}'`);
}
const PUBLISHERS = PUBLISH === 'hub' ? envInt('PUBLISHERS', 1) : 0;
const EXPECT = PUBLISH === 'hub' ? PUBLISHERS : envInt('EXPECT_PUBLISHERS', 1);
const RATE = envInt('RATE', 10);
const DURATION_MS = parseDuration(envStr('DURATION', ''), '30s');
const SIZE = envInt('SIZE', 256);
const START_DELAY_MS = parseDuration(envStr('START_DELAY', ''), '5s');
const DRAIN_MS = parseDuration(envStr('DRAIN', ''), '10s');
const LATENCY_P99_MS = envInt('LATENCY_P99_MS', 1000);
const TICK_MS = envInt('TICK_MS', 10);

// When subscribers give up waiting for end markers, counted from the start of the test.
const holdUntilMs = PUBLISH === 'hub' ? START_DELAY_MS + DURATION_MS + DRAIN_MS : DURATION_MS;

const received = new Counter('group_received');
const lostCount = new Counter('group_lost');
const duplicates = new Counter('group_duplicates');
const reordered = new Counter('group_reordered');
const missingEnd = new Counter('group_missing_end');
const joinedLate = new Counter('group_joined_late');
const foreign = new Counter('group_foreign_events');
// Numbers at or above a publisher's end marker: the marker undercounted (a harness fault).
const afterEnd = new Counter('group_after_end');
const latency = new Trend('group_delivery_latency', true);
const joinRtt = new Trend('group_join_rtt', true);
const published = new Counter('group_published');
const publishErrors = new Counter('group_publish_errors');
const connectFailed = new Counter('group_connect_failed');

const scenarios = {
  subscribers: {
    executor: 'per-vu-iterations',
    exec: 'subscriber',
    vus: VUS,
    iterations: 1,
    maxDuration: `${Math.ceil(holdUntilMs / 1000) + 60}s`,
    gracefulStop: '10s',
  },
};
if (PUBLISHERS > 0) {
  scenarios.publisher = {
    executor: 'per-vu-iterations',
    exec: 'publisher',
    vus: PUBLISHERS,
    iterations: 1,
    startTime: `${START_DELAY_MS}ms`,
    maxDuration: `${Math.ceil((DURATION_MS + DRAIN_MS) / 1000) + 60}s`,
    gracefulStop: '10s',
  };
}

export const options = {
  scenarios,
  thresholds: {
    checks: ['rate==1'],
    group_lost: ['count==0'],
    group_duplicates: ['count==0'],
    group_after_end: ['count==0'],
    group_missing_end: ['count==0'],
    group_joined_late: ['count==0'],
    group_publish_errors: ['count==0'],
    group_connect_failed: ['count==0'],
    signalr_protocol_errors: ['count==0'],
    group_delivery_latency: [`p(99)<${LATENCY_P99_MS}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
};

/** Milliseconds since the epoch at which the test started (same for every VU). */
function testStart() {
  return Date.now() - exec.instance.currentTestRunDuration;
}

async function subscribeOne(id, deadline, publishStart) {
  const conn = new HubConnection(settings);
  const tracker = new SequenceTracker();
  // Counted here and added once at the end: one sample per subscriber, not per event.
  let count = 0;
  let wake = null;
  conn.on('Send', (args) => {
    // null: not one of ours (another test's traffic on the same group, say), counted by
    // the tracker as foreign.
    const seen = tracker.record(args[0]);
    if (seen !== null && seen.end) {
      if (EXPECT > 0 && tracker.ended() >= EXPECT && wake) {
        wake();
      }
    } else if (seen !== null) {
      count += 1;
      latency.add(seen.latencyMs);
    }
  });
  try {
    await conn.start();
  } catch (e) {
    connectFailed.add(1);
    check(false, { 'connected: negotiate, upgrade and handshake answered {}': (ok) => ok });
    console.warn(`subscriber ${id}: ${e.message}`);
    return;
  }
  check(true, { 'connected: negotiate, upgrade and handshake answered {}': (ok) => ok });
  let joined;
  try {
    joined = await conn.invoke('JoinGroup', [GROUP]);
  } catch (e) {
    joined = { error: e.message };
  }
  check(joined, { 'JoinGroup completed without error': (j) => j.error === undefined });
  if (joined.error !== undefined) {
    console.warn(`subscriber ${id}: JoinGroup failed: ${joined.error}`);
    await conn.stop();
    return;
  }
  joinRtt.add(joined.rttMs);
  if (publishStart !== null && Date.now() > publishStart) {
    joinedLate.add(1);
    console.warn(`subscriber ${id} joined after the publishers started: raise START_DELAY`);
  }

  // Hold until every expected end marker arrived, the deadline passed, or the socket closed.
  const allEnded = new Promise((resolve) => {
    wake = resolve;
    if (EXPECT > 0 && tracker.ended() >= EXPECT) {
      resolve();
    }
  });
  await Promise.race([allEnded, conn.holdFor(deadline - Date.now())]);
  if (conn.closeError) {
    console.warn(`subscriber ${id}: ${conn.closeError}`);
  }
  await conn.stop();

  received.add(count);
  let lost = 0;
  let dups = 0;
  for (const s of tracker.summary()) {
    lost += s.lost;
    dups += s.duplicates;
    afterEnd.add(s.beyondEnd);
    reordered.add(s.reordered);
    if (s.lost > 0) {
      console.warn(`subscriber ${id}: lost ${s.lost} of ${s.expected} from ${s.publisher}`);
    }
  }
  lostCount.add(lost);
  foreign.add(tracker.foreign);
  duplicates.add(dups);
  if (EXPECT > 0) {
    const ended = tracker.ended();
    if (ended < EXPECT) {
      missingEnd.add(EXPECT - ended);
    }
    check(ended, { "every publisher's end marker arrived": (n) => n >= EXPECT });
  }
  check(lost, { 'no numbered Send was lost': (n) => n === 0 });
  check(dups, { 'no numbered Send was duplicated': (n) => n === 0 });
}

/** The subscribers' scenario: CONNS connections per VU in GROUP. */
export async function subscriber() {
  const start = testStart();
  const deadline = start + holdUntilMs;
  const publishStart = PUBLISH === 'hub' ? start + START_DELAY_MS : null;
  const vu = exec.vu.idInTest;
  const runs = [];
  for (let i = 0; i < CONNS; i += 1) {
    runs.push(subscribeOne(`${vu}.${i}`, deadline, publishStart));
  }
  await Promise.all(runs);
}

/** The hub publishers' scenario: SendToGroup at RATE / PUBLISHERS per second each, then the end marker. */
export async function publisher() {
  const id = `hub-${exec.vu.idInScenario}-${testStart()}`;
  const perPublisher = RATE / PUBLISHERS;
  const conn = new HubConnection(settings);
  try {
    await conn.start();
  } catch (e) {
    connectFailed.add(1);
    check(false, { 'publisher connected': (ok) => ok });
    console.warn(`publisher ${id}: ${e.message}`);
    return;
  }
  const calls = [];
  const publish = (message) =>
    conn.invoke('SendToGroup', [GROUP, message]).then(
      (answer) => {
        if (answer.error !== undefined) {
          publishErrors.add(1);
          console.warn(`publisher ${id}: SendToGroup failed: ${answer.error}`);
        }
        return answer.error === undefined;
      },
      () => {
        publishErrors.add(1);
        return false;
      },
    );
  await new Promise((resolve) => {
    const started = Date.now();
    let count = 0;
    const tick = Math.max(1, Math.min(TICK_MS, Math.floor(1000 / perPublisher)));
    const timer = setInterval(() => {
      const elapsed = Date.now() - started;
      const due = Math.floor((Math.min(elapsed, DURATION_MS) * perPublisher) / 1000) - count;
      for (let i = 0; i < due && !conn.closed; i += 1) {
        calls.push(publish(numbered(id, count, SIZE)));
        count += 1;
      }
      if (elapsed >= DURATION_MS || conn.closed) {
        clearInterval(timer);
        resolve();
      }
    }, tick);
  });
  published.add(calls.length);
  // The end marker goes once every numbered message was accepted, so it is delivered last.
  const results = await Promise.all(calls);
  const ok = results.every((r) => r);
  check(ok, { 'every SendToGroup completed without error': (v) => v });
  const end = await publish(endMarker(id, calls.length));
  check(end, { 'the end marker was sent': (v) => v });
  await conn.stop();
}
