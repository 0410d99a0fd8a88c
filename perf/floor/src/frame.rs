//! WebSocket framing (RFC 6455 §5), only as much as the floor needs: find one masked client frame
//! at the start of a buffer and unmask it in place, and build an unmasked server frame.

use std::ops::Range;

/// Largest client payload accepted; a bigger frame closes the connection with 1009.
pub(crate) const MAX_PAYLOAD: u64 = 64 << 20;

/// Continuation frame.
pub(crate) const OP_CONTINUATION: u8 = 0x0;
/// Text data frame.
pub(crate) const OP_TEXT: u8 = 0x1;
/// Binary data frame.
pub(crate) const OP_BINARY: u8 = 0x2;
/// Close control frame.
pub(crate) const OP_CLOSE: u8 = 0x8;
/// Ping control frame.
pub(crate) const OP_PING: u8 = 0x9;
/// Pong control frame.
pub(crate) const OP_PONG: u8 = 0xA;

/// Close code for a protocol error.
pub(crate) const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code for a data type the endpoint does not accept (here: fragmented messages).
pub(crate) const CLOSE_UNSUPPORTED: u16 = 1003;
/// Close code for a message too big to process.
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;

/// One complete client frame at the start of a buffer, already unmasked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Whether this is the last fragment of its message.
    pub(crate) fin: bool,
    /// The frame's opcode (`OP_*`).
    pub(crate) opcode: u8,
    /// Where the payload sits in the buffer.
    pub(crate) payload: Range<usize>,
}

/// What the start of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A complete frame, and how many bytes it took.
    Frame(Frame, usize),
    /// Not a complete frame yet: the buffer must hold at least this many bytes.
    Need(usize),
    /// A frame this server refuses; close the connection with this code.
    Refused(u16),
}

/// Parses the client frame at the start of `buf`, unmasking its payload in place when complete.
pub(crate) fn parse(buf: &mut [u8]) -> Parsed {
    if buf.len() < 2 {
        return Parsed::Need(2);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    if b0 & 0x70 != 0 || b1 & 0x80 == 0 {
        // Reserved bits without an extension, or an unmasked client frame.
        return Parsed::Refused(CLOSE_PROTOCOL_ERROR);
    }
    let (len, mut at) = match b1 & 0x7F {
        126 if buf.len() < 4 => return Parsed::Need(4),
        126 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() < 10 => return Parsed::Need(10),
        127 => {
            let mut be = [0; 8];
            be.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(be), 10)
        }
        short => (u64::from(short), 2),
    };
    if opcode >= OP_CLOSE && (len > 125 || !fin) {
        return Parsed::Refused(CLOSE_PROTOCOL_ERROR);
    }
    if len > MAX_PAYLOAD {
        return Parsed::Refused(CLOSE_TOO_BIG);
    }
    // invariant: len <= MAX_PAYLOAD, which fits a usize on every target this builds for.
    let len = len as usize;
    let total = at + 4 + len;
    if buf.len() < total {
        return Parsed::Need(total);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    for (i, byte) in buf[at..total].iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
    Parsed::Frame(
        Frame {
            fin,
            opcode,
            payload: at..total,
        },
        total,
    )
}

/// Builds an unmasked, final server frame: header and payload in one buffer, ready to be written
/// to any number of sockets.
pub(crate) fn build(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => out.push(len as u8),
        len @ 126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// Builds a close frame carrying `code` and no reason.
pub(crate) fn close(code: u16) -> Vec<u8> {
    build(OP_CLOSE, &code.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = build(opcode, payload);
        if !fin {
            out[0] &= 0x7F;
        }
        out[1] |= 0x80;
        let at = out.len() - payload.len();
        for (i, byte) in out[at..].iter_mut().enumerate() {
            *byte ^= mask[i & 3];
        }
        out.splice(at..at, mask);
        out
    }

    #[test]
    fn a_masked_text_frame_is_unmasked_in_place() {
        let mut buf = masked(OP_TEXT, true, b"hello");
        let Parsed::Frame(frame, used) = parse(&mut buf) else {
            panic!("expected a frame");
        };
        assert_eq!(used, buf.len());
        assert!(frame.fin);
        assert_eq!(frame.opcode, OP_TEXT);
        assert_eq!(&buf[frame.payload], b"hello");
    }

    #[test]
    fn payload_lengths_use_the_16_and_64_bit_forms() {
        for len in [125, 126, 1070, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let server = build(OP_BINARY, &payload);
            let header = match len {
                0..=125 => 2,
                126..=65_535 => 4,
                _ => 10,
            };
            assert_eq!(server.len(), header + len, "server frame of {len}");
            let mut buf = masked(OP_BINARY, true, &payload);
            let Parsed::Frame(frame, used) = parse(&mut buf) else {
                panic!("expected a frame of {len}");
            };
            assert_eq!(used, header + 4 + len);
            assert_eq!(&buf[frame.payload], &payload[..]);
        }
    }

    #[test]
    fn a_partial_frame_asks_for_the_bytes_it_lacks() {
        let full = masked(OP_TEXT, true, &[b'x'; 300]);
        assert_eq!(parse(&mut full[..1].to_vec()), Parsed::Need(2));
        assert_eq!(parse(&mut full[..3].to_vec()), Parsed::Need(4));
        assert_eq!(parse(&mut full[..100].to_vec()), Parsed::Need(full.len()));
    }

    #[test]
    fn an_unmasked_client_frame_is_a_protocol_error() {
        let mut buf = build(OP_TEXT, b"hi");
        assert_eq!(parse(&mut buf), Parsed::Refused(CLOSE_PROTOCOL_ERROR));
    }

    #[test]
    fn a_control_frame_longer_than_125_bytes_is_a_protocol_error() {
        let mut buf = masked(OP_PING, true, &[0; 126]);
        assert_eq!(parse(&mut buf), Parsed::Refused(CLOSE_PROTOCOL_ERROR));
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_as_too_big() {
        let mut buf = vec![0x82, 0xFF];
        buf.extend_from_slice(&(MAX_PAYLOAD + 1).to_be_bytes());
        assert_eq!(parse(&mut buf), Parsed::Refused(CLOSE_TOO_BIG));
    }

    #[test]
    fn a_non_final_fragment_is_reported_as_not_fin() {
        let mut buf = masked(OP_TEXT, false, b"part");
        let Parsed::Frame(frame, _) = parse(&mut buf) else {
            panic!("expected a frame");
        };
        assert!(!frame.fin);
    }

    #[test]
    fn a_close_frame_carries_its_code() {
        assert_eq!(close(1000), vec![0x88, 2, 0x03, 0xE8]);
    }
}
