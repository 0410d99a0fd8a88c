//! Connection tokens presented on this shard, keyed by connection id.
//!
//! Tokens are stateless ([`crate::hub::identity`]): negotiate stores nothing, and any instance
//! holding the cluster secret accepts a valid one. What this table keeps is the little state a
//! token needs *after* it was used here:
//! - **spent** tokens, until their expiry, so a token starts at most one connection on this
//!   instance (a second connect while it runs is 409, after it ended 404, as ASP.NET answers);
//!   past the expiry the token refuses itself, so a long-lived connection holds no entry. A
//!   running connection holds none either: its attached session answers for its token (409),
//!   so a token is spent here from its upgrade until its session is attached, and again from
//!   the session's end until the token expires (idle memory: no entry per live connection);
//! - **parked** stateful-reconnect sessions whose socket dropped, for
//!   `signalr.disconnect_timeout`, so a new WebSocket presenting the token resumes them.
//!
//! A connection id's home shard is fixed by its first byte, so this table is shard-local and
//! lock-free.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use quanta::Instant;

use super::sessions::{SessionKey, Sessions};

/// What a token's connection id is known for here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// It started a connection (which may have ended since).
    Spent,
    /// Its stateful session's socket dropped; the session waits for a reconnect.
    Parked(SessionKey),
}

#[derive(Debug)]
struct Entry {
    /// When the entry is dropped: the token's expiry (spent), or the end of the reconnect
    /// window (parked).
    expires: Instant,
    claim: Claim,
}

/// What presenting a valid token does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Start a new connection with the token's connection id.
    New,
    /// Resume this parked session.
    Resume(SessionKey),
}

/// Why a valid token cannot be connected here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    /// Its connection ended, or its parked session expired, or the token expired unused:
    /// 404 `No Connection with that ID`.
    NotFound,
    /// A WebSocket already uses it: 409.
    AlreadyConnected,
}

/// Below this many entries of capacity, a swept table is not shrunk.
const MIN_KEPT_CAPACITY: usize = 64;

/// The shard's spent tokens and parked sessions.
#[derive(Debug, Default)]
pub struct Claims {
    by_id: RefCell<HashMap<Rc<str>, Entry>>,
}

impl Claims {
    /// What a valid token for `connection_id` does now, without claiming it. `expired` is the
    /// token's own verdict; a parked session is resumed regardless (the client reconnects with
    /// the token it negotiated, which may be long expired).
    ///
    /// # Errors
    /// [`ClaimError`] with the HTTP answer.
    pub fn check(
        &self,
        connection_id: &str,
        expired: bool,
        sessions: &Sessions,
        now: Instant,
    ) -> Result<Admission, ClaimError> {
        let running = || {
            sessions
                .find(connection_id)
                .is_some_and(|s| s.is_attached())
        };
        match self.by_id.borrow().get(connection_id) {
            Some(Entry {
                claim: Claim::Parked(key),
                expires,
            }) if now < *expires => return Ok(Admission::Resume(*key)),
            Some(_) if running() => return Err(ClaimError::AlreadyConnected),
            Some(_) => return Err(ClaimError::NotFound),
            None => {}
        }
        if running() {
            // Its spent entry expired with the token while the connection runs.
            return Err(ClaimError::AlreadyConnected);
        }
        if expired {
            return Err(ClaimError::NotFound);
        }
        Ok(Admission::New)
    }

    /// Records that the token of `connection_id` started (or resumed) a connection, or that the
    /// session it started ended; the entry lasts until `token_expires`.
    pub fn claim(&self, connection_id: Rc<str>, token_expires: Instant) {
        self.by_id.borrow_mut().insert(
            connection_id,
            Entry {
                expires: token_expires,
                claim: Claim::Spent,
            },
        );
    }

    /// Forgets a claim whose connection never started (its 101 could not be written), or whose
    /// session is now attached and answers for the token itself.
    pub fn release(&self, connection_id: &str) {
        self.by_id.borrow_mut().remove(connection_id);
    }

    /// Keeps a dropped stateful connection's session until `expires` for a reconnect.
    pub fn park(&self, connection_id: Rc<str>, session: SessionKey, expires: Instant) {
        self.by_id.borrow_mut().insert(
            connection_id,
            Entry {
                expires,
                claim: Claim::Parked(session),
            },
        );
    }

