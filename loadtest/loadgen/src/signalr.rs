//! The SignalR hub protocol as a client speaks it, in JSON and MessagePack.
//!
//! Encoders append one framed hub message (JSON text plus `0x1E`, or a VarInt length prefix
//! plus a msgpack array) to a buffer. [`Records`] cuts the server's byte stream back into
//! messages, however they were split across WebSocket frames or reads, and
//! [`parse_message`] reads only the fields the load generator needs, borrowing from the input.

use std::fmt;

pub use crate::msgpack::Scalar;
use crate::msgpack::{self, MsgpackError, Reader};

/// The JSON record separator.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// A SignalR hub protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `json`: text frames, `0x1E`-terminated records.
    Json,
    /// `messagepack`: binary frames, VarInt-prefixed msgpack arrays.
    MessagePack,
}

impl Protocol {
    /// The name sent in the handshake.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::MessagePack => "messagepack",
        }
    }

    /// The WebSocket opcode its messages travel in.
    pub fn opcode(self) -> u8 {
        match self {
            Self::Json => crate::ws::OP_TEXT,
            Self::MessagePack => crate::ws::OP_BINARY,
        }
    }
}

/// One argument of an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg<'a> {
    /// A string (written without escaping beyond what JSON requires).
    Str(&'a [u8]),
    /// An integer.
    Int(i64),
}

