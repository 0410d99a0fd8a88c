//! Who a request is: Conduit virtual-key authentication for the hubs
//! (`shared/reference/conduit-hubs.md` §3.1).
//!
//! This module owns the outcome of authentication ([`Principal`]) and its one error type
//! ([`AuthError`], each variant mapped to an HTTP status). The pieces:
//! - [`token`]: where a request carries its key (query `access_token`, query `api_key`,
//!   `Authorization: Bearer`, `X-API-Key`, in that order);
//! - [`keys`]: the key format, SHA-256 hashing, key generation, the file-backed [`KeyStore`]
//!   and the parser for Conduit's Redis `vkey:<hash>` entity;
//! - [`redis_store`]: the Redis-backed [`RedisKeyStore`], a per-shard cache of Conduit's
//!   `vkey:<hash>` entries kept fresh by its invalidation channels.
//!
//! Raw keys are never stored, logged or put in an error text: only their SHA-256 hashes are
//! kept, and every [`AuthError`] text is fixed or describes the store, not the key.

use thiserror::Error;

pub mod keys;
pub mod redis_store;
pub mod token;

pub use keys::{
    KeyRecord, KeyStore, PresentedKey, add_key, conduit_record, generate_virtual_key, hash_key,
    is_virtual_key, presented_key,
};
pub use redis_store::RedisKeyStore;
pub use token::extract;

use std::rc::Rc;
use std::sync::Arc;

/// Where a shard looks virtual keys up (admin keys are always configured hashes).
#[derive(Debug, Clone)]
pub enum KeyLookup {
    /// The file store, loaded at start and again on reload (SIGHUP), shared read-only by every
    /// shard; each shard swaps its reference when told.
    File(std::cell::RefCell<Arc<KeyStore>>),
    /// Conduit's Redis entries, through this shard's own connections and cache.
    Redis(Rc<RedisKeyStore>),
}

impl KeyLookup {
    /// The file store `store`.
    pub fn file(store: Arc<KeyStore>) -> Self {
        Self::File(std::cell::RefCell::new(store))
    }

    /// Applies a reload: a file store is replaced by `reloaded` (when given); the Redis
    /// store forgets its cache, so key changes are read again.
    pub fn reload(&self, reloaded: Option<&Arc<KeyStore>>) {
        match self {
            Self::File(store) => {
                if let Some(reloaded) = reloaded {
                    *store.borrow_mut() = Arc::clone(reloaded);
                }
            }
            Self::Redis(store) => store.forget_cached(),
        }
    }

    /// Checks `presented` (a raw key from a request): an admin key by its hash in
    /// `admin_hashes`, a virtual key in the store.
    ///
    /// # Errors
    /// [`AuthError`]: unknown, malformed, disabled or expired keys; an unreachable store.
    pub async fn authenticate(
        &self,
        presented: &str,
        admin_hashes: &[String],
        now_unix: u64,
    ) -> Result<Principal, AuthError> {
        match self {
            Self::File(store) => {
                let store = Arc::clone(&store.borrow());
                store.authenticate(presented, admin_hashes, now_unix)
            }
            Self::Redis(store) => store.authenticate(presented, admin_hashes, now_unix).await,
        }
    }
}

/// Who a request is, once its key has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A Conduit virtual key (`condt_…`) found in the key store.
    VirtualKey {
        /// The key's id (Conduit's `VirtualKeys.Id`); hub groups are named `vkey-{id}`.
        id: i64,
        /// The key's display name (Conduit's `KeyName`).
        name: String,
        /// Whether the key's metadata marks it as an admin key.
        admin: bool,
    },
    /// One of the operator's configured admin keys (matched by hash; any string).
    AdminKey,
}

impl Principal {
    /// Whether this principal may use admin-only hubs: an admin key, or a virtual key marked
    /// admin.
    pub fn is_admin(&self) -> bool {
        match self {
            Self::VirtualKey { admin, .. } => *admin,
            Self::AdminKey => true,
        }
    }
}

/// Why a request could not be authenticated. No text ever contains the presented key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// The request carried no key in any of the accepted places (or only empty ones).
    #[error("no API key was presented")]
    MissingToken,
    /// The key is not an admin key and not shaped like a virtual key (`condt_` + 32
    /// alphanumerics).
    #[error("the API key is not in a recognised format")]
    Malformed,
    /// The key is well formed but its hash is not in the key store.
    #[error("the API key is not valid")]
    UnknownKey,
    /// The key exists but is disabled.
    #[error("the API key is disabled")]
    Disabled,
    /// The key exists but its expiry time has passed (expiring exactly now counts as expired).
    #[error("the API key has expired")]
    Expired,
    /// The key is valid but the hub requires an admin key.
    #[error("this hub requires an admin key")]
    Forbidden,
    /// The key store could not be read or written, or the random source failed; the text
    /// says why (a path, a parse error), never a key.
    #[error("the key store could not be read: {0}")]
    Store(String),
}

impl AuthError {
    /// Each variant's metric label, by [`Self::reason_index`].
    pub const REASONS: [&'static str; 7] = [
        "missing_token",
        "malformed",
        "unknown_key",
        "disabled",
        "expired",
        "forbidden",
        "store",
    ];

    /// The index of this error's label in [`Self::REASONS`].
    pub fn reason_index(&self) -> usize {
        match self {
            Self::MissingToken => 0,
            Self::Malformed => 1,
            Self::UnknownKey => 2,
            Self::Disabled => 3,
            Self::Expired => 4,
            Self::Forbidden => 5,
            Self::Store(_) => 6,
        }
    }
}

impl AuthError {
    /// The HTTP status to answer with: 401 for a missing or bad key, 403 for a valid key that
    /// is not allowed, 503 when the store is unavailable.
    pub fn status(&self) -> u16 {
        match self {
            Self::MissingToken
            | Self::Malformed
            | Self::UnknownKey
            | Self::Disabled
            | Self::Expired => 401,
            Self::Forbidden => 403,
            Self::Store(_) => 503,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_http_status() {
        for error in [
            AuthError::MissingToken,
            AuthError::Malformed,
            AuthError::UnknownKey,
            AuthError::Disabled,
            AuthError::Expired,
        ] {
            assert_eq!(error.status(), 401, "{error}");
        }
        assert_eq!(AuthError::Forbidden.status(), 403);
        assert_eq!(AuthError::Store("x".into()).status(), 503);
    }

    #[test]
    fn error_texts_are_the_documented_ones() {
        assert_eq!(
            AuthError::MissingToken.to_string(),
            "no API key was presented"
        );
        assert_eq!(
            AuthError::Store("keys.json: denied".into()).to_string(),
            "the key store could not be read: keys.json: denied"
        );
    }

    #[test]
    fn admin_keys_and_admin_virtual_keys_are_admins() {
        assert!(Principal::AdminKey.is_admin());
        let key = |admin| Principal::VirtualKey {
            id: 1,
            name: "k".into(),
            admin,
        };
        assert!(key(true).is_admin());
        assert!(!key(false).is_admin());
    }
}
