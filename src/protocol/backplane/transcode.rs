//! Re-encoding a serialized hub message for a protocol its publisher did not include.
//!
//! A .NET node publishes one serialization per protocol *it* registered, which is often JSON
//! only (Conduit never calls `AddMessagePackProtocol`). .NET itself drops the message for a
//! client whose protocol is missing; ringhub instead decodes the framed message with the hub
//! protocol codec ([`HubProtocol::decode`]) and encodes it again ([`HubProtocol::encode`]), so
//! a MessagePack client still gets it. Argument values cross over through
//! [`crate::protocol::signalr::Value`]; what cannot (a JSON number too large for MessagePack, a
//! MessagePack extension in JSON) fails with the codec's error.
//!
//! The bytes follow ringhub's encoders, not the publisher's serializer settings: a .NET
//! object argument has camelCase property names in JSON and C# names in MessagePack, and
//! transcoding keeps the names it was given.

use bytes::{Bytes, BytesMut};

use super::BackplaneProtocolError;
use crate::protocol::signalr::{Decoded, HubMessage, HubProtocol};

/// Re-encodes `framed`, one or more complete framed hub messages in `from`, as the same
/// messages framed in `to`. When the protocols are the same the bytes are returned as they are
/// (a reference-count bump).
///
/// # Errors
/// [`BackplaneProtocolError::IncompleteHubMessage`] when `framed` is empty or ends inside a
/// message; the hub codec's error for a malformed message or a value `to` cannot carry.
pub fn transcode(
    framed: &Bytes,
    from: HubProtocol,
    to: HubProtocol,
) -> Result<Bytes, BackplaneProtocolError> {
    if from == to {
        return Ok(framed.clone());
    }
    let mut out = BytesMut::with_capacity(framed.len() + framed.len() / 4 + 8);
    let mut rest = framed.clone();
    loop {
        let (message, used) = decode_first(&rest, from)?;
        to.encode(&message, &mut out)?;
        rest = rest.slice(used.min(rest.len())..);
        if rest.is_empty() {
            return Ok(out.freeze());
        }
    }
}

