// A small ASP.NET Core SignalR client for k6, JSON hub protocol over WebSockets only.
//
// What it does, and nothing more:
// - negotiate (`POST {hub}/negotiate?negotiateVersion=1`) and the WebSocket upgrade
//   (`{hub}?id=<connectionToken>`), or the upgrade alone with `skipNegotiation`;
// - record-separator framing: every message is JSON followed by 0x1E, several may share one
//   WebSocket frame, and a record cut across frames is kept until its end arrives;
// - the handshake `{"protocol":"json","version":1}` and its answer `{}` (or `{"error":…}`);
// - invocations with ids ("1", "2", … per connection) whose completions are matched back to
//   the promise that `invoke` returned; fire-and-forget `send` without an id;
// - keep-alive: a Ping right after the handshake, as the JS client does, then one whenever
//   nothing was sent for `keepAliveMs` (15 s, the JS client's interval). Server Pings only
//   need counting; WebSocket-level pings are answered with pongs by k6 itself;
// - a server `Close` message is recorded and the socket closed.
//
// It uses `k6/experimental/websockets` (the event-loop API): in k6 1.1.0 `k6/websockets`
// is not yet a module, and the older `k6/ws` blocks its VU for the whole connection, which
// rules out several connections or timers driving sends on one VU. Never call `sleep()` from
// `k6` while a connection is open: it blocks the event loop; use `delay()` below.
//
// k6's JavaScript clock (`Date.now()`) counts whole milliseconds, so every time measured
// here has 1 ms resolution. Sub-millisecond loopback round trips read as 0 or 1 ms.

import http from 'k6/http';
import { WebSocket } from 'k6/experimental/websockets';
import { setTimeout, clearTimeout, setInterval, clearInterval } from 'k6/timers';
import { Counter, Trend } from 'k6/metrics';

/** The record separator that ends every JSON hub protocol message. */
export const RS = '\x1e';

/** SignalR hub message types. */
export const MessageType = Object.freeze({
  Invocation: 1,
  StreamItem: 2,
  Completion: 3,
  StreamInvocation: 4,
  CancelInvocation: 5,
  Ping: 6,
  Close: 7,
});

// Metrics every script gets from this helper (created here, in the init context).
const negotiateDuration = new Trend('signalr_negotiate_duration', true);
const handshakeDuration = new Trend('signalr_handshake_duration', true);
const connectDuration = new Trend('signalr_connect_duration', true);
const handshakesOk = new Counter('signalr_handshakes');
const connectFailures = new Counter('signalr_connect_failures');
const serverPings = new Counter('signalr_pings_received');
const clientPings = new Counter('signalr_pings_sent');
const serverCloses = new Counter('signalr_close_messages');
const unexpectedCloses = new Counter('signalr_unexpected_closes');
const protocolErrors = new Counter('signalr_protocol_errors');
const unmatchedCompletions = new Counter('signalr_unmatched_completions');

// One keep-alive ticker per VU (module state is per VU) for all of its open connections, so
// a VU holding hundreds of connections runs one timer, not hundreds.
const liveConnections = new Set();
let keepAliveTicker = null;

function keepAliveTick() {
  const now = Date.now();
  for (const conn of liveConnections) {
    conn.keepAlive(now);
  }
}

/** A promise that resolves after `ms` milliseconds, without blocking the event loop. */
export function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

/**
 * Parses a k6-style duration ("30s", "2m", "1h30m", "500ms", or a bare number of seconds)
 * into milliseconds.
 */
export function parseDuration(text, fallback) {
  const value = text === undefined || text === '' ? fallback : String(text);
  if (/^\d+(\.\d+)?$/.test(value)) {
    return Math.round(parseFloat(value) * 1000);
  }
  const units = { ms: 1, s: 1000, m: 60000, h: 3600000 };
  let total = 0;
  let matched = '';
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let part;
  while ((part = re.exec(value)) !== null) {
    total += parseFloat(part[1]) * units[part[2]];
    matched += part[0];
  }
  if (matched !== value) {
    throw new Error(`not a duration: '${value}' (write e.g. 30s, 2m, 500ms)`);
  }
  return Math.round(total);
}

/** A whole-number environment variable, or `fallback` when unset or empty. */
export function envInt(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') {
    return fallback;
  }
  const value = Number(raw);
  if (!Number.isFinite(value)) {
    throw new Error(`${name} must be a number, got '${raw}'`);
  }
  return value;
}

