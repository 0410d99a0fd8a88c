//! Command line: common flags (valid before or after the scenario) and one subcommand per
//! scenario of `perf-scenarios.md` §4, with that section's parameters as defaults.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Thread-per-core load generator for ringhub (SignalR JSON/MessagePack) and raw WebSocket
/// peers. Scenarios S1–S6 of perf-scenarios.md.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", version, about)]
pub struct Cli {
    /// Flags shared by every scenario.
    #[command(flatten)]
    pub common: Common,
    /// The scenario.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The wire the connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WireArg {
    /// SignalR, JSON hub protocol.
    Json,
    /// SignalR, MessagePack hub protocol.
    Msgpack,
    /// Plain WebSocket messages (peer servers): /ws/echo, /ws/broadcast, /ws/publish.
    Raw,
}

/// The keepalive a raw connection sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RawKeepalive {
    /// A WebSocket ping frame.
    Ping,
    /// A text message with the bytes of a SignalR JSON Ping record.
    Text,
}

/// Flags shared by every scenario.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The server's base URL (plain HTTP).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The hub path (SignalR protocols).
    #[arg(long, global = true, default_value = "/hubs/diagnostics")]
    pub hub: String,
    /// json | msgpack | raw.
    #[arg(long, global = true, value_enum, default_value_t = WireArg::Json)]
    pub protocol: WireArg,
    /// Upgrade straight to the hub path without POST /negotiate.
    #[arg(long, global = true)]
    pub skip_negotiate: bool,
    /// monoio threads (each with its own io_uring) per process.
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    /// Processes: re-executes itself this many times and merges their results (each process
    /// stays under the 20,000 open-file cap).
    #[arg(long, global = true, default_value_t = 1)]
    pub processes: usize,
    /// Spread client sockets over 127.0.0.1 ..= 127.0.0.N (loopback targets only).
    #[arg(long, global = true, default_value_t = 1)]
    pub sources: u8,
    /// Warm-up before the measurement window (messages scheduled in it do not count).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Measurement window.
    #[arg(long, global = true, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// How long to wait after the window for late deliveries (ends early once nothing is
    /// missing, or nothing arrived for a second).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Handshakes in flight while connecting (per process).
    #[arg(long, global = true, default_value_t = 256)]
    pub in_flight: usize,
    /// Connect + negotiate + upgrade + handshake must finish within this.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Client keepalive: a connection that sent nothing for this long sends a Ping
    /// (a WebSocket ping for raw).
    #[arg(long, global = true, default_value = "15s", value_parser = parse_duration)]
    pub ping_interval: Duration,
    /// What a raw connection's keepalive is: `ping`, a WebSocket ping (the server answers with
    /// a pong), or `text`, the exact frame a SignalR JSON client pings with
    /// (`{"type":6}` + 0x1E as a text message), for a raw server that reads and drops it as
    /// ringhub does (`perf/floor --idle` on `/ws/idle`), so both do the same work in S1.
    #[arg(long, global = true, value_enum, default_value_t = RawKeepalive::Ping)]
    pub raw_keepalive: RawKeepalive,
    /// The pacer sleeps on a timerfd (io_uring) until this close to a send, then spins,
    /// yielding to the runtime. Small values (50) free the generator's core between sends
    /// but let other processes delay it when it wakes (S4 p99 worse on a shared core);
    /// 0 = no spin: sends go out when the thread wakes (about 50 µs late here). On the
    /// legacy driver the pacer sleeps on the runtime's millisecond timer.
    #[arg(long, global = true, default_value_t = 2000)]
    pub spin_us: u64,
    /// The server's pid: CPU time, RSS and Pss at the window's edges.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Print one JSON report on stdout instead of the human summary.
    #[arg(long, global = true)]
    pub json: bool,
    /// Exit non-zero if any expected delivery is missing (or any connection dropped).
    #[arg(long, global = true)]
    pub require_zero_loss: bool,
    /// No progress line on stderr.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Largest WebSocket frame / hub message accepted from the server.
    #[arg(long, global = true, default_value_t = 16 << 20)]
    pub max_message: usize,
    /// Internal: this process is worker I of a --processes run.
    #[arg(long, global = true, hide = true)]
    pub worker_index: Option<usize>,
}

