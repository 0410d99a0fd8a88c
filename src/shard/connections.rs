//! The shard's table of live connections and the per-connection signal that lets shard-level
//! events (graceful stop, a due timer, later: outbound messages) reach a connection's task.
//!
//! Everything here is single-threaded (`Rc`, `Cell`): a shard's connections never leave it.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use quanta::Instant;
use slab::Slab;

use super::timers::Timers;
use crate::transport::per_ip::{IpSlot, PerIpLimits};
use std::sync::Arc;

/// A connection's number, unique within its shard while the connection lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u32);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Events a connection's task is woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The server is stopping: finish up and close (WebSocket 1001).
    Shutdown,
    /// A deadline the connection scheduled may have passed; it checks its own clock.
    Timer,
    /// Messages for the connection were queued by someone else (a group send, a broadcast).
    Outbound,
}

const SHUTDOWN: u8 = 1;
const TIMER: u8 = 2;
const OUTBOUND: u8 = 4;

/// One waker slot plus pending events: O(1) memory per connection however often its task
/// waits, unlike a list of waiters.
#[derive(Default)]
pub struct ConnectionSignal {
    /// Events raised but not yet delivered by [`Self::wait`].
    pending: Cell<u8>,
    /// Sticky: a stop was requested at some point.
    shutdown: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl fmt::Debug for ConnectionSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSignal")
            .field("pending", &self.pending.get())
            .field("shutdown", &self.shutdown.get())
            .finish_non_exhaustive()
    }
}

impl ConnectionSignal {
    /// Raises `signal` and wakes the task waiting on it.
    pub fn raise(&self, signal: Signal) {
        let bit = match signal {
            Signal::Shutdown => {
                self.shutdown.set(true);
                SHUTDOWN
            }
            Signal::Timer => TIMER,
            Signal::Outbound => OUTBOUND,
        };
        self.pending.set(self.pending.get() | bit);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Whether a graceful stop has been requested (stays true once raised).
    pub fn is_shutdown(&self) -> bool {
        self.shutdown.get()
    }

    /// Whether [`Signal::Outbound`] was raised and not delivered yet.
    pub fn is_outbound_pending(&self) -> bool {
        self.pending.get() & OUTBOUND != 0
    }

    /// Consumes a pending [`Signal::Outbound`], if any (the task handles it before whatever
    /// else woke it).
    pub fn take_outbound(&self) -> bool {
        let pending = self.pending.get();
        self.pending.set(pending & !OUTBOUND);
        pending & OUTBOUND != 0
    }

    /// Resolves with the next undelivered event (shutdown first); each raise is delivered once.
    /// Cancel-safe: an event is only consumed when the future resolves.
    pub fn wait(&self) -> SignalWait<'_> {
        SignalWait { signal: self }
    }
}

/// Future returned by [`ConnectionSignal::wait`].
#[derive(Debug)]
pub struct SignalWait<'a> {
    signal: &'a ConnectionSignal,
}

