//! The WebSocket endpoint of a hub route: a session that lives in the shard's session table,
//! plus the shard it belongs to.
//!
//! Each hook borrows the session only while it runs, then applies what the session asked of the
//! shard (joining and leaving groups, publishing to a group or to everyone). Publishing encodes
//! the message once per protocol ([`PreparedMessage`]), delivers it to this shard's recipients
//! and hands the same bytes to every other shard through its inbox.

use std::rc::Rc;
use std::sync::Arc;

use quanta::Instant;
use tracing::warn;

use super::actions::{Effect, Target};
use super::broadcast::PreparedMessage;
use crate::shard::ShardContext;
use crate::shard::inbox::{Envelope, ShardMessage};
use crate::shard::sessions::SessionSlot;
use crate::transport::outbox::Outbox;
use crate::transport::websocket::{AppClose, DataMessage, WebSocketApp};

/// A session and its shard, as the WebSocket loop drives them.
#[derive(Debug)]
pub struct HubEndpoint<'a> {
    /// The session.
    pub slot: Rc<SessionSlot>,
    /// Its shard.
    pub ctx: &'a ShardContext,
}

impl HubEndpoint<'_> {
    /// Applies the effects the session produced during the last hook.
    fn apply_effects(&self) {
        let effects = self.slot.session.borrow_mut().take_effects();
        for effect in effects {
            match effect {
                Effect::JoinGroup(group) => join_group(self.ctx, &self.slot, group),
                Effect::LeaveGroup(group) => leave_group(self.ctx, &self.slot, &group),
                Effect::Publish { target, message } => match PreparedMessage::new(&message) {
                    Ok(prepared) => {
                        publish(self.ctx, &self.slot.hub.name, target, Arc::new(prepared))
                    }
                    Err(error) => warn!(%error, "a message to publish could not be encoded"),
                },
            }
        }
    }
}

/// Adds the session to `group` (once).
pub fn join_group(ctx: &ShardContext, slot: &SessionSlot, group: String) {
    let mut groups = slot.groups.borrow_mut();
    if !groups.contains(&group) {
        ctx.groups.join(&slot.hub.name, &group, slot.key);
        groups.push(group);
    }
}

/// Removes the session from `group`.
pub fn leave_group(ctx: &ShardContext, slot: &SessionSlot, group: &str) {
    let mut groups = slot.groups.borrow_mut();
    if let Some(at) = groups.iter().position(|g| g == group) {
        groups.swap_remove(at);
        ctx.groups.leave(&slot.hub.name, group, slot.key);
    }
}

/// Forgets a session for good: out of every group (O(its groups)) and out of the table.
pub fn end_session(ctx: &ShardContext, slot: &SessionSlot) {
    for group in slot.groups.borrow_mut().drain(..) {
        ctx.groups.leave(&slot.hub.name, &group, slot.key);
    }
    ctx.sessions.remove(slot.key);
}

/// Delivers to this shard's recipients and sends the same bytes to every other shard.
pub fn publish(ctx: &ShardContext, hub: &str, target: Target, message: Arc<PreparedMessage>) {
    let envelope = Arc::new(Envelope {
        hub: hub.to_owned(),
        target,
        message,
    });
    deliver_local(ctx, &envelope);
    ctx.peers
        .send_to_others(ctx.id, || ShardMessage::Publish(Arc::clone(&envelope)));
}

/// Delivers an envelope to the recipients on this shard.
pub fn deliver_local(ctx: &ShardContext, envelope: &Envelope) {
    let now = ctx.timers.now();
    match &envelope.target {
        Target::All => {
            for slot in ctx.sessions.of_hub(&envelope.hub) {
                slot.deliver(&envelope.message, now);
            }
        }
        Target::Group(group) => {
            for key in ctx.groups.members(&envelope.hub, group) {
                if let Some(slot) = ctx.sessions.get(key) {
                    slot.deliver(&envelope.message, now);
                }
            }
        }
    }
}

impl WebSocketApp for HubEndpoint<'_> {
    fn on_message(
        &mut self,
        message: DataMessage,
        outbox: &mut Outbox,
        now: Instant,
    ) -> Result<(), AppClose> {
        let result = self
            .slot
            .session
            .borrow_mut()
            .on_message(message, outbox, now);
        self.apply_effects();
        result
    }

    fn on_open(&mut self, outbox: &mut Outbox) {
        self.slot.session.borrow_mut().on_open(outbox);
    }

    fn deadline(&self) -> Option<Instant> {
        self.slot.session.borrow().deadline()
    }

    fn on_deadline(&mut self, now: Instant, outbox: &mut Outbox) -> Result<(), AppClose> {
        let result = self.slot.session.borrow_mut().on_deadline(now, outbox);
        self.apply_effects();
        result
    }

    fn on_drained(&mut self, outbox: &mut Outbox) -> Result<(), AppClose> {
        let result = self.slot.session.borrow_mut().on_drained(outbox);
        self.apply_effects();
        result
    }

    fn on_wake(&mut self, outbox: &mut Outbox) -> Result<(), AppClose> {
        self.slot.session.borrow_mut().on_wake(outbox)
    }

    fn on_shutdown(&mut self, outbox: &mut Outbox) {
        self.slot.session.borrow_mut().on_shutdown(outbox);
    }
}
