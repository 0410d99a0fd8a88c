//! The WebSocket endpoint of a hub route: a session that lives in the shard's session table,
//! plus the shard it belongs to.
//!
//! Each hook borrows the session only while it runs, then applies what the session asked of the
//! shard (joining and leaving groups, publishing to a group or to everyone). Publishing encodes
//! the message once per protocol ([`PreparedMessage`]), delivers it to this shard's recipients
//! and hands the same bytes to every other shard through its inbox.
//!
//! The REST API reaches sessions the same way: [`publish_in_order`] for sends, and [`manage`]
//! for group changes, closes and existence checks, which asks every shard through its inbox and
//! gathers the answers.

use std::rc::Rc;
use std::sync::Arc;

use futures_channel::oneshot;
use quanta::Instant;
use tracing::warn;

use super::HubDefinition;
use super::actions::{Effect, Query, Target, event};
use super::broadcast::PreparedMessage;
use super::conflation;
use super::session::GroupLimit;
use crate::backplane::SubscriptionPending;
use crate::protocol::backplane::{GroupAction, GroupCommand, KeyStateMessage};
use crate::protocol::signalr::{
    Close, CompletionOutcome, HubMessage, HubProtocolError, Payload, Value,
};
use crate::protocol::websocket::CloseCode;
use crate::shard::inbox::{Envelope, ManageRequest, ShardMessage};
use crate::shard::key_states::KeyStateUpdate;
use crate::shard::sessions::SessionSlot;
use crate::shard::{ShardContext, ShardId};
use crate::stats::{RefusalReason, iso8601_now};
use crate::sys::RingSend;
use crate::transport::outbox::Outbox;
use crate::transport::websocket::{AppClose, DataMessage, WebSocketApp};
use bytes::BytesMut;
use std::hash::{Hash, Hasher};

/// A session and its shard, as the WebSocket loop drives them.
#[derive(Debug)]
pub struct HubEndpoint<'a> {
    /// The session.
    pub slot: Rc<SessionSlot>,
    /// Its shard.
    pub ctx: &'a ShardContext,
}

impl HubEndpoint<'_> {
    /// Applies the effects the session produced during the last hook (answering a query can
    /// run waiting invocations, whose effects are applied in turn).
    fn apply_effects(&self, outbox: &mut Outbox) -> Result<(), AppClose> {
        loop {
            let effects = self.slot.session.borrow_mut().take_effects();
            if effects.is_empty() {
                return Ok(());
            }
            // Subscriptions the joins of this batch started (Redis), for `Query::Subscribed`.
            let mut pending = Vec::new();
            for effect in effects {
                self.apply(effect, outbox, &mut pending)?;
            }
        }
    }

    fn apply(
        &self,
        effect: Effect,
        outbox: &mut Outbox,
        pending: &mut Vec<SubscriptionPending>,
    ) -> Result<(), AppClose> {
        let ctx = self.ctx;
        let hub = &self.slot.hub.name;
        match effect {
            // The method checked the limit when it ran; nothing ran since.
            Effect::JoinGroup(group) => {
                pending.extend(join_group(ctx, &self.slot, group).ok().flatten());
            }
            Effect::LeaveGroup(group) => leave_group(ctx, &self.slot, &group),
            Effect::SubscribeStream { key, invocation_id } => {
                super::streams::subscribe(ctx, &self.slot, key, invocation_id);
            }
            Effect::Publish { target, message } => match prepare(ctx, &target, &message) {
                Ok(prepared) => publish(ctx, hub, target, prepared),
                Err(error) => warn!(%error, "a message to publish could not be encoded"),
            },
            Effect::Upstream(call) => crate::upstream::invoke(ctx, Rc::clone(&self.slot), call),
            Effect::ReturnResult {
                return_channel,
                completion,
            } => {
                if let Some(redis) = ctx.backplane.redis() {
                    redis.return_result(&return_channel, completion);
                }
            }
            Effect::SetKeyState { event, state } => {
                let key_id = self.slot.session.borrow().key_id();
                if let Some(key_id) = key_id {
                    set_key_state(ctx, hub, key_id, &event, &state);
                }
            }
            Effect::Query {
                invocation_id,
                query: Query::Subscribed,
            } => {
                if pending.is_empty() {
                    self.slot.session.borrow_mut().answer(
                        invocation_id,
                        CompletionOutcome::Void,
                        outbox,
                    )?;
                } else {
                    let waits = std::mem::take(pending);
                    let slot = Rc::clone(&self.slot);
                    let limit = ctx.config.backplane.ack_timeout;
                    monoio::spawn(async move {
                        // A lost link or a slow Redis does not hold the caller forever: the
                        // join is done locally either way, and resubscribed on reconnect.
                        let _ = monoio::time::timeout(limit, async {
                            for wait in waits {
                                let _ = wait.await;
                            }
                        })
                        .await;
                        slot.complete(invocation_id, CompletionOutcome::Void);
                    });
                }
            }
            Effect::Query {
                invocation_id,
                query,
            } => {
                let answer = match query {
                    Query::KeyState => {
                        let key_id = self.slot.session.borrow().key_id();
                        key_id
                            .and_then(|id| ctx.key_states.get(hub, id))
                            .map_or(Payload::from_value(Value::Null), |u| u.state.clone())
                    }
                    Query::Health => Payload::from_value(health_snapshot(ctx)),
                    // Matched above.
                    Query::Subscribed => Payload::from_value(Value::Null),
                };
                self.slot.session.borrow_mut().answer(
                    invocation_id,
                    CompletionOutcome::Result(answer),
                    outbox,
                )?;
            }
        }
        Ok(())
    }
}

