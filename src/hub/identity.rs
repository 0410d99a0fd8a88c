//! Connection ids and connection tokens (TransportProtocols.md, negotiate).
//!
//! A **connection id** is 16 bytes from the OS CSPRNG, base64url without padding (22
//! characters). Its first byte names the connection's **home shard** (modulo the shard count),
//! so a send to one connection goes straight to its shard.
//!
//! A **connection token** is stateless: it carries everything the WebSocket connect needs and
//! is signed with the cluster secret (`cluster.secret`), so any instance that shares the secret
//! can accept it without having seen the negotiate (no sticky sessions). Layout, before
//! base64url (59 characters in all):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | format version ([`TOKEN_VERSION`]) |
//! | 1 | flags: bit 0 stateful reconnect agreed, bit 1 negotiate version 0 |
//! | 4 | hub tag: the first 4 bytes of SHA-256 of the hub's path |
//! | 16 | the connection id's bytes (its first byte names the home shard) |
//! | 6 | expiry, Unix milliseconds, big-endian |
//! | 16 | HMAC-SHA256 of the 28 bytes above with the secret, truncated to 128 bits |
//!
//! For negotiate version 0 the client connects with the connection id itself, so the public
//! connection id *is* the token (flag bit 1).
//!
//! The expiry only bounds the first connect, as ASP.NET drops a negotiated connection that is
//! never connected; a stateful-reconnect resume is judged by the parked session, not by it.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::shard::ShardId;

/// The token format this build writes and reads.
pub const TOKEN_VERSION: u8 = 1;
/// Bytes of the signed part of a token.
const PAYLOAD_LEN: usize = 1 + 1 + 4 + 16 + 6;
/// Bytes of the (truncated) MAC.
const MAC_LEN: usize = 16;
/// Bytes of a decoded token.
const TOKEN_LEN: usize = PAYLOAD_LEN + MAC_LEN;
/// Characters of a token (base64url without padding).
pub const TOKEN_CHARS: usize = (TOKEN_LEN * 4).div_ceil(3);
/// Where the connection id starts in a decoded token.
const ID_AT: usize = 6;
/// Flag: negotiate agreed to stateful reconnect.
const FLAG_STATEFUL: u8 = 1;
/// Flag: negotiate version 0 (the connection id is the token).
const FLAG_V0: u8 = 2;
/// The largest expiry 6 bytes hold.
const MAX_EXPIRY: u64 = (1 << 48) - 1;

/// The OS random source failed (it does not, on a booted Linux; callers answer 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random source failed")]
pub struct RandomUnavailable;

/// Why a token was refused. Every variant is answered 404 `No Connection with that ID`, as
/// ASP.NET answers a token it does not know; the variant only labels the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not base64url, the wrong length, or an unknown format version.
    #[error("malformed connection token")]
    Malformed,
    /// The MAC matches neither the current nor a previous secret (forged, tampered with, or
    /// issued by an instance with another secret).
    #[error("connection token signature does not verify")]
    BadSignature,
    /// Issued for another hub.
    #[error("connection token was issued for another hub")]
    WrongHub,
    /// Past its expiry and no parked session holds it.
    #[error("connection token expired")]
    Expired,
    /// Valid, but its connection already ended here, or its stateful session lives on another
    /// instance.
    #[error("no connection with that id")]
    Unknown,
}

impl TokenError {
    /// Metric labels, by [`Self::reason_index`].
    pub const REASONS: [&'static str; 5] = [
        "malformed",
        "bad_signature",
        "wrong_hub",
        "expired",
        "unknown",
    ];

    /// The index of this error's label in [`Self::REASONS`].
    pub fn reason_index(self) -> usize {
        self as usize
    }
}

/// What a token says, once its MAC verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenClaims {
    /// The connection id's bytes.
    pub id: [u8; 16],
    /// [`hub_tag`] of the hub it was negotiated for.
    pub hub: [u8; 4],
    /// Negotiate agreed to stateful reconnect.
    pub stateful: bool,
    /// Negotiate version 0: the public connection id is the token itself.
    pub v0: bool,
    /// Unix milliseconds after which it no longer starts a connection.
    pub expires_unix_ms: u64,
}

