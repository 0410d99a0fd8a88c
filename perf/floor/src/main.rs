//! # ringhub-floor: the io_uring fan-out floor
//!
//! A minimal raw WebSocket server on one thread, written straight against the `io-uring` crate
//! (no runtime, no framework). `perf/compare.py` runs it next to ringhub and the peer servers as
//! the physical limit of fan-out on this kernel.
//!
//! **Why it is the floor.** When a publisher's message arrives, the server frame (header and
//! payload) is built **once**, into one buffer. Then one `Send` SQE per subscriber, each pointing
//! at that same buffer, is queued, and all of them reach the kernel in one `io_uring_enter`.
//! Nothing is encoded, copied or allocated per subscriber (a reference-count bump aside), no
//! readiness is polled, and no syscall is made per message. What is left is the kernel's own work
//! per socket: `tcp_sendmsg`, plus the loopback receive in softirq. Every server that writes each
//! message to each subscriber separately pays that. The only way below it is to send fewer
//! times, for example by coalescing several messages for one subscriber into one write, which
//! this program deliberately does not do.
//!
//! Routes (the raw contract shared with `perf/peers`):
//! - `/ws/broadcast`: a subscriber; receives every message any publisher sends;
//! - `/ws/publish`: a publisher; each of its messages goes to every subscriber, opcode kept;
//! - `/ws/echo`: each message comes back to its sender;
//! - `/ws/group/A[,B…]`: a member of groups A, B, … (S3); each message it sends goes to every
//!   member of A, itself included: a group table maps each name to its members' keys, and the
//!   frame is built once with one `Send` SQE per member, as for a broadcast;
//! - `/ws/idle`: messages are read and dropped (S1's idle connections);
//! - `GET /health/ready` answers `200`, any other path `404`.
//!
//! With `--coalesce` it also pulls the other lever: when several frames are waiting for one
//! connection (a publisher sent several messages in one read, or the socket was still busy), one
//! `SendMsg` SQE writes them all (up to 64), its iovecs pointing at the shared frames. uWebSockets
//! does the same when it drains a topic once per event-loop turn. Running both modes shows how
//! much of a peer's advantage comes from coalescing.
//!
//! Pings are answered with pongs and closes with closes. Fragmented messages are refused (close
//! 1003); no extension (compression) is ever negotiated. Sends are queued while completions are
//! handled and armed once per loop turn. At most one write per connection is in flight, so frames
//! arrive in order; a short write is resubmitted from where it stopped.
//!
//! **Idle mode** (`--idle`, for S1): the least work that holds N idle WebSockets with
//! keep-alives both ways. Every `/ws/idle` connection gets the same pre-built 13-byte frame (the
//! size of a SignalR JSON Ping, `{"type":6}` + 0x1E as a text message) every `--keepalive-ms`
//! (15 s), starting one interval after its upgrade as ringhub's keep-alive does; due pings are
//! sent on a tick of 1/16 s (ringhub coalesces its deadlines onto a grid of the same order). No
//! receive is left armed: each connection has a readiness poll (`PollAdd`, which pins no
//! buffer), and when it fires, one non-blocking `recv` reads into ONE buffer shared by all
//! connections; only a partial frame is copied out to the connection.
//!
//! ```text
//! ringhub-floor [--listen 127.0.0.1:0 | --port P] [--coalesce] [--idle [--keepalive-ms 15000]]
//! ```   # prints `listening <addr>`

mod frame;
mod http;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write as _};
use std::net::{Shutdown, SocketAddr};
use std::ops::Range;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, squeue, types};
use slab::Slab;
use socket2::{Domain, SockRef, Socket, Type};

use crate::frame::Parsed;
use crate::http::{Head, Route};

