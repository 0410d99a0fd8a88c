//! The WebSocket connection loop: reads frames, runs the endpoint's logic, answers pings,
//! keeps idle peers honest, and performs the close handshake.
//!
//! The protocol decisions are made by [`MessageReader`] (sans-IO); this file only moves bytes
//! and time. An endpoint plugs in through [`WebSocketApp`], which sees whole data messages and
//! queues its answers in the [`Outbox`].

use std::future::Future;
use std::os::fd::AsRawFd;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use monoio::io::AsyncWriteRent;
use monoio::net::TcpStream;
use quanta::Instant;

use super::ConnectionEnd;
use super::deadline::{TimedOut, within};
use super::outbox::Outbox;
use super::read_buffer::{ReadBuffer, ReadScratch};
use crate::config::WebSocketConfig;
use crate::protocol::websocket::{CloseCode, Message, MessageReader, OpCode, ReadEvent};
use crate::shard::connections::{ConnectionHandle, Signal};
use crate::shard::timers::Timers;

/// A complete data message from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataMessage {
    /// A text message (valid UTF-8).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
}

/// The endpoint asks to close the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppClose {
    /// The close code sent to the peer.
    pub code: CloseCode,
    /// The reason sent to the peer (cut to 123 bytes).
    pub reason: String,
}

/// What runs on a WebSocket route.
pub trait WebSocketApp {
    /// A data message arrived at `now`; answers go into `outbox`.
    ///
    /// # Errors
    /// [`AppClose`] to close the connection with that code (after what is in the outbox).
    fn on_message(
        &mut self,
        message: DataMessage,
        outbox: &mut Outbox,
        now: Instant,
    ) -> Result<(), AppClose>;

    /// The WebSocket is open; queue what must be sent first (e.g. a resend after reconnect).
    fn on_open(&mut self, outbox: &mut Outbox) {
        let _ = outbox;
    }

    /// The next time the endpoint wants [`Self::on_deadline`] called, if any.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// The time returned by [`Self::deadline`] has come.
    ///
    /// # Errors
    /// [`AppClose`] to close the connection.
    fn on_deadline(&mut self, now: Instant, outbox: &mut Outbox) -> Result<(), AppClose> {
        let _ = (now, outbox);
        Ok(())
    }

    /// Everything queued has been written; the endpoint may queue more (e.g. the next stream
    /// items). Queue a bounded amount per call: the loop writes it and calls again.
    ///
    /// # Errors
    /// [`AppClose`] to close the connection.
    fn on_drained(&mut self, outbox: &mut Outbox) -> Result<(), AppClose> {
        let _ = outbox;
        Ok(())
    }

    /// Messages were queued for the connection from elsewhere ([`Signal::Outbound`]).
    ///
    /// # Errors
    /// [`AppClose`] to close the connection (e.g. a consumer too slow for its queue).
    fn on_wake(&mut self, outbox: &mut Outbox) -> Result<(), AppClose> {
        let _ = outbox;
        Ok(())
    }

    /// The server is stopping; the WebSocket close (1001) follows what is queued here.
    fn on_shutdown(&mut self, outbox: &mut Outbox) {
        let _ = outbox;
    }
}

/// Limits and timers of one WebSocket route.
#[derive(Debug, Clone, Copy)]
pub struct WebSocketLimits {
    /// Largest message accepted (all fragments together); bigger closes with 1009.
    pub max_message_size: usize,
    /// Nothing received for this long closes with 1001 (`None`: the endpoint decides, as
    /// SignalR does with its own client timeout).
    pub idle_timeout: Option<Duration>,
    /// A silent peer is pinged after this long.
    pub ping_interval: Duration,
    /// How long to wait for the peer's close frame after sending ours.
    pub close_timeout: Duration,
    /// A single flush that takes longer than this ends the connection (slow consumer).
    pub send_timeout: Duration,
}

impl WebSocketLimits {
    /// The limits configured for WebSocket routes, with a route-specific message size.
    pub fn from_config(config: &WebSocketConfig, max_message_size: usize) -> Self {
        Self {
            max_message_size,
            idle_timeout: Some(config.idle_timeout),
            ping_interval: config.ping_interval,
            close_timeout: config.close_timeout,
            send_timeout: config.send_timeout,
        }
    }
}

/// Our close frame is out; we wait for the peer's.
#[derive(Debug)]
struct Closing {
    deadline: Instant,
    end: ConnectionEnd,
    /// After a protocol error the byte stream can no longer be parsed; input is only drained.
    drain_only: bool,
}

/// Why the loop woke up.
enum Wake {
    Readable(std::io::Result<()>),
    Signal(Signal),
}

