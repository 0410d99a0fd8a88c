//! The scenarios, and what they have in common: how work is split over threads and
//! processes, opening many connections with a cap on handshakes in flight, and draining
//! late deliveries after the window.

pub mod broadcast;
pub mod echo;
pub mod groups;
pub mod idle;
pub mod redis;
pub mod soak;
pub mod stream;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde_json::json;

use crate::cli::{Cli, Common, LargeMode, Scenario, WireArg};
use crate::client::{Client, Settings, Wire};
use crate::clock::{self, now_ns};
use crate::conn::Conn;
use crate::http::Target;
use crate::recorder::{Counter, Hist};
use crate::run::ThreadEnv;
use crate::signalr::Protocol;

/// What the server's CPU time is divided by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Per connection established.
    Connection,
    /// Per message delivered to a subscriber.
    Delivery,
    /// Per completed invocation.
    Invocation,
    /// Per MB (10^6 bytes) of payload delivered.
    Megabyte,
    /// Per stream item.
    Item,
}

impl Unit {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connection => "connection",
            Self::Delivery => "delivery",
            Self::Invocation => "invocation",
            Self::Megabyte => "MB",
            Self::Item => "item",
        }
    }
}

/// A scenario's shape, known before any thread starts (the same in every process).
#[derive(Debug, Clone)]
pub struct Plan {
    /// Scenario name in the report.
    pub name: &'static str,
    /// Phase barriers its threads pass.
    pub barriers: usize,
    /// The measurement window starts `window_offset` after this barrier's release...
    pub window_barrier: usize,
    /// ...after this delay...
    pub window_offset: Duration,
    /// ...and lasts this long.
    pub window_len: Duration,
    /// Server memory is sampled at these barriers' releases (before, after), instead of at
    /// the window's edges.
    pub memory_barriers: Option<(usize, usize)>,
    /// What server CPU is divided by.
    pub unit: Unit,
    /// Payload size (for MB figures).
    pub payload_size: usize,
    /// Scenario parameters for the report.
    pub params: serde_json::Value,
    /// Closed-loop broadcast: subscribers report to a shared gate.
    pub gate: bool,
    /// Redis to read INFO commandstats from (S6).
    pub redis: Option<String>,
    /// Second server pid (S6 instance A).
    pub publish_server_pid: Option<u32>,
    /// The oversize check runs (S5).
    pub oversize_check: bool,
    /// Sample the server this often for a time series, from the first barrier on (soak).
    pub sample_every: Option<Duration>,
    /// Where to scrape the server's open-connections gauge for the series (address, path).
    pub metrics: Option<(std::net::SocketAddr, String)>,
}

/// Resolved S3 parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupShape {
    /// Member connections.
    pub connections: usize,
    /// Members per group.
    pub group_size: usize,
    /// Group sends per second.
    pub rate: f64,
    /// Sending connections.
    pub senders: usize,
    /// Payload size.
    pub size: usize,
    /// Churn: joins per second.
    pub join_rate: f64,
    /// Churn: leaves per second.
    pub leave_rate: f64,
    /// Churn: reconnects per second.
    pub reconnect_rate: f64,
    /// Churn: reconnecting connections.
    pub churners: usize,
    /// Churn: groups per reconnecting connection.
    pub churner_groups: usize,
}

impl GroupShape {
    /// The shape's presets with any explicit flags applied.
    pub fn resolve(args: &crate::cli::S3Args) -> Self {
        use crate::cli::Shape;
        let (group_size, rate) = match args.shape {
            Shape::Small | Shape::Churn => (10, 2000.0),
            Shape::Big => (1000, 20.0),
        };
        let churn = args.shape == Shape::Churn;
        let rate = args.rate.unwrap_or(rate);
        Self {
            connections: args.connections.unwrap_or(10_000),
            group_size: args.group_size.unwrap_or(group_size).max(1),
            rate,
            senders: args.senders.unwrap_or(rate.ceil().max(1.0) as usize).max(1),
            size: args.size.unwrap_or(2048),
            join_rate: args.join_rate.unwrap_or(if churn { 1000.0 } else { 0.0 }),
            leave_rate: args.leave_rate.unwrap_or(if churn { 1000.0 } else { 0.0 }),
            reconnect_rate: args
                .reconnect_rate
                .unwrap_or(if churn { 100.0 } else { 0.0 }),
            churners: args.churners.unwrap_or(if churn { 1000 } else { 0 }),
            churner_groups: args.churner_groups.unwrap_or(10).max(1),
        }
    }
}

