//! Connection ids and tokens (TransportProtocols.md, negotiate): 16 bytes from the OS CSPRNG,
//! base64url without padding (22 characters, safe in a URL unescaped).
//!
//! The private token also names the connection's **home shard** (its first byte modulo the
//! shard count): a WebSocket that presents the token on any shard is handed to the shard that
//! negotiated it, so per-connection state never needs a lock.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::shard::ShardId;

/// The OS random source failed (it does not, on a booted Linux; callers answer 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random source failed")]
pub struct RandomUnavailable;

/// 16 random bytes, base64url, drawn until `accept` takes them (rejection sampling keeps the
/// bytes uniformly random among the accepted ones).
fn random_id(mut accept: impl FnMut(&[u8; 16]) -> bool) -> Result<String, RandomUnavailable> {
    let mut bytes = [0u8; 16];
    // With at most 256 shards a draw is accepted with probability ≥ 1/256; 100 000 draws
    // without one would mean a broken source.
    for _ in 0..100_000 {
        getrandom::fill(&mut bytes).map_err(|_| RandomUnavailable)?;
        if accept(&bytes) {
            return Ok(URL_SAFE_NO_PAD.encode(bytes));
        }
    }
    Err(RandomUnavailable)
}

/// A new public connection id living on shard `home` (of `shards`): like a token, its first
/// byte names the shard, so a send to one connection goes straight to its shard
/// ([`home_shard`] reads it back).
///
/// # Errors
/// [`RandomUnavailable`].
pub fn new_connection_id(home: ShardId, shards: usize) -> Result<String, RandomUnavailable> {
    random_id(|bytes| usize::from(bytes[0]) % shards.max(1) == usize::from(home.0))
}

/// A new private token whose home shard is `home` (of `shards`).
///
/// # Errors
/// [`RandomUnavailable`].
pub fn new_connection_token(home: ShardId, shards: usize) -> Result<String, RandomUnavailable> {
    // Same shape as an id, drawn independently of it.
    new_connection_id(home, shards)
}

/// The shard a token (or connection id) was issued by, or `None` when it is not one of ours.
pub fn home_shard(token: &str, shards: usize) -> Option<ShardId> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    if bytes.len() != 16 {
        return None;
    }
    let home = usize::from(bytes[0]) % shards.max(1);
    Some(ShardId(u16::try_from(home).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_22_url_safe_characters_and_differ() {
        let a = new_connection_id(ShardId(1), 3).unwrap();
        let b = new_connection_id(ShardId(1), 3).unwrap();
        assert_eq!(home_shard(&a, 3), Some(ShardId(1)));
        assert_eq!(a.len(), 22);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a, b);
    }

    #[test]
    fn a_token_names_the_shard_that_issued_it() {
        for shards in [1usize, 2, 3, 8] {
            for home in 0..shards {
                let token = new_connection_token(ShardId(home as u16), shards).unwrap();
                assert_eq!(home_shard(&token, shards), Some(ShardId(home as u16)));
            }
        }
        assert_eq!(home_shard("not-a-token", 2), None);
        assert_eq!(home_shard("", 2), None);
    }
}
