//! Frame headers: parse and encode (RFC 6455 §5.2,
//! <https://www.rfc-editor.org/rfc/rfc6455#section-5.2>).
//!
//! [`FrameHeader::parse`] reads the 2–14 byte header straight from the read buffer and reports
//! "need at least n bytes" when the header is cut short; it never copies and never allocates.
//! Per-frame rules that need only the header are checked here (reserved bits, opcodes, control
//! frame size and fragmentation, the 63-bit length); rules that need state across frames
//! (masking by role, continuation order, message size, UTF-8) belong to
//! [`super::reader::MessageReader`].

use bytes::{BufMut, BytesMut};
use thiserror::Error;

use super::close::CloseCode;

/// Why a peer's frames broke RFC 6455. Each error maps to one close code ([`Self::close_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// RSV1–3 set although no extension was negotiated.
    #[error("reserved bits set without a negotiated extension")]
    ReservedBitsSet,
    /// An opcode RFC 6455 reserves (3–7, 11–15).
    #[error("reserved opcode {0:#x}")]
    UnknownOpCode(u8),
    /// A control frame (close, ping, pong) without FIN.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame payload longer than 125 bytes")]
    ControlFrameTooLarge,
    /// A 64-bit payload length with its most significant bit set.
    #[error("payload length has the most significant bit set")]
    InvalidLength,
    /// A client frame without a masking key.
    #[error("client frame is not masked")]
    UnmaskedClientFrame,
    /// A continuation frame with no message in progress.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is still open.
    #[error("new data frame while a fragmented message is unfinished")]
    ExpectedContinuation,
    /// A message (all its fragments together) larger than the configured limit.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The size the message would at least have.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// A text message or close reason that is not UTF-8.
    #[error("invalid UTF-8 in text payload")]
    InvalidUtf8,
    /// A close frame with a 1-byte payload.
    #[error("close frame payload of 1 byte")]
    InvalidClosePayload,
    /// A close frame with a code that may not appear on the wire.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
}

impl FrameError {
    /// The close code this error is answered with.
    pub fn close_code(self) -> CloseCode {
        match self {
            Self::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            Self::MessageTooLarge { .. } => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short, stable label for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ReservedBitsSet => "reserved bits set",
            Self::UnknownOpCode(_) => "reserved opcode",
            Self::FragmentedControlFrame => "fragmented control frame",
            Self::ControlFrameTooLarge => "control frame too large",
            Self::InvalidLength => "invalid payload length",
            Self::UnmaskedClientFrame => "unmasked client frame",
            Self::UnexpectedContinuation => "unexpected continuation frame",
            Self::ExpectedContinuation => "expected continuation frame",
            Self::MessageTooLarge { .. } => "message too big",
            Self::InvalidUtf8 => "invalid utf-8",
            Self::InvalidClosePayload => "invalid close payload",
            Self::InvalidCloseCode(_) => "invalid close code",
        }
    }
}

/// The frame type (RFC 6455 §5.2, "Opcode"), with the spec's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation = 0x0,
    /// 0x1: a text (UTF-8) message or its first fragment.
    Text = 0x1,
    /// 0x2: a binary message or its first fragment.
    Binary = 0x2,
    /// 0x8: close.
    Close = 0x8,
    /// 0x9: ping.
    Ping = 0x9,
    /// 0xA: pong.
    Pong = 0xA,
}

impl OpCode {
    /// Decodes the low nibble of the first header byte.
    ///
    /// # Errors
    /// [`FrameError::UnknownOpCode`] for the reserved values.
    pub fn from_u8(value: u8) -> Result<Self, FrameError> {
        Ok(match value {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            other => return Err(FrameError::UnknownOpCode(other)),
        })
    }

    /// Close, ping and pong are control frames.
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// The result of parsing something that may be cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A complete value and how many bytes it used.
    Complete(T, usize),
    /// Not enough input yet: at least this many bytes (in total) are needed.
    NeedAtLeast(usize),
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// The frame type.
    pub opcode: OpCode,
    /// The masking key, present on every client frame.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes (at most 2^63 - 1).
    pub payload_len: u64,
}

impl FrameHeader {
    /// The longest header: 2 bytes + 8 bytes of extended length + 4 bytes of mask.
    pub const MAX_SIZE: usize = 14;