    /// Drops spent tokens that expired and parked sessions whose window closed; returns the
    /// parked sessions, which the caller ends.
    /// A table that a burst of connections grew gives most of its memory back once the burst's
    /// entries expired.
    pub fn sweep(&self, now: Instant) -> Vec<SessionKey> {
        let mut expired = Vec::new();
        let mut by_id = self.by_id.borrow_mut();
        by_id.retain(|_, entry| {
            let keep = now < entry.expires;
            if !keep && let Claim::Parked(key) = entry.claim {
                expired.push(key);
            }
            keep
        });
        if by_id.capacity() > MIN_KEPT_CAPACITY && by_id.len() < by_id.capacity() / 4 {
            let len = by_id.len();
            by_id.shrink_to(len * 2);
        }
        expired
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.by_id.borrow().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::hub::HubDefinition;
    use crate::hub::session::Session;
    use crate::shard::timers::Timers;

    fn session(
        sessions: &Sessions,
        id: &str,
        now: Instant,
    ) -> Rc<super::super::sessions::SessionSlot> {
        let hub = Rc::new(HubDefinition::diagnostics("/hubs/a"));
        let session = Session::new(Rc::clone(&hub), id.to_owned(), Vec::new(), true, now);
        sessions.insert(hub, Box::new(session))
    }

    #[test]
    fn an_unexpired_token_starts_a_connection_and_an_expired_one_does_not() {
        let now = Timers::new().now();
        let (claims, sessions) = (Claims::default(), Sessions::default());
        assert_eq!(
            claims.check("id", false, &sessions, now),
            Ok(Admission::New)
        );
        assert_eq!(
            claims.check("id", true, &sessions, now),
            Err(ClaimError::NotFound)
        );
    }

    #[test]
    fn a_spent_token_is_404_once_its_connection_ended_and_the_entry_goes_at_its_expiry() {
        let now = Timers::new().now();
        let (claims, sessions) = (Claims::default(), Sessions::default());
        claims.claim("id".into(), now + Duration::from_secs(15));
        assert_eq!(
            claims.check("id", false, &sessions, now),
            Err(ClaimError::NotFound)
        );
        assert!(claims.sweep(now + Duration::from_secs(14)).is_empty());
        assert_eq!(claims.len(), 1);
        claims.sweep(now + Duration::from_secs(15));
        assert!(claims.is_empty());
        // Past its expiry the token refuses itself.
        assert_eq!(
            claims.check("id", true, &sessions, now + Duration::from_secs(15)),
            Err(ClaimError::NotFound)
        );
    }

    #[test]
    fn a_running_connection_makes_its_token_409_before_and_after_the_expiry() {
        let now = Timers::new().now();
        let (claims, sessions) = (Claims::default(), Sessions::default());
        let slot = session(&sessions, "id", now);
        let connection = crate::shard::connections::Registration::new(Rc::new(
            crate::shard::connections::ConnectionRegistry::default(),
        ));
        slot.attach(connection.shared());
        claims.claim("id".into(), now + Duration::from_secs(15));
        assert_eq!(
            claims.check("id", false, &sessions, now),
            Err(ClaimError::AlreadyConnected)
        );
        claims.sweep(now + Duration::from_secs(16));
        assert_eq!(
            claims.check("id", true, &sessions, now),
            Err(ClaimError::AlreadyConnected)
        );
    }

    #[test]
    fn a_parked_session_is_resumed_even_with_an_expired_token_until_its_window_closes() {
        let now = Timers::new().now();
        let (claims, sessions) = (Claims::default(), Sessions::default());
        let slot = session(&sessions, "id", now);
        claims.park(
            Rc::clone(&slot.connection_id),
            slot.key,
            now + Duration::from_secs(15),
        );
        assert_eq!(
            claims.check("id", true, &sessions, now),
            Ok(Admission::Resume(slot.key))
        );
        let later = now + Duration::from_secs(16);
        assert_eq!(
            claims.check("id", true, &sessions, later),
            Err(ClaimError::NotFound)
        );
        assert_eq!(claims.sweep(later), vec![slot.key]);
        assert!(claims.is_empty());
    }

    #[test]
    fn a_table_grown_by_a_burst_gives_its_memory_back_once_the_entries_expired() {
        let now = Timers::new().now();
        let claims = Claims::default();
        for i in 0..10_000 {
            claims.claim(format!("burst-{i}").into(), now + Duration::from_secs(15));
        }
        claims.claim("late".into(), now + Duration::from_secs(30));
        let grown = claims.by_id.borrow().capacity();
        claims.sweep(now + Duration::from_secs(15));
        assert_eq!(claims.len(), 1);
        let kept = claims.by_id.borrow().capacity();
        assert!(kept <= MIN_KEPT_CAPACITY, "{grown} -> {kept}");
    }
}