impl TokenClaims {
    /// The public connection id: base64url of the id bytes, or for version 0 the token.
    pub fn connection_id(&self, token: &str) -> String {
        if self.v0 {
            token.to_owned()
        } else {
            URL_SAFE_NO_PAD.encode(self.id)
        }
    }

    /// Whether it can no longer start a new connection at `now_unix_ms`.
    pub fn is_expired(&self, now_unix_ms: u64) -> bool {
        now_unix_ms >= self.expires_unix_ms
    }

    fn payload(&self) -> [u8; PAYLOAD_LEN] {
        let mut out = [0u8; PAYLOAD_LEN];
        out[0] = TOKEN_VERSION;
        out[1] = if self.stateful { FLAG_STATEFUL } else { 0 } | if self.v0 { FLAG_V0 } else { 0 };
        out[2..6].copy_from_slice(&self.hub);
        out[ID_AT..ID_AT + 16].copy_from_slice(&self.id);
        let expires = self.expires_unix_ms.min(MAX_EXPIRY).to_be_bytes();
        out[22..28].copy_from_slice(&expires[2..]);
        out
    }
}

/// The tag of a hub in its tokens: the first 4 bytes of SHA-256 of its path. Instances that
/// serve the same hub at the same path agree on it without sharing anything else.
pub fn hub_tag(path: &str) -> [u8; 4] {
    let digest = Sha256::digest(path.as_bytes());
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The wall clock in Unix milliseconds (token expiries compare across instances, so they use
/// the wall clock, not the shard's monotonic one).
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The secrets tokens are signed and verified with: the current one signs, and it and every
/// previous one verify (rotation). Each is kept as a keyed HMAC state, cloned per use.
#[derive(Clone)]
pub struct TokenKeys {
    current: Hmac<Sha256>,
    previous: Vec<Hmac<Sha256>>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("TokenKeys")
            .field("previous", &self.previous.len())
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from the configured secret and previous secrets; with no secret, a random one for
    /// this process (single-instance: tokens from another process are refused).
    ///
    /// # Errors
    /// [`RandomUnavailable`] when a random secret is needed and the OS cannot give one.
    pub fn new(secret: Option<&[u8]>, previous: &[&[u8]]) -> Result<Self, RandomUnavailable> {
        let mut random = [0u8; 32];
        let secret = match secret {
            Some(secret) => secret,
            None => {
                getrandom::fill(&mut random).map_err(|_| RandomUnavailable)?;
                &random
            }
        };
        Ok(Self {
            current: keyed(secret),
            previous: previous.iter().map(|s| keyed(s)).collect(),
        })
    }

    /// The token for `claims`, signed with the current secret.
    pub fn issue(&self, claims: &TokenClaims) -> String {
        let payload = claims.payload();
        let mut mac = self.current.clone();
        mac.update(&payload);
        let tag = mac.finalize().into_bytes();
        let mut token = [0u8; TOKEN_LEN];
        token[..PAYLOAD_LEN].copy_from_slice(&payload);
        token[PAYLOAD_LEN..].copy_from_slice(&tag[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// Reads `token` and checks its MAC (in constant time) against each secret. The expiry and
    /// the hub are the caller's to check: a resume is allowed past the expiry.
    ///
    /// # Errors
    /// [`TokenError::Malformed`] or [`TokenError::BadSignature`].
    pub fn verify(&self, token: &str) -> Result<TokenClaims, TokenError> {
        // Refuse anything but a token's length before decoding it.
        if token.len() != TOKEN_CHARS {
            return Err(TokenError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Malformed)?;
        if bytes.len() != TOKEN_LEN || bytes[0] != TOKEN_VERSION {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) = bytes.split_at(PAYLOAD_LEN);
        let verifies = |key: &Hmac<Sha256>| {
            let mut mac = key.clone();
            mac.update(payload);
            mac.verify_truncated_left(tag).is_ok()
        };
        if !(verifies(&self.current) || self.previous.iter().any(verifies)) {
            return Err(TokenError::BadSignature);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&payload[ID_AT..ID_AT + 16]);
        let mut expires = [0u8; 8];
        expires[2..].copy_from_slice(&payload[22..28]);
        Ok(TokenClaims {
            id,
            hub: [payload[2], payload[3], payload[4], payload[5]],
            stateful: payload[1] & FLAG_STATEFUL != 0,
            v0: payload[1] & FLAG_V0 != 0,
            expires_unix_ms: u64::from_be_bytes(expires),
        })
    }
}

/// An HMAC-SHA256 state keyed with `secret` (any length is accepted by HMAC).
fn keyed(secret: &[u8]) -> Hmac<Sha256> {
    // invariant: HMAC accepts keys of every length, so this never fails.
    <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

/// 16 random bytes, drawn until `accept` takes them (rejection sampling keeps the bytes
/// uniformly random among the accepted ones).
fn random_bytes(mut accept: impl FnMut(&[u8; 16]) -> bool) -> Result<[u8; 16], RandomUnavailable> {
    let mut bytes = [0u8; 16];
    // With at most 256 shards a draw is accepted with probability ≥ 1/256; 100 000 draws
    // without one would mean a broken source.
    for _ in 0..100_000 {
        getrandom::fill(&mut bytes).map_err(|_| RandomUnavailable)?;
        if accept(&bytes) {
            return Ok(bytes);
        }
    }
    Err(RandomUnavailable)
}

/// The bytes of a new connection id living on shard `home` (of `shards`).
///
/// # Errors
/// [`RandomUnavailable`].
pub fn new_connection_id_bytes(
    home: ShardId,
    shards: usize,
) -> Result<[u8; 16], RandomUnavailable> {
    random_bytes(|bytes| usize::from(bytes[0]) % shards.max(1) == usize::from(home.0))
}

/// A new public connection id living on shard `home` (of `shards`): its first byte names the
/// shard ([`home_shard`] reads it back).
///
/// # Errors
/// [`RandomUnavailable`].
pub fn new_connection_id(home: ShardId, shards: usize) -> Result<String, RandomUnavailable> {
    new_connection_id_bytes(home, shards).map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
}

/// The home shard of a connection id or a token (unverified: routing only), or `None` when it
/// is neither. Every instance reads the same byte, so a token issued by an instance with
/// another shard count still names one shard here, the one its connection id names.
pub fn home_shard(id_or_token: &str, shards: usize) -> Option<ShardId> {
    let bytes = URL_SAFE_NO_PAD.decode(id_or_token).ok()?;
    let first = match bytes.len() {
        16 => bytes[0],
        TOKEN_LEN if bytes[0] == TOKEN_VERSION => bytes[ID_AT],
        _ => return None,
    };
    let home = usize::from(first) % shards.max(1);
    Some(ShardId(u16::try_from(home).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_790_000_000_000;

    fn claims() -> TokenClaims {
        TokenClaims {
            id: new_connection_id_bytes(ShardId(1), 3).unwrap(),
            hub: hub_tag("/hubs/chat"),
            stateful: true,
            v0: false,
            expires_unix_ms: NOW + 15_000,
        }
    }

    fn keys(secret: &[u8]) -> TokenKeys {
        TokenKeys::new(Some(secret), &[]).unwrap()
    }

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
    fn a_token_round_trips_its_claims_and_is_59_url_safe_characters() {
        let keys = keys(b"a cluster secret of some length");
        for (stateful, v0) in [(false, false), (true, false), (false, true), (true, true)] {
            let claims = TokenClaims {
                stateful,
                v0,
                ..claims()
            };
            let token = keys.issue(&claims);
            assert_eq!(token.len(), TOKEN_CHARS);
            assert_eq!(TOKEN_CHARS, 59);
            assert!(
                token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{token}"
            );
            assert_eq!(keys.verify(&token), Ok(claims));
        }
    }

    #[test]
    fn the_connection_id_is_the_id_bytes_or_for_version_0_the_token() {
        let keys = keys(b"secret");
        let claims = claims();
        let token = keys.issue(&claims);
        assert_eq!(
            claims.connection_id(&token),
            URL_SAFE_NO_PAD.encode(claims.id)
        );
        let v0 = TokenClaims { v0: true, ..claims };
        let token = keys.issue(&v0);
        assert_eq!(v0.connection_id(&token), token);
    }

    #[test]
    fn a_token_names_the_home_shard_of_its_connection_id_on_every_instance() {
        let keys = keys(b"secret");
        for shards in [1usize, 2, 3, 8] {
            for home in 0..shards {
                let id = new_connection_id_bytes(ShardId(home as u16), shards).unwrap();
                let token = keys.issue(&TokenClaims { id, ..claims() });
                assert_eq!(home_shard(&token, shards), Some(ShardId(home as u16)));
                let id = URL_SAFE_NO_PAD.encode(id);
                // Another instance with another shard count agrees with itself.
                for other in [1usize, 2, 5] {
                    assert_eq!(home_shard(&token, other), home_shard(&id, other));
                }
            }
        }
        assert_eq!(home_shard("not-a-token", 2), None);
        assert_eq!(home_shard("", 2), None);
    }

    #[test]
    fn any_changed_byte_or_character_fails_verification() {
        let keys = keys(b"secret");
        let token = keys.issue(&claims());
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for at in 0..bytes.len() {
            bytes[at] ^= 0x01;
            let tampered = URL_SAFE_NO_PAD.encode(&bytes);
            let expected = if at == 0 {
                TokenError::Malformed
            } else {
                TokenError::BadSignature
            };
            assert_eq!(keys.verify(&tampered), Err(expected), "byte {at}");
            bytes[at] ^= 0x01;
        }
        assert_eq!(keys.verify(&token[..58]), Err(TokenError::Malformed));
        assert_eq!(
            keys.verify(&format!("{token}A")),
            Err(TokenError::Malformed)
        );
        let not_base64 = format!("{}*", &token[..58]);
        assert_eq!(keys.verify(&not_base64), Err(TokenError::Malformed));
        assert_eq!(
            keys.verify("AAAAAAAAAAAAAAAAAAAAAA"),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = keys(b"secret A").issue(&claims());
        assert_eq!(
            keys(b"secret B").verify(&token),
            Err(TokenError::BadSignature)
        );
        // Two processes without a configured secret each draw their own.
        let a = TokenKeys::new(None, &[]).unwrap();
        let b = TokenKeys::new(None, &[]).unwrap();
        let token = a.issue(&claims());
        assert!(a.verify(&token).is_ok());
        assert_eq!(b.verify(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn a_previous_secret_still_verifies_during_rotation_but_no_longer_signs() {
        let old = keys(b"old secret");
        let rotated = TokenKeys::new(Some(b"new secret"), &[b"old secret"]).unwrap();
        let claims = claims();
        let from_old = old.issue(&claims);
        assert_eq!(rotated.verify(&from_old), Ok(claims));
        let from_rotated = rotated.issue(&claims);
        assert_ne!(from_rotated, from_old, "signed with the new secret");
        assert_eq!(keys(b"new secret").verify(&from_rotated), Ok(claims));
        assert_eq!(old.verify(&from_rotated), Err(TokenError::BadSignature));
    }

    #[test]
    fn a_token_expires_at_its_expiry_to_the_millisecond() {
        let keys = keys(b"secret");
        let claims = keys.verify(&keys.issue(&claims())).unwrap();
        assert!(!claims.is_expired(NOW));
        assert!(!claims.is_expired(NOW + 14_999));
        assert!(claims.is_expired(NOW + 15_000));
    }

    #[test]
    fn hub_tags_tell_paths_apart() {
        assert_eq!(hub_tag("/hubs/chat"), hub_tag("/hubs/chat"));
        assert_ne!(hub_tag("/hubs/chat"), hub_tag("/hubs/chat2"));
    }

    #[test]
    fn the_keys_debug_form_holds_no_key_material() {
        let shown = format!("{:?}", keys(b"secret"));
        assert!(!shown.contains("secret"), "{shown}");
    }
}