    /// Parses a header from the start of `buf`.
    ///
    /// # Errors
    /// The header-only rules of RFC 6455 §5.2 and §5.5: see [`FrameError`]. Short input is not an
    /// error: it is [`Decoded::NeedAtLeast`].
    pub fn parse(buf: &[u8]) -> Result<Decoded<Self>, FrameError> {
        let [b0, b1, ..] = *buf else {
            return Ok(Decoded::NeedAtLeast(2));
        };
        if b0 & 0x70 != 0 {
            return Err(FrameError::ReservedBitsSet);
        }
        let fin = b0 & 0x80 != 0;
        let opcode = OpCode::from_u8(b0 & 0x0f)?;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7f;
        if opcode.is_control() {
            if !fin {
                return Err(FrameError::FragmentedControlFrame);
            }
            if len7 > 125 {
                return Err(FrameError::ControlFrameTooLarge);
            }
        }
        let len_bytes = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let header_len = 2 + len_bytes + if masked { 4 } else { 0 };
        if buf.len() < header_len {
            return Ok(Decoded::NeedAtLeast(header_len));
        }
        let payload_len = match len7 {
            126 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
            127 => {
                let mut be = [0u8; 8];
                be.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(be);
                if len & (1 << 63) != 0 {
                    return Err(FrameError::InvalidLength);
                }
                len
            }
            short => u64::from(short),
        };
        let mask = masked.then(|| {
            let at = 2 + len_bytes;
            [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]
        });
        Ok(Decoded::Complete(
            Self {
                fin,
                opcode,
                mask,
                payload_len,
            },
            header_len,
        ))
    }

    /// The encoded size of this header.
    pub fn encoded_len(&self) -> usize {
        let len_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xffff => 2,
            _ => 8,
        };
        2 + len_bytes + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Appends the header to `out` using the shortest length encoding.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        self.write(out);
    }

    /// Writes the header to `out`, which has room for [`Self::encoded_len`] bytes.
    fn write(&self, out: &mut impl BufMut) {
        let b0 = (u8::from(self.fin) << 7) | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        out.put_u8(b0);
        match self.payload_len {
            // invariant: each arm's range makes the narrowing cast lossless.
            len @ 0..=125 => out.put_u8(mask_bit | len as u8),
            len @ 126..=0xffff => {
                out.put_u8(mask_bit | 126);
                out.put_u16(len as u16);
            }
            len => {
                out.put_u8(mask_bit | 127);
                out.put_u64(len);
            }
        }
        if let Some(mask) = self.mask {
            out.put_slice(&mask);
        }
    }
}

/// The longest header of an unmasked (server-to-client) frame: the room
/// [`frame_in_place`] needs in front of a payload.
pub const MAX_SERVER_HEADER_LEN: usize = 10;

/// Makes `buf` one final unmasked frame without moving its payload: the payload is
/// `buf[MAX_SERVER_HEADER_LEN..]` (a shorter `buf` is padded to an empty payload), and the header
/// is written into the room in front of it. Returns where the frame starts in `buf`.
pub fn frame_in_place(opcode: OpCode, buf: &mut BytesMut) -> usize {
    if buf.len() < MAX_SERVER_HEADER_LEN {
        buf.resize(MAX_SERVER_HEADER_LEN, 0);
    }
    let header = FrameHeader {
        fin: true,
        opcode,
        mask: None,
        payload_len: (buf.len() - MAX_SERVER_HEADER_LEN) as u64,
    };
    let start = MAX_SERVER_HEADER_LEN - header.encoded_len();
    let mut room = &mut buf[start..MAX_SERVER_HEADER_LEN];
    header.write(&mut room);
    start
}

