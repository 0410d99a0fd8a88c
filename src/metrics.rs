//! Every series ringhub exports, declared here and nowhere else, and their rendering in the
//! Prometheus text exposition format 0.0.4 (`GET /metrics`, [`crate::http::metrics`]).
//!
//! Names follow `ringhub_<subsystem>_<name>_<unit>`. The values are the shards' single-writer
//! counters ([`crate::stats`]) summed at scrape time without a lock, plus a few facts about
//! the process read from `/proc` when scraped.

use std::fmt::Write as _;

use crate::auth::AuthError;
use crate::hub::identity::TokenError;
use crate::protocol::signalr::handshake::HandshakeError;
use crate::stats::{
    DROP_REASONS, HistogramTotals, MESSAGE_TYPES, REFUSAL_REASONS, ShardStats, Stats,
};
use std::sync::atomic::{AtomicU64, Ordering};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets with the process).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets, a sum and a count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One metric family: its name, type and help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// The full series name (histograms add `_bucket`, `_sum` and `_count`).
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// What it measures.
    pub help: &'static str,
}

const fn family(name: &'static str, kind: Kind, help: &'static str) -> Family {
    Family { name, kind, help }
}

/// `1`, labelled with the version.
pub const BUILD_INFO: Family = family(
    "ringhub_build_info",
    Kind::Gauge,
    "Always 1; the version label names the running build.",
);
/// Shards (threads) serving.
pub const RUNTIME_SHARDS: Family = family(
    "ringhub_runtime_shards",
    Kind::Gauge,
    "Shards (one pinned thread each) serving connections.",
);
/// Seconds since the server started.
pub const PROCESS_UPTIME: Family = family(
    "ringhub_process_uptime_seconds",
    Kind::Gauge,
    "Seconds since the server started serving.",
);
/// Resident set size.
pub const PROCESS_RSS: Family = family(
    "ringhub_process_resident_memory_bytes",
    Kind::Gauge,
    "Resident memory of the process (VmRSS).",
);
/// Open file descriptors.
pub const PROCESS_OPEN_FDS: Family = family(
    "ringhub_process_open_fds",
    Kind::Gauge,
    "Open file descriptors (sockets included).",
);
/// The open-file limit.
pub const PROCESS_MAX_FDS: Family = family(
    "ringhub_process_max_fds",
    Kind::Gauge,
    "The process's soft limit on open file descriptors.",
);
/// Open SignalR connections.
pub const CONNECTIONS_OPEN: Family = family(
    "ringhub_hub_connections_open",
    Kind::Gauge,
    "Open SignalR connections, by hub and shard.",
);
/// SignalR connections ever opened.
pub const CONNECTIONS_OPENED: Family = family(
    "ringhub_hub_connections_opened_total",
    Kind::Counter,
    "SignalR connections opened (upgraded and registered), by hub and shard.",
);
/// Completed handshakes.
pub const HANDSHAKES: Family = family(
    "ringhub_signalr_handshakes_total",
    Kind::Counter,
    "SignalR handshakes completed, by hub.",
);
/// Failed handshakes.
pub const HANDSHAKE_FAILURES: Family = family(
    "ringhub_signalr_handshake_failures_total",
    Kind::Counter,
    "SignalR handshakes refused, by reason (canceled includes the handshake timeout).",
);
/// Handshake latency.
pub const HANDSHAKE_DURATION: Family = family(
    "ringhub_signalr_handshake_duration_seconds",
    Kind::Histogram,
    "From the WebSocket upgrade to the SignalR handshake response.",
);
/// Negotiate latency.
pub const NEGOTIATE_DURATION: Family = family(
    "ringhub_http_negotiate_duration_seconds",
    Kind::Histogram,
    "Negotiate requests, from the parsed request head to the response (key checks included).",
);
/// Hub messages received.
pub const MESSAGES_RECEIVED: Family = family(
    "ringhub_hub_messages_received_total",
    Kind::Counter,
    "Hub messages received from clients, by hub and message type.",
);
/// Hub messages sent.
pub const MESSAGES_SENT: Family = family(
    "ringhub_hub_messages_sent_total",
    Kind::Counter,
    "Hub messages queued to clients (replies and fan-out deliveries), by hub and message type.",
);
/// Fan-out deliveries.
pub const DELIVERIES: Family = family(
    "ringhub_hub_deliveries_total",
    Kind::Counter,
    "Messages delivered by fan-out (one per recipient), by shard.",
);
/// Messages not sent.
pub const DROPS: Family = family(
    "ringhub_hub_messages_dropped_total",
    Kind::Counter,
    "Messages not sent to a client, by reason: slow_consumer (its queue passed max_outbound), \
     rate_limit (invocation refused), conflated (progress replaced by a newer one), \
     backplane_down (Redis down or too slow).",
);
/// Invocation latency.
pub const INVOCATION_DURATION: Family = family(
    "ringhub_hub_invocation_duration_seconds",
    Kind::Histogram,
    "Invocations, from receipt until the completion is queued (built-in methods) or the \
     backend answered (upstream methods), by hub.",
);
/// Refused keys.
pub const AUTH_FAILURES: Family = family(
    "ringhub_auth_failures_total",
    Kind::Counter,
    "Negotiate and connect requests refused by key checks, by reason.",
);
/// Refused connection tokens.
pub const TOKEN_REFUSALS: Family = family(
    "ringhub_signalr_token_refusals_total",
    Kind::Counter,
    "WebSocket connects whose connection token was answered 404, by reason: malformed, \
     bad_signature (forged, or another cluster secret), wrong_hub, expired, unknown (its \
     connection ended here, or its stateful session lives on another instance).",
);
/// Refusals by a limit.
pub const LIMIT_REFUSALS: Family = family(
    "ringhub_limits_refusals_total",
    Kind::Counter,
    "Connections, negotiates and group joins refused by a limit, by reason: connections \
     (limits.max_connections, 503), connections_per_ip (429), file_descriptors (out of file \
     descriptors while accepting, 503), negotiate_rate_per_ip (429), hub_connections (429), \
     connections_per_key (429), groups_per_connection (signalr.max_groups_per_connection).",
);
/// Bytes written.
pub const SENT_BYTES: Family = family(
    "ringhub_transport_sent_bytes_total",
    Kind::Counter,
    "Bytes written to WebSocket connections, by shard.",
);
/// Bytes read.
pub const RECEIVED_BYTES: Family = family(
    "ringhub_transport_received_bytes_total",
    Kind::Counter,
    "Bytes read from WebSocket connections, by shard.",
);
/// Bytes waiting in outboxes.
pub const OUTBOX_BYTES: Family = family(
    "ringhub_transport_outbox_bytes",
    Kind::Gauge,
    "Bytes queued in connections' outboxes and not yet written, by shard.",
);
/// Backplane link state.
pub const BACKPLANE_UP: Family = family(
    "ringhub_backplane_up",
    Kind::Gauge,
    "1 while the shard's backplane participant is connected (always 1 in process), by shard.",
);
/// Backplane reconnects.
pub const BACKPLANE_RECONNECTS: Family = family(
    "ringhub_backplane_reconnects_total",
    Kind::Counter,
    "Times the shard's backplane came back after losing its link, by shard.",
);
/// Backplane publish latency.
pub const BACKPLANE_PUBLISH_DURATION: Family = family(
    "ringhub_backplane_publish_duration_seconds",
    Kind::Histogram,
    "Backplane PUBLISHes, from queueing to Redis's reply.",
);
/// Commands per write to Redis.
pub const BACKPLANE_COMMANDS_PER_WRITE: Family = family(
    "ringhub_backplane_commands_per_write",
    Kind::Histogram,
    "Redis commands carried by one write on a shard's command connection (pipelining).",
);

