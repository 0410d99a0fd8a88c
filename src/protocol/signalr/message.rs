//! The nine hub messages (HubProtocol.md, "Message Types"), with the spec's names and numbers.
//!
//! Argument, item and result values are [`Payload`]s: the raw bytes of one value in the
//! encoding it arrived in (a slice of the received frame, no copy). A payload is relayed as is
//! to clients that speak the same protocol and is transcoded through [`Value`] only for clients
//! that speak the other one, or when an action needs to look inside it.

use bytes::Bytes;

use super::value::Value;
use super::{HubProtocol, HubProtocolError};

/// Message headers: string keys and values, in the order received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of header `name` (exact match), if present.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One encoded value (an argument, a stream item, a completion result).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// The UTF-8 JSON text of the value, validated.
    Json(Bytes),
    /// The MessagePack encoding of exactly one value, validated.
    MessagePack(Bytes),
    /// A value built by the server, not yet encoded.
    Value(Value),
}

impl Payload {
    /// A payload holding `value`, encoded lazily for each protocol.
    pub fn from_value(value: Value) -> Self {
        Self::Value(value)
    }

    /// A string payload.
    pub fn string(text: impl Into<String>) -> Self {
        Self::Value(Value::Str(text.into()))
    }

    /// The protocol whose encoding the payload holds (`None` for a server-built value).
    pub fn protocol(&self) -> Option<HubProtocol> {
        match self {
            Self::Json(_) => Some(HubProtocol::Json),
            Self::MessagePack(_) => Some(HubProtocol::MessagePack),
            Self::Value(_) => None,
        }
    }

    /// Decodes the payload into a protocol-neutral [`Value`].
    ///
    /// # Errors
    /// Invalid bytes (cannot happen for payloads produced by the decoders, which validate).
    pub fn to_value(&self) -> Result<Value, HubProtocolError> {
        match self {
            Self::Json(bytes) => super::json::decode_value(bytes),
            Self::MessagePack(bytes) => super::msgpack::decode_value(bytes),
            Self::Value(value) => Ok(value.clone()),
        }
    }

    /// The payload as a string, if it is one.
    pub fn as_string(&self) -> Option<String> {
        match self.to_value() {
            Ok(Value::Str(s)) => Some(s),
            _ => None,
        }
    }
}

/// Invocation (1) and StreamInvocation (4): call `target` with `arguments`.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// Message headers.
    pub headers: Headers,
    /// Present when the caller expects a Completion; absent for a non-blocking invocation.
    /// Always present on a StreamInvocation.
    pub invocation_id: Option<String>,
    /// The method name.
    pub target: String,
    /// The arguments, in order.
    pub arguments: Vec<Payload>,
    /// Ids of client-to-server streams passed as arguments.
    pub stream_ids: Vec<String>,
}

/// StreamItem (2): one item of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamItem {
    /// Message headers.
    pub headers: Headers,
    /// The stream's invocation (server-to-client) or stream id (client-to-server).
    pub invocation_id: String,
    /// The item (may be null).
    pub item: Payload,
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionOutcome {
    /// A method without a return value finished (JSON: neither `result` nor `error`; MessagePack
    /// result kind 2).
    Void,
    /// A method returned a value (which may be null; kind 3).
    Result(Payload),
    /// A method failed with this message (kind 1).
    Error(String),
}

/// Completion (3): an invocation or stream ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Message headers.
    pub headers: Headers,
    /// The invocation (or client-to-server stream) that ended.
    pub invocation_id: String,
    /// Its outcome.
    pub outcome: CompletionOutcome,
}

/// CancelInvocation (5): stop a server-to-client stream.
#[derive(Debug, Clone, PartialEq)]
pub struct CancelInvocation {
    /// Message headers.
    pub headers: Headers,
    /// The stream to cancel.
    pub invocation_id: String,
}

/// Close (7): the sender is closing the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Close {
    /// Why, when the close is caused by an error.
    pub error: Option<String>,
    /// Whether the client may reconnect (the JS client's automatic reconnect runs only if so).
    pub allow_reconnect: bool,
}

/// A hub protocol message.
#[derive(Debug, Clone, PartialEq)]
pub enum HubMessage {
    /// 1: call a method.
    Invocation(Invocation),
    /// 2: one stream item.
    StreamItem(StreamItem),
    /// 3: an invocation or stream ended.
    Completion(Completion),
    /// 4: call a streaming method (`invocation_id` always set).
    StreamInvocation(Invocation),
    /// 5: cancel a stream.
    CancelInvocation(CancelInvocation),
    /// 6: keep-alive.
    Ping,
    /// 7: closing.
    Close(Close),
    /// 8: stateful reconnect: the sender has received every message up to this sequence id.
    Ack(i64),
    /// 9: stateful reconnect: the next message the sender sends has this sequence id.
    Sequence(i64),
    /// A message type this implementation does not know; ignored, as ASP.NET does.
    Unknown(i64),
}

impl HubMessage {
    /// The spec's `type` number.
    pub fn type_id(&self) -> i64 {
        match self {
            Self::Invocation(_) => 1,
            Self::StreamItem(_) => 2,
            Self::Completion(_) => 3,
            Self::StreamInvocation(_) => 4,
            Self::CancelInvocation(_) => 5,
            Self::Ping => 6,
            Self::Close(_) => 7,
            Self::Ack(_) => 8,
            Self::Sequence(_) => 9,
            Self::Unknown(t) => *t,
        }
    }

    /// Whether stateful reconnect counts and buffers this message (types 1–5).
    pub fn is_trackable(&self) -> bool {
        matches!(self.type_id(), 1..=5) && !matches!(self, Self::Unknown(_))
    }
}