/// Appends one complete unmasked (server-to-client) frame: header and payload.
pub fn encode_frame(opcode: OpCode, payload: &[u8], out: &mut BytesMut) {
    let header = FrameHeader {
        fin: true,
        opcode,
        mask: None,
        payload_len: payload.len() as u64,
    };
    out.reserve(header.encoded_len() + payload.len());
    header.encode(out);
    out.put_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_made_in_place_matches_one_encoded_normally_and_a_short_buffer_is_an_empty_frame() {
        for len in [0, 1, 125, 126, 0xffff, 0x10000] {
            let mut buf = BytesMut::new();
            buf.resize(MAX_SERVER_HEADER_LEN + len, b'p');
            let start = frame_in_place(OpCode::Binary, &mut buf);
            let mut expected = BytesMut::new();
            encode_frame(OpCode::Binary, &vec![b'p'; len], &mut expected);
            assert_eq!(&buf[start..], &expected[..], "{len}");
        }
        let mut short = BytesMut::from(&b"ab"[..]);
        let start = frame_in_place(OpCode::Text, &mut short);
        assert_eq!(&short[start..], &[0x81, 0x00]);
    }

    fn header(bytes: &[u8]) -> Result<Decoded<FrameHeader>, FrameError> {
        FrameHeader::parse(bytes)
    }

    #[test]
    fn rfc_masked_hello_header_parses() {
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let Decoded::Complete(h, used) = header(&bytes).unwrap() else {
            panic!("complete header expected")
        };
        assert_eq!(used, 6);
        assert!(h.fin);
        assert_eq!(h.opcode, OpCode::Text);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        assert_eq!(h.payload_len, 5);
    }

    #[test]
    fn short_input_asks_for_more_instead_of_failing() {
        assert_eq!(header(&[]), Ok(Decoded::NeedAtLeast(2)));
        assert_eq!(header(&[0x82]), Ok(Decoded::NeedAtLeast(2)));
        assert_eq!(header(&[0x82, 0xfe, 0x01]), Ok(Decoded::NeedAtLeast(8)));
        assert_eq!(header(&[0x82, 0xff, 0, 0, 0]), Ok(Decoded::NeedAtLeast(14)));
        assert_eq!(header(&[0x82, 0x7f, 0, 0]), Ok(Decoded::NeedAtLeast(10)));
    }

    #[test]
    fn sixteen_and_sixty_four_bit_lengths_parse() {
        let Decoded::Complete(h, used) = header(&[0x82, 0x7e, 0x01, 0x00]).unwrap() else {
            panic!()
        };
        assert_eq!((h.payload_len, used), (256, 4));
        let Decoded::Complete(h, used) =
            header(&[0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4]).unwrap()
        else {
            panic!()
        };
        assert_eq!((h.payload_len, used), (1 << 32, 14));
    }

    #[test]
    fn length_with_the_top_bit_set_is_rejected() {
        let bytes = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(header(&bytes), Err(FrameError::InvalidLength));
        let max_ok = [
            0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
        ];
        assert!(matches!(header(&max_ok), Ok(Decoded::Complete(..))));
    }

    #[test]
    fn reserved_bits_are_rejected() {
        for b0 in [0xc1u8, 0xa1, 0x91] {
            assert_eq!(header(&[b0, 0x80]), Err(FrameError::ReservedBitsSet));
        }
    }

    #[test]
    fn reserved_opcodes_are_rejected() {
        for op in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                header(&[0x80 | op, 0x80]),
                Err(FrameError::UnknownOpCode(op))
            );
        }
    }

    #[test]
    fn control_frames_must_be_final_and_short() {
        assert_eq!(
            header(&[0x09, 0x80]),
            Err(FrameError::FragmentedControlFrame)
        );
        assert_eq!(header(&[0x89, 0xfe]), Err(FrameError::ControlFrameTooLarge));
        assert_eq!(header(&[0x88, 0xff]), Err(FrameError::ControlFrameTooLarge));
        assert!(matches!(
            header(&[0x89, 0xfd, 1, 2, 3, 4]),
            Ok(Decoded::Complete(..))
        ));
    }

    #[test]
    fn headers_round_trip_through_encode() {
        for len in [0u64, 1, 125, 126, 127, 0xffff, 0x10000, 1 << 40] {
            for mask in [None, Some([9, 8, 7, 6])] {
                for (fin, opcode) in [(true, OpCode::Binary), (false, OpCode::Text)] {
                    let h = FrameHeader {
                        fin,
                        opcode,
                        mask,
                        payload_len: len,
                    };
                    let mut out = BytesMut::new();
                    h.encode(&mut out);
                    assert_eq!(out.len(), h.encoded_len());
                    assert_eq!(header(&out), Ok(Decoded::Complete(h, out.len())));
                }
            }
        }
    }

    #[test]
    fn server_frames_use_the_shortest_length_and_no_mask() {
        let mut out = BytesMut::new();
        encode_frame(OpCode::Text, b"Hello", &mut out);
        assert_eq!(&out[..], b"\x81\x05Hello");
        let mut out = BytesMut::new();
        encode_frame(OpCode::Binary, &[0u8; 256], &mut out);
        assert_eq!(&out[..4], &[0x82, 0x7e, 0x01, 0x00]);
        let mut out = BytesMut::new();
        encode_frame(OpCode::Binary, &vec![0u8; 65536], &mut out);
        assert_eq!(&out[..10], &[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn each_error_maps_to_its_close_code() {
        assert_eq!(FrameError::InvalidUtf8.close_code(), CloseCode(1007));
        assert_eq!(
            FrameError::MessageTooLarge { len: 2, max: 1 }.close_code(),
            CloseCode(1009)
        );
        assert_eq!(FrameError::ReservedBitsSet.close_code(), CloseCode(1002));
        assert_eq!(
            FrameError::UnmaskedClientFrame.close_code(),
            CloseCode(1002)
        );
    }
}
