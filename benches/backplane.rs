//! The Redis backplane's publish path on one shard, against a real `redis-server`: what one
//! shard can PUBLISH per second when nothing else runs on it, i.e. the ceiling of S6 (b) with
//! the client side (WebSocket reads, invocation parsing, hub dispatch) taken out.
//!
//! Group `backplane_publish_1kib`: a `SendToGroup`-shaped envelope (`Send` with a 1,024-byte
//! string argument, encoded once per protocol as the hub does) goes through
//! `RedisBackplane::publish` (the backplane message with both serializations, the PUBLISH
//! command, the pipelined link) to a local Redis with no subscriber. Each iteration publishes
//! one message, in batches of `window`: the batch is queued, written by the publisher's task
//! in one write (pipelined), and the next batch starts once Redis has answered all of it; the
//! timed part ends once Redis has answered every one. So the time per element is the whole round: encode,
//! write, Redis, reply read, at the pipelining the window allows. Loss is checked with Redis
//! `INFO commandstats`: every publish must have reached Redis as one PUBLISH (printed at the
//! end).
//!
//! Needs `redis-server` on `PATH` (started on a free port, killed at the end); without it the
//! bench prints a note and measures nothing. Pin it like S6: the bench (the shard) on CPU 0,
//! Redis on CPU 1:
//! `BACKPLANE_BENCH_REDIS_CPUS=1 taskset -c 0 cargo bench --bench backplane`.
//!
//! Run with `cargo bench --bench backplane`; `cargo test --benches` runs each case once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringhub::backplane::redis::RedisBackplane;
use ringhub::config::{BackplaneConfig, BackplaneKind};
use ringhub::hub::actions::{Target, event};
use ringhub::hub::broadcast::PreparedMessage;
use ringhub::protocol::signalr::Payload;
use ringhub::shard::inbox::Envelope;

mod on_cpu;
use on_cpu::{Mark, OnCpu};

/// The server's allocator, so allocation costs are the ones it pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Publishes queued before waiting for their answers (pipelining depth).
const WINDOWS: [usize; 3] = [1, 16, 1024];

/// A redis-server of the bench's own, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        // BACKPLANE_BENCH_REDIS_CPUS=1 runs Redis under `taskset -c 1` (the S6 pinning).
        let mut command = match std::env::var("BACKPLANE_BENCH_REDIS_CPUS") {
            Ok(cpus) => {
                let mut command = Command::new("taskset");
                command.args(["-c", &cpus, "redis-server"]);
                command
            }
            Err(_) => Command::new("redis-server"),
        };
        let child = command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Self { child, port };
        for _ in 0..200 {
            if redis
                .query("PING")
                .is_some_and(|reply| reply.contains("PONG"))
            {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// One inline command and whatever arrives within 100 ms.
    fn query(&self, command: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .ok()?;
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stream.read(&mut chunk) {
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8(reply).ok()
    }

    /// `cmdstat_publish:calls=N`.
    fn publish_calls(&self) -> u64 {
        self.query("INFO commandstats")
            .and_then(|info| {
                let line = info.lines().find(|l| l.starts_with("cmdstat_publish:"))?;
                let calls = line.split("calls=").nth(1)?.split(',').next()?;
                calls.parse().ok()
            })
            .unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn envelope() -> Arc<Envelope> {
    let text: String = (0..1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let message = event("Send", vec![Payload::string(text)]);
    Arc::new(Envelope {
        hub: "bench".to_owned(),
        target: Target::Group("s6".to_owned()),
        excluded: Vec::new(),
        // invariant: a server-built string argument always encodes in both protocols.
        message: Arc::new(PreparedMessage::new(&message).expect("a string event encodes")),
    })
}

fn backplane_publish(c: &mut Criterion<OnCpu>) {
    let Some(redis) = Redis::start() else {
        eprintln!("backplane: redis-server not found or did not start; nothing measured");
        return;
    };
    let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        // invariant: a bench without a runtime cannot run at all.
        .expect("a monoio runtime");
    let config = BackplaneConfig {
        kind: BackplaneKind::Redis,
        redis_url: format!("redis://127.0.0.1:{}", redis.port),
        channel_prefix: String::new(),
        publish_queue: 10_000,
        ack_timeout: Duration::from_secs(5),
    };
    let hubs = [("bench".to_owned(), "bench".to_owned())];
    // The participant's tasks live in the runtime between `block_on` calls.
    let (backplane, _events) = runtime.block_on(async {
        // invariant: the config above is valid.
        let backplane =
            Rc::new(RedisBackplane::new(&config, &hubs).expect("a valid backplane config"));
        let events = backplane.start();
        while !backplane.is_up() {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        (backplane, events)
    });
    let envelope = envelope();
    let mut published = 0u64;
    let before = redis.publish_calls();
    let mut group = c.benchmark_group("backplane_publish_1kib");
    group.throughput(Throughput::Elements(1));
    for window in WINDOWS {
        group.bench_function(BenchmarkId::new("pipelined", window), |b| {
            b.iter_custom(|iters| {
                let mark = Mark::now();
                // A task of its own: the runtime's main future cannot yield to the others.
                let task = publish(Rc::clone(&backplane), Arc::clone(&envelope), iters, window);
                let sent = runtime.block_on(async { monoio::spawn(task).await });
                let elapsed = mark.elapsed();
                published += sent;
                elapsed
            });
        });
    }
    group.finish();
    let reached = redis.publish_calls().saturating_sub(before);
    eprintln!("backplane: {published} publishes, {reached} PUBLISH commands counted by Redis");
    assert_eq!(
        published, reached,
        "every publish reaches Redis as one PUBLISH"
    );
}

/// Publishes `count` envelopes in batches of `window`, and waits for every answer.
async fn publish(
    backplane: Rc<RedisBackplane>,
    envelope: Arc<Envelope>,
    count: u64,
    window: usize,
) -> u64 {
    let mut sent = 0;
    while sent < count {
        if backplane.publishes_waiting() < window && backplane.publish(&envelope) {
            sent += 1;
        } else {
            backplane.publishes_drained().await;
        }
    }
    backplane.publishes_drained().await;
    sent
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(OnCpu);
    targets = backplane_publish
}
criterion_main!(benches);
