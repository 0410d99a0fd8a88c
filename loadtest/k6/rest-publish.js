// Backend publishing through ringhub's REST publish API (Azure SignalR data-plane style):
// `POST /api/hubs/{HUB_NAME}/groups/{GROUP}/:send` (or `/api/hubs/{HUB_NAME}/:send` with
// TO=all) at a constant arrival rate, with a server key (`Authorization: Bearer`). Every
// body is `{"target": TARGET, "arguments": [<numbered message>]}` (lib/sequence.js), and
// a last scenario posts the end marker, so subscribe-group.js (PUBLISH=none) run at the same time
// can check that every accepted message reached every subscriber.
//
// Env: URL, HUB_NAME (the hub's name, not its path), SERVER_KEY, TO (group or all), GROUP,
// TARGET, RATE (requests per second), DURATION, SIZE, VUS (pre-allocated VUs), MAX_VUS,
// PUBLISH_P99_MS. See loadtest/README.md, "k6 scripts".
//
//   k6 run -e SERVER_KEY=rhsk_... -e RATE=500 -e DURATION=30s loadtest/k6/rest-publish.js

import http from 'k6/http';
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import { Counter } from 'k6/metrics';
import { envInt, envStr, parseDuration } from './lib/signalr.js';
import { endMarker, numbered } from './lib/sequence.js';

const URL = envStr('URL', 'http://127.0.0.1:8080').replace(/\/+$/, '');
const HUB_NAME = envStr('HUB_NAME', 'diagnostics');
const SERVER_KEY = envStr('SERVER_KEY', '');
const TO = envStr('TO', 'group');
const GROUP = envStr('GROUP', 'k6-group');
const TARGET = envStr('TARGET', 'Send');
const RATE = envInt('RATE', 100);
const DURATION_MS = parseDuration(envStr('DURATION', ''), '30s');
const SIZE = envInt('SIZE', 256);
const VUS = envInt('VUS', 10);
const MAX_VUS = envInt('MAX_VUS', VUS * 4);
const PUBLISH_P99_MS = envInt('PUBLISH_P99_MS', 100);

if (!SERVER_KEY) {
  throw new Error('SERVER_KEY is required: mint one with `ringhub keys add-server` (see loadtest/README.md)');
}
if (TO !== 'group' && TO !== 'all') {
  throw new Error(`TO must be 'group' or 'all', not '${TO}'`);
}

const hubBase = `${URL}/api/hubs/${encodeURIComponent(HUB_NAME)}`;
const sendUrl = TO === 'all' ? `${hubBase}/:send` : `${hubBase}/groups/${encodeURIComponent(GROUP)}/:send`;
const params = {
  headers: { Authorization: `Bearer ${SERVER_KEY}`, 'Content-Type': 'application/json' },
  tags: { name: TO === 'all' ? 'POST :send' : 'POST groups/{group}/:send' },
};

const accepted = new Counter('rest_accepted');
const rejected = new Counter('rest_rejected');
// Failures this VU has logged; only the first few are, to keep the output readable.
let warned = 0;

export const options = {
  scenarios: {
    publish: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: `${DURATION_MS}ms`,
      preAllocatedVUs: VUS,
      maxVUs: MAX_VUS,
      gracefulStop: '30s',
    },
    finish: {
      executor: 'per-vu-iterations',
      exec: 'finish',
      vus: 1,
      iterations: 1,
      // A second after the last publish could start, so none starts behind the end marker.
      startTime: `${DURATION_MS + 1000}ms`,
      maxDuration: '2m',
    },
  },
  thresholds: {
    checks: ['rate==1'],
    rest_rejected: ['count==0'],
    dropped_iterations: ['count==0'],
    'http_req_duration{scenario:publish}': [`p(99)<${PUBLISH_P99_MS}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'max'],
};

/**
 * Checks the key and the hub before any load, without sending anything: a send whose body
 * has no `target` answers 400 once the key and the hub are good (401/403: the key; 404: no
 * hub by that name).
 */
export function setup() {
  const res = http.post(sendUrl, '{}', params);
  if (res.status === 401 || res.status === 403) {
    exec.test.abort(`the REST API refused SERVER_KEY (${res.status}): is its hash in auth.server_key_hashes?`);
  }
  if (res.status !== 400) {
    exec.test.abort(`POST ${sendUrl} with no target answered ${res.status} ${String(res.body).slice(0, 200)}`);
  }
  return { publisher: `rest-${Date.now()}` };
}

export default function (data) {
  const seq = exec.scenario.iterationInTest;
  const body = JSON.stringify({ target: TARGET, arguments: [numbered(data.publisher, seq, SIZE)] });
  const res = http.post(sendUrl, body, params);
  const ok = check(res, { 'send answered 202': (r) => r.status === 202 });
  if (ok) {
    accepted.add(1);
  } else {
    rejected.add(1);
    warned += 1;
    if (warned <= 3) {
      console.warn(`POST ${sendUrl} answered ${res.status}: ${String(res.body).slice(0, 200)}`);
    }
  }
}

/**
 * The `finish` scenario: once every publish iteration is over (this VU is the only one still
 * active), posts the end marker with how many numbers the iterations used (completed or
 * interrupted; dropped iterations take no number), so subscribers know what they should
 * have seen. It runs as a scenario because k6 does not give teardown the iteration counts.
 */
export function finish(data) {
  const waitUntil = Date.now() + 60000;
  while (exec.instance.vusActive > 1 && Date.now() < waitUntil) {
    sleep(0.02);
  }
  const numberedCount = exec.instance.iterationsCompleted + exec.instance.iterationsInterrupted;
  const body = JSON.stringify({ target: TARGET, arguments: [endMarker(data.publisher, numberedCount)] });
  const res = http.post(sendUrl, body, params);
  check(res, { 'end marker answered 202': (r) => r.status === 202 });
  console.log(`${data.publisher}: numbered ${numberedCount} messages, end marker answered ${res.status}`);
}