/// Stores a key's new state on every shard (newest wins) and tells the key's connections on
/// `hub`: `event(state)`, with a map's `view` copied to `currentView`.
pub fn set_key_state(
    ctx: &ShardContext,
    hub: &str,
    key_id: i64,
    event_name: &str,
    state: &Payload,
) {
    let state = match state.to_value() {
        Ok(mut value) => {
            if let Some(view) = value.get("view").cloned() {
                value.set("currentView", view);
            }
            Payload::from_value(value)
        }
        // Undecodable payloads never reach here (the codecs validated them); keep it as sent.
        Err(_) => state.clone(),
    };
    // With Redis, the order is by time across instances, then by this process's counter.
    let sequence = if ctx.backplane.is_redis() {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        u64::try_from(millis).unwrap_or(u64::MAX >> 17) << 16 | (ctx.peers.next_sequence() & 0xffff)
    } else {
        ctx.peers.next_sequence()
    };
    let message = match PreparedMessage::new(&event(event_name, vec![state.clone()])) {
        Ok(message) => Arc::new(message),
        Err(error) => {
            warn!(%error, "a key state could not be encoded");
            return;
        }
    };
    let update = Arc::new(KeyStateUpdate {
        hub: hub.to_owned(),
        key_id,
        sequence,
        state,
        message,
    });
    // Here at once (a GetNavigationState right after sees it); the same update coming back
    // from Redis is then ignored, having the same sequence.
    apply_key_state(ctx, &update);
    let Some(redis) = ctx.backplane.redis() else {
        ctx.peers
            .send_to_others(ctx.id, || ShardMessage::KeyState(Arc::clone(&update)));
        return;
    };
    let mut json = BytesMut::new();
    if let Ok(value) = update.state.to_value() {
        crate::protocol::signalr::json::encode_value(&value, &mut json);
    }
    let message = KeyStateMessage {
        key_id,
        sequence: i64::try_from(sequence).unwrap_or(i64::MAX),
        event: event_name.to_owned(),
        state: json.freeze(),
    };
    if !redis.publish_key_state(hub, &message) {
        crate::backplane::redis::count_drop(ctx.stats.shard(usize::from(ctx.id.0)));
    }
}

/// A key's new state received from the Redis backplane (any instance): kept and announced
/// like a local one when it is the newest.
pub fn key_state_from_backplane(ctx: &ShardContext, hub: &str, update: KeyStateMessage) {
    let Ok(value) = Payload::Json(update.state).to_value() else {
        warn!(
            hub,
            "a key state on the backplane that is not JSON was ignored"
        );
        return;
    };
    let state = Payload::from_value(value);
    let Ok(message) = PreparedMessage::new(&event(&update.event, vec![state.clone()])) else {
        return;
    };
    let update = Arc::new(KeyStateUpdate {
        hub: hub.to_owned(),
        key_id: update.key_id,
        sequence: u64::try_from(update.sequence).unwrap_or(0),
        state,
        message: Arc::new(message),
    });
    apply_key_state(ctx, &update);
}

