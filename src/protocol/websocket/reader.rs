//! Turns a client's byte stream into WebSocket messages, zero-copy (RFC 6455 §5.4–§5.6,
//! <https://www.rfc-editor.org/rfc/rfc6455#section-5.4>).
//!
//! [`MessageReader::poll`] works on the connection's read buffer in place: it parses a header,
//! unmasks payload bytes where they lie, checks UTF-8 as bytes arrive (failing fast, even in
//! the middle of a frame), and hands a complete single-frame message on as a [`Bytes`] split off
//! the read buffer without copying. Only fragmented messages are copied, once, into their
//! reassembly buffer. Short input is [`ReadEvent::NeedAtLeast`], never an error.
//!
//! This is the server role: every client frame must be masked.

use bytes::{Buf, Bytes, BytesMut};

use super::close::CloseFrame;
use super::frame::{Decoded, FrameError, FrameHeader, OpCode};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// A complete message or control frame from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; the bytes are valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping with its application data (to be echoed in a pong).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame, already validated.
    Close(CloseFrame),
}

/// What [`MessageReader::poll`] found in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadEvent {
    /// A message was taken off the front of the buffer.
    Message(Message),
    /// The buffer must hold at least this many bytes before the next event can be produced.
    NeedAtLeast(usize),
}

/// The frame whose header has been parsed but whose payload may still be arriving.
#[derive(Debug, Clone, Copy)]
struct InFrame {
    header: FrameHeader,
    header_len: usize,
    /// Payload bytes already unmasked (and UTF-8 checked, for text) in the buffer.
    processed: usize,
    /// Whether this frame's payload is part of a text message.
    is_text: bool,
}

/// A fragmented message being reassembled.
#[derive(Debug)]
struct Fragmented {
    opcode: OpCode,
    data: BytesMut,
}

/// Server-side reader state for one connection.
#[derive(Debug)]
pub struct MessageReader {
    max_message_size: usize,
    current: Option<InFrame>,
    /// Boxed: every idle connection carries a reader, few ever fragment.
    fragmented: Option<Box<Fragmented>>,
    utf8: Utf8Validator,
}

impl MessageReader {
    /// A reader that accepts messages of up to `max_message_size` bytes (all fragments together).
    pub fn new(max_message_size: usize) -> Self {
        Self {
            max_message_size,
            current: None,
            fragmented: None,
            utf8: Utf8Validator::new(),
        }
    }

    /// Takes the next message off the front of `buf`.
    ///
    /// Bytes of an unfinished frame stay in `buf` (unmasked as far as they go); call again
    /// when more bytes have been appended.
    ///
    /// # Errors
    /// Any rule of RFC 6455 the peer broke; see [`FrameError::close_code`] for the answer.
    pub fn poll(&mut self, buf: &mut BytesMut) -> Result<ReadEvent, FrameError> {
        loop {
            let frame = match self.current {
                Some(frame) => frame,
                None => match FrameHeader::parse(buf)? {
                    Decoded::NeedAtLeast(n) => return Ok(ReadEvent::NeedAtLeast(n)),
                    Decoded::Complete(header, header_len) => {
                        let frame = self.start_frame(header, header_len)?;
                        self.current = Some(frame);
                        frame
                    }
                },
            };
            let frame = self.unmask_available(frame, buf)?;
            // invariant: the header was validated to fit the message limit, a usize.
            let payload_len =
                usize::try_from(frame.header.payload_len).map_err(|_| FrameError::InvalidLength)?;
            if frame.processed < payload_len {
                self.current = Some(frame);
                return Ok(ReadEvent::NeedAtLeast(frame.header_len + payload_len));
            }
            self.current = None;
            buf.advance(frame.header_len);
            let payload = buf.split_to(payload_len).freeze();
            if let Some(message) = self.finish_frame(frame, payload)? {
                return Ok(ReadEvent::Message(message));
            }
        }
    }

