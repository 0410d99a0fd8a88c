//! The ASP.NET Core SignalR hub protocol, sans-IO: the messages ([`message`]), the
//! protocol-neutral value model used when a payload has to change encoding ([`value`]), the JSON
//! and MessagePack codecs ([`json`], [`msgpack`]) and the handshake ([`handshake`]).
//!
//! Specs: `HubProtocol.md` and `TransportProtocols.md` in dotnet/aspnetcore
//! (<https://github.com/dotnet/aspnetcore/tree/main/src/SignalR/docs/specs>); every byte-level
//! detail used here is collected in `shared/reference/signalr-protocol.md`.

pub mod handshake;
pub mod json;
pub mod message;
pub mod msgpack;
pub mod negotiate;
pub mod value;

use bytes::{Bytes, BytesMut};
use thiserror::Error;

pub use message::{
    CancelInvocation, Close, Completion, CompletionOutcome, Headers, HubMessage, Invocation,
    Payload, StreamItem,
};
pub use value::Value;

/// The record separator that ends every JSON message and the handshake.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// A hub protocol a connection speaks after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HubProtocol {
    /// `"json"`: UTF-8 JSON records ending in 0x1E, sent in WebSocket text frames.
    Json,
    /// `"messagepack"`: VarInt-length-prefixed MessagePack arrays, sent in binary frames.
    MessagePack,
}

/// How a protocol's bytes travel in WebSocket frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferFormat {
    /// WebSocket text frames.
    Text,
    /// WebSocket binary frames.
    Binary,
}

impl TransferFormat {
    /// The WebSocket frame type that carries this format.
    pub fn opcode(self) -> crate::protocol::websocket::OpCode {
        match self {
            Self::Text => crate::protocol::websocket::OpCode::Text,
            Self::Binary => crate::protocol::websocket::OpCode::Binary,
        }
    }
}

impl HubProtocol {
    /// Both protocols, in the order they are published to a backplane.
    pub const ALL: [Self; 2] = [Self::Json, Self::MessagePack];

    /// The name used in the handshake and in backplane envelopes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::MessagePack => "messagepack",
        }
    }

    /// Looks a protocol up by its exact (case-sensitive) handshake name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "json" => Some(Self::Json),
            "messagepack" => Some(Self::MessagePack),
            _ => None,
        }
    }

    /// The highest handshake version the server accepts (2 enables stateful reconnect).
    pub fn max_version(self) -> u32 {
        2
    }

    /// The WebSocket frame type this protocol's messages travel in.
    pub fn transfer_format(self) -> TransferFormat {
        match self {
            Self::Json => TransferFormat::Text,
            Self::MessagePack => TransferFormat::Binary,
        }
    }

    /// Takes the next complete message off the front of `input`; see [`Decoded`].
    ///
    /// # Errors
    /// Malformed input, or no complete message within `max_message_size` bytes (framing
    /// included), as [`HubProtocolError`].
    pub fn decode(
        self,
        input: &Bytes,
        max_message_size: usize,
    ) -> Result<Decoded, HubProtocolError> {
        match self {
            Self::Json => json::decode(input, max_message_size),
            Self::MessagePack => msgpack::decode(input, max_message_size),
        }
    }

    /// Appends `message`, framed (0x1E or VarInt prefix included), to `out`.
    ///
    /// # Errors
    /// A payload in the other protocol's encoding that cannot be transcoded.
    pub fn encode(self, message: &HubMessage, out: &mut BytesMut) -> Result<(), HubProtocolError> {
        match self {
            Self::Json => json::encode(message, out),
            Self::MessagePack => msgpack::encode(message, out),
        }
    }
}

/// The result of decoding from the front of a buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A message, and how many bytes of input it used (framing included). An unknown message
    /// type decodes as [`HubMessage::Unknown`] so the caller can skip it, as ASP.NET does.
    Message(HubMessage, usize),
    /// The input holds no complete message yet.
    NeedMore,
}

/// Why hub protocol bytes could not be decoded (or a payload transcoded). The messages follow
/// ASP.NET Core's `InvalidDataException` texts where it has one, because detailed-errors mode
/// sends them to the client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HubProtocolError {
    /// Not valid JSON (the parser's description).
    #[error("{0}")]
    Json(String),
    /// Not valid MessagePack, or a value of the wrong MessagePack type (description).
    #[error("{0}")]
    MessagePack(String),
    /// A required property is absent.
    #[error("Missing required property '{0}'.")]
    MissingProperty(&'static str),
    /// A property has the wrong type.
    #[error("Expected '{property}' to be of type {expected}.")]
    WrongType {
        /// The property.
        property: &'static str,
        /// The expected JSON/MessagePack type, as ASP.NET names it.
        expected: &'static str,
    },
    /// A header value that is not a string.
    #[error("Expected header '{0}' to be of type String.")]
    HeaderNotString(String),
    /// A header with an empty key or value (MessagePack).
    #[error("Null or empty key in header.")]
    EmptyHeader,
    /// A Completion with both `error` and `result`.
    #[error("The 'error' and 'result' properties are mutually exclusive.")]
    ErrorAndResult,
    /// A MessagePack Completion with a result kind other than 1, 2, 3.
    #[error("Invalid invocation result kind.")]
    InvalidResultKind,
    /// An Invocation whose target is null or empty.
    #[error("Null or empty target for Invocation message.")]
    EmptyTarget,
    /// A message that is not a JSON object / MessagePack array.
    #[error("Expected a hub message to be an object (JSON) or an array (MessagePack).")]
    NotAMessage,
    /// No complete message fits in the receive limit (framing included).
    #[error(
        "The maximum message size of {max}B was exceeded. The message size can be configured in AddHubOptions."
    )]
    MessageTooLarge {
        /// The limit in bytes.
        max: usize,
    },
    /// A MessagePack length prefix over 2 GB.
    #[error("Messages over 2GB in size are not supported.")]
    LengthPrefixTooLarge,
    /// JSON nested deeper than the limit (64, as .NET).
    #[error("The maximum depth of 64 has been exceeded.")]
    TooDeep,
}
