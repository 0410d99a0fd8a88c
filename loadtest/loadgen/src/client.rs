//! One load generator thread's state: its settings, recorder, connections and scratch
//! buffers, and the [`Gate`] a closed-loop broadcast publisher waits on.
//!
//! A `Client` lives on one monoio thread (`Rc`, `Cell`); only the recorder and the gate are
//! shared with other threads.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::clock::now_ns;
use crate::conn::Conn;
use crate::http::Target;
use crate::recorder::Recorder;
use crate::signalr::Protocol;

/// What the connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// SignalR with this hub protocol.
    SignalR(Protocol),
    /// Plain WebSocket messages.
    Raw,
}

/// Connection settings shared by a thread's connections.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to connect.
    pub target: Target,
    /// The wire.
    pub wire: Wire,
    /// POST /negotiate before upgrading (SignalR only).
    pub negotiate: bool,
    /// Source addresses 127.0.0.1 ..= 127.0.0.N (1 = no explicit bind).
    pub sources: u8,
    /// Deadline for connect + negotiate + upgrade + handshake.
    pub connect_timeout: Duration,
    /// Client keepalive interval.
    pub ping_interval: Duration,
    /// The keepalive a raw connection sends.
    pub raw_keepalive: crate::cli::RawKeepalive,
    /// Largest frame or message accepted.
    pub max_message: usize,
}

impl Settings {
    /// The source address for connection `index`, if sockets are spread over several.
    pub fn source_for(&self, index: usize) -> Option<IpAddr> {
        if self.sources <= 1 || !self.target.addr.ip().is_loopback() {
            return None;
        }
        let last = 1 + (index % usize::from(self.sources)) as u8;
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
    }
}

/// One thread's client side.
#[derive(Debug)]
pub struct Client {
    /// This thread's measurements.
    pub rec: Arc<Recorder>,
    /// Connection settings.
    pub settings: Settings,
    /// Closed-loop broadcast gate, when subscribers must report deliveries.
    pub gate: Option<Arc<Gate>>,
    window: Cell<(u64, u64)>,
    running: Cell<bool>,
    rng: Cell<u64>,
    scratch: RefCell<Vec<u8>>,
    conns: RefCell<Vec<Weak<Conn>>>,
    next_sweep: Cell<u64>,
}

impl Client {
    /// A client for one thread; `seed` varies the mask keys between threads.
    pub fn new(
        rec: Arc<Recorder>,
        settings: Settings,
        gate: Option<Arc<Gate>>,
        seed: u64,
    ) -> Rc<Self> {
        Rc::new(Self {
            rec,
            settings,
            gate,
            window: Cell::new((u64::MAX, u64::MAX)),
            running: Cell::new(false),
            rng: Cell::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            scratch: RefCell::new(Vec::with_capacity(4096)),
            conns: RefCell::new(Vec::new()),
            next_sweep: Cell::new(0),
        })
    }

    /// Sets the measurement window `[start, end)` (monotonic ns of the scheduled times).
    pub fn set_window(&self, start: u64, end: u64) {
        self.window.set((start, end));
    }

    /// Whether a message scheduled at `scheduled_ns` counts.
    pub fn in_window(&self, scheduled_ns: u64) -> bool {
        let (start, end) = self.window.get();
        scheduled_ns >= start && scheduled_ns < end
    }

    /// From now on, an unexpected close counts as a drop (or, with `false`, no longer).
    pub fn set_running(&self, running: bool) {
        self.running.set(running);
    }

    /// Whether unexpected closes count as drops.
    pub fn running(&self) -> bool {
        self.running.get()
    }

    /// A pseudo-random number (xorshift64*; mask keys and WebSocket keys, not secrets).
    pub fn random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Runs `f` with the thread's scratch buffer, emptied first.
    pub fn with_scratch<R>(&self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let mut scratch = self.scratch.borrow_mut();
        scratch.clear();
        let out = f(&mut scratch);
        if scratch.capacity() > 1 << 20 {
            *scratch = Vec::with_capacity(4096);
        }
        out
    }

    /// Tracks a connection for keepalive pings.
    pub fn register(&self, conn: &Rc<Conn>) {
        self.conns.borrow_mut().push(Rc::downgrade(conn));
    }

    /// Sends keepalive pings on connections that have been quiet for the ping interval.
    /// Cheap when called often: it does work at most once a second.
    pub fn keepalive(&self, now: u64) {
        if now < self.next_sweep.get() {
            return;
        }
        self.next_sweep.set(now + 1_000_000_000);
        let interval = crate::clock::ns(self.settings.ping_interval);
        let live: Vec<Rc<Conn>> = {
            let mut conns = self.conns.borrow_mut();
            conns.retain(|c| c.upgrade().is_some_and(|c| c.is_open()));
            conns.iter().filter_map(Weak::upgrade).collect()
        };
        for conn in live {
            if now.saturating_sub(conn.last_send_ns()) >= interval {
                conn.send_ping();
            }
        }
    }

    /// Connections of this client still open.
    pub fn open_connections(&self) -> usize {
        self.conns
            .borrow()
            .iter()
            .filter(|c| c.upgrade().is_some_and(|c| c.is_open()))
            .count()
    }

    /// Runs [`Self::keepalive`] every 250 ms until `until_ns` (for phases without a pacer).
    pub async fn idle_until(&self, until_ns: u64) {
        loop {
            let now = now_ns();
            self.keepalive(now);
            if now >= until_ns {
                return;
            }
            let step = (until_ns - now).min(250_000_000);
            monoio::time::sleep(Duration::from_nanos(step)).await;
        }
    }
}

/// Lets a closed-loop publisher wait until enough deliveries arrived, on any thread.
#[derive(Debug, Default)]
pub struct Gate {
    delivered: AtomicU64,
    target: AtomicU64,
    waker: Mutex<Option<Waker>>,
}

impl Gate {
    /// Counts one delivery; wakes the publisher when its target is reached.
    pub fn bump(&self) {
        let delivered = self.delivered.fetch_add(1, Ordering::SeqCst) + 1;
        if delivered == self.target.load(Ordering::SeqCst) {
            let waker = self
                .waker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Deliveries so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::SeqCst)
    }

    /// Waits until at least `target` deliveries arrived.
    pub async fn reached(&self, target: u64) {
        self.target.store(target, Ordering::SeqCst);
        std::future::poll_fn(|cx| {
            *self
                .waker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(cx.waker().clone());
            if self.delivered.load(Ordering::SeqCst) >= target {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}
