//! One timer queue per shard instead of one timer per connection.
//!
//! An idle connection waits for two things: bytes, and a deadline (ping, idle timeout, close
//! timeout, header timeout). A monoio `Sleep` per connection would cost about 640 bytes of
//! future state plus a wheel entry, for every idle socket. Instead each connection schedules
//! its next deadline here (a heap entry of 24 bytes) and waits on its
//! [`ConnectionSignal`](super::connections::ConnectionSignal); the shard's one ticker task sleeps
//! until the earliest deadline and raises [`Signal::Timer`](super::connections::Signal) on the
//! connections that are due.
//!
//! Deadlines are coalesced: [`Timers::coalesce`] rounds a deadline up to a grid whose step
//! grows with how far away it is (a 16th of the distance, at most about 67 ms), so the
//! keep-alives of thousands of idle connections fall on a few grid points and one ticker
//! wake-up serves many of them, instead of the shard thread waking for each one. A 15 s ping
//! moves by at most 67 ms; a 100 ms conflation timer by at most 4 ms.
//!
//! Deadlines are lazy: a connection that received bytes does not move its entry, it just
//! re-schedules when the entry fires early. Entries carry the connection's serial number, so an
//! entry outliving its connection can never wake the next connection that reuses the slot.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use quanta::{Clock, Instant};

use super::connections::ConnectionId;

/// The most [`Timers::coalesce`] delays a deadline: 2^26 ns, about 67 ms.
pub const MAX_COALESCE: Duration = Duration::from_nanos(1 << 26);

/// A scheduled wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: Instant,
    serial: u64,
    id: ConnectionId,
}

/// The shard's clock and deadline queue.
pub struct Timers {
    clock: Clock,
    /// Where the coalescing grid starts.
    origin: Instant,
    heap: RefCell<BinaryHeap<Reverse<Entry>>>,
    /// What the ticker currently sleeps until (`None`: nothing scheduled).
    ticker_target: Cell<Option<Instant>>,
    /// The ticker's waker, used when an earlier deadline arrives.
    ticker: Cell<Option<Waker>>,
}

impl fmt::Debug for Timers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timers")
            .field("scheduled", &self.heap.borrow().len())
            .finish_non_exhaustive()
    }
}

impl Default for Timers {
    fn default() -> Self {
        Self::new()
    }
}

impl Timers {
    /// An empty queue on a fresh TSC clock.
    pub fn new() -> Self {
        let clock = Clock::new();
        Self {
            origin: clock.now(),
            clock,
            heap: RefCell::new(BinaryHeap::new()),
            ticker_target: Cell::new(None),
            ticker: Cell::new(None),
        }
    }

    /// The current time (no syscall).
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// `at`, rounded up so that deadlines due around the same time share one wake-up: to a
    /// multiple (from the queue's creation) of the largest power of two nanoseconds not above
    /// a 16th of the time left, capped at [`MAX_COALESCE`]. Deadlines closer than 16 µs stay
    /// exact.
    pub fn coalesce(&self, at: Instant) -> Instant {
        let left = at.saturating_duration_since(self.now()).as_nanos();
        let slack = (left / 16).min(MAX_COALESCE.as_nanos());
        if slack < 1_000 {
            return at;
        }
        let step = 1u128 << (127 - slack.leading_zeros());
        let since = at.saturating_duration_since(self.origin).as_nanos();
        let rounded = since.div_ceil(step) * step;
        // Below 2^64 ns (584 years) after the origin; anything else keeps its exact time.
        match u64::try_from(rounded - since) {
            Ok(extra) => at + Duration::from_nanos(extra),
            Err(_) => at,
        }
    }

