//! A connection's queue of encoded frames waiting for the socket.
//!
//! Frames are queued as reference-counted [`Bytes`]: a payload shared by many connections (an
//! encode-once broadcast) is queued without copying. [`Outbox::flush`] coalesces small chunks
//! into one write and writes large ones as they are.

use std::collections::VecDeque;
use std::io;

use bytes::{Bytes, BytesMut};
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::protocol::websocket::close::encode_close_payload;
use crate::protocol::websocket::frame::{MAX_SERVER_HEADER_LEN, frame_in_place};
use crate::protocol::websocket::{CloseCode, FrameHeader, OpCode};

/// Payloads up to this size are copied next to their header (one chunk); larger ones are
/// queued by reference after a separate header chunk.
const INLINE_PAYLOAD: usize = 1024;

/// Chunks are coalesced into writes of about this size.
const COALESCE: usize = 64 * 1024;

/// Chunks at least this large are written by themselves rather than copied into a coalesced
/// write (a 32 KB payload is not worth a memcpy to save one syscall).
const WRITE_ALONE: usize = 16 * 1024;

/// The bytes a buffer for [`Outbox::push_frame_in_place`] keeps free in front of the payload:
/// the largest unmasked frame header.
pub const HEADROOM: usize = MAX_SERVER_HEADER_LEN;

/// An empty buffer to encode a frame's payload into for [`Outbox::push_frame_in_place`] (or
/// [`frame_in_place`]): [`HEADROOM`] bytes kept for the header, and room for a typical reply
/// after them.
pub fn frame_buffer() -> BytesMut {
    let mut frame = BytesMut::with_capacity(HEADROOM + 256);
    frame.resize(HEADROOM, 0);
    frame
}

/// Encoded frames not yet written.
#[derive(Debug, Default)]
pub struct Outbox {
    chunks: VecDeque<Bytes>,
    queued: usize,
}

impl Outbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Queues already-encoded frame bytes.
    pub fn push_encoded(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.queued += bytes.len();
        let len = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        crate::stats::local(|s| s.outbox_changed(len));
        self.chunks.push_back(bytes);
    }

    /// Queues one unmasked, final frame carrying `payload`.
    pub fn push_frame(&mut self, opcode: OpCode, payload: Bytes) {
        let header = FrameHeader {
            fin: true,
            opcode,
            mask: None,
            payload_len: payload.len() as u64,
        };
        if payload.len() <= INLINE_PAYLOAD {
            let mut out = BytesMut::with_capacity(header.encoded_len() + payload.len());
            header.encode(&mut out);
            out.extend_from_slice(&payload);
            self.push_encoded(out.freeze());
        } else {
            let mut head = BytesMut::with_capacity(header.encoded_len());
            header.encode(&mut head);
            self.push_encoded(head.freeze());
            self.push_encoded(payload);
        }
    }

    /// Queues one final frame whose payload is `buf[HEADROOM..]`, written in place: the header
    /// goes into the headroom in front of the payload, so the frame is one chunk and the
    /// payload is not copied. Returns the whole frozen buffer (headroom included, so indexes
    /// into `buf` stay valid) for callers that keep parts of the payload by reference.
    pub fn push_frame_in_place(&mut self, opcode: OpCode, mut buf: BytesMut) -> Bytes {
        let start = frame_in_place(opcode, &mut buf);
        let buf = buf.freeze();
        self.push_encoded(buf.slice(start..));
        buf
    }

    /// Queues one final frame whose payload is `parts` concatenated, without copying them (e.g.
    /// several encoded hub messages that are also kept elsewhere for resending).
    pub fn push_frame_parts(&mut self, opcode: OpCode, parts: Vec<Bytes>) {
        let len: usize = parts.iter().map(Bytes::len).sum();
        if len <= INLINE_PAYLOAD {
            let mut joined = BytesMut::with_capacity(len);
            for part in &parts {
                joined.extend_from_slice(part);
            }
            self.push_frame(opcode, joined.freeze());
            return;
        }
        let header = FrameHeader {
            fin: true,
            opcode,
            mask: None,
            payload_len: len as u64,
        };
        let mut head = BytesMut::with_capacity(header.encoded_len());
        header.encode(&mut head);
        self.push_encoded(head.freeze());
        for part in parts {
            self.push_encoded(part);
        }
    }

    /// Queues a close frame with `code` and `reason` (cut to fit a control frame).
    pub fn push_close(&mut self, code: CloseCode, reason: &str) {
        let mut payload = BytesMut::with_capacity(2 + reason.len().min(123));
        encode_close_payload(code, reason, &mut payload);
        self.push_frame(OpCode::Close, payload.freeze());
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// The socket's error; the outbox is then in an unspecified state and the connection is over.
    pub async fn flush(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        while let Some(first) = self.chunks.pop_front() {
            let alone = |next: Option<&Bytes>| next.is_none_or(|next| next.len() >= WRITE_ALONE);
            let chunk = if first.len() >= WRITE_ALONE || alone(self.chunks.front()) {
                first
            } else {
                let mut joined = BytesMut::with_capacity(COALESCE);
                joined.extend_from_slice(&first);
                while let Some(next) = self.chunks.front() {
                    if joined.len() + next.len() > COALESCE || next.len() >= WRITE_ALONE {
                        break;
                    }
                    joined.extend_from_slice(next);
                    self.chunks.pop_front();
                }
                joined.freeze()
            };
            let len = chunk.len();
            let (result, _) = stream.write_all(chunk).await;
            result?;
            self.queued = self.queued.saturating_sub(len);
            crate::stats::local(|s| {
                s.bytes_sent(len as u64);
                s.outbox_changed(-i64::try_from(len).unwrap_or(i64::MAX));
            });
        }
        self.queued = 0;
        // An idle connection keeps no queue allocation; a busy one allocates one per flush,
        // which is noise next to the send itself.
        self.chunks = VecDeque::new();
        Ok(())
    }
}

