//! One shard's participant in ASP.NET Core's Redis backplane
//! (`shared/reference/signalr-protocol.md` §7).
//!
//! The participant has its own server name, a publisher connection (PUBLISHes are pipelined:
//! every send queued before the connection's task runs goes out in one write) and a
//! subscriber connection. It subscribes, per hub, to `:all`, `:internal:groups`, its own
//! `:internal:ack:{server}` and ringhub's `:ringhub:keystate` and `:ringhub:stream` from the
//! start, and to a `:group:`, `:user:` or `:connection:`
//! channel while it has a local member (first join subscribes, last leave unsubscribes).
//!
//! Sends are PUBLISHed with one complete framed serialization per protocol (`json` and
//! `messagepack`), so .NET servers and ringhub instances whose clients use either protocol can
//! forward the bytes as they are; a message that arrives without the protocol a local client
//! uses is transcoded rather than dropped. While Redis is down or slow, sends beyond
//! `backplane.publish_queue` are dropped and counted; client traffic never waits for Redis.
//! Redis pub/sub is at-most-once, as for ASP.NET: what is published during an outage is lost
//! (and counted here when it was ours).

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_channel::mpsc::{UnboundedReceiver, unbounded};
use futures_channel::oneshot;
use tracing::{debug, warn};

use crate::config::BackplaneConfig;
use crate::hub::actions::Target;
use crate::hub::broadcast::PreparedMessage;
use crate::protocol::backplane::{
    Ack, BackplaneInvocation, Channel, Channels, ClientResultRoute, GroupAction, GroupCommand,
    KeyStateMessage, ProtocolName, ReturnedCompletion, Serialization, ServerName,
    StreamChunkMessage,
};
use crate::protocol::signalr::{Completion, HubMessage, HubProtocol};
use crate::redis::{
    ClientOptions, CommandConnection, RedisUrl, Subscriber, SubscriberEvent, Value,
};
use crate::shard::inbox::Envelope;
use crate::stats::ShardStats;

/// One hub's channel names.
#[derive(Debug)]
struct HubChannels {
    /// ringhub's name for the hub.
    hub: String,
    channels: Channels,
}

/// The two Redis connections, opened inside the shard's runtime.
struct Links {
    publisher: CommandConnection,
    subscriber: Subscriber,
}

/// What the participant's event task does with an incoming message.
#[derive(Debug)]
pub enum Incoming {
    /// Deliver to this shard's recipients; a client result another server asks a connection
    /// for carries where the answer goes.
    Deliver(Envelope, Option<ClientResultRoute>),
    /// A key's new state (from any instance): keep it if newest and tell the key's connections.
    KeyState {
        /// ringhub's hub name.
        hub: String,
        /// The update.
        update: KeyStateMessage,
    },
    /// A streamed-response chunk (from any instance): deliver to this shard's subscribers.
    Stream {
        /// ringhub's hub name.
        hub: String,
        /// The chunk.
        chunk: StreamChunkMessage,
    },
    /// A group command for a connection that may be ours; answer with an ack if it is.
    GroupCommand {
        /// ringhub's hub name.
        hub: String,
        /// The command.
        command: GroupCommand,
    },
}

/// A shard's Redis backplane participant. `!Send`: it lives on its shard.
pub struct RedisBackplane {
    url: RedisUrl,
    server: ServerName,
    hubs: Vec<HubChannels>,
    publish_queue: usize,
    ack_timeout: Duration,
    links: OnceCell<Links>,
    /// Acks this participant waits for, by command id.
    acks: RefCell<HashMap<i32, oneshot::Sender<()>>>,
    next_ack: Cell<i32>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("url", &self.url)
            .field("server", &self.server.as_str())
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl RedisBackplane {
    /// A participant for `hubs` (`(ringhub name, Redis name)` pairs) with a fresh server name;
    /// nothing is connected until [`Self::start`].
    ///
    /// # Errors
    /// The URL does not parse, or the random source failed (for the server name).
    pub fn new(config: &BackplaneConfig, hubs: &[(String, String)]) -> Result<Self, String> {
        let url = RedisUrl::parse(&config.redis_url).map_err(|e| e.to_string())?;
        // Linux's hostname, as .NET's `Environment.MachineName` gives it.
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "ringhub".to_owned());
        let server = ServerName::generate(&hostname).map_err(|e| e.to_string())?;
        let prefix = (!config.channel_prefix.is_empty()).then_some(config.channel_prefix.as_str());
        Ok(Self {
            url,
            server,
            hubs: hubs
                .iter()
                .map(|(hub, redis_name)| HubChannels {
                    hub: hub.clone(),
                    channels: Channels::new(prefix, redis_name),
                })
                .collect(),
            publish_queue: config.publish_queue,
            ack_timeout: config.ack_timeout,
            links: OnceCell::new(),
            acks: RefCell::new(HashMap::new()),
            next_ack: Cell::new(0),
        })
    }