/// The scenarios.
#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// S1: idle connections held; connect rate, drops, server memory per connection.
    S1(S1Args),
    /// S2: broadcast fan-out from one publisher to N subscribers.
    S2(S2Args),
    /// S3: group sends (small groups, big groups, membership churn).
    S3(S3Args),
    /// S4: Echo invocation round trips.
    S4(S4Args),
    /// S5: 32 KB messages (echo or broadcast) and the oversize check.
    S5(S5Args),
    /// S6: cross-instance delivery through the Redis backplane.
    S6(S6Args),
    /// Stream invocations: each connection calls Stream(n) in a loop.
    Stream(StreamArgs),
    /// Soak: a steady population of churning SignalR clients (JSON and MessagePack) in
    /// groups, a REST publisher sending sequenced messages to the groups, zero-loss checks
    /// per client lifetime, and the server's RSS / open fds sampled over time.
    Soak(SoakArgs),
}

/// S1 parameters.
#[derive(Debug, Clone, Args)]
pub struct S1Args {
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Connections started per second (0 = as fast as --in-flight allows).
    #[arg(long, default_value_t = 1000.0)]
    pub ramp: f64,
    /// How long to hold them once all are connected.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Raw WebSocket path (raw protocol only).
    #[arg(long, default_value = "/ws/echo")]
    pub raw_path: String,
}

/// S2 parameters.
#[derive(Debug, Clone, Args)]
pub struct S2Args {
    /// Subscriber connections.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Published messages per second, open loop (0 = closed loop: publish once the previous
    /// --window messages reached every subscriber).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Payload string size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Closed loop: messages in flight.
    #[arg(long, default_value_t = 1)]
    pub window: u64,
}

/// S3 group shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shape {
    /// 10,000 connections in 1,000 groups of 10, 2,000 sends/s of 2,048 B.
    Small,
    /// 10,000 connections in 10 groups of 1,000, 20 sends/s.
    Big,
    /// Small, plus 1,000 joins + 1,000 leaves/s and 100 reconnects/s of connections in
    /// 10 groups each.
    Churn,
}

/// S3 parameters (unset ones come from the shape).
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// The preset.
    #[arg(long, value_enum, default_value_t = Shape::Small)]
    pub shape: Shape,
    /// Member connections.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Members per group.
    #[arg(long)]
    pub group_size: Option<usize>,
    /// Group sends per second (aggregate, open loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Sending connections (each sends rate/senders per second to its own group).
    #[arg(long)]
    pub senders: Option<usize>,
    /// Payload string size in bytes.
    #[arg(long)]
    pub size: Option<usize>,
    /// Churn: JoinGroup calls per second.
    #[arg(long)]
    pub join_rate: Option<f64>,
    /// Churn: LeaveGroup calls per second.
    #[arg(long)]
    pub leave_rate: Option<f64>,
    /// Churn: disconnect + reconnect + rejoin per second.
    #[arg(long)]
    pub reconnect_rate: Option<f64>,
    /// Churn: extra connections that reconnect.
    #[arg(long)]
    pub churners: Option<usize>,
    /// Churn: groups each reconnecting connection belongs to.
    #[arg(long)]
    pub churner_groups: Option<usize>,
}

/// S4 parameters.
#[derive(Debug, Clone, Args)]
pub struct S4Args {
    /// Connections.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Invocations per second over all connections, open loop (0 = closed loop: each
    /// connection awaits its invocation in a loop).
    #[arg(long, default_value_t = 10000.0)]
    pub rate: f64,
    /// Payload string size in bytes.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
}

/// S5 modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LargeMode {
    /// Closed-loop Echo on every connection.
    Echo,
    /// One publisher, the connections subscribe.
    Broadcast,
}

/// S5 parameters.
#[derive(Debug, Clone, Args)]
pub struct S5Args {
    /// echo | broadcast.
    #[arg(long, value_enum, default_value_t = LargeMode::Echo)]
    pub mode: LargeMode,
    /// Connections (echo) or subscribers (broadcast).
    #[arg(long, default_value_t = 10)]
    pub connections: usize,
    /// Payload string size in bytes (32,000 keeps a JSON frame under 32 KiB).
    #[arg(long, default_value_t = 32000)]
    pub size: usize,
    /// Messages per second, open loop (0 = closed loop).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Closed-loop broadcast: messages in flight.
    #[arg(long, default_value_t = 1)]
    pub window: u64,
    /// Also send one oversized message and require the server to close that connection
    /// with an error.
    #[arg(long)]
    pub check_oversize: bool,
    /// Size of the oversized payload string.
    #[arg(long, default_value_t = 40000)]
    pub oversize: usize,
}

