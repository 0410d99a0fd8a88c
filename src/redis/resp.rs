//! Sans-IO RESP2: commands encoded in place, replies decoded (the `redis-protocol` crate's codec) from
//! a growing buffer, and the first-in-first-out matching of pipelined replies to their callers.
//! No sockets, no clock: everything here is tested with byte literals.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;

use super::{RedisError, Value};

/// Appends the command `args` (name first) to `out` as a RESP array of bulk strings. Arguments
/// are bytes: binary payloads need no escaping. The whole command is reserved at once and
/// written in place (no per-argument frames): it runs once per PUBLISH on the backplane's
/// publish path.
///
/// # Errors
/// Never today; the `Result` keeps the encoder's signature should a limit be added.
pub(crate) fn encode_command(out: &mut BytesMut, args: &[&[u8]]) -> Result<(), RedisError> {
    // `*N\r\n`, then `$len\r\n` + bytes + `\r\n` per argument; 20 digits hold any usize.
    let size = 3 + 20 + args.iter().map(|arg| 5 + 20 + arg.len()).sum::<usize>();
    out.reserve(size);
    out.extend_from_slice(b"*");
    put_decimal(out, args.len());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.extend_from_slice(b"$");
        put_decimal(out, arg.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    Ok(())
}

/// Appends `n` in decimal ASCII.
fn put_decimal(out: &mut BytesMut, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // invariant: `n % 10` is a single digit.
        digits[at] = b'0' + u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Reads frames out of the bytes a connection receives, however the network splits them
/// (sans-IO: the caller appends what it read to [`Self::buffer_mut`]).
#[derive(Debug, Default)]
pub struct ReplyReader {
    buffer: BytesMut,
}

impl ReplyReader {
    /// The buffered bytes, to append what was read (tests and fuzz targets feed it directly).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buffer
    }

    /// Takes the buffer out (to lend it to the kernel); [`Self::restore`] puts it back.
    pub(crate) fn take_buffer(&mut self) -> BytesMut {
        std::mem::take(&mut self.buffer)
    }

    /// Puts back a buffer taken by [`Self::take_buffer`].
    pub(crate) fn restore(&mut self, buffer: BytesMut) {
        self.buffer = buffer;
    }

    /// The next complete reply, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// [`RedisError::Protocol`] when the bytes are not RESP2; the connection cannot continue.
    pub fn next_frame(&mut self) -> Result<Option<Reply>, RedisError> {
        match decode_bytes_mut(&mut self.buffer) {
            Ok(Some((frame, _, _))) => Ok(Some(Reply::from_frame(frame))),
            Ok(None) => Ok(None),
            Err(error) => Err(RedisError::Protocol(error.to_string())),
        }
    }
}

/// One decoded reply: a value, or the error Redis answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A value.
    Value(Value),
    /// `-ERR …` and friends.
    Error(String),
}

impl Reply {
    fn from_frame(frame: BytesFrame) -> Self {
        match frame {
            BytesFrame::Error(text) => Self::Error(text.to_string()),
            other => Self::Value(Value::from_frame(other)),
        }
    }

    /// The caller's view: a Redis error reply is [`RedisError::Server`].
    pub fn into_result(self) -> Result<Value, RedisError> {
        match self {
            Self::Value(value) => Ok(value),
            Self::Error(text) => Err(RedisError::Server(text)),
        }
    }
}

impl Value {
    fn from_frame(frame: BytesFrame) -> Self {
        match frame {
            BytesFrame::SimpleString(text) => Self::Status(text),
            BytesFrame::Error(text) => Self::Error(text.to_string()),
            BytesFrame::Integer(number) => Self::Int(number),
            BytesFrame::BulkString(data) => Self::Data(data),
            BytesFrame::Array(items) => {
                Self::Array(items.into_iter().map(Self::from_frame).collect())
            }
            BytesFrame::Null => Self::Nil,
        }
    }
}

/// The callers of commands written but not yet answered, oldest first. Redis answers a
/// connection's commands in the order they were sent, so the next reply is always the oldest
/// caller's.
#[derive(Debug)]
pub(crate) struct InFlight<W> {
    waiting: VecDeque<W>,
}

impl<W> Default for InFlight<W> {
    fn default() -> Self {
        Self {
            waiting: VecDeque::new(),
        }
    }
}

impl<W> InFlight<W> {
    /// Records a caller whose command was just queued.
    pub(crate) fn push(&mut self, waiter: W) {
        self.waiting.push_back(waiter);
    }

    /// The caller `reply` belongs to.
    ///
    /// # Errors
    /// [`RedisError::Protocol`] for a reply nobody asked for (the stream is out of step).
    pub(crate) fn complete(&mut self, reply: Reply) -> Result<(W, Reply), RedisError> {
        self.waiting
            .pop_front()
            .map(|waiter| (waiter, reply))
            .ok_or_else(|| RedisError::Protocol("a reply arrived that no command asked for".into()))
    }

    /// Every caller still waiting, oldest first (when the connection is lost).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = W> + '_ {
        self.waiting.drain(..)
    }

    /// How many callers wait.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }
}

/// What a subscriber connection receives (RESP2 pub/sub pushes are arrays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Push {
    /// `message <channel> <payload>`.
    Message {
        /// The channel.
        channel: Bytes,
        /// The payload, binary-safe.
        payload: Bytes,
    },
    /// `subscribe <channel> <count>`: a subscription is in place.
    Subscribed(Bytes),
    /// `unsubscribe <channel> <count>`.
    Unsubscribed(Bytes),
    /// `pong` (a `PING` in subscribed mode) or anything else that is not a message.
    Other,
}

