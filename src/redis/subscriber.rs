//! The subscriber connection: the channels its owner wants, `SUBSCRIBE`d on one link, messages
//! handed to a callback, and after a lost link a reconnect (capped backoff) that subscribes
//! them all again.
//!
//! Redis keeps no messages for a subscriber that is away, so every [`SubscriberEvent::Up`]
//! after the first means some may have been missed: an owner that caches what the messages
//! invalidate flushes its cache then.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fmt;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use monoio::io::{OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use tracing::{debug, info, warn};

use super::link::{self, Backoff, Doorbell};
use super::resp::{Push, ReplyReader, encode_command};
use super::{ClientOptions, RedisError, RedisUrl};

/// What a [`Subscriber`] tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriberEvent {
    /// A message published on a subscribed channel.
    Message {
        /// The channel.
        channel: Bytes,
        /// The payload, binary-safe.
        payload: Bytes,
    },
    /// Every wanted channel is subscribed on a fresh link. After the first time, messages
    /// published while the link was down were lost.
    Up,
    /// The link was lost; messages published until the next [`Self::Up`] are lost.
    Down,
}

/// The callback that receives a subscriber's events, on the shard's thread.
type Handler = Box<dyn Fn(SubscriberEvent)>;

/// A pub/sub connection owned by one shard. Dropping it closes the link and stops its task.
pub struct Subscriber {
    shared: Rc<Shared>,
}

struct Shared {
    url: RedisUrl,
    options: ClientOptions,
    /// The channels the owner wants; subscribed again on every new link.
    wanted: RefCell<BTreeSet<Bytes>>,
    /// Whether a logged-in link exists (commands written now reach it).
    linked: Cell<bool>,
    /// Whether every wanted channel is confirmed on the current link.
    up: Cell<bool>,
    /// How many times [`SubscriberEvent::Up`] was raised.
    ups: Cell<u64>,
    /// Encoded `SUBSCRIBE`/`UNSUBSCRIBE` commands not yet written.
    outbound: RefCell<BytesMut>,
    doorbell: Doorbell,
    closed: Cell<bool>,
    handler: Handler,
    /// Callers waiting for a channel's SUBSCRIBE to be confirmed.
    waiters: RefCell<Vec<(Bytes, oneshot::Sender<()>)>>,
    /// When the current link last delivered anything (a message, a confirmation, a pong).
    last_heard: Cell<std::time::Instant>,
}

impl Subscriber {
    /// Starts a subscriber to `channels` on a task of the current monoio runtime; `handler`
    /// receives every [`SubscriberEvent`]. The URL's database is ignored (pub/sub spans them).
    ///
    /// # Panics
    /// Outside a monoio runtime (as `monoio::spawn` does).
    pub fn open(
        url: RedisUrl,
        options: ClientOptions,
        channels: impl IntoIterator<Item = Bytes>,
        handler: impl Fn(SubscriberEvent) + 'static,
    ) -> Self {
        let shared = Rc::new(Shared {
            url,
            options,
            wanted: RefCell::new(channels.into_iter().collect()),
            linked: Cell::new(false),
            up: Cell::new(false),
            ups: Cell::new(0),
            outbound: RefCell::new(BytesMut::new()),
            doorbell: Doorbell::default(),
            closed: Cell::new(false),
            waiters: RefCell::new(Vec::new()),
            last_heard: Cell::new(std::time::Instant::now()),
            handler: Box::new(handler),
        });
        monoio::spawn(drive(Rc::clone(&shared)));
        Self { shared }
    }

    /// Whether every wanted channel is subscribed on a live link.
    pub fn is_up(&self) -> bool {
        self.shared.up.get()
    }

    /// How many times the subscriptions were established (the first connect counts): a value
    /// above one means reconnects happened.
    pub fn ups(&self) -> u64 {
        self.shared.ups.get()
    }