/// Checks the flags and describes the run.
pub fn plan(cli: &Cli) -> anyhow::Result<Plan> {
    let c = &cli.common;
    if c.threads == 0 || c.processes == 0 {
        bail!("--threads and --processes must be at least 1");
    }
    let mut plan = Plan {
        name: "",
        barriers: 1,
        window_barrier: 0,
        window_offset: c.warmup,
        window_len: c.duration,
        memory_barriers: None,
        unit: Unit::Delivery,
        payload_size: 0,
        params: json!({}),
        gate: false,
        redis: None,
        publish_server_pid: None,
        oversize_check: false,
        sample_every: None,
        metrics: None,
    };
    let raw = c.protocol == WireArg::Raw;
    match &cli.scenario {
        Scenario::S1(a) => {
            plan.name = "s1";
            plan.barriers = 2;
            plan.window_barrier = 1;
            plan.window_offset = Duration::ZERO;
            plan.window_len = a.hold;
            plan.memory_barriers = Some((0, 1));
            plan.unit = Unit::Connection;
            plan.params = json!({"connections": a.connections, "ramp": a.ramp,
                "in_flight": c.in_flight, "hold_s": a.hold.as_secs_f64()});
        }
        Scenario::S2(a) => {
            plan.name = "s2";
            plan.payload_size = a.size;
            plan.gate = a.rate <= 0.0;
            plan.params = json!({"subscribers": a.subscribers, "rate": a.rate,
                "size": a.size, "window": a.window});
        }
        Scenario::S3(a) => {
            let shape = GroupShape::resolve(a);
            if raw && (shape.join_rate > 0.0 || shape.leave_rate > 0.0) {
                bail!(
                    "the raw wire has no JoinGroup/LeaveGroup: raw s3 churn takes --join-rate 0 --leave-rate 0 (reconnects only)"
                );
            }
            plan.name = "s3";
            plan.payload_size = shape.size;
            plan.params = json!({"shape": format!("{:?}", a.shape).to_lowercase(),
                "connections": shape.connections, "group_size": shape.group_size,
                "groups": shape.connections.div_ceil(shape.group_size),
                "rate": shape.rate, "senders": shape.senders, "size": shape.size,
                "join_rate": shape.join_rate, "leave_rate": shape.leave_rate,
                "reconnect_rate": shape.reconnect_rate, "churners": shape.churners,
                "churner_groups": shape.churner_groups});
        }
        Scenario::S4(a) => {
            plan.name = "s4";
            plan.unit = Unit::Invocation;
            plan.payload_size = a.size;
            plan.params = json!({"connections": a.connections, "rate": a.rate,
                "size": a.size, "closed_loop": a.rate <= 0.0});
        }
        Scenario::S5(a) => {
            plan.name = "s5";
            plan.unit = Unit::Megabyte;
            plan.payload_size = a.size;
            plan.gate = a.mode == LargeMode::Broadcast && a.rate <= 0.0;
            plan.oversize_check = a.check_oversize;
            plan.params = json!({"mode": format!("{:?}", a.mode).to_lowercase(),
                "connections": a.connections, "size": a.size, "rate": a.rate,
                "window": a.window, "check_oversize": a.check_oversize,
                "oversize": a.oversize});
        }
        Scenario::S6(a) => {
            if a.publish_url.is_none() && !a.same_instance {
                bail!("S6 needs --publish-url (instance A) or --same-instance");
            }
            plan.name = "s6";
            plan.payload_size = a.size;
            plan.redis = a
                .redis
                .clone()
                .or_else(|| a.redis_port.map(|p| format!("127.0.0.1:{p}")));
            plan.publish_server_pid = a.publish_server_pid;
            plan.params = json!({"subscribers": a.subscribers, "rate": a.rate, "size": a.size,
                "group": a.group, "same_instance": a.same_instance,
                "publish_url": if a.same_instance { &c.url } else { a.publish_url.as_ref().unwrap_or(&c.url) }});
        }
        Scenario::Soak(a) => {
            if raw {
                bail!("the soak is SignalR-only (it mixes JSON and MessagePack clients)");
            }
            if c.processes > 1 {
                bail!(
                    "the soak runs in one process (its publisher and clients share sequence counters): use --threads"
                );
            }
            if a.clients == 0 || a.groups == 0 || a.publishers == 0 {
                bail!("--clients, --groups and --publishers must be at least 1");
            }
            if a.lifetime_min > a.lifetime_max {
                bail!("--lifetime-min must not exceed --lifetime-max");
            }
            if a.msgpack_percent > 100 || a.abrupt_percent > 100 {
                bail!("--msgpack-percent and --abrupt-percent are percentages (0-100)");
            }
            if a.sample_every.is_zero() {
                bail!("--sample-every must be positive");
            }
            if soak::server_key(a).is_none() {
                bail!(
                    "the soak publishes through the REST API: give --server-key or HUB_SERVER_KEY"
                );
            }
            plan.name = "soak";
            // The window is the whole run: server CPU and memory from start to end.
            plan.window_offset = Duration::ZERO;
            plan.window_len = c.warmup + c.duration;
            plan.payload_size = a.size;
            plan.sample_every = Some(a.sample_every);
            plan.metrics = Some((Target::parse(&c.url)?.addr, a.metrics_path.clone()));
            plan.params = json!({"clients": a.clients, "groups": a.groups, "rate": a.rate,
                "size": a.size, "lifetime_min_s": a.lifetime_min.as_secs_f64(),
                "lifetime_max_s": a.lifetime_max.as_secs_f64(),
                "leave_grace_s": a.leave_grace.as_secs_f64(),
                "msgpack_percent": a.msgpack_percent, "abrupt_percent": a.abrupt_percent,
                "publishers": a.publishers, "rest_hub": a.rest_hub,
                "sample_every_s": a.sample_every.as_secs_f64(),
                "warmup_s": c.warmup.as_secs_f64(), "duration_s": c.duration.as_secs_f64()});
        }
        Scenario::Stream(a) => {
            if raw {
                bail!("stream invocations are SignalR-only");
            }
            plan.name = "stream";
            plan.unit = Unit::Item;
            plan.params = json!({"connections": a.connections, "items": a.items});
        }
    }
    if plan.gate && c.processes > 1 {
        bail!(
            "closed-loop broadcast (--rate 0) needs every subscriber in one process: use --threads, not --processes"
        );
    }
    Ok(plan)
}

