//! Messages between shards: one lock-free MPSC queue per shard (any shard sends, only the owner
//! receives), woken through monoio's cross-thread waker.
//!
//! It carries three things: a WebSocket that presented a token issued by another shard is
//! handed to that shard, so a connection's state always lives where it was negotiated; a
//! published message for the shard's recipients; and a management request (REST group and
//! connection operations, existence checks) answered through a oneshot channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};

use super::ShardId;
use crate::hub::actions::Target;
use crate::hub::broadcast::PreparedMessage;
use crate::hub::endpoint::Manage;
use crate::protocol::http::RequestHead;

/// A connection moving to its home shard, between its request head and the 101.
#[derive(Debug)]
pub struct Handoff {
    /// The socket (no I/O in flight).
    pub stream: std::net::TcpStream,
    /// The peer address.
    pub peer: SocketAddr,
    /// Its place in its address's count, which the home shard holds from now on.
    pub ip: Option<crate::transport::per_ip::IpSlot>,
    /// The upgrade request, already parsed.
    pub head: RequestHead,
    /// Bytes that arrived after the request head.
    pub input: BytesMut,
}

/// A message for recipients on other shards: encoded once, shared by reference.
#[derive(Debug)]
pub struct Envelope {
    /// The hub.
    pub hub: String,
    /// Who on that hub.
    pub target: Target,
    /// Connection ids among the recipients that must not get it (REST `excluded`).
    pub excluded: Vec<String>,
    /// The frames, one per protocol.
    pub message: Arc<PreparedMessage>,
}

/// A management operation for one shard's sessions (REST group and connection operations),
/// with where to answer whether it found (or changed) anything there.
#[derive(Debug)]
pub struct ManageRequest {
    /// The hub.
    pub hub: String,
    /// What to do.
    pub op: Manage,
    /// Receives what the shard made of it (a matching connection, group or user found).
    pub reply: futures_channel::oneshot::Sender<crate::hub::endpoint::Managed>,
}

/// What one shard can send another.
#[derive(Debug)]
pub enum ShardMessage {
    /// Serve this connection here (boxed: the queue stays small and so does a send error).
    Adopt(Box<Handoff>),
    /// Deliver to this shard's recipients.
    Publish(Arc<Envelope>),
    /// Deliver here and hand to every other shard: this shard owns the message's target
    /// (publishes from outside a connection are ordered through their target's owner).
    FanOut(Arc<Envelope>),
    /// A key's new state: keep it (if newest) and tell the key's connections.
    KeyState(Arc<super::key_states::KeyStateUpdate>),
    /// Run a management operation on this shard's sessions and answer.
    Manage(Box<ManageRequest>),
    /// A stream chunk this shard orders (it owns the key): deliver here and hand to every
    /// other shard.
    StreamFanOut(Arc<crate::hub::streams::StreamChunk>),
    /// A stream chunk for this shard's backlog and subscribers.
    StreamChunk(Arc<crate::hub::streams::StreamChunk>),
    /// New hub definitions and key store (SIGHUP), for new connections from now on.
    Reload(Arc<Reload>),
}

/// What a reload hands every shard ([`crate::server::ServerHandle::reload`]).
#[derive(Debug)]
pub struct Reload {
    /// The hub definitions (the same hubs, [`crate::hub::reconcile`]d with the running ones).
    pub hubs: Arc<[crate::hub::HubDefinition]>,
    /// The reloaded file key store (`None` with the Redis store, whose cache is just emptied).
    pub keys: Option<Arc<crate::auth::keys::KeyStore>>,
}

/// Senders to every shard's inbox, indexed by shard.
#[derive(Debug, Clone)]
pub struct Peers {
    senders: Arc<[UnboundedSender<ShardMessage>]>,
    /// Orders per-key state updates across shards (see [`super::key_states`]).
    sequence: Arc<AtomicU64>,
}

/// A shard's receiving end.
#[derive(Debug)]
pub struct Inbox {
    /// The queue's receiver.
    pub receiver: UnboundedReceiver<ShardMessage>,
}

impl Peers {
    /// Creates the inboxes of `count` shards.
    pub fn create(count: usize) -> (Self, Vec<Inbox>) {
        let (senders, inboxes): (Vec<_>, Vec<_>) = (0..count)
            .map(|_| {
                let (sender, receiver) = unbounded();
                (sender, Inbox { receiver })
            })
            .unzip();
        (
            Self {
                senders: senders.into(),
                sequence: Arc::new(AtomicU64::new(1)),
            },
            inboxes,
        )
    }

    /// The next number in the process-wide order of state updates.
    pub fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    /// How many shards there are.
    pub fn shards(&self) -> usize {
        self.senders.len()
    }

    /// Sends a message made by `make` to every shard but `except` (stopped shards are skipped).
    pub fn send_to_others(&self, except: ShardId, make: impl Fn() -> ShardMessage) {
        for (index, sender) in self.senders.iter().enumerate() {
            if index != usize::from(except.0) {
                let _ = sender.unbounded_send(make());
            }
        }
    }

    /// Sends `message` to `shard`; gives it back if that shard has stopped.
    ///
    /// # Errors
    /// The message, when the shard's inbox is closed.
    pub fn send(&self, shard: ShardId, message: ShardMessage) -> Result<(), ShardMessage> {
        match self.senders.get(usize::from(shard.0)) {
            Some(sender) => sender.unbounded_send(message).map_err(|e| e.into_inner()),
            None => Err(message),
        }
    }
}