/// What a connection leaves unwritten (it ended mid-write) no longer counts as queued.
impl Drop for Outbox {
    fn drop(&mut self) {
        if self.queued > 0 {
            let left = i64::try_from(self.queued).unwrap_or(i64::MAX);
            crate::stats::local(|s| s.outbox_changed(-left));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frames_are_one_chunk_and_large_payloads_are_shared() {
        let mut outbox = Outbox::new();
        outbox.push_frame(OpCode::Text, Bytes::from_static(b"hi"));
        assert_eq!(outbox.chunks.len(), 1);
        assert_eq!(&outbox.chunks[0][..], b"\x81\x02hi");
        let big = Bytes::from(vec![7u8; 5000]);
        outbox.push_frame(OpCode::Binary, big.clone());
        assert_eq!(outbox.chunks.len(), 3);
        assert_eq!(&outbox.chunks[1][..], &[0x82, 0x7e, 0x13, 0x88]);
        assert_eq!(outbox.chunks[2].as_ptr(), big.as_ptr());
        assert_eq!(outbox.queued_bytes(), 4 + 4 + 5000);
    }

    #[test]
    fn a_frame_written_in_place_is_one_chunk_sharing_the_payload_buffer() {
        for len in [0, 125, 126, 70_000] {
            let mut outbox = Outbox::new();
            let mut buf = BytesMut::new();
            buf.resize(HEADROOM + len, b'x');
            let whole = outbox.push_frame_in_place(OpCode::Text, buf);
            assert_eq!(outbox.chunks.len(), 1);
            let mut expected = BytesMut::new();
            let mut reference = Outbox::new();
            reference.push_frame(OpCode::Text, Bytes::from(vec![b'x'; len]));
            for chunk in &reference.chunks {
                expected.extend_from_slice(chunk);
            }
            assert_eq!(outbox.chunks[0], expected.freeze(), "{len}");
            assert_eq!(
                outbox.chunks[0].as_ptr_range().end,
                whole.as_ptr_range().end
            );
        }
    }

    #[test]
    fn close_frame_carries_code_and_reason() {
        let mut outbox = Outbox::new();
        outbox.push_close(CloseCode::GOING_AWAY, "bye");
        assert_eq!(&outbox.chunks[0][..], b"\x88\x05\x03\xe9bye");
    }
}