/// A thread's body for the scenario in `cli`.
pub fn body(
    cli: Arc<Cli>,
) -> impl Fn(ThreadEnv) -> Pin<Box<dyn Future<Output = ()>>> + Send + Sync {
    // The soak's per-group publish counters, shared by this process's threads.
    let counters = match &cli.scenario {
        Scenario::Soak(a) => Some(Arc::new(soak::GroupCounters::new(a.groups))),
        _ => None,
    };
    move |env: ThreadEnv| {
        let cli = cli.clone();
        let counters = counters.clone();
        Box::pin(async move {
            let common = &cli.common;
            let result = match &cli.scenario {
                Scenario::S1(a) => idle::run(&env, common, a).await,
                Scenario::S2(a) => {
                    let p = broadcast::Params {
                        subscribers: a.subscribers,
                        rate: a.rate,
                        size: a.size,
                        window: a.window,
                    };
                    broadcast::run(&env, common, &p, None).await
                }
                Scenario::S3(a) => groups::run(&env, common, &GroupShape::resolve(a)).await,
                Scenario::S4(a) => {
                    let p = echo::Params {
                        connections: a.connections,
                        rate: a.rate,
                        size: a.size,
                    };
                    echo::run(&env, common, &p, None).await
                }
                Scenario::S5(a) => {
                    let oversize = a.check_oversize.then_some(a.oversize);
                    match a.mode {
                        LargeMode::Echo => {
                            let p = echo::Params {
                                connections: a.connections,
                                rate: a.rate,
                                size: a.size,
                            };
                            echo::run(&env, common, &p, oversize).await
                        }
                        LargeMode::Broadcast => {
                            let p = broadcast::Params {
                                subscribers: a.connections,
                                rate: a.rate,
                                size: a.size,
                                window: a.window,
                            };
                            broadcast::run(&env, common, &p, oversize).await
                        }
                    }
                }
                Scenario::S6(a) => redis::run(&env, common, a).await,
                Scenario::Stream(a) => stream::run(&env, common, a).await,
                Scenario::Soak(a) => match counters {
                    Some(counters) => soak::run(&env, common, a, counters).await,
                    None => Ok(()),
                },
            };
            if let Err(error) = result {
                env.rec().error(|| format!("{error:#}"));
            }
        })
    }
}