/// Runs the WebSocket protocol on `stream` until the connection ends, and says why it ended.
/// `input` holds bytes that arrived with the upgrade request (borrowed, so the connection's
/// future holds one buffer handle, not a moved-from copy beside it); reads go through the
/// shard's `scratch` ([`ReadBuffer::read_now`]).
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would store its arguments twice in every connection's future"
)]
pub fn serve<'a, A: WebSocketApp>(
    stream: &'a mut TcpStream,
    input: &'a mut ReadBuffer,
    app: &'a mut A,
    connection: &'a ConnectionHandle,
    limits: &'a WebSocketLimits,
    timers: &'a Timers,
    scratch: &'a ReadScratch,
) -> impl std::future::Future<Output = ConnectionEnd> + 'a {
    // An async block, not an async fn, so the arguments are not stored twice (see
    // `connection::run_hub`).
    async move {
        let mut reader = MessageReader::new(limits.max_message_size);
        let mut outbox = Outbox::new();
        let mut want = 0;
        let mut last_rx = timers.now();
        let mut ping_outstanding = false;
        let mut closing: Option<Closing> = None;
        let mut fin_sent = false;
        // The readiness poll stays armed across wake-ups that are not "readable".
        let mut socket = crate::sys::ArmedStream::new(stream);
        app.on_open(&mut outbox);
        let start_close = |outbox: &mut Outbox,
                           code: CloseCode,
                           reason: &str,
                           end: ConnectionEnd,
                           drain_only: bool| {
            outbox.push_close(code, reason);
            Some(Closing {
                deadline: timers.now() + limits.close_timeout,
                end,
                drain_only,
            })
        };

        loop {
            // 1. Everything already buffered.
            if closing.as_ref().is_some_and(|c| c.drain_only) {
                input.bytes_mut().clear();
            }
            while closing.as_ref().is_none_or(|c| !c.drain_only) {
                match reader.poll(input.bytes_mut()) {
                    Ok(ReadEvent::NeedAtLeast(n)) => {
                        want = n;
                        break;
                    }
                    Ok(ReadEvent::Message(message)) => match message {
                        Message::Text(_) | Message::Binary(_) | Message::Ping(_)
                            if closing.is_some() => {}
                        Message::Text(text) => {
                            closing = deliver(
                                app,
                                DataMessage::Text(text),
                                &mut outbox,
                                timers,
                                &start_close,
                            );
                        }
                        Message::Binary(data) => {
                            closing = deliver(
                                app,
                                DataMessage::Binary(data),
                                &mut outbox,
                                timers,
                                &start_close,
                            );
                        }
                        Message::Ping(payload) => outbox.push_frame(OpCode::Pong, payload),
                        Message::Pong(_) => {}
                        Message::Close(frame) => {
                            if let Some(closing) = closing {
                                // Our close was answered: the handshake is complete.
                                let _ = socket.stream().shutdown().await;
                                return closing.end;
                            }
                            match frame.code {
                                Some(code) => outbox.push_close(code, ""),
                                None => outbox.push_frame(OpCode::Close, Bytes::new()),
                            }
                            let stream = socket.stream();
                            let _ = flush(stream, &mut outbox, limits, connection, timers).await;
                            let _ = stream.shutdown().await;
                            return ConnectionEnd::PeerClosed(frame.code);
                        }
                    },
                    Err(error) => {
                        closing = match closing {
                            Some(mut c) => {
                                c.drain_only = true;
                                Some(c)
                            }
                            None => start_close(
                                &mut outbox,
                                error.close_code(),
                                &error.to_string(),
                                ConnectionEnd::Protocol(error),
                                true,
                            ),
                        };
                        input.bytes_mut().clear();
                        break;
                    }
                }
            }
            input.release_if_empty();

            // 2. Everything queued, and whatever the endpoint produces once the socket has taken it.
            loop {
                let stream = socket.stream();
                if let Err(end) = flush(stream, &mut outbox, limits, connection, timers).await {
                    return closing.map_or(end, |c| c.end);
                }
                if closing.is_some() {
                    break;
                }
                if let Err(close) = app.on_drained(&mut outbox) {
                    closing = app_close(close, &mut outbox, &start_close);
                }
                if outbox.is_empty() {
                    break;
                }
            }
            if closing.as_ref().is_some_and(|c| c.drain_only) && !fin_sent {
                // Failing the connection: our close frame is out, now send FIN and only wait for
                // the peer to finish, so unread bytes do not turn our close into a reset.
                let _ = socket.stream().shutdown().await;
                fin_sent = true;
            }

            // 3. A stop requested meanwhile (also while flushing) starts the close handshake.
            if closing.is_none() && connection.signal.is_shutdown() {
                app.on_shutdown(&mut outbox);
                closing = start_close(
                    &mut outbox,
                    CloseCode::GOING_AWAY,
                    "server shutting down",
                    ConnectionEnd::Shutdown,
                    false,
                );
                continue;
            }

            // 4. Wait for input or a shard signal (stop, or the deadline scheduled here).
            let idle_at = limits.idle_timeout.map(|idle| last_rx + idle);
            let deadline = match &closing {
                Some(c) => c.deadline,
                None => {
                    let ping_at = (!ping_outstanding).then(|| last_rx + limits.ping_interval);
                    [idle_at, ping_at, app.deadline()]
                        .into_iter()
                        .flatten()
                        .min()
                        .unwrap_or_else(|| timers.now() + limits.ping_interval)
                }
            };
            connection.arm(deadline, timers);
            // Nothing is queued and nothing is in flight: until the task wakes, a broadcast may
            // write its frame to the socket itself (`SessionSlot::write_through`), which keeps
            // the byte stream in order because the task writes nothing meanwhile.
            if closing.is_none() && !connection.signal.is_shutdown() {
                connection.set_idle_fd(Some(socket.stream().as_raw_fd()));
            }
            // Readiness first: a wait armed now gets its first poll before the stream is used
            // again. A signal leaves the wait armed (no io_uring cancel) for the next turn.
            let wake = std::future::poll_fn(|cx| {
                if let Poll::Ready(ready) = socket.poll_readable(cx) {
                    return Poll::Ready(Wake::Readable(ready));
                }
                std::pin::pin!(connection.signal.wait())
                    .poll(cx)
                    .map(Wake::Signal)
            })
            .await;
            connection.set_idle_fd(None);
            // A write-through that the socket did not take whole left the rest of its frame
            // with the endpoint: it goes out before anything this wake produces.
            if !matches!(wake, Wake::Signal(Signal::Outbound))
                && closing.is_none()
                && connection.signal.take_outbound()
                && let Err(close) = app.on_wake(&mut outbox)
            {
                closing = app_close(close, &mut outbox, &start_close);
            }
            match wake {
                Wake::Readable(Err(error)) => {
                    return closing.map_or(ConnectionEnd::Io(error), |c| c.end);
                }
                // Small reads land in the shard's buffer without awaiting; the rest of a large
                // frame is read straight into the connection's buffer (boxed: its state would
                // otherwise enlarge every idle connection's task).
                Wake::Readable(Ok(())) => {
                    let read = match input.read_now(socket.stream(), want, scratch) {
                        Some(read) => read,
                        None => Box::pin(input.read_direct(socket.stream(), want)).await,
                    };
                    match read {
                        Ok(0) => return closing.map_or(ConnectionEnd::PeerVanished, |c| c.end),
                        Ok(read) => {
                            crate::stats::local(|s| s.bytes_received(read as u64));
                            last_rx = timers.now();
                            ping_outstanding = false;
                        }
                        Err(error) => return closing.map_or(ConnectionEnd::Io(error), |c| c.end),
                    }
                }
                // Handled at the top of the next turn.
                Wake::Signal(Signal::Shutdown) => {}
                Wake::Signal(Signal::Outbound) => {
                    if closing.is_none()
                        && let Err(close) = app.on_wake(&mut outbox)
                    {
                        closing = app_close(close, &mut outbox, &start_close);
                    }
                }
                Wake::Signal(Signal::Timer) => {
                    let now = timers.now();
                    if let Some(c) = closing {
                        if now >= c.deadline {
                            return c.end;
                        }
                        closing = Some(c);
                    } else if idle_at.is_some_and(|at| now >= at) {
                        closing = start_close(
                            &mut outbox,
                            CloseCode::GOING_AWAY,
                            "idle timeout",
                            ConnectionEnd::IdleTimeout,
                            false,
                        );
                    } else {
                        if !ping_outstanding && now >= last_rx + limits.ping_interval {
                            outbox.push_frame(OpCode::Ping, Bytes::new());
                            ping_outstanding = true;
                        }
                        if app.deadline().is_some_and(|at| now >= at)
                            && let Err(close) = app.on_deadline(now, &mut outbox)
                        {
                            closing = app_close(close, &mut outbox, &start_close);
                        }
                    }
                }
            }
        }
    }
}

