//! Runs a scenario on this process's threads: one monoio runtime per thread, phase barriers
//! shared with the coordinator (and, through it, with the other processes), a progress line
//! per second, and the threads' recorders folded into one [`Tally`] at the end.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::Context;

use crate::client::{Client, Gate};
use crate::clock::now_ns;
use crate::probe::ProcSample;
use crate::recorder::{Counter, Recorder, Tally, new_histogram};

/// Phase barriers between this process's threads and its coordinator.
#[derive(Debug)]
pub struct Barriers {
    arrived: Vec<AtomicUsize>,
    released: Vec<AtomicU64>,
}

impl Barriers {
    fn new(count: usize) -> Self {
        Self {
            arrived: (0..count).map(|_| AtomicUsize::new(0)).collect(),
            released: (0..count).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// What a process's threads share.
#[derive(Debug)]
pub struct Shared {
    /// Phase barriers.
    pub barriers: Barriers,
    /// One recorder per thread.
    pub recorders: Vec<Arc<Recorder>>,
    /// The closed-loop broadcast gate, if the scenario uses one.
    pub gate: Option<Arc<Gate>>,
    finished: AtomicUsize,
}

impl Shared {
    /// Sum of a counter over this process's threads.
    pub fn total(&self, counter: Counter) -> u64 {
        self.recorders.iter().map(|r| r.get(counter)).sum()
    }
}

/// Where a thread sits in the whole run.
#[derive(Debug, Clone)]
pub struct ThreadEnv {
    /// Thread index within this process.
    pub thread: usize,
    /// Global slot (process × threads + thread).
    pub slot: usize,
    /// Global slot count.
    pub slots: usize,
    /// Whether every slot runs in this process (cross-thread sums are global).
    pub single_process: bool,
    /// State shared with the process's other threads.
    pub shared: Arc<Shared>,
}

impl ThreadEnv {
    /// This thread's recorder.
    pub fn rec(&self) -> Arc<Recorder> {
        self.shared.recorders[self.thread].clone()
    }

    /// Arrives at barrier `index` and waits (sending keepalives) until every thread of
    /// every process arrived and the coordinator released it; returns the release time.
    pub async fn barrier(&self, index: usize, client: &Client) -> u64 {
        let barriers = &self.shared.barriers;
        barriers.arrived[index].fetch_add(1, Ordering::SeqCst);
        loop {
            let released = barriers.released[index].load(Ordering::SeqCst);
            if released != 0 {
                return released;
            }
            client.idle_until(now_ns() + 1_000_000).await;
        }
    }
}

/// Decides when barriers are released: the top-level process samples the server and
/// picks a start time; a worker process asks its parent.
pub trait Host {
    /// Called once every thread arrived at barrier `index`; returns its release time.
    fn release(&mut self, index: usize) -> anyhow::Result<u64>;
    /// Called every few milliseconds (timed samples), with this process's threads' state.
    fn tick(&mut self, _now: u64, _shared: &Shared) {}
}

/// How this process takes part in the run.
#[derive(Debug)]
pub struct ProcessSpec {
    /// monoio threads in this process.
    pub threads: usize,
    /// Phase barriers the scenario passes.
    pub barriers: usize,
    /// This process's index.
    pub process: usize,
    /// Processes in the run.
    pub processes: usize,
    /// The closed-loop broadcast gate, if any.
    pub gate: Option<Arc<Gate>>,
    /// The progress line's label (`None`: no progress line).
    pub progress: Option<String>,
    /// The measurement window, to sample this process's own CPU time over it.
    pub window: WindowSpec,
}

/// Where the measurement window sits: it starts `offset_ns` after barrier `barrier` is
/// released and lasts `len_ns`.
#[derive(Debug, Clone, Copy)]
pub struct WindowSpec {
    /// The barrier the window follows.
    pub barrier: usize,
    /// Delay after its release.
    pub offset_ns: u64,
    /// Length.
    pub len_ns: u64,
}

/// Tally key of this process's own CPU time over the window (clock ticks, summed over
/// processes).
pub const CLIENT_CPU_TICKS: &str = "client_cpu_ticks";

/// Runs the spec's monoio threads, each running `body(env)`, and returns their tally.
pub fn run_process<F, Fut>(spec: ProcessSpec, host: &mut dyn Host, body: F) -> anyhow::Result<Tally>
where
    F: Fn(ThreadEnv) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let ProcessSpec {
        threads,
        barriers: barrier_count,
        process,
        processes,
        gate,
        progress,
        window,
    } = spec;
    let shared = Arc::new(Shared {
        barriers: Barriers::new(barrier_count),
        recorders: (0..threads).map(|_| Arc::new(Recorder::new())).collect(),
        gate,
        finished: AtomicUsize::new(0),
    });
    let body = Arc::new(body);
    let mut handles = Vec::new();
    for thread in 0..threads {
        let env = ThreadEnv {
            thread,
            slot: process * threads + thread,
            slots: processes * threads,
            single_process: processes == 1,
            shared: shared.clone(),
        };
        let body = body.clone();
        let shared = shared.clone();
        let handle = thread::Builder::new()
            .name(format!("loadgen-{thread}"))
            .spawn(move || {
                let rec = env.rec();
                let built = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                    .enable_timer()
                    .with_entries(4096)
                    .build();
                match built {
                    Ok(mut runtime) => runtime.block_on(body(env)),
                    Err(error) => rec.error(|| format!("monoio runtime: {error}")),
                }
                shared.finished.fetch_add(1, Ordering::SeqCst);
            })
            .context("spawning a load thread")?;
        handles.push(handle);
    }

    let started = now_ns();
    let own_cpu = || ProcSample::take(std::process::id()).map_or(0, |s| s.cpu_ticks);
    let mut cpu_window: Option<(u64, u64)> = None;
    let mut cpu_at_start: Option<u64> = None;
    let mut cpu_ticks: Option<u64> = None;
    let mut next_barrier = 0;
    let mut next_progress = started + 1_000_000_000;
    let mut last = (0u64, 0u64);
    loop {
        let finished = shared.finished.load(Ordering::SeqCst);
        if finished == threads {
            break;
        }
        if next_barrier < barrier_count
            && shared.barriers.arrived[next_barrier].load(Ordering::SeqCst) + finished >= threads
        {
            let at = host.release(next_barrier)?;
            shared.barriers.released[next_barrier].store(at.max(1), Ordering::SeqCst);
            if next_barrier == window.barrier {
                let start = at + window.offset_ns;
                cpu_window = Some((start, start + window.len_ns));
            }
            next_barrier += 1;
            continue;
        }
        let now = now_ns();
        host.tick(now, &shared);
        if let Some((start, end)) = cpu_window {
            if cpu_at_start.is_none() && now >= start {
                cpu_at_start = Some(own_cpu());
            }
            if let (Some(begin), None, true) = (cpu_at_start, cpu_ticks, now >= end) {
                cpu_ticks = Some(own_cpu().saturating_sub(begin));
            }
        }
        if now >= next_progress {
            next_progress += 1_000_000_000;
            if let Some(label) = &progress {
                last = print_progress(label, &shared, (now - started) / 1_000_000_000, last);
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
    if let (Some(begin), None) = (cpu_at_start, cpu_ticks) {
        cpu_ticks = Some(own_cpu().saturating_sub(begin)); // the run ended early
    }
    for handle in handles {
        let _ = handle.join();
    }
    let mut tally = Tally::default();
    for rec in &shared.recorders {
        tally.merge(&rec.tally());
    }
    tally
        .counters
        .insert(CLIENT_CPU_TICKS.into(), cpu_ticks.unwrap_or(0));
    Ok(tally)
}

fn print_progress(label: &str, shared: &Shared, secs: u64, last: (u64, u64)) -> (u64, u64) {
    let sent = shared.total(Counter::SentTotal);
    let received = shared.total(Counter::ReceivedTotal);
    let mut recent = new_histogram();
    for rec in &shared.recorders {
        rec.take_recent(&mut recent);
    }
    let p99 = if recent.is_empty() {
        "-".to_owned()
    } else {
        format!("{:.0}us", recent.value_at_quantile(0.99) as f64 / 1e3)
    };
    let mut all = new_histogram();
    for rec in &shared.recorders {
        rec.add_latency(&mut all);
    }
    let p99_all = if all.is_empty() {
        "-".to_owned()
    } else {
        format!("{:.0}us", all.value_at_quantile(0.99) as f64 / 1e3)
    };
    let line = format!(
        "[{label}] {secs:>4}s conns={} failed={} drops={} sent/s={} recv/s={} errors={} p99(1s)={p99} p99(window)={p99_all}\n",
        shared.total(Counter::Connected),
        shared.total(Counter::ConnectFailed),
        shared.total(Counter::Drops),
        sent.saturating_sub(last.0),
        received.saturating_sub(last.1),
        shared.total(Counter::Errors),
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    (sent, received)
}
