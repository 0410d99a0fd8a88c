//! The shard's table of live connections and the per-connection signal that lets shard-level
//! events (graceful stop, later: outbound messages) reach a connection's task.
//!
//! Everything here is single-threaded (`Rc`, `Cell`): a shard's connections never leave it.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

/// A connection's number, unique within its shard while the connection lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

/// One waker slot plus pending signals: O(1) memory per connection however often its task
/// waits, unlike a list of waiters.
#[derive(Default)]
pub struct ConnectionSignal {
    shutdown: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl fmt::Debug for ConnectionSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSignal")
            .field("shutdown", &self.shutdown.get())
            .finish_non_exhaustive()
    }
}

impl ConnectionSignal {
    /// Raises `signal` and wakes the task waiting on it.
    pub fn raise(&self, signal: Signal) {
        match signal {
            Signal::Shutdown => self.shutdown.set(true),
        }
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Whether a graceful stop has been requested.
    pub fn is_shutdown(&self) -> bool {
        self.shutdown.get()
    }

    /// Resolves when a signal is pending; cancel-safe (dropping it loses nothing).
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
        if self.signal.shutdown.get() {
            return Poll::Ready(Signal::Shutdown);
        }
        self.signal.waker.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}

/// What the shard keeps about one live connection.
#[derive(Debug)]
pub struct ConnectionHandle {
    /// The connection's id.
    pub id: ConnectionId,
    /// Where shard-level events for this connection are raised.
    pub signal: ConnectionSignal,
}

/// The shard's live connections.
#[derive(Debug, Default)]
pub struct ConnectionRegistry {
    slots: RefCell<Slab<Rc<ConnectionHandle>>>,
}

impl ConnectionRegistry {
    /// Adds a connection and returns its handle.
    pub fn register(&self) -> Rc<ConnectionHandle> {
        let mut slots = self.slots.borrow_mut();
        let entry = slots.vacant_entry();
        // Slab keys are dense and bounded by the per-shard connection limit (< 2^32).
        let id = ConnectionId(u32::try_from(entry.key()).unwrap_or(u32::MAX));
        let handle = Rc::new(ConnectionHandle {
            id,
            signal: ConnectionSignal::default(),
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
}

/// Removes the connection from its registry when dropped, however the task ends.
#[derive(Debug)]
pub struct Registration {
    registry: Rc<ConnectionRegistry>,
    handle: Rc<ConnectionHandle>,
}

impl Registration {
    /// Registers a new connection in `registry`.
    pub fn new(registry: Rc<ConnectionRegistry>) -> Self {
        let handle = registry.register();
        Self { registry, handle }
    }

    /// The connection's handle.
    pub fn handle(&self) -> &ConnectionHandle {
        &self.handle
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.remove(self.handle.id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    struct CountingWaker(std::sync::atomic::AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
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
    fn shutdown_wakes_the_waiting_task_once_and_stays_raised() {
        let registry = Rc::new(ConnectionRegistry::default());
        let reg = Registration::new(Rc::clone(&registry));
        let counter = Arc::new(CountingWaker(Default::default()));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            let mut wait = reg.handle().signal.wait();
            assert!(Pin::new(&mut wait).poll(&mut cx).is_pending());
        }
        registry.raise_all(Signal::Shutdown);
        assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        let mut wait = reg.handle().signal.wait();
        assert_eq!(
            Pin::new(&mut wait).poll(&mut cx),
            Poll::Ready(Signal::Shutdown)
        );
    }
}
