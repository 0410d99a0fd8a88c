//! Encode once, fan out reference-counted bytes.
//!
//! A [`PreparedMessage`] holds one server-to-client hub message encoded once per protocol,
//! WebSocket frame header included. Every recipient that speaks that protocol gets a clone of
//! the same `Bytes` (a reference-count bump, no copy); a stateful-reconnect session keeps the
//! frame's payload slice in its resend buffer, again without copying. The bytes are `Send`, so
//! one preparation serves every shard.

use bytes::{Bytes, BytesMut};

use super::conflation::Tag;
use crate::protocol::signalr::{HubMessage, HubProtocol, HubProtocolError};
use crate::protocol::websocket::FrameHeader;
use crate::protocol::websocket::frame::frame_in_place;
use crate::transport::outbox::{HEADROOM, frame_buffer};

/// One message, framed for each protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedMessage {
    /// `[json, messagepack]`: a complete WebSocket frame each.
    frames: [Bytes; 2],
    /// Where the hub message starts in each frame (after the WebSocket header).
    payload_at: [usize; 2],
    /// Whether stateful reconnect counts it (Invocation, StreamItem, Completion, …).
    trackable: bool,
    /// Its hub message type, as counted ([`crate::stats::message_type`]).
    kind: u8,
    /// What it is for conflation, decided where it was published.
    conflation: Option<Tag>,
}

impl PreparedMessage {
    /// Encodes `message` for both protocols.
    ///
    /// # Errors
    /// A payload that cannot be transcoded.
    pub fn new(message: &HubMessage) -> Result<Self, HubProtocolError> {
        Self::per_protocol(message, message)
    }

    /// Encodes `json` for JSON clients and `msgpack` for MessagePack clients: the same message
    /// whose payloads are already in each protocol's encoding (a streamed chunk is encoded once
    /// per protocol, then framed per subscriber).
    ///
    /// # Errors
    /// A payload that cannot be transcoded.
    pub fn per_protocol(json: &HubMessage, msgpack: &HubMessage) -> Result<Self, HubProtocolError> {
        let mut frames = [Bytes::new(), Bytes::new()];
        let mut payload_at = [0; 2];
        for (protocol, message) in [
            (HubProtocol::Json, json),
            (HubProtocol::MessagePack, msgpack),
        ] {
            // Encoded after room for the header, which is then written in place: each payload
            // is copied once, into the frame.
            let mut frame = frame_buffer();
            protocol.encode(message, &mut frame)?;
            let start = frame_in_place(protocol.transfer_format().opcode(), &mut frame);
            frames[index(protocol)] = frame.freeze().slice(start..);
            payload_at[index(protocol)] = HEADROOM - start;
        }
        Ok(Self {
            frames,
            payload_at,
            trackable: json.is_trackable(),
            kind: u8::try_from(crate::stats::message_type(json)).unwrap_or(u8::MAX),
            conflation: None,
        })
    }

    /// Wraps hub messages already framed for each protocol (e.g. received from the Redis
    /// backplane) in WebSocket frames: `json` and `msgpack` are the payloads of one text and one
    /// binary frame. Counted as invocations: the backplane carries those (ASP.NET's
    /// `InvokeAsync`).
    pub fn from_framed(json: &[u8], msgpack: &[u8], trackable: bool) -> Self {
        let mut frames = [Bytes::new(), Bytes::new()];
        let mut payload_at = [0; 2];
        for (protocol, payload) in [
            (HubProtocol::Json, json),
            (HubProtocol::MessagePack, msgpack),
        ] {
            let header = FrameHeader {
                fin: true,
                opcode: protocol.transfer_format().opcode(),
                mask: None,
                payload_len: payload.len() as u64,
            };
            let mut frame = BytesMut::with_capacity(header.encoded_len() + payload.len());
            header.encode(&mut frame);
            payload_at[index(protocol)] = frame.len();
            frame.extend_from_slice(payload);
            frames[index(protocol)] = frame.freeze();
        }
        Self {
            frames,
            payload_at,
            trackable,
            kind: 0,
            conflation: None,
        }
    }

    /// The same message, tagged for conflation.
    #[must_use]
    pub fn with_conflation(mut self, tag: Option<Tag>) -> Self {
        self.conflation = tag;
        self
    }

    /// What it is for conflation.
    pub fn conflation(&self) -> Option<Tag> {
        self.conflation
    }

    /// The complete WebSocket frame for `protocol`.
    pub fn frame(&self, protocol: HubProtocol) -> Bytes {
        self.frames[index(protocol)].clone()
    }

    /// Just the framed hub message for `protocol` (what a resend buffer keeps).
    pub fn payload(&self, protocol: HubProtocol) -> Bytes {
        let i = index(protocol);
        self.frames[i].slice(self.payload_at[i]..)
    }

    /// Its hub message type's index in [`crate::stats::MESSAGE_TYPES`].
    pub fn kind(&self) -> usize {
        usize::from(self.kind)
    }

    /// Whether stateful reconnect counts it.
    pub fn is_trackable(&self) -> bool {
        self.trackable
    }

    /// Bytes a recipient queues for it (the larger frame, for budgeting).
    pub fn len(&self) -> usize {
        self.frames[0].len().max(self.frames[1].len())
    }

    /// Whether it is empty (never, for a real message).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn index(protocol: HubProtocol) -> usize {
    match protocol {
        HubProtocol::Json => 0,
        HubProtocol::MessagePack => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::actions::event;
    use crate::protocol::signalr::Payload;

    #[test]
    fn each_protocol_gets_one_complete_frame_shared_by_reference() {
        let prepared =
            PreparedMessage::new(&event("ReceiveMessage", vec![Payload::string("hi")])).unwrap();
        let json = prepared.frame(HubProtocol::Json);
        assert_eq!(
            &json[..],
            b"\x81\x38{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"hi\"]}\x1e"
        );
        assert_eq!(prepared.frame(HubProtocol::Json).as_ptr(), json.as_ptr());
        let msgpack = prepared.frame(HubProtocol::MessagePack);
        assert_eq!(msgpack[0], 0x82);
        assert_eq!(
            &prepared.payload(HubProtocol::MessagePack)[..],
            &[
                0x18, 0x96, 0x01, 0x80, 0xc0, 0xae, b'R', b'e', b'c', b'e', b'i', b'v', b'e', b'M',
                b'e', b's', b's', b'a', b'g', b'e', 0x91, 0xa2, b'h', b'i', 0x90
            ]
        );
        assert!(prepared.is_trackable());
    }
}
