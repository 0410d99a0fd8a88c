//! One client connection: TCP connect from a chosen source address, negotiate, WebSocket
//! upgrade, SignalR handshake; then a reader task that dispatches what arrives and a writer
//! task that flushes whatever was queued since its last write (one `write` for many frames).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};

use anyhow::{Context, anyhow, bail};
use futures_channel::oneshot;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use socket2::{Domain, Socket, Type};

use crate::cli::RawKeepalive;
use crate::client::{Client, Wire};
use crate::clock::now_ns;
use crate::http::{self, Negotiated};
use crate::payload::{self, Stamp};
use crate::recorder::Counter;
use crate::signalr::{self, Arg, Call, Message, Outcome, Protocol, Records, Scalar};
use crate::ws::{self, FrameHead};

/// How an awaited invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// The error text, if it failed.
    pub error: Option<String>,
    /// The stamp in a string result, if any.
    pub stamp: Option<Stamp>,
    /// Stream items received before the completion (stream invocations).
    pub items: u64,
    /// When the completion arrived (monotonic ns).
    pub at_ns: u64,
}

#[derive(Debug)]
struct Pending {
    done: oneshot::Sender<Completed>,
    items: u64,
}

/// A connected client.
pub struct Conn {
    /// The connection's global index (also picks its source address).
    pub index: usize,
    client: Rc<Client>,
    fd: RawFd,
    out: RefCell<Vec<u8>>,
    writer: Cell<Option<Waker>>,
    open: Cell<bool>,
    closing: Cell<bool>,
    counts_deliveries: bool,
    last_send_ns: Cell<u64>,
    next_id: Cell<u64>,
    pending: RefCell<HashMap<u64, Pending>>,
    delivery_waiter: RefCell<Option<oneshot::Sender<Stamp>>>,
    close_waiter: RefCell<Option<oneshot::Sender<String>>>,
    close_error: RefCell<Option<String>>,
    handshake: RefCell<Option<oneshot::Sender<Result<(), String>>>>,
    stamp_sink: RefCell<Option<StampSink>>,
}

