//! Per-key state a hub keeps (NavigationState's latest state per virtual key), replicated to
//! every shard so a connection reads it where it lives.
//!
//! Updates are ordered by a process-wide sequence number: each shard keeps the update with the
//! highest one, so replicas converge whatever order the inboxes deliver them in (last writer
//! wins, by the order updates were taken).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::hub::broadcast::PreparedMessage;
use crate::protocol::signalr::Payload;

/// One key's new state, shared by reference between shards.
#[derive(Debug)]
pub struct KeyStateUpdate {
    /// The hub.
    pub hub: String,
    /// The virtual key id.
    pub key_id: i64,
    /// Its place in the process-wide order of updates.
    pub sequence: u64,
    /// The state as returned by the getter (`currentView` included).
    pub state: Payload,
    /// The event announcing it (e.g. `NavigationUpdated(state)`), encoded once.
    pub message: Arc<PreparedMessage>,
}

/// The latest state of every key on this shard's replica.
#[derive(Debug, Default)]
pub struct KeyStates {
    latest: RefCell<HashMap<(String, i64), Arc<KeyStateUpdate>>>,
}

impl KeyStates {
    /// Keeps `update` unless the same or a later one is already here; returns whether it was
    /// kept.
    pub fn apply(&self, update: &Arc<KeyStateUpdate>) -> bool {
        let mut latest = self.latest.borrow_mut();
        let key = (update.hub.clone(), update.key_id);
        match latest.get(&key) {
            Some(current) if current.sequence >= update.sequence => false,
            _ => {
                latest.insert(key, Arc::clone(update));
                true
            }
        }
    }

    /// The latest state of `key_id` on `hub`.
    pub fn get(&self, hub: &str, key_id: i64) -> Option<Arc<KeyStateUpdate>> {
        self.latest.borrow().get(&(hub.to_owned(), key_id)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::actions::event;

    fn update(sequence: u64, text: &str) -> Arc<KeyStateUpdate> {
        let message = event("NavigationUpdated", vec![Payload::string(text)]);
        Arc::new(KeyStateUpdate {
            hub: "nav".into(),
            key_id: 7,
            sequence,
            state: Payload::string(text),
            message: Arc::new(PreparedMessage::new(&message).unwrap()),
        })
    }

    #[test]
    fn the_update_with_the_highest_sequence_wins_in_any_arrival_order() {
        let states = KeyStates::default();
        assert!(states.apply(&update(2, "second")));
        assert!(!states.apply(&update(1, "first")));
        assert_eq!(
            states.get("nav", 7).unwrap().state,
            Payload::string("second")
        );
        assert!(states.apply(&update(3, "third")));
        assert_eq!(states.get("nav", 7).unwrap().sequence, 3);
        assert!(states.get("nav", 8).is_none());
        assert!(states.get("other", 7).is_none());
    }
}
