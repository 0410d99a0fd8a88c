//! The top-level process's view of the run: it releases the phase barriers (sampling the
//! server just before each release) and samples the server, the machine and Redis at the
//! measurement window's edges.

use std::time::Duration;

use serde::Serialize;

use crate::clock::{self, now_ns};
use crate::probe::{ProcSample, Snapshot, clock_ticks, count_fds, scrape_gauge, snapshot};
use crate::recorder::Counter;
use crate::run::{Host, Shared};
use crate::scenario::Plan;

/// How long after the run the last series point is taken.
const SETTLE: Duration = Duration::from_secs(1);

/// The Prometheus gauge summed for the server's open connections.
const CONNECTIONS_GAUGE: &str = "ringhub_hub_connections_open";

/// One point of the time series (`--sample-every`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Seconds since the first barrier's release (the start of the run).
    pub t_s: f64,
    /// Server VmRSS, KiB.
    pub rss_kib: u64,
    /// Server open file descriptors (entries of `/proc/PID/fd`).
    pub fds: u64,
    /// Server utime + stime so far, seconds.
    pub cpu_s: f64,
    /// Open SignalR connections the server reports (`/metrics`), if it answered.
    pub server_connections: Option<u64>,
    /// Connections this load generator holds open (opened − left − dropped).
    pub client_connections: Option<u64>,
    /// Connections opened so far (handshake done).
    pub opened: Option<u64>,
}

/// How far ahead of "now" a barrier release is scheduled, so every thread of every process
/// sees it before it is due.
const RELEASE_LEAD: Duration = Duration::from_millis(100);

/// Samples taken during the run.
#[derive(Debug, Clone)]
pub struct Observer {
    server_pid: Option<u32>,
    publish_pid: Option<u32>,
    redis: Option<String>,
    plan: Plan,
    /// Release time of each barrier.
    pub releases: Vec<u64>,
    /// A sample taken just before each barrier's release.
    pub at_barriers: Vec<Snapshot>,
    window: Option<(u64, u64)>,
    /// A sample at the window's start.
    pub window_start: Option<Snapshot>,
    /// A sample at the window's end.
    pub window_end: Option<Snapshot>,
    /// The time series (only with a plan's `sample_every`).
    pub series: Vec<SeriesPoint>,
    next_series_ns: u64,
}

impl Observer {
    /// An observer for `plan`, sampling `server_pid` if given.
    pub fn new(plan: &Plan, server_pid: Option<u32>) -> Self {
        Self {
            server_pid,
            publish_pid: plan.publish_server_pid,
            redis: plan.redis.clone(),
            plan: plan.clone(),
            releases: Vec::new(),
            at_barriers: Vec::new(),
            window: None,
            window_start: None,
            window_end: None,
            series: Vec::new(),
            next_series_ns: u64::MAX,
        }
    }

    /// Takes one series point now (the server figures are zero if it is gone).
    fn sample_series(&mut self, now: u64, shared: Option<&Shared>) {
        let origin = self.releases.first().copied().unwrap_or(now);
        let now = now.max(origin);
        let server = self
            .server_pid
            .and_then(ProcSample::take)
            .unwrap_or_default();
        let counts = shared.map(|s| {
            let opened = s.total(Counter::Connected);
            let gone = s.total(Counter::Left) + s.total(Counter::Drops);
            (opened.saturating_sub(gone), opened)
        });
        self.series.push(SeriesPoint {
            t_s: now.saturating_sub(origin) as f64 / 1e9,
            rss_kib: server.rss_kib,
            fds: self.server_pid.and_then(count_fds).unwrap_or(0),
            cpu_s: server.cpu_ticks as f64 / clock_ticks(),
            server_connections: self
                .plan
                .metrics
                .as_ref()
                .and_then(|(addr, path)| scrape_gauge(*addr, path, CONNECTIONS_GAUGE)),
            client_connections: counts.map(|c| c.0),
            opened: counts.map(|c| c.1),
        });
    }

    fn sample(&self) -> Snapshot {
        snapshot(self.server_pid, self.publish_pid, self.redis.as_deref())
    }

    /// Samples, then picks barrier `index`'s release time.
    pub fn release_at(&mut self, index: usize) -> u64 {
        let sample = self.sample();
        self.at_barriers.push(sample);
        let at = now_ns() + clock::ns(RELEASE_LEAD);
        self.releases.push(at);
        if index == 0
            && let Some(every) = self.plan.sample_every
        {
            // The baseline: before any connection of the run.
            self.sample_series(at, None);
            self.next_series_ns = at + clock::ns(every).max(1);
        }
        if index == self.plan.window_barrier {
            let start = at + clock::ns(self.plan.window_offset);
            self.window = Some((start, start + clock::ns(self.plan.window_len)));
        }
        at
    }

    /// Takes the window samples and the series points when they are due (`shared`: this
    /// process's threads, for the client-side connection counts).
    pub fn poll(&mut self, now: u64, shared: Option<&Shared>) {
        if now >= self.next_series_ns
            && let Some(every) = self.plan.sample_every
        {
            self.sample_series(now, shared);
            self.next_series_ns += clock::ns(every).max(1);
            if self.next_series_ns < now {
                self.next_series_ns = now + clock::ns(every).max(1); // fell behind: skip
            }
        }
        let Some((start, end)) = self.window else {
            return;
        };
        if self.window_start.is_none() && now >= start {
            self.window_start = Some(self.sample());
        }
        if self.window_end.is_none() && now >= end {
            self.window_end = Some(self.sample());
        }
    }

    /// Takes any window sample still missing (the run ended early) and, a second after the
    /// last client closed, a last series point (the server back at rest).
    pub fn finish(&mut self, shared: Option<&Shared>) {
        if self.plan.sample_every.is_some() && !self.releases.is_empty() {
            std::thread::sleep(SETTLE);
            self.sample_series(now_ns(), shared);
        }
        if self.window_start.is_some() && self.window_end.is_none() {
            self.window_end = Some(self.sample());
        }
    }
}

impl Host for Observer {
    fn release(&mut self, index: usize) -> anyhow::Result<u64> {
        Ok(self.release_at(index))
    }

    fn tick(&mut self, now: u64, shared: &Shared) {
        self.poll(now, Some(shared));
    }
}