/** A string environment variable, or `fallback` when unset or empty. */
export function envStr(name, fallback) {
  const raw = __ENV[name];
  return raw === undefined || raw === '' ? fallback : raw;
}

/** The settings every script shares: URL (server base) and HUB (the hub's path). */
export function baseSettings() {
  return {
    url: envStr('URL', 'http://127.0.0.1:8080').replace(/\/+$/, ''),
    hub: '/' + envStr('HUB', '/hubs/diagnostics').replace(/^\/+/, ''),
    skipNegotiation: envStr('SKIP_NEGOTIATE', '0') === '1',
    accessToken: envStr('ACCESS_TOKEN', ''),
    keepAliveMs: parseDuration(envStr('KEEPALIVE', ''), '15s'),
    handshakeTimeoutMs: parseDuration(envStr('HANDSHAKE_TIMEOUT', ''), '15s'),
  };
}

/** A string of exactly `size` characters that starts with `prefix` (ASCII padding). */
export function padded(prefix, size) {
  if (prefix.length >= size) {
    return prefix;
  }
  return prefix + 'x'.repeat(size - prefix.length);
}

/** Serializes one hub message as a JSON record. */
export function frame(message) {
  return JSON.stringify(message) + RS;
}

/**
 * Splits received text into complete records. Returns the records' texts (without the
 * separator) and the unfinished tail to keep for the next frame.
 */
export function splitRecords(pending, data) {
  const text = pending + data;
  const parts = text.split(RS);
  const rest = parts.pop();
  return { records: parts, rest };
}

/**
 * Negotiates a connection: `POST {url}{hub}/negotiate?negotiateVersion=1`, without blocking
 * the VU's event loop. Resolves with the negotiate document; rejects with the status and body
 * when it is not a 200 with a `connectionToken` (or a v0 `connectionId`).
 */
export async function negotiate(url, hub, accessToken) {
  const headers = {};
  if (accessToken) {
    headers.Authorization = `Bearer ${accessToken}`;
  }
  const res = await http.asyncRequest('POST', `${url}${hub}/negotiate?negotiateVersion=1`, null, {
    headers,
    tags: { name: `${hub}/negotiate` },
  });
  negotiateDuration.add(res.timings.duration);
  const body = String(res.body).slice(0, 200);
  if (res.status !== 200) {
    throw new Error(`negotiate answered ${res.status}: ${body}`);
  }
  let doc;
  try {
    doc = res.json();
  } catch (e) {
    throw new Error(`negotiate answered a body that is not JSON: ${body}`);
  }
  if (doc.error) {
    throw new Error(`negotiate answered an error: ${doc.error}`);
  }
  if (!doc.connectionToken && !doc.connectionId) {
    throw new Error(`negotiate answered no connectionToken: ${body}`);
  }
  return doc;
}

/** The WebSocket URL of a hub: http(s) becomes ws(s), plus `id` and `access_token`. */
export function socketUrl(url, hub, token, accessToken) {
  const query = [];
  if (token) {
    query.push(`id=${encodeURIComponent(token)}`);
  }
  if (accessToken) {
    query.push(`access_token=${encodeURIComponent(accessToken)}`);
  }
  const base = url.replace(/^http/, 'ws') + hub;
  return query.length ? `${base}?${query.join('&')}` : base;
}

/**
 * One SignalR connection over a WebSocket.
 *
 * ```js
 * const conn = new HubConnection(baseSettings());
 * conn.on('Send', (args) => { ... });
 * await conn.start();
 * const { result, error, rttMs } = await conn.invoke('Echo', ['hi']);
 * await conn.stop();
 * ```
 */
export class HubConnection {
  constructor(options) {
    this.url = options.url;
    this.hub = options.hub;
    this.skipNegotiation = !!options.skipNegotiation;
    this.accessToken = options.accessToken || '';
    this.keepAliveMs = options.keepAliveMs || 15000;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs || 15000;
    this.tags = options.tags || {};
    this.handlers = {};
    this.pending = new Map();
    this.nextId = 1;
    this.buffer = '';
    this.socket = null;
    this.connectionId = null;
    this.handshaken = false;
    this.stopping = false;
    this.closed = false;
    this.closeError = null;
    this.lastSent = 0;
    this.closedPromise = null;
    this.stats = { pingsReceived: 0, pingsSent: 0, invocations: 0, completions: 0, received: 0 };
  }

  /** Registers `handler(arguments, message)` for server invocations of `target` (any case). */
  on(target, handler) {
    this.handlers[target.toLowerCase()] = handler;
  }