/// Submission queue size. A broadcast to up to this many subscribers reaches the kernel in one
/// `io_uring_enter`; past it, the queue is flushed each time it fills.
const RING_ENTRIES: u32 = 16_384;
/// First size of a connection's read buffer. It grows to fit a larger frame or request head, and
/// doubles (up to `MAX_READ_BUFFER`) whenever a receive fills it: a publisher's messages are then
/// read many at a time, as an epoll server reading until `EAGAIN` would.
const READ_BUFFER: usize = 1024;
/// Largest size a read buffer grows to because receives keep filling it.
const MAX_READ_BUFFER: usize = 256 * 1024;
/// `user_data` of the accept operation.
const ACCEPT: u64 = u64::MAX;
/// Low byte of the `user_data` of a connection's receive.
const RECV: u64 = 1;
/// Low byte of the `user_data` of a connection's send.
const SEND: u64 = 2;
/// Low byte of the `user_data` of a connection's readiness poll (`--idle`).
const POLL: u64 = 3;
/// `user_data` of the keep-alive tick (`--idle`).
const TICK: u64 = u64::MAX - 1;
/// Size of the one receive buffer shared by every connection in `--idle` mode.
const SHARED_READ: usize = 64 * 1024;
/// The keep-alive every idle connection gets: the size of a SignalR JSON Ping.
const KEEPALIVE_PAYLOAD: &[u8] = b"{\"type\":6}\x1e";
/// Most frames one coalesced send writes.
const MAX_COALESCED: usize = 64;

fn main() -> ExitCode {
    match start() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ringhub-floor: {error}");
            ExitCode::FAILURE
        }
    }
}

fn start() -> io::Result<()> {
    let Options {
        addr,
        coalesce,
        idle,
    } = options()?;
    raise_open_files_limit();
    let listener = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    listener.set_reuse_address(true)?;
    listener.bind(&addr.into())?;
    listener.listen(4096)?;
    let local = listener
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("the listener has no IP address"))?;
    // Single issuer + deferred task running: completions are processed only when this thread
    // asks for them, the cheapest set-up for a one-thread server. Older kernels get a plain ring.
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
        .or_else(|_| IoUring::new(RING_ENTRIES))?;
    println!("listening {local}");
    io::stdout().flush()?;
    Floor {
        ring,
        listener,
        coalesce,
        idle: idle.map(|interval| Idle {
            interval,
            tick: types::Timespec::from(TICK_EVERY.min(interval / 4)),
            due: VecDeque::new(),
            frame: Rc::new(frame::build(frame::OP_TEXT, KEEPALIVE_PAYLOAD)),
            shared: Vec::new(),
        }),
        conns: Slab::new(),
        to_flush: Vec::new(),
        groups: HashMap::new(),
        stats: Stats::default(),
    }
    .run()
}

/// How often due keep-alives are sent in `--idle` mode.
const TICK_EVERY: Duration = Duration::from_micros(62_500);

/// The command line.
struct Options {
    addr: SocketAddr,
    coalesce: bool,
    /// `--idle`: the keep-alive interval.
    idle: Option<Duration>,
}

/// `--listen ADDR` or `--port P` (on 127.0.0.1; the default is `127.0.0.1:0`, a free port),
/// `--coalesce`, and `--idle` with `--keepalive-ms MS` (default 15000).
fn options() -> io::Result<Options> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    let mut addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut coalesce = false;
    let mut idle = false;
    let mut keepalive = Duration::from_secs(15);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--coalesce" {
            coalesce = true;
            continue;
        }
        if flag == "--idle" {
            idle = true;
            continue;
        }
        let value = args.next();
        match (flag.as_str(), value) {
            ("--listen", Some(value)) => {
                addr = value
                    .parse()
                    .map_err(|_| invalid(format!("bad --listen {value}")))?;
            }
            ("--port", Some(value)) => {
                let port = value
                    .parse()
                    .map_err(|_| invalid(format!("bad --port {value}")))?;
                addr.set_port(port);
            }
            ("--keepalive-ms", Some(value)) => {
                let ms: u64 = value
                    .parse()
                    .map_err(|_| invalid(format!("bad --keepalive-ms {value}")))?;
                if ms == 0 {
                    return Err(invalid("--keepalive-ms must be positive".into()));
                }
                keepalive = Duration::from_millis(ms);
            }
            _ => {
                return Err(invalid(format!(
                    "unexpected {flag}; usage: ringhub-floor [--listen ADDR | --port P] \
                     [--coalesce] [--idle [--keepalive-ms MS]]"
                )));
            }
        }
    }
    Ok(Options {
        addr,
        coalesce,
        idle: idle.then_some(keepalive),
    })
}

/// Raises the soft open-files limit to the hard one: each connection holds a descriptor.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid `rlimit` for the duration of the call.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
}

/// Counters printed on stderr each time the last connection goes away.
#[derive(Default)]
struct Stats {
    accepted: u64,
    broadcasts: u64,
    frames_written: u64,
    sends: u64,
    short_writes: u64,
}

