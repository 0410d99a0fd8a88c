//! The command connection: pipelined commands on one link, replies matched in order, a timeout
//! per command, and reconnection with capped backoff during which commands fail at once.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use monoio::io::{OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use tracing::{debug, info, warn};

use super::link::{self, Backoff, Doorbell};
use super::resp::{InFlight, ReplyReader, encode_command};
use super::{ClientOptions, RedisError, RedisUrl, Value};

/// Where a connection's link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// An attempt to connect is under way: commands are queued and sent once it succeeds
    /// (or fail with it).
    Connecting,
    /// Connected: commands go out at once.
    Up,
    /// Waiting out the backoff after a failure: commands fail at once with
    /// [`RedisError::Down`].
    Down,
}

/// Who waits for a reply: a caller, or nobody (a detached command, whose reply is read and
/// dropped).
type Waiter = Option<oneshot::Sender<Result<Value, RedisError>>>;

/// A pipelined command connection owned by one shard. Dropping it closes the link and stops
/// its task.
pub struct CommandConnection {
    shared: Rc<Shared>,
}

/// State shared by the handle, the callers' futures and the driver task.
struct Shared {
    url: RedisUrl,
    options: ClientOptions,
    state: Cell<LinkState>,
    /// Why the link last went down (the text of [`RedisError::Down`]).
    last_error: RefCell<String>,
    /// Encoded commands not yet written.
    outbound: RefCell<BytesMut>,
    /// One waiter per command in `outbound` or on the wire, in order.
    /// With when each was queued, for the latency of detached (backplane) commands.
    in_flight: RefCell<InFlight<(Waiter, quanta::Instant)>>,
    /// Commands in `outbound` (counted per write, for the batch-size histogram).
    outbound_commands: Cell<u64>,
    /// Wakes the driver: commands queued, a reconnect asked for, or the handle dropped.
    doorbell: Doorbell,
    /// Rung when the last command in flight was answered (or failed): wakes [`CommandConnection::drained`].
    drained: Doorbell,
    /// A command timed out: replace the link.
    replace_link: Cell<bool>,
    closed: Cell<bool>,
}

impl CommandConnection {
    /// Starts connecting to `url` (selecting its database) on a task of the current monoio
    /// runtime; commands sent meanwhile wait for the first attempt.
    ///
    /// # Panics
    /// Outside a monoio runtime (as `monoio::spawn` does).
    pub fn open(url: RedisUrl, options: ClientOptions) -> Self {
        let shared = Rc::new(Shared {
            url,
            options,
            state: Cell::new(LinkState::Connecting),
            last_error: RefCell::new(String::new()),
            outbound: RefCell::new(BytesMut::new()),
            in_flight: RefCell::new(InFlight::default()),
            outbound_commands: Cell::new(0),
            doorbell: Doorbell::default(),
            drained: Doorbell::default(),
            replace_link: Cell::new(false),
            closed: Cell::new(false),
        });
        monoio::spawn(drive(Rc::clone(&shared)));
        Self { shared }
    }

    /// Where the link is.
    pub fn state(&self) -> LinkState {
        self.shared.state.get()
    }

    /// Whether the link is connected.
    pub fn is_up(&self) -> bool {
        self.state() == LinkState::Up
    }

