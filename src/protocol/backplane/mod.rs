//! The wire format of the ASP.NET Core Redis backplane (`Microsoft.AspNetCore.SignalR.
//! StackExchangeRedis`), sans-IO: channel names ([`channels`]), the four MessagePack payloads
//! ([`message`]), server names ([`ServerName`]) and the re-encoding of a serialized hub message
//! for a protocol its publisher did not include ([`mod@transcode`]).
//!
//! A ringhub node that speaks this format is one more server of a .NET SignalR farm: it
//! subscribes to and publishes on the same Redis channels, and its payloads are byte-identical to
//! those written by `RedisProtocol` (MessagePack-CSharp: smallest integer forms,
//! fixstr/str8/str16/str32, bin8/16/32). Readers accept arrays longer than the minimum and
//! ignore extra items, like .NET's; no input makes them panic or allocate more than the input's
//! size.
//!
//! Specs, collected in `shared/reference/signalr-protocol.md` §7 and
//! `shared/reference/conduit-hubs.md` §2.3. Upstream sources (dotnet/aspnetcore,
//! `src/SignalR/server/StackExchangeRedis/`): `src/Internal/RedisProtocol.cs` (payloads),
//! `src/Internal/RedisChannels.cs` (channel names), `src/RedisHubLifetimeManager.cs`
//! (`GenerateServerName`, who publishes what) and `test/RedisProtocolTests.cs` (the byte
//! vectors the unit tests here repeat).

pub mod channels;
pub mod message;
pub mod transcode;

use thiserror::Error;

use super::signalr::HubProtocolError;

pub use channels::{Channel, Channels};
pub use message::{
    Ack, BackplaneInvocation, ClientResultRoute, GroupAction, GroupCommand, KeyStateMessage,
    ProtocolName, ReturnedCompletion, Serialization, StreamChunkMessage,
};
pub use transcode::transcode;

/// Why a backplane payload could not be decoded (or a serialized hub message re-encoded).
/// Where .NET has a text for the same failure, the message repeats it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BackplaneProtocolError {
    /// The payload ends in the middle of a value (or before a required one).
    #[error("Unexpected end of the backplane message.")]
    Truncated,
    /// The top-level array has fewer items than the message needs (`ValidateArraySize`).
    #[error("Insufficient items in {message} array.")]
    InsufficientItems {
        /// .NET's name for the message: `Invocation`, `GroupCommand`, `Ack`,
        /// `CompletionMessage`.
        message: &'static str,
    },
    /// A field holds another MessagePack type, or an integer out of the field's range.
    #[error("Reading '{field}' as {expected} failed.")]
    WrongType {
        /// The field, named as in `RedisProtocol.cs`.
        field: &'static str,
        /// The expected type: `Array`, `Map`, `String`, `Binary`, `Int32`, `Byte`.
        expected: &'static str,
    },
    /// A string field that is not UTF-8.
    #[error("Invalid UTF-8 in '{field}'.")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A group command whose action is neither 1 (Add) nor 2 (Remove).
    #[error("Unknown group action {0}.")]
    UnknownGroupAction(u8),
    /// An invocation with no serialization in a protocol ringhub can read (.NET's text for a
    /// missing protocol).
    #[error(
        "This message was received from another server that did not have the requested protocol available."
    )]
    ProtocolUnavailable,
    /// A serialized hub message that ends inside a message.
    #[error("The serialized '{protocol}' hub message is incomplete.")]
    IncompleteHubMessage {
        /// The protocol it is in.
        protocol: &'static str,
    },
    /// A serialized hub message the hub protocol codec rejected, or could not re-encode.
    #[error(transparent)]
    HubProtocol(#[from] HubProtocolError),
    /// The operating system's random source failed (server-name generation only).
    #[error("No randomness for a server name: {0}")]
    Random(getrandom::Error),
}

/// This server's name on the backplane: `{hostname}_{32 lowercase hex digits}`, as .NET's
/// `GenerateServerName` writes `$"{Environment.MachineName}_{Guid.NewGuid():N}"`. Other servers
/// send acks and client results to channels named after it, so it must be unique in the farm;
/// the 128 random bits make it so.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerName(String);

impl ServerName {
    /// A name from `hostname` and 16 random bytes the caller chose (tests, deterministic
    /// setups). Like `Environment.MachineName` on Linux, only the part of `hostname` before the
    /// first `.` is used.
    pub fn from_random(hostname: &str, random: [u8; 16]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let host = hostname.split('.').next().unwrap_or_default();
        let mut name = String::with_capacity(host.len() + 1 + 32);
        name.push_str(host);
        name.push('_');
        for byte in random {
            name.push(char::from(HEX[usize::from(byte >> 4)]));
            name.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        Self(name)
    }

    /// A name from `hostname` and 16 bytes of operating-system randomness (`getrandom`).
    ///
    /// # Errors
    /// [`BackplaneProtocolError::Random`] when the random source is unavailable.
    pub fn generate(hostname: &str) -> Result<Self, BackplaneProtocolError> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(BackplaneProtocolError::Random)?;
        Ok(Self::from_random(hostname, random))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_name_is_the_short_hostname_an_underscore_and_32_lowercase_hex_digits() {
        let random = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];
        let name = ServerName::from_random("web1.example.internal", random);
        assert_eq!(name.as_str(), "web1_0123456789abcdef0123456789abcdef");
        assert_eq!(name.as_str().len(), 37);
        assert_eq!(name.to_string(), name.as_str());
    }

    #[test]
    fn generated_server_names_differ_and_keep_the_hostname() {
        let a = ServerName::generate("node").unwrap();
        let b = ServerName::generate("node").unwrap();
        assert_ne!(a, b);
        let (host, hex) = a.as_str().split_once('_').unwrap();
        assert_eq!(host, "node");
        assert_eq!(hex.len(), 32);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }
}