/// Keeps a key's state update on this shard and, unless a newer one is already here, sends
/// it to the key's connections (group `vkey-{id}`) on its hub.
pub fn apply_key_state(ctx: &ShardContext, update: &Arc<KeyStateUpdate>) {
    if ctx.key_states.apply(update) {
        let envelope = Envelope {
            hub: update.hub.clone(),
            target: Target::Group(format!("vkey-{}", update.key_id)),
            excluded: Vec::new(),
            message: Arc::clone(&update.message),
        };
        deliver_local(ctx, &envelope);
    }
}

/// The health snapshot as this shard sees it now (counters of every shard, summed).
pub fn health_snapshot(ctx: &ShardContext) -> Value {
    let totals = ctx.stats.totals();
    let mut sample = ctx.message_rate.get();
    let rate = sample.update(totals.messages_in.wrapping_add(totals.deliveries));
    ctx.message_rate.set(sample);
    ctx.stats.snapshot(&totals, rate, iso8601_now())
}

/// Pushes `HealthStatus(snapshot)` to this shard's connections of every hub with a `health`
/// method (each shard pushes to its own connections; no message crosses shards).
///
/// Like a broadcast, it is written straight to every connection waiting idle, in one batch per
/// hub ([`deliver_local`]), so an idle health hub costs one submission per push rather than a
/// wake-up and a write per connection.
pub fn push_health(ctx: &ShardContext, hubs: &[Rc<HubDefinition>]) {
    let mut message = None;
    for hub in hubs {
        let slots = ctx.sessions.of_hub(&hub.name);
        if slots.is_empty() {
            continue;
        }
        let message = message.get_or_insert_with(|| {
            let snapshot = Payload::from_value(health_snapshot(ctx));
            PreparedMessage::new(&event("HealthStatus", vec![snapshot])).map(Arc::new)
        });
        let Ok(message) = message else {
            return;
        };
        let mut deliveries = Deliveries::new(ctx, message);
        for slot in &slots {
            deliveries.add(slot);
        }
        // Not counted as deliveries: the snapshot's message rate would count its own pushes.
        deliveries.finish();
    }
}

/// Adds the session to `group` (once). With Redis, the first local member subscribes the
/// group's channel: what is returned completes once Redis confirms it.
///
/// # Errors
/// [`GroupLimit`] when the session is in `signalr.max_groups_per_connection` groups
/// (counted as a refusal; nothing changes).
pub fn join_group(
    ctx: &ShardContext,
    slot: &SessionSlot,
    group: String,
) -> Result<Option<SubscriptionPending>, GroupLimit> {
    add_to_group(ctx, slot, group, false)
}

/// Adds the session to a group it is put in when it connects (its key's, the hub's
/// `join_on_connect`), which does not count against the group limit.
pub fn pin_group(ctx: &ShardContext, slot: &SessionSlot, group: String) {
    let _ = add_to_group(ctx, slot, group, true);
}

fn add_to_group(
    ctx: &ShardContext,
    slot: &SessionSlot,
    group: String,
    pinned: bool,
) -> Result<Option<SubscriptionPending>, GroupLimit> {
    let added = slot.session.borrow_mut().add_group(group.clone(), pinned);
    match added {
        Ok(true) => {}
        Ok(false) => return Ok(None),
        Err(limit) => {
            ctx.stats
                .shard(usize::from(ctx.id.0))
                .refused(RefusalReason::GroupsPerConnection);
            return Err(limit);
        }
    }
    Ok(if ctx.groups.join(&slot.hub.name, &group, slot.key) {
        ctx.backplane.group_joined(&slot.hub.name, &group)
    } else {
        None
    })
}

/// Removes the session from `group`.
pub fn leave_group(ctx: &ShardContext, slot: &SessionSlot, group: &str) {
    let was_in = slot.session.borrow_mut().remove_group(group);
    if was_in && ctx.groups.leave(&slot.hub.name, group, slot.key) {
        ctx.backplane.group_left(&slot.hub.name, group);
    }
}