    /// This participant's server name (`{host}_{32 hex}`).
    pub fn server_name(&self) -> &str {
        self.server.as_str()
    }

    /// Opens the connections (inside the shard's runtime) and subscribes to every hub's
    /// `:all`, `:internal:groups`, own ack, key-state and stream channels. Returns the subscriber's events for the
    /// shard's backplane task.
    pub fn start(&self) -> UnboundedReceiver<SubscriberEvent> {
        let (sender, receiver) = unbounded();
        let mut channels = Vec::new();
        for hub in &self.hubs {
            channels.push(Bytes::from(hub.channels.all()));
            channels.push(Bytes::from(hub.channels.groups()));
            channels.push(Bytes::from(hub.channels.ack(self.server.as_str())));
            channels.push(Bytes::from(hub.channels.key_state()));
            channels.push(Bytes::from(hub.channels.stream()));
        }
        let options = ClientOptions::default();
        let subscriber = Subscriber::open(self.url.clone(), options.clone(), channels, move |e| {
            let _ = sender.unbounded_send(e);
        });
        let publisher = CommandConnection::open(self.url.clone(), options);
        let _ = self.links.set(Links {
            publisher,
            subscriber,
        });
        receiver
    }

    /// Whether both connections are up (the subscriber has every channel).
    pub fn is_up(&self) -> bool {
        self.links
            .get()
            .is_some_and(|l| l.subscriber.is_up() && l.publisher.is_up())
    }

    /// PUBLISHes (and other publisher commands) queued or on the wire, not yet answered.
    pub fn publishes_waiting(&self) -> usize {
        self.links.get().map_or(0, |l| l.publisher.in_flight())
    }

    /// Resolves once every publish queued so far was answered by Redis (or failed with the
    /// link).
    pub async fn publishes_drained(&self) {
        if let Some(links) = self.links.get() {
            links.publisher.drained().await;
        }
    }

    fn channels_of(&self, hub: &str) -> Option<&Channels> {
        self.hubs.iter().find(|h| h.hub == hub).map(|h| &h.channels)
    }

    /// Subscribes to the channel `name` makes from `hub`'s channels.
    pub fn subscribe(&self, hub: &str, name: impl Fn(&Channels) -> String) {
        if let (Some(channels), Some(links)) = (self.channels_of(hub), self.links.get()) {
            links.subscriber.subscribe(&[Bytes::from(name(channels))]);
        }
    }

    /// Subscribes like [`Self::subscribe`] and returns what completes once Redis confirms it.
    pub fn subscribe_confirmed(
        &self,
        hub: &str,
        name: impl Fn(&Channels) -> String,
    ) -> Option<oneshot::Receiver<()>> {
        let (channels, links) = (self.channels_of(hub)?, self.links.get()?);
        links
            .subscriber
            .subscribe_confirmed(Bytes::from(name(channels)))
    }

    /// Unsubscribes from the channel `name` makes from `hub`'s channels.
    pub fn unsubscribe(&self, hub: &str, name: impl Fn(&Channels) -> String) {
        if let (Some(channels), Some(links)) = (self.channels_of(hub), self.links.get()) {
            links.subscriber.unsubscribe(&[Bytes::from(name(channels))]);
        }
    }

    /// PUBLISHes `payload` to `channel` without waiting (pipelined with other sends);
    /// `false` when it was dropped (Redis down, or too many publishes waiting).
    fn publish_raw(&self, channel: &str, payload: Bytes) -> bool {
        let Some(links) = self.links.get() else {
            return false;
        };
        if !links.publisher.is_up() || links.publisher.in_flight() >= self.publish_queue {
            return false;
        }
        // Fire and forget: queued now, written with everything else queued before the
        // publisher's task runs; the reply is read and dropped.
        links
            .publisher
            .send_detached(&[b"PUBLISH", channel.as_bytes(), &payload])
            .is_ok()
    }