/// S6 parameters.
#[derive(Debug, Clone, Args)]
pub struct S6Args {
    /// Instance A, where the publisher connects (subscribers use --url, instance B).
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Baseline: the publisher connects to --url too.
    #[arg(long)]
    pub same_instance: bool,
    /// Subscriber connections on instance B, all in one group.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Group sends per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Payload string size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// The group's name.
    #[arg(long, default_value = "s6")]
    pub group: String,
    /// Redis to read INFO commandstats from, host:port.
    #[arg(long)]
    pub redis: Option<String>,
    /// Redis port on 127.0.0.1 (shorthand for --redis).
    #[arg(long)]
    pub redis_port: Option<u16>,
    /// Instance A's pid (CPU per message on the publishing side).
    #[arg(long)]
    pub publish_server_pid: Option<u32>,
}

/// Stream parameters.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Connections, each running one stream at a time.
    #[arg(long, default_value_t = 10)]
    pub connections: usize,
    /// Items per stream (Stream(n) yields 0..n).
    #[arg(long, default_value_t = 100)]
    pub items: i64,
}

/// Soak parameters (the run lasts `--warmup` + `--duration`; flatness is judged after the
/// warm-up).
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Clients connected at any time: each slot connects, joins a group, receives for a
    /// random lifetime, leaves, and is replaced at once.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Groups (`soak-0` …); each client joins one at random.
    #[arg(long, default_value_t = 10)]
    pub groups: usize,
    /// Messages per second over all groups, published through the REST API (round-robin
    /// over the groups, each group's messages numbered from 0).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Payload string size in bytes.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Shortest client lifetime (join confirmed → decides to leave).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub lifetime_min: Duration,
    /// Longest client lifetime (the first lifetime of each slot is uniform in 0..this, so
    /// the churn is spread out from the start).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub lifetime_max: Duration,
    /// How long a leaving client waits for the messages it is still owed before it
    /// disconnects (missing ones then count as lost).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub leave_grace: Duration,
    /// Percent of clients that speak MessagePack (the rest JSON).
    #[arg(long, default_value_t = 50)]
    pub msgpack_percent: u8,
    /// Percent of departures that are abrupt: half of them a TCP FIN without any close
    /// message, half a TCP reset (SO_LINGER 0); the rest send a hub Close and a WebSocket
    /// close.
    #[arg(long, default_value_t = 50)]
    pub abrupt_percent: u8,
    /// REST publisher connections (HTTP/1.1 keep-alive); group g always goes through
    /// connection g mod N, one request at a time, so each group's order is the send order.
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Server key for the REST API (sent as `Authorization: Bearer`; default: the
    /// `HUB_SERVER_KEY` environment variable).
    #[arg(long)]
    pub server_key: Option<String>,
    /// The hub's name in the REST API paths (`/api/hubs/NAME/groups/G/:send`); the clients
    /// connect to `--hub`.
    #[arg(long, default_value = "diagnostics")]
    pub rest_hub: String,
    /// Sample the server (VmRSS, open fds, CPU, connections from `--metrics-path`) this
    /// often.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub sample_every: Duration,
    /// The server's Prometheus path (open connections for the time series).
    #[arg(long, default_value = "/metrics")]
    pub metrics_path: String,
    /// Exit 1 unless RSS and open fds are flat after the warm-up (see loadtest/README.md:
    /// both the window means and the fitted line must grow past the tolerance to fail).
    #[arg(long)]
    pub require_flat: bool,
    /// RSS tolerance: growth allowed, in percent of the first post-warm-up window's mean...
    #[arg(long, default_value_t = 5.0)]
    pub rss_tolerance_pct: f64,
    /// ...but never less than this many KiB.
    #[arg(long, default_value_t = 4096)]
    pub rss_tolerance_kib: u64,
    /// Open-fd tolerance in percent of the first post-warm-up window's mean...
    #[arg(long, default_value_t = 5.0)]
    pub fd_tolerance_pct: f64,
    /// ...but never less than this many fds.
    #[arg(long, default_value_t = 16)]
    pub fd_tolerance: u64,
}

/// Parses `250ms`, `10s`, `2m`, `1h` or plain seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 500ms, 10s, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit '{other}'")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn common_flags_are_accepted_after_the_scenario() {
        let cli = Cli::try_parse_from(["loadgen", "s4", "--connections", "5", "--json"]).unwrap();
        assert!(cli.common.json);
        match cli.scenario {
            Scenario::S4(args) => assert_eq!(args.connections, 5),
            other => panic!("parsed {other:?}"),
        }
    }
}