/// Records the session as one of `user`'s connections (the shard's user table).
pub fn join_user(ctx: &ShardContext, slot: &SessionSlot, user: String) {
    if ctx.users.join(&slot.hub.name, &user, slot.key) {
        ctx.backplane.user_joined(&slot.hub.name, &user);
    }
    *slot.user.borrow_mut() = Some(user);
}

/// Forgets a session for good: out of every group (O(its groups)), out of the user table and
/// out of the session table.
pub fn end_session(ctx: &ShardContext, slot: &SessionSlot) {
    crate::upstream::post_event(ctx, slot, "disconnected");
    ctx.stats
        .shard(usize::from(ctx.id.0))
        .connection_closed(slot.hub.index);
    let groups = slot.session.borrow_mut().take_groups();
    for group in groups {
        if ctx.groups.leave(&slot.hub.name, &group, slot.key) {
            ctx.backplane.group_left(&slot.hub.name, &group);
        }
    }
    if let Some(user) = slot.user.borrow_mut().take()
        && ctx.users.leave(&slot.hub.name, &user, slot.key)
    {
        ctx.backplane.user_left(&slot.hub.name, &user);
    }
    ctx.backplane
        .connection_closed(&slot.hub.name, &slot.connection_id);
    // Servers waiting for this client's results hear it is gone (as ASP.NET answers them).
    let waiting = slot.session.borrow_mut().take_remote_results();
    if let Some(redis) = ctx.backplane.redis() {
        for (invocation_id, return_channel) in waiting {
            redis.return_result(
                &return_channel,
                crate::protocol::signalr::Completion {
                    headers: Default::default(),
                    invocation_id,
                    outcome: CompletionOutcome::Error("Connection disconnected.".to_owned()),
                },
            );
        }
    }
    ctx.sessions.remove(slot.key);
    // The token it was started with cannot start another connection before it expires (404).
    let token_expires = slot.token_expiry();
    if let Some(expires) = token_expires
        && ctx.timers.now() < expires
    {
        ctx.claims.claim(Rc::clone(&slot.connection_id), expires);
    }
}

/// Encodes a message to publish to `target` once per protocol and tags it for conflation
/// (`signalr.conflate_events`).
///
/// # Errors
/// A payload that cannot be transcoded.
pub fn prepare(
    ctx: &ShardContext,
    target: &Target,
    message: &HubMessage,
) -> Result<Arc<PreparedMessage>, HubProtocolError> {
    let tag = conflation::tag(target, message, &ctx.config.signalr.conflate_events);
    Ok(Arc::new(
        PreparedMessage::new(message)?.with_conflation(tag),
    ))
}

/// Delivers to this shard's recipients and sends the same bytes to every other shard.
pub fn publish(ctx: &ShardContext, hub: &str, target: Target, message: Arc<PreparedMessage>) {
    publish_excluding(ctx, hub, target, Vec::new(), message);
}

/// [`publish`], skipping the recipients whose connection id is in `excluded`.
pub fn publish_excluding(
    ctx: &ShardContext,
    hub: &str,
    target: Target,
    excluded: Vec<String>,
    message: Arc<PreparedMessage>,
) {
    let envelope = Arc::new(Envelope {
        hub: hub.to_owned(),
        target,
        excluded,
        message,
    });
    fan_out(ctx, &envelope);
}

/// Delivers an envelope here and hands it to every other shard; with the Redis backplane,
/// PUBLISHes it instead (every participant, this shard included, delivers what it receives),
/// except a send to a connection that lives here, which is written directly as ASP.NET does.
pub fn fan_out(ctx: &ShardContext, envelope: &Arc<Envelope>) {
    if ctx.backplane.is_redis() {
        let local = match &envelope.target {
            Target::Connection(id) => ctx.sessions.find(id).is_some(),
            _ => false,
        };
        if local {
            deliver_local(ctx, envelope);
        } else if !ctx.backplane.publish(envelope) {
            crate::backplane::redis::count_drop(ctx.stats.shard(usize::from(ctx.id.0)));
        }
        return;
    }
    deliver_local(ctx, envelope);
    ctx.peers
        .send_to_others(ctx.id, || ShardMessage::Publish(Arc::clone(envelope)));
}

