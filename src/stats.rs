//! Process statistics: counters each shard writes alone (relaxed atomics, one writer each) and
//! any shard or endpoint reads by summing, without a lock.
//!
//! The Health hub's snapshot ([`Stats::snapshot`]), `/health` and `/metrics`
//! ([`crate::metrics`], which names every exported series) read the same numbers, so they can
//! never disagree. Code that has no [`ShardContext`](crate::shard::ShardContext) at hand (a
//! session, an outbox) counts through [`local`]: the shard's thread registers its counters
//! once ([`Stats::enter`]), so no connection carries a pointer to them.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::auth::AuthError;
use crate::hub::identity::TokenError;
use crate::protocol::signalr::handshake::HandshakeError;
use crate::protocol::signalr::{HubMessage, Value};

/// Upper bounds of the latency histograms' buckets, in nanoseconds (50 µs to 10 s).
pub const LATENCY_BOUNDS_NS: &[u64] = &[
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Upper bounds of the Redis commands-per-write histogram.
pub const BATCH_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A histogram one shard observes into: a count per bucket (the last is +Inf) and the sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// A histogram's buckets summed over shards: cumulative counts per bound, then +Inf.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistogramTotals {
    /// Each bucket's upper bound, in the histogram's unit (ns or a count).
    pub bounds: Vec<u64>,
    /// Observations at or below each bound, then all of them (+Inf); cumulative.
    pub cumulative: Vec<u64>,
    /// The sum of every observation, in the histogram's unit.
    pub sum: u64,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Records one observation of `value` (ns for latencies).
    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        if let Some(count) = self.counts.get(bucket) {
            add(count, 1);
        }
        add(&self.sum, value);
    }

    /// Records a duration (latency histograms).
    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    pub(crate) fn add_into(&self, totals: &mut HistogramTotals) {
        if totals.bounds.is_empty() {
            totals.bounds = self.bounds.to_vec();
            totals.cumulative = vec![0; self.counts.len()];
        }
        let mut running = 0u64;
        for (slot, count) in totals.cumulative.iter_mut().zip(self.counts.iter()) {
            running = running.wrapping_add(count.load(Ordering::Relaxed));
            *slot = slot.wrapping_add(running);
        }
        totals.sum = totals.sum.wrapping_add(self.sum.load(Ordering::Relaxed));
    }
}

/// Only the owning shard writes a counter, so a load and a store are enough.
fn add(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Hub message types as counted, in the spec's `type` order; anything else is `unknown`.
pub const MESSAGE_TYPES: [&str; 10] = [
    "invocation",
    "stream_item",
    "completion",
    "stream_invocation",
    "cancel_invocation",
    "ping",
    "close",
    "ack",
    "sequence",
    "unknown",
];

/// The index of `message`'s type in [`MESSAGE_TYPES`].
pub fn message_type(message: &HubMessage) -> usize {
    match message.type_id() {
        id @ 1..=9 => usize::try_from(id - 1).unwrap_or(9),
        _ => 9,
    }
}

/// Why a message meant for a client was not sent, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The client read too slowly and its queue passed `max_outbound`.
    SlowConsumer = 0,
    /// An invocation beyond the connection's rate was refused.
    RateLimit = 1,
    /// A progress event was replaced by a newer one before it was sent.
    Conflated = 2,
    /// The backplane was down or too slow to take a send.
    BackplaneDown = 3,
}

/// [`DropReason`]'s label values, by discriminant.
pub const DROP_REASONS: [&str; 4] = ["slow_consumer", "rate_limit", "conflated", "backplane_down"];

/// Which limit refused a connection, a request or a group join, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The shard held its share of `limits.max_connections` (503).
    Connections = 0,
    /// The client's address held `limits.max_connections_per_ip` connections (429).
    ConnectionsPerIp = 1,
    /// The process ran out of file descriptors while accepting (503).
    FileDescriptors = 2,
    /// The client's address negotiated faster than `limits.negotiate_rate_per_ip` (429).
    NegotiateRatePerIp = 3,
    /// The process held `limits.max_hub_connections` SignalR connections (429).
    HubConnections = 4,
    /// The key held `limits.max_connections_per_key` connections (429).
    ConnectionsPerKey = 5,
    /// The connection was in `signalr.max_groups_per_connection` groups (join refused).
    GroupsPerConnection = 6,
}

