//! The top-level process's view of the run: it releases the phase barriers (sampling the
//! server just before each release) and samples the server, the machine and Redis at the
//! measurement window's edges.

use std::time::Duration;

use crate::clock::{self, now_ns};
use crate::probe::{Snapshot, snapshot};
use crate::run::Host;
use crate::scenario::Plan;

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
        }
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
        if index == self.plan.window_barrier {
            let start = at + clock::ns(self.plan.window_offset);
            self.window = Some((start, start + clock::ns(self.plan.window_len)));
        }
        at
    }

    /// Takes the window samples when they are due.
    pub fn poll(&mut self, now: u64) {
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

    /// Takes any window sample still missing (the run ended early).
    pub fn finish(&mut self) {
        if self.window_start.is_some() && self.window_end.is_none() {
            self.window_end = Some(self.sample());
        }
    }
}

impl Host for Observer {
    fn release(&mut self, index: usize) -> anyhow::Result<u64> {
        Ok(self.release_at(index))
    }

    fn tick(&mut self, now: u64) {
        self.poll(now);
    }
}
