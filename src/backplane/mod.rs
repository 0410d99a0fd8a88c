//! How a message reaches connections on other shards and other instances.
//!
//! Two kinds, chosen by `backplane.kind`:
//! - **in-process** (the embedded default): the publishing shard delivers to its own
//!   connections and hands the same bytes to every other shard's inbox
//!   ([`crate::shard::inbox`]);
//! - **Redis** ([`redis`]): ASP.NET Core's Redis backplane. Every shard is one participant
//!   with its own server name and its own two Redis connections (publisher and subscriber);
//!   nothing is shared between shards. A send is PUBLISHed once to its channel and every
//!   subscribed participant (this instance's shards, other ringhub instances, .NET servers)
//!   delivers it to its own connections.
//!
//! The hub layer calls the same functions whichever kind runs: [`Backplane::publish`] for
//! sends, and the `*_joined`/`*_left` hooks so a Redis participant subscribes to a group's,
//! user's or connection's channel while it has a local member.

pub mod redis;

use std::rc::Rc;
use std::sync::Arc;

use crate::shard::inbox::Envelope;

/// Completes when Redis confirms a subscription (fails if the link is lost first).
pub type SubscriptionPending = futures_channel::oneshot::Receiver<()>;

/// A shard's backplane.
#[derive(Debug, Clone)]
pub enum Backplane {
    /// Per-shard inboxes inside this process.
    InProcess,
    /// The Redis backplane (this shard's participant).
    Redis(Rc<redis::RedisBackplane>),
}

impl Backplane {
    /// Whether sends go through Redis (then a shard does not deliver its own sends directly:
    /// it receives them back from Redis like everyone else, so every participant sees one
    /// order).
    pub fn is_redis(&self) -> bool {
        matches!(self, Self::Redis(_))
    }

    /// The Redis participant, if this is one.
    pub fn redis(&self) -> Option<&Rc<redis::RedisBackplane>> {
        match self {
            Self::Redis(redis) => Some(redis),
            Self::InProcess => None,
        }
    }

    /// Whether the backplane can carry messages now (always, in process).
    pub fn is_up(&self) -> bool {
        match self {
            Self::InProcess => true,
            Self::Redis(redis) => redis.is_up(),
        }
    }

    /// The first local member of `group` on `hub` joined. With Redis, returns what completes
    /// once the group's channel is subscribed (a join is only done then, as in ASP.NET).
    pub fn group_joined(&self, hub: &str, group: &str) -> Option<SubscriptionPending> {
        match self {
            Self::Redis(redis) => redis.subscribe_confirmed(hub, |c| c.group(group)),
            Self::InProcess => None,
        }
    }

    /// The last local member of `group` on `hub` left.
    pub fn group_left(&self, hub: &str, group: &str) {
        if let Self::Redis(redis) = self {
            redis.unsubscribe(hub, |c| c.group(group));
        }
    }

    /// The first local connection of `user` on `hub` joined.
    pub fn user_joined(&self, hub: &str, user: &str) {
        if let Self::Redis(redis) = self {
            redis.subscribe(hub, |c| c.user(user));
        }
    }

    /// The last local connection of `user` on `hub` left.
    pub fn user_left(&self, hub: &str, user: &str) {
        if let Self::Redis(redis) = self {
            redis.unsubscribe(hub, |c| c.user(user));
        }
    }

    /// A connection of `hub` now lives on this shard.
    pub fn connection_opened(&self, hub: &str, connection_id: &str) {
        if let Self::Redis(redis) = self {
            redis.subscribe(hub, |c| c.connection(connection_id));
        }
    }

    /// A connection of `hub` ended.
    pub fn connection_closed(&self, hub: &str, connection_id: &str) {
        if let Self::Redis(redis) = self {
            redis.unsubscribe(hub, |c| c.connection(connection_id));
        }
    }

    /// PUBLISHes an envelope to its channel; `false` when it was not published: in process
    /// (the caller fans out through the inboxes), or dropped (Redis down or too slow).
    pub fn publish(&self, envelope: &Arc<Envelope>) -> bool {
        match self {
            Self::InProcess => false,
            Self::Redis(redis) => redis.publish(envelope),
        }
    }
}