/// [`RefusalReason`]'s label values, by discriminant.
pub const REFUSAL_REASONS: [&str; 7] = [
    "connections",
    "connections_per_ip",
    "file_descriptors",
    "negotiate_rate_per_ip",
    "hub_connections",
    "connections_per_key",
    "groups_per_connection",
];

/// One shard's counters. Only that shard writes them.
#[derive(Debug)]
#[repr(align(128))]
pub struct ShardStats {
    /// Open SignalR connections per hub, in [`Stats::hubs`] order.
    pub(crate) connections: Box<[AtomicU64]>,
    /// SignalR connections ever opened per hub.
    pub(crate) connections_opened: Box<[AtomicU64]>,
    /// Completed handshakes per hub.
    pub(crate) handshakes: Box<[AtomicU64]>,
    /// Failed handshakes by [`HandshakeError::reason_index`].
    pub(crate) handshake_failures: [AtomicU64; HandshakeError::REASONS.len()],
    /// From the WebSocket upgrade to the handshake response.
    pub(crate) handshake_latency: Histogram,
    /// Negotiate requests, from the parsed head to the response.
    pub(crate) negotiate_latency: Histogram,
    /// Hub messages received per hub and type (`hub * MESSAGE_TYPES.len() + type`).
    pub(crate) received_by_type: Box<[AtomicU64]>,
    /// Hub messages sent per hub and type, fan-out deliveries included.
    pub(crate) sent_by_type: Box<[AtomicU64]>,
    /// Invocation handling, from receipt to its completion, per hub.
    pub(crate) invocation_latency: Box<[Histogram]>,
    /// Hub messages received from clients.
    pub(crate) messages_in: AtomicU64,
    /// Messages delivered to clients by fan-out (one per recipient).
    pub(crate) deliveries: AtomicU64,
    /// Bytes written to sockets (WebSocket frames and HTTP responses of upgraded connections).
    pub(crate) bytes_sent: AtomicU64,
    /// Bytes read from WebSocket connections.
    pub(crate) bytes_received: AtomicU64,
    /// Bytes queued in outboxes and not yet written.
    pub(crate) outbox_bytes: AtomicI64,
    /// Messages not sent, by [`DropReason`].
    pub(crate) drops: [AtomicU64; DROP_REASONS.len()],
    /// Keys refused, by [`AuthError::reason_index`].
    pub(crate) auth_failures: [AtomicU64; AuthError::REASONS.len()],
    /// Connection tokens answered 404, by [`TokenError::reason_index`].
    pub(crate) token_refusals: [AtomicU64; TokenError::REASONS.len()],
    /// Refusals by a limit, by [`RefusalReason`].
    pub(crate) refusals: [AtomicU64; REFUSAL_REASONS.len()],
    /// Whether this shard's backplane participant is up (always, in process).
    pub(crate) backplane_up: AtomicBool,
    /// Whether this shard's accept loop is running (its listening socket open).
    pub(crate) accepting: AtomicBool,
    /// Times this shard's backplane went from down to up (the first connect included).
    pub(crate) backplane_ups: AtomicU64,
    /// From queueing a backplane PUBLISH to Redis's reply.
    pub(crate) backplane_publish_latency: Histogram,
    /// Redis commands written per socket write.
    pub(crate) backplane_batch: Histogram,
}

impl ShardStats {
    fn new(hubs: usize) -> Self {
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        Self {
            connections: zeros(hubs),
            connections_opened: zeros(hubs),
            handshakes: zeros(hubs),
            handshake_failures: Default::default(),
            handshake_latency: Histogram::new(LATENCY_BOUNDS_NS),
            negotiate_latency: Histogram::new(LATENCY_BOUNDS_NS),
            received_by_type: zeros(hubs * MESSAGE_TYPES.len()),
            sent_by_type: zeros(hubs * MESSAGE_TYPES.len()),
            invocation_latency: (0..hubs)
                .map(|_| Histogram::new(LATENCY_BOUNDS_NS))
                .collect(),
            messages_in: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            outbox_bytes: AtomicI64::new(0),
            drops: Default::default(),
            auth_failures: Default::default(),
            token_refusals: Default::default(),
            refusals: Default::default(),
            backplane_up: AtomicBool::new(true),
            accepting: AtomicBool::new(false),
            backplane_ups: AtomicU64::new(0),
            backplane_publish_latency: Histogram::new(LATENCY_BOUNDS_NS),
            backplane_batch: Histogram::new(BATCH_BOUNDS),
        }
    }