/// Which invocation message to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call<'a> {
    /// Type 1 with an invocation id: the server answers with a Completion.
    Blocking(&'a str),
    /// Type 1 without an invocation id: no Completion.
    NonBlocking,
    /// Type 4: the server answers with StreamItems, then a Completion.
    Stream(&'a str),
}

/// The handshake request (always JSON text plus `0x1E`, even for messagepack).
pub fn write_handshake(out: &mut Vec<u8>, protocol: Protocol) {
    out.extend_from_slice(b"{\"protocol\":\"");
    out.extend_from_slice(protocol.name().as_bytes());
    out.extend_from_slice(b"\",\"version\":1}");
    out.push(RECORD_SEPARATOR);
}

/// Appends an Invocation or StreamInvocation of `target` with `args`.
pub fn write_invocation(
    out: &mut Vec<u8>,
    protocol: Protocol,
    call: Call<'_>,
    target: &str,
    args: &[Arg<'_>],
) {
    let (kind, id) = match call {
        Call::Blocking(id) => (1, Some(id)),
        Call::NonBlocking => (1, None),
        Call::Stream(id) => (4, Some(id)),
    };
    match protocol {
        Protocol::Json => {
            out.extend_from_slice(if kind == 1 {
                b"{\"type\":1,"
            } else {
                b"{\"type\":4,"
            });
            if let Some(id) = id {
                out.extend_from_slice(b"\"invocationId\":");
                write_json_str(out, id.as_bytes());
                out.push(b',');
            }
            out.extend_from_slice(b"\"target\":");
            write_json_str(out, target.as_bytes());
            out.extend_from_slice(b",\"arguments\":[");
            for (i, arg) in args.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match arg {
                    Arg::Str(s) => write_json_str(out, s),
                    Arg::Int(v) => out.extend_from_slice(v.to_string().as_bytes()),
                }
            }
            out.extend_from_slice(b"]}");
            out.push(RECORD_SEPARATOR);
        }
        Protocol::MessagePack => {
            let mut body = Vec::with_capacity(32 + args_len(args));
            // The JS client's 5-element form: [type, headers, id, target, arguments].
            msgpack::write_array_len(&mut body, 5);
            msgpack::write_uint(&mut body, kind);
            msgpack::write_map_len(&mut body, 0);
            match id {
                Some(id) => msgpack::write_str(&mut body, id.as_bytes()),
                None => msgpack::write_nil(&mut body),
            }
            msgpack::write_str(&mut body, target.as_bytes());
            msgpack::write_array_len(&mut body, args.len());
            for arg in args {
                match arg {
                    Arg::Str(s) => msgpack::write_str(&mut body, s),
                    Arg::Int(v) => write_msgpack_int(&mut body, *v),
                }
            }
            msgpack::write_varint(out, body.len());
            out.extend_from_slice(&body);
        }
    }
}

/// A JSON hub Ping record with its separator.
pub const JSON_PING: &[u8] = b"{\"type\":6}\x1e";

/// Appends a Ping (`{"type":6}` or `[6]`).
pub fn write_ping(out: &mut Vec<u8>, protocol: Protocol) {
    match protocol {
        Protocol::Json => out.extend_from_slice(JSON_PING),
        Protocol::MessagePack => out.extend_from_slice(&[0x02, 0x91, 0x06]),
    }
}

/// Appends a client Close (`{"type":7}` or `[7, nil]`).
pub fn write_close(out: &mut Vec<u8>, protocol: Protocol) {
    match protocol {
        Protocol::Json => {
            out.extend_from_slice(b"{\"type\":7}");
            out.push(RECORD_SEPARATOR);
        }
        Protocol::MessagePack => out.extend_from_slice(&[0x03, 0x92, 0x07, 0xc0]),
    }
}

fn args_len(args: &[Arg<'_>]) -> usize {
    args.iter()
        .map(|a| match a {
            Arg::Str(s) => s.len() + 5,
            Arg::Int(_) => 9,
        })
        .sum()
}

fn write_msgpack_int(out: &mut Vec<u8>, value: i64) {
    if let Ok(v) = u64::try_from(value) {
        msgpack::write_uint(out, v);
    } else {
        out.push(0xd3);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

fn write_json_str(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b'"');
    for &b in value {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x00..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// A hub message from the server, reduced to what the load generator reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    /// Type 1: the server invokes a client method.
    Invocation {
        /// The method name.
        target: &'a [u8],
        /// The first argument (timed payloads travel here).
        first_arg: Scalar<'a>,
    },
    /// Type 2: one item of a stream.
    StreamItem {
        /// The stream's invocation id.
        invocation_id: &'a [u8],
        /// The item.
        item: Scalar<'a>,
    },
    /// Type 3: the end of an invocation.
    Completion {
        /// The invocation id.
        invocation_id: &'a [u8],
        /// Its result, error or nothing.
        outcome: Outcome<'a>,
    },
    /// Type 6.
    Ping,
    /// Type 7: the server is closing the connection.
    Close {
        /// The error text, if the close reports one.
        error: Option<String>,
    },
    /// Any other type (ignored, as the protocol says).
    Other(i64),
}

/// How a Completion ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<'a> {
    /// No result (a void method).
    Void,
    /// A result value.
    Result(Scalar<'a>),
    /// An error text.
    Error(String),
}

/// A hub message the load generator could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// Malformed JSON (what was expected).
    Json(&'static str),
    /// Malformed msgpack.
    Msgpack(MsgpackError),
    /// A length prefix of 2 GB or more.
    VarInt,
    /// A message larger than the reassembly limit.
    TooLarge(usize),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(what) => write!(f, "malformed JSON hub message: expected {what}"),
            Self::Msgpack(error) => write!(f, "malformed msgpack hub message: {error}"),
            Self::VarInt => f.write_str("hub message length prefix of 2 GB or more"),
            Self::TooLarge(len) => write!(f, "hub message of {len} bytes is over the limit"),
        }
    }
}

impl std::error::Error for ProtocolError {}

impl From<MsgpackError> for ProtocolError {
    fn from(error: MsgpackError) -> Self {
        Self::Msgpack(error)
    }
}

/// Cuts a byte stream into hub messages, keeping a partial message between calls.
#[derive(Debug)]
pub struct Records {
    protocol: Protocol,
    partial: Vec<u8>,
    max_len: usize,
}

impl Records {
    /// A splitter for `protocol` that refuses messages over `max_len` bytes.
    pub fn new(protocol: Protocol, max_len: usize) -> Self {
        Self {
            protocol,
            partial: Vec::new(),
            max_len,
        }
    }

    /// Feeds bytes and calls `on_record` for every complete message (without its separator
    /// or length prefix). Complete messages are handed over without copying when nothing
    /// was left over from the previous call.
    pub fn feed(
        &mut self,
        data: &[u8],
        mut on_record: impl FnMut(&[u8]),
    ) -> Result<(), ProtocolError> {
        if self.partial.is_empty() {
            let used = self.split(data, &mut on_record)?;
            self.keep(&data[used..])?;
        } else {
            let mut buffer = std::mem::take(&mut self.partial);
            buffer.extend_from_slice(data);
            let used = self.split(&buffer, &mut on_record)?;
            buffer.drain(..used);
            self.partial = buffer;
            if self.partial.len() > self.max_len {
                return Err(ProtocolError::TooLarge(self.partial.len()));
            }
        }
        Ok(())
    }

    fn keep(&mut self, rest: &[u8]) -> Result<(), ProtocolError> {
        if rest.len() > self.max_len {
            return Err(ProtocolError::TooLarge(rest.len()));
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// Calls `on_record` for each complete message in `data`; returns the bytes consumed.
    fn split(
        &self,
        data: &[u8],
        on_record: &mut impl FnMut(&[u8]),
    ) -> Result<usize, ProtocolError> {
        let mut used = 0;
        match self.protocol {
            Protocol::Json => {
                for end in memchr::memchr_iter(RECORD_SEPARATOR, data) {
                    on_record(&data[used..end]);
                    used = end + 1;
                }
            }
            Protocol::MessagePack => loop {
                let rest = &data[used..];
                let Some((len, prefix)) =
                    msgpack::read_varint(rest).map_err(|_| ProtocolError::VarInt)?
                else {
                    break;
                };
                if len > self.max_len {
                    return Err(ProtocolError::TooLarge(len));
                }
                let Some(body) = rest.get(prefix..prefix + len) else {
                    break;
                };
                on_record(body);
                used += prefix + len;
            },
        }
        Ok(used)
    }
}

/// Reads one hub message (without its separator or length prefix).
pub fn parse_message(protocol: Protocol, record: &[u8]) -> Result<Message<'_>, ProtocolError> {
    match protocol {
        Protocol::Json => parse_json(record),
        Protocol::MessagePack => parse_msgpack(record),
    }
}

fn parse_msgpack(record: &[u8]) -> Result<Message<'_>, ProtocolError> {
    let mut r = Reader::new(record);
    let len = r.read_array_len()?;
    if len == 0 {
        return Err(ProtocolError::Msgpack(MsgpackError::Truncated));
    }
    let kind = r.read_int()?;
    Ok(match kind {
        1 | 4 => {
            r.skip_value()?; // headers
            r.read_opt_str()?; // invocation id
            let target = r.read_opt_str()?.unwrap_or_default();
            let args = r.read_array_len()?;
            let first_arg = if args > 0 {
                r.read_scalar()?
            } else {
                Scalar::Nil
            };
            Message::Invocation { target, first_arg }
        }
        2 => {
            r.skip_value()?;
            let invocation_id = r.read_opt_str()?.unwrap_or_default();
            let item = r.read_scalar()?;
            Message::StreamItem {
                invocation_id,
                item,
            }
        }
        3 => {
            r.skip_value()?;
            let invocation_id = r.read_opt_str()?.unwrap_or_default();
            let outcome = match r.read_int()? {
                1 => Outcome::Error(lossy(r.read_opt_str()?.unwrap_or_default())),
                3 => Outcome::Result(r.read_scalar()?),
                _ => Outcome::Void,
            };
            Message::Completion {
                invocation_id,
                outcome,
            }
        }
        6 => Message::Ping,
        7 => {
            let error = if len > 1 {
                r.read_opt_str()?.map(lossy)
            } else {
                None
            };
            Message::Close {
                error: error.filter(|e| !e.is_empty()),
            }
        }
        other => Message::Other(other),
    })
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A forgiving cursor over one JSON object: it reads the fields hub messages use and skips
/// everything else without building values.
struct Json<'a> {
    s: &'a [u8],
    i: usize,
}

const MAX_JSON_DEPTH: usize = 64;

impl<'a> Json<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, byte: u8, what: &'static str) -> Result<(), ProtocolError> {
        if self.peek() == Some(byte) {
            self.i += 1;
            Ok(())
        } else {
            Err(ProtocolError::Json(what))
        }
    }

    /// A string's raw bytes between its quotes, and whether it holds escapes.
    fn string(&mut self) -> Result<(&'a [u8], bool), ProtocolError> {
        self.eat(b'"', "a string")?;
        let start = self.i;
        let mut escaped = false;
        loop {
            let at = memchr::memchr2(b'"', b'\\', &self.s[self.i..])
                .ok_or(ProtocolError::Json("the end of a string"))?;
            self.i += at;
            if self.s[self.i] == b'\\' {
                escaped = true;
                self.i += 2;
                if self.i > self.s.len() {
                    return Err(ProtocolError::Json("the end of a string"));
                }
            } else {
                let raw = &self.s[start..self.i];
                self.i += 1;
                return Ok((raw, escaped));
            }
        }
    }

    /// A string as owned text, escapes decoded.
    fn text(&mut self) -> Result<Option<String>, ProtocolError> {
        if self.peek() == Some(b'n') {
            self.skip(0)?;
            return Ok(None);
        }
        let start = self.i;
        let (raw, escaped) = self.string()?;
        if !escaped {
            return Ok(Some(lossy(raw)));
        }
        serde_json::from_slice::<String>(&self.s[start..self.i])
            .map(Some)
            .map_err(|_| ProtocolError::Json("a valid string"))
    }

    fn scalar(&mut self) -> Result<Scalar<'a>, ProtocolError> {
        match self.peek() {
            Some(b'"') => {
                let (raw, escaped) = self.string()?;
                Ok(if escaped {
                    Scalar::Other
                } else {
                    Scalar::Str(raw)
                })
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                self.skip(0)?;
                Ok(std::str::from_utf8(&self.s[start..self.i])
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
                    .map_or(Scalar::Other, Scalar::Int))
            }
            Some(b'n') => {
                self.skip(0)?;
                Ok(Scalar::Nil)
            }
            _ => {
                self.skip(0)?;
                Ok(Scalar::Other)
            }
        }
    }

    fn skip(&mut self, depth: usize) -> Result<(), ProtocolError> {
        if depth > MAX_JSON_DEPTH {
            return Err(ProtocolError::Json("shallower nesting"));
        }
        match self.peek().ok_or(ProtocolError::Json("a value"))? {
            b'"' => {
                self.string()?;
            }
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                self.i += 1;
                if self.peek() == Some(close) {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    if open == b'{' {
                        self.string()?;
                        self.eat(b':', "':'")?;
                    }
                    self.skip(depth + 1)?;
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b) if b == close => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(ProtocolError::Json("',' or the end of a container")),
                    }
                }
            }
            _ => {
                let start = self.i;
                while let Some(b) = self.s.get(self.i) {
                    if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                        break;
                    }
                    self.i += 1;
                }
                if self.i == start {
                    return Err(ProtocolError::Json("a value"));
                }
            }
        }
        Ok(())
    }
}

