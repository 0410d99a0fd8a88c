//! The report: one JSON object (`--json`) or a human summary, built from the merged tally,
//! the observer's samples and the plan.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cli::{Cli, Scenario, SoakArgs};
use crate::flat::{self, Flatness, Tolerance};
use crate::observer::{Observer, SeriesPoint};
use crate::probe::{ProcSample, Snapshot, clock_ticks};
use crate::recorder::{Counter, Hist, Tally};
use crate::run::CLIENT_CPU_TICKS;
use crate::scenario::{Plan, Unit};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
    /// Samples.
    pub count: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        Self {
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            count: h.len(),
        }
    }
}

/// Server figures over the run.
#[derive(Debug, Clone, Serialize)]
pub struct ServerReport {
    /// The pid sampled.
    pub pid: u32,
    /// utime + stime over the measurement window, seconds.
    pub cpu_s: f64,
    /// Server CPU-µs per unit of work (S1: from the first connect to the last handshake, per
    /// connection: the connect cost, apart from `cpu_s`, which covers the hold only).
    pub cpu_us_per_unit: Option<f64>,
    /// What the unit is.
    pub unit: &'static str,
    /// CPU use over the window, percent of one core (S1: the idle CPU over the hold).
    pub cpu_percent: f64,
    /// softirq time over the window, all CPUs, seconds.
    pub softirq_s: f64,
    /// VmRSS before (S1: before the first connect; else at the window's start), KiB.
    pub rss_before_kib: u64,
    /// VmRSS after (S1: after the last handshake; else at the window's end), KiB.
    pub rss_after_kib: u64,
    /// RSS growth per established connection, KiB (S1).
    pub rss_per_connection_kib: Option<f64>,
    /// Pss before, KiB.
    pub pss_before_kib: u64,
    /// Pss after, KiB.
    pub pss_after_kib: u64,
    /// Pss growth per established connection, KiB (S1).
    pub pss_per_connection_kib: Option<f64>,
    /// Machine-wide Slab growth per connection, KiB (S1; both socket ends, not in RSS).
    pub slab_per_connection_kib: Option<f64>,
    /// Read syscalls over the window per unit.
    pub syscr_per_unit: Option<f64>,
    /// Write syscalls over the window per unit.
    pub syscw_per_unit: Option<f64>,
}

/// Connection figures.
#[derive(Debug, Clone, Serialize)]
pub struct Connections {
    /// Handshakes completed.
    pub established: u64,
    /// Connections that failed to establish.
    pub failed: u64,
    /// Connections closed unexpectedly.
    pub drops: u64,
    /// Handshakes per second from the first connect attempt to the last handshake.
    pub connect_rate_per_s: Option<f64>,
    /// Connect start → handshake answered.
    pub connect_latency_us: Latency,
}