    /// Times this shard's backplane came back after it had been up and went down.
    pub fn backplane_reconnects(&self) -> u64 {
        self.backplane_ups.load(Ordering::Relaxed).saturating_sub(1)
    }

    /// `n` sends were dropped by the backplane.
    pub fn backplane_dropped(&self, n: u64) {
        self.dropped(DropReason::BackplaneDown, n);
    }

    /// Records whether this shard's accept loop runs.
    pub fn set_accepting(&self, accepting: bool) {
        self.accepting.store(accepting, Ordering::Relaxed);
    }

    /// Records whether this shard's backplane is up.
    pub fn set_backplane_up(&self, up: bool) {
        let was = self.backplane_up.swap(up, Ordering::Relaxed);
        if up && !was {
            add(&self.backplane_ups, 1);
        }
    }

    /// A connection to hub number `hub` opened.
    pub fn connection_opened(&self, hub: usize) {
        if let Some(counter) = self.connections.get(hub) {
            add(counter, 1);
        }
        if let Some(counter) = self.connections_opened.get(hub) {
            add(counter, 1);
        }
    }

    /// A connection to hub number `hub` closed.
    pub fn connection_closed(&self, hub: usize) {
        if let Some(counter) = self.connections.get(hub) {
            add(counter, u64::MAX);
        }
    }

    /// A handshake on hub number `hub` completed `elapsed` after the upgrade.
    pub fn handshake_completed(&self, hub: usize, elapsed: Duration) {
        if let Some(counter) = self.handshakes.get(hub) {
            add(counter, 1);
        }
        self.handshake_latency.observe_duration(elapsed);
    }

    /// A handshake failed for `reason` ([`HandshakeError::reason_index`]).
    pub fn handshake_failed(&self, reason: usize) {
        if let Some(counter) = self.handshake_failures.get(reason) {
            add(counter, 1);
        }
    }

    /// A negotiate request was answered after `elapsed`.
    pub fn negotiated(&self, elapsed: Duration) {
        self.negotiate_latency.observe_duration(elapsed);
    }

    /// `n` hub messages arrived from clients (type not known to the caller).
    pub fn received(&self, n: u64) {
        add(&self.messages_in, n);
    }

    /// A hub message of type `kind` ([`message_type`]) arrived on hub number `hub`.
    pub fn received_message(&self, hub: usize, kind: usize) {
        if let Some(counter) = self.received_by_type.get(hub * MESSAGE_TYPES.len() + kind) {
            add(counter, 1);
        }
    }

    /// `n` hub messages of type `kind` were sent on hub number `hub`.
    pub fn sent_messages(&self, hub: usize, kind: usize, n: u64) {
        if let Some(counter) = self.sent_by_type.get(hub * MESSAGE_TYPES.len() + kind) {
            add(counter, n);
        }
    }

    /// An invocation on hub number `hub` was answered `elapsed` after it arrived.
    pub fn invocation_completed(&self, hub: usize, elapsed: Duration) {
        if let Some(histogram) = self.invocation_latency.get(hub) {
            histogram.observe_duration(elapsed);
        }
    }

    /// `n` deliveries were queued to clients.
    pub fn delivered(&self, n: u64) {
        add(&self.deliveries, n);
    }

    /// `n` progress events were superseded before being sent.
    pub fn conflated(&self, n: u64) {
        self.dropped(DropReason::Conflated, n);
    }

