//! Negotiated connections waiting for (or holding) their WebSocket, keyed by private token.
//!
//! A token lives on the shard that issued it (its home shard, see [`crate::hub::identity`]), so
//! this table is shard-local and lock-free. A token that is never connected expires after
//! `signalr.disconnect_timeout`, as ASP.NET disposes inactive connections.

use std::cell::RefCell;
use std::collections::HashMap;

use quanta::Instant;

/// One negotiated connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiation {
    /// The public connection id.
    pub connection_id: String,
    /// The hub it was negotiated for.
    pub hub_path: String,
    /// When an unconnected token is dropped.
    pub expires: Instant,
    /// Whether a WebSocket currently holds the token.
    pub connected: bool,
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
    by_token: RefCell<HashMap<String, Negotiation>>,
}

impl Negotiations {
    /// Records a new negotiation.
    pub fn insert(&self, token: String, negotiation: Negotiation) {
        self.by_token.borrow_mut().insert(token, negotiation);
    }

    /// Checks that `token` could be connected for `hub_path` now, without claiming it.
    ///
    /// # Errors
    /// [`ClaimError`] with the HTTP answer.
    pub fn check(&self, token: &str, hub_path: &str, now: Instant) -> Result<(), ClaimError> {
        let table = self.by_token.borrow();
        let entry = table.get(token).ok_or(ClaimError::NotFound)?;
        if entry.hub_path != hub_path || (!entry.connected && now >= entry.expires) {
            return Err(ClaimError::NotFound);
        }
        if entry.connected {
            return Err(ClaimError::AlreadyConnected);
        }
        Ok(())
    }

    /// Marks `token` connected for `hub_path` and returns its connection id.
    ///
    /// # Errors
    /// [`ClaimError`] with the HTTP answer.
    pub fn claim(&self, token: &str, hub_path: &str, now: Instant) -> Result<String, ClaimError> {
        self.check(token, hub_path, now)?;
        let mut table = self.by_token.borrow_mut();
        let entry = table.get_mut(token).ok_or(ClaimError::NotFound)?;
        entry.connected = true;
        Ok(entry.connection_id.clone())
    }

    /// Forgets a token whose connection ended.
    pub fn release(&self, token: &str) {
        self.by_token.borrow_mut().remove(token);
    }

    /// Drops unconnected tokens that expired.
    pub fn sweep(&self, now: Instant) {
        self.by_token
            .borrow_mut()
            .retain(|_, n| n.connected || now < n.expires);
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
            hub_path: "/hubs/a".into(),
            expires,
            connected: false,
        }
    }

    #[test]
    fn a_token_connects_once_then_conflicts_until_released() {
        let now = Timers::new().now();
        let table = Negotiations::default();
        table.insert("t".into(), negotiation(now + Duration::from_secs(15)));
        assert_eq!(table.claim("t", "/hubs/a", now), Ok("id".into()));
        assert_eq!(
            table.claim("t", "/hubs/a", now),
            Err(ClaimError::AlreadyConnected)
        );
        table.release("t");
        assert_eq!(table.claim("t", "/hubs/a", now), Err(ClaimError::NotFound));
    }

    #[test]
    fn unknown_expired_or_wrong_hub_tokens_are_not_found() {
        let now = Timers::new().now();
        let table = Negotiations::default();
        table.insert("t".into(), negotiation(now + Duration::from_secs(1)));
        assert_eq!(table.claim("x", "/hubs/a", now), Err(ClaimError::NotFound));
        assert_eq!(table.claim("t", "/hubs/b", now), Err(ClaimError::NotFound));
        let later = now + Duration::from_secs(2);
        assert_eq!(
            table.claim("t", "/hubs/a", later),
            Err(ClaimError::NotFound)
        );
        table.sweep(later);
        assert!(table.is_empty());
    }
}
