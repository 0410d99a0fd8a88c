//! The shard's SignalR sessions, addressable by a stable [`SessionKey`].
//!
//! A session outlives its socket when stateful reconnect parks it, so groups and deliveries
//! refer to the session, not to the TCP connection. A [`SessionSlot`] is shared (`Rc`) between
//! the connection task that runs it and the shard code that delivers to it; every borrow of the
//! session is short and synchronous (never held across an `await`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use quanta::Instant;
use slab::Slab;

use super::connections::{ConnectionHandle, Signal};
use crate::hub::HubDefinition;
use crate::hub::broadcast::PreparedMessage;
use crate::hub::quota::QuotaPermit;
use crate::hub::session::Session;
use crate::protocol::signalr::CompletionOutcome;

/// A session's address on its shard: a reusable slot plus a serial that tells generations apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The slab slot.
    pub slot: u32,
    /// Unique for the shard's lifetime.
    pub serial: u64,
}

/// One live (or parked) session.
#[derive(Debug)]
pub struct SessionSlot {
    /// Its address.
    pub key: SessionKey,
    /// Its hub.
    pub hub: Rc<HubDefinition>,
    /// Its public connection id (kept here so lookups never borrow the session).
    pub connection_id: Rc<str>,
    /// The session itself.
    pub session: RefCell<Box<Session>>,
    /// The connection currently running it (`None` while parked).
    attached: RefCell<Option<Rc<ConnectionHandle>>>,
    /// Whether it was removed (a late delivery finds it gone).
    removed: Cell<bool>,
    /// Its place in the connection quotas, given back when it is removed.
    permit: RefCell<Option<QuotaPermit>>,
    /// The user it belongs to (its virtual key id in decimal), for the shard's user table.
    pub user: RefCell<Option<String>>,
    /// Set when the session was asked to close (REST `DELETE …/connections/{id}`): its next
    /// wake closes the connection after writing what is queued.
    closing: Cell<bool>,
    /// When the connection token the session was started with expires (`None`: started
    /// without one); until then the token stays spent after the session ends. Kept here, not
    /// in the session, whose allocation sits at the top of its size class.
    token_expires: Cell<Option<Instant>>,
}

impl SessionSlot {
    /// Records when the connection token the session was started with expires.
    pub fn set_token_expiry(&self, expires: Option<Instant>) {
        self.token_expires.set(expires);
    }

    /// When the connection token the session was started with expires, if it had one.
    pub fn token_expiry(&self) -> Option<Instant> {
        self.token_expires.get()
    }

    /// Queues a message for the session and wakes its connection (`now` tells whether its
    /// connection's write has stalled). Returns how many waiting progress events the message
    /// replaced (conflation).
    pub fn deliver(&self, message: &Arc<PreparedMessage>, now: Instant) -> u64 {
        if self.removed.get() || self.closing.get() {
            return 0;
        }
        let attached = self.attached.borrow();
        let stalled = attached.as_ref().is_some_and(|c| c.is_stalled(now));
        let dropped = self
            .session
            .borrow_mut()
            .enqueue(Arc::clone(message), stalled, now);
        drop(attached);
        self.wake();
        dropped
    }

    /// The socket and frame for a broadcast to write `message` to this session itself, when
    /// its connection waits idle with nothing queued ahead of it (no wake-up, no task poll and
    /// no write of its own for this delivery). `None`: deliver it with [`Self::deliver`].
    pub fn write_through(&self, message: &PreparedMessage) -> Option<(RawFd, Bytes)> {
        if self.removed.get() || self.closing.get() {
            return None;
        }
        let attached = self.attached.borrow();
        let connection = attached.as_ref()?;
        let fd = connection.idle_fd()?;
        if connection.signal.is_outbound_pending() || connection.signal.is_shutdown() {
            return None;
        }
        let frame = self.session.borrow_mut().take_write_through(message)?;
        Some((fd, frame))
    }

    /// Queues what the socket did not take of a frame from [`Self::write_through`] (all of it
    /// after an error) and wakes the connection to write it before anything else.
    pub fn write_through_rest(&self, rest: Bytes) {
        self.session.borrow_mut().queue_rest(rest);
        self.wake();
    }

    /// Completes an invocation that finished outside the connection's hooks (an upstream
    /// call, a join waiting for its Redis subscription) and wakes the connection to write it. A removed session is not answered.
    pub fn complete(&self, invocation_id: Option<String>, outcome: CompletionOutcome) {
        if self.removed.get() {
            return;
        }
        self.session
            .borrow_mut()
            .complete_later(invocation_id, outcome);
        self.wake();
    }

    /// Keeps the session's place in the connection quotas until it is removed.
    pub fn hold(&self, permit: QuotaPermit) {
        *self.permit.borrow_mut() = Some(permit);
    }