    /// `n` messages were not sent, for `reason`.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        add(&self.drops[reason as usize], n);
    }

    /// A key was refused for `reason` ([`AuthError::reason_index`]).
    pub fn auth_failed(&self, reason: usize) {
        if let Some(counter) = self.auth_failures.get(reason) {
            add(counter, 1);
        }
    }

    /// A connection token was answered 404 for `reason` ([`TokenError::reason_index`]).
    pub fn token_refused(&self, reason: usize) {
        if let Some(counter) = self.token_refusals.get(reason) {
            add(counter, 1);
        }
    }

    /// A limit refused something, for `reason`.
    pub fn refused(&self, reason: RefusalReason) {
        add(&self.refusals[reason as usize], 1);
    }

    /// `n` bytes were written to a socket.
    pub fn bytes_sent(&self, n: u64) {
        add(&self.bytes_sent, n);
    }

    /// `n` bytes were read from a WebSocket.
    pub fn bytes_received(&self, n: u64) {
        add(&self.bytes_received, n);
    }

    /// Outboxes on this shard now hold `delta` more (or fewer) bytes.
    pub fn outbox_changed(&self, delta: i64) {
        self.outbox_bytes.store(
            self.outbox_bytes
                .load(Ordering::Relaxed)
                .wrapping_add(delta),
            Ordering::Relaxed,
        );
    }

    /// A backplane PUBLISH was answered `elapsed` after it was queued.
    pub fn backplane_published(&self, elapsed: Duration) {
        self.backplane_publish_latency.observe_duration(elapsed);
    }

    /// One socket write carried `commands` Redis commands.
    pub fn backplane_batch(&self, commands: u64) {
        self.backplane_batch.observe(commands);
    }
}

thread_local! {
    /// The counters of the shard running on this thread, if any.
    static LOCAL: RefCell<Option<(Arc<Stats>, usize)>> = const { RefCell::new(None) };
}

/// Runs `count` with this thread's shard counters; does nothing on a thread that is not a
/// shard (unit tests, tools), so counting never fails.
pub fn local(count: impl FnOnce(&ShardStats)) {
    LOCAL.with_borrow(|local| {
        if let Some((stats, index)) = local {
            count(stats.shard(*index));
        }
    });
}

/// Unregisters this thread's counters when dropped ([`Stats::enter`]).
#[derive(Debug)]
pub struct LocalStats(());

impl Drop for LocalStats {
    fn drop(&mut self) {
        LOCAL.with_borrow_mut(|local| *local = None);
    }
}

/// Every shard's counters plus what they are counted by.
#[derive(Debug)]
pub struct Stats {
    /// Hub names, indexing [`ShardStats`]'s per-hub counters.
    hubs: Vec<String>,
    shards: Box<[ShardStats]>,
    started: Instant,
    /// `"in-process"` or `"redis"`.
    backplane: &'static str,
    /// Set once a graceful stop began (only the thread owning the server writes it).
    draining: AtomicBool,
}

/// Whether the server should get traffic, and why not: the facts `/health/ready`, `/health`
/// and the Health hub's snapshot all report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// Every shard's accept loop runs.
    pub accepting: bool,
    /// Every shard's backplane participant is up (always, in process).
    pub backplane_up: bool,
    /// A graceful stop began.
    pub draining: bool,
}

impl Readiness {
    /// Accepting, backplane up, not draining.
    pub fn is_ready(&self) -> bool {
        self.accepting && self.backplane_up && !self.draining
    }

    /// Why not ready (`None` when ready), most decisive first.
    pub fn reason(&self) -> Option<&'static str> {
        if self.draining {
            Some("draining")
        } else if !self.accepting {
            Some("not accepting connections")
        } else if !self.backplane_up {
            Some("backplane down")
        } else {
            None
        }
    }
}

/// Sums at one moment, for rates and snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Open SignalR connections.
    pub connections: u64,
    /// Hub messages received.
    pub messages_in: u64,
    /// Deliveries queued.
    pub deliveries: u64,
    /// Progress events conflated away.
    pub conflated: u64,
    /// Sends the backplane dropped.
    pub backplane_dropped: u64,
}

impl Stats {
    /// Counters for `shards` shards serving `hubs`.
    pub fn new(hubs: Vec<String>, shards: usize) -> Arc<Self> {
        Self::with_backplane(hubs, shards, "in-process")
    }

    /// Counters for a server whose backplane is `backplane` (`"in-process"` or `"redis"`).
    pub fn with_backplane(hubs: Vec<String>, shards: usize, backplane: &'static str) -> Arc<Self> {
        let count = hubs.len();
        Arc::new(Self {
            hubs,
            shards: (0..shards).map(|_| ShardStats::new(count)).collect(),
            started: Instant::now(),
            backplane,
            draining: AtomicBool::new(false),
        })
    }

    /// Registers shard `index`'s counters as this thread's [`local`] ones until the guard is
    /// dropped (the shard's thread calls this once, before serving).
    pub fn enter(self: &Arc<Self>, index: usize) -> LocalStats {
        LOCAL.with_borrow_mut(|local| *local = Some((Arc::clone(self), index)));
        LocalStats(())
    }

