//! Process statistics: counters each shard writes alone (relaxed atomics, one writer each) and
//! any shard or endpoint reads by summing, without a lock.
//!
//! The Health hub's snapshot ([`Stats::snapshot`]) and `/health` read the same numbers, so the
//! two can never disagree.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::protocol::signalr::Value;

/// One shard's counters. Only that shard writes them.
#[derive(Debug)]
pub struct ShardStats {
    /// Open SignalR connections per hub, in [`Stats::hubs`] order.
    connections: Box<[AtomicU64]>,
    /// Hub messages received from clients.
    messages_in: AtomicU64,
    /// Messages delivered to clients by fan-out (one per recipient).
    deliveries: AtomicU64,
    /// Progress events replaced by a newer one before they were sent (conflation).
    conflated: AtomicU64,
    /// Sends the backplane dropped (Redis down or too slow).
    backplane_dropped: AtomicU64,
    /// Whether this shard's backplane participant is up (always, in process).
    backplane_up: AtomicBool,
}

impl ShardStats {
    fn new(hubs: usize) -> Self {
        Self {
            connections: (0..hubs).map(|_| AtomicU64::new(0)).collect(),
            messages_in: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            conflated: AtomicU64::new(0),
            backplane_dropped: AtomicU64::new(0),
            backplane_up: AtomicBool::new(true),
        }
    }

    /// `n` sends were dropped by the backplane.
    pub fn backplane_dropped(&self, n: u64) {
        Self::add(&self.backplane_dropped, n);
    }

    /// Records whether this shard's backplane is up.
    pub fn set_backplane_up(&self, up: bool) {
        self.backplane_up.store(up, Ordering::Relaxed);
    }

    /// Only the owning shard calls the `add`s, so a load and a store are enough.
    fn add(counter: &AtomicU64, n: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// A connection to hub number `hub` opened.
    pub fn connection_opened(&self, hub: usize) {
        if let Some(counter) = self.connections.get(hub) {
            Self::add(counter, 1);
        }
    }

    /// A connection to hub number `hub` closed.
    pub fn connection_closed(&self, hub: usize) {
        if let Some(counter) = self.connections.get(hub) {
            Self::add(counter, u64::MAX);
        }
    }

    /// `n` hub messages arrived from clients.
    pub fn received(&self, n: u64) {
        Self::add(&self.messages_in, n);
    }

    /// `n` deliveries were queued to clients.
    pub fn delivered(&self, n: u64) {
        Self::add(&self.deliveries, n);
    }

    /// `n` progress events were superseded before being sent.
    pub fn conflated(&self, n: u64) {
        Self::add(&self.conflated, n);
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
        })
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
            conflated: sum(|s| &s.conflated),
            backplane_dropped: sum(|s| &s.backplane_dropped),
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
        Value::Map(vec![
            (s("status"), s("Healthy")),
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
        let snapshot = stats.snapshot(&stats.totals(), 2.5, "t".into());
        assert_eq!(
            snapshot.get("status").and_then(Value::as_str),
            Some("Healthy")
        );
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
    fn timestamps_are_iso_8601_utc() {
        let now = iso8601_now();
        assert_eq!(now.len(), 28, "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T', "{now}");
        assert!(now.starts_with("20"), "{now}");
    }
}
