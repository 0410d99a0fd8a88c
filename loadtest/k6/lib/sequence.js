// Numbered messages for loss checks, shared by the publishers (`subscribe-group.js`'s hub
// publisher, `rest-publish.js`) and the subscribers (`subscribe-group.js`).
//
// A message is the single argument of a `Send` event: a JSON object
//   {"p": "<publisher id>", "s": <sequence number from 0>, "t": <send time, ms since epoch>,
//    "pad": "xxx…"}
// and a publisher ends its stream with an end marker
//   {"p": "<publisher id>", "end": <how many it numbered>}
// posted after every numbered message was accepted, so a subscriber that receives the end
// marker knows exactly which numbers it should have seen: 0 … end-1.

import { padded } from './signalr.js';

/** One numbered message of about `size` bytes once serialized. */
export function numbered(publisher, seq, size) {
  const head = { p: publisher, s: seq, t: Date.now(), pad: '' };
  const overhead = JSON.stringify(head).length;
  head.pad = padded('', Math.max(0, size - overhead));
  return head;
}

/** The end marker of a publisher that numbered `count` messages. */
export function endMarker(publisher, count) {
  return { p: publisher, end: count };
}

/**
 * What one subscriber saw of every publisher: distinct numbers, duplicates, numbers that
 * arrived below one already seen, and the end marker's count.
 */
export class SequenceTracker {
  constructor() {
    this.publishers = new Map();
    this.foreign = 0;
  }

  entry(publisher) {
    let seen = this.publishers.get(publisher);
    if (!seen) {
      seen = { numbers: new Set(), max: -1, duplicates: 0, reordered: 0, end: null };
      this.publishers.set(publisher, seen);
    }
    return seen;
  }

  /**
   * Records one `Send` argument. Returns `{latencyMs}` for a numbered message, `{end: true}`
   * for an end marker, or null for anything else (counted in `foreign`).
   */
  record(message) {
    if (!message || typeof message !== 'object' || typeof message.p !== 'string') {
      this.foreign += 1;
      return null;
    }
    const seen = this.entry(message.p);
    if (typeof message.end === 'number') {
      seen.end = message.end;
      return { end: true };
    }
    if (typeof message.s !== 'number') {
      this.foreign += 1;
      return null;
    }
    if (seen.numbers.has(message.s)) {
      seen.duplicates += 1;
    } else {
      seen.numbers.add(message.s);
    }
    if (message.s < seen.max) {
      seen.reordered += 1;
    } else {
      seen.max = message.s;
    }
    return { latencyMs: Date.now() - message.t };
  }

  /** How many publishers' end markers arrived. */
  ended() {
    let count = 0;
    for (const seen of this.publishers.values()) {
      if (seen.end !== null) {
        count += 1;
      }
    }
    return count;
  }

  /**
   * Per publisher: received (distinct), expected, lost. Expected is the end marker's count
   * when it arrived; otherwise every number up to the highest seen (a gap is a loss, a lost
   * tail cannot be told from a publisher still running).
   */
  summary() {
    const out = [];
    for (const [publisher, seen] of this.publishers) {
      const expected = seen.end !== null ? seen.end : seen.max + 1;
      let received = 0;
      for (const n of seen.numbers) {
        if (n < expected) {
          received += 1;
        }
      }
      out.push({
        publisher,
        ended: seen.end !== null,
        expected,
        received,
        lost: expected - received,
        beyondEnd: seen.numbers.size - received,
        duplicates: seen.duplicates,
        reordered: seen.reordered,
      });
    }
    return out;
  }
}