fn parse_json(record: &[u8]) -> Result<Message<'_>, ProtocolError> {
    let mut j = Json { s: record, i: 0 };
    let mut kind = None;
    let mut target: &[u8] = b"";
    let mut invocation_id: &[u8] = b"";
    let mut first_arg = Scalar::Nil;
    let mut item = Scalar::Nil;
    let mut result = None;
    let mut error = None;
    j.eat(b'{', "'{'")?;
    if j.peek() == Some(b'}') {
        return Err(ProtocolError::Json("a type"));
    }
    loop {
        let (key, _) = j.string()?;
        j.eat(b':', "':'")?;
        match key {
            b"type" => match j.scalar()? {
                Scalar::Int(v) => kind = Some(v),
                _ => return Err(ProtocolError::Json("an integer type")),
            },
            b"target" => target = j.string()?.0,
            b"invocationId" => invocation_id = j.string()?.0,
            b"arguments" => {
                j.eat(b'[', "an arguments array")?;
                if j.peek() == Some(b']') {
                    j.i += 1;
                } else {
                    first_arg = j.scalar()?;
                    loop {
                        match j.peek() {
                            Some(b',') => {
                                j.i += 1;
                                j.skip(1)?;
                            }
                            Some(b']') => {
                                j.i += 1;
                                break;
                            }
                            _ => return Err(ProtocolError::Json("',' or ']'")),
                        }
                    }
                }
            }
            b"item" => item = j.scalar()?,
            b"result" => result = Some(j.scalar()?),
            b"error" => error = j.text()?,
            _ => j.skip(0)?,
        }
        match j.peek() {
            Some(b',') => j.i += 1,
            Some(b'}') => break,
            _ => return Err(ProtocolError::Json("',' or '}'")),
        }
    }
    Ok(match kind.ok_or(ProtocolError::Json("a type"))? {
        1 | 4 => Message::Invocation { target, first_arg },
        2 => Message::StreamItem {
            invocation_id,
            item,
        },
        3 => Message::Completion {
            invocation_id,
            outcome: match (error, result) {
                (Some(error), _) => Outcome::Error(error),
                (None, Some(result)) => Outcome::Result(result),
                (None, None) => Outcome::Void,
            },
        },
        6 => Message::Ping,
        7 => Message::Close {
            error: error.filter(|e| !e.is_empty()),
        },
        other => Message::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(protocol: Protocol, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut splitter = Records::new(protocol, 1 << 20);
        let mut out = Vec::new();
        for chunk in chunks {
            splitter
                .feed(chunk, |r| out.push(r.to_vec()))
                .expect("valid stream");
        }
        out
    }

    #[test]
    fn json_records_split_across_reads_come_out_whole() {
        let stream =
            b"{\"type\":6}\x1e{\"type\":1,\"target\":\"Send\",\"arguments\":[\"@1.2.x\"]}\x1e";
        let whole = records(Protocol::Json, &[stream]);
        assert_eq!(whole.len(), 2);
        for cut in 1..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(records(Protocol::Json, &[a, b]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(records(Protocol::Json, &bytes), whole);
    }

    #[test]
    fn msgpack_records_split_across_reads_come_out_whole() {
        let mut stream = Vec::new();
        write_ping(&mut stream, Protocol::MessagePack);
        let payload = vec![b'x'; 300];
        write_invocation(
            &mut stream,
            Protocol::MessagePack,
            Call::NonBlocking,
            "Send",
            &[Arg::Str(&payload)],
        );
        let whole = records(Protocol::MessagePack, &[&stream]);
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0], [0x91, 0x06]);
        for cut in 1..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(
                records(Protocol::MessagePack, &[a, b]),
                whole,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_message_over_the_limit_is_refused() {
        let mut splitter = Records::new(Protocol::Json, 8);
        assert_eq!(
            splitter.feed(b"0123456789", |_| {}),
            Err(ProtocolError::TooLarge(10))
        );
        let mut splitter = Records::new(Protocol::MessagePack, 8);
        assert_eq!(
            splitter.feed(&[0x20, 0x90], |_| {}),
            Err(ProtocolError::TooLarge(32))
        );
    }

    #[test]
    fn json_invocations_match_the_js_client_shape() {
        let mut out = Vec::new();
        write_invocation(
            &mut out,
            Protocol::Json,
            Call::Blocking("7"),
            "Echo",
            &[Arg::Str(b"hi")],
        );
        assert_eq!(
            out,
            b"{\"type\":1,\"invocationId\":\"7\",\"target\":\"Echo\",\"arguments\":[\"hi\"]}\x1e"
        );
        out.clear();
        write_invocation(
            &mut out,
            Protocol::Json,
            Call::Stream("1"),
            "Stream",
            &[Arg::Int(5)],
        );
        assert_eq!(
            out,
            b"{\"type\":4,\"invocationId\":\"1\",\"target\":\"Stream\",\"arguments\":[5]}\x1e"
        );
    }

    #[test]
    fn msgpack_invocations_match_the_protocol_bytes() {
        let mut out = Vec::new();
        write_invocation(
            &mut out,
            Protocol::MessagePack,
            Call::NonBlocking,
            "Send",
            &[],
        );
        assert_eq!(
            out,
            [
                0x0a, 0x95, 0x01, 0x80, 0xc0, 0xa4, b'S', b'e', b'n', b'd', 0x90
            ]
        );
        let mut ping = Vec::new();
        write_ping(&mut ping, Protocol::MessagePack);
        assert_eq!(ping, [0x02, 0x91, 0x06]);
    }

    #[test]
    fn json_messages_parse_in_any_property_order() {
        let msg = parse_json(br#"{"arguments":["@5.1.x",2],"target":"Send","type":1}"#).unwrap();
        assert_eq!(
            msg,
            Message::Invocation {
                target: b"Send",
                first_arg: Scalar::Str(b"@5.1.x")
            }
        );
        let done = parse_json(br#"{"type":3,"invocationId":"4","result":"@9.0."}"#).unwrap();
        assert_eq!(
            done,
            Message::Completion {
                invocation_id: b"4",
                outcome: Outcome::Result(Scalar::Str(b"@9.0."))
            }
        );
        let void = parse_json(br#"{"type":3,"invocationId":"5"}"#).unwrap();
        assert_eq!(
            void,
            Message::Completion {
                invocation_id: b"5",
                outcome: Outcome::Void
            }
        );
        let item = parse_json(br#"{"type":2,"invocationId":"1","item":3}"#).unwrap();
        assert_eq!(
            item,
            Message::StreamItem {
                invocation_id: b"1",
                item: Scalar::Int(3)
            }
        );
    }

    #[test]
    fn json_errors_and_closes_decode_their_text() {
        let err = parse_json(br#"{"type":3,"invocationId":"1","error":"a \"b\""}"#).unwrap();
        assert_eq!(
            err,
            Message::Completion {
                invocation_id: b"1",
                outcome: Outcome::Error("a \"b\"".into())
            }
        );
        let close = parse_json(
            br#"{"type":7,"error":"Connection closed with an error.","allowReconnect":true}"#,
        )
        .unwrap();
        assert_eq!(
            close,
            Message::Close {
                error: Some("Connection closed with an error.".into())
            }
        );
        assert_eq!(parse_json(br#"{"type":6}"#).unwrap(), Message::Ping);
    }

    #[test]
    fn json_skips_nested_unknown_fields() {
        let msg = parse_json(
            br#"{"type":1,"headers":{"a":"}"},"x":[1,{"y":[]}],"target":"T","arguments":[]}"#,
        )
        .unwrap();
        assert_eq!(
            msg,
            Message::Invocation {
                target: b"T",
                first_arg: Scalar::Nil
            }
        );
    }

    #[test]
    fn malformed_json_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"type\"",
            b"{\"type\":\"x\"}",
            b"{\"type\":1,\"target\":\"T",
            b"{\"type\":1,\"arguments\":[\"a\"",
            b"{\"a\":\"\\",
            b"[]",
        ] {
            assert!(
                parse_json(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn msgpack_messages_from_the_server_parse() {
        // [1, {}, nil, "Send", ["hi"], []]
        let inv = [
            0x96, 0x01, 0x80, 0xc0, 0xa4, b'S', b'e', b'n', b'd', 0x91, 0xa2, b'h', b'i', 0x90,
        ];
        assert_eq!(
            parse_msgpack(&inv).unwrap(),
            Message::Invocation {
                target: b"Send",
                first_arg: Scalar::Str(b"hi")
            }
        );
        // [3, {}, "1", 3, "ok"], [3, {}, "2", 1, "bad"], [3, {}, "3", 2]
        let result = [0x95, 0x03, 0x80, 0xa1, b'1', 0x03, 0xa2, b'o', b'k'];
        assert_eq!(
            parse_msgpack(&result).unwrap(),
            Message::Completion {
                invocation_id: b"1",
                outcome: Outcome::Result(Scalar::Str(b"ok"))
            }
        );
        let error = [0x95, 0x03, 0x80, 0xa1, b'2', 0x01, 0xa3, b'b', b'a', b'd'];
        assert_eq!(
            parse_msgpack(&error).unwrap(),
            Message::Completion {
                invocation_id: b"2",
                outcome: Outcome::Error("bad".into())
            }
        );
        let void = [0x94, 0x03, 0x80, 0xa1, b'3', 0x02];
        assert_eq!(
            parse_msgpack(&void).unwrap(),
            Message::Completion {
                invocation_id: b"3",
                outcome: Outcome::Void
            }
        );
        // [7, "boom", true]
        let close = [0x93, 0x07, 0xa4, b'b', b'o', b'o', b'm', 0xc3];
        assert_eq!(
            parse_msgpack(&close).unwrap(),
            Message::Close {
                error: Some("boom".into())
            }
        );
        assert!(parse_msgpack(&[0x95, 0x03, 0x80]).is_err());
    }
}