/// Hands a data message to the endpoint; an [`AppClose`] starts the close handshake.
fn deliver<A: WebSocketApp>(
    app: &mut A,
    message: DataMessage,
    outbox: &mut Outbox,
    timers: &Timers,
    start_close: &impl Fn(&mut Outbox, CloseCode, &str, ConnectionEnd, bool) -> Option<Closing>,
) -> Option<Closing> {
    let close = app.on_message(message, outbox, timers.now()).err()?;
    app_close(close, outbox, start_close)
}

/// Starts the close handshake an endpoint asked for.
fn app_close(
    close: AppClose,
    outbox: &mut Outbox,
    start_close: &impl Fn(&mut Outbox, CloseCode, &str, ConnectionEnd, bool) -> Option<Closing>,
) -> Option<Closing> {
    let end = ConnectionEnd::App {
        code: close.code,
        reason: close.reason.clone(),
    };
    start_close(outbox, close.code, &close.reason, end, false)
}

/// Writes the outbox, bounded by the send timeout.
async fn flush(
    stream: &mut TcpStream,
    outbox: &mut Outbox,
    limits: &WebSocketLimits,
    connection: &ConnectionHandle,
    timers: &Timers,
) -> Result<(), ConnectionEnd> {
    if outbox.is_empty() {
        return Ok(());
    }
    let deadline = timers.now() + limits.send_timeout;
    // Boxed: a write in progress is transient, and its state would otherwise enlarge every
    // idle connection's task by the size of the write future.
    connection.set_writing(Some(timers.now()));
    let written = Box::pin(within(outbox.flush(stream), deadline, connection, timers)).await;
    connection.set_writing(None);
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(ConnectionEnd::Io(error)),
        Err(TimedOut) => Err(ConnectionEnd::SendTimeout),
    }
}