/// A frame to write: the buffer is shared by every connection it goes to.
struct Out {
    frame: Rc<Vec<u8>>,
    written: usize,
}

/// What a connection is for.
#[derive(Clone, Copy)]
enum Role {
    /// The HTTP request head is still being read.
    Handshake,
    /// Upgraded to WebSocket on this route.
    Upgraded(Route),
}

/// `--idle`: the keep-alive schedule and the shared receive buffer.
struct Idle {
    interval: Duration,
    /// The tick's timeout, kept here while the kernel may read it.
    tick: types::Timespec,
    /// Idle connections by the time their next keep-alive is due, earliest first (every
    /// interval is the same, so appending keeps the order): (due, slab key, connection serial).
    due: VecDeque<(Instant, usize, u64)>,
    /// The keep-alive frame, built once, shared by every send.
    frame: Rc<Vec<u8>>,
    /// The receive buffer of every connection without a partial frame.
    shared: Vec<u8>,
}

/// One accepted connection.
///
/// Buffers lent to the kernel: `read[filled..]` while `receiving`; the first `sending` frames of
/// `queue`, and `msg` with `iov`, while `sending > 0`. None of them is touched until the
/// operation's completion is reaped, and the connection is removed from the slab (closing its
/// descriptor) only once nothing is in flight.
struct Conn {
    fd: OwnedFd,
    /// Which accepted connection this is (a slab key is reused; this is not).
    serial: u64,
    role: Role,
    /// Bytes read but not parsed yet are `read[..filled]`.
    read: Vec<u8>,
    filled: usize,
    /// Frames waiting to be written, in order.
    queue: VecDeque<Out>,
    receiving: bool,
    /// How many frames at the front of `queue` the send in flight writes (0: none in flight).
    sending: usize,
    /// In the list of connections whose sends are armed at the end of this loop turn.
    flush_scheduled: bool,
    /// The iovecs and header of a coalesced send, boxed so they stay put.
    iov: Vec<libc::iovec>,
    msg: Option<Box<libc::msghdr>>,
    /// Once the queue is written, shut the connection down (after a close frame or a refusal).
    close_when_flushed: bool,
    /// The socket is shut down; the slot is freed when nothing is in flight.
    closing: bool,
    /// `/ws/group/…`: the groups it is a member of; it sends to the first.
    groups: Vec<Rc<str>>,
}

impl Conn {
    fn new(fd: OwnedFd, serial: u64, idle: bool) -> Self {
        Self {
            fd,
            serial,
            role: Role::Handshake,
            // Idle mode reads into the shared buffer; a connection holds only a partial frame.
            read: if idle {
                Vec::new()
            } else {
                vec![0; READ_BUFFER]
            },
            filled: 0,
            queue: VecDeque::new(),
            receiving: false,
            sending: 0,
            flush_scheduled: false,
            iov: Vec::new(),
            msg: None,
            close_when_flushed: false,
            closing: false,
            groups: Vec::new(),
        }
    }

    /// Shuts the socket down. Operations in flight then complete (with 0 or an error), after
    /// which the connection can be released.
    fn begin_close(&mut self) {
        if self.closing {
            return;
        }
        self.closing = true;
        // Keep the frames the kernel may still be reading from; drop the rest.
        self.queue.truncate(self.sending);
        // An error here means the peer is gone already, which is what we want.
        let _ = SockRef::from(&self.fd).shutdown(Shutdown::Both);
    }
}

/// The server: one ring, one listener, the connections.
struct Floor {
    ring: IoUring,
    listener: Socket,
    /// Write every queued frame of a connection with one send, not one send per frame.
    coalesce: bool,
    /// `--idle`: readiness-then-read into one shared buffer, and keep-alives on `/ws/idle`.
    idle: Option<Idle>,
    conns: Slab<Conn>,
    /// Connections with frames queued in this loop turn.
    to_flush: Vec<usize>,
    /// Group name -> the keys of its members (`/ws/group/…` connections).
    groups: HashMap<Rc<str>, Vec<usize>>,
    stats: Stats,
}