/// [`publish_excluding`] for a publisher outside any connection (the REST API), whose
/// consecutive requests may land on different shards: every message to one hub goes through
/// one shard's inbox (the hub's **owner**, a hash of its name), which fans it out (or, with
/// Redis, PUBLISHes it on its one connection). Inboxes are FIFO, so a publisher that waits for
/// each answer before sending the next is delivered in its order everywhere, whatever the
/// targets (a send to a key's group, then to everyone, arrive in that order).
pub fn publish_in_order(
    ctx: &ShardContext,
    hub: &str,
    target: Target,
    excluded: Vec<String>,
    message: Arc<PreparedMessage>,
) {
    let shards = ctx.peers.shards();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ("publish", hub).hash(&mut hasher);
    // invariant: the remainder is below the shard count, which fits a u16.
    let owner = ShardId(u16::try_from(hasher.finish() % shards.max(1) as u64).unwrap_or(0));
    let envelope = Arc::new(Envelope {
        hub: hub.to_owned(),
        target,
        excluded,
        message,
    });
    // Even the owner itself takes it from its inbox, behind what other shards queued there.
    if let Err(ShardMessage::FanOut(envelope)) =
        ctx.peers.send(owner, ShardMessage::FanOut(envelope))
    {
        // The owner has stopped (shutting down): deliver from here rather than lose it.
        fan_out(ctx, &envelope);
    }
}

/// Delivers an envelope to the recipients on this shard.
///
/// A recipient whose connection waits idle with nothing queued gets the frame written to its
/// socket right here, all of them in one batch through the shard's [`SendRing`] (one
/// `io_uring_enter` per batch, as the floor program writes): no wake-up, task poll, write
/// future or completion per delivery. The others (busy, stateful reconnect waiting for Acks,
/// conflated events, the legacy driver) get it queued and their connection woken, as before.
///
/// [`SendRing`]: crate::sys::SendRing
pub fn deliver_local(ctx: &ShardContext, envelope: &Envelope) {
    let mut deliveries = Deliveries::new(ctx, &envelope.message);
    let mut send = |slot: &Rc<SessionSlot>| {
        if envelope
            .excluded
            .iter()
            .any(|id| **id == *slot.connection_id)
        {
            return;
        }
        deliveries.add(slot);
    };
    match &envelope.target {
        Target::All => {
            for slot in ctx.sessions.of_hub(&envelope.hub) {
                send(&slot);
            }
        }
        Target::Group(group) => {
            for key in ctx.groups.members(&envelope.hub, group) {
                if let Some(slot) = ctx.sessions.get(key) {
                    send(&slot);
                }
            }
        }
        Target::User(user) => {
            for key in ctx.users.members(&envelope.hub, user) {
                if let Some(slot) = ctx.sessions.get(key) {
                    send(&slot);
                }
            }
        }
        Target::Connection(id) => {
            if let Some(slot) = ctx.sessions.find(id).filter(|s| s.hub.name == envelope.hub) {
                send(&slot);
            }
        }
    }
    let (delivered, conflated) = deliveries.finish();
    let stats = ctx.stats.shard(usize::from(ctx.id.0));
    stats.delivered(delivered);
    stats.conflated(conflated);
}

/// One message on its way to some of the shard's sessions: written through the shard's
/// [`SendRing`](crate::sys::SendRing) to every recipient waiting idle, all in one batch when
/// [`Self::finish`]ed, or queued for the others (see [`deliver_local`]).
struct Deliveries<'a> {
    ctx: &'a ShardContext,
    message: &'a Arc<PreparedMessage>,
    now: Instant,
    ring: std::cell::RefMut<'a, Option<crate::sys::SendRing>>,
    sends: Vec<RingSend>,
    senders: Vec<Rc<SessionSlot>>,
    delivered: u64,
    conflated: u64,
}

impl<'a> Deliveries<'a> {
    fn new(ctx: &'a ShardContext, message: &'a Arc<PreparedMessage>) -> Self {
        Self {
            ctx,
            message,
            now: ctx.timers.now(),
            ring: ctx.send_ring.borrow_mut(),
            sends: Vec::new(),
            senders: Vec::new(),
            delivered: 0,
            conflated: 0,
        }
    }

