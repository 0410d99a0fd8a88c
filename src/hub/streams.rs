//! Streamed responses: a hub method bound to a stream key (`stream-key:response-{0}`) streams
//! what backends post to that key (`POST /api/hubs/{hub}/streams/{key}/:item`, `:complete`,
//! `:error`) to every client streaming it, on any shard, in the order posted.
//!
//! A posted [`StreamChunk`] goes through its key's **owner** shard's inbox (a hash of hub and
//! key), which delivers it and hands it to every other shard, as [`publish_in_order`] does for
//! sends: inboxes are FIFO, so a backend that waits for each answer is delivered in its order.
//! Each shard keeps the chunk in its [`StreamTable`](crate::shard::streams::StreamTable) backlog
//! and sends it to its local subscribers. An item's value is encoded once per protocol when it
//! is posted; each subscriber's StreamItem (its own invocation id) then copies those bytes into
//! one small frame per protocol, with no re-encoding of the value.
//!
//! **Backplane seam.** A chunk is plain `Send` data (hub, key, [`StreamEvent`]). A backplane
//! connecting nodes publishes what [`fan_out`] sends to this node's other shards, and a node
//! receiving a chunk from it calls [`fan_out`] on the key's owner shard (or [`deliver_local`] on
//! every shard), without publishing it again.
//!
//! [`publish_in_order`]: super::endpoint::publish_in_order

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use quanta::Instant;
use tracing::warn;

use super::broadcast::PreparedMessage;
use crate::protocol::backplane::StreamChunkMessage;
use crate::protocol::signalr::{
    Completion, CompletionOutcome, HubMessage, HubProtocolError, Payload, StreamItem, Value, json,
    msgpack,
};
use crate::shard::inbox::ShardMessage;
use crate::shard::sessions::SessionSlot;
use crate::shard::streams::{Joined, Subscriber};
use crate::shard::{ShardContext, ShardId};

/// An item's value, encoded once for each protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedItem {
    json: Bytes,
    msgpack: Bytes,
}

impl EncodedItem {
    /// Encodes `value` for both protocols.
    pub fn new(value: &Value) -> Self {
        let mut json = BytesMut::new();
        json::encode_value(value, &mut json);
        let mut msgpack = BytesMut::new();
        msgpack::encode_value(value, &mut msgpack);
        Self {
            json: json.freeze(),
            msgpack: msgpack.freeze(),
        }
    }

    /// Its JSON text.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// Its JSON size (what backlog caps count).
    pub fn len(&self) -> usize {
        self.json.len()
    }

    /// Whether it is empty (never: every value has an encoding).
    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }
}

/// What a backend posted to a stream key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// One more item (`:item`).
    Item(EncodedItem),
    /// The stream ended (`:complete`).
    Complete,
    /// The stream failed with this text (`:error`).
    Error(String),
}

