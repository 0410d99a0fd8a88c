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
        Self {
            clock: Clock::new(),
            heap: RefCell::new(BinaryHeap::new()),
            ticker_target: Cell::new(None),
            ticker: Cell::new(None),
        }
    }

    /// The current time (no syscall).
    pub fn now(&self) -> Instant {
        self.clock.now()
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
    fn nothing_fires_before_its_deadline() {
        let timers = Timers::new();
        let now = timers.now();
        timers.schedule(now + Duration::from_secs(1), ConnectionId(0), 0);
        timers.fire_due(now, |_, _| panic!("fired early"));
        assert!(!timers.is_empty());
    }
}