/// Every family, in the order they are rendered.
pub const FAMILIES: &[Family] = &[
    BUILD_INFO,
    RUNTIME_SHARDS,
    PROCESS_UPTIME,
    PROCESS_RSS,
    PROCESS_OPEN_FDS,
    PROCESS_MAX_FDS,
    CONNECTIONS_OPEN,
    CONNECTIONS_OPENED,
    HANDSHAKES,
    HANDSHAKE_FAILURES,
    HANDSHAKE_DURATION,
    NEGOTIATE_DURATION,
    MESSAGES_RECEIVED,
    MESSAGES_SENT,
    DELIVERIES,
    DROPS,
    INVOCATION_DURATION,
    AUTH_FAILURES,
    TOKEN_REFUSALS,
    LIMIT_REFUSALS,
    SENT_BYTES,
    RECEIVED_BYTES,
    OUTBOX_BYTES,
    BACKPLANE_UP,
    BACKPLANE_RECONNECTS,
    BACKPLANE_PUBLISH_DURATION,
    BACKPLANE_COMMANDS_PER_WRITE,
];

/// The command that prints [`reference_markdown`].
pub const REFERENCE_COMMAND: &str = "ringhub docs metrics";

/// A Markdown table of every family: name, type, labels (with the values of the enumerated
/// ones) and help. The labels are read back from an exposition rendered by [`render`], so the
/// table says what a scrape shows (the metrics section of
/// `docs/advanced/monitoring-and-diagnostics.md`, printed by `ringhub docs metrics`).
pub fn reference_markdown() -> String {
    let stats = Stats::new(vec!["HUB".to_owned()], 1);
    let process = ProcessSample {
        resident_bytes: Some(0),
        open_fds: Some(0),
        max_fds: Some(0),
    };
    let exposition = render(&stats, &process);
    let mut out =
        String::from("| series | type | labels | what it measures |\n|---|---|---|---|\n");
    for family in FAMILIES {
        // label name → values seen, in order of first appearance.
        let mut labels: Vec<(String, Vec<String>)> = Vec::new();
        for line in exposition.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, rest)) = line.split_once('{') else {
                continue;
            };
            let base = series
                .strip_suffix("_bucket")
                .or_else(|| series.strip_suffix("_sum"))
                .or_else(|| series.strip_suffix("_count"))
                .filter(|_| family.kind == Kind::Histogram)
                .unwrap_or(series);
            if base != family.name {
                continue;
            }
            let inside = rest.rsplit_once('}').map_or(rest, |(inside, _)| inside);
            for pair in inside.split("\",") {
                let Some((name, value)) = pair.split_once("=\"") else {
                    continue;
                };
                if name == "le" {
                    continue;
                }
                let value = value.trim_end_matches('"').to_owned();
                match labels.iter_mut().find(|(n, _)| n == name) {
                    Some((_, values)) if !values.contains(&value) => values.push(value),
                    Some(_) => {}
                    None => labels.push((name.to_owned(), vec![value])),
                }
            }
        }
        let labels: Vec<String> = labels
            .into_iter()
            .map(|(name, values)| match name.as_str() {
                "hub" => "`hub` (the hub's name)".to_owned(),
                "shard" => "`shard` (0, 1, …)".to_owned(),
                "version" => "`version` (the build's)".to_owned(),
                "kind" => "`kind` (`in-process` or `redis`)".to_owned(),
                _ => {
                    let values: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
                    format!("`{name}`: {}", values.join(", "))
                }
            })
            .collect();
        let buckets = if family.kind == Kind::Histogram {
            " (`_bucket`, `_sum`, `_count`)"
        } else {
            ""
        };
        out.push_str(&format!(
            "| `{}`{buckets} | {} | {} | {} |\n",
            family.name,
            family.kind.as_str(),
            if labels.is_empty() {
                "none".to_owned()
            } else {
                labels.join("; ")
            },
            family.help.replace('|', "\\|")
        ));
    }
    out
}