    /// Delivers the message to `slot`'s session.
    fn add(&mut self, slot: &Rc<SessionSlot>) {
        self.delivered += 1;
        if self.ring.is_some()
            && let Some((fd, bytes)) = slot.write_through(self.message)
        {
            self.sends.push(RingSend {
                fd,
                bytes,
                result: 0,
            });
            self.senders.push(Rc::clone(slot));
        } else {
            self.conflated += slot.deliver(self.message, self.now);
        }
    }

    /// Writes the batch; returns how many recipients got the message and how many waiting
    /// progress events it replaced.
    fn finish(mut self) -> (u64, u64) {
        let stats = self.ctx.stats.shard(usize::from(self.ctx.id.0));
        if let Some(ring) = self.ring.as_mut()
            && !self.sends.is_empty()
        {
            ring.send_all(&mut self.sends);
            if let Some(first) = self.senders.first() {
                // Every recipient of a message is on its hub; the mailbox path counts the rest.
                let kind = self.message.kind();
                stats.sent_messages(first.hub.index, kind, self.sends.len() as u64);
            }
            let mut bytes = 0u64;
            for (sent, slot) in self.sends.drain(..).zip(self.senders.drain(..)) {
                // Written whole (the usual case), or the rest waits for the connection's task.
                let written = usize::try_from(sent.result).unwrap_or(0);
                bytes += written as u64;
                if written < sent.bytes.len() {
                    slot.write_through_rest(sent.bytes.slice(written..));
                }
            }
            stats.bytes_sent(bytes);
        }
        (self.delivered, self.conflated)
    }
}

/// A management operation on the sessions of one hub, run on every shard by [`manage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manage {
    /// Add a connection to a group.
    AddToGroup {
        /// The connection id.
        connection: String,
        /// The group.
        group: String,
    },
    /// Remove a connection from a group.
    RemoveFromGroup {
        /// The connection id.
        connection: String,
        /// The group.
        group: String,
    },
    /// Add every connection of a user to a group.
    AddUserToGroup {
        /// The user.
        user: String,
        /// The group.
        group: String,
    },
    /// Remove every connection of a user from a group.
    RemoveUserFromGroup {
        /// The user.
        user: String,
        /// The group.
        group: String,
    },
    /// Close a connection with a SignalR Close carrying `reason` as its error.
    Close {
        /// The connection id.
        connection: String,
        /// The error text of the Close message.
        reason: Option<String>,
    },
    /// Whether a connection exists.
    ConnectionExists(String),
    /// Whether a group has a member.
    GroupExists(String),
    /// Whether a user has a connection.
    UserExists(String),
}

impl Manage {
    /// Whether every shard must run it even after one found a match (user-wide operations).
    fn is_for_every_shard(&self) -> bool {
        matches!(
            self,
            Self::AddUserToGroup { .. } | Self::RemoveUserFromGroup { .. }
        )
    }
}

/// What a shard (or all of them) made of a [`Manage`] operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Managed {
    /// No matching connection, group or user.
    NotFound,
    /// Found (and carried out).
    Done,
    /// The connection was found but is in as many groups as it may be.
    GroupLimit(GroupLimit),
}

impl Managed {
    /// Found or not.
    fn from_found(found: bool) -> Self {
        if found { Self::Done } else { Self::NotFound }
    }

    /// Whether a match was found (refused or not).
    pub fn is_found(self) -> bool {
        self != Self::NotFound
    }

    /// The more telling of two shards' answers: a refusal, then a match.
    fn or(self, other: Self) -> Self {
        match (self, other) {
            (Self::GroupLimit(limit), _) | (_, Self::GroupLimit(limit)) => Self::GroupLimit(limit),
            (Self::Done, _) | (_, Self::Done) => Self::Done,
            _ => Self::NotFound,
        }
    }
}