/// The first hub message in `framed` and the bytes it used (at least one).
///
/// # Errors
/// [`BackplaneProtocolError::IncompleteHubMessage`] when `framed` holds no complete message;
/// the hub codec's error for a malformed one.
pub(super) fn decode_first(
    framed: &Bytes,
    protocol: HubProtocol,
) -> Result<(HubMessage, usize), BackplaneProtocolError> {
    // No size limit: `framed` is already in memory, and its length bounds the decoders.
    match protocol.decode(framed, usize::MAX)? {
        Decoded::Message(message, used) if used > 0 => Ok((message, used)),
        Decoded::Message(..) | Decoded::NeedMore => {
            Err(BackplaneProtocolError::IncompleteHubMessage {
                protocol: protocol.name(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::signalr::{
        Completion, CompletionOutcome, Headers, HubProtocolError, Invocation, Payload, Value,
    };

    fn framed(protocol: HubProtocol, messages: &[HubMessage]) -> Bytes {
        let mut out = BytesMut::new();
        for message in messages {
            protocol.encode(message, &mut out).unwrap();
        }
        out.freeze()
    }

    fn invocation(arguments: Vec<Payload>) -> HubMessage {
        HubMessage::Invocation(Invocation {
            headers: Headers::new(),
            invocation_id: None,
            target: "ReceiveMessage".into(),
            arguments,
            stream_ids: Vec::new(),
        })
    }

    #[test]
    fn a_dotnet_json_frame_becomes_the_messagepack_frame_dotnet_would_have_written() {
        let json = Bytes::from_static(
            b"{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"hi\"]}\x1e",
        );
        let msgpack = transcode(&json, HubProtocol::Json, HubProtocol::MessagePack).unwrap();
        assert_eq!(
            msgpack.as_ref(),
            b"\x18\x96\x01\x80\xc0\xaeReceiveMessage\x91\xa2hi\x90"
        );
        assert_eq!(
            transcode(&msgpack, HubProtocol::MessagePack, HubProtocol::Json),
            Ok(json)
        );
    }

    #[test]
    fn nested_arguments_and_headers_survive_a_round_trip_through_the_other_protocol() {
        let argument = Value::Map(vec![
            (Value::Str("taskId".into()), Value::Str("t-1".into())),
            (Value::Str("progress".into()), Value::Int(42)),
            (
                Value::Str("tags".into()),
                Value::Array(vec![Value::Bool(true), Value::Null, Value::Float(0.5)]),
            ),
        ]);
        let mut message = invocation(vec![Payload::from_value(argument), Payload::string("x")]);
        if let HubMessage::Invocation(inner) = &mut message {
            inner.headers = Headers(vec![("k".into(), "v".into())]);
        }
        for (from, to) in [
            (HubProtocol::Json, HubProtocol::MessagePack),
            (HubProtocol::MessagePack, HubProtocol::Json),
        ] {
            let source = framed(from, std::slice::from_ref(&message));
            let there = transcode(&source, from, to).unwrap();
            assert_eq!(there, framed(to, std::slice::from_ref(&message)));
            assert_eq!(transcode(&there, to, from), Ok(source));
        }
    }

    #[test]
    fn every_message_in_a_serialization_is_transcoded_in_order() {
        let messages = [
            invocation(vec![Payload::string("a")]),
            HubMessage::Completion(Completion {
                headers: Headers::new(),
                invocation_id: "1".into(),
                outcome: CompletionOutcome::Result(Payload::from_value(Value::Int(7))),
            }),
            HubMessage::Ping,
        ];
        let json = framed(HubProtocol::Json, &messages);
        assert_eq!(
            transcode(&json, HubProtocol::Json, HubProtocol::MessagePack),
            Ok(framed(HubProtocol::MessagePack, &messages))
        );
    }

    #[test]
    fn the_same_protocol_hands_back_the_same_bytes() {
        let json = framed(HubProtocol::Json, &[HubMessage::Ping]);
        let same = transcode(&json, HubProtocol::Json, HubProtocol::Json).unwrap();
        assert_eq!(same.as_ptr(), json.as_ptr());
    }

    #[test]
    fn empty_cut_or_malformed_serializations_fail_without_output() {
        let incomplete =
            |protocol: &'static str| Err(BackplaneProtocolError::IncompleteHubMessage { protocol });
        let to_msgpack = |bytes: &'static [u8]| {
            transcode(
                &Bytes::from_static(bytes),
                HubProtocol::Json,
                HubProtocol::MessagePack,
            )
        };
        let to_json = |bytes: &'static [u8]| {
            transcode(
                &Bytes::from_static(bytes),
                HubProtocol::MessagePack,
                HubProtocol::Json,
            )
        };
        assert_eq!(to_msgpack(b""), incomplete("json"));
        assert_eq!(to_msgpack(b"{\"type\":6}"), incomplete("json"));
        assert_eq!(
            to_msgpack(b"{\"type\":6}\x1e{\"type\":6}"),
            incomplete("json")
        );
        assert_eq!(to_json(b""), incomplete("messagepack"));
        assert_eq!(to_json(b"\x02\x91"), incomplete("messagepack"));
        assert_eq!(
            to_json(b"\xff\xff\xff\xff\x07\x91"),
            incomplete("messagepack")
        );
        assert!(matches!(
            to_msgpack(b"{\"type\":1,\x1e"),
            Err(BackplaneProtocolError::HubProtocol(HubProtocolError::Json(
                _
            )))
        ));
        assert_eq!(
            to_json(b"\x01\x2a"),
            Err(BackplaneProtocolError::HubProtocol(
                HubProtocolError::NotAMessage
            ))
        );
        assert_eq!(
            to_json(b"\xff\xff\xff\xff\x7f"),
            Err(BackplaneProtocolError::HubProtocol(
                HubProtocolError::LengthPrefixTooLarge
            ))
        );
    }
}