impl Push {
    /// Classifies a reply read on a subscriber connection.
    ///
    /// # Errors
    /// [`RedisError::Server`] for an error reply (a refused `SUBSCRIBE`).
    pub(crate) fn from_reply(reply: Reply) -> Result<Self, RedisError> {
        let Value::Array(items) = reply.into_result()? else {
            return Ok(Self::Other);
        };
        let mut items = items.into_iter();
        let (Some(Value::Data(kind)), Some(Value::Data(channel))) = (items.next(), items.next())
        else {
            return Ok(Self::Other);
        };
        Ok(match (&kind[..], items.next()) {
            (b"message", Some(Value::Data(payload))) => Self::Message { channel, payload },
            (b"subscribe", _) => Self::Subscribed(channel),
            (b"unsubscribe", _) => Self::Unsubscribed(channel),
            _ => Self::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(bytes: &'static [u8]) -> Value {
        Value::Data(Bytes::from_static(bytes))
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings_and_binary_safe() {
        let mut out = BytesMut::new();
        encode_command(&mut out, &[b"GET", b"vkey:ab"]).unwrap();
        encode_command(&mut out, &[b"PUBLISH", b"c", b"\r\n\0\xff"]).unwrap();
        assert_eq!(
            &out[..],
            b"*2\r\n$3\r\nGET\r\n$7\r\nvkey:ab\r\n*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$4\r\n\r\n\0\xff\r\n"
        );
    }

    #[test]
    fn commands_are_encoded_byte_for_byte_as_the_resp_crate_encodes_them() {
        use redis_protocol::resp2::encode::extend_encode_borrowed;
        use redis_protocol::resp2::types::BorrowedFrame;
        let big = vec![0x5a_u8; 12_345];
        let cases: [&[&[u8]]; 4] = [
            &[b"PING"],
            &[b"PUBLISH", b"hub:group:g", &big],
            &[b"SUBSCRIBE", b"", b"a", b"0123456789"],
            &[],
        ];
        for args in cases {
            let mut ours = BytesMut::new();
            encode_command(&mut ours, args).unwrap();
            let parts: Vec<BorrowedFrame<'_>> =
                args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
            let mut theirs = BytesMut::new();
            extend_encode_borrowed(&mut theirs, &BorrowedFrame::Array(&parts), false).unwrap();
            assert_eq!(ours, theirs, "{} arguments", args.len());
        }
    }

    #[test]
    fn pipelined_replies_split_anywhere_reach_their_callers_in_order() {
        let wire: &[u8] =
            b"$5\r\nhello\r\n$-1\r\n:42\r\n-ERR wrong\r\n+OK\r\n*2\r\n$1\r\na\r\n$0\r\n\r\n";
        let expected = [
            Reply::Value(value(b"hello")),
            Reply::Value(Value::Nil),
            Reply::Value(Value::Int(42)),
            Reply::Error("ERR wrong".into()),
            Reply::Value(Value::Status(Bytes::from_static(b"OK"))),
            Reply::Value(Value::Array(vec![value(b"a"), value(b"")])),
        ];
        for chunk in 1..wire.len() {
            let mut reader = ReplyReader::default();
            let mut in_flight = InFlight::default();
            (0..expected.len()).for_each(|caller| in_flight.push(caller));
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                reader.buffer_mut().extend_from_slice(piece);
                while let Some(reply) = reader.next_frame().unwrap() {
                    got.push(in_flight.complete(reply).unwrap());
                }
            }
            let callers: Vec<usize> = got.iter().map(|(caller, _)| *caller).collect();
            assert_eq!(callers, [0, 1, 2, 3, 4, 5], "chunks of {chunk}");
            let replies: Vec<Reply> = got.into_iter().map(|(_, reply)| reply).collect();
            assert_eq!(replies, expected, "chunks of {chunk}");
            assert_eq!(in_flight.len(), 0);
        }
    }

    #[test]
    fn a_reply_nobody_asked_for_is_a_protocol_error() {
        let mut in_flight = InFlight::<()>::default();
        assert!(matches!(
            in_flight.complete(Reply::Value(Value::Nil)),
            Err(RedisError::Protocol(_))
        ));
    }

    #[test]
    fn bytes_that_are_not_resp_are_a_protocol_error() {
        let mut reader = ReplyReader::default();
        reader.buffer_mut().extend_from_slice(b"hello\r\n");
        assert!(matches!(reader.next_frame(), Err(RedisError::Protocol(_))));
    }

    #[test]
    fn error_replies_become_server_errors() {
        assert_eq!(
            Reply::Error("WRONGPASS no".into()).into_result(),
            Err(RedisError::Server("WRONGPASS no".into()))
        );
    }

    #[test]
    fn subscriber_pushes_are_messages_confirmations_or_other() {
        let mut reader = ReplyReader::default();
        reader.buffer_mut().extend_from_slice(
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$3\r\n\0\x01\x02\r\n\
              *3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n",
        );
        let mut pushes = Vec::new();
        while let Some(reply) = reader.next_frame().unwrap() {
            pushes.push(Push::from_reply(reply).unwrap());
        }
        assert_eq!(
            pushes,
            [
                Push::Subscribed(Bytes::from_static(b"c")),
                Push::Message {
                    channel: Bytes::from_static(b"c"),
                    payload: Bytes::from_static(b"\0\x01\x02"),
                },
                Push::Unsubscribed(Bytes::from_static(b"c")),
                Push::Other,
            ]
        );
        assert!(Push::from_reply(Reply::Error("ERR no".into())).is_err());
    }
}