impl Floor {
    fn run(&mut self) -> io::Result<()> {
        self.arm_accept()?;
        self.arm_tick()?;
        let mut completed = Vec::with_capacity(2 * RING_ENTRIES as usize);
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(error) if matches!(error.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(error) => return Err(error),
            }
            completed.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            for (user_data, result) in completed.drain(..) {
                if user_data == ACCEPT {
                    self.on_accept(result)?;
                    continue;
                }
                if user_data == TICK {
                    self.on_tick();
                    self.arm_tick()?;
                    continue;
                }
                let key = (user_data >> 8) as usize;
                match user_data & 0xFF {
                    RECV => self.on_recv(key, result)?,
                    POLL => self.on_readable(key, result)?,
                    _ => self.on_send(key, result)?,
                }
                self.release_if_done(key);
            }
            self.flush()?;
        }
    }

    /// Arms a send on every connection that got frames in this loop turn and has none in
    /// flight: a broadcast's SQEs all go to the kernel in the next `io_uring_enter`.
    fn flush(&mut self) -> io::Result<()> {
        for key in self.to_flush.drain(..) {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.flush_scheduled = false;
            if !conn.closing && conn.sending == 0 && !conn.queue.is_empty() {
                arm_send(&mut self.ring, key, conn, self.coalesce)?;
                self.stats.sends += 1;
            }
        }
        Ok(())
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let entry = opcode::Accept::new(
            types::Fd(self.listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(ACCEPT);
        // SAFETY: the entry points at no memory (no peer address asked for).
        unsafe { push(&mut self.ring, &entry) }
    }

    fn on_accept(&mut self, result: i32) -> io::Result<()> {
        if result >= 0 {
            // SAFETY: a non-negative accept result is a new descriptor nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(result) };
            // Frames go out as soon as they are written, as in every server compared.
            let _ = SockRef::from(&fd).set_tcp_nodelay(true);
            let slot = self.conns.vacant_entry();
            let key = slot.key();
            let conn = slot.insert(Conn::new(fd, self.stats.accepted, self.idle.is_some()));
            if self.idle.is_some() {
                arm_poll(&mut self.ring, key, conn)?;
            } else {
                arm_recv(&mut self.ring, key, conn)?;
            }
            self.stats.accepted += 1;
        } else {
            eprintln!(
                "ringhub-floor: accept: {}",
                io::Error::from_raw_os_error(-result)
            );
        }
        self.arm_accept()
    }

    fn on_recv(&mut self, key: usize, result: i32) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        conn.receiving = false;
        if conn.closing {
            return Ok(());
        }
        if result <= 0 {
            conn.begin_close();
            return Ok(());
        }
        let filled_it = result as usize == conn.read.len() - conn.filled;
        conn.filled += result as usize;
        self.on_bytes(key)?;
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.closing
            && !conn.close_when_flushed
        {
            if filled_it && conn.read.len() < MAX_READ_BUFFER {
                let grown = 2 * conn.read.len();
                conn.read.resize(grown, 0);
            }
            arm_recv(&mut self.ring, key, conn)?;
        }
        Ok(())
    }

    /// Arms the keep-alive tick (`--idle` only).
    fn arm_tick(&mut self) -> io::Result<()> {
        let Some(idle) = &self.idle else {
            return Ok(());
        };
        let entry = opcode::Timeout::new(&raw const idle.tick)
            .build()
            .user_data(TICK);
        // SAFETY: the timespec lives in `self.idle`, which is neither dropped nor changed while
        // the program runs.
        unsafe { push(&mut self.ring, &entry) }
    }

    /// Queues the pre-built keep-alive on every idle connection whose time has come.
    fn on_tick(&mut self) {
        let Some(idle) = &mut self.idle else {
            return;
        };
        let now = Instant::now();
        while let Some(&(due, key, serial)) = idle.due.front() {
            if due > now {
                break;
            }
            idle.due.pop_front();
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.serial != serial || conn.closing || conn.close_when_flushed {
                continue;
            }
            enqueue_shared(&mut self.to_flush, key, conn, Rc::clone(&idle.frame));
            idle.due.push_back((due + idle.interval, key, serial));
        }
    }

    /// `--idle`: the socket is readable. One non-blocking receive, into the shared buffer when
    /// the connection holds no partial frame; what is left unparsed is copied out to it.
    fn on_readable(&mut self, key: usize, result: i32) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        conn.receiving = false;
        if conn.closing {
            return Ok(());
        }
        if result < 0 {
            conn.begin_close();
            return Ok(());
        }
        let Some(idle) = &mut self.idle else {
            return Ok(());
        };
        let borrowed = conn.filled == 0;
        if borrowed {
            if idle.shared.is_empty() {
                idle.shared = vec![0; SHARED_READ];
            }
            std::mem::swap(&mut conn.read, &mut idle.shared);
        }
        if conn.filled == conn.read.len() {
            let grown = (2 * conn.read.len()).max(READ_BUFFER);
            conn.read.resize(grown, 0);
        }
        let free = &mut conn.read[conn.filled..];
        // SAFETY: `free` is a valid, writable buffer of `free.len()` bytes for the call.
        let got = unsafe {
            libc::recv(
                conn.fd.as_raw_fd(),
                free.as_mut_ptr().cast(),
                free.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if got > 0 {
            conn.filled += got as usize;
            self.on_bytes(key)?;
        } else if got == 0 || io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
            conn.begin_close();
        }
        let (Some(conn), Some(idle)) = (self.conns.get_mut(key), &mut self.idle) else {
            return Ok(());
        };
        if borrowed {
            let partial = conn.read[..conn.filled].to_vec();
            std::mem::swap(&mut conn.read, &mut idle.shared);
            conn.read = partial;
        } else if conn.filled == 0 {
            conn.read = Vec::new();
        }
        if !conn.closing && !conn.close_when_flushed {
            arm_poll(&mut self.ring, key, conn)?;
        }
        Ok(())
    }

    /// Handles what was read: the request head first, then every complete frame.
    fn on_bytes(&mut self, key: usize) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        let mut start = 0;
        let route = match conn.role {
            Role::Upgraded(route) => route,
            Role::Handshake => match http::parse(&conn.read[..conn.filled]) {
                Head::Incomplete => return Ok(()),
                Head::Refuse(response) => {
                    enqueue(&mut self.to_flush, key, conn, response.as_bytes().to_vec());
                    conn.close_when_flushed = true;
                    return Ok(());
                }
                Head::Upgrade {
                    route,
                    groups,
                    response,
                    len,
                } => {
                    enqueue(&mut self.to_flush, key, conn, response.into_bytes());
                    conn.role = Role::Upgraded(route);
                    for name in groups {
                        let name: Rc<str> = name.into();
                        self.groups.entry(name.clone()).or_default().push(key);
                        conn.groups.push(name);
                    }
                    start = len;
                    if route == Route::Idle
                        && let Some(idle) = &mut self.idle
                    {
                        let due = Instant::now() + idle.interval;
                        idle.due.push_back((due, key, conn.serial));
                    }
                    route
                }
            },
        };
        let mut need = 0;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return Ok(());
            };
            if conn.closing || conn.close_when_flushed {
                break;
            }
            match frame::parse(&mut conn.read[start..conn.filled]) {
                Parsed::Need(n) => {
                    need = n;
                    break;
                }
                Parsed::Refused(code) => {
                    self.close_with(key, code)?;
                    break;
                }
                Parsed::Frame(frame, used) => {
                    let payload = start + frame.payload.start..start + frame.payload.end;
                    start += used;
                    if frame.fin && frame.opcode != frame::OP_CONTINUATION {
                        self.on_message(key, route, frame.opcode, payload)?;
                    } else {
                        self.close_with(key, frame::CLOSE_UNSUPPORTED)?;
                    }
                }
            }
        }
        if let Some(conn) = self.conns.get_mut(key) {
            conn.read.copy_within(start..conn.filled, 0);
            conn.filled -= start;
            if conn.read.len() < need {
                conn.read.resize(need, 0);
            }
        }
        Ok(())
    }

    /// Acts on one complete, unfragmented message or control frame.
    fn on_message(
        &mut self,
        key: usize,
        route: Route,
        opcode: u8,
        payload: Range<usize>,
    ) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        let payload = &conn.read[payload];
        match opcode {
            frame::OP_TEXT | frame::OP_BINARY => match route {
                Route::Publish => {
                    // The one place a frame is built for the whole fan-out.
                    let out = Rc::new(frame::build(opcode, payload));
                    self.broadcast(&out)
                }
                Route::Echo => {
                    let out = frame::build(opcode, payload);
                    enqueue(&mut self.to_flush, key, conn, out);
                    Ok(())
                }
                Route::Group => {
                    let out = Rc::new(frame::build(opcode, payload));
                    let Some(group) = conn.groups.first().cloned() else {
                        return Ok(());
                    };
                    self.publish(&group, &out);
                    Ok(())
                }
                Route::Broadcast | Route::Idle => Ok(()),
            },
            frame::OP_PING => {
                let pong = frame::build(frame::OP_PONG, payload);
                enqueue(&mut self.to_flush, key, conn, pong);
                Ok(())
            }
            frame::OP_PONG => Ok(()),
            frame::OP_CLOSE => {
                // Answer with the peer's status code (or none), then shut down.
                let code = payload.get(..2).unwrap_or_default();
                let close = frame::build(frame::OP_CLOSE, code);
                enqueue(&mut self.to_flush, key, conn, close);
                conn.close_when_flushed = true;
                Ok(())
            }
            _ => self.close_with(key, frame::CLOSE_PROTOCOL_ERROR),
        }
    }

    /// Queues one shared frame on every subscriber; `flush` then points one SQE per subscriber
    /// at it.
    fn broadcast(&mut self, out: &Rc<Vec<u8>>) -> io::Result<()> {
        self.stats.broadcasts += 1;
        for (key, conn) in &mut self.conns {
            if matches!(conn.role, Role::Upgraded(Route::Broadcast)) {
                enqueue_shared(&mut self.to_flush, key, conn, Rc::clone(out));
            }
        }
        Ok(())
    }

    /// Queues one shared frame on every member of `group`, as `broadcast` does.
    fn publish(&mut self, group: &str, out: &Rc<Vec<u8>>) {
        self.stats.broadcasts += 1;
        let Some(members) = self.groups.get(group) else {
            return;
        };
        for &key in members {
            if let Some(conn) = self.conns.get_mut(key) {
                enqueue_shared(&mut self.to_flush, key, conn, Rc::clone(out));
            }
        }
    }

    /// Sends a close frame with `code`, then shuts the connection down.
    fn close_with(&mut self, key: usize, code: u16) -> io::Result<()> {
        if let Some(conn) = self.conns.get_mut(key) {
            enqueue(&mut self.to_flush, key, conn, frame::close(code));
            conn.close_when_flushed = true;
        }
        Ok(())
    }

    fn on_send(&mut self, key: usize, result: i32) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        conn.sending = 0;
        if conn.closing {
            return Ok(());
        }
        if result <= 0 {
            conn.begin_close();
            return Ok(());
        }
        let mut written = result as usize;
        while written > 0
            && let Some(out) = conn.queue.front_mut()
        {
            let rest = out.frame.len() - out.written;
            if written < rest {
                // A short write: the next send starts where this one stopped.
                out.written += written;
                self.stats.short_writes += 1;
                break;
            }
            written -= rest;
            conn.queue.pop_front();
            self.stats.frames_written += 1;
        }
        if !conn.queue.is_empty() {
            schedule(&mut self.to_flush, key, conn);
        } else if conn.close_when_flushed {
            conn.begin_close();
        }
        Ok(())
    }

    /// Frees a closing connection's slot, and closes its descriptor, once nothing is in flight.
    fn release_if_done(&mut self, key: usize) {
        let done = self
            .conns
            .get(key)
            .is_some_and(|conn| conn.closing && !conn.receiving && conn.sending == 0);
        if !done {
            return;
        }
        let conn = self.conns.remove(key);
        for name in &conn.groups {
            if let Some(members) = self.groups.get_mut(name) {
                if let Some(at) = members.iter().position(|&member| member == key) {
                    members.swap_remove(at);
                }
                if members.is_empty() {
                    self.groups.remove(name);
                }
            }
        }
        if self.conns.is_empty() {
            let Stats {
                accepted,
                broadcasts,
                frames_written,
                sends,
                short_writes,
            } = self.stats;
            eprintln!(
                "ringhub-floor: no connections; so far accepted {accepted}, broadcasts \
                 {broadcasts}, frames written {frames_written} in {sends} sends, short writes \
                 {short_writes}"
            );
        }
    }
}

