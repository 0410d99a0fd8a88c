//! Exhaustion (issue 8, part 3): the open-file cap, per-address connection and negotiate
//! limits, group-join floods, a slow-consumer storm and a Redis outage. Each case checks its
//! specified outcome and that a bystander connection on the same shard keeps receiving every
//! message ([`support::bystander`]).
//!
//! Cases that measure memory or need their own file-descriptor limit run the `ringhub` binary
//! as a child process (tests of one binary share a process, so its RSS is everyone's); the
//! others run in process on both drivers.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::bystander::{self, Bystander};
use support::process::ServerProcess;
use support::redis::RedisServer;
use support::*;

/// The bystander hub and the publisher's key as a config file (for child processes), with
/// `extra` appended (more sections; `[hubs.bystander]` comes last, so `extra` may not add
/// keys to it).
fn bystander_toml(top: &str, extra: &str) -> String {
    format!(
        "{top}\n{extra}\n[auth]\nserver_key_hashes = [\"{}\"]\n\
         [hubs.{hub}]\npath = \"/hubs/{hub}\"\nauth = \"anonymous\"\nprotocols = [\"json\"]\n\
         [hubs.{hub}.methods]\nJoinGroup = \"join-group\"\nEcho = \"echo\"\n",
        ringhub::auth::keys::hash_key(bystander::SERVER_KEY),
        hub = bystander::HUB,
    )
}

/// A `ringhub` child process with `toml` as its config file (removed on drop), `args`, and (if
/// given) an open-file limit of `nofile`.
struct Child {
    process: ServerProcess,
    addr: SocketAddr,
    config: std::path::PathBuf,
}