/// Takes every timed message of a connection instead of the default accounting: the stamp
/// and the receive time (monotonic ns).
pub type StampSink = Box<dyn FnMut(Stamp, u64)>;

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("index", &self.index)
            .field("open", &self.open.get())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Connects, upgrades to `path` and (for SignalR) completes the handshake, within the
    /// connect timeout. `counts_deliveries` is false for a publisher that also receives.
    pub async fn open(
        client: &Rc<Client>,
        path: &str,
        index: usize,
        counts_deliveries: bool,
    ) -> anyhow::Result<Rc<Self>> {
        let timeout = client.settings.connect_timeout;
        match monoio::time::timeout(
            timeout,
            Self::open_inner(client, path, index, counts_deliveries),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => bail!("connect, upgrade and handshake took over {timeout:?}"),
        }
    }

    async fn open_inner(
        client: &Rc<Client>,
        path: &str,
        index: usize,
        counts_deliveries: bool,
    ) -> anyhow::Result<Rc<Self>> {
        let settings = &client.settings;
        let mut stream = connect(settings.target.addr, settings.source_for(index)).await?;
        let mut buf = Vec::with_capacity(4096);
        let mut path_and_query = settings.target.path(path);
        let signalr = matches!(settings.wire, Wire::SignalR(_));
        if signalr && settings.negotiate {
            let request = http::negotiate_request(&settings.target.host, &path_and_query);
            let (res, _) = stream.write_all(request).await;
            res.context("sending negotiate")?;
            let head = read_head(&mut stream, &mut buf).await?;
            let body_len = head.content_length.unwrap_or(0);
            while buf.len() < head.head_len + body_len {
                read_more(&mut stream, &mut buf).await?;
            }
            let body = &buf[head.head_len..head.head_len + body_len];
            if head.status != 200 {
                bail!(
                    "negotiate answered {}: {}",
                    head.status,
                    String::from_utf8_lossy(body).trim()
                );
            }
            let negotiated: Negotiated =
                serde_json::from_slice(body).context("reading the negotiate answer")?;
            if let Some(error) = negotiated.error {
                bail!("negotiate refused: {error}");
            }
            let token = negotiated
                .connection_token
                .or(negotiated.connection_id)
                .ok_or_else(|| anyhow!("negotiate answer without a connection token"))?;
            buf.drain(..head.head_len + body_len);
            path_and_query = format!("{path_and_query}?id={token}");
        }
        let mut key_bytes = [0u8; 16];
        key_bytes[..8].copy_from_slice(&client.random().to_le_bytes());
        key_bytes[8..].copy_from_slice(&client.random().to_le_bytes());
        let key = ws::key_from(key_bytes);
        let request = ws::upgrade_request(&settings.target.host, &path_and_query, &key);
        let (res, _) = stream.write_all(request).await;
        res.context("sending the upgrade")?;
        let head = read_head(&mut stream, &mut buf).await?;
        if head.status != 101 {
            let body = String::from_utf8_lossy(&buf[head.head_len..]);
            bail!("upgrade answered {}: {}", head.status, body.trim());
        }
        if head.accept.as_deref() != Some(ws::accept_for(&key).as_str()) {
            bail!("upgrade answered a wrong Sec-WebSocket-Accept");
        }
        buf.drain(..head.head_len);

        let (handshake_tx, handshake_rx) = oneshot::channel();
        let fd = stream.as_raw_fd();
        let conn =
            Rc::new(Self {
                index,
                client: client.clone(),
                fd,
                out: RefCell::new(Vec::with_capacity(256)),
                writer: Cell::new(None),
                open: Cell::new(true),
                closing: Cell::new(false),
                counts_deliveries,
                // Pretend the last send happened at a random point of the last ping interval,
                // so connections opened together do not all ping in the same sweep.
                last_send_ns: Cell::new(now_ns().saturating_sub(
                    client.random() % crate::clock::ns(settings.ping_interval).max(1),
                )),
                next_id: Cell::new(0),
                pending: RefCell::new(HashMap::new()),
                delivery_waiter: RefCell::new(None),
                close_waiter: RefCell::new(None),
                close_error: RefCell::new(None),
                handshake: RefCell::new(Some(handshake_tx)),
                stamp_sink: RefCell::new(None),
            });
        let inbound = Inbound {
            buf,
            frag: Vec::new(),
            frag_opcode: None,
            handshake: signalr.then(Vec::new),
            records: match settings.wire {
                Wire::SignalR(protocol) => Some(Records::new(protocol, settings.max_message)),
                Wire::Raw => None,
            },
            max_message: settings.max_message,
        };
        let (read_half, write_half) = stream.into_split();
        monoio::spawn(writer(conn.clone(), write_half));
        if let Wire::SignalR(protocol) = settings.wire {
            conn.with_frame(protocol.opcode_for_handshake(), |out| {
                signalr::write_handshake(out, protocol);
            });
        } else if let Some(tx) = conn.handshake.borrow_mut().take() {
            let _ = tx.send(Ok(()));
        }
        monoio::spawn(reader(conn.clone(), read_half, inbound));
        match handshake_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => bail!("{error}"),
            Err(_) => bail!("connection closed during the handshake"),
        }
        client.register(&conn);
        Ok(conn)
    }

    /// Whether the connection is still up.
    pub fn is_open(&self) -> bool {
        self.open.get()
    }

    /// When something was last queued for sending (monotonic ns).
    pub fn last_send_ns(&self) -> u64 {
        self.last_send_ns.get()
    }

    /// The error the server gave when it closed the connection, if it gave one.
    pub fn close_error(&self) -> Option<String> {
        self.close_error.borrow().clone()
    }

    fn protocol(&self) -> Option<Protocol> {
        match self.client.settings.wire {
            Wire::SignalR(protocol) => Some(protocol),
            Wire::Raw => None,
        }
    }

    /// Builds a message in the thread's scratch buffer and queues it as one masked frame.
    fn with_frame(&self, opcode: u8, build: impl FnOnce(&mut Vec<u8>)) {
        if !self.open.get() {
            return;
        }
        let mask = self.client.random().to_le_bytes();
        self.client.with_scratch(|scratch| {
            build(scratch);
            let mut out = self.out.borrow_mut();
            ws::write_frame(
                &mut out,
                opcode,
                scratch,
                [mask[0], mask[1], mask[2], mask[3]],
            );
        });
        self.last_send_ns.set(now_ns());
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }

    fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// Queues a hub invocation (raw: its JSON text as a plain message) and returns its id,
    /// or `None` for a non-blocking one. Nothing waits for the completion: a string result
    /// carrying a stamp is recorded as a delivery when it arrives.
    pub fn send(&self, target: &str, args: &[Arg<'_>], blocking: bool) -> Option<u64> {
        let id = blocking.then(|| self.next_id());
        let id_text = id.map(|id| id.to_string());
        let call = match &id_text {
            Some(text) => Call::Blocking(text),
            None => Call::NonBlocking,
        };
        let protocol = self.protocol().unwrap_or(Protocol::Json);
        self.with_frame(protocol.opcode(), |out| {
            signalr::write_invocation(out, protocol, call, target, args);
        });
        id
    }

    /// Queues a plain text message (raw wire).
    pub fn send_text(&self, build: impl FnOnce(&mut Vec<u8>)) {
        self.with_frame(ws::OP_TEXT, build);
    }

    /// Invokes `target` and returns a receiver for its completion (cancelled if the
    /// connection closes first).
    pub fn invoke(&self, target: &str, args: &[Arg<'_>]) -> oneshot::Receiver<Completed> {
        self.call(target, args, false)
    }

    /// Starts a stream invocation; the receiver gets the completion with the item count.
    pub fn stream(&self, target: &str, args: &[Arg<'_>]) -> oneshot::Receiver<Completed> {
        self.call(target, args, true)
    }

    fn call(&self, target: &str, args: &[Arg<'_>], stream: bool) -> oneshot::Receiver<Completed> {
        let (tx, rx) = oneshot::channel();
        let Some(protocol) = self.protocol() else {
            return rx; // raw has no invocations: the sender is dropped, the caller sees Canceled
        };
        let id = self.next_id();
        self.pending
            .borrow_mut()
            .insert(id, Pending { done: tx, items: 0 });
        let id_text = id.to_string();
        let call = if stream {
            Call::Stream(&id_text)
        } else {
            Call::Blocking(&id_text)
        };
        self.with_frame(protocol.opcode(), |out| {
            signalr::write_invocation(out, protocol, call, target, args);
        });
        rx
    }

    /// A receiver for the next timed delivery on this connection (closed-loop pacing).
    pub fn next_delivery(&self) -> oneshot::Receiver<Stamp> {
        let (tx, rx) = oneshot::channel();
        *self.delivery_waiter.borrow_mut() = Some(tx);
        rx
    }

    /// A receiver that fires with the reason when the connection closes.
    pub fn closed(&self) -> oneshot::Receiver<String> {
        let (tx, rx) = oneshot::channel();
        *self.close_waiter.borrow_mut() = Some(tx);
        rx
    }

    /// Sends a keepalive: a hub Ping, or on the raw wire a WebSocket ping (or, with
    /// `--raw-keepalive text`, the bytes of a JSON hub Ping as a text message).
    pub fn send_ping(&self) {
        match (self.protocol(), self.client.settings.raw_keepalive) {
            (Some(protocol), _) => self.with_frame(protocol.opcode(), |out| {
                signalr::write_ping(out, protocol);
            }),
            (None, RawKeepalive::Text) => self.with_frame(ws::OP_TEXT, |out| {
                signalr::write_ping(out, Protocol::Json);
            }),
            (None, RawKeepalive::Ping) => self.with_frame(ws::OP_PING, |_| {}),
        }
    }

    /// Closes on purpose: a hub Close, a WebSocket close frame, then the socket is shut
    /// down once the writer has flushed. Not counted as a drop.
    pub fn close(&self) {
        if !self.open.get() || self.closing.get() {
            return;
        }
        self.closing.set(true);
        if let Some(protocol) = self.protocol() {
            self.with_frame(protocol.opcode(), |out| signalr::write_close(out, protocol));
        }
        self.with_frame(ws::OP_CLOSE, |out| {
            out.extend_from_slice(&1000u16.to_be_bytes())
        });
    }

    /// Drops the connection without any close message: with `reset`, a TCP reset
    /// (`SO_LINGER` 0, then the socket closes once the reader stops), otherwise a FIN in both
    /// directions. Not counted as a drop.
    pub fn abort(&self, reset: bool) {
        if !self.open.get() || self.closing.get() {
            return;
        }
        self.closing.set(true);
        if reset {
            crate::os::set_linger_zero(self.fd);
            // Ends the reader's read (it sees end-of-stream) without sending a FIN; the
            // socket's close then sends the reset.
            crate::os::shutdown_read(self.fd);
        } else {
            crate::os::shutdown_both(self.fd);
        }
    }

    /// From now on every timed message goes to `sink` (with its receive time) instead of
    /// the delivery counters.
    pub fn set_stamp_sink(&self, sink: StampSink) {
        *self.stamp_sink.borrow_mut() = Some(sink);
    }

    fn finish(&self, reason: String) {
        if !self.open.replace(false) {
            return;
        }
        let rec = &self.client.rec;
        if let Some(tx) = self.handshake.borrow_mut().take() {
            let _ = tx.send(Err(reason.clone()));
        } else if !self.closing.get() && self.client.running() {
            rec.add(Counter::Drops, 1);
            rec.error(|| format!("connection {} dropped: {reason}", self.index));
        }
        self.pending.borrow_mut().clear();
        self.delivery_waiter.borrow_mut().take();
        if let Some(tx) = self.close_waiter.borrow_mut().take() {
            let _ = tx.send(reason);
        }
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }

    fn on_record(&self, protocol: Protocol, record: &[u8]) {
        let rec = &self.client.rec;
        match signalr::parse_message(protocol, record) {
            Ok(Message::Invocation {
                first_arg: Scalar::Str(text),
                ..
            }) => self.on_timed(text),
            Ok(Message::Completion {
                invocation_id,
                outcome,
            }) => {
                let id = std::str::from_utf8(invocation_id)
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok());
                let pending = id.and_then(|id| self.pending.borrow_mut().remove(&id));
                if let Some(pending) = pending {
                    let (error, stamp) = match outcome {
                        Outcome::Error(error) => (Some(error), None),
                        Outcome::Result(Scalar::Str(text)) => (None, payload::parse(text)),
                        _ => (None, None),
                    };
                    let _ = pending.done.send(Completed {
                        error,
                        stamp,
                        items: pending.items,
                        at_ns: now_ns(),
                    });
                    return;
                }
                match outcome {
                    Outcome::Result(Scalar::Str(text)) => self.on_timed(text),
                    Outcome::Error(error) => rec.error(|| format!("invocation failed: {error}")),
                    _ => {}
                }
            }
            Ok(Message::StreamItem { invocation_id, .. }) => {
                rec.add(Counter::StreamItems, 1);
                let id = std::str::from_utf8(invocation_id)
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok());
                if let Some(id) = id
                    && let Some(pending) = self.pending.borrow_mut().get_mut(&id)
                {
                    pending.items += 1;
                }
            }
            Ok(Message::Close { error }) => {
                *self.close_error.borrow_mut() =
                    Some(error.unwrap_or_else(|| "Close without an error".into()));
            }
            Ok(_) => {}
            Err(error) => rec.error(|| format!("unreadable hub message: {error}")),
        }
    }

    /// A timed payload arrived (event argument, echo result, or raw message).
    fn on_timed(&self, text: &[u8]) {
        let now = now_ns();
        let rec = &self.client.rec;
        let Some(stamp) = payload::parse(text).or_else(|| payload::find(text)) else {
            rec.error(|| "a message without a timestamp".into());
            return;
        };
        if let Some(sink) = self.stamp_sink.borrow_mut().as_mut() {
            sink(stamp, now);
            return;
        }
        if !self.counts_deliveries {
            rec.add(Counter::PublisherEchoes, 1);
            return;
        }
        rec.record_delivery(
            now.saturating_sub(stamp.scheduled_ns),
            self.client.in_window(stamp.scheduled_ns),
        );
        if let Some(gate) = &self.client.gate {
            gate.bump();
        }
        if let Some(tx) = self.delivery_waiter.borrow_mut().take() {
            let _ = tx.send(stamp);
        }
    }
}

impl Protocol {
    /// The handshake request is JSON text even for messagepack.
    fn opcode_for_handshake(self) -> u8 {
        ws::OP_TEXT
    }
}

/// Starts a non-blocking connect from `source` (port chosen at connect time) and waits
/// until the socket is writable.
pub(crate) async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, None).context("creating a socket")?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        crate::os::set_bind_address_no_port(&socket).context("IP_BIND_ADDRESS_NO_PORT")?;
        socket
            .bind(&SocketAddr::new(ip, 0).into())
            .with_context(|| format!("binding to {ip}"))?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e).with_context(|| format!("connecting to {addr}")),
    }
    let stream = TcpStream::from_std(socket.into()).context("registering the socket")?;
    stream
        .writable(false)
        .await
        .context("waiting for connect")?;
    Ok(stream)
}

