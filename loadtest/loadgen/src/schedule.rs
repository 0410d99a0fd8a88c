//! Open-loop send schedules: event `i` of a schedule is due at `start + i / rate`, whatever
//! happened to the events before it, so a slow server cannot slow the offered load down
//! (and the latency of a late event counts from when it was due).
//!
//! The runtime's timer has millisecond granularity, so [`run`] sleeps on a timerfd of its
//! own instead (read through io_uring: it wakes within tens of µs of its deadline without
//! spinning), until `spin` before a send, and spins only that last stretch, yielding to the
//! runtime between checks so I/O completions keep being reaped. On the legacy (epoll)
//! driver it falls back to the runtime's timer, and then `spin` must cover a millisecond.
//! One waiting loop per thread: while it spins the runtime never parks, so other timers on
//! that thread stall; keepalive pings are therefore sent from inside the loop.

use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use crate::client::Client;
use crate::clock::now_ns;
use crate::os;
use crate::recorder::Hist;

/// One open-loop schedule.
#[derive(Debug, Clone)]
pub struct Pacer {
    start_ns: u64,
    end_ns: u64,
    rate: f64,
    next: u64,
}

impl Pacer {
    /// Events at `rate` per second from `start_ns`, none due at or after `end_ns`
    /// (a rate of 0 or less gives no events).
    pub fn new(start_ns: u64, end_ns: u64, rate: f64) -> Self {
        Self {
            start_ns,
            end_ns,
            rate,
            next: 0,
        }
    }

    /// When the next event is due, or `None` if the schedule is over.
    pub fn due(&self) -> Option<u64> {
        if self.rate <= 0.0 || !self.rate.is_finite() {
            return None;
        }
        let offset = (self.next as f64 * 1e9 / self.rate) as u64;
        let due = self.start_ns.saturating_add(offset);
        (due < self.end_ns).then_some(due)
    }

    /// Consumes the next event and returns its index.
    pub fn advance(&mut self) -> u64 {
        let index = self.next;
        self.next += 1;
        index
    }
}

/// Yields to every task that is ready to run, then comes back.
///
/// A monoio task that wakes itself while it is being polled goes back to the *front* of the
/// run queue, so the usual "wake myself, return Pending" would run this task again before
/// any other (the writers would starve while the pacer spins). Instead a new task, queued at
/// the back, does the waking.
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            let waker = cx.waker().clone();
            drop(monoio::spawn(async move { waker.wake() }));
            Poll::Pending
        }
    })
    .await;
}

/// How the pacer sleeps until shortly before a send.
enum Sleeper {
    /// A timerfd read through io_uring (the file and its 8-byte expiration-count buffer).
    Timerfd(monoio::fs::File, Vec<u8>),
    /// The runtime's millisecond timer: the legacy driver, or a timerfd that failed.
    Runtime,
}

impl Sleeper {
    fn new() -> Self {
        if !monoio::utils::detect_uring() {
            return Self::Runtime;
        }
        os::monotonic_timer()
            .and_then(|timer| monoio::fs::File::from_std(std::fs::File::from(timer)))
            .map_or(Self::Runtime, |file| Self::Timerfd(file, vec![0; 8]))
    }

    /// Sleeps until `deadline_ns` on the monotonic clock (the runtime's timer may wake up
    /// to about a millisecond late; the timerfd by its wake-up latency).
    async fn sleep_until(&mut self, deadline_ns: u64) {
        if let Self::Timerfd(file, buf) = self {
            if os::arm_timer_at(file, deadline_ns).is_ok() {
                let (read, back) = file.read_at(std::mem::take(buf), 0).await;
                *buf = back;
                buf.clear();
                if read.is_ok() {
                    return;
                }
            }
            *self = Self::Runtime;
        }
        let now = now_ns();
        if deadline_ns > now {
            monoio::time::sleep(Duration::from_nanos(deadline_ns - now)).await;
        }
    }
}

/// Waits until `due_ns`: sleeps for all but the last `spin_ns`, then a yielding spin.
/// Sends the client's keepalive pings while waiting.
async fn wait_until(client: &Client, sleeper: &mut Sleeper, due_ns: u64, spin_ns: u64) {
    loop {
        let now = now_ns();
        client.keepalive(now);
        if now >= due_ns {
            return;
        }
        if due_ns - now > spin_ns {
            sleeper.sleep_until(due_ns - spin_ns).await;
        } else {
            yield_now().await;
        }
    }
}

/// Runs several schedules on one thread: waits for whichever event is due first and calls
/// `on_event(schedule, index, due_ns)`. Returns when every schedule is over.
pub async fn run(
    client: &Client,
    pacers: &mut [Pacer],
    spin_ns: u64,
    mut on_event: impl FnMut(usize, u64, u64),
) {
    let mut sleeper = Sleeper::new();
    let mut in_a_row = 0u32;
    loop {
        let next = pacers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.due().map(|due| (i, due)))
            .min_by_key(|&(_, due)| due);
        let Some((which, due)) = next else {
            return;
        };
        if now_ns() < due {
            in_a_row = 0;
            wait_until(client, &mut sleeper, due, spin_ns).await;
        } else {
            // Behind schedule: catch up, but let the writers run now and then.
            in_a_row += 1;
            if in_a_row.is_multiple_of(64) {
                client.keepalive(now_ns());
                yield_now().await;
            }
        }
        let index = pacers[which].advance();
        if client.in_window(due) {
            client
                .rec
                .record(Hist::SendLag, now_ns().saturating_sub(due));
        }
        on_event(which, index, due);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_due_at_start_plus_index_over_rate() {
        let mut p = Pacer::new(1_000, 1_000 + 1_000_000_000, 4.0);
        let mut dues = Vec::new();
        while let Some(due) = p.due() {
            dues.push(due);
            p.advance();
        }
        assert_eq!(dues, [1_000, 250_001_000, 500_001_000, 750_001_000]);
    }

    #[test]
    fn a_zero_rate_schedule_has_no_events() {
        assert_eq!(Pacer::new(0, u64::MAX, 0.0).due(), None);
    }
}
