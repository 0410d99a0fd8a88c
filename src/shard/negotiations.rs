//! Negotiated connections waiting for (or holding) their WebSocket, keyed by private token.
//!
//! A token lives on the shard that issued it (its home shard, see [`crate::hub::identity`]), so
//! this table is shard-local and lock-free. A token that is never connected expires after
//! `signalr.disconnect_timeout`, as ASP.NET disposes inactive connections. A stateful-reconnect
//! connection whose socket dropped is **parked** here with its session for the same time, so a
//! new WebSocket presenting the token picks it up where it stopped.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use quanta::Instant;

use super::sessions::SessionKey;
use crate::hub::HubDefinition;

/// What holds a token now.
#[derive(Debug)]
pub enum Slot {
    /// Negotiated, no WebSocket yet.
    Waiting,
    /// A WebSocket is using it.
    Connected,
    /// Its socket dropped; the session waits in the shard's session table for a reconnect.
    Parked(SessionKey),
}

/// What a successful claim gives the new WebSocket.
#[derive(Debug)]
pub enum Claimed {
    /// A fresh connection.
    New {
        /// Its public id.
        connection_id: String,
        /// Whether negotiate agreed to stateful reconnect.
        stateful: bool,
    },
    /// A parked session to resume.
    Resume(SessionKey),
}

/// One negotiated connection. An entry outlives the negotiate request for every connected
/// WebSocket, so it holds no copy it does not need: the hub is shared, and the connection id
/// is handed to the session when the token is claimed.
#[derive(Debug)]
pub struct Negotiation {
    /// The public connection id (empty once claimed: the session holds it then).
    pub connection_id: Box<str>,
    /// The hub it was negotiated for.
    pub hub: Rc<HubDefinition>,
    /// When an unconnected (waiting or parked) token is dropped.
    pub expires: Instant,
    /// Whether negotiate agreed to stateful reconnect.
    pub stateful: bool,
    /// What holds it.
    pub slot: Slot,
}

/// Why a token cannot be connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    /// Unknown, expired, or negotiated for another hub: 404 `No Connection with that ID`.
    NotFound,
    /// A WebSocket already uses it: 409.
    AlreadyConnected,
}

/// The shard's negotiated connections.
#[derive(Debug, Default)]
pub struct Negotiations {
    /// Keyed by the token, shared with the connection that claimed it.
    by_token: RefCell<HashMap<Rc<str>, Negotiation>>,
}

impl Negotiations {
    /// Records a new negotiation.
    pub fn insert(&self, token: Rc<str>, negotiation: Negotiation) {
        self.by_token.borrow_mut().insert(token, negotiation);
    }

    /// Checks that `token` could be connected for `hub_path` now, without claiming it.
    ///
    /// # Errors
    /// [`ClaimError`] with the HTTP answer.
    pub fn check(&self, token: &str, hub_path: &str, now: Instant) -> Result<(), ClaimError> {
        let table = self.by_token.borrow();
        let entry = table.get(token).ok_or(ClaimError::NotFound)?;
        let connected = matches!(entry.slot, Slot::Connected);
        if entry.hub.path != hub_path || (!connected && now >= entry.expires) {
            return Err(ClaimError::NotFound);
        }
        if connected {
            return Err(ClaimError::AlreadyConnected);
        }
        Ok(())
    }

    /// Whether a WebSocket holds `token` for a stateful-reconnect connection (its old socket
    /// may be about to be noticed as dead and parked).
    pub fn is_connected_stateful(&self, token: &str) -> bool {
        self.by_token
            .borrow()
            .get(token)
            .is_some_and(|n| n.stateful && matches!(n.slot, Slot::Connected))
    }

    /// Marks `token` connected for `hub_path`: a new connection, or a parked one to resume.
    /// Also returns the table's copy of the token, for the connection to keep.
    ///
    /// # Errors
    /// [`ClaimError`] with the HTTP answer.
    pub fn claim(
        &self,
        token: &str,
        hub_path: &str,
        now: Instant,
    ) -> Result<(Claimed, Rc<str>), ClaimError> {
        self.check(token, hub_path, now)?;
        let mut table = self.by_token.borrow_mut();
        let key = table
            .get_key_value(token)
            .map(|(key, _)| Rc::clone(key))
            .ok_or(ClaimError::NotFound)?;
        let entry = table.get_mut(token).ok_or(ClaimError::NotFound)?;
        let claimed = match std::mem::replace(&mut entry.slot, Slot::Connected) {
            Slot::Parked(session) => Claimed::Resume(session),
            Slot::Waiting | Slot::Connected => Claimed::New {
                connection_id: std::mem::take(&mut entry.connection_id).into(),
                stateful: entry.stateful,
            },
        };
        Ok((claimed, key))
    }