    /// Queues the command `args` (name first) now and returns its reply's future. Commands
    /// queued before the connection's task next runs are written together, so calling this
    /// several times before awaiting pipelines them. Dropping the future discards the reply
    /// (fire-and-forget).
    ///
    /// The future fails with [`RedisError::Down`] at once while the link is down,
    /// [`RedisError::Timeout`] after `command_timeout`, [`RedisError::Server`] for an error
    /// reply, or the link's error when it is lost before the reply.
    pub fn send(&self, args: &[&[u8]]) -> impl Future<Output = Result<Value, RedisError>> + use<> {
        let (sender, receiver) = oneshot::channel();
        let queued = self.shared.queue(args, Some(sender)).map(|()| receiver);
        let shared = Rc::clone(&self.shared);
        async move {
            let reply = queued?;
            let timeout = shared.options.command_timeout;
            match monoio::time::timeout(timeout, reply).await {
                Ok(Ok(result)) => result,
                // The driver dropped the waiter without answering: the link is gone.
                Ok(Err(oneshot::Canceled)) => {
                    Err(RedisError::Down(shared.last_error.borrow().clone()))
                }
                Err(_) => {
                    shared.replace_link.set(true);
                    shared.doorbell.ring();
                    Err(RedisError::Timeout(timeout))
                }
            }
        }
    }

    /// Queues the command `args` (name first) now, pipelined like [`Self::send`], and forgets
    /// it: its reply is read and dropped. No reply channel, no future and no timer: this is the
    /// cheap path for PUBLISHes nobody waits on. A command that never gets an answer still
    /// counts in [`Self::in_flight`] until the link is replaced.
    ///
    /// # Errors
    /// [`RedisError::Down`] while the link is down, [`RedisError::Closed`] after the handle was
    /// dropped.
    pub fn send_detached(&self, args: &[&[u8]]) -> Result<(), RedisError> {
        self.shared.queue(args, None)
    }

    /// Commands queued or on the wire, waiting for their replies.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.borrow().len()
    }

    /// Resolves once no command is queued or on the wire: every one sent before (detached ones
    /// included) was answered, or failed with the link. One waiter at a time.
    pub async fn drained(&self) {
        while self.in_flight() > 0 {
            self.shared.drained.wait().await;
        }
    }

    /// Sends the command `args` and waits for its reply (see [`Self::send`]).
    ///
    /// # Errors
    /// See [`Self::send`].
    pub async fn command(&self, args: &[&[u8]]) -> Result<Value, RedisError> {
        self.send(args).await
    }

    /// `GET key`: the value, or `None` for a missing key.
    ///
    /// # Errors
    /// See [`Self::send`]; [`RedisError::UnexpectedReply`] when the key holds a non-string.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>, RedisError> {
        match self.command(&[b"GET", key]).await? {
            Value::Data(data) => Ok(Some(data)),
            Value::Nil => Ok(None),
            _ => Err(RedisError::UnexpectedReply { command: "GET" }),
        }
    }

    /// `PUBLISH channel payload`: how many subscribers received it.
    ///
    /// # Errors
    /// See [`Self::send`].
    pub async fn publish(&self, channel: &[u8], payload: &[u8]) -> Result<i64, RedisError> {
        match self.command(&[b"PUBLISH", channel, payload]).await? {
            Value::Int(receivers) => Ok(receivers),
            _ => Err(RedisError::UnexpectedReply { command: "PUBLISH" }),
        }
    }
}

impl fmt::Debug for CommandConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandConnection")
            .field("url", &self.shared.url)
            .field("state", &self.shared.state.get())
            .field("in_flight", &self.shared.in_flight.borrow().len())
            .finish_non_exhaustive()
    }
}

impl Drop for CommandConnection {
    fn drop(&mut self) {
        self.shared.closed.set(true);
        self.shared.doorbell.ring();
    }
}

impl Shared {
    /// Encodes `args` behind the queued commands and registers their caller.
    fn queue(&self, args: &[&[u8]], waiter: Waiter) -> Result<(), RedisError> {
        if self.closed.get() {
            return Err(RedisError::Closed);
        }
        if self.state.get() == LinkState::Down {
            return Err(RedisError::Down(self.last_error.borrow().clone()));
        }
        encode_command(&mut self.outbound.borrow_mut(), args)?;
        self.in_flight
            .borrow_mut()
            .push((waiter, quanta::Instant::now()));
        self.outbound_commands.set(self.outbound_commands.get() + 1);
        self.doorbell.ring();
        Ok(())
    }