    /// The hub names, in the order of the per-hub counters.
    pub fn hubs(&self) -> &[String] {
        &self.hubs
    }

    /// Every shard's counters, in shard order.
    pub fn shards(&self) -> &[ShardStats] {
        &self.shards
    }

    /// `"in-process"` or `"redis"`.
    pub fn backplane_kind(&self) -> &'static str {
        self.backplane
    }

    /// Shard `index`'s counters (an out-of-range index gets the last shard's, never a panic).
    pub fn shard(&self, index: usize) -> &ShardStats {
        let last = self.shards.len().saturating_sub(1);
        &self.shards[index.min(last)]
    }

    /// The index of hub `name` (hubs are few; looked up at connect and disconnect only).
    pub fn hub_index(&self, name: &str) -> Option<usize> {
        self.hubs.iter().position(|h| h == name)
    }

    /// A graceful stop began: the server is no longer ready.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the server should get traffic, with the facts that decide it.
    pub fn readiness(&self) -> Readiness {
        Readiness {
            accepting: self
                .shards
                .iter()
                .all(|s| s.accepting.load(Ordering::Relaxed)),
            backplane_up: self.backplane_up(),
            draining: self.draining.load(Ordering::Relaxed),
        }
    }

    /// Whether every shard's backplane participant is up.
    pub fn backplane_up(&self) -> bool {
        self.shards
            .iter()
            .all(|s| s.backplane_up.load(Ordering::Relaxed))
    }

    /// Seconds since the process started serving.
    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Open connections of each hub, summed over shards.
    pub fn connections_by_hub(&self) -> Vec<(&str, u64)> {
        self.hubs
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let open = self
                    .shards
                    .iter()
                    .map(|s| s.connections[i].load(Ordering::Relaxed))
                    .fold(0u64, u64::wrapping_add);
                (name.as_str(), open)
            })
            .collect()
    }

    /// Every counter summed over shards.
    pub fn totals(&self) -> Totals {
        let sum = |f: fn(&ShardStats) -> &AtomicU64| {
            self.shards
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .fold(0u64, u64::wrapping_add)
        };
        Totals {
            connections: self.connections_by_hub().iter().map(|(_, n)| n).sum(),
            messages_in: sum(|s| &s.messages_in),
            deliveries: sum(|s| &s.deliveries),
            conflated: sum(|s| &s.drops[DropReason::Conflated as usize]),
            backplane_dropped: sum(|s| &s.drops[DropReason::BackplaneDown as usize]),
        }
    }

    /// The Health hub's snapshot (`HealthStatus` / `GetHealth()`), camelCase as ASP.NET would
    /// serialize it, from `totals` (the caller's [`Self::totals`], which it also samples for
    /// `messages_per_second`).
    pub fn snapshot(&self, totals: &Totals, messages_per_second: f64, timestamp: String) -> Value {
        let s = |text: &str| Value::Str(text.to_owned());
        let by_hub = self
            .connections_by_hub()
            .into_iter()
            .map(|(name, n)| (s(name), Value::Int(i64::try_from(n).unwrap_or(i64::MAX))))
            .collect();
        let int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
        let readiness = self.readiness();
        Value::Map(vec![
            (
                s("status"),
                s(if readiness.is_ready() {
                    "Healthy"
                } else {
                    "Degraded"
                }),
            ),
            (s("ready"), Value::Bool(readiness.is_ready())),
            (s("draining"), Value::Bool(readiness.draining)),
            (s("version"), s(env!("CARGO_PKG_VERSION"))),
            (s("uptimeSeconds"), int(self.uptime_seconds())),
            (s("connections"), int(totals.connections)),
            (s("connectionsByHub"), Value::Map(by_hub)),
            (s("messagesPerSecond"), Value::Float(messages_per_second)),
            (s("messagesReceived"), int(totals.messages_in)),
            (s("messagesDelivered"), int(totals.deliveries)),
            (
                s("backplane"),
                Value::Map(vec![
                    (s("kind"), s(self.backplane)),
                    (
                        s("state"),
                        s(if self.backplane_up() { "up" } else { "down" }),
                    ),
                    (s("dropped"), int(totals.backplane_dropped)),
                ]),
            ),
            (s("shards"), int(self.shards.len() as u64)),
            (s("timestamp"), s(&timestamp)),
        ])
    }
}