    /// Adds `channels` (ones already wanted are ignored); subscribed now if the link is up,
    /// otherwise on the next connect.
    pub fn subscribe(&self, channels: &[Bytes]) {
        let added: Vec<&[u8]> = {
            let mut wanted = self.shared.wanted.borrow_mut();
            channels
                .iter()
                .filter(|channel| wanted.insert(Bytes::clone(channel)))
                .map(|channel| &channel[..])
                .collect()
        };
        self.shared.send(b"SUBSCRIBE", &added);
    }

    /// Subscribes to `channel` and returns a receiver that completes once Redis confirms the
    /// subscription (from then on every message published to it is delivered), or `None`
    /// when it was already wanted. The receiver fails (`Canceled`) if the link is lost first;
    /// the channel is then subscribed again on the next link, unconfirmed.
    pub fn subscribe_confirmed(&self, channel: Bytes) -> Option<oneshot::Receiver<()>> {
        if self.shared.wanted.borrow().contains(&channel) {
            return None;
        }
        let (sender, receiver) = oneshot::channel();
        self.shared
            .waiters
            .borrow_mut()
            .push((Bytes::clone(&channel), sender));
        self.subscribe(&[channel]);
        Some(receiver)
    }

    /// Removes `channels` (ones not wanted are ignored); no message of theirs is delivered
    /// from now on.
    pub fn unsubscribe(&self, channels: &[Bytes]) {
        let removed: Vec<&[u8]> = {
            let mut wanted = self.shared.wanted.borrow_mut();
            channels
                .iter()
                .filter(|channel| wanted.remove(&channel[..]))
                .map(|channel| &channel[..])
                .collect()
        };
        self.shared.send(b"UNSUBSCRIBE", &removed);
    }
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("url", &self.shared.url)
            .field("channels", &self.shared.wanted.borrow().len())
            .field("up", &self.shared.up.get())
            .field("ups", &self.shared.ups.get())
            .finish_non_exhaustive()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.shared.closed.set(true);
        self.shared.doorbell.ring();
    }
}

impl Shared {
    /// Queues `command channels…` when a link exists (a new link subscribes `wanted` itself).
    fn send(&self, command: &[u8], channels: &[&[u8]]) {
        if channels.is_empty() || !self.linked.get() {
            return;
        }
        let mut args = Vec::with_capacity(channels.len() + 1);
        args.push(command);
        args.extend_from_slice(channels);
        // Encoding bulk strings cannot fail; if it ever did, the next connect catches up.
        if encode_command(&mut self.outbound.borrow_mut(), &args).is_ok() {
            self.doorbell.ring();
        }
    }

    fn emit(&self, event: SubscriberEvent) {
        (self.handler)(event);
    }
}

/// The subscriber's task: connect, subscribe everything, deliver until the link fails, wait
/// out the backoff, again.
async fn drive(shared: Rc<Shared>) {
    let options = &shared.options;
    let mut backoff = Backoff::new(options.backoff_min, options.backoff_max);
    while !shared.closed.get() {
        let error = match link::open(&shared.url, options, false).await {
            Ok((stream, reader)) => {
                backoff.reset();
                serve(&shared, stream, reader).await
            }
            Err(error) => error,
        };
        shared.linked.set(false);
        shared.outbound.borrow_mut().clear();
        // Nobody waits for a confirmation that cannot come on this link.
        shared.waiters.borrow_mut().clear();
        if shared.closed.get() {
            break;
        }
        let delay = backoff.next_delay();
        if shared.up.replace(false) {
            warn!(redis = %shared.url, %error, ?delay, "Redis subscriber lost; reconnecting");
            shared.emit(SubscriberEvent::Down);
        } else {
            debug!(redis = %shared.url, %error, ?delay, "Redis subscriber attempt failed");
        }
        if !link::back_off(delay, &shared.doorbell, &shared.closed).await {
            return;
        }
    }
}