  /**
   * Negotiates, opens the WebSocket and completes the handshake. Resolves with the connection
   * id (when negotiated); rejects on any failure, after counting it in
   * `signalr_connect_failures`.
   */
  start() {
    const begun = Date.now();
    if (this.skipNegotiation) {
      return this.open(null, begun);
    }
    // A promise chain, not try/await/catch: goja (k6 1.1.0) rethrew `this` instead of the
    // error from a catch block in this method.
    return negotiate(this.url, this.hub, this.accessToken).then(
      (doc) => {
        this.connectionId = doc.connectionId || null;
        return this.open(doc.connectionToken || doc.connectionId, begun);
      },
      (error) => {
        connectFailures.add(1, { stage: 'negotiate' });
        throw error;
      },
    );
  }

  /** Opens the WebSocket with `token` (null without negotiate) and runs the handshake. */
  open(token, begun) {
    return new Promise((resolve, reject) => {
      let settled = false;
      let opened = 0;
      const fail = (stage, error) => {
        if (settled) {
          return;
        }
        settled = true;
        connectFailures.add(1, { stage });
        clearTimeout(timer);
        // Counted here; the close that follows is ours, not the server's.
        this.stopping = true;
        this.closeSocket();
        reject(error instanceof Error ? error : new Error(String(error)));
      };
      const timer = setTimeout(
        () => fail('handshake', new Error(`no handshake answer within ${this.handshakeTimeoutMs} ms`)),
        this.handshakeTimeoutMs,
      );
      let ws;
      try {
        ws = new WebSocket(socketUrl(this.url, this.hub, token, this.accessToken), null, {
          tags: Object.assign({ name: this.hub }, this.tags),
        });
      } catch (e) {
        fail('upgrade', e);
        return;
      }
      this.socket = ws;
      this.closedPromise = new Promise((done) => {
        ws.onclose = () => {
          this.closed = true;
          this.stopKeepAlive();
          this.failPending(new Error('the connection closed'));
          if (!settled) {
            fail('upgrade', new Error('the socket closed before the handshake was answered'));
          } else if (!this.stopping && !this.closeError) {
            unexpectedCloses.add(1);
            this.closeError = 'the server closed the connection';
          }
          done();
        };
      });
      ws.onerror = (e) => {
        const text = e && e.error ? e.error : String(e);
        if (!settled) {
          fail('upgrade', new Error(`WebSocket error: ${text}`));
        } else if (!this.stopping && !this.closeError) {
          this.closeError = `WebSocket error: ${text}`;
        }
      };
      ws.onopen = () => {
        opened = Date.now();
        this.sendRaw(frame({ protocol: 'json', version: 1 }));
      };
      ws.onmessage = (e) => {
        if (typeof e.data !== 'string') {
          protocolErrors.add(1, { reason: 'binary frame' });
          return;
        }
        const { records, rest } = splitRecords(this.buffer, e.data);
        this.buffer = rest;
        for (const record of records) {
          if (!this.handshaken) {
            let answer;
            try {
              answer = JSON.parse(record);
            } catch (err) {
              fail('handshake', new Error(`the handshake answer is not JSON: ${record.slice(0, 200)}`));
              return;
            }
            if (answer.error) {
              fail('handshake', new Error(`the handshake was refused: ${answer.error}`));
              return;
            }
            this.handshaken = true;
            settled = true;
            clearTimeout(timer);
            const now = Date.now();
            handshakeDuration.add(now - opened);
            connectDuration.add(now - begun);
            handshakesOk.add(1);
            // As the JS client does: a Ping right away, then keep-alive Pings.
            this.sendPing();
            this.startKeepAlive();
            resolve(this.connectionId);
            continue;
          }
          this.dispatch(record);
        }
      };
    });
  }