    /// Wakes the connection running the session (to write what was queued outside a hook).
    pub fn wake(&self) {
        if let Some(connection) = self.attached.borrow().as_ref() {
            connection.signal.raise(Signal::Outbound);
        }
    }

    /// Binds the session to the connection that runs it now.
    pub fn attach(&self, connection: Rc<ConnectionHandle>) {
        *self.attached.borrow_mut() = Some(connection);
    }

    /// Unbinds it (the socket ended).
    pub fn detach(&self) {
        *self.attached.borrow_mut() = None;
    }

    /// Whether it is attached to a connection (`false` while parked for stateful reconnect).
    pub fn is_attached(&self) -> bool {
        self.attached.borrow().is_some()
    }

    /// Queues `message` as the last one and asks the connection to close after writing it.
    pub fn close_after(&self, message: &Arc<PreparedMessage>, now: Instant) {
        self.deliver(message, now);
        // Set after: nothing is delivered behind the Close (the connection runs on this
        // thread, so it cannot wake in between).
        self.closing.set(true);
    }

    /// Whether the session was asked to close ([`Self::close_after`]).
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }
}

/// The shard's sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    slots: RefCell<Slab<Rc<SessionSlot>>>,
    next_serial: Cell<u64>,
    /// A 64-bit hash of each public connection id → its session, so a send to one connection
    /// is O(1) per shard without a second copy of every id (idle memory). A lookup checks the
    /// session's own id; ids are server-drawn random, so two live ones sharing a hash does not
    /// happen in practice (and would only make the older one unaddressable by id).
    by_connection_id: RefCell<HashMap<u64, SessionKey>>,
}

/// The index key of a connection id.
fn id_hash(connection_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    connection_id.hash(&mut hasher);
    hasher.finish()
}

impl Sessions {
    /// Adds a session of `hub`.
    pub fn insert(&self, hub: Rc<HubDefinition>, session: Box<Session>) -> Rc<SessionSlot> {
        let connection_id = session.shared_connection_id();
        let mut slots = self.slots.borrow_mut();
        let entry = slots.vacant_entry();
        let serial = self.next_serial.get();
        self.next_serial.set(serial + 1);
        let slot = Rc::new(SessionSlot {
            // Slab keys are bounded by the connection limit (< 2^32).
            key: SessionKey {
                slot: u32::try_from(entry.key()).unwrap_or(u32::MAX),
                serial,
            },
            hub,
            connection_id,
            session: RefCell::new(session),
            attached: RefCell::new(None),
            removed: Cell::new(false),
            permit: RefCell::new(None),
            user: RefCell::new(None),
            closing: Cell::new(false),
            token_expires: Cell::new(None),
        });
        entry.insert(Rc::clone(&slot));
        self.by_connection_id
            .borrow_mut()
            .insert(id_hash(&slot.connection_id), slot.key);
        slot
    }

    /// The session at `key`, if it still lives.
    pub fn get(&self, key: SessionKey) -> Option<Rc<SessionSlot>> {
        self.slots
            .borrow()
            .get(key.slot as usize)
            .filter(|slot| slot.key == key)
            .cloned()
    }

    /// Removes the session at `key` (its groups are the caller's to leave).
    pub fn remove(&self, key: SessionKey) -> Option<Rc<SessionSlot>> {
        let mut slots = self.slots.borrow_mut();
        let index = key.slot as usize;
        if slots.get(index).is_some_and(|slot| slot.key == key) {
            let slot = slots.remove(index);
            slot.removed.set(true);
            slot.permit.borrow_mut().take();
            let mut ids = self.by_connection_id.borrow_mut();
            let hash = id_hash(&slot.connection_id);
            if ids.get(&hash) == Some(&key) {
                ids.remove(&hash);
            }
            return Some(slot);
        }
        None
    }

    /// The live session whose public connection id is `connection_id`.
    pub fn find(&self, connection_id: &str) -> Option<Rc<SessionSlot>> {
        let key = *self
            .by_connection_id
            .borrow()
            .get(&id_hash(connection_id))?;
        self.get(key)
            .filter(|slot| &*slot.connection_id == connection_id)
    }

    /// Every session of `hub` (a snapshot).
    pub fn of_hub(&self, hub: &str) -> Vec<Rc<SessionSlot>> {
        self.slots
            .borrow()
            .iter()
            .filter(|(_, slot)| slot.hub.name == hub)
            .map(|(_, slot)| Rc::clone(slot))
            .collect()
    }

    /// How many sessions live on the shard.
    pub fn len(&self) -> usize {
        self.slots.borrow().len()
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_idle_slot_fits_the_192_byte_size_class() {
        // Every SignalR connection holds one in an `Rc` (two counters before it);
        // perf/idle_memory.py --signalr measures the whole cost.
        let size = std::mem::size_of::<super::SessionSlot>() + 16;
        assert!(size <= 192, "an Rc<SessionSlot> takes {size} bytes");
    }
}