/// Runs `op` on this shard's sessions of `hub`: whether it found a matching connection (or
/// group, or user) here. Joins that start a Redis subscription add it to `pending`, so the
/// caller answers only once it is confirmed (a send right after the answer then arrives).
/// A user-wide join skips connections at their group limit.
pub fn manage_local(
    ctx: &ShardContext,
    hub: &str,
    op: &Manage,
    pending: &mut Vec<SubscriptionPending>,
) -> Managed {
    let connection = |id: &str| ctx.sessions.find(id).filter(|slot| slot.hub.name == hub);
    let user_sessions = |user: &str| {
        ctx.users
            .members(hub, user)
            .into_iter()
            .filter_map(|key| ctx.sessions.get(key))
            .collect::<Vec<_>>()
    };
    let found = match op {
        Manage::AddToGroup {
            connection: id,
            group,
        } => {
            let Some(slot) = connection(id) else {
                return Managed::NotFound;
            };
            return match join_group(ctx, &slot, group.clone()) {
                Ok(joined) => {
                    pending.extend(joined);
                    Managed::Done
                }
                Err(limit) => Managed::GroupLimit(limit),
            };
        }
        Manage::RemoveFromGroup {
            connection: id,
            group,
        } => connection(id)
            .map(|slot| leave_group(ctx, &slot, group))
            .is_some(),
        Manage::AddUserToGroup { user, group } => {
            let slots = user_sessions(user);
            for slot in &slots {
                pending.extend(join_group(ctx, slot, group.clone()).ok().flatten());
            }
            !slots.is_empty()
        }
        Manage::RemoveUserFromGroup { user, group } => {
            let slots = user_sessions(user);
            for slot in &slots {
                leave_group(ctx, slot, group);
            }
            !slots.is_empty()
        }
        Manage::Close {
            connection: id,
            reason,
        } => {
            let Some(slot) = connection(id) else {
                return Managed::NotFound;
            };
            if !slot.is_attached() {
                // Parked for stateful reconnect: nobody to tell, so it just ends.
                end_session(ctx, &slot);
                return Managed::Done;
            }
            let close = HubMessage::Close(Close {
                error: reason.clone(),
                allow_reconnect: false,
            });
            match PreparedMessage::new(&close) {
                Ok(prepared) => slot.close_after(&Arc::new(prepared), ctx.timers.now()),
                Err(error) => warn!(%error, "a Close message could not be encoded"),
            }
            true
        }
        Manage::ConnectionExists(id) => connection(id).is_some(),
        Manage::GroupExists(group) => ctx.groups.has_members(hub, group),
        Manage::UserExists(user) => !user_sessions(user).is_empty(),
    };
    Managed::from_found(found)
}

/// Carries out a group command from the Redis backplane when `command.connection_id` lives on
/// this shard: `None` when it does not; otherwise done, with the group subscription still to
/// be confirmed if the join started one (the sender is acked once it is, as ASP.NET acks after
/// `AddToGroupAsync`).
pub fn apply_group_command(
    ctx: &ShardContext,
    hub: &str,
    command: &GroupCommand,
) -> Option<Option<SubscriptionPending>> {
    let slot = ctx
        .sessions
        .find(&command.connection_id)
        .filter(|slot| slot.hub.name == hub)?;
    Some(match command.action {
        // Another server asked; it hears no refusal (its ack means "carried out or refused
        // here"), but the refusal is counted and logged.
        GroupAction::Add => join_group(ctx, &slot, command.group.clone())
            .inspect_err(|limit| {
                tracing::debug!(hub, group = %command.group, %limit, "backplane group join refused");
            })
            .ok()
            .flatten(),
        GroupAction::Remove => {
            leave_group(ctx, &slot, &command.group);
            None
        }
    })
}

/// Waits (up to `backplane.ack_timeout`) until Redis confirms the subscriptions joins started.
pub async fn await_subscriptions(ctx: &ShardContext, pending: Vec<SubscriptionPending>) {
    if pending.is_empty() {
        return;
    }
    let _ = monoio::time::timeout(ctx.config.backplane.ack_timeout, async {
        for wait in pending {
            let _ = wait.await;
        }
    })
    .await;
}