  /** Handles one record received after the handshake. */
  dispatch(record) {
    let message;
    try {
      message = JSON.parse(record);
    } catch (e) {
      protocolErrors.add(1, { reason: 'not JSON' });
      return;
    }
    this.stats.received += 1;
    switch (message.type) {
      case MessageType.Invocation: {
        const handler = this.handlers[String(message.target).toLowerCase()];
        if (handler) {
          handler(message.arguments || [], message);
        }
        if (message.invocationId !== undefined) {
          // The server asks for a client result; this client has none to give.
          this.sendRaw(frame({
            type: MessageType.Completion,
            invocationId: message.invocationId,
            error: 'Client did not provide a result.',
          }));
        }
        break;
      }
      case MessageType.Completion: {
        const call = this.pending.get(message.invocationId);
        if (!call) {
          unmatchedCompletions.add(1);
          return;
        }
        this.pending.delete(message.invocationId);
        this.stats.completions += 1;
        call.resolve({
          result: message.result,
          error: message.error,
          rttMs: Date.now() - call.sentAt,
        });
        break;
      }
      case MessageType.StreamItem: {
        const call = this.pending.get(message.invocationId);
        if (call && call.onItem) {
          call.onItem(message.item);
        } else if (!call) {
          unmatchedCompletions.add(1);
        }
        break;
      }
      case MessageType.Ping:
        this.stats.pingsReceived += 1;
        serverPings.add(1);
        break;
      case MessageType.Close:
        serverCloses.add(1);
        this.closeError = message.error
          ? `the server sent Close: ${message.error}`
          : 'the server sent Close';
        this.closeSocket();
        break;
      default:
        protocolErrors.add(1, { reason: `unexpected type ${message.type}` });
    }
  }

  /** Sends raw text (already framed); false when the socket is not open. */
  sendRaw(text) {
    if (!this.socket || this.closed || this.socket.readyState !== 1) {
      return false;
    }
    this.socket.send(text);
    this.lastSent = Date.now();
    return true;
  }

  /** Sends a Ping message. */
  sendPing() {
    if (this.sendRaw(frame({ type: MessageType.Ping }))) {
      this.stats.pingsSent += 1;
      clientPings.add(1);
    }
  }

  startKeepAlive() {
    liveConnections.add(this);
    if (keepAliveTicker === null) {
      const tick = Math.max(100, Math.min(1000, Math.floor(this.keepAliveMs / 4)));
      keepAliveTicker = setInterval(keepAliveTick, tick);
    }
  }

  stopKeepAlive() {
    liveConnections.delete(this);
    if (liveConnections.size === 0 && keepAliveTicker !== null) {
      clearInterval(keepAliveTicker);
      keepAliveTicker = null;
    }
  }

  /** Sends a Ping if nothing was sent for `keepAliveMs`. */
  keepAlive(now) {
    if (now - this.lastSent >= this.keepAliveMs) {
      this.sendPing();
    }
  }

  /**
   * Invokes a hub method and resolves with `{result, error, rttMs}` once its completion
   * arrives (`error` is set for a hub error). Rejects if the connection closes first or
   * is not open. `onItem(item)`, when given, receives stream items for a
   * StreamInvocation (`stream: true`).
   */
  invoke(target, args, options) {
    const opts = options || {};
    const invocationId = String(this.nextId++);
    return new Promise((resolve, reject) => {
      const message = {
        type: opts.stream ? MessageType.StreamInvocation : MessageType.Invocation,
        invocationId,
        target,
        arguments: args || [],
      };
      const sentAt = Date.now();
      if (!this.sendRaw(frame(message))) {
        reject(new Error(`cannot invoke ${target}: the connection is not open`));
        return;
      }
      this.stats.invocations += 1;
      this.pending.set(invocationId, { resolve, reject, sentAt, onItem: opts.onItem });
    });
  }

  /** Invokes a hub method without an invocation id: no completion comes back. */
  send(target, args) {
    return this.sendRaw(frame({ type: MessageType.Invocation, target, arguments: args || [] }));
  }

  /** How many invocations still wait for their completion. */
  outstanding() {
    return this.pending.size;
  }

  failPending(error) {
    for (const call of this.pending.values()) {
      call.reject(error);
    }
    this.pending.clear();
  }

  closeSocket() {
    this.stopKeepAlive();
    if (this.socket && this.socket.readyState < 2) {
      this.socket.close();
    }
  }

  /** Closes the connection on purpose and resolves once the socket is closed. */
  stop() {
    this.stopping = true;
    this.closeSocket();
    return this.closedPromise || Promise.resolve();
  }

  /** Resolves when the socket closes, for whatever reason. */
  closedSignal() {
    return this.closedPromise || Promise.resolve();
  }

  /**
   * Waits `ms` milliseconds with the connection open. Resolves true if it stayed open that
   * long, false as soon as it closes (the timer is cleared, so nothing keeps the VU busy).
   */
  holdFor(ms) {
    if (this.closed) {
      return Promise.resolve(false);
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(true), Math.max(0, ms));
      this.closedSignal().then(() => {
        clearTimeout(timer);
        resolve(false);
      });
    });
  }
}