impl StreamEvent {
    /// Whether it ends the stream.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::Item(_))
    }

    /// Bytes it holds, for backlog caps.
    pub fn len(&self) -> usize {
        match self {
            Self::Item(item) => item.len(),
            Self::Complete => 0,
            Self::Error(text) => text.len(),
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One posted event for one stream key of one hub, shared by reference between shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChunk {
    /// The hub's name.
    pub hub: String,
    /// The stream key (e.g. `response-42`).
    pub key: String,
    /// What was posted.
    pub event: StreamEvent,
}

/// The shard that orders a key's chunks: a hash of hub and key.
pub fn owner_shard(hub: &str, key: &str, shards: usize) -> ShardId {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ("stream", hub, key).hash(&mut hasher);
    // invariant: the remainder is below the shard count, which fits a u16.
    ShardId(u16::try_from(hasher.finish() % shards.max(1) as u64).unwrap_or(0))
}

/// Posts a chunk from outside any connection (the REST API): through its key's owner shard,
/// so consecutive posts are delivered in order everywhere.
pub fn publish_in_order(ctx: &ShardContext, chunk: StreamChunk) {
    let owner = owner_shard(&chunk.hub, &chunk.key, ctx.peers.shards());
    // Even the owner itself takes it from its inbox, behind what other shards queued there.
    if let Err(ShardMessage::StreamFanOut(chunk)) = ctx
        .peers
        .send(owner, ShardMessage::StreamFanOut(Arc::new(chunk)))
    {
        // The owner has stopped (shutting down): deliver from here rather than lose it.
        fan_out(ctx, &chunk);
    }
}

/// Delivers a chunk on this shard and hands it to every other shard; with the Redis backplane,
/// PUBLISHes it instead, and every shard of every instance (this one included) delivers what
/// it receives, in the order published.
pub fn fan_out(ctx: &ShardContext, chunk: &Arc<StreamChunk>) {
    if let Some(redis) = ctx.backplane.redis() {
        let (kind, data) = match &chunk.event {
            StreamEvent::Item(item) => (0, item.json().clone()),
            StreamEvent::Complete => (1, Bytes::new()),
            StreamEvent::Error(text) => (2, Bytes::copy_from_slice(text.as_bytes())),
        };
        let message = StreamChunkMessage {
            key: chunk.key.clone(),
            kind,
            data,
        };
        if !redis.publish_stream(&chunk.hub, &message) {
            crate::backplane::redis::count_drop(ctx.stats.shard(usize::from(ctx.id.0)));
        }
        return;
    }
    deliver_local(ctx, chunk);
    ctx.peers
        .send_to_others(ctx.id, || ShardMessage::StreamChunk(Arc::clone(chunk)));
}

/// A chunk received from the Redis backplane: delivered here like a local one.
pub fn from_backplane(ctx: &ShardContext, hub: &str, message: StreamChunkMessage) {
    let event = match message.kind {
        0 => match Payload::Json(message.data).to_value() {
            Ok(value) => StreamEvent::Item(EncodedItem::new(&value)),
            Err(_) => {
                warn!(
                    hub,
                    "a stream item on the backplane that is not JSON was ignored"
                );
                return;
            }
        },
        1 => StreamEvent::Complete,
        _ => StreamEvent::Error(String::from_utf8_lossy(&message.data).into_owned()),
    };
    let chunk = Arc::new(StreamChunk {
        hub: hub.to_owned(),
        key: message.key,
        event,
    });
    deliver_local(ctx, &chunk);
}

/// Keeps a chunk in this shard's backlog and sends it to the key's subscribers here.
pub fn deliver_local(ctx: &ShardContext, chunk: &Arc<StreamChunk>) {
    let now = ctx.timers.now();
    let mut delivered = 0;
    for subscriber in ctx.streams.append(chunk, now) {
        if deliver_to(ctx, chunk, &subscriber, now) {
            delivered += 1;
        } else if !chunk.event.is_terminal() {
            // Gone, or cancelled (CancelInvocation): unsubscribed now.
            ctx.streams.unsubscribe(&chunk.hub, &chunk.key, &subscriber);
        }
    }
    ctx.stats.shard(usize::from(ctx.id.0)).delivered(delivered);
}

/// Subscribes a session's stream invocation to `key` and queues the backlog for it first
/// (the end too, if the stream already ended; an error if part of it was lost).
pub fn subscribe(ctx: &ShardContext, slot: &SessionSlot, key: String, invocation_id: String) {
    let now = ctx.timers.now();
    let subscriber = Subscriber {
        session: slot.key,
        invocation_id,
    };
    match ctx
        .streams
        .subscribe(&slot.hub.name, &key, subscriber.clone(), now)
    {
        Joined::Replay(chunks) => {
            for chunk in chunks {
                deliver_to(ctx, &chunk, &subscriber, now);
            }
        }
        Joined::Lost(count) => {
            let lost = StreamChunk {
                hub: slot.hub.name.clone(),
                key,
                event: StreamEvent::Error(format!(
                    "The stream had already dropped {count} item(s) when this client subscribed."
                )),
            };
            deliver_to(ctx, &Arc::new(lost), &subscriber, now);
        }
    }
}

/// Sends one chunk to one subscriber, framed with its invocation id; `false` when its session
/// is gone or no longer streams the key. A terminal chunk ends the session's stream.
fn deliver_to(
    ctx: &ShardContext,
    chunk: &StreamChunk,
    subscriber: &Subscriber,
    now: Instant,
) -> bool {
    let Some(slot) = ctx.sessions.get(subscriber.session) else {
        return false;
    };
    {
        // Deliveries never run inside a session hook (as for `SessionSlot::deliver`).
        let mut session = slot.session.borrow_mut();
        let id = &subscriber.invocation_id;
        if !session.is_streaming(id, &chunk.key) {
            return false;
        }
        if chunk.event.is_terminal() {
            session.end_stream(id);
        }
    }
    match frame(&chunk.event, &subscriber.invocation_id) {
        Ok(message) => {
            slot.deliver(&Arc::new(message), now);
        }
        Err(error) => warn!(%error, "a stream chunk could not be encoded"),
    }
    true
}

/// The message a subscriber gets for `event`: a StreamItem or a Completion with its id.
///
/// # Errors
/// A payload that cannot be encoded (never for values the REST API decoded).
pub fn frame(
    event: &StreamEvent,
    invocation_id: &str,
) -> Result<PreparedMessage, HubProtocolError> {
    let item = |item: Payload| {
        HubMessage::StreamItem(StreamItem {
            headers: Default::default(),
            invocation_id: invocation_id.to_owned(),
            item,
        })
    };
    let completion = |outcome| {
        HubMessage::Completion(Completion {
            headers: Default::default(),
            invocation_id: invocation_id.to_owned(),
            outcome,
        })
    };
    match event {
        StreamEvent::Item(encoded) => PreparedMessage::per_protocol(
            &item(Payload::Json(encoded.json.clone())),
            &item(Payload::MessagePack(encoded.msgpack.clone())),
        ),
        StreamEvent::Complete => PreparedMessage::new(&completion(CompletionOutcome::Void)),
        StreamEvent::Error(text) => {
            PreparedMessage::new(&completion(CompletionOutcome::Error(text.clone())))
        }
    }
}

/// Drops expired backlog and subscribers whose session ended or stopped streaming their key.
pub fn sweep(ctx: &ShardContext) {
    ctx.streams.sweep(ctx.timers.now(), |key, subscriber| {
        ctx.sessions.get(subscriber.session).is_some_and(|slot| {
            slot.session
                .try_borrow()
                .map_or(true, |s| s.is_streaming(&subscriber.invocation_id, key))
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::signalr::HubProtocol;

    #[test]
    fn an_item_framed_per_subscriber_equals_the_message_encoded_whole() {
        let value = Value::Map(vec![
            (
                Value::Str("text".into()),
                Value::Str("héllo \"world\"\n".into()),
            ),
            (Value::Str("n".into()), Value::Float(1.5)),
        ]);
        let event = StreamEvent::Item(EncodedItem::new(&value));
        let framed = frame(&event, "7\"x").unwrap();
        let whole = PreparedMessage::new(&HubMessage::StreamItem(StreamItem {
            headers: Default::default(),
            invocation_id: "7\"x".into(),
            item: Payload::from_value(value),
        }))
        .unwrap();
        for protocol in HubProtocol::ALL {
            assert_eq!(
                framed.frame(protocol),
                whole.frame(protocol),
                "{protocol:?}"
            );
        }
        assert!(framed.is_trackable());
        let error = frame(&StreamEvent::Error("boom".into()), "3").unwrap();
        assert_eq!(
            &error.payload(HubProtocol::Json)[..],
            b"{\"type\":3,\"invocationId\":\"3\",\"error\":\"boom\"}\x1e"
        );
    }

    #[test]
    fn a_keys_owner_is_stable_and_within_the_shards() {
        for shards in 1..5 {
            let owner = owner_shard("h", "response-1", shards);
            assert!(usize::from(owner.0) < shards);
            assert_eq!(owner, owner_shard("h", "response-1", shards));
        }
    }
}