    /// Checks the rules that depend on what came before, and prepares UTF-8 checking.
    fn start_frame(
        &mut self,
        header: FrameHeader,
        header_len: usize,
    ) -> Result<InFrame, FrameError> {
        if header.mask.is_none() {
            return Err(FrameError::UnmaskedClientFrame);
        }
        let is_text = match header.opcode {
            OpCode::Continuation => match &self.fragmented {
                None => return Err(FrameError::UnexpectedContinuation),
                Some(f) => f.opcode == OpCode::Text,
            },
            OpCode::Text | OpCode::Binary if self.fragmented.is_some() => {
                return Err(FrameError::ExpectedContinuation);
            }
            OpCode::Text => {
                self.utf8 = Utf8Validator::new();
                true
            }
            OpCode::Binary | OpCode::Close | OpCode::Ping | OpCode::Pong => false,
        };
        if !header.opcode.is_control() {
            let so_far = self.fragmented.as_ref().map_or(0, |f| f.data.len()) as u64;
            let total = so_far.saturating_add(header.payload_len);
            if total > self.max_message_size as u64 {
                return Err(FrameError::MessageTooLarge {
                    len: total,
                    max: self.max_message_size,
                });
            }
        }
        Ok(InFrame {
            header,
            header_len,
            processed: 0,
            is_text,
        })
    }

    /// Unmasks (and UTF-8 checks) the payload bytes that arrived since the last call.
    fn unmask_available(
        &mut self,
        mut frame: InFrame,
        buf: &mut BytesMut,
    ) -> Result<InFrame, FrameError> {
        let available = buf.len().saturating_sub(frame.header_len);
        let wanted = usize::try_from(frame.header.payload_len).unwrap_or(usize::MAX);
        let upto = available.min(wanted);
        if upto > frame.processed {
            let start = frame.header_len + frame.processed;
            let end = frame.header_len + upto;
            let fresh = &mut buf[start..end];
            if let Some(key) = frame.header.mask {
                apply_mask(fresh, key, frame.processed);
            }
            if frame.is_text {
                self.utf8.feed(fresh).map_err(|_| FrameError::InvalidUtf8)?;
            }
            frame.processed = upto;
        }
        Ok(frame)
    }