/// The contiguous share `[start, end)` of `total` items for `slot` of `slots`.
pub fn share(total: usize, slot: usize, slots: usize) -> Range<usize> {
    let base = total / slots;
    let extra = total % slots;
    let start = slot * base + slot.min(extra);
    let len = base + usize::from(slot < extra);
    start..start + len
}

/// This thread's client for `url`.
pub fn client_for(env: &ThreadEnv, common: &Common, url: &str) -> anyhow::Result<Rc<Client>> {
    let wire = match common.protocol {
        WireArg::Json => Wire::SignalR(Protocol::Json),
        WireArg::Msgpack => Wire::SignalR(Protocol::MessagePack),
        WireArg::Raw => Wire::Raw,
    };
    client_with_wire(env, common, url, wire)
}

/// This thread's client for `url` speaking `wire` (whatever `--protocol` says).
pub fn client_with_wire(
    env: &ThreadEnv,
    common: &Common,
    url: &str,
    wire: Wire,
) -> anyhow::Result<Rc<Client>> {
    let settings = Settings {
        target: Target::parse(url)?,
        wire,
        negotiate: !common.skip_negotiate,
        sources: common.sources.max(1),
        connect_timeout: common.connect_timeout,
        ping_interval: common.ping_interval,
        raw_keepalive: common.raw_keepalive,
        max_message: common.max_message,
    };
    Ok(Client::new(
        env.rec(),
        settings,
        env.shared.gate.clone(),
        env.slot as u64 + 1,
    ))
}

/// The hub path, or `raw_path` on the raw wire.
pub fn path_for(common: &Common, raw_path: &str) -> String {
    match common.protocol {
        WireArg::Raw => raw_path.to_owned(),
        _ => common.hub.clone(),
    }
}

/// Handshakes this thread may have in flight.
pub fn in_flight_per_thread(common: &Common) -> usize {
    (common.in_flight / common.threads.max(1)).max(1)
}

/// Runs `f(0..count)` with at most `limit` running at once; returns the results in order.
pub async fn concurrently<T, F, Fut>(count: usize, limit: usize, f: F) -> Vec<Option<T>>
where
    T: 'static,
    F: Fn(usize) -> Fut + 'static,
    Fut: Future<Output = Option<T>> + 'static,
{
    let results: Rc<RefCell<Vec<Option<T>>>> =
        Rc::new(RefCell::new((0..count).map(|_| None).collect()));
    let next = Rc::new(Cell::new(0usize));
    let f = Rc::new(f);
    let mut workers = Vec::new();
    for _ in 0..limit.min(count) {
        let (results, next, f) = (results.clone(), next.clone(), f.clone());
        workers.push(monoio::spawn(async move {
            loop {
                let i = next.get();
                if i >= count {
                    break;
                }
                next.set(i + 1);
                let value = f(i).await;
                results.borrow_mut()[i] = value;
            }
        }));
    }
    for worker in workers {
        worker.await;
    }
    results.take()
}

/// Opens connections `indices` to `path` (at most `limit` handshakes at once; with `ramp`,
/// connection k of this thread starts no earlier than `start + k / rate`). Failures are
/// counted and leave `None`.
pub async fn open_all(
    client: &Rc<Client>,
    path: &str,
    indices: Vec<usize>,
    limit: usize,
    ramp: Option<(u64, f64)>,
    counts_deliveries: bool,
) -> Vec<Option<Rc<Conn>>> {
    let client = client.clone();
    let path: Rc<str> = path.into();
    let indices = Rc::new(indices);
    concurrently(indices.len(), limit, move |k| {
        let (client, path, indices) = (client.clone(), path.clone(), indices.clone());
        async move {
            if let Some((start, rate)) = ramp.filter(|&(_, rate)| rate > 0.0) {
                clock::sleep_until(start + (k as f64 * 1e9 / rate) as u64).await;
            }
            open_one(&client, &path, indices[k], counts_deliveries).await
        }
    })
    .await
}

