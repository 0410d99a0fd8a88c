//! The client side of RFC 6455: the upgrade request, masked frames out, unmasked frames in.
//!
//! No I/O here: [`parse_head`] looks at bytes already read and answers `Ok(None)` when a frame
//! is not complete yet, so the connection decides when to read more.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

/// Continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xa;

const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A frame the server sent that breaks RFC 6455.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Reserved bits set (no extension was negotiated).
    ReservedBits,
    /// An opcode RFC 6455 does not define.
    UnknownOpcode(u8),
    /// A control frame that is fragmented or longer than 125 bytes.
    BadControlFrame,
    /// A frame longer than the configured maximum.
    TooLarge(u64),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedBits => f.write_str("frame has reserved bits set"),
            Self::UnknownOpcode(op) => write!(f, "unknown opcode 0x{op:x}"),
            Self::BadControlFrame => f.write_str("control frame fragmented or over 125 bytes"),
            Self::TooLarge(len) => write!(f, "frame of {len} bytes is over the limit"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A parsed frame header; the payload is `input[head_len..head_len + payload_len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Final fragment of a message.
    pub fin: bool,
    /// The opcode.
    pub opcode: u8,
    /// Header bytes (including a mask key, if any).
    pub head_len: usize,
    /// Payload bytes.
    pub payload_len: usize,
    /// The mask key, if the frame is masked (servers must not mask; tolerated anyway).
    pub mask: Option<[u8; 4]>,
}

impl FrameHead {
    /// Header plus payload.
    pub fn total_len(&self) -> usize {
        self.head_len + self.payload_len
    }
}

/// Parses the frame header at the start of `input`; `Ok(None)` if the header is incomplete.
/// The payload may still be incomplete: check [`FrameHead::total_len`] against the input.
pub fn parse_head(input: &[u8], max_payload: usize) -> Result<Option<FrameHead>, FrameError> {
    let [b0, b1, ..] = *input else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || b1 & 0x7f > 125 {
                return Err(FrameError::BadControlFrame);
            }
        }
        other => return Err(FrameError::UnknownOpcode(other)),
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut head_len) = match b1 & 0x7f {
        126 => {
            let Some(bytes) = input.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
        }
        127 => {
            let Some(bytes) = input.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            (u64::from_be_bytes(be), 10)
        }
        short => (u64::from(short), 2),
    };
    let mask = if masked {
        let Some(bytes) = input.get(head_len..head_len + 4) else {
            return Ok(None);
        };
        head_len += 4;
        Some([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        None
    };
    let payload_len = match usize::try_from(len) {
        Ok(n) if n <= max_payload => n,
        _ => return Err(FrameError::TooLarge(len)),
    };
    Ok(Some(FrameHead {
        fin,
        opcode,
        head_len,
        payload_len,
        mask,
    }))
}

/// Appends one final, masked client frame carrying `payload`.
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    let len = payload.len();
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// XORs `data` with the repeating 4-byte `mask` (masking and unmasking are the same).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// A fresh `Sec-WebSocket-Key` from 16 bytes.
pub fn key_from(bytes: [u8; 16]) -> String {
    STANDARD.encode(bytes)
}

/// The `Sec-WebSocket-Accept` a server must answer for `key`.
pub fn accept_for(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID);
    STANDARD.encode(sha.finalize())
}

/// The upgrade request for `path_and_query` on `host`.
pub fn upgrade_request(host: &str, path_and_query: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         User-Agent: ringhub-loadgen\r\n\r\n"
    )
    .into_bytes()
}

/// The close code in a close frame's payload, if it has one.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    match payload {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_twice_restores_the_payload_for_every_length() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut data = original.clone();
            apply_mask(&mut data, mask);
            if len > 0 {
                assert_ne!(data, original);
            }
            apply_mask(&mut data, mask);
            assert_eq!(data, original);
        }
    }

    #[test]
    fn masking_matches_the_rfc_example() {
        // RFC 6455 §5.7: a masked "Hello" with key 37 fa 21 3d.
        let mut out = Vec::new();
        write_frame(&mut out, OP_TEXT, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            out,
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
    }

    #[test]
    fn client_frames_use_the_extended_lengths_and_parse_back() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload = vec![7u8; len];
            let mut out = Vec::new();
            write_frame(&mut out, OP_BINARY, &payload, [1, 2, 3, 4]);
            let head = parse_head(&out, usize::MAX).unwrap().unwrap();
            assert_eq!(head.payload_len, len);
            assert_eq!(head.total_len(), out.len());
            assert_eq!(head.mask, Some([1, 2, 3, 4]));
            let mut body = out[head.head_len..].to_vec();
            apply_mask(&mut body, [1, 2, 3, 4]);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn an_incomplete_header_asks_for_more_bytes() {
        assert_eq!(parse_head(&[], 1 << 20), Ok(None));
        assert_eq!(parse_head(&[0x81], 1 << 20), Ok(None));
        assert_eq!(parse_head(&[0x82, 126, 0x01], 1 << 20), Ok(None));
        assert_eq!(parse_head(&[0x82, 127, 0, 0, 0], 1 << 20), Ok(None));
    }

    #[test]
    fn a_server_text_frame_parses_with_its_payload_bounds() {
        let frame = [0x81, 0x03, b'{', b'}', 0x1e];
        let head = parse_head(&frame, 1 << 20).unwrap().unwrap();
        assert_eq!(
            head,
            FrameHead {
                fin: true,
                opcode: OP_TEXT,
                head_len: 2,
                payload_len: 3,
                mask: None
            }
        );
    }

    #[test]
    fn broken_frames_are_refused() {
        assert_eq!(parse_head(&[0xc1, 0x00], 10), Err(FrameError::ReservedBits));
        assert_eq!(
            parse_head(&[0x83, 0x00], 10),
            Err(FrameError::UnknownOpcode(3))
        );
        assert_eq!(
            parse_head(&[0x09, 0x00], 10),
            Err(FrameError::BadControlFrame)
        );
        assert_eq!(
            parse_head(&[0x89, 126, 0, 200], 10),
            Err(FrameError::BadControlFrame)
        );
        assert_eq!(parse_head(&[0x82, 11], 10), Err(FrameError::TooLarge(11)));
    }

    #[test]
    fn the_accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