/// The load generator's own CPU use: near 100 % per thread means the generator, not the
/// server, may be the limit.
#[derive(Debug, Clone, Serialize)]
pub struct ClientReport {
    /// utime + stime over the window, seconds, summed over processes.
    pub cpu_s: f64,
    /// The same, in percent of one core.
    pub cpu_percent: f64,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// The URL driven.
    pub target: String,
    /// json | msgpack | raw.
    pub protocol: String,
    /// Scenario parameters.
    pub params: serde_json::Value,
    /// Length of the measurement window (S1: the hold).
    pub duration_s: f64,
    /// Messages scheduled inside the window.
    pub sent: u64,
    /// Deliveries expected for them.
    pub expected: u64,
    /// Deliveries received.
    pub delivered: u64,
    /// expected - delivered.
    pub lost: u64,
    /// Errors of any kind.
    pub errors: u64,
    /// sent / duration.
    pub rate_sent_per_s: f64,
    /// delivered / duration.
    pub rate_delivered_per_s: f64,
    /// Scheduled send → receipt, window messages only.
    pub latency_us: Latency,
    /// Open loop: how late the generator dispatched sends after their due time. A p99 near
    /// the latency's means the generator, not the server, was the bottleneck.
    pub send_lag_us: Option<Latency>,
    /// The server, with --server-pid.
    pub server: Option<ServerReport>,
    /// S6 instance A, with --publish-server-pid.
    pub publish_server: Option<ServerReport>,
    /// Connections.
    pub connections: Connections,
    /// The load generator's own CPU time over the window (all its processes).
    pub client: ClientReport,
    /// Payload throughput to clients.
    pub mb_per_s: f64,
    /// Group operation latencies (S3/S6).
    pub group_ops: Option<BTreeMap<String, Latency>>,
    /// Redis command calls over the window (S6 with --redis).
    pub redis: Option<serde_json::Value>,
    /// Other counters.
    pub counters: BTreeMap<String, u64>,
    /// Notes (e.g. the oversize check).
    pub notes: BTreeMap<String, String>,
    /// A few error texts.
    pub error_samples: Vec<String>,
    /// Processes × threads.
    pub processes: usize,
    /// Threads per process.
    pub threads: usize,
    /// The soak's churn, loss and flatness figures and its time series.
    pub soak: Option<SoakReport>,
}

/// What the soak adds to the report.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Flatness is judged on the samples from this many seconds on (`--warmup`).
    pub warmup_s: f64,
    /// Connections established (each slot's every lifetime).
    pub connections_opened: u64,
    /// Connections closed on purpose.
    pub connections_left: u64,
    /// ...of which without a close message (TCP FIN or reset).
    pub connections_abrupt: u64,
    /// Messages the REST API accepted (202).
    pub published: u64,
    /// Publishes that failed or were refused.
    pub publish_failed: u64,
    /// Messages owed to clients (sum over lifetimes of `from..to`).
    pub owed: u64,
    /// Owed messages received.
    pub received_owed: u64,
    /// Owed messages missing.
    pub lost: u64,
    /// Messages out of order, repeated, or of another group.
    pub seq_errors: u64,
    /// Server VmRSS after the warm-up (KiB), `None` with too few samples.
    pub rss: Option<Flatness>,
    /// Server open fds after the warm-up.
    pub fds: Option<Flatness>,
    /// Both verdicts were given and neither figure grows.
    pub flat: bool,
    /// `--require-flat` was given.
    pub require_flat: bool,
    /// The time series.
    pub series: Vec<SeriesPoint>,
}

impl SoakReport {
    fn build(
        args: &SoakArgs,
        (warmup_s, run_s): (f64, f64),
        tally: &Tally,
        observer: &Observer,
    ) -> Self {
        // Judge the steady state only: not the baseline before the first client, nor the
        // points from the run's end on (every client leaving, then the server at rest).
        let during: Vec<&SeriesPoint> = observer
            .series
            .iter()
            .filter(|p| p.client_connections.is_some() && p.t_s < run_s)
            .collect();
        let points = |f: fn(&SeriesPoint) -> f64| -> Vec<(f64, f64)> {
            during.iter().map(|p| (p.t_s, f(p))).collect()
        };
        let rss = flat::judge(
            &points(|p| p.rss_kib as f64),
            warmup_s,
            Tolerance {
                pct: args.rss_tolerance_pct,
                floor: args.rss_tolerance_kib as f64,
            },
        );
        let fds = flat::judge(
            &points(|p| p.fds as f64),
            warmup_s,
            Tolerance {
                pct: args.fd_tolerance_pct,
                floor: args.fd_tolerance as f64,
            },
        );
        let owed = tally.count(Counter::Expected);
        let received_owed = tally.count(Counter::Delivered);
        Self {
            warmup_s,
            connections_opened: tally.count(Counter::Connected),
            connections_left: tally.count(Counter::Left),
            connections_abrupt: tally.count(Counter::Abrupt),
            published: tally.count(Counter::Sent),
            publish_failed: tally.count(Counter::PublishFailed),
            owed,
            received_owed,
            lost: owed.saturating_sub(received_owed),
            seq_errors: tally.count(Counter::SeqErrors),
            flat: rss.as_ref().is_some_and(|v| v.flat) && fds.as_ref().is_some_and(|v| v.flat),
            rss,
            fds,
            require_flat: args.require_flat,
            series: observer.series.clone(),
        }
    }
}