    /// Keeps a dropped stateful connection's session until `expires` for a reconnect.
    pub fn park(&self, token: &str, session: SessionKey, expires: Instant) {
        if let Some(entry) = self.by_token.borrow_mut().get_mut(token) {
            entry.slot = Slot::Parked(session);
            entry.expires = expires;
        }
    }

    /// Forgets a token whose connection ended.
    pub fn release(&self, token: &str) {
        self.by_token.borrow_mut().remove(token);
    }

    /// Drops waiting tokens and parked sessions that expired; returns the parked sessions, which
    /// the caller ends.
    pub fn sweep(&self, now: Instant) -> Vec<SessionKey> {
        let mut expired = Vec::new();
        self.by_token.borrow_mut().retain(|_, n| {
            let keep = matches!(n.slot, Slot::Connected) || now < n.expires;
            if !keep && let Slot::Parked(key) = n.slot {
                expired.push(key);
            }
            keep
        });
        expired
    }

    /// How many tokens are held.
    pub fn len(&self) -> usize {
        self.by_token.borrow().len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::shard::timers::Timers;

    fn negotiation(expires: Instant) -> Negotiation {
        Negotiation {
            connection_id: "id".into(),
            hub: Rc::new(HubDefinition::diagnostics("/hubs/a")),
            expires,
            stateful: false,
            slot: Slot::Waiting,
        }
    }

    fn new_id(claimed: Result<(Claimed, Rc<str>), ClaimError>) -> Result<String, ClaimError> {
        claimed.map(|(c, _)| match c {
            Claimed::New { connection_id, .. } => connection_id,
            Claimed::Resume(_) => panic!("nothing was parked"),
        })
    }

    #[test]
    fn a_token_connects_once_then_conflicts_until_released() {
        let now = Timers::new().now();
        let table = Negotiations::default();
        table.insert("t".into(), negotiation(now + Duration::from_secs(15)));
        assert_eq!(new_id(table.claim("t", "/hubs/a", now)), Ok("id".into()));
        assert_eq!(
            new_id(table.claim("t", "/hubs/a", now)),
            Err(ClaimError::AlreadyConnected)
        );
        table.release("t");
        assert_eq!(
            new_id(table.claim("t", "/hubs/a", now)),
            Err(ClaimError::NotFound)
        );
    }

    #[test]
    fn a_claimed_entry_shares_its_token_with_the_connection_and_drops_its_id_copy() {
        let now = Timers::new().now();
        let table = Negotiations::default();
        table.insert("t".into(), negotiation(now + Duration::from_secs(15)));
        let (claimed, token) = table.claim("t", "/hubs/a", now).unwrap();
        assert!(matches!(claimed, Claimed::New { connection_id, .. } if connection_id == "id"));
        assert_eq!(&*token, "t");
        assert_eq!(Rc::strong_count(&token), 2, "one token allocation, not two");
        assert!(table.by_token.borrow()["t"].connection_id.is_empty());
    }

    #[test]
    fn unknown_expired_or_wrong_hub_tokens_are_not_found() {
        let now = Timers::new().now();
        let table = Negotiations::default();
        table.insert("t".into(), negotiation(now + Duration::from_secs(1)));
        assert_eq!(
            new_id(table.claim("x", "/hubs/a", now)),
            Err(ClaimError::NotFound)
        );
        assert_eq!(
            new_id(table.claim("t", "/hubs/b", now)),
            Err(ClaimError::NotFound)
        );
        let later = now + Duration::from_secs(2);
        assert_eq!(
            new_id(table.claim("t", "/hubs/a", later)),
            Err(ClaimError::NotFound)
        );
        table.sweep(later);
        assert!(table.is_empty());
    }

    #[test]
    fn a_parked_session_is_resumed_once_and_expires() {
        let now = Timers::new().now();
        let table = Negotiations::default();
        table.insert("t".into(), negotiation(now + Duration::from_secs(15)));
        assert!(new_id(table.claim("t", "/hubs/a", now)).is_ok());
        let key = SessionKey { slot: 3, serial: 9 };
        table.park("t", key, now + Duration::from_secs(15));
        assert!(
            matches!(table.claim("t", "/hubs/a", now), Ok((Claimed::Resume(k), _)) if k == key)
        );
        assert_eq!(
            new_id(table.claim("t", "/hubs/a", now)),
            Err(ClaimError::AlreadyConnected)
        );
        table.park("t", key, now + Duration::from_secs(15));
        let later = now + Duration::from_secs(16);
        assert_eq!(
            new_id(table.claim("t", "/hubs/a", later)),
            Err(ClaimError::NotFound)
        );
        assert_eq!(table.sweep(later), vec![key]);
        assert!(table.is_empty());
    }
}