    /// The link is gone: every waiting caller gets `error`, queued bytes are dropped.
    fn fail_all(&self, error: &RedisError) {
        self.outbound.borrow_mut().clear();
        self.outbound_commands.set(0);
        let waiters: Vec<Waiter> = self
            .in_flight
            .borrow_mut()
            .drain()
            .map(|(w, _)| w)
            .collect();
        for waiter in waiters.into_iter().flatten() {
            let _ = waiter.send(Err(error.clone()));
        }
        self.drained.ring();
    }
}

/// The connection's task: connect, serve the link until it fails, wait out the backoff, again.
async fn drive(shared: Rc<Shared>) {
    let options = &shared.options;
    let mut backoff = Backoff::new(options.backoff_min, options.backoff_max);
    let mut was_up = false;
    while !shared.closed.get() {
        shared.state.set(LinkState::Connecting);
        let error = match link::open(&shared.url, options, true).await {
            Ok((stream, reader)) => {
                backoff.reset();
                shared.replace_link.set(false);
                shared.state.set(LinkState::Up);
                if was_up {
                    info!(redis = %shared.url, "Redis command connection re-established");
                }
                was_up = true;
                serve(&shared, stream, reader).await
            }
            Err(error) => error,
        };
        shared.state.set(LinkState::Down);
        *shared.last_error.borrow_mut() = error.to_string();
        shared.fail_all(&error);
        if shared.closed.get() {
            break;
        }
        let delay = backoff.next_delay();
        if was_up {
            warn!(redis = %shared.url, %error, ?delay, "Redis command connection lost; reconnecting");
            was_up = false;
        } else {
            debug!(redis = %shared.url, %error, ?delay, "Redis command connection attempt failed");
        }
        if !link::back_off(delay, &shared.doorbell, &shared.closed).await {
            return;
        }
    }
}

/// Runs one link until it fails; returns why.
async fn serve(shared: &Shared, stream: TcpStream, mut reader: ReplyReader) -> RedisError {
    let (mut read_half, mut write_half) = stream.into_split();
    let result = monoio::select! {
        result = read_replies(shared, &mut read_half, &mut reader) => result,
        result = write_commands(shared, &mut write_half) => result,
    };
    match result {
        Err(error) => error,
        Ok(never) => match never {},
    }
}

/// Hands each reply to the oldest waiting caller.
async fn read_replies(
    shared: &Shared,
    read_half: &mut OwnedReadHalf<TcpStream>,
    reader: &mut ReplyReader,
) -> Result<Infallible, RedisError> {
    loop {
        while let Some(reply) = reader.next_frame()? {
            let ((waiter, queued), reply) = shared.in_flight.borrow_mut().complete(reply)?;
            // A caller that gave up (timeout, dropped future) no longer listens; a detached
            // command (a backplane PUBLISH) has nobody, and its latency is counted.
            match waiter {
                Some(waiter) => {
                    let _ = waiter.send(reply.into_result());
                }
                None => crate::stats::local(|s| s.backplane_published(queued.elapsed())),
            }
        }
        if shared.in_flight.borrow().len() == 0 {
            shared.drained.ring();
        }
        link::read_more(read_half, reader).await?;
    }
}

/// Writes whatever is queued, all of it in one write.
async fn write_commands(
    shared: &Shared,
    write_half: &mut OwnedWriteHalf<TcpStream>,
) -> Result<Infallible, RedisError> {
    loop {
        if shared.closed.get() {
            return Err(RedisError::Closed);
        }
        if shared.replace_link.get() {
            return Err(RedisError::Timeout(shared.options.command_timeout));
        }
        let queued = shared.outbound.borrow_mut().split().freeze();
        if queued.is_empty() {
            shared.doorbell.wait().await;
        } else {
            let commands = shared.outbound_commands.replace(0);
            crate::stats::local(|s| s.backplane_batch(commands));
            link::write_all(write_half, queued).await?;
        }
    }
}