impl Report {
    /// Builds the report.
    pub fn build(cli: &Cli, plan: &Plan, tally: &Tally, observer: &Observer) -> Self {
        let duration_s = plan.window_len.as_secs_f64();
        let sent = tally.count(Counter::Sent);
        let expected = tally.count(Counter::Expected);
        let delivered = tally.count(Counter::Delivered);
        let connected = tally.count(Counter::Connected);
        let payload_mb = delivered as f64 * plan.payload_size as f64 / 1e6;
        let units = match plan.unit {
            Unit::Connection => connected as f64,
            Unit::Megabyte => payload_mb,
            _ => delivered as f64,
        };
        let span_s = match (tally.first_ns, tally.last_ns) {
            (Some(first), Some(last)) if last > first => Some((last - first) as f64 / 1e9),
            _ => None,
        };
        let server_pid = cli.common.server_pid;
        let server = server_pid.map(|pid| {
            let unit = (units, plan.unit.name());
            server_report(pid, plan, observer, unit, connected, |s| s.server.as_ref())
        });
        let publish_server = plan.publish_server_pid.map(|pid| {
            let unit = (sent as f64, "message");
            server_report(pid, plan, observer, unit, 0, |s| s.publish_server.as_ref())
        });
        let mut group_ops = BTreeMap::new();
        for hist in [Hist::SetupJoin, Hist::Join, Hist::Leave, Hist::Reconnect] {
            if tally.hists.contains_key(hist.key()) {
                group_ops.insert(hist.key().to_owned(), Latency::of(&tally.histogram(hist)));
            }
        }
        let redis = redis_delta(observer, sent);
        let counters = [
            Counter::SentTotal,
            Counter::ReceivedTotal,
            Counter::PublisherEchoes,
            Counter::GroupOps,
            Counter::Reconnects,
            Counter::StreamItems,
        ]
        .into_iter()
        .map(|c| (c.key().to_owned(), tally.count(c)))
        .filter(|(_, v)| *v > 0)
        .collect();
        Self {
            scenario: plan.name,
            target: cli.common.url.clone(),
            protocol: format!("{:?}", cli.common.protocol).to_lowercase(),
            params: plan.params.clone(),
            duration_s,
            sent,
            expected,
            delivered,
            lost: expected.saturating_sub(delivered),
            errors: tally.count(Counter::Errors),
            rate_sent_per_s: sent as f64 / duration_s.max(1e-9),
            rate_delivered_per_s: delivered as f64 / duration_s.max(1e-9),
            latency_us: Latency::of(&tally.histogram(Hist::Latency)),
            send_lag_us: tally
                .hists
                .contains_key(Hist::SendLag.key())
                .then(|| Latency::of(&tally.histogram(Hist::SendLag))),
            server,
            publish_server,
            client: {
                let ticks = tally.counters.get(CLIENT_CPU_TICKS).copied().unwrap_or(0);
                let cpu_s = ticks as f64 / clock_ticks();
                ClientReport {
                    cpu_s,
                    cpu_percent: cpu_s / duration_s.max(1e-9) * 100.0,
                }
            },
            connections: Connections {
                established: connected,
                failed: tally.count(Counter::ConnectFailed),
                drops: tally.count(Counter::Drops),
                connect_rate_per_s: span_s.map(|s| connected as f64 / s),
                connect_latency_us: Latency::of(&tally.histogram(Hist::Connect)),
            },
            mb_per_s: payload_mb / duration_s.max(1e-9),
            group_ops: (!group_ops.is_empty()).then_some(group_ops),
            redis,
            counters,
            notes: tally.notes.clone(),
            error_samples: tally.errors.clone(),
            processes: cli.common.processes,
            threads: cli.common.threads,
            soak: match &cli.scenario {
                Scenario::Soak(args) => Some(SoakReport::build(
                    args,
                    (
                        cli.common.warmup.as_secs_f64(),
                        (cli.common.warmup + cli.common.duration).as_secs_f64(),
                    ),
                    tally,
                    observer,
                )),
                _ => None,
            },
        }
    }

