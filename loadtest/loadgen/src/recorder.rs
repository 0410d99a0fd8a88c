//! What one thread measured: counters, latency histograms and a few notes.
//!
//! Each load generator thread owns one [`Recorder`] (shared with its process's coordinator for
//! the progress line), so the hot path touches no shared cache lines. At the end the recorders
//! of every thread and every process are folded into one [`Tally`], which serializes
//! histograms as `(value, count)` pairs so processes can merge them exactly.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A counter every scenario may bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Connections whose handshake finished.
    Connected,
    /// Connections that failed to connect, upgrade or handshake.
    ConnectFailed,
    /// Connections the server closed (or lost) while they were expected to stay up.
    Drops,
    /// Errors of any kind (failed connects, drops, error completions, malformed messages).
    Errors,
    /// Messages sent, all phases.
    SentTotal,
    /// Timed messages received, all phases.
    ReceivedTotal,
    /// Messages scheduled inside the measurement window.
    Sent,
    /// Deliveries expected for the messages of the window.
    Expected,
    /// Deliveries received of messages scheduled inside the window.
    Delivered,
    /// Timed messages that reached a connection that does not count deliveries (a
    /// publisher that also receives its own broadcast).
    PublisherEchoes,
    /// Group operations (joins, leaves) completed.
    GroupOps,
    /// Reconnects completed (churn).
    Reconnects,
    /// Stream items received.
    StreamItems,
    /// Connections closed on purpose (soak departures).
    Left,
    /// Departures without a close message (a TCP FIN or reset).
    Abrupt,
    /// Sequence errors: a message out of order, repeated, or of another group.
    SeqErrors,
    /// Publishes the server did not accept (soak REST publisher).
    PublishFailed,
}

const COUNTERS: usize = 17;

impl Counter {
    /// Every counter, in report order.
    pub const ALL: [Self; COUNTERS] = [
        Self::Connected,
        Self::ConnectFailed,
        Self::Drops,
        Self::Errors,
        Self::SentTotal,
        Self::ReceivedTotal,
        Self::Sent,
        Self::Expected,
        Self::Delivered,
        Self::PublisherEchoes,
        Self::GroupOps,
        Self::Reconnects,
        Self::StreamItems,
        Self::Left,
        Self::Abrupt,
        Self::SeqErrors,
        Self::PublishFailed,
    ];

    /// Its key in a [`Tally`].
    pub fn key(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::ConnectFailed => "connect_failed",
            Self::Drops => "drops",
            Self::Errors => "errors",
            Self::SentTotal => "sent_total",
            Self::ReceivedTotal => "received_total",
            Self::Sent => "sent",
            Self::Expected => "expected",
            Self::Delivered => "delivered",
            Self::PublisherEchoes => "publisher_echoes",
            Self::GroupOps => "group_ops",
            Self::Reconnects => "reconnects",
            Self::StreamItems => "stream_items",
            Self::Left => "left",
            Self::Abrupt => "abrupt",
            Self::SeqErrors => "seq_errors",
            Self::PublishFailed => "publish_failed",
        }
    }
}

/// A latency histogram a scenario may fill (all in nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hist {
    /// Scheduled send → receipt, for messages scheduled inside the window.
    Latency,
    /// Same, every message, reset by each progress line.
    Recent,
    /// Connect start → handshake answered.
    Connect,
    /// JoinGroup sent → its completion, while setting up.
    SetupJoin,
    /// JoinGroup scheduled → its completion, during the run.
    Join,
    /// LeaveGroup scheduled → its completion, during the run.
    Leave,
    /// Disconnect → reconnected and rejoined.
    Reconnect,
    /// How late the pacer dispatched a send after its due time (window sends): large
    /// values mean the generator, not the server, fell behind.
    SendLag,
}

const HISTS: usize = 8;

impl Hist {
    /// Every histogram.
    pub const ALL: [Self; HISTS] = [
        Self::Latency,
        Self::Recent,
        Self::Connect,
        Self::SetupJoin,
        Self::Join,
        Self::Leave,
        Self::Reconnect,
        Self::SendLag,
    ];

    /// Its key in a [`Tally`].
    pub fn key(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Recent => "recent",
            Self::Connect => "connect",
            Self::SetupJoin => "setup_join",
            Self::Join => "join",
            Self::Leave => "leave",
            Self::Reconnect => "reconnect",
            Self::SendLag => "send_lag",
        }
    }
}

/// Highest trackable latency: 100 s in ns (larger values are clamped).
const HIGHEST_NS: u64 = 100_000_000_000;

