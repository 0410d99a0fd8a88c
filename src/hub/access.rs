//! Who may connect to a hub: the hub's auth mode applied to the key a request presents, on
//! negotiate and again on the WebSocket upgrade (each is its own HTTP request).

use crate::auth::{AuthError, KeyLookup, Principal, token};
use crate::config::HubAuth;
use crate::protocol::http::RequestHead;

/// The caller of a hub, once admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An anonymous hub: nobody is identified.
    Anonymous,
    /// A key was presented and accepted.
    Key(Principal),
}

/// Applies `auth` to the key in `head`.
///
/// # Errors
/// [`AuthError`]: 401 for a missing or bad key, 403 for a virtual key on an admin hub.
pub async fn admit(
    auth: HubAuth,
    head: &RequestHead,
    keys: &KeyLookup,
    admin_hashes: &[String],
    now_unix: u64,
) -> Result<Caller, AuthError> {
    if auth == HubAuth::Anonymous {
        return Ok(Caller::Anonymous);
    }
    let admitted = async {
        let presented = token::extract(head).ok_or(AuthError::MissingToken)?;
        let principal = keys
            .authenticate(&presented, admin_hashes, now_unix)
            .await?;
        if auth == HubAuth::Admin && principal != Principal::AdminKey {
            return Err(AuthError::Forbidden);
        }
        Ok(Caller::Key(principal))
    }
    .await;
    if let Err(error) = &admitted {
        crate::stats::local(|s| s.auth_failed(error.reason_index()));
    }
    admitted
}

/// Seconds since the Unix epoch (key expiry is compared in these).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