    /// PUBLISHes a send to its channel, one framed serialization per protocol.
    pub fn publish(&self, envelope: &Envelope) -> bool {
        let Some(channels) = self.channels_of(&envelope.hub) else {
            return false;
        };
        let channel = match &envelope.target {
            Target::All => channels.all(),
            Target::Group(group) => channels.group(group),
            Target::User(user) => channels.user(user),
            Target::Connection(id) => channels.connection(id),
        };
        let mut invocation = BackplaneInvocation::new(vec![
            Serialization::new(
                HubProtocol::Json,
                envelope.message.payload(HubProtocol::Json),
            ),
            Serialization::new(
                HubProtocol::MessagePack,
                envelope.message.payload(HubProtocol::MessagePack),
            ),
        ]);
        invocation.excluded_ids.clone_from(&envelope.excluded);
        let mut payload = BytesMut::new();
        invocation.encode(&mut payload);
        self.publish_raw(&channel, payload.freeze())
    }

    /// Asks whichever server owns `connection_id` to add it to (or remove it from) `group`,
    /// and waits up to `backplane.ack_timeout` for its ack; `true` when acked.
    pub async fn group_command(
        &self,
        hub: &str,
        action: GroupAction,
        group: &str,
        connection_id: &str,
    ) -> bool {
        let Some(channels) = self.channels_of(hub) else {
            return false;
        };
        let id = self.next_ack.get().wrapping_add(1);
        self.next_ack.set(id);
        let command = GroupCommand {
            id,
            server_name: self.server.as_str().to_owned(),
            action,
            group: group.to_owned(),
            connection_id: connection_id.to_owned(),
        };
        let mut payload = BytesMut::new();
        command.encode(&mut payload);
        let (sender, acked) = oneshot::channel();
        self.acks.borrow_mut().insert(id, sender);
        if !self.publish_raw(&channels.groups(), payload.freeze()) {
            self.acks.borrow_mut().remove(&id);
            return false;
        }
        let acked = matches!(
            monoio::time::timeout(self.ack_timeout, acked).await,
            Ok(Ok(()))
        );
        self.acks.borrow_mut().remove(&id);
        acked
    }

    /// PUBLISHes a key's new state to every instance (this one included); `false` when dropped.
    pub fn publish_key_state(&self, hub: &str, update: &KeyStateMessage) -> bool {
        let Some(channels) = self.channels_of(hub) else {
            return false;
        };
        let mut payload = BytesMut::new();
        update.encode(&mut payload);
        self.publish_raw(&channels.key_state(), payload.freeze())
    }

    /// PUBLISHes a streamed-response chunk to every instance (this one included, in the order
    /// published); `false` when dropped.
    pub fn publish_stream(&self, hub: &str, chunk: &StreamChunkMessage) -> bool {
        let Some(channels) = self.channels_of(hub) else {
            return false;
        };
        let mut payload = BytesMut::new();
        chunk.encode(&mut payload);
        self.publish_raw(&channels.stream(), payload.freeze())
    }

    /// Sends a client's answer to a client result back to the server that asked (on its return
    /// channel, resolved with the app prefix), in JSON: every .NET server has it.
    pub fn return_result(&self, return_channel: &str, completion: Completion) {
        let message = HubMessage::Completion(completion);
        let mut framed = BytesMut::new();
        if HubProtocol::Json.encode(&message, &mut framed).is_err() {
            return;
        }
        let returned = ReturnedCompletion {
            protocol: ProtocolName::from(HubProtocol::Json),
            completion: framed.freeze(),
        };
        let mut payload = BytesMut::new();
        returned.encode(&mut payload);
        let channel = match self.hubs.first() {
            Some(hub) => hub.channels.resolve_return(return_channel),
            None => return_channel.to_owned(),
        };
        self.publish_raw(&channel, payload.freeze());
    }

    /// Whether any server subscribes to the channel `name` makes (`PUBSUB NUMSUB`); `false`
    /// when Redis cannot say.
    pub async fn has_subscribers(&self, hub: &str, name: impl Fn(&Channels) -> String) -> bool {
        let (Some(channels), Some(links)) = (self.channels_of(hub), self.links.get()) else {
            return false;
        };
        let channel = name(channels);
        match links
            .publisher
            .command(&[b"PUBSUB", b"NUMSUB", channel.as_bytes()])
            .await
        {
            Ok(Value::Array(items)) => matches!(items.get(1), Some(Value::Int(n)) if *n > 0),
            _ => false,
        }
    }