/// Subscribes every wanted channel on a fresh link, then runs it until it fails.
async fn serve(shared: &Shared, stream: TcpStream, mut reader: ReplyReader) -> RedisError {
    let mut confirming: BTreeSet<Bytes> = {
        let wanted = shared.wanted.borrow();
        let mut outbound = shared.outbound.borrow_mut();
        outbound.clear();
        if !wanted.is_empty() {
            let mut args: Vec<&[u8]> = Vec::with_capacity(wanted.len() + 1);
            args.push(b"SUBSCRIBE");
            args.extend(wanted.iter().map(|channel| &channel[..]));
            if let Err(error) = encode_command(&mut outbound, &args) {
                return error;
            }
        }
        wanted.clone()
    };
    shared.linked.set(true);
    if confirming.is_empty() {
        mark_up(shared);
    }
    let (mut read_half, mut write_half) = stream.into_split();
    shared.last_heard.set(std::time::Instant::now());
    let result = monoio::select! {
        result = read_pushes(shared, &mut read_half, &mut reader, &mut confirming) => result,
        result = write_commands(shared, &mut write_half) => result,
        result = keep_alive(shared) => result,
    };
    match result {
        Err(error) => error,
        Ok(never) => match never {},
    }
}

fn mark_up(shared: &Shared) {
    shared.up.set(true);
    shared.ups.set(shared.ups.get() + 1);
    if shared.ups.get() > 1 {
        info!(redis = %shared.url, "Redis subscriber re-established");
    }
    shared.emit(SubscriberEvent::Up);
}

/// Delivers messages; the link is up once every channel of its first `SUBSCRIBE` (in
/// `confirming`) is confirmed.
async fn read_pushes(
    shared: &Shared,
    read_half: &mut OwnedReadHalf<TcpStream>,
    reader: &mut ReplyReader,
    confirming: &mut BTreeSet<Bytes>,
) -> Result<Infallible, RedisError> {
    loop {
        while let Some(reply) = reader.next_frame()? {
            shared.last_heard.set(std::time::Instant::now());
            match Push::from_reply(reply)? {
                Push::Message { channel, payload } => {
                    // Between an UNSUBSCRIBE and its confirmation messages still arrive.
                    let wanted = shared.wanted.borrow().contains(&channel);
                    if wanted {
                        shared.emit(SubscriberEvent::Message { channel, payload });
                    }
                }
                Push::Subscribed(channel) => {
                    let confirmed: Vec<_> = {
                        let mut waiters = shared.waiters.borrow_mut();
                        let (done, rest) = std::mem::take(&mut *waiters)
                            .into_iter()
                            .partition(|(wanted, _)| *wanted == channel);
                        *waiters = rest;
                        done
                    };
                    for (_, waiter) in confirmed {
                        let _ = waiter.send(());
                    }
                    if confirming.remove(&channel) && confirming.is_empty() {
                        mark_up(shared);
                    }
                }
                Push::Unsubscribed(_) | Push::Other => {}
            }
        }
        link::read_more(read_half, reader).await?;
    }
}

/// A subscriber only listens, so a link that died without a FIN or RST (a partition, a host
/// gone, a frozen server) would look idle forever: it PINGs every `keepalive` (Redis answers a
/// PING on a subscribed link) and gives the link up when nothing at all was heard for three.
async fn keep_alive(shared: &Shared) -> Result<Infallible, RedisError> {
    let every = shared.options.keepalive;
    loop {
        monoio::time::sleep(every).await;
        let silent = shared.last_heard.get().elapsed();
        if silent > every * 3 {
            return Err(RedisError::Timeout(silent));
        }
        if encode_command(&mut shared.outbound.borrow_mut(), &[b"PING"]).is_ok() {
            shared.doorbell.ring();
        }
    }
}

/// Writes queued `SUBSCRIBE`/`UNSUBSCRIBE` commands.
async fn write_commands(
    shared: &Shared,
    write_half: &mut OwnedWriteHalf<TcpStream>,
) -> Result<Infallible, RedisError> {
    loop {
        if shared.closed.get() {
            return Err(RedisError::Closed);
        }
        let queued = shared.outbound.borrow_mut().split().freeze();
        if queued.is_empty() {
            shared.doorbell.wait().await;
        } else {
            link::write_all(write_half, queued).await?;
        }
    }
}