    /// How many entries are scheduled (including stale ones not yet popped).
    pub fn len(&self) -> usize {
        self.heap.borrow().len()
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Schedules a wake-up of connection `id` (with `serial`) at `at`.
    pub fn schedule(&self, at: Instant, id: ConnectionId, serial: u64) {
        self.heap
            .borrow_mut()
            .push(Reverse(Entry { at, serial, id }));
        if self.ticker_target.get().is_none_or(|target| at < target)
            && let Some(waker) = self.ticker.take()
        {
            waker.wake();
        }
    }

    /// Pops every entry due at `now`, calling `fire(id, serial)` for each.
    pub fn fire_due(&self, now: Instant, mut fire: impl FnMut(ConnectionId, u64)) {
        loop {
            let entry = {
                let mut heap = self.heap.borrow_mut();
                match heap.peek() {
                    Some(Reverse(entry)) if entry.at <= now => {
                        let entry = *entry;
                        heap.pop();
                        entry
                    }
                    _ => return,
                }
            };
            fire(entry.id, entry.serial);
        }
    }

    /// The earliest scheduled deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.borrow().peek().map(|Reverse(entry)| entry.at)
    }

    /// Waits until `target` passes or an earlier deadline is scheduled; the ticker's wait.
    pub async fn sleep_until_next(&self, target: Option<Instant>) {
        self.ticker_target.set(target);
        // Without anything scheduled the ticker still wakes now and then, which costs nothing
        // measurable and bounds the damage of any missed wake-up.
        let sleep_for = target.map_or(Duration::from_secs(1), |t| {
            t.saturating_duration_since(self.now())
        });
        monoio::select! {
            _ = monoio::time::sleep(sleep_for) => {},
            _ = Rescheduled { timers: self, polled: false } => {},
        }
        self.ticker_target.set(None);
    }
}

/// Resolves when [`Timers::schedule`] wakes the ticker.
struct Rescheduled<'a> {
    timers: &'a Timers,
    polled: bool,
}

impl Future for Rescheduled<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.polled {
            return Poll::Ready(());
        }
        self.polled = true;
        self.timers.ticker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn due_entries_fire_in_deadline_order_and_later_ones_wait() {
        let timers = Timers::new();
        let now = timers.now();
        timers.schedule(now + Duration::from_millis(30), ConnectionId(3), 3);
        timers.schedule(now + Duration::from_millis(10), ConnectionId(1), 1);
        timers.schedule(now + Duration::from_secs(60), ConnectionId(9), 9);
        timers.schedule(now + Duration::from_millis(20), ConnectionId(2), 2);
        let mut fired = Vec::new();
        timers.fire_due(now + Duration::from_millis(30), |id, _| fired.push(id.0));
        assert_eq!(fired, vec![1, 2, 3]);
        assert_eq!(timers.next_deadline(), Some(now + Duration::from_secs(60)));
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn distant_deadlines_due_close_together_fall_on_one_grid_point() {
        let timers = Timers::new();
        let base = timers.now() + Duration::from_secs(15);
        let points: std::collections::BTreeSet<_> = (0..60)
            .map(|ms| timers.coalesce(base + Duration::from_millis(ms)))
            .collect();
        // 60 ms of ping deadlines 15 s away land on at most two points of the 67 ms grid.
        assert!(points.len() <= 2, "{} wake-ups", points.len());
    }

    #[test]
    fn a_coalesced_deadline_is_never_early_and_late_by_at_most_a_16th_of_its_distance() {
        let timers = Timers::new();
        for ms in [0, 1, 5, 16, 100, 1_000, 15_000, 30_000] {
            let now = timers.now();
            let at = now + Duration::from_millis(ms);
            let rounded = timers.coalesce(at);
            assert!(rounded >= at, "{ms} ms: early");
            let late = rounded.saturating_duration_since(at);
            assert!(late <= MAX_COALESCE, "{ms} ms: {late:?} late");
            assert!(
                late <= Duration::from_millis(ms) / 16,
                "{ms} ms: {late:?} late"
            );
        }
    }

    #[test]
    fn nothing_fires_before_its_deadline() {
        let timers = Timers::new();
        let now = timers.now();
        timers.schedule(now + Duration::from_secs(1), ConnectionId(0), 0);
        timers.fire_due(now, |_, _| panic!("fired early"));
        assert!(!timers.is_empty());
    }
}