    /// PUBLISHes a SignalR Close (with `reason` as its error) to one connection's channel.
    pub fn send_close(&self, hub: &str, connection_id: &str, reason: Option<String>) -> bool {
        let close = HubMessage::Close(crate::protocol::signalr::Close {
            error: reason,
            allow_reconnect: false,
        });
        let Ok(message) = PreparedMessage::new(&close) else {
            return false;
        };
        self.publish(&Envelope {
            hub: hub.to_owned(),
            target: Target::Connection(connection_id.to_owned()),
            excluded: Vec::new(),
            message: Arc::new(message),
        })
    }

    /// Acknowledges a group command this shard carried out.
    pub fn ack(&self, hub: &str, command: &GroupCommand) {
        if let Some(channels) = self.channels_of(hub) {
            let mut payload = BytesMut::new();
            Ack(command.id).encode(&mut payload);
            self.publish_raw(&channels.ack(&command.server_name), payload.freeze());
        }
    }

    /// Turns a subscriber message into work for the shard, or `None` for what is not for us
    /// (or does not decode, which is logged: a bad publisher never costs a client anything).
    pub fn incoming(
        &self,
        channel: &[u8],
        payload: &Bytes,
        conflate: &[String],
    ) -> Option<Incoming> {
        let (hub, kind) = self
            .hubs
            .iter()
            .find_map(|h| match h.channels.classify(channel) {
                Channel::Unknown => None,
                kind => Some((h, kind)),
            })?;
        let target = match kind {
            Channel::All => Target::All,
            Channel::Group(group) => Target::Group(group.to_owned()),
            Channel::User(user) => Target::User(user.to_owned()),
            Channel::Connection(id) => Target::Connection(id.to_owned()),
            Channel::Groups => {
                return match GroupCommand::decode(payload) {
                    Ok(command) => Some(Incoming::GroupCommand {
                        hub: hub.hub.clone(),
                        command,
                    }),
                    Err(error) => {
                        warn!(%error, "an undecodable group command on the backplane was ignored");
                        None
                    }
                };
            }
            Channel::Ack(_) => {
                match Ack::decode(payload) {
                    Ok(Ack(id)) => {
                        if let Some(waiter) = self.acks.borrow_mut().remove(&id) {
                            let _ = waiter.send(());
                        }
                    }
                    Err(error) => warn!(%error, "an undecodable ack on the backplane was ignored"),
                }
                return None;
            }
            Channel::KeyState => {
                return match KeyStateMessage::decode(payload) {
                    Ok(update) => Some(Incoming::KeyState {
                        hub: hub.hub.clone(),
                        update,
                    }),
                    Err(error) => {
                        warn!(%error, "an undecodable key state on the backplane was ignored");
                        None
                    }
                };
            }
            Channel::Stream => {
                return match StreamChunkMessage::decode(payload) {
                    Ok(chunk) => Some(Incoming::Stream {
                        hub: hub.hub.clone(),
                        chunk,
                    }),
                    Err(error) => {
                        warn!(%error, "an undecodable stream chunk on the backplane was ignored");
                        None
                    }
                };
            }
            Channel::Return(_) | Channel::Unknown => return None,
        };
        let invocation = match BackplaneInvocation::decode(payload) {
            Ok(invocation) => invocation,
            Err(error) => {
                warn!(%error, hub = %hub.hub, "an undecodable invocation on the backplane was ignored");
                return None;
            }
        };
        // Each local client gets its protocol's bytes as published; a missing protocol is
        // transcoded from one that is there.
        let json = invocation.message_for(HubProtocol::Json);
        let msgpack = invocation.message_for(HubProtocol::MessagePack);
        let (Ok(json), Ok(msgpack)) = (json, msgpack) else {
            warn!(hub = %hub.hub, "a backplane invocation without a usable protocol was ignored");
            return None;
        };
        let message = PreparedMessage::from_framed(&json, &msgpack, true);
        let tag = crate::hub::conflation::tag_framed_json(&target, &json, conflate);
        debug!(hub = %hub.hub, bytes = payload.len(), "backplane invocation");
        Some(Incoming::Deliver(
            Envelope {
                hub: hub.hub.clone(),
                target,
                excluded: invocation.excluded_ids,
                message: Arc::new(message.with_conflation(tag)),
            },
            invocation.client_result,
        ))
    }
}

/// Counts a send the backplane dropped.
pub fn count_drop(stats: &ShardStats) {
    stats.backplane_dropped(1);
}