    /// Whether the run failed: connections that did not establish, a failed oversize
    /// check, or (with `zero_loss`) any loss or drop; for the soak also (with `zero_loss`)
    /// any error, and (with `--require-flat`) RSS or fds growing or too few samples.
    pub fn failed(&self, zero_loss: bool) -> bool {
        let soak_failed = self
            .soak
            .as_ref()
            .is_some_and(|soak| soak.fails(zero_loss, self.errors));
        soak_failed
            || self.connections.failed > 0
            || self
                .notes
                .get("oversize_check")
                .is_some_and(|v| v.starts_with("failed"))
            || (zero_loss && (self.lost > 0 || self.connections.drops > 0))
    }

    /// The human summary.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let l = &self.latency_us;
        let _ = writeln!(
            out,
            "{} against {} ({}), {} process(es) x {} thread(s)",
            self.scenario, self.target, self.protocol, self.processes, self.threads
        );
        let _ = writeln!(out, "  params: {}", self.params);
        let c = &self.connections;
        let _ = writeln!(
            out,
            "  connections: {} established, {} failed, {} dropped{}",
            c.established,
            c.failed,
            c.drops,
            c.connect_rate_per_s
                .map(|r| format!(", {r:.0} handshakes/s"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "  window {:.1}s: sent {} ({:.0}/s), delivered {}/{} ({:.0}/s), lost {}, errors {}, {:.2} MB/s",
            self.duration_s,
            self.sent,
            self.rate_sent_per_s,
            self.delivered,
            self.expected,
            self.rate_delivered_per_s,
            self.lost,
            self.errors,
            self.mb_per_s
        );
        let (name, l) = if self.scenario == "s1" {
            ("connect latency", &c.connect_latency_us)
        } else {
            ("latency", l)
        };
        let _ = writeln!(
            out,
            "  {name} us: p50 {} p90 {} p99 {} p99.9 {} max {} (n={})",
            l.p50, l.p90, l.p99, l.p999, l.max, l.count
        );
        let _ = writeln!(
            out,
            "  load generator: cpu {:.2}s ({:.0}% of one core){}",
            self.client.cpu_s,
            self.client.cpu_percent,
            self.send_lag_us
                .as_ref()
                .map(|l| format!(", send lag us p50 {} p99 {} max {}", l.p50, l.p99, l.max))
                .unwrap_or_default()
        );
        if let Some(ops) = &self.group_ops {
            for (name, l) in ops {
                let _ = writeln!(
                    out,
                    "  {name} us: p50 {} p99 {} max {} (n={})",
                    l.p50, l.p99, l.max, l.count
                );
            }
        }
        for (label, server) in [
            ("server", &self.server),
            ("publish server", &self.publish_server),
        ] {
            if let Some(s) = server {
                // S1: the window is the hold; the per-connection figure is the connect cost.
                let (window, per) = if s.unit == "connection" {
                    ("idle cpu over the hold", "connect ")
                } else {
                    ("cpu", "")
                };
                let _ = writeln!(
                    out,
                    "  {label} {}: {window} {:.2}s ({:.1}%), {per}{} us/{}, softirq {:.2}s, rss {} -> {} KiB{}{}",
                    s.pid,
                    s.cpu_s,
                    s.cpu_percent,
                    s.cpu_us_per_unit.map_or("-".into(), |v| format!("{v:.2}")),
                    s.unit,
                    s.softirq_s,
                    s.rss_before_kib,
                    s.rss_after_kib,
                    s.rss_per_connection_kib
                        .map(|v| format!(" ({v:.2} KiB/conn RSS"))
                        .unwrap_or_default(),
                    s.pss_per_connection_kib
                        .map(|v| format!(", {v:.2} KiB/conn Pss)"))
                        .unwrap_or_default(),
                );
                if let Some(slab) = s.slab_per_connection_kib {
                    let _ = writeln!(
                        out,
                        "  kernel slab: {slab:.2} KiB per connection (both socket ends, machine-wide)"
                    );
                }
            }
        }
        if let Some(redis) = &self.redis {
            let _ = writeln!(out, "  redis: {redis}");
        }
        if let Some(soak) = &self.soak {
            soak.human(&mut out);
        }
        for (k, v) in &self.notes {
            let _ = writeln!(out, "  {k}: {v}");
        }
        for e in &self.error_samples {
            let _ = writeln!(out, "  error: {e}");
        }
        out
    }
}

impl SoakReport {
    /// Whether the soak's own rules fail the run: any error at all (with `zero_loss`; loss
    /// and drops are checked for every scenario), or RSS or fds not judged flat (with
    /// `--require-flat`; too few samples is not flat either).
    pub fn fails(&self, zero_loss: bool, errors: u64) -> bool {
        (zero_loss && errors > 0) || (self.require_flat && !self.flat)
    }