/// Turns a running total into a per-second rate between two samples (kept by one shard).
#[derive(Debug, Clone, Copy)]
pub struct RateSample {
    at: Instant,
    total: u64,
    rate: f64,
}

impl RateSample {
    /// Starts sampling at `total`.
    pub fn new(total: u64) -> Self {
        Self {
            at: Instant::now(),
            total,
            rate: 0.0,
        }
    }

    /// The rate since the last update at least a second ago (recomputed then), else the
    /// last rate.
    pub fn update(&mut self, total: u64) -> f64 {
        let elapsed = self.at.elapsed().as_secs_f64();
        if elapsed >= 1.0 {
            self.rate = total.wrapping_sub(self.total) as f64 / elapsed;
            self.total = total;
            self.at = Instant::now();
        }
        self.rate
    }
}

/// Now as an ISO-8601 UTC timestamp (`2026-11-28T12:00:00.0000000Z`), as .NET writes a
/// `DateTime` in JSON.
pub fn iso8601_now() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    crate::protocol::signalr::json::format_timestamp(
        i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        since.subsec_nanos(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_written_per_shard_sum_across_shards() {
        let stats = Stats::new(vec!["a".into(), "b".into()], 2);
        stats.shard(0).connection_opened(0);
        stats.shard(1).connection_opened(0);
        stats.shard(1).connection_opened(1);
        stats.shard(1).connection_closed(1);
        stats.shard(0).received(3);
        stats.shard(1).delivered(5);
        assert_eq!(stats.connections_by_hub(), vec![("a", 2), ("b", 0)]);
        let totals = stats.totals();
        assert_eq!(
            (totals.connections, totals.messages_in, totals.deliveries),
            (2, 3, 5)
        );
        assert_eq!(stats.hub_index("b"), Some(1));
    }

    #[test]
    fn the_snapshot_names_status_uptime_connections_rate_backplane_and_version() {
        let stats = Stats::new(vec!["health".into()], 1);
        stats.shard(0).connection_opened(0);
        stats.shard(0).set_accepting(true);
        let snapshot = stats.snapshot(&stats.totals(), 2.5, "t".into());
        assert_eq!(
            snapshot.get("status").and_then(Value::as_str),
            Some("Healthy")
        );
        assert_eq!(snapshot.get("ready"), Some(&Value::Bool(true)));
        assert_eq!(snapshot.get("connections").and_then(Value::as_i64), Some(1));
        assert_eq!(
            snapshot
                .get("connectionsByHub")
                .and_then(|m| m.get("health"))
                .and_then(Value::as_i64),
            Some(1)
        );
        assert_eq!(snapshot.get("messagesPerSecond"), Some(&Value::Float(2.5)));
        assert!(
            snapshot
                .get("backplane")
                .and_then(|b| b.get("state"))
                .is_some()
        );
        assert_eq!(
            snapshot.get("version").and_then(Value::as_str),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn readiness_needs_every_shard_accepting_the_backplane_up_and_no_drain() {
        let stats = Stats::new(vec!["health".into()], 2);
        assert_eq!(
            stats.readiness().reason(),
            Some("not accepting connections")
        );
        stats.shard(0).set_accepting(true);
        stats.shard(1).set_accepting(true);
        assert!(stats.readiness().is_ready());
        stats.shard(1).set_backplane_up(false);
        assert_eq!(stats.readiness().reason(), Some("backplane down"));
        stats.shard(1).set_backplane_up(true);
        stats.set_draining();
        let readiness = stats.readiness();
        assert_eq!(
            (readiness.is_ready(), readiness.reason()),
            (false, Some("draining"))
        );
        let snapshot = stats.snapshot(&stats.totals(), 0.0, "t".into());
        assert_eq!(
            snapshot.get("status").and_then(Value::as_str),
            Some("Degraded")
        );
        assert_eq!(snapshot.get("draining"), Some(&Value::Bool(true)));
    }

    #[test]
    fn timestamps_are_iso_8601_utc() {
        let now = iso8601_now();
        assert_eq!(now.len(), 28, "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T', "{now}");
        assert!(now.starts_with("20"), "{now}");
    }
}