impl Child {
    fn start(name: &str, toml: &str, args: &[&str], nofile: Option<u32>) -> Self {
        let config = std::env::temp_dir().join(format!(
            "ringhub-exhaustion-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&config, toml).unwrap();
        let mut command = match nofile {
            Some(n) => ServerProcess::command_with_nofile(n),
            None => ServerProcess::command(),
        };
        command.arg("--config").arg(&config).args(args);
        let process = ServerProcess::spawn(command);
        let addr = process.addr;
        Self {
            process,
            addr,
            config,
        }
    }

    /// A `/proc/PID/status` field in bytes (`VmRSS`, `VmHWM`).
    fn memory(&self, field: &str) -> u64 {
        self.process.memory(field)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

/// A TCP connection to `addr` from the loopback address `source`.
fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let source: IpAddr = source.parse().unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// `GET /health` (keep-alive) on `stream`.
fn health_on(stream: &mut TcpStream) -> HttpResponse {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    read_response(stream)
}

/// One series' value from `/metrics` (its full name with labels, as rendered).
fn metric(addr: SocketAddr, series: &str) -> u64 {
    let text = get(addr, "/metrics");
    text.body_str()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

fn refusals(addr: SocketAddr, reason: &str) -> u64 {
    metric(
        addr,
        &format!("ringhub_limits_refusals_total{{reason=\"{reason}\"}}"),
    )
}

/// Negotiates on the bystander hub from `source`.
fn negotiate_from(source: &str, addr: SocketAddr) -> HttpResponse {
    let mut stream = connect_from(source, addr);
    stream
        .write_all(
            format!(
                "POST /hubs/{}/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: t\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n",
                bystander::HUB
            )
            .as_bytes(),
        )
        .unwrap();
    read_response(&mut stream)
}

/// A JSON client of the bystander hub after its handshake, with its connection id.
fn hub_client(addr: SocketAddr) -> (WsClient, String) {
    let negotiated = negotiate_from("127.0.0.1", addr);
    assert_eq!(negotiated.status, 200, "{}", negotiated.body_str());
    let body: serde_json::Value = serde_json::from_slice(&negotiated.body).unwrap();
    let token = body["connectionToken"].as_str().unwrap();
    let mut ws = WsClient::connect(addr, &format!("/hubs/{}?id={token}", bystander::HUB));
    ws.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}");
    assert_eq!(ws.read_frame().payload, b"{}\x1e");
    (ws, body["connectionId"].as_str().unwrap().to_owned())
}

/// The hub messages of the next frame (pings skipped).
fn next_messages(ws: &mut WsClient) -> Vec<serde_json::Value> {
    loop {
        let frame = ws.read_frame();
        assert_ne!(frame.opcode, 8, "the connection was closed");
        let messages: Vec<serde_json::Value> = frame
            .payload
            .split(|b| *b == 0x1e)
            .filter(|r| !r.is_empty())
            .map(|r| serde_json::from_slice(r).unwrap())
            .filter(|m: &serde_json::Value| m["type"] != 6)
            .collect();
        if !messages.is_empty() {
            return messages;
        }
    }
}

/// Invokes `target(arguments)` and returns its Completion.
fn invoke(ws: &mut WsClient, id: &str, target: &str, arguments: &str) -> serde_json::Value {
    ws.send_text(&format!(
        "{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"{target}\",\"arguments\":[{arguments}]}}\u{1e}"
    ));
    loop {
        for message in next_messages(ws) {
            if message["type"] == 3 && message["invocationId"] == id {
                return message;
            }
        }
    }
}

/// `POST /api/hubs/bystander/{path}:send` with `body` on `stream` (keep-alive).
fn rest_send_on(stream: &mut TcpStream, path: &str, body: &str) -> u16 {
    let request = format!(
        "POST /api/hubs/{}/{path}:send HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        bystander::HUB,
        bystander::SERVER_KEY,
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    read_response(stream).status
}

on_both_drivers! {
    fn at_the_open_file_cap_new_connections_get_503_existing_ones_keep_working_and_freed_fds_serve_again(driver) {
        let driver_name = match driver {
            ringhub::config::DriverKind::Legacy => "legacy",
            _ => "io-uring",
        };
        // Idle connections stay (no header timeout during the test).
        let toml = bystander_toml("workers = 1", "[http]\nheader_timeout = \"120s\"\nkeepalive_timeout = \"120s\"");
        let server = Child::start(
            &format!("fd-{driver_name}"),
            &toml,
            &["--set", &format!("runtime.driver={driver_name}")],
            Some(160),
        );
        let addr = server.addr;
        let mut bystander = Bystander::start_at(addr);
        // Fill the table with idle connections until new ones are refused, and stay refused
        // (a connection closing on the server's side frees a descriptor a moment later, so
        // the first refusal may come before the table is quite full).
        let mut idle = Vec::new();
        let mut refused = None;
        let mut in_a_row = 0;
        while in_a_row < 5 {
            for _ in 0..4 {
                idle.push(connect(addr));
            }
            let mut probe = connect(addr);
            let response = health_on(&mut probe);
            if response.status == 503 {
                in_a_row += 1;
                refused = Some(response);
            } else {
                assert_eq!(response.status, 200);
                in_a_row = 0;
            }
            assert!(idle.len() < 600, "never ran out of descriptors");
        }
        let refused = refused.unwrap();
        assert_eq!(refused.body_str(), "server out of file descriptors");
        assert_eq!(refused.header("retry-after"), Some("1"));
        // At the cap, every new connection is told so, and nothing else suffers.
        for _ in 0..20 {
            let mut probe = connect(addr);
            let response = health_on(&mut probe);
            assert_eq!((response.status, response.body_str()), (503, "server out of file descriptors"));
        }
        bystander.check();
        // Descriptors free up: new connections are served again.
        // (The last fillers may have been refused themselves: close well before them.)
        idle.truncate(idle.len() - 40);
        assert!(
            eventually(Duration::from_secs(10), || health_on(&mut connect(addr)).status == 200),
            "new connections were not served after descriptors freed up"
        );
        assert!(refusals(addr, "file_descriptors") >= 21);
        bystander.finish();
    }

    fn the_per_address_connection_cap_holds_across_shards_and_spares_other_addresses(driver) {
        let server = TestServer::start(driver, |c| {
            bystander::configure(c);
            c.workers = std::num::NonZeroUsize::new(2).unwrap();
            c.limits.max_connections_per_ip = 20;
        });
        let addr = server.addr;
        let bystander = Bystander::start(&server);
        // 20 connections from one address, each answered (so each is counted), on both shards.
        let mut held: Vec<TcpStream> = (0..20)
            .map(|_| {
                let mut stream = connect_from("127.0.0.3", addr);
                assert_eq!(health_on(&mut stream).status, 200);
                stream
            })
            .collect();
        for _ in 0..5 {
            let mut over = connect_from("127.0.0.3", addr);
            let response = read_response(&mut over);
            assert_eq!(response.status, 429);
            assert_eq!(response.body_str(), "too many connections from this address (limit 20)");
            assert_eq!(response.header("retry-after"), Some("5"));
        }
        // Another address is not affected.
        assert_eq!(health_on(&mut connect_from("127.0.0.2", addr)).status, 200);
        // Places come back when connections close.
        held.truncate(15);
        assert!(eventually(Duration::from_secs(10), || {
            let mut stream = connect_from("127.0.0.3", addr);
            health_on(&mut stream).status == 200
        }));
        assert!(refusals(addr, "connections_per_ip") >= 5);
        bystander.finish();
    }

    fn a_negotiate_flood_from_one_address_is_answered_429_while_other_addresses_negotiate(driver) {
        let server = TestServer::start(driver, |c| {
            bystander::configure(c);
            c.limits.negotiate_rate_per_ip = 2;
            c.limits.negotiate_burst_per_ip = 10;
        });
        let addr = server.addr;
        let bystander = Bystander::start(&server);
        let started = Instant::now();
        let answers: Vec<HttpResponse> = (0..40).map(|_| negotiate_from("127.0.0.4", addr)).collect();
        let refilled = (started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
        let ok = answers.iter().filter(|r| r.status == 200).count();
        let limited: Vec<&HttpResponse> = answers.iter().filter(|r| r.status == 429).collect();
        assert_eq!(ok + limited.len(), 40);
        // The burst, plus at most what the rate refilled while the flood ran.
        assert!(ok >= 10 && ok <= 10 + refilled, "{ok} negotiates passed, {refilled} refilled");
        let first = limited.first().expect("the flood was never limited");
        let body: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
        assert!(
            body["error"].as_str().unwrap().starts_with("too many negotiate requests from this address"),
            "{body}"
        );
        assert_eq!(first.header("retry-after"), Some("1"));
        // Another address negotiates as usual.
        assert_eq!(negotiate_from("127.0.0.2", addr).status, 200);
        assert_eq!(refusals(addr, "negotiate_rate_per_ip"), limited.len() as u64);
        bystander.finish();
    }

    fn a_group_join_flood_is_refused_beyond_the_cap_and_spares_existing_memberships(driver) {
        let server = TestServer::start(driver, |c| {
            bystander::configure(c);
            c.signalr.max_groups_per_connection = 5;
            c.signalr.invocation_rate = 1000;
            c.signalr.invocation_burst = 1000;
        });
        let addr = server.addr;
        let bystander = Bystander::start(&server);
        let (mut ws, id) = hub_client(addr);
        for i in 0..5 {
            let done = invoke(&mut ws, &format!("j{i}"), "JoinGroup", &format!("\"g{i}\""));
            assert_eq!(done.get("error"), None, "{done}");
        }
        for i in 5..50 {
            let refused = invoke(&mut ws, &format!("j{i}"), "JoinGroup", &format!("\"g{i}\""));
            assert_eq!(
                refused["error"],
                "An unexpected error occurred invoking 'JoinGroup' on the server. \
                 HubException: Group limit reached: a connection may be in at most 5 groups."
            );
        }
        // Joining a group it is in already is not a new group.
        assert_eq!(invoke(&mut ws, "again", "JoinGroup", "\"g0\"").get("error"), None);
        // The REST API refuses the same join with 409.
        let request = format!(
            "PUT /api/hubs/{}/groups/g99/connections/{id} HTTP/1.1\r\nHost: t\r\n\
             Authorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            bystander::HUB,
            bystander::SERVER_KEY
        );
        let response = http(addr, request.as_bytes());
        assert_eq!(response.status, 409);
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["error"], "Group limit reached: a connection may be in at most 5 groups.");
        // Its memberships still deliver.
        let mut rest = connect(addr);
        for i in 0..5 {
            let body = format!("{{\"target\":\"News\",\"arguments\":[{i}]}}");
            assert_eq!(rest_send_on(&mut rest, &format!("groups/g{i}/"), &body), 202);
            let news = next_messages(&mut ws);
            assert_eq!(news[0]["target"], "News");
            assert_eq!(news[0]["arguments"][0], i);
        }
        assert_eq!(refusals(addr, "groups_per_connection"), 46);
        bystander.finish();
    }
}

/// A group reader that checks every `Big` message arrives, in order; `seen` counts them.
fn big_reader(
    mut ws: WsClient,
    seen: Arc<AtomicU64>,
    total: u64,
) -> std::thread::JoinHandle<WsClient> {
    std::thread::spawn(move || {
        ws.stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        while seen.load(Ordering::Relaxed) < total {
            for message in next_messages(&mut ws) {
                if message["target"] == "Big" {
                    let n = seen.load(Ordering::Relaxed);
                    assert_eq!(
                        message["arguments"][0], n,
                        "a group member missed a message"
                    );
                    seen.store(n + 1, Ordering::Relaxed);
                }
            }
        }
        ws
    })
}

#[test]
fn a_slow_consumer_storm_stays_within_its_outbox_caps_and_the_group_keeps_receiving() {
    const SLOW: usize = 200;
    const MESSAGES: u64 = 3000;
    const PAYLOAD: usize = 24 * 1024;
    const MAX_OUTBOUND: u64 = 64 * 1024;
    let toml = bystander_toml(
        "workers = 1",
        "[signalr]\nmax_outbound = \"64KiB\"\n\
         [websocket]\nsend_timeout = \"2s\"",
    );
    let server = Child::start("storm", &toml, &[], None);
    let addr = server.addr;
    let bystander = Bystander::start_at(addr);
    // Slow consumers: small receive windows, joined to the group, then never read again.
    let mut slow = Vec::new();
    for i in 0..SLOW {
        let source = format!("127.0.0.{}", 10 + i % 20);
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket
            .bind(&SocketAddr::new(source.parse().unwrap(), 0).into())
            .unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(
                format!(
                    "GET /hubs/{} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                    bystander::HUB
                )
                .as_bytes(),
            )
            .unwrap();
        assert_eq!(read_response(&mut stream).status, 101);
        let mut ws = WsClient { stream };
        ws.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}");
        assert_eq!(ws.read_frame().payload, b"{}\x1e");
        assert_eq!(
            invoke(&mut ws, "j", "JoinGroup", "\"storm\"").get("error"),
            None
        );
        slow.push(ws);
    }
    let (mut member, _) = hub_client(addr);
    assert_eq!(
        invoke(&mut member, "j", "JoinGroup", "\"storm\"").get("error"),
        None
    );
    let seen = Arc::new(AtomicU64::new(0));
    let reader = big_reader(member, Arc::clone(&seen), MESSAGES);
    let baseline = server.memory("VmRSS");
    let filler = "x".repeat(PAYLOAD);
    let mut rest = connect(addr);
    for n in 0..MESSAGES {
        // Keep the reading member close behind (it is a fast consumer, not a slow one).
        let started = Instant::now();
        while seen.load(Ordering::Relaxed) + 8 < n {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the group member stalled at {n}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let body = format!("{{\"target\":\"Big\",\"arguments\":[{n},\"{filler}\"]}}");
        assert_eq!(rest_send_on(&mut rest, "groups/storm/", &body), 202);
    }
    let _member = reader
        .join()
        .expect("the group member got every message in order");
    assert_eq!(seen.load(Ordering::Relaxed), MESSAGES);
    // Memory: what the outbox caps allow (every slow consumer at its cap), plus slack for
    // allocator and buffer churn; far below the 70 MiB the messages add up to.
    let peak = server.memory("VmHWM");
    let bound = SLOW as u64 * MAX_OUTBOUND + 24 * 1024 * 1024;
    eprintln!(
        "storm: RSS {} KiB before, peak {} KiB",
        baseline / 1024,
        peak / 1024
    );
    assert!(
        peak.saturating_sub(baseline) <= bound,
        "RSS grew by {} KiB under the storm (bound {} KiB)",
        peak.saturating_sub(baseline) / 1024,
        bound / 1024
    );
    // The slow consumers were closed as such; the reading member and the bystander remain.
    let open = format!(
        "ringhub_hub_connections_open{{hub=\"{}\",shard=\"0\"}}",
        bystander::HUB
    );
    assert!(
        eventually(Duration::from_secs(30), || metric(addr, &open) == 2),
        "slow consumers still open: {}",
        metric(addr, &open)
    );
    assert!(
        metric(
            addr,
            "ringhub_hub_messages_dropped_total{reason=\"slow_consumer\"}"
        ) >= SLOW as u64
    );
    drop(slow);
    bystander.finish();
}

#[test]
fn a_redis_outage_keeps_memory_bounded_local_deliveries_flowing_and_recovers() {
    const MESSAGES: u64 = 4000;
    const PAYLOAD: usize = 24 * 1024;
    const QUEUE: u64 = 100;
    let redis = RedisServer::start();
    let toml = bystander_toml(
        "workers = 1",
        &format!(
            "[backplane]\nkind = \"redis\"\nredis_url = \"{}\"\npublish_queue = {QUEUE}",
            redis.url()
        ),
    );
    let a = Child::start("redis", &toml, &[], None);
    let url = redis.url();
    let b = TestServer::start(ringhub::config::DriverKind::IoUring, |c| {
        bystander::configure(c);
        c.backplane.kind = ringhub::config::BackplaneKind::Redis;
        c.backplane.redis_url = url;
    });
    for addr in [a.addr, b.addr] {
        assert!(eventually(Duration::from_secs(10), || get(
            addr,
            "/health/ready"
        )
        .status
            == 200));
    }
    // A member of a group on B, fed from A through Redis.
    let (mut member, _) = hub_client(b.addr);
    assert_eq!(
        invoke(&mut member, "j", "JoinGroup", "\"room\"").get("error"),
        None
    );
    let mut rest = connect(a.addr);
    let received_on_b = |rest: &mut TcpStream, member: &mut WsClient, text: &str| {
        let started = Instant::now();
        loop {
            let body = format!("{{\"target\":\"News\",\"arguments\":[\"{text}\"]}}");
            assert_eq!(rest_send_on(rest, "groups/room/", &body), 202);
            member
                .stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut byte = [0u8; 1];
            if member.stream.peek(&mut byte).is_ok() {
                member
                    .stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let news = next_messages(member);
                if news.iter().any(|m| m["arguments"][0] == text) {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{text} never crossed Redis"
            );
        }
    };
    received_on_b(&mut rest, &mut member, "before");
    // A local client of A: sends to its connection are written directly, Redis or not.
    let (mut local, local_id) = hub_client(a.addr);
    let baseline = a.memory("VmRSS");
    redis.pause();
    let filler = "x".repeat(PAYLOAD);
    for n in 0..MESSAGES {
        let body = format!("{{\"target\":\"Big\",\"arguments\":[{n},\"{filler}\"]}}");
        assert_eq!(rest_send_on(&mut rest, "groups/room/", &body), 202);
        if n % 100 == 0 {
            let body = format!("{{\"target\":\"Local\",\"arguments\":[{n}]}}");
            assert_eq!(
                rest_send_on(&mut rest, &format!("connections/{local_id}/"), &body),
                202
            );
            let got = next_messages(&mut local);
            assert_eq!(
                (got[0]["target"].as_str(), got[0]["arguments"][0].as_u64()),
                (Some("Local"), Some(n))
            );
        }
    }
    let peak = a.memory("VmHWM");
    eprintln!(
        "redis outage: RSS {} KiB before, peak {} KiB",
        baseline / 1024,
        peak / 1024
    );
    // The publish queue's worth of messages (raw and encoded), plus slack; the messages add
    // up to 96 MiB.
    let bound = 2 * QUEUE * PAYLOAD as u64 + 24 * 1024 * 1024;
    assert!(
        peak.saturating_sub(baseline) <= bound,
        "RSS grew by {} KiB while Redis was frozen (bound {} KiB)",
        peak.saturating_sub(baseline) / 1024,
        bound / 1024
    );
    // Most sends were dropped and counted (some went into the frozen server's socket buffer).
    let dropped = metric(
        a.addr,
        "ringhub_hub_messages_dropped_total{reason=\"backplane_down\"}",
    );
    assert!(dropped >= MESSAGES * 3 / 4, "{dropped} drops counted");
    redis.resume();
    received_on_b(&mut rest, &mut member, "after");
}