    fn human(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "  soak: {} connections opened, {} left ({} abruptly); {} published ({} failed); owed {}, received {}, lost {}; {} sequence errors",
            self.connections_opened,
            self.connections_left,
            self.connections_abrupt,
            self.published,
            self.publish_failed,
            self.owed,
            self.received_owed,
            self.lost,
            self.seq_errors
        );
        for (name, unit, verdict) in [("rss", "KiB", &self.rss), ("fds", "", &self.fds)] {
            match verdict {
                Some(v) => {
                    let _ = writeln!(
                        out,
                        "  {name} after {:.0}s: {:.0} -> {:.0}{unit} (growth {:+.0}, fitted {:+.0}, slope {:+.0}/h, tolerance {:.0}) {}",
                        self.warmup_s,
                        v.first_mean,
                        v.last_mean,
                        v.growth,
                        v.trend,
                        v.slope_per_hour,
                        v.tolerance,
                        if v.flat { "flat" } else { "GROWS" }
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "  {name}: too few samples after the warm-up for a verdict"
                    );
                }
            }
        }
        if let Some(last) = self.series.last() {
            let _ = writeln!(
                out,
                "  series: {} samples; at the end (all clients gone): rss {} KiB, fds {}, server connections {}",
                self.series.len(),
                last.rss_kib,
                last.fds,
                last.server_connections
                    .map_or("-".into(), |c| c.to_string())
            );
        }
    }
}