/// Opens one connection, counting and timing it.
pub async fn open_one(
    client: &Rc<Client>,
    path: &str,
    index: usize,
    counts_deliveries: bool,
) -> Option<Rc<Conn>> {
    let rec = &client.rec;
    let started = now_ns();
    match Conn::open(client, path, index, counts_deliveries).await {
        Ok(conn) => {
            let done = now_ns();
            rec.add(Counter::Connected, 1);
            rec.record(Hist::Connect, done - started);
            rec.mark_span(started, done);
            Some(conn)
        }
        Err(error) => {
            rec.add(Counter::ConnectFailed, 1);
            rec.error(|| format!("connection {index}: {error:#}"));
            None
        }
    }
}

/// Waits after the window for late deliveries: until nothing is missing (when the whole
/// run is in this process), nothing arrived for a second, or `drain` passed.
pub async fn drain(env: &ThreadEnv, client: &Client, end_ns: u64, drain: Duration) {
    let deadline = end_ns + clock::ns(drain);
    client.idle_until(end_ns).await;
    let shared = &env.shared;
    let mut last_received = shared.total(Counter::ReceivedTotal);
    let mut quiet_since = now_ns();
    loop {
        let now = now_ns();
        if now >= deadline {
            return;
        }
        if env.single_process && shared.total(Counter::Delivered) >= shared.total(Counter::Expected)
        {
            return;
        }
        let received = shared.total(Counter::ReceivedTotal);
        if received != last_received {
            last_received = received;
            quiet_since = now;
        } else if now - quiet_since >= 1_000_000_000 {
            return;
        }
        client.idle_until(now + 10_000_000).await;
    }
}

/// Sends one oversized Echo on a fresh connection and checks the server closes it with an
/// error (a hub Close with an error, a WebSocket close, or the TCP connection).
pub async fn check_oversize(client: &Rc<Client>, path: &str, index: usize, size: usize) {
    let rec = &client.rec;
    let verdict = match Conn::open(client, path, index, true).await {
        Err(error) => Err(format!("could not connect: {error:#}")),
        Ok(conn) => {
            let closed = conn.closed();
            let reply = conn.next_delivery();
            let mut body = Vec::new();
            crate::payload::write(
                &mut body,
                crate::payload::Stamp {
                    scheduled_ns: now_ns(),
                    seq: 0,
                },
                size,
            );
            conn.send("Echo", &[crate::signalr::Arg::Str(&body)], true);
            match monoio::time::timeout(Duration::from_secs(5), closed).await {
                Ok(Ok(reason)) => {
                    if reply_arrived(reply) {
                        Err(format!(
                            "the server echoed {size} bytes before closing ({reason})"
                        ))
                    } else {
                        Ok(reason)
                    }
                }
                _ => Err(format!(
                    "the connection stayed open 5 s after a {size}-byte message"
                )),
            }
        }
    };
    match verdict {
        Ok(reason) => rec.note("oversize_check", format!("passed: {reason}")),
        Err(reason) => {
            rec.note("oversize_check", format!("failed: {reason}"));
            rec.error(|| format!("oversize check failed: {reason}"));
        }
    }
}

fn reply_arrived(mut reply: futures_channel::oneshot::Receiver<crate::payload::Stamp>) -> bool {
    matches!(reply.try_recv(), Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once_and_differ_by_at_most_one() {
        for total in [0usize, 1, 7, 100, 19_000] {
            for slots in [1usize, 2, 3, 8] {
                let ranges: Vec<_> = (0..slots).map(|s| share(total, s, slots)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[slots - 1].end, total);
                for pair in ranges.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                }
                let lens: Vec<_> = ranges.iter().map(|r| r.len()).collect();
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1);
            }
        }
    }

    #[test]
    fn the_churn_shape_is_the_small_shape_plus_churn() {
        let args = |shape| crate::cli::S3Args {
            shape,
            connections: None,
            group_size: None,
            rate: None,
            senders: None,
            size: None,
            join_rate: None,
            leave_rate: None,
            reconnect_rate: None,
            churners: None,
            churner_groups: None,
        };
        let small = GroupShape::resolve(&args(crate::cli::Shape::Small));
        assert_eq!(
            (small.connections, small.group_size, small.senders),
            (10_000, 10, 2000)
        );
        assert_eq!(small.join_rate, 0.0);
        let big = GroupShape::resolve(&args(crate::cli::Shape::Big));
        assert_eq!((big.group_size, big.rate, big.senders), (1000, 20.0, 20));
        let churn = GroupShape::resolve(&args(crate::cli::Shape::Churn));
        assert_eq!(
            (churn.join_rate, churn.reconnect_rate, churn.churners),
            (1000.0, 100.0, 1000)
        );
    }
}