/// A fresh latency histogram: 1 ns .. 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // invariant: the bounds are constants that satisfy hdrhistogram's rules (low >= 1,
    // high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("valid histogram bounds")
}

/// One thread's measurements.
#[derive(Debug)]
pub struct Recorder {
    counters: [AtomicU64; COUNTERS],
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    hists: Mutex<Vec<Option<Histogram<u64>>>>,
    errors: Mutex<Vec<String>>,
    notes: Mutex<BTreeMap<String, String>>,
}

const ERROR_SAMPLES: usize = 8;

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
            hists: Mutex::new(vec![None; HISTS]),
            errors: Mutex::new(Vec::new()),
            notes: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds `n` to a counter.
    pub fn add(&self, counter: Counter, n: u64) {
        self.counters[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(&self, counter: Counter) -> u64 {
        self.counters[counter as usize].load(Ordering::Relaxed)
    }

    /// Keeps the earliest `first` and the latest `last` timestamps seen (e.g. the first
    /// connect attempt and the last handshake).
    pub fn mark_span(&self, first: u64, last: u64) {
        self.first_ns.fetch_min(first, Ordering::Relaxed);
        self.last_ns.fetch_max(last, Ordering::Relaxed);
    }

    /// Records a latency in nanoseconds.
    pub fn record(&self, hist: Hist, ns: u64) {
        let mut hists = lock(&self.hists);
        hists[hist as usize]
            .get_or_insert_with(new_histogram)
            .saturating_record(ns.max(1));
    }

    /// Records one delivery: always into the progress histogram, into the report's latency
    /// histogram (and the delivered count) when its message was scheduled inside the window.
    pub fn record_delivery(&self, ns: u64, in_window: bool) {
        let ns = ns.max(1);
        self.add(Counter::ReceivedTotal, 1);
        if in_window {
            self.add(Counter::Delivered, 1);
        }
        let mut hists = lock(&self.hists);
        hists[Hist::Recent as usize]
            .get_or_insert_with(new_histogram)
            .saturating_record(ns);
        if in_window {
            hists[Hist::Latency as usize]
                .get_or_insert_with(new_histogram)
                .saturating_record(ns);
        }
    }

    /// Records a timed message's latency (progress and report histograms) and counts it as
    /// received, leaving the delivered count to the scenario (soak: only owed messages).
    pub fn record_arrival(&self, ns: u64) {
        let ns = ns.max(1);
        self.add(Counter::ReceivedTotal, 1);
        let mut hists = lock(&self.hists);
        for hist in [Hist::Recent, Hist::Latency] {
            hists[hist as usize]
                .get_or_insert_with(new_histogram)
                .saturating_record(ns);
        }
    }

    /// Counts an error and keeps its text if few were kept so far.
    pub fn error(&self, text: impl FnOnce() -> String) {
        self.add(Counter::Errors, 1);
        let mut errors = lock(&self.errors);
        if errors.len() < ERROR_SAMPLES {
            errors.push(text());
        }
    }

    /// Stores a note for the report (e.g. the oversize check's verdict).
    pub fn note(&self, key: &str, value: String) {
        lock(&self.notes).insert(key.to_owned(), value);
    }

    /// Adds this recorder's progress histogram into `into`, then empties it.
    pub fn take_recent(&self, into: &mut Histogram<u64>) {
        let mut hists = lock(&self.hists);
        if let Some(recent) = hists[Hist::Recent as usize].as_mut() {
            let _ = into.add(&*recent);
            recent.reset();
        }
    }

    /// Adds this recorder's window latency histogram into `into`.
    pub fn add_latency(&self, into: &mut Histogram<u64>) {
        let hists = lock(&self.hists);
        if let Some(latency) = hists[Hist::Latency as usize].as_ref() {
            let _ = into.add(latency);
        }
    }

    /// Everything recorded, in mergeable form.
    pub fn tally(&self) -> Tally {
        let mut tally = Tally::default();
        for counter in Counter::ALL {
            tally
                .counters
                .insert(counter.key().into(), self.get(counter));
        }
        let first = self.first_ns.load(Ordering::Relaxed);
        if first != u64::MAX {
            tally.first_ns = Some(first);
            tally.last_ns = Some(self.last_ns.load(Ordering::Relaxed));
        }
        let hists = lock(&self.hists);
        for hist in Hist::ALL {
            if hist == Hist::Recent {
                continue;
            }
            if let Some(h) = hists[hist as usize].as_ref() {
                tally.hists.insert(hist.key().into(), counts_of(h));
            }
        }
        tally.errors = lock(&self.errors).clone();
        tally.notes = lock(&self.notes).clone();
        tally
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A thread that panicked while recording leaves plain numbers behind: keep using them.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A histogram as `(value, count)` pairs of its non-empty buckets.
pub fn counts_of(h: &Histogram<u64>) -> Vec<[u64; 2]> {
    h.iter_recorded()
        .map(|v| [v.value_iterated_to(), v.count_at_value()])
        .collect()
}

/// Rebuilds a histogram from [`counts_of`] pairs.
pub fn histogram_from(counts: &[[u64; 2]]) -> Histogram<u64> {
    let mut h = new_histogram();
    for &[value, count] in counts {
        let _ = h.record_n(value.clamp(1, HIGHEST_NS), count);
    }
    h
}

/// Mergeable measurements of one thread, one process, or all of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Counter sums, by [`Counter::key`].
    pub counters: BTreeMap<String, u64>,
    /// Histograms as `(value, count)` pairs, by [`Hist::key`].
    pub hists: BTreeMap<String, Vec<[u64; 2]>>,
    /// Earliest span start (see [`Recorder::mark_span`]).
    pub first_ns: Option<u64>,
    /// Latest span end.
    pub last_ns: Option<u64>,
    /// A few error texts.
    pub errors: Vec<String>,
    /// Notes for the report.
    pub notes: BTreeMap<String, String>,
}

impl Tally {
    /// A counter's value (0 if absent).
    pub fn count(&self, counter: Counter) -> u64 {
        self.counters.get(counter.key()).copied().unwrap_or(0)
    }

    /// A histogram (empty if absent).
    pub fn histogram(&self, hist: Hist) -> Histogram<u64> {
        self.hists
            .get(hist.key())
            .map_or_else(new_histogram, |c| histogram_from(c))
    }

    /// Folds `other` into `self`: sums, histogram merges, the wider span, error samples up
    /// to the limit, and notes (later ones win).
    pub fn merge(&mut self, other: &Self) {
        for (key, value) in &other.counters {
            *self.counters.entry(key.clone()).or_insert(0) += value;
        }
        for (key, counts) in &other.hists {
            let mut merged = self
                .hists
                .get(key)
                .map_or_else(new_histogram, |c| histogram_from(c));
            let _ = merged.add(histogram_from(counts));
            self.hists.insert(key.clone(), counts_of(&merged));
        }
        self.first_ns = match (self.first_ns, other.first_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_ns = match (self.last_ns, other.last_ns) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for error in &other.errors {
            if self.errors.len() < ERROR_SAMPLES {
                self.errors.push(error.clone());
            }
        }
        self.notes
            .extend(other.notes.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_equal_one_histogram_of_all_values() {
        let a = Recorder::new();
        let b = Recorder::new();
        let mut all = new_histogram();
        for (i, ns) in (1..5000u64).map(|v| v * 997).enumerate() {
            if i % 3 == 0 { &a } else { &b }.record_delivery(ns, true);
            all.record(ns).unwrap();
        }
        let mut merged = a.tally();
        // Through JSON, as worker processes hand their tallies over.
        let b_json = serde_json::to_string(&b.tally()).unwrap();
        merged.merge(&serde_json::from_str(&b_json).unwrap());
        let h = merged.histogram(Hist::Latency);
        assert_eq!(h.len(), all.len());
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(h.value_at_quantile(q), all.value_at_quantile(q), "q={q}");
        }
        assert_eq!(merged.count(Counter::Delivered), 4999);
    }

    #[test]
    fn merging_keeps_the_widest_span_and_sums_counters() {
        let a = Recorder::new();
        a.mark_span(100, 200);
        a.add(Counter::Sent, 3);
        let b = Recorder::new();
        b.mark_span(50, 150);
        b.add(Counter::Sent, 4);
        let mut t = a.tally();
        t.merge(&b.tally());
        assert_eq!((t.first_ns, t.last_ns), (Some(50), Some(200)));
        assert_eq!(t.count(Counter::Sent), 7);
    }

    #[test]
    fn deliveries_outside_the_window_only_reach_the_progress_histogram() {
        let r = Recorder::new();
        r.record_delivery(1_000, false);
        r.record_delivery(2_000, true);
        assert_eq!(r.get(Counter::Delivered), 1);
        assert_eq!(r.get(Counter::ReceivedTotal), 2);
        let mut recent = new_histogram();
        r.take_recent(&mut recent);
        assert_eq!(recent.len(), 2);
        let mut again = new_histogram();
        r.take_recent(&mut again);
        assert_eq!(again.len(), 0);
        assert_eq!(r.tally().histogram(Hist::Latency).len(), 1);
    }
}
