//! A criterion measurement for a shared machine: wall time minus the time the bench thread
//! waited, runnable, for a CPU.
//!
//! On this 2-core box other work (load tests, builds) often keeps more threads runnable than
//! there are cores, and wall time then counts the slices the scheduler gave to others: medians
//! moved by up to 2× between runs. The kernel reports each thread's accumulated run-queue wait
//! (`run_delay`, the second field of `/proc/thread-self/schedstat`, in nanoseconds, brought up
//! to date whenever the thread is put back on a CPU, so exact when read by the thread itself);
//! subtracting it leaves the time the code was actually on a CPU. Cache and TLB pollution from
//! the other work is still counted. Without the file (a kernel without `CONFIG_SCHED_INFO`)
//! this is plain wall time.
//!
//! Reading the file is one `pread` (about 1 µs): fine once per criterion sample (`iter`,
//! `iter_custom` with many iterations), too costly once per iteration
//! (`BatchSize::PerIteration`).

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};

/// Wall time minus run-queue wait (see the module doc).
pub(crate) struct OnCpu;

/// A point in time: the wall clock and the thread's run-queue wait so far.
pub(crate) struct Mark {
    wall: Instant,
    waited: u64,
}

impl Mark {
    /// Now.
    pub(crate) fn now() -> Self {
        let waited = run_delay();
        Self {
            wall: Instant::now(),
            waited,
        }
    }

    /// The time on a CPU since this mark.
    pub(crate) fn elapsed(&self) -> Duration {
        let wall = self.wall.elapsed();
        let waited = run_delay().saturating_sub(self.waited);
        wall.saturating_sub(Duration::from_nanos(waited))
    }
}

thread_local! {
    /// This thread's schedstat file (`None` when it cannot be opened).
    static SCHEDSTAT: RefCell<Option<File>> = RefCell::new(open_schedstat());
}

fn open_schedstat() -> Option<File> {
    match File::open("/proc/thread-self/schedstat") {
        Ok(file) => Some(file),
        Err(error) => {
            eprintln!("on_cpu: /proc/thread-self/schedstat: {error}; measuring wall time");
            None
        }
    }
}

/// The calling thread's accumulated run-queue wait in nanoseconds (0 without schedstat).
fn run_delay() -> u64 {
    SCHEDSTAT.with(|file| {
        let file = file.borrow();
        let Some(file) = file.as_ref() else {
            return 0;
        };
        let mut buf = [0u8; 96];
        let Ok(len) = file.read_at(&mut buf, 0) else {
            return 0;
        };
        // "<on-cpu ns> <run-queue wait ns> <slices>\n"
        std::str::from_utf8(&buf[..len])
            .ok()
            .and_then(|text| text.split_whitespace().nth(1))
            .and_then(|field| field.parse().ok())
            .unwrap_or(0)
    })
}

impl Measurement for OnCpu {
    type Intermediate = Mark;
    type Value = Duration;

    fn start(&self) -> Mark {
        Mark::now()
    }

    fn end(&self, mark: Mark) -> Duration {
        mark.elapsed()
    }

    fn add(&self, v1: &Duration, v2: &Duration) -> Duration {
        *v1 + *v2
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, as for wall time, so its formatter applies.
        static WALL_TIME: WallTime = WallTime;
        WALL_TIME.formatter()
    }
}