/// Runs `op` on every shard's sessions of `hub` (this one directly, the others through their
/// inboxes) and answers whether any shard found a match (or refused the join). Stops early
/// once a match is found, except for user-wide operations, which every shard must run.
pub async fn manage(ctx: &ShardContext, hub: &str, op: Manage) -> Managed {
    let mut pending = Vec::new();
    let mut found = manage_local(ctx, hub, &op, &mut pending);
    await_subscriptions(ctx, pending).await;
    if found.is_found() && !op.is_for_every_shard() {
        return found;
    }
    let mut replies = Vec::new();
    for shard in 0..ctx.peers.shards() {
        let Ok(shard) = u16::try_from(shard) else {
            break;
        };
        if shard == ctx.id.0 {
            continue;
        }
        let (reply, answer) = oneshot::channel();
        let request = ManageRequest {
            hub: hub.to_owned(),
            op: op.clone(),
            reply,
        };
        // A stopped shard has nothing to find.
        if ctx
            .peers
            .send(ShardId(shard), ShardMessage::Manage(Box::new(request)))
            .is_ok()
        {
            replies.push(answer);
        }
    }
    for answer in replies {
        // A shard that stops before answering drops the sender: nothing found there.
        found = found.or(answer.await.unwrap_or(Managed::NotFound));
    }
    // Not here: with Redis, the connection may live on another server, which acks the
    // group change it carries out (ASP.NET's `SendGroupActionAndWaitForAck`).
    if !found.is_found()
        && let Some(redis) = ctx.backplane.redis()
    {
        let remote = match &op {
            Manage::AddToGroup { connection, group } => {
                redis
                    .group_command(hub, GroupAction::Add, group, connection)
                    .await
            }
            Manage::RemoveFromGroup { connection, group } => {
                redis
                    .group_command(hub, GroupAction::Remove, group, connection)
                    .await
            }
            // Whoever owns a connection (or has a member of a group, or a connection of a
            // user) subscribes to its channel, ringhub and .NET servers alike: Redis's
            // subscriber count answers for every server.
            Manage::ConnectionExists(id) => redis.has_subscribers(hub, |c| c.connection(id)).await,
            Manage::GroupExists(group) => redis.has_subscribers(hub, |c| c.group(group)).await,
            Manage::UserExists(user) => redis.has_subscribers(hub, |c| c.user(user)).await,
            // A Close message on the connection's channel: its server forwards it, and the
            // client ends the connection, as it does for any Close.
            Manage::Close { connection, reason } => {
                redis
                    .has_subscribers(hub, |c| c.connection(connection))
                    .await
                    && redis.send_close(hub, connection, reason.clone())
            }
            Manage::AddUserToGroup { .. } | Manage::RemoveUserFromGroup { .. } => false,
        };
        found = Managed::from_found(remote);
    }
    found
}

impl WebSocketApp for HubEndpoint<'_> {
    fn on_message(
        &mut self,
        message: DataMessage,
        outbox: &mut Outbox,
        now: Instant,
    ) -> Result<(), AppClose> {
        self.ctx.stats.shard(usize::from(self.ctx.id.0)).received(1);
        let result = self
            .slot
            .session
            .borrow_mut()
            .on_message(message, outbox, now);
        result.and(self.apply_effects(outbox))
    }

    fn on_open(&mut self, outbox: &mut Outbox) {
        self.slot.session.borrow_mut().on_open(outbox);
    }

    fn deadline(&self) -> Option<Instant> {
        self.slot.session.borrow().deadline()
    }

    fn on_deadline(&mut self, now: Instant, outbox: &mut Outbox) -> Result<(), AppClose> {
        let result = self.slot.session.borrow_mut().on_deadline(now, outbox);
        result.and(self.apply_effects(outbox))
    }

    fn on_drained(&mut self, outbox: &mut Outbox) -> Result<(), AppClose> {
        let result = self.slot.session.borrow_mut().on_drained(outbox);
        result.and(self.apply_effects(outbox))
    }

    fn on_wake(&mut self, outbox: &mut Outbox) -> Result<(), AppClose> {
        let woken = self.slot.session.borrow_mut().on_wake(outbox);
        woken.and(self.apply_effects(outbox))?;
        if self.slot.is_closing() {
            // The Close message was queued last and is in the outbox now.
            return Err(AppClose {
                code: CloseCode::NORMAL,
                reason: String::new(),
            });
        }
        Ok(())
    }

    fn on_shutdown(&mut self, outbox: &mut Outbox) {
        self.slot.session.borrow_mut().on_shutdown(outbox);
    }
}