    /// Turns a complete frame into a message, or files it as a fragment.
    fn finish_frame(
        &mut self,
        frame: InFrame,
        payload: Bytes,
    ) -> Result<Option<Message>, FrameError> {
        let header = frame.header;
        Ok(match header.opcode {
            OpCode::Ping => Some(Message::Ping(payload)),
            OpCode::Pong => Some(Message::Pong(payload)),
            OpCode::Close => Some(Message::Close(CloseFrame::parse(&payload)?)),
            OpCode::Text | OpCode::Binary if header.fin => {
                if header.opcode == OpCode::Text {
                    self.utf8.finish().map_err(|_| FrameError::InvalidUtf8)?;
                    Some(Message::Text(payload))
                } else {
                    Some(Message::Binary(payload))
                }
            }
            OpCode::Text | OpCode::Binary => {
                let mut data = BytesMut::with_capacity(payload.len().max(64));
                data.extend_from_slice(&payload);
                self.fragmented = Some(Box::new(Fragmented {
                    opcode: header.opcode,
                    data,
                }));
                None
            }
            OpCode::Continuation => {
                let Some(fragmented) = self.fragmented.as_mut() else {
                    return Err(FrameError::UnexpectedContinuation);
                };
                fragmented.data.extend_from_slice(&payload);
                if !header.fin {
                    return Ok(None);
                }
                let Some(done) = self.fragmented.take() else {
                    return Err(FrameError::UnexpectedContinuation);
                };
                let data = done.data.freeze();
                if done.opcode == OpCode::Text {
                    self.utf8.finish().map_err(|_| FrameError::InvalidUtf8)?;
                    Some(Message::Text(data))
                } else {
                    Some(Message::Binary(data))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;
    use crate::protocol::websocket::close::CloseCode;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        let b0 = if fin { 0x80 } else { 0 } | opcode;
        out.put_u8(b0);
        match payload.len() {
            n @ 0..=125 => out.put_u8(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.put_u8(0x80 | 126);
                out.put_u16(n as u16);
            }
            n => {
                out.put_u8(0x80 | 127);
                out.put_u64(n as u64);
            }
        }
        out.put_slice(&KEY);
        let mut body = payload.to_vec();
        apply_mask(&mut body, KEY, 0);
        out.put_slice(&body);
        out.to_vec()
    }

    fn read_all(reader: &mut MessageReader, bytes: &[u8]) -> Result<Vec<Message>, FrameError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match reader.poll(&mut buf)? {
                ReadEvent::Message(m) => out.push(m),
                ReadEvent::NeedAtLeast(_) => return Ok(out),
            }
        }
    }

    #[test]
    fn rfc_masked_hello_is_one_text_message() {
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let msgs = read_all(&mut MessageReader::new(1024), &bytes).unwrap();
        assert_eq!(msgs, vec![Message::Text(Bytes::from_static(b"Hello"))]);
    }

    #[test]
    fn single_frame_payload_is_split_off_the_read_buffer_without_copying() {
        let bytes = client_frame(true, 2, &[7u8; 300]);
        let mut buf = BytesMut::from(&bytes[..]);
        let base = buf.as_ptr() as usize;
        let ReadEvent::Message(Message::Binary(payload)) =
            MessageReader::new(1024).poll(&mut buf).unwrap()
        else {
            panic!("binary message expected")
        };
        assert_eq!(payload.as_ptr() as usize, base + 4 + 4);
        assert_eq!(&payload[..], &[7u8; 300][..]);
    }

    #[test]
    fn partial_input_is_not_an_error_at_any_split_point() {
        let mut bytes = client_frame(false, 1, "κόσ".as_bytes());
        bytes.extend(client_frame(true, 9, b"ping"));
        bytes.extend(client_frame(true, 0, "με".as_bytes()));
        for cut in 0..bytes.len() {
            let mut reader = MessageReader::new(1024);
            let mut buf = BytesMut::from(&bytes[..cut]);
            let mut msgs = Vec::new();
            loop {
                match reader.poll(&mut buf).unwrap() {
                    ReadEvent::Message(m) => msgs.push(m),
                    ReadEvent::NeedAtLeast(n) => {
                        assert!(n > buf.len(), "asked for {n} with {} buffered", buf.len());
                        break;
                    }
                }
            }
            buf.extend_from_slice(&bytes[cut..]);
            while let ReadEvent::Message(m) = reader.poll(&mut buf).unwrap() {
                msgs.push(m);
            }
            assert_eq!(
                msgs,
                vec![
                    Message::Ping(Bytes::from_static(b"ping")),
                    Message::Text(Bytes::from("κόσμε"))
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn unmasked_client_frame_is_a_protocol_error() {
        let err = read_all(&mut MessageReader::new(64), b"\x81\x02hi").unwrap_err();
        assert_eq!(err, FrameError::UnmaskedClientFrame);
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }

    #[test]
    fn continuation_without_a_message_is_a_protocol_error() {
        let err = read_all(&mut MessageReader::new(64), &client_frame(true, 0, b"x")).unwrap_err();
        assert_eq!(err, FrameError::UnexpectedContinuation);
    }

    #[test]
    fn new_message_inside_a_fragmented_one_is_a_protocol_error() {
        let mut bytes = client_frame(false, 1, b"a");
        bytes.extend(client_frame(true, 1, b"b"));
        let err = read_all(&mut MessageReader::new(64), &bytes).unwrap_err();
        assert_eq!(err, FrameError::ExpectedContinuation);
    }

    #[test]
    fn control_frames_may_interleave_with_fragments() {
        let mut bytes = client_frame(false, 2, b"ab");
        bytes.extend(client_frame(true, 10, b""));
        bytes.extend(client_frame(false, 0, b"cd"));
        bytes.extend(client_frame(true, 8, b"\x03\xe8"));
        bytes.extend(client_frame(true, 0, b"ef"));
        let msgs = read_all(&mut MessageReader::new(64), &bytes).unwrap();
        assert_eq!(msgs[0], Message::Pong(Bytes::new()));
        assert_eq!(
            msgs[1],
            Message::Close(CloseFrame {
                code: Some(CloseCode::NORMAL),
                reason: String::new()
            })
        );
        assert_eq!(msgs[2], Message::Binary(Bytes::from_static(b"abcdef")));
    }

    #[test]
    fn message_over_the_limit_is_refused_from_its_header() {
        let header_only = [0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4];
        let err = read_all(&mut MessageReader::new(1 << 20), &header_only).unwrap_err();
        assert_eq!(
            err,
            FrameError::MessageTooLarge {
                len: 1 << 32,
                max: 1 << 20
            }
        );
        assert_eq!(err.close_code(), CloseCode::MESSAGE_TOO_BIG);
    }

    #[test]
    fn fragments_count_toward_the_message_limit() {
        let mut bytes = client_frame(false, 2, &[0; 40]);
        bytes.extend(client_frame(true, 0, &[0; 40]));
        let err = read_all(&mut MessageReader::new(64), &bytes).unwrap_err();
        assert!(matches!(
            err,
            FrameError::MessageTooLarge { len: 80, max: 64 }
        ));
        let exact = client_frame(true, 2, &[0; 64]);
        assert_eq!(
            read_all(&mut MessageReader::new(64), &exact).unwrap().len(),
            1
        );
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_is_complete() {
        // 6.4.3-style: the invalid byte arrives in the first chop of a long frame.
        let mut text = "κόσμε".as_bytes().to_vec();
        text.extend([0xf4, 0x90, 0x80, 0x80]);
        text.extend(vec![b'a'; 1000]);
        let bytes = client_frame(true, 1, &text);
        let mut buf = BytesMut::from(&bytes[..20]);
        let err = MessageReader::new(4096).poll(&mut buf).unwrap_err();
        assert_eq!(err, FrameError::InvalidUtf8);
        assert_eq!(err.close_code(), CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn invalid_utf8_in_a_later_fragment_fails_that_fragment() {
        let mut bytes = client_frame(false, 1, "κόσμε".as_bytes());
        bytes.extend(client_frame(false, 0, &[0xed, 0xa0, 0x80]));
        let err = read_all(&mut MessageReader::new(4096), &bytes).unwrap_err();
        assert_eq!(err, FrameError::InvalidUtf8);
    }

    #[test]
    fn text_message_ending_mid_character_is_invalid() {
        let mut bytes = client_frame(false, 1, &[0xce]);
        bytes.extend(client_frame(true, 0, b""));
        let err = read_all(&mut MessageReader::new(4096), &bytes).unwrap_err();
        assert_eq!(err, FrameError::InvalidUtf8);
    }

    #[test]
    fn binary_messages_are_not_utf8_checked() {
        let bytes = client_frame(true, 2, &[0xff, 0xfe]);
        assert_eq!(
            read_all(&mut MessageReader::new(64), &bytes).unwrap().len(),
            1
        );
    }

    #[test]
    fn close_frame_rules_are_applied() {
        let err =
            read_all(&mut MessageReader::new(64), &client_frame(true, 8, b"\x03")).unwrap_err();
        assert_eq!(err, FrameError::InvalidClosePayload);
        let err = read_all(
            &mut MessageReader::new(64),
            &client_frame(true, 8, b"\x03\xed"),
        )
        .unwrap_err();
        assert_eq!(err, FrameError::InvalidCloseCode(1005));
        let err = read_all(
            &mut MessageReader::new(64),
            &client_frame(true, 8, b"\x03\xe8\xff"),
        )
        .unwrap_err();
        assert_eq!(err, FrameError::InvalidUtf8);
    }

    #[test]
    fn empty_text_message_is_valid() {
        let msgs = read_all(&mut MessageReader::new(64), &client_frame(true, 1, b"")).unwrap();
        assert_eq!(msgs, vec![Message::Text(Bytes::new())]);
    }
}