pub(crate) async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    if buf.len() == buf.capacity() {
        buf.reserve(4096);
    }
    let len = buf.len();
    let cap = buf.capacity();
    let owned = std::mem::take(buf);
    let (res, slice) = stream.read(owned.slice_mut(len..cap)).await;
    *buf = slice.into_inner();
    match res {
        Ok(0) => bail!("connection closed by the server"),
        Ok(_) => Ok(()),
        Err(e) => Err(e).context("reading"),
    }
}

pub(crate) async fn read_head(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> anyhow::Result<http::ResponseHead> {
    loop {
        if let Some(head) = http::parse_response(buf)? {
            return Ok(head);
        }
        if buf.len() > 64 * 1024 {
            bail!("response head over 64 KiB");
        }
        read_more(stream, buf).await?;
    }
}

async fn writer(conn: Rc<Conn>, mut half: OwnedWriteHalf<TcpStream>) {
    let mut spare = Vec::with_capacity(256);
    loop {
        poll_fn(|cx| {
            if !conn.out.borrow().is_empty() || !conn.open.get() {
                Poll::Ready(())
            } else {
                conn.writer.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
        if conn.out.borrow().is_empty() {
            break; // closed and flushed
        }
        std::mem::swap(&mut *conn.out.borrow_mut(), &mut spare);
        let (res, mut buf) = half.write_all(spare).await;
        buf.clear();
        if buf.capacity() > 1 << 20 {
            buf = Vec::with_capacity(256);
        }
        spare = buf;
        if let Err(error) = res {
            conn.finish(format!("write failed: {error}"));
            break;
        }
        if conn.closing.get() && conn.out.borrow().is_empty() {
            // Our close frame is out: stop sending; the reader sees the server's close.
            crate::os::shutdown_write(conn.fd);
        }
    }
}

/// The read buffer doubles up to this size while reads keep filling it.
const MAX_READ_BUFFER: usize = 64 * 1024;

/// What the reader keeps between reads.
struct Inbound {
    buf: Vec<u8>,
    frag: Vec<u8>,
    frag_opcode: Option<u8>,
    /// The SignalR handshake answer collected so far; `None` once it arrived (or for raw).
    handshake: Option<Vec<u8>>,
    records: Option<Records>,
    max_message: usize,
}

enum Flow {
    More,
    Closed(String),
}

async fn reader(conn: Rc<Conn>, mut half: OwnedReadHalf<TcpStream>, mut inbound: Inbound) {
    let reason = loop {
        match inbound.process(&conn) {
            Ok(Flow::More) => {}
            Ok(Flow::Closed(reason)) => break reason,
            Err(error) => {
                conn.client
                    .rec
                    .error(|| format!("connection {}: {error}", conn.index));
                break format!("{error}");
            }
        }
        if inbound.buf.len() == inbound.buf.capacity() {
            inbound.buf.reserve(4096);
        }
        let len = inbound.buf.len();
        let cap = inbound.buf.capacity();
        let owned = std::mem::take(&mut inbound.buf);
        let (res, slice) = half.read(owned.slice_mut(len..cap)).await;
        inbound.buf = slice.into_inner();
        match res {
            Ok(0) => break "the server closed the TCP connection".into(),
            // A read that filled the buffer suggests a backlog: read more at once next time
            // (idle connections keep their small buffer).
            Ok(n) if n == cap - len && cap < MAX_READ_BUFFER => inbound.buf.reserve(cap),
            Ok(_) => {}
            Err(error) => break format!("read failed: {error}"),
        }
    };
    let reason = match conn.close_error() {
        Some(error) => format!("{reason} (hub Close: {error})"),
        None => reason,
    };
    conn.finish(reason);
    // Both halves dropped: the socket closes.
    drop(half);
}

impl Inbound {
    /// Handles every complete frame in the buffer and keeps the incomplete rest.
    fn process(&mut self, conn: &Conn) -> anyhow::Result<Flow> {
        let mut at = 0;
        let flow = loop {
            let Some(head) = ws::parse_head(&self.buf[at..], self.max_message)? else {
                break Flow::More;
            };
            let total = head.total_len();
            if self.buf.len() - at < total {
                // Make room for the whole frame so the next reads complete it.
                self.buf.reserve(total - (self.buf.len() - at));
                break Flow::More;
            }
            let frame_start = at;
            at += total;
            if let Some(flow) = self.frame(conn, head, frame_start)? {
                break flow;
            }
        };
        if at > 0 {
            self.buf.drain(..at);
        }
        Ok(flow)
    }

    fn frame(
        &mut self,
        conn: &Conn,
        head: FrameHead,
        start: usize,
    ) -> anyhow::Result<Option<Flow>> {
        let range = start + head.head_len..start + head.total_len();
        if let Some(mask) = head.mask {
            ws::apply_mask(&mut self.buf[range.clone()], mask);
        }
        match head.opcode {
            ws::OP_PING => {
                let payload = self.buf[range].to_vec();
                conn.with_frame(ws::OP_PONG, |out| out.extend_from_slice(&payload));
            }
            ws::OP_PONG => {}
            ws::OP_CLOSE => {
                let code = ws::close_code(&self.buf[range.clone()]);
                let text = String::from_utf8_lossy(
                    self.buf.get(range.start + 2..range.end).unwrap_or(&[]),
                )
                .into_owned();
                return Ok(Some(Flow::Closed(match code {
                    Some(code) => format!("the server sent WebSocket close {code} {text}"),
                    None => "the server sent a WebSocket close".into(),
                })));
            }
            ws::OP_CONTINUATION => {
                let Some(opcode) = self.frag_opcode else {
                    bail!("continuation frame without a message to continue");
                };
                self.frag.extend_from_slice(&self.buf[range]);
                if self.frag.len() > self.max_message {
                    bail!("fragmented message over {} bytes", self.max_message);
                }
                if head.fin {
                    let message = std::mem::take(&mut self.frag);
                    self.frag_opcode = None;
                    let _ = opcode;
                    self.message(conn, &message)?;
                }
            }
            _ => {
                if self.frag_opcode.is_some() {
                    bail!("new data frame inside a fragmented message");
                }
                if head.fin {
                    let buf = std::mem::take(&mut self.buf);
                    let result = self.message(conn, &buf[range]);
                    self.buf = buf;
                    result?;
                } else {
                    self.frag_opcode = Some(head.opcode);
                    self.frag.extend_from_slice(&self.buf[range]);
                }
            }
        }
        Ok(None)
    }

    /// One whole WebSocket message.
    fn message(&mut self, conn: &Conn, data: &[u8]) -> anyhow::Result<()> {
        let mut data = data;
        if let Some(collected) = self.handshake.as_mut() {
            let Some(end) = memchr::memchr(signalr::RECORD_SEPARATOR, data) else {
                collected.extend_from_slice(data);
                if collected.len() > 64 * 1024 {
                    bail!("handshake answer over 64 KiB");
                }
                return Ok(());
            };
            collected.extend_from_slice(&data[..end]);
            data = &data[end + 1..];
            let answer: serde_json::Value = serde_json::from_slice(collected)
                .map_err(|e| anyhow!("unreadable handshake answer: {e}"))?;
            self.handshake = None;
            let outcome = match answer.get("error").and_then(|e| e.as_str()) {
                Some(error) => Err(format!("handshake refused: {error}")),
                None => Ok(()),
            };
            let failed = outcome.is_err();
            if let Some(tx) = conn.handshake.borrow_mut().take() {
                let _ = tx.send(outcome);
            }
            if failed {
                bail!("handshake refused");
            }
        }
        match (&mut self.records, conn.protocol()) {
            (Some(records), Some(protocol)) => {
                records.feed(data, |record| conn.on_record(protocol, record))?;
            }
            _ => {
                // A raw server's keepalive (`perf/floor --idle`) carries the bytes of a JSON
                // hub Ping, which a SignalR client drops too.
                if !data.is_empty() && data != signalr::JSON_PING {
                    conn.on_timed(data);
                }
            }
        }
        Ok(())
    }
}