/// Queues a frame of this connection's own.
fn enqueue(to_flush: &mut Vec<usize>, key: usize, conn: &mut Conn, frame: Vec<u8>) {
    enqueue_shared(to_flush, key, conn, Rc::new(frame));
}

/// Queues a frame on a connection; its send is armed at the end of the loop turn.
fn enqueue_shared(to_flush: &mut Vec<usize>, key: usize, conn: &mut Conn, frame: Rc<Vec<u8>>) {
    if conn.closing || conn.close_when_flushed {
        return;
    }
    conn.queue.push_back(Out { frame, written: 0 });
    schedule(to_flush, key, conn);
}

/// Puts a connection on the list of sends to arm at the end of the loop turn, once.
fn schedule(to_flush: &mut Vec<usize>, key: usize, conn: &mut Conn) {
    if !conn.flush_scheduled {
        conn.flush_scheduled = true;
        to_flush.push(key);
    }
}

/// Queues a receive into the free end of the connection's read buffer.
fn arm_recv(ring: &mut IoUring, key: usize, conn: &mut Conn) -> io::Result<()> {
    if conn.filled == conn.read.len() {
        let grown = 2 * conn.read.len();
        conn.read.resize(grown, 0);
    }
    let free = &mut conn.read[conn.filled..];
    let len = u32::try_from(free.len()).unwrap_or(u32::MAX);
    let entry = opcode::Recv::new(types::Fd(conn.fd.as_raw_fd()), free.as_mut_ptr(), len)
        .build()
        .user_data(token(key, RECV));
    // SAFETY: `conn.read` is neither resized nor accessed while `receiving` is set, and the
    // connection (so the buffer) is released only once `receiving` is clear (see `Conn`). The
    // heap buffer does not move when the slab does.
    unsafe { push(ring, &entry)? };
    conn.receiving = true;
    Ok(())
}

