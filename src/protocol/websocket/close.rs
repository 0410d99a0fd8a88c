//! Close codes and close-frame payloads (RFC 6455 §5.5.1 and §7.4,
//! <https://www.rfc-editor.org/rfc/rfc6455#section-7.4>).
//!
//! Owns which codes may appear on the wire and how a close payload is parsed and built. It does
//! not decide *when* to close; that is [`crate::protocol::websocket::reader`]'s caller's job.

use std::fmt;

use bytes::{BufMut, BytesMut};

use super::frame::FrameError;

/// A WebSocket close status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the server is going down or the peer went away (also: idle timeout).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no status code was present. Never sent on the wire.
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: the connection dropped without a close frame. Never sent on the wire.
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: a text message was not valid UTF-8.
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message was larger than the endpoint accepts.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1013: try again later (the server is overloaded).
    pub const TRY_AGAIN_LATER: Self = Self(1013);

    /// Whether a peer may send this code in a close frame.
    ///
    /// 1000–1003 and 1007–1014 are registered for use on the wire, 3000–3999 belong to libraries
    /// and frameworks and 4000–4999 to applications. 1004–1006 and 1015 are reserved or "never
    /// on the wire"; everything else is unassigned and therefore a protocol error.
    pub fn is_allowed_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The longest reason that fits a control frame: 125 bytes minus the 2-byte code.
pub const MAX_REASON_LEN: usize = 123;

/// The parsed payload of a close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code; `None` when the frame had an empty payload (reported as 1005).
    pub code: Option<CloseCode>,
    /// The UTF-8 reason, possibly empty.
    pub reason: String,
}

impl CloseFrame {
    /// Parses a close frame payload (already unmasked).
    ///
    /// # Errors
    /// A 1-byte payload or a code not allowed on the wire is [`FrameError::InvalidClosePayload`]
    /// or [`FrameError::InvalidCloseCode`]; a reason that is not UTF-8 is
    /// [`FrameError::InvalidUtf8`].
    pub fn parse(payload: &[u8]) -> Result<Self, FrameError> {
        match payload.len() {
            0 => Ok(Self {
                code: None,
                reason: String::new(),
            }),
            1 => Err(FrameError::InvalidClosePayload),
            _ => {
                let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                if !code.is_allowed_on_wire() {
                    return Err(FrameError::InvalidCloseCode(code.0));
                }
                let reason = std::str::from_utf8(&payload[2..])
                    .map_err(|_| FrameError::InvalidUtf8)?
                    .to_owned();
                Ok(Self {
                    code: Some(code),
                    reason,
                })
            }
        }
    }
}

/// Writes a close payload (code + reason) into `out`, truncating the reason at a character
/// boundary so the payload stays within the 125-byte control-frame limit.
pub fn encode_close_payload(code: CloseCode, reason: &str, out: &mut BytesMut) {
    out.put_u16(code.0);
    out.put_slice(truncate_reason(reason).as_bytes());
}

/// `reason` cut to at most [`MAX_REASON_LEN`] bytes without splitting a character.
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_close_payload_has_no_code() {
        let frame = CloseFrame::parse(b"").unwrap();
        assert_eq!(frame.code, None);
    }

    #[test]
    fn one_byte_close_payload_is_a_protocol_error() {
        assert_eq!(
            CloseFrame::parse(&[0x03]),
            Err(FrameError::InvalidClosePayload)
        );
    }

    #[test]
    fn registered_and_application_codes_are_accepted() {
        for code in [
            1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            let payload = code.to_be_bytes();
            assert_eq!(
                CloseFrame::parse(&payload).unwrap().code,
                Some(CloseCode(code))
            );
        }
    }

    #[test]
    fn reserved_and_unassigned_codes_are_rejected() {
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
        ] {
            assert_eq!(
                CloseFrame::parse(&code.to_be_bytes()),
                Err(FrameError::InvalidCloseCode(code)),
                "{code}"
            );
        }
    }

    #[test]
    fn close_reason_must_be_utf8() {
        assert_eq!(
            CloseFrame::parse(&[
                0x03, 0xe8, 0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed,
                0xa0, 0x80
            ]),
            Err(FrameError::InvalidUtf8)
        );
        let ok = CloseFrame::parse(b"\x03\xe8bye").unwrap();
        assert_eq!(ok.reason, "bye");
    }

    #[test]
    fn long_reasons_are_cut_at_a_character_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let cut = truncate_reason(&reason);
        assert!(cut.len() <= MAX_REASON_LEN);
        assert_eq!(cut.len(), 122);
        let mut out = BytesMut::new();
        encode_close_payload(CloseCode::GOING_AWAY, &reason, &mut out);
        assert!(out.len() <= 125);
        assert_eq!(&out[..2], &[0x03, 0xe9]);
    }
}