impl Future for SignalWait<'_> {
    type Output = Signal;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Signal> {
        let pending = self.signal.pending.get();
        if pending & SHUTDOWN != 0 {
            self.signal.pending.set(pending & !SHUTDOWN);
            return Poll::Ready(Signal::Shutdown);
        }
        if pending & OUTBOUND != 0 {
            self.signal.pending.set(pending & !OUTBOUND);
            return Poll::Ready(Signal::Outbound);
        }
        if pending & TIMER != 0 {
            self.signal.pending.set(pending & !TIMER);
            return Poll::Ready(Signal::Timer);
        }
        self.signal.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// What the shard keeps about one live connection.
#[derive(Debug)]
pub struct ConnectionHandle {
    /// The connection's id (a reusable slot number).
    pub id: ConnectionId,
    /// The socket, while the task waits idle with nothing queued (else -1): a broadcast may
    /// then write to it directly ([`Self::idle_fd`]).
    idle_fd: Cell<RawFd>,
    /// Unique for the shard's lifetime; tells this connection from a later one in the same slot.
    pub serial: u64,
    /// Where shard-level events for this connection are raised.
    pub signal: ConnectionSignal,
    /// The earliest timer entry this connection has pending, if any.
    armed: Cell<Option<Instant>>,
    /// When the write in progress started (the peer has not taken everything yet).
    writing_since: Cell<Option<Instant>>,
}

/// A write in progress this long means the peer is not keeping up (a healthy peer's writes
/// complete within milliseconds).
pub const STALL_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

impl ConnectionHandle {
    /// Declares that the task waits with nothing queued and no write in flight on `fd` (or,
    /// with `None`, that it woke up). While declared, the socket stays open and the task will
    /// not write before it wakes, so a frame written to `fd` from elsewhere keeps the byte
    /// stream in order.
    pub fn set_idle_fd(&self, fd: Option<RawFd>) {
        self.idle_fd.set(fd.unwrap_or(-1));
    }

    /// The socket of a connection waiting idle (see [`Self::set_idle_fd`]).
    pub fn idle_fd(&self) -> Option<RawFd> {
        let fd = self.idle_fd.get();
        (fd >= 0).then_some(fd)
    }

    /// Records that a write started at `now` (`None`: it finished).
    pub fn set_writing(&self, since: Option<Instant>) {
        self.writing_since.set(since);
    }

    /// Whether a write has been waiting for the peer for at least [`STALL_GRACE`] at `now`.
    pub fn is_stalled(&self, now: Instant) -> bool {
        self.writing_since
            .get()
            .is_some_and(|since| now.saturating_duration_since(since) >= STALL_GRACE)
    }

    /// Makes sure a [`Signal::Timer`] arrives at `at`, or up to a 16th of the wait later so
    /// that deadlines share wake-ups ([`Timers::coalesce`]), or earlier. Cheap when an entry
    /// at or before that time is already pending, which is the common case.
    pub fn arm(&self, at: Instant, timers: &Timers) {
        let at = timers.coalesce(at);
        if self.armed.get().is_none_or(|armed| at < armed) {
            self.armed.set(Some(at));
            timers.schedule(at, self.id, self.serial);
        }
    }
}

/// The shard's live connections.
#[derive(Debug, Default)]
pub struct ConnectionRegistry {
    slots: RefCell<Slab<Rc<ConnectionHandle>>>,
    next_serial: Cell<u64>,
    /// Where connections counted per client address give their place back.
    per_ip: Option<Arc<PerIpLimits>>,
}

impl ConnectionRegistry {
    /// A registry whose connections may hold a place in `per_ip`.
    pub fn new(per_ip: Arc<PerIpLimits>) -> Self {
        Self {
            per_ip: Some(per_ip),
            ..Self::default()
        }
    }

    /// Adds a connection and returns its handle.
    pub fn register(&self) -> Rc<ConnectionHandle> {
        let mut slots = self.slots.borrow_mut();
        let entry = slots.vacant_entry();
        // Slab keys are dense and bounded by the per-shard connection limit (< 2^32).
        let id = ConnectionId(u32::try_from(entry.key()).unwrap_or(u32::MAX));
        let serial = self.next_serial.get();
        self.next_serial.set(serial + 1);
        let handle = Rc::new(ConnectionHandle {
            id,
            idle_fd: Cell::new(-1),
            serial,
            signal: ConnectionSignal::default(),
            armed: Cell::new(None),
            writing_since: Cell::new(None),
        });
        entry.insert(Rc::clone(&handle));
        handle
    }

    /// Removes a connection that ended.
    pub fn remove(&self, id: ConnectionId) {
        let mut slots = self.slots.borrow_mut();
        let key = id.0 as usize;
        if slots.contains(key) {
            slots.remove(key);
        }
    }

    /// How many connections are live.
    pub fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    /// Whether no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Raises `signal` on every live connection.
    pub fn raise_all(&self, signal: Signal) {
        let handles: Vec<Rc<ConnectionHandle>> = self
            .slots
            .borrow()
            .iter()
            .map(|(_, h)| Rc::clone(h))
            .collect();
        for handle in handles {
            handle.signal.raise(signal);
        }
    }

    /// Delivers a due timer entry to its connection, if that connection still lives.
    pub fn fire_timer(&self, id: ConnectionId, serial: u64, now: Instant) {
        let handle = match self.slots.borrow().get(id.0 as usize) {
            Some(handle) if handle.serial == serial => Rc::clone(handle),
            _ => return,
        };
        if handle.armed.get().is_some_and(|armed| armed <= now) {
            handle.armed.set(None);
        }
        handle.signal.raise(Signal::Timer);
    }
}

/// Removes the connection from its registry when dropped, however the task ends (and gives
/// back its place in its address's count, if it holds one).
#[derive(Debug)]
pub struct Registration {
    registry: Rc<ConnectionRegistry>,
    handle: Rc<ConnectionHandle>,
    ip: Option<IpSlot>,
}

impl Registration {
    /// Registers a new connection in `registry`.
    pub fn new(registry: Rc<ConnectionRegistry>) -> Self {
        let handle = registry.register();
        Self {
            registry,
            handle,
            ip: None,
        }
    }

    /// Keeps the connection's place in its address's count until the registration ends.
    pub fn hold_ip(&mut self, slot: Option<IpSlot>) {
        self.ip = slot;
    }

    /// Hands the place over (the connection moves to another shard, which holds it then).
    pub fn take_ip(&mut self) -> Option<IpSlot> {
        self.ip.take()
    }

    /// The connection's handle.
    pub fn handle(&self) -> &ConnectionHandle {
        &self.handle
    }

    /// A shared reference to the handle (e.g. for waking the connection from elsewhere).
    pub fn shared(&self) -> Rc<ConnectionHandle> {
        Rc::clone(&self.handle)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The task (and its socket) is going away, even if it was dropped while waiting.
        self.handle.set_idle_fd(None);
        self.registry.remove(self.handle.id);
        if let (Some(slot), Some(per_ip)) = (self.ip, &self.registry.per_ip) {
            per_ip.close(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use std::time::Duration;

    use super::*;

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once(signal: &ConnectionSignal, cx: &mut Context<'_>) -> Poll<Signal> {
        let mut wait = signal.wait();
        Pin::new(&mut wait).poll(cx)
    }

    #[test]
    fn registration_is_removed_when_dropped() {
        let registry = Rc::new(ConnectionRegistry::default());
        let a = Registration::new(Rc::clone(&registry));
        let b = Registration::new(Rc::clone(&registry));
        assert_ne!(a.handle().id, b.handle().id);
        assert_eq!(registry.len(), 2);
        drop(a);
        assert_eq!(registry.len(), 1);
        drop(b);
        assert!(registry.is_empty());
    }

    #[test]
    fn shutdown_wakes_the_waiting_task_once_is_delivered_once_and_stays_visible() {
        let registry = Rc::new(ConnectionRegistry::default());
        let reg = Registration::new(Rc::clone(&registry));
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(poll_once(&reg.handle().signal, &mut cx).is_pending());
        }
        registry.raise_all(Signal::Shutdown);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            poll_once(&reg.handle().signal, &mut cx),
            Poll::Ready(Signal::Shutdown)
        );
        assert!(poll_once(&reg.handle().signal, &mut cx).is_pending());
        assert!(reg.handle().signal.is_shutdown());
    }

    #[test]
    fn a_stale_timer_entry_does_not_wake_the_next_connection_in_the_same_slot() {
        let registry = Rc::new(ConnectionRegistry::default());
        let timers = Timers::new();
        let first = Registration::new(Rc::clone(&registry));
        let at = timers.now() + Duration::from_millis(1);
        first.handle().arm(at, &timers);
        let (id, old_serial) = (first.handle().id, first.handle().serial);
        drop(first);
        let second = Registration::new(Rc::clone(&registry));
        assert_eq!(second.handle().id, id);
        registry.fire_timer(id, old_serial, at);
        let waker = Waker::from(Arc::new(CountingWaker(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        assert!(poll_once(&second.handle().signal, &mut cx).is_pending());
        registry.fire_timer(id, second.handle().serial, at);
        assert_eq!(
            poll_once(&second.handle().signal, &mut cx),
            Poll::Ready(Signal::Timer)
        );
    }

    #[test]
    fn arming_later_than_a_pending_entry_schedules_nothing_new() {
        let registry = Rc::new(ConnectionRegistry::default());
        let timers = Timers::new();
        let reg = Registration::new(Rc::clone(&registry));
        let now = timers.now();
        reg.handle().arm(now + Duration::from_secs(5), &timers);
        reg.handle().arm(now + Duration::from_secs(9), &timers);
        assert_eq!(timers.len(), 1);
        reg.handle().arm(now + Duration::from_secs(1), &timers);
        assert_eq!(timers.len(), 2);
    }
}