fn server_report(
    pid: u32,
    plan: &Plan,
    observer: &Observer,
    (units, unit): (f64, &'static str),
    connected: u64,
    pick: impl Fn(&Snapshot) -> Option<&ProcSample>,
) -> ServerReport {
    let ticks = clock_ticks();
    let window = (observer.window_start.as_ref(), observer.window_end.as_ref());
    let (w0, w1) = (
        window.0.and_then(&pick).cloned().unwrap_or_default(),
        window.1.and_then(&pick).cloned().unwrap_or_default(),
    );
    let window_s = match window {
        (Some(a), Some(b)) if b.at_ns > a.at_ns => (b.at_ns - a.at_ns) as f64 / 1e9,
        _ => plan.window_len.as_secs_f64(),
    };
    let cpu_s = w1.cpu_ticks.saturating_sub(w0.cpu_ticks) as f64 / ticks;
    let softirq_s = match window {
        (Some(a), Some(b)) => {
            b.system
                .softirq_ticks
                .saturating_sub(a.system.softirq_ticks) as f64
                / ticks
        }
        _ => 0.0,
    };
    let per_unit = |v: f64| (units > 0.0).then(|| v / units);
    let (mem_before, mem_after, system_before, system_after, unit_cpu_s) =
        match plan.memory_barriers {
            Some((before, after)) => {
                let b = observer.at_barriers.get(before);
                let a = observer.at_barriers.get(after);
                let pb = b.and_then(&pick).cloned().unwrap_or_default();
                let pa = a.and_then(&pick).cloned().unwrap_or_default();
                let connect_cpu = pa.cpu_ticks.saturating_sub(pb.cpu_ticks) as f64 / ticks;
                (
                    pb,
                    pa,
                    b.map(|s| s.system.slab_kib),
                    a.map(|s| s.system.slab_kib),
                    connect_cpu,
                )
            }
            None => (
                w0.clone(),
                w1.clone(),
                window.0.map(|s| s.system.slab_kib),
                window.1.map(|s| s.system.slab_kib),
                cpu_s,
            ),
        };
    let per_conn = |after: u64, before: u64| {
        (plan.unit == Unit::Connection && connected > 0)
            .then(|| (after as f64 - before as f64) / connected as f64)
    };
    ServerReport {
        pid,
        cpu_s,
        cpu_us_per_unit: per_unit(unit_cpu_s * 1e6),
        unit,
        cpu_percent: cpu_s / window_s.max(1e-9) * 100.0,
        softirq_s,
        rss_before_kib: mem_before.rss_kib,
        rss_after_kib: mem_after.rss_kib,
        rss_per_connection_kib: per_conn(mem_after.rss_kib, mem_before.rss_kib),
        pss_before_kib: mem_before.pss_kib,
        pss_after_kib: mem_after.pss_kib,
        pss_per_connection_kib: per_conn(mem_after.pss_kib, mem_before.pss_kib),
        slab_per_connection_kib: match (system_before, system_after) {
            (Some(b), Some(a)) => per_conn(a, b),
            _ => None,
        },
        syscr_per_unit: per_unit(w1.syscr.saturating_sub(w0.syscr) as f64),
        syscw_per_unit: per_unit(w1.syscw.saturating_sub(w0.syscw) as f64),
    }
}

fn redis_delta(observer: &Observer, sent: u64) -> Option<serde_json::Value> {
    let before = observer.window_start.as_ref()?.redis.as_ref()?;
    let after = observer.window_end.as_ref()?.redis.as_ref()?;
    let mut delta = BTreeMap::new();
    for (command, calls) in after {
        if command == "info" {
            continue; // our own probes
        }
        let d = calls.saturating_sub(before.get(command).copied().unwrap_or(0));
        if d > 0 {
            delta.insert(command.clone(), d);
        }
    }
    let total: u64 = delta.values().sum();
    Some(serde_json::json!({
        "commands": delta,
        "total": total,
        "per_message": (sent > 0).then(|| total as f64 / sent as f64),
        "publish_per_message": (sent > 0).then(|| delta.get("publish").copied().unwrap_or(0) as f64 / sent as f64),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soak(flat: bool, require_flat: bool) -> SoakReport {
        SoakReport {
            warmup_s: 40.0,
            connections_opened: 10,
            connections_left: 10,
            connections_abrupt: 5,
            published: 100,
            publish_failed: 0,
            owed: 500,
            received_owed: 500,
            lost: 0,
            seq_errors: 0,
            rss: None,
            fds: None,
            flat,
            require_flat,
            series: Vec::new(),
        }
    }

    #[test]
    fn a_soak_with_zero_loss_required_fails_on_any_error() {
        assert!(soak(true, true).fails(true, 1));
        assert!(!soak(true, true).fails(true, 0));
        assert!(!soak(true, true).fails(false, 1));
    }

    #[test]
    fn a_soak_fails_on_growth_only_when_flatness_is_required() {
        assert!(soak(false, true).fails(false, 0));
        assert!(!soak(false, false).fails(true, 0));
    }
}