/// Facts about the process, read from `/proc/self` when scraped (absent where unreadable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessSample {
    /// VmRSS in bytes.
    pub resident_bytes: Option<u64>,
    /// Entries in `/proc/self/fd`.
    pub open_fds: Option<u64>,
    /// The soft `Max open files` limit.
    pub max_fds: Option<u64>,
}

impl ProcessSample {
    /// Reads the current process's numbers.
    pub fn read() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        Self {
            resident_bytes: status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib * 1024),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
            max_fds: limits
                .lines()
                .find_map(|l| l.strip_prefix("Max open files"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok()),
        }
    }
}

/// Renders every family from `stats` and `process`.
pub fn render(stats: &Stats, process: &ProcessSample) -> String {
    let mut out = Exposition::default();
    let shards = stats.shards();
    let hubs = stats.hubs();
    let shard_label = |i: usize| i.to_string();

    out.family(&BUILD_INFO);
    out.sample(
        BUILD_INFO.name,
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    out.family(&RUNTIME_SHARDS);
    out.sample(RUNTIME_SHARDS.name, &[], shards.len() as u64);
    out.family(&PROCESS_UPTIME);
    out.sample(PROCESS_UPTIME.name, &[], stats.uptime_seconds());
    for (family, value) in [
        (&PROCESS_RSS, process.resident_bytes),
        (&PROCESS_OPEN_FDS, process.open_fds),
        (&PROCESS_MAX_FDS, process.max_fds),
    ] {
        if let Some(value) = value {
            out.family(family);
            out.sample(family.name, &[], value);
        }
    }

    for (family, counters) in [
        (
            &CONNECTIONS_OPEN,
            (|s| &s.connections) as fn(&ShardStats) -> &[AtomicU64],
        ),
        (&CONNECTIONS_OPENED, |s| &s.connections_opened),
    ] {
        out.family(family);
        for (hub_index, hub) in hubs.iter().enumerate() {
            for (shard_index, shard) in shards.iter().enumerate() {
                let value = counters(shard).get(hub_index).map_or(0, load);
                let shard = shard_label(shard_index);
                out.sample(family.name, &[("hub", hub), ("shard", &shard)], value);
            }
        }
    }

    out.family(&HANDSHAKES);
    for (hub_index, hub) in hubs.iter().enumerate() {
        let value = sum(shards, |s| s.handshakes.get(hub_index));
        out.sample(HANDSHAKES.name, &[("hub", hub)], value);
    }
    out.family(&HANDSHAKE_FAILURES);
    for (index, reason) in HandshakeError::REASONS.iter().enumerate() {
        let value = sum(shards, |s| s.handshake_failures.get(index));
        out.sample(HANDSHAKE_FAILURES.name, &[("reason", reason)], value);
    }
    out.histogram(
        &HANDSHAKE_DURATION,
        &[],
        &totals(shards, |s| &s.handshake_latency),
        true,
    );
    out.histogram(
        &NEGOTIATE_DURATION,
        &[],
        &totals(shards, |s| &s.negotiate_latency),
        true,
    );

    for (family, counters) in [
        (
            &MESSAGES_RECEIVED,
            (|s| &s.received_by_type) as fn(&ShardStats) -> &[AtomicU64],
        ),
        (&MESSAGES_SENT, |s| &s.sent_by_type),
    ] {
        out.family(family);
        for (hub_index, hub) in hubs.iter().enumerate() {
            for (kind, name) in MESSAGE_TYPES.iter().enumerate() {
                let at = hub_index * MESSAGE_TYPES.len() + kind;
                let value = sum(shards, |s| counters(s).get(at));
                out.sample(family.name, &[("hub", hub), ("type", name)], value);
            }
        }
    }

    for (family, counter) in [
        (
            &DELIVERIES,
            (|s| &s.deliveries) as fn(&ShardStats) -> &AtomicU64,
        ),
        (&SENT_BYTES, |s| &s.bytes_sent),
        (&RECEIVED_BYTES, |s| &s.bytes_received),
    ] {
        out.family(family);
        for (shard_index, shard) in shards.iter().enumerate() {
            let label = shard_label(shard_index);
            out.sample(family.name, &[("shard", &label)], load(counter(shard)));
        }
    }

    out.family(&DROPS);
    for (index, reason) in DROP_REASONS.iter().enumerate() {
        let value = sum(shards, |s| s.drops.get(index));
        out.sample(DROPS.name, &[("reason", reason)], value);
    }

    out.family(&INVOCATION_DURATION);
    for (hub_index, hub) in hubs.iter().enumerate() {
        let mut hub_totals = HistogramTotals::default();
        for shard in shards {
            if let Some(histogram) = shard.invocation_latency.get(hub_index) {
                histogram.add_into(&mut hub_totals);
            }
        }
        out.histogram(&INVOCATION_DURATION, &[("hub", hub)], &hub_totals, false);
    }

    out.family(&AUTH_FAILURES);
    for (index, reason) in AuthError::REASONS.iter().enumerate() {
        let value = sum(shards, |s| s.auth_failures.get(index));
        out.sample(AUTH_FAILURES.name, &[("reason", reason)], value);
    }

    out.family(&TOKEN_REFUSALS);
    for (index, reason) in TokenError::REASONS.iter().enumerate() {
        let value = sum(shards, |s| s.token_refusals.get(index));
        out.sample(TOKEN_REFUSALS.name, &[("reason", reason)], value);
    }

    out.family(&LIMIT_REFUSALS);
    for (index, reason) in REFUSAL_REASONS.iter().enumerate() {
        let value = sum(shards, |s| s.refusals.get(index));
        out.sample(LIMIT_REFUSALS.name, &[("reason", reason)], value);
    }

    out.family(&OUTBOX_BYTES);
    for (shard_index, shard) in shards.iter().enumerate() {
        let label = shard_label(shard_index);
        // Never negative in a consistent state; clamp a torn read.
        let value = u64::try_from(shard.outbox_bytes.load(Ordering::Relaxed)).unwrap_or(0);
        out.sample(OUTBOX_BYTES.name, &[("shard", &label)], value);
    }

    out.family(&BACKPLANE_UP);
    for (shard_index, shard) in shards.iter().enumerate() {
        let label = shard_label(shard_index);
        let up = u64::from(shard.backplane_up.load(Ordering::Relaxed));
        out.sample(
            BACKPLANE_UP.name,
            &[("kind", stats.backplane_kind()), ("shard", &label)],
            up,
        );
    }
    out.family(&BACKPLANE_RECONNECTS);
    for (shard_index, shard) in shards.iter().enumerate() {
        let label = shard_label(shard_index);
        out.sample(
            BACKPLANE_RECONNECTS.name,
            &[("shard", &label)],
            shard.backplane_reconnects(),
        );
    }
    out.histogram(
        &BACKPLANE_PUBLISH_DURATION,
        &[],
        &totals(shards, |s| &s.backplane_publish_latency),
        true,
    );
    out.histogram(
        &BACKPLANE_COMMANDS_PER_WRITE,
        &[],
        &totals(shards, |s| &s.backplane_batch),
        true,
    );
    out.text
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// One counter summed over shards (missing entries count 0).
fn sum<'a>(
    shards: &'a [ShardStats],
    counter: impl Fn(&'a ShardStats) -> Option<&'a AtomicU64>,
) -> u64 {
    shards
        .iter()
        .filter_map(counter)
        .map(load)
        .fold(0, u64::wrapping_add)
}

/// One histogram summed over shards.
fn totals(
    shards: &[ShardStats],
    histogram: impl Fn(&ShardStats) -> &crate::stats::Histogram,
) -> HistogramTotals {
    let mut totals = HistogramTotals::default();
    for shard in shards {
        histogram(shard).add_into(&mut totals);
    }
    totals
}

/// The text being written.
#[derive(Debug, Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    /// The `# HELP` and `# TYPE` lines.
    fn family(&mut self, family: &Family) {
        let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {} {help}", family.name);
        let _ = writeln!(self.text, "# TYPE {} {}", family.name, family.kind.as_str());
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.text.push('{');
        let mut first = true;
        for (name, value) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            if !first {
                self.text.push(',');
            }
            first = false;
            self.text.push_str(name);
            self.text.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => self.text.push_str("\\\\"),
                    '"' => self.text.push_str("\\\""),
                    '\n' => self.text.push_str("\\n"),
                    c => self.text.push(c),
                }
            }
            self.text.push('"');
        }
        self.text.push('}');
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.text.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.text, " {value}");
    }

    /// Buckets, sum and count; latencies (bounds in ns) are written in seconds. With
    /// `header`, the family's HELP and TYPE lines come first.
    fn histogram(
        &mut self,
        family: &Family,
        labels: &[(&str, &str)],
        totals: &HistogramTotals,
        header: bool,
    ) {
        if header {
            self.family(family);
        }
        let seconds = family.name.ends_with("_seconds");
        let scale = |v: u64| {
            if seconds {
                format!("{}", v as f64 / 1e9)
            } else {
                v.to_string()
            }
        };
        let bucket = format!("{}_bucket", family.name);
        let count = totals.cumulative.last().copied().unwrap_or(0);
        for (bound, cumulative) in totals.bounds.iter().zip(&totals.cumulative) {
            self.text.push_str(&bucket);
            self.labels(labels, Some(&scale(*bound)));
            let _ = writeln!(self.text, " {cumulative}");
        }
        self.text.push_str(&bucket);
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.text, " {count}");
        self.text.push_str(family.name);
        self.text.push_str("_sum");
        self.labels(labels, None);
        let _ = writeln!(self.text, " {}", scale(totals.sum));
        self.text.push_str(family.name);
        self.text.push_str("_count");
        self.labels(labels, None);
        let _ = writeln!(self.text, " {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_table_has_a_row_per_family_with_the_labels_a_scrape_shows() {
        let table = reference_markdown();
        for family in FAMILIES {
            assert!(
                table.contains(&format!("| `{}`", family.name)),
                "{}",
                family.name
            );
        }
        let row = |name: &str| {
            table
                .lines()
                .find(|l| l.starts_with(&format!("| `{name}`")))
                .unwrap()
                .to_owned()
        };
        assert!(row("ringhub_hub_connections_open").contains("`hub` (the hub's name); `shard`"));
        assert!(row("ringhub_hub_messages_dropped_total").contains("`reason`: `slow_consumer`"));
        assert!(row("ringhub_process_uptime_seconds").contains("| gauge | none |"));
        assert!(!row("ringhub_signalr_handshake_duration_seconds").contains("`le`"));
    }

    #[test]
    fn every_family_is_named_ringhub_subsystem_name_and_declared_once() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len(), "a name is declared twice");
        for family in FAMILIES {
            assert!(family.name.starts_with("ringhub_"), "{}", family.name);
            assert!(family.name.split('_').count() >= 3, "{}", family.name);
            if family.kind == Kind::Counter {
                assert!(family.name.ends_with("_total"), "{}", family.name);
            }
        }
    }

    #[test]
    fn counters_render_summed_over_shards_with_escaped_labels() {
        let stats = Stats::new(vec!["a\"b".into(), "health".into()], 2);
        stats.shard(0).connection_opened(1);
        stats.shard(1).connection_opened(1);
        stats
            .shard(1)
            .handshake_completed(1, std::time::Duration::from_micros(70));
        stats.shard(0).received_message(1, 0);
        stats.shard(1).received_message(1, 0);
        let text = render(&stats, &ProcessSample::default());
        assert!(text.contains("ringhub_hub_connections_open{hub=\"health\",shard=\"1\"} 1\n"));
        assert!(text.contains("ringhub_hub_connections_open{hub=\"a\\\"b\",shard=\"0\"} 0\n"));
        assert!(text.contains(
            "ringhub_hub_messages_received_total{hub=\"health\",type=\"invocation\"} 2\n"
        ));
        assert!(
            text.contains("ringhub_signalr_handshake_duration_seconds_bucket{le=\"0.00005\"} 0\n")
        );
        assert!(
            text.contains("ringhub_signalr_handshake_duration_seconds_bucket{le=\"0.0001\"} 1\n")
        );
        assert!(
            text.contains("ringhub_signalr_handshake_duration_seconds_bucket{le=\"+Inf\"} 1\n")
        );
        assert!(text.contains("ringhub_signalr_handshake_duration_seconds_count 1\n"));
        assert!(text.contains("ringhub_signalr_handshake_duration_seconds_sum 0.00007\n"));
        for family in FAMILIES {
            if !family.name.starts_with("ringhub_process_") {
                assert!(
                    text.contains(&format!("# TYPE {} ", family.name)),
                    "{} is not rendered",
                    family.name
                );
            }
        }
    }

    #[test]
    fn the_process_sample_reads_this_process() {
        let sample = ProcessSample::read();
        assert!(sample.resident_bytes.is_some_and(|b| b > 0));
        assert!(sample.open_fds.is_some_and(|n| n > 0));
        assert!(sample.max_fds.is_some_and(|n| n > 0));
    }
}