/// Queues a readiness poll on the connection (`--idle`): nothing is read until it fires.
fn arm_poll(ring: &mut IoUring, key: usize, conn: &mut Conn) -> io::Result<()> {
    let entry = opcode::PollAdd::new(types::Fd(conn.fd.as_raw_fd()), libc::POLLIN as u32)
        .build()
        .user_data(token(key, POLL));
    // SAFETY: a poll points at no memory; the descriptor stays open until its completion (the
    // connection is released only once `receiving` is clear).
    unsafe { push(ring, &entry)? };
    conn.receiving = true;
    Ok(())
}

/// Queues a send of the rest of the connection's first queued frame, or with `coalesce` of all
/// its queued frames (up to `MAX_COALESCED`) in one `SendMsg`.
fn arm_send(ring: &mut IoUring, key: usize, conn: &mut Conn, coalesce: bool) -> io::Result<()> {
    let frames = if coalesce {
        conn.queue.len().min(MAX_COALESCED)
    } else {
        1
    };
    let fd = types::Fd(conn.fd.as_raw_fd());
    let entry = if frames <= 1 {
        let Some(out) = conn.queue.front() else {
            return Ok(());
        };
        let rest = &out.frame[out.written..];
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        opcode::Send::new(fd, rest.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
    } else {
        conn.iov.clear();
        conn.iov.extend(conn.queue.iter().take(frames).map(|out| {
            let rest = &out.frame[out.written..];
            libc::iovec {
                iov_base: rest.as_ptr().cast_mut().cast(),
                iov_len: rest.len(),
            }
        }));
        let msg = conn.msg.get_or_insert_with(|| {
            // SAFETY: `msghdr` is plain data; all zeroes is a valid empty header (no name, no
            // control data, no iovecs).
            Box::new(unsafe { std::mem::zeroed() })
        });
        msg.msg_iov = conn.iov.as_mut_ptr();
        msg.msg_iovlen = conn.iov.len();
        opcode::SendMsg::new(fd, &raw const **msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
    };
    let entry = entry.user_data(token(key, SEND));
    // SAFETY: the frames are reference-counted by the queue and never mutated once built; the
    // first `sending` of them stay queued while the send is in flight (`begin_close` keeps them,
    // `on_send` pops them only after the completion). `msg` and `iov` are heap allocations that
    // are not touched while `sending > 0`. The connection is released only once `sending` is 0.
    unsafe { push(ring, &entry)? };
    conn.sending = frames.max(1);
    Ok(())
}

/// Queues an SQE, handing the full submission queue to the kernel first if there is no room.
///
/// # Safety
/// Every buffer `entry` points at must stay allocated, unmoved and untouched by this program
/// until the entry's completion has been reaped.
unsafe fn push(ring: &mut IoUring, entry: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: the caller keeps the entry's buffers valid until its completion.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

/// The `user_data` of an operation on connection `key`.
fn token(key: usize, op: u64) -> u64 {
    (key as u64) << 8 | op
}
