//! The MessagePack hub protocol (`"messagepack"`), sans-IO: the VarInt length prefix
//! ([`write_varint`], [`read_varint`]), hub messages in and out ([`decode`], [`encode()`]) and the
//! [`Value`] mapping of one MessagePack value ([`decode_value`], [`encode_value`]).
//!
//! Decoding is zero-copy for payloads: every argument, stream item and completion result is a
//! [`Payload::MessagePack`] slice of the received buffer, validated (well-formed, UTF-8 strings,
//! valid timestamps, at most 64 nested arrays/maps) so that [`decode_value`] cannot
//! fail on it later. Encoding writes exactly what ASP.NET Core's `MessagePackHubProtocolWorker`
//! (MessagePack-CSharp) writes: smallest integer forms, fixstr/str8/str16/str32, 6-element
//! invocations, 3-element closes, an empty map for no headers.
//!
//! Specs (all collected in `shared/reference/signalr-protocol.md`):
//! - §3.2 message layouts and the .NET reader's error texts; §3.3 the VarInt prefix;
//! - §3.5 / §6 the receive window (`MaximumReceiveMessageSize`, framing included);
//! - §4.2, §4.3 byte-exact vectors (the unit tests below); §7.2 MessagePack-CSharp conventions;
//! - the MessagePack spec, timestamp extension type -1:
//!   <https://github.com/msgpack/msgpack/blob/master/spec.md#timestamp-extension-type>.

use bytes::{BufMut, Bytes, BytesMut};
use rmp::Marker;
use rmp::encode::{self, ByteBuf};

use super::{
    CancelInvocation, Close, Completion, CompletionOutcome, Decoded, Headers, HubMessage,
    HubProtocolError, Invocation, Payload, StreamItem, Value,
};

/// Most nested arrays/maps inside one payload value (as .NET's JSON limit); deeper is
/// [`HubProtocolError::TooDeep`], so hostile nesting cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// Longest VarInt length prefix (a length up to 0x7fffffff).
const MAX_PREFIX_BYTES: usize = 5;

/// Nanoseconds per second (timestamp extension).
const NANOS_PER_SECOND: u32 = 1_000_000_000;

/// Appends `len` as a VarInt: 7 bits per byte, least-significant group first, high bit set on
/// every byte but the last (§3.3).
pub fn write_varint(len: usize, out: &mut BytesMut) {
    let mut rest = len;
    while rest >= 0x80 {
        out.put_u8((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.put_u8(rest as u8);
}

/// Reads the VarInt length prefix at the start of `input`: `Some((length, prefix bytes))`, or
/// `None` when the prefix is incomplete.
///
/// # Errors
/// [`HubProtocolError::LengthPrefixTooLarge`] when the 5th byte is over 0x07 (a length over 2 GB
/// or a prefix longer than 5 bytes).
pub fn read_varint(input: &[u8]) -> Result<Option<(usize, usize)>, HubProtocolError> {
    let mut len = 0usize;
    for (index, &byte) in input.iter().take(MAX_PREFIX_BYTES).enumerate() {
        if index == MAX_PREFIX_BYTES - 1 && byte > 0x07 {
            return Err(HubProtocolError::LengthPrefixTooLarge);
        }
        len |= usize::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Some((len, index + 1)));
        }
    }
    Ok(None)
}

/// Takes the next framed message (VarInt prefix + one MessagePack array) off the front of
/// `input`. Payloads are slices of `input`, not copies. An unknown message type decodes as
/// [`HubMessage::Unknown`].
///
/// # Errors
/// [`HubProtocolError::MessageTooLarge`] when prefix plus body exceed `max_message_size`, or
/// when `input` already holds that many bytes without a complete prefix; a bad prefix; a body
/// that is not exactly one hub message array (ASP.NET's error texts).
pub fn decode(input: &Bytes, max_message_size: usize) -> Result<Decoded, HubProtocolError> {
    let too_large = HubProtocolError::MessageTooLarge {
        max: max_message_size,
    };
    let Some((len, prefix)) = read_varint(input)? else {
        return if !input.is_empty() && input.len() >= max_message_size {
            Err(too_large)
        } else {
            Ok(Decoded::NeedMore)
        };
    };
    let total = prefix.saturating_add(len);
    if total > max_message_size {
        return Err(too_large);
    }
    let Some(frame) = input.get(..total) else {
        return Ok(Decoded::NeedMore);
    };
    let message = decode_body(input, frame, prefix)?;
    Ok(Decoded::Message(message, total))
}

/// Appends `message`, VarInt prefix included, exactly as .NET writes it. [`HubMessage::Unknown`]
/// writes nothing. On error `out` is unchanged.
///
/// # Errors
/// A [`Payload::Json`] that cannot be transcoded.
pub fn encode(message: &HubMessage, out: &mut BytesMut) -> Result<(), HubProtocolError> {
    if let HubMessage::Unknown(_) = message {
        return Ok(());
    }
    let mut body = Writer(ByteBuf::with_capacity(64));
    body.message(message)?;
    let body = body.0.as_slice();
    write_varint(body.len(), out);
    out.extend_from_slice(body);
    Ok(())
}

/// Decodes exactly one MessagePack value. Integers above `i64::MAX` become [`Value::UInt`],
/// float32 and float64 [`Value::Float`], extension type -1 [`Value::Timestamp`].
///
/// # Errors
/// Malformed or truncated MessagePack, invalid UTF-8 in a string, an invalid timestamp, nesting
/// deeper than 64 levels, or bytes after the value.
pub fn decode_value(bytes: &[u8]) -> Result<Value, HubProtocolError> {
    let mut reader = Reader { buf: bytes, pos: 0 };
    let value = reader.value(0)?;
    if reader.remaining() == 0 {
        Ok(value)
    } else {
        Err(trailing_data())
    }
}

/// Appends the MessagePack encoding of `value`: smallest integer forms, float64 (`cb`) for
/// floats, bin8/16/32 for binary, the smallest timestamp form for [`Value::Timestamp`].
pub fn encode_value(value: &Value, out: &mut BytesMut) {
    let mut writer = Writer(ByteBuf::new());
    writer.value(value);
    out.extend_from_slice(writer.0.as_slice());
}

// ---------------------------------------------------------------------------------------------
// Decoding

fn malformed(text: &str) -> HubProtocolError {
    HubProtocolError::MessagePack(text.to_owned())
}

fn truncated() -> HubProtocolError {
    malformed("Unexpected end of MessagePack data.")
}

fn trailing_data() -> HubProtocolError {
    malformed("Unexpected data after the MessagePack value.")
}

/// .NET's text for a field of the wrong MessagePack type (or missing).
fn failed(field: &str, ty: &str) -> HubProtocolError {
    HubProtocolError::MessagePack(format!("Reading '{field}' as {ty} failed."))
}

/// The depth for the items of a container found at `depth`, if still within [`MAX_DEPTH`].
fn nested(depth: usize) -> Result<usize, HubProtocolError> {
    if depth >= MAX_DEPTH {
        Err(HubProtocolError::TooDeep)
    } else {
        Ok(depth + 1)
    }
}

/// One MessagePack value header, scalars and bodies read, container items not.
#[derive(Debug)]
enum Head<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'a str),
    Bin(&'a [u8]),
    Array(usize),
    Map(usize),
    Timestamp { seconds: i64, nanos: u32 },
    Ext(i8, &'a [u8]),
}

/// A bounds-checked cursor over MessagePack bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], HubProtocolError> {
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], HubProtocolError> {
        self.take(N)?.try_into().map_err(|_| truncated())
    }

    /// A big-endian unsigned integer of `width` (1, 2, 4 or 8) bytes.
    fn uint(&mut self, width: usize) -> Result<u64, HubProtocolError> {
        let bytes = self.take(width)?;
        Ok(bytes
            .iter()
            .fold(0, |acc, &byte| acc << 8 | u64::from(byte)))
    }

    fn len(&mut self, width: usize) -> Result<usize, HubProtocolError> {
        usize::try_from(self.uint(width)?).map_err(|_| truncated())
    }

    fn str(&mut self, n: usize) -> Result<Head<'a>, HubProtocolError> {
        std::str::from_utf8(self.take(n)?)
            .map(Head::Str)
            .map_err(|_| malformed("Invalid UTF-8 in a MessagePack string."))
    }

    fn ext(&mut self, n: usize) -> Result<Head<'a>, HubProtocolError> {
        let ty = i8::from_be_bytes(self.array()?);
        let data = self.take(n)?;
        if ty != -1 {
            return Ok(Head::Ext(ty, data));
        }
        let (seconds, nanos) = if let Ok(b) = <[u8; 4]>::try_from(data) {
            (i64::from(u32::from_be_bytes(b)), 0)
        } else if let Ok(b) = <[u8; 8]>::try_from(data) {
            let packed = u64::from_be_bytes(b);
            // Lossless: 34 and 30 significant bits.
            ((packed & 0x3_ffff_ffff) as i64, (packed >> 34) as u32)
        } else if let Some((nanos, seconds)) = data.split_first_chunk::<4>()
            && let Ok(seconds) = <[u8; 8]>::try_from(seconds)
        {
            (i64::from_be_bytes(seconds), u32::from_be_bytes(*nanos))
        } else {
            return Err(malformed("Invalid MessagePack timestamp length."));
        };
        if nanos >= NANOS_PER_SECOND {
            return Err(malformed("Invalid MessagePack timestamp nanoseconds."));
        }
        Ok(Head::Timestamp { seconds, nanos })
    }

    /// Reads one value header (and the body of a scalar, string, bin or ext). Sized formats
    /// come in families whose width doubles with the code: `width(first code of the family)`.
    fn head(&mut self) -> Result<Head<'a>, HubProtocolError> {
        let code = u8::from_be_bytes(self.array()?);
        let width = |first: u8| 1usize << (code - first);
        Ok(match Marker::from_u8(code) {
            Marker::FixPos(n) => Head::Int(n.into()),
            Marker::FixNeg(n) => Head::Int(n.into()),
            Marker::Null => Head::Nil,
            Marker::False => Head::Bool(false),
            Marker::True => Head::Bool(true),
            Marker::U8 | Marker::U16 | Marker::U32 | Marker::U64 => {
                let v = self.uint(width(0xcc))?;
                i64::try_from(v).map_or(Head::UInt(v), Head::Int)
            }
            Marker::I8 | Marker::I16 | Marker::I32 | Marker::I64 => {
                let shift = 64 - 8 * width(0xd0);
                // Sign-extends the two's complement value read.
                Head::Int((self.uint(width(0xd0))? << shift) as i64 >> shift)
            }
            Marker::F32 => Head::Float(f32::from_be_bytes(self.array()?).into()),
            Marker::F64 => Head::Float(f64::from_be_bytes(self.array()?)),
            Marker::FixStr(n) => self.str(n.into())?,
            Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                let n = self.len(width(0xd9))?;
                self.str(n)?
            }
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => {
                let n = self.len(width(0xc4))?;
                Head::Bin(self.take(n)?)
            }
            Marker::FixArray(n) => Head::Array(n.into()),
            Marker::Array16 | Marker::Array32 => Head::Array(self.len(2 * width(0xdc))?),
            Marker::FixMap(n) => Head::Map(n.into()),
            Marker::Map16 | Marker::Map32 => Head::Map(self.len(2 * width(0xde))?),
            Marker::FixExt1
            | Marker::FixExt2
            | Marker::FixExt4
            | Marker::FixExt8
            | Marker::FixExt16 => self.ext(width(0xd4))?,
            Marker::Ext8 | Marker::Ext16 | Marker::Ext32 => {
                let n = self.len(width(0xc7))?;
                self.ext(n)?
            }
            Marker::Reserved => {
                return Err(HubProtocolError::MessagePack(format!(
                    "Unexpected msgpack code {code} (never used) encountered."
                )));
            }
        })
    }

    /// Validates and steps over one value whose enclosing containers number `depth`.
    fn skip(&mut self, depth: usize) -> Result<(), HubProtocolError> {
        match self.head()? {
            Head::Array(n) => {
                let inner = nested(depth)?;
                for _ in 0..n {
                    self.skip(inner)?;
                }
            }
            Head::Map(n) => {
                let inner = nested(depth)?;
                for _ in 0..n {
                    self.skip(inner)?;
                    self.skip(inner)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads one value whose enclosing containers number `depth`.
    fn value(&mut self, depth: usize) -> Result<Value, HubProtocolError> {
        Ok(match self.head()? {
            Head::Nil => Value::Null,
            Head::Bool(b) => Value::Bool(b),
            Head::Int(i) => Value::Int(i),
            Head::UInt(u) => Value::UInt(u),
            Head::Float(f) => Value::Float(f),
            Head::Str(s) => Value::Str(s.to_owned()),
            Head::Bin(b) => Value::Bin(Bytes::copy_from_slice(b)),
            Head::Array(n) => {
                let inner = nested(depth)?;
                // Each item takes at least one byte: a hostile count cannot over-allocate.
                let mut items = Vec::with_capacity(n.min(self.remaining()));
                for _ in 0..n {
                    items.push(self.value(inner)?);
                }
                Value::Array(items)
            }
            Head::Map(n) => {
                let inner = nested(depth)?;
                let mut entries = Vec::with_capacity(n.min(self.remaining() / 2));
                for _ in 0..n {
                    let key = self.value(inner)?;
                    entries.push((key, self.value(inner)?));
                }
                Value::Map(entries)
            }
            Head::Timestamp { seconds, nanos } => Value::Timestamp { seconds, nanos },
            Head::Ext(ty, data) => Value::Ext(ty, Bytes::copy_from_slice(data)),
        })
    }
}

/// The fields of one hub message array. Like .NET, required fields are read whatever the array
/// count says (so errors name the field); the count decides optional fields and extra items.
struct Envelope<'a> {
    input: &'a Bytes,
    reader: Reader<'a>,
    count: usize,
    read: usize,
}

impl<'a> Envelope<'a> {
    fn has_more(&self) -> bool {
        self.read < self.count
    }

    /// The next field's header; `None` when missing or malformed.
    fn next(&mut self) -> Option<Head<'a>> {
        self.read += 1;
        self.reader.head().ok()
    }

    fn string(&mut self, field: &str) -> Result<Option<&'a str>, HubProtocolError> {
        match self.next() {
            Some(Head::Nil) => Ok(None),
            Some(Head::Str(s)) => Ok(Some(s)),
            _ => Err(failed(field, "String")),
        }
    }

    fn required_string(&mut self, field: &str) -> Result<String, HubProtocolError> {
        self.string(field)?
            .map(str::to_owned)
            .ok_or_else(|| failed(field, "String"))
    }

    fn int32(&mut self, field: &str) -> Result<i32, HubProtocolError> {
        match self.next() {
            Some(Head::Int(i)) => i32::try_from(i).map_err(|_| failed(field, "Int32")),
            _ => Err(failed(field, "Int32")),
        }
    }

    fn int64(&mut self, field: &str) -> Result<i64, HubProtocolError> {
        match self.next() {
            Some(Head::Int(i)) => Ok(i),
            _ => Err(failed(field, "Int64")),
        }
    }

    fn boolean(&mut self, field: &str) -> Result<bool, HubProtocolError> {
        match self.next() {
            Some(Head::Bool(b)) => Ok(b),
            _ => Err(failed(field, "Boolean")),
        }
    }

    fn array_len(&mut self, field: &str) -> Result<usize, HubProtocolError> {
        match self.next() {
            Some(Head::Array(n)) => Ok(n),
            _ => Err(HubProtocolError::MessagePack(format!(
                "Reading array length for '{field}' failed."
            ))),
        }
    }

    fn headers(&mut self) -> Result<Headers, HubProtocolError> {
        let Some(Head::Map(n)) = self.next() else {
            return Err(malformed("Reading map length for 'headers' failed."));
        };
        let mut headers = Vec::with_capacity(n.min(self.reader.remaining() / 2));
        for index in 0..n {
            let key = self.header_part(index, "Key")?;
            headers.push((key, self.header_part(index, "Value")?));
        }
        Ok(Headers(headers))
    }

    fn header_part(&mut self, index: usize, part: &str) -> Result<String, HubProtocolError> {
        match self.reader.head() {
            Ok(Head::Str(s)) if !s.is_empty() => Ok(s.to_owned()),
            Ok(Head::Str(_) | Head::Nil) => Err(HubProtocolError::EmptyHeader),
            _ => Err(failed(&format!("headers[{index}].{part}"), "String")),
        }
    }

    /// The raw bytes of the next value (inside the current field), validated.
    fn raw_value(&mut self) -> Result<Payload, HubProtocolError> {
        let start = self.reader.pos;
        self.reader.skip(0)?;
        // invariant: the reader only moves within `frame`, a prefix of `input`, so
        // `start..pos` is in bounds.
        Ok(Payload::MessagePack(
            self.input.slice(start..self.reader.pos),
        ))
    }

    /// A payload field (`item`, `argument`: .NET's names).
    fn payload(&mut self, field: &str) -> Result<Payload, HubProtocolError> {
        self.read += 1;
        if self.reader.remaining() == 0 {
            return Err(HubProtocolError::MessagePack(format!(
                "Deserializing object of the `Object` type for '{field}' failed."
            )));
        }
        self.raw_value()
    }

    fn invocation(&mut self, stream: bool) -> Result<Invocation, HubProtocolError> {
        let headers = self.headers()?;
        let invocation_id = if stream {
            Some(self.required_string("invocationId")?)
        } else {
            // An empty id means a non-blocking invocation, as .NET normalises it.
            self.string("invocationId")?
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
        };
        let target = match self.string("target")? {
            Some(target) if !target.is_empty() => target.to_owned(),
            _ => return Err(HubProtocolError::EmptyTarget),
        };
        let count = self.array_len("arguments")?;
        let mut arguments = Vec::with_capacity(count.min(self.reader.remaining()));
        for _ in 0..count {
            arguments.push(self.raw_value()?);
        }
        let mut stream_ids = Vec::new();
        // The JS client writes 5 items when it has no upload streams; .NET reads them if > 5.
        if self.has_more() {
            let count = self.array_len("streamIds")?;
            for _ in 0..count {
                match self.reader.head() {
                    Ok(Head::Str(id)) => stream_ids.push(id.to_owned()),
                    _ => return Err(failed("streamIds", "String")),
                }
            }
        }
        Ok(Invocation {
            headers,
            invocation_id,
            target,
            arguments,
            stream_ids,
        })
    }

    fn completion(&mut self) -> Result<Completion, HubProtocolError> {
        let headers = self.headers()?;
        let invocation_id = self.required_string("invocationId")?;
        let outcome = match self.int32("resultKind")? {
            1 => CompletionOutcome::Error(self.required_string("error")?),
            2 => CompletionOutcome::Void,
            3 => CompletionOutcome::Result(self.payload("argument")?),
            _ => return Err(HubProtocolError::InvalidResultKind),
        };
        Ok(Completion {
            headers,
            invocation_id,
            outcome,
        })
    }

    /// Skips extra items (validated) and checks the array filled the body.
    fn finish(mut self) -> Result<(), HubProtocolError> {
        if self.read > self.count {
            return Err(HubProtocolError::MessagePack(format!(
                "The hub message array has {} items, fewer than its {} fields.",
                self.count, self.read
            )));
        }
        for _ in self.read..self.count {
            self.reader.skip(0)?;
        }
        if self.reader.remaining() == 0 {
            Ok(())
        } else {
            Err(trailing_data())
        }
    }
}

/// Decodes the message array in `frame[start..]` (`frame` is a prefix of `input`).
fn decode_body(input: &Bytes, frame: &[u8], start: usize) -> Result<HubMessage, HubProtocolError> {
    let mut reader = Reader {
        buf: frame,
        pos: start,
    };
    let Ok(Head::Array(count)) = reader.head() else {
        return Err(HubProtocolError::NotAMessage);
    };
    let mut fields = Envelope {
        input,
        reader,
        count,
        read: 0,
    };
    let message = match fields.int32("messageType")? {
        1 => HubMessage::Invocation(fields.invocation(false)?),
        2 => HubMessage::StreamItem(StreamItem {
            headers: fields.headers()?,
            invocation_id: fields.required_string("invocationId")?,
            item: fields.payload("item")?,
        }),
        3 => HubMessage::Completion(fields.completion()?),
        4 => HubMessage::StreamInvocation(fields.invocation(true)?),
        5 => HubMessage::CancelInvocation(CancelInvocation {
            headers: fields.headers()?,
            invocation_id: fields.required_string("invocationId")?,
        }),
        6 => HubMessage::Ping,
        7 => HubMessage::Close(Close {
            error: fields.string("error")?.map(str::to_owned),
            allow_reconnect: fields.has_more() && fields.boolean("allowReconnect")?,
        }),
        8 => HubMessage::Ack(fields.int64("sequenceId")?),
        9 => HubMessage::Sequence(fields.int64("sequenceId")?),
        // A future message type: skipped unread, as .NET and JS do.
        other => return Ok(HubMessage::Unknown(other.into())),
    };
    fields.finish()?;
    Ok(message)
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// A MessagePack writer over `rmp`'s infallible buffer.
struct Writer(ByteBuf);

/// A container length as MessagePack's u32 (longer cannot occur in memory-bounded messages).
fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl Writer {
    fn nil(&mut self) {
        let Ok(()) = encode::write_nil(&mut self.0);
    }

    fn bool(&mut self, value: bool) {
        let Ok(()) = encode::write_bool(&mut self.0, value);
    }

    fn int(&mut self, value: i64) {
        let Ok(_) = encode::write_sint(&mut self.0, value);
    }

    fn str(&mut self, value: &str) {
        let Ok(()) = encode::write_str(&mut self.0, value);
    }

    /// A string, or nil when absent or empty (.NET's `string.IsNullOrEmpty` rule).
    fn str_or_nil(&mut self, value: Option<&str>) {
        match value {
            Some(s) if !s.is_empty() => self.str(s),
            _ => self.nil(),
        }
    }

    fn array(&mut self, len: usize) {
        let Ok(_) = encode::write_array_len(&mut self.0, len32(len));
    }

    fn map(&mut self, len: usize) {
        let Ok(_) = encode::write_map_len(&mut self.0, len32(len));
    }

    fn ext(&mut self, ty: i8, data: &[u8]) {
        let Ok(_) = encode::write_ext_meta(&mut self.0, len32(data.len()), ty);
        self.0.as_mut_vec().extend_from_slice(data);
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.nil(),
            Value::Bool(b) => self.bool(*b),
            Value::Int(i) => self.int(*i),
            Value::UInt(u) => {
                let Ok(_) = encode::write_uint(&mut self.0, *u);
            }
            Value::Float(f) => {
                let Ok(()) = encode::write_f64(&mut self.0, *f);
            }
            Value::Str(s) => self.str(s),
            Value::Bin(b) => {
                let Ok(()) = encode::write_bin(&mut self.0, b);
            }
            Value::Array(items) => {
                self.array(items.len());
                items.iter().for_each(|item| self.value(item));
            }
            Value::Map(entries) => {
                self.map(entries.len());
                for (key, value) in entries {
                    self.value(key);
                    self.value(value);
                }
            }
            Value::Timestamp { seconds, nanos } => self.timestamp(*seconds, *nanos),
            Value::Ext(ty, data) => self.ext(*ty, data),
        }
    }

    /// The smallest timestamp form: 32-bit (seconds only), 64-bit (34-bit seconds), else 96-bit.
    fn timestamp(&mut self, seconds: i64, nanos: u32) {
        let seconds = seconds.saturating_add(i64::from(nanos / NANOS_PER_SECOND));
        let nanos = nanos % NANOS_PER_SECOND;
        if let Ok(secs) = u64::try_from(seconds)
            && secs >> 34 == 0
        {
            let packed = u64::from(nanos) << 34 | secs;
            match u32::try_from(packed) {
                Ok(small) => self.ext(-1, &small.to_be_bytes()),
                Err(_) => self.ext(-1, &packed.to_be_bytes()),
            }
        } else {
            let mut data = [0u8; 12];
            let (head, tail) = data.split_at_mut(4);
            head.copy_from_slice(&nanos.to_be_bytes());
            tail.copy_from_slice(&seconds.to_be_bytes());
            self.ext(-1, &data);
        }
    }

    fn payload(&mut self, payload: &Payload) -> Result<(), HubProtocolError> {
        match payload {
            Payload::MessagePack(bytes) => self.0.as_mut_vec().extend_from_slice(bytes),
            Payload::Value(value) => self.value(value),
            Payload::Json(json) => match super::json::plain_string(json) {
                // The common case (a string without escapes) skips building a value.
                Some(text) => self.str(text),
                None => self.value(&super::json::decode_value(json)?),
            },
        }
        Ok(())
    }

    fn headers(&mut self, headers: &Headers) {
        self.map(headers.0.len());
        for (key, value) in &headers.0 {
            self.str(key);
            self.str(value);
        }
    }

    fn invocation(&mut self, ty: i64, invocation: &Invocation) -> Result<(), HubProtocolError> {
        self.array(6);
        self.int(ty);
        self.headers(&invocation.headers);
        match (&invocation.invocation_id, ty) {
            (Some(id), 4) => self.str(id),
            (id, _) => self.str_or_nil(id.as_deref()),
        }
        self.str(&invocation.target);
        self.array(invocation.arguments.len());
        for argument in &invocation.arguments {
            self.payload(argument)?;
        }
        self.array(invocation.stream_ids.len());
        invocation.stream_ids.iter().for_each(|id| self.str(id));
        Ok(())
    }

    fn message(&mut self, message: &HubMessage) -> Result<(), HubProtocolError> {
        match message {
            HubMessage::Invocation(invocation) => self.invocation(1, invocation)?,
            HubMessage::StreamInvocation(invocation) => self.invocation(4, invocation)?,
            HubMessage::StreamItem(item) => {
                self.array(4);
                self.int(2);
                self.headers(&item.headers);
                self.str(&item.invocation_id);
                self.payload(&item.item)?;
            }
            HubMessage::Completion(completion) => {
                let void = matches!(completion.outcome, CompletionOutcome::Void);
                self.array(if void { 4 } else { 5 });
                self.int(3);
                self.headers(&completion.headers);
                self.str(&completion.invocation_id);
                match &completion.outcome {
                    CompletionOutcome::Error(error) => {
                        self.int(1);
                        self.str(error);
                    }
                    CompletionOutcome::Void => self.int(2),
                    CompletionOutcome::Result(result) => {
                        self.int(3);
                        self.payload(result)?;
                    }
                }
            }
            HubMessage::CancelInvocation(cancel) => {
                self.array(3);
                self.int(5);
                self.headers(&cancel.headers);
                self.str(&cancel.invocation_id);
            }
            HubMessage::Ping => {
                self.array(1);
                self.int(6);
            }
            HubMessage::Close(close) => {
                self.array(3);
                self.int(7);
                self.str_or_nil(close.error.as_deref());
                self.bool(close.allow_reconnect);
            }
            HubMessage::Ack(id) | HubMessage::Sequence(id) => {
                self.array(2);
                self.int(message.type_id());
                self.int(*id);
            }
            HubMessage::Unknown(_) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CompletionOutcome::{Error, Result as Returned, Void};

    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    fn frame(body: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        write_varint(body.len(), &mut out);
        out.extend_from_slice(body);
        out.freeze()
    }

    fn mp(text: &str) -> Payload {
        Payload::MessagePack(Bytes::from(hex(text)))
    }

    /// Decodes one message from framed `input`, asserting it used all of it.
    fn decoded(input: &Bytes) -> HubMessage {
        match decode(input, usize::MAX).unwrap() {
            Decoded::Message(message, used) if used == input.len() => message,
            other => panic!("{other:?} from {input:02x?}"),
        }
    }

    fn body(text: &str) -> Result<Decoded, HubProtocolError> {
        decode(&frame(&hex(text)), usize::MAX)
    }

    fn encoded(message: &HubMessage) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(message, &mut out).unwrap();
        out.to_vec()
    }

    fn inv(id: Option<&str>, target: &str, args: &[&str], streams: &[&str]) -> Invocation {
        Invocation {
            headers: Headers::new(),
            invocation_id: id.map(str::to_owned),
            target: target.to_owned(),
            arguments: args.iter().map(|a| mp(a)).collect(),
            stream_ids: streams.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn done(id: &str, outcome: CompletionOutcome) -> HubMessage {
        let invocation_id = id.to_owned();
        HubMessage::Completion(Completion {
            headers: Headers::new(),
            invocation_id,
            outcome,
        })
    }

    fn item(id: &str, item: &str) -> HubMessage {
        let invocation_id = id.to_owned();
        HubMessage::StreamItem(StreamItem {
            headers: Headers::new(),
            invocation_id,
            item: mp(item),
        })
    }

    fn close(error: Option<&str>, allow_reconnect: bool) -> HubMessage {
        HubMessage::Close(Close {
            error: error.map(str::to_owned),
            allow_reconnect,
        })
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    const RECEIVE_HI: &str =
        "18 96 01 80 c0 ae 52 65 63 65 69 76 65 4d 65 73 73 61 67 65 91 a2 68 69 90";

    #[test]
    fn varint_prefixes_match_the_spec_examples_both_ways() {
        #[rustfmt::skip]
        let vectors = [
            (0, "00"),
            (127, "7f"),
            (128, "80 01"),
            (300, "ac 02"),
            (16383, "ff 7f"),
        ];
        let more = [
            (16384, "80 80 01"),
            (32768, "80 80 02"),
            (0x7fff_ffff, "ff ff ff ff 07"),
        ];
        for (len, text) in vectors.into_iter().chain(more).chain([(5248, "80 29")]) {
            let bytes = hex(text);
            let mut out = BytesMut::new();
            write_varint(len, &mut out);
            assert_eq!(out.as_ref(), bytes.as_slice(), "{len}");
            assert_eq!(
                read_varint(&bytes).unwrap(),
                Some((len, bytes.len())),
                "{text}"
            );
        }
        assert_eq!(
            frame(&hex("ab cd ef 12")).as_ref(),
            hex("04 ab cd ef 12").as_slice()
        );
        assert_eq!(frame(&[0; 128]).get(..2), Some(&[0x80, 0x01][..]));
    }

    #[test]
    fn a_prefix_over_five_bytes_or_2gb_is_rejected_and_a_partial_one_needs_more() {
        for text in ["80 80 80 80 80 01", "ff ff ff ff 08", "ff ff ff ff 7f"] {
            assert_eq!(
                read_varint(&hex(text)),
                Err(HubProtocolError::LengthPrefixTooLarge)
            );
            let error = decode(&Bytes::from(hex(text)), usize::MAX);
            assert_eq!(error, Err(HubProtocolError::LengthPrefixTooLarge));
        }
        assert_eq!(read_varint(&hex("80 80")), Ok(None));
        assert_eq!(read_varint(&[]), Ok(None));
    }

    #[test]
    fn every_truncation_of_a_message_needs_more_data() {
        let framed = frame(&hex("96 01 80 c0 a6 6d 65 74 68 6f 64 91 2a 90"));
        for end in 0..framed.len() {
            assert_eq!(
                decode(&framed.slice(..end), 1000),
                Ok(Decoded::NeedMore),
                "{end}"
            );
        }
        assert_eq!(
            decoded(&framed),
            HubMessage::Invocation(inv(None, "method", &["2a"], &[]))
        );
    }

    #[test]
    fn dotnet_vectors_decode_and_encode_byte_for_byte() {
        let mut with_headers = inv(Some("xyz"), "method", &["2a"], &[]);
        with_headers.headers = headers(&[("x", "y"), ("z", "z")]);
        let completion_headers = headers(&[
            ("Foo", "Bar"),
            ("KeyWith\nNew\r\nLines", "Still Works"),
            ("ValueWithNewLines", "Also\nWorks\r\nFine"),
        ]);
        let cancel = CancelInvocation {
            headers: Headers::new(),
            invocation_id: "xyz".into(),
        };
        let string = "a6 73 74 72 69 6e 67";
        #[rustfmt::skip]
        let vectors = [
            ("96 01 80 a3 78 79 7a a6 6d 65 74 68 6f 64 90 90", HubMessage::Invocation(inv(Some("xyz"), "method", &[], &[]))),
            ("96 01 80 c0 a6 6d 65 74 68 6f 64 91 2a 90", HubMessage::Invocation(inv(None, "method", &["2a"], &[]))),
            ("96 01 80 c0 a6 6d 65 74 68 6f 64 92 2a a6 73 74 72 69 6e 67 90", HubMessage::Invocation(inv(None, "method", &["2a", string], &[]))),
            ("96 01 80 c0 a6 54 61 72 67 65 74 90 91 ab 5f 5f 74 65 73 74 5f 69 64 5f 5f", HubMessage::Invocation(inv(None, "Target", &[], &["__test_id__"]))),
            ("94 02 80 a3 78 79 7a 2a", item("xyz", "2a")),
            ("94 02 80 a3 78 79 7a ca 42 28 00 00", item("xyz", "ca 42 28 00 00")),
            ("95 03 80 a3 78 79 7a 01 b0 45 72 72 6f 72 20 6e 6f 74 20 66 6f 75 6e 64 21", done("xyz", Error("Error not found!".into()))),
            ("94 03 80 a3 78 79 7a 02", done("xyz", Void)),
            ("95 03 80 a3 78 79 7a 03 2a", done("xyz", Returned(mp("2a")))),
            ("95 03 80 a3 78 79 7a 03 c3", done("xyz", Returned(mp("c3")))),
            ("94 03 83 a3 46 6f 6f a3 42 61 72 b2 4b 65 79 57 69 74 68 0a 4e 65 77 0d 0a 4c 69 6e 65 73 ab 53 74 69 6c 6c 20 57 6f 72 6b 73 b1 56 61 6c 75 65 57 69 74 68 4e 65 77 4c 69 6e 65 73 b0 41 6c 73 6f 0a 57 6f 72 6b 73 0d 0a 46 69 6e 65 a3 78 79 7a 02", HubMessage::Completion(Completion { headers: completion_headers, invocation_id: "xyz".into(), outcome: Void })),
            ("96 04 80 a3 78 79 7a a6 6d 65 74 68 6f 64 91 2a 90", HubMessage::StreamInvocation(inv(Some("xyz"), "method", &["2a"], &[]))),
            ("93 05 80 a3 78 79 7a", HubMessage::CancelInvocation(cancel)),
            ("91 06", HubMessage::Ping),
            ("93 07 c0 c2", close(None, false)),
            ("93 07 a6 45 72 72 6f 72 21 c2", close(Some("Error!"), false)),
            ("93 07 c0 c3", close(None, true)),
            ("93 07 a6 45 72 72 6f 72 21 c3", close(Some("Error!"), true)),
            ("92 08 2a", HubMessage::Ack(42)),
            ("92 09 cc 92", HubMessage::Sequence(146)),
            ("96 01 82 a1 78 a1 79 a1 7a a1 7a a3 78 79 7a a6 6d 65 74 68 6f 64 91 2a 90", HubMessage::Invocation(with_headers)),
        ];
        for (text, message) in vectors {
            let framed = frame(&hex(text));
            assert_eq!(decoded(&framed), message, "{text}");
            assert_eq!(encoded(&message), framed.as_ref(), "{text}");
        }
    }

    #[test]
    fn framed_vectors_decode_and_the_dotnet_ones_encode() {
        let send_hi =
            |id: Option<&str>| HubMessage::Invocation(inv(id, "Send", &["a2 68 69"], &[]));
        let receive_hi = HubMessage::Invocation(inv(None, "ReceiveMessage", &["a2 68 69"], &[]));
        #[rustfmt::skip]
        let decode_only = [
            ("0e 95 01 80 a1 30 a4 53 65 6e 64 91 a2 68 69", send_hi(Some("0"))),
            ("0d 95 01 80 c0 a4 53 65 6e 64 91 a2 68 69", send_hi(None)),
            ("03 92 07 c0", close(None, false)),
            ("06 92 07 a3 78 79 7a", close(Some("xyz"), false)),
            ("04 92 08 cc 24", HubMessage::Ack(36)),
            ("04 92 09 cc 13", HubMessage::Sequence(19)),
            ("0b 92 09 cf 00 00 00 01 00 00 00 00", HubMessage::Sequence(1 << 32)),
        ];
        #[rustfmt::skip]
        let both_ways = [
            ("02 91 06", HubMessage::Ping),
            ("04 93 07 c0 c2", close(None, false)),
            (RECEIVE_HI, receive_hi),
            ("06 94 03 80 a1 31 02", done("1", Void)),
            ("07 95 03 80 a1 33 03 2a", done("3", Returned(mp("2a")))),
            ("0b 95 03 80 a1 33 01 a4 62 6f 6f 6d", done("3", Error("boom".into()))),
            ("03 92 08 2a", HubMessage::Ack(42)),
            ("04 92 09 cc 92", HubMessage::Sequence(146)),
        ];
        for (text, message) in decode_only.into_iter().chain(both_ways.clone()) {
            assert_eq!(decoded(&Bytes::from(hex(text))), message, "{text}");
        }
        for (text, message) in both_ways {
            assert_eq!(encoded(&message), hex(text), "{text}");
        }
    }

    #[test]
    fn ping_and_ack_in_one_frame_decode_one_after_another() {
        let input = Bytes::from(hex("02 91 06 03 92 08 01"));
        assert_eq!(
            decode(&input, 100),
            Ok(Decoded::Message(HubMessage::Ping, 3))
        );
        assert_eq!(
            decode(&input.slice(3..), 100),
            Ok(Decoded::Message(HubMessage::Ack(1), 4))
        );
    }

    #[test]
    fn encoding_follows_dotnet_for_values_sizes_empty_strings_and_unknown_types() {
        let mut receive = inv(None, "ReceiveMessage", &[], &[]);
        receive.arguments = vec![Payload::string("hi")];
        assert_eq!(encoded(&HubMessage::Invocation(receive)), hex(RECEIVE_HI));
        let mut target = inv(None, "Target", &[], &[]);
        target.arguments = vec![Payload::from_value(Value::Int(1))];
        assert_eq!(encoded(&HubMessage::Invocation(target.clone())).len(), 15);
        target.invocation_id = Some("1".into());
        assert_eq!(encoded(&HubMessage::Invocation(target)).len(), 16);
        assert_eq!(encoded(&close(None, false)).len(), 5);
        assert_eq!(encoded(&done("1", Void)).len(), 7);
        assert_eq!(encoded(&HubMessage::Ping).len(), 3);
        let empty_id = HubMessage::Invocation(inv(Some(""), "m", &[], &[]));
        assert_eq!(encoded(&empty_id), hex("08 96 01 80 c0 a1 6d 90 90"));
        assert_eq!(encoded(&close(Some(""), false)), hex("04 93 07 c0 c2"));
        assert_eq!(encoded(&HubMessage::Unknown(42)), Vec::<u8>::new());
    }

    #[test]
    fn json_payloads_are_transcoded() {
        let mut receive = inv(None, "ReceiveMessage", &[], &[]);
        receive.arguments = vec![Payload::Json(Bytes::from_static(b"\"hi\""))];
        assert_eq!(encoded(&HubMessage::Invocation(receive)), hex(RECEIVE_HI));
    }

    #[test]
    fn payloads_are_slices_of_the_input_buffer() {
        let input = frame(&hex(
            "96 01 80 c0 a6 6d 65 74 68 6f 64 92 2a a6 73 74 72 69 6e 67 90",
        ));
        let HubMessage::Invocation(message) = decoded(&input) else {
            panic!("not an invocation")
        };
        let range = input.as_ptr_range();
        for argument in &message.arguments {
            let Payload::MessagePack(bytes) = argument else {
                panic!("not msgpack")
            };
            let inner = bytes.as_ptr_range();
            assert!(range.start <= inner.start && inner.end <= range.end);
        }
        assert_eq!(message.arguments[1].as_string().as_deref(), Some("string"));
    }

    #[test]
    fn a_message_over_the_limit_is_too_large_framing_included() {
        let input = frame(&hex("96 01 80 c0 a6 6d 65 74 68 6f 64 91 2a 90"));
        assert_eq!(input.len(), 15);
        let too_large = |max| Err(HubProtocolError::MessageTooLarge { max });
        assert_eq!(decode(&input, 14), too_large(14));
        assert!(matches!(decode(&input, 15), Ok(Decoded::Message(_, 15))));
        assert_eq!(decode(&Bytes::from(hex("ff 7f 96")), 14), too_large(14));
        assert_eq!(decode(&Bytes::from(hex("80 80")), 2), too_large(2));
        assert_eq!(decode(&Bytes::new(), 0), Ok(Decoded::NeedMore));
    }

    #[test]
    fn wrong_types_fail_with_the_dotnet_texts() {
        #[rustfmt::skip]
        let cases = [
            ("91 a3 66 6f 6f", "Reading 'messageType' as Int32 failed."),
            ("92 01 a3 66 6f 6f", "Reading map length for 'headers' failed."),
            ("92 01 82 2a a3 66 6f 6f", "Reading 'headers[0].Key' as String failed."),
            ("92 01 82 a3 66 6f 6f 2a", "Reading 'headers[0].Value' as String failed."),
            ("92 01 84 a3 66 6f 6f a3 66 6f 6f 90 a3 66 6f 6f", "Reading 'headers[1].Key' as String failed."),
            ("92 01 80", "Reading 'invocationId' as String failed."),
            ("91 01 80 c2", "Reading 'invocationId' as String failed."),
            ("95 01 80 2a a4 53 65 6e 64 90", "Reading 'invocationId' as String failed."),
            ("93 01 80 a3 61 62 63", "Reading 'target' as String failed."),
            ("94 01 80 a3 61 62 63 2a", "Reading 'target' as String failed."),
            ("93 04 80 c2", "Reading 'invocationId' as String failed."),
            ("94 04 80 a3 61 62 63 2a", "Reading 'target' as String failed."),
            ("92 02 80", "Reading 'invocationId' as String failed."),
            ("93 02 80 a3 78 79 7a", "Deserializing object of the `Object` type for 'item' failed."),
            ("93 03 80 c2", "Reading 'invocationId' as String failed."),
            ("94 03 80 a3 78 79 7a a3 78 79 7a", "Reading 'resultKind' as Int32 failed."),
            ("94 03 80 a3 78 79 7a 01", "Reading 'error' as String failed."),
            ("95 03 80 a3 78 79 7a 01 2a", "Reading 'error' as String failed."),
            ("94 01 80 a3 61 62 63 a3 78 79 7a", "Reading array length for 'arguments' failed."),
            ("95 01 80 a3 61 62 63 a3 78 79 7a 2a", "Reading array length for 'arguments' failed."),
            ("92 08 a1 31", "Reading 'sequenceId' as Int64 failed."),
            ("92 09 cf ff ff ff ff ff ff ff ff", "Reading 'sequenceId' as Int64 failed."),
            ("93 07 2a c3", "Reading 'error' as String failed."),
            ("93 07 c0 2a", "Reading 'allowReconnect' as Boolean failed."),
        ];
        for (text, expected) in cases {
            assert_eq!(body(text).unwrap_err().to_string(), expected, "{text}");
        }
    }

    #[test]
    fn protocol_violations_map_to_their_errors() {
        use HubProtocolError::{EmptyHeader, EmptyTarget, InvalidResultKind, NotAMessage};
        #[rustfmt::skip]
        let cases = [
            ("2a", NotAMessage),
            ("", NotAMessage),
            ("81 01 02", NotAMessage),
            ("94 03 80 a3 78 79 7a 04", InvalidResultKind),
            ("96 01 81 a0 a1 79 c0 a1 6d 90 90", EmptyHeader),
            ("96 01 81 a1 78 a0 c0 a1 6d 90 90", EmptyHeader),
            ("96 01 81 c0 a1 79 c0 a1 6d 90 90", EmptyHeader),
            ("96 01 80 c0 a0 90 90", EmptyTarget),
            ("96 01 80 c0 c0 90 90", EmptyTarget),
        ];
        for (text, expected) in cases {
            assert_eq!(body(text), Err(expected), "{text}");
        }
        // Trailing bytes, an array shorter than its fields, an invalid extra item or argument.
        for text in [
            "91 06 c0",
            "92 08 2a 2a",
            "91 07 c0",
            "92 06 c1",
            "96 01 80 c0 a1 6d 91 c1 90",
        ] {
            assert!(
                matches!(body(text), Err(HubProtocolError::MessagePack(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn extra_items_are_ignored_optional_ones_read_and_empty_ids_normalised() {
        #[rustfmt::skip]
        let cases = [
            ("92 06 c0", HubMessage::Ping),
            ("94 07 c0 c3 a1 78", close(None, true)),
            ("92 07 a0", close(Some(""), false)),
            ("95 03 80 a1 31 02 c0", done("1", Void)),
            ("97 01 80 c0 a1 6d 91 2a 90 81 a1 6b 93 01 02 03", HubMessage::Invocation(inv(None, "m", &["2a"], &[]))),
            ("95 01 80 a0 a4 53 65 6e 64 90", HubMessage::Invocation(inv(None, "Send", &[], &[]))),
            ("93 0a 80 c1", HubMessage::Unknown(10)),
        ];
        for (text, message) in cases {
            assert_eq!(decoded(&frame(&hex(text))), message, "{text}");
        }
    }

    #[test]
    fn hostile_nesting_fails_without_overflowing_the_stack() {
        let mut body = hex("95 01 80 c0 a1 6d 91");
        body.extend(std::iter::repeat_n(0x91, 10_000));
        body.push(0xc0);
        assert_eq!(
            decode(&frame(&body), usize::MAX),
            Err(HubProtocolError::TooDeep)
        );
        let mut value = hex("dc ff ff");
        value.extend(std::iter::repeat_n(0x81, 10_000));
        assert_eq!(decode_value(&value), Err(HubProtocolError::TooDeep));
        let nested = |levels| [vec![0x91; levels], vec![0x2a]].concat();
        assert!(decode_value(&nested(MAX_DEPTH)).is_ok());
        assert_eq!(
            decode_value(&nested(MAX_DEPTH + 1)),
            Err(HubProtocolError::TooDeep)
        );
        let deepest = [hex("95 01 80 c0 a1 6d 91"), nested(MAX_DEPTH)].concat();
        assert!(decode(&frame(&deepest), usize::MAX).is_ok());
    }

    #[test]
    fn values_round_trip_in_the_smallest_forms() {
        let bin = |bytes: &'static [u8]| Value::Bin(Bytes::from_static(bytes));
        let str = |n: usize| Value::Str("x".repeat(n));
        #[rustfmt::skip]
        let cases = [
            (Value::Null, "c0"),
            (Value::Bool(true), "c3"),
            (Value::Int(0), "00"),
            (Value::Int(-1), "ff"),
            (Value::Int(-33), "d0 df"),
            (Value::Int(200), "cc c8"),
            (Value::Int(65536), "ce 00 01 00 00"),
            (Value::Int(i64::MIN), "d3 80 00 00 00 00 00 00 00"),
            (Value::UInt(u64::MAX), "cf ff ff ff ff ff ff ff ff"),
            (Value::Float(1.5), "cb 3f f8 00 00 00 00 00 00"),
            (str(2), "a2 78 78"),
            (bin(&[1, 2]), "c4 02 01 02"),
            (Value::Array(vec![Value::Int(1), Value::Null]), "92 01 c0"),
            (Value::Map(vec![(Value::Int(1), str(1))]), "81 01 a1 78"),
            (Value::Timestamp { seconds: 1, nanos: 0 }, "d6 ff 00 00 00 01"),
            (Value::Timestamp { seconds: 1, nanos: 1 }, "d7 ff 00 00 00 04 00 00 00 01"),
            (Value::Timestamp { seconds: 1 << 32, nanos: 0 }, "d7 ff 00 00 00 01 00 00 00 00"),
            (Value::Timestamp { seconds: -1, nanos: 5 }, "c7 0c ff 00 00 00 05 ff ff ff ff ff ff ff ff"),
            (Value::Ext(5, Bytes::from_static(&[9])), "d4 05 09"),
            (Value::Ext(7, Bytes::from_static(&[1, 2, 3])), "c7 03 07 01 02 03"),
        ];
        let mut out = BytesMut::new();
        for (value, text) in cases {
            out.clear();
            encode_value(&value, &mut out);
            assert_eq!(out.as_ref(), hex(text).as_slice(), "{value:?}");
            assert_eq!(decode_value(&out), Ok(value), "{text}");
        }
        let long = Value::Bin(Bytes::from(vec![7; 300]));
        for (value, head) in [
            (str(31), "bf"),
            (str(32), "d9 20"),
            (str(300), "da 01 2c"),
            (long, "c5 01 2c"),
        ] {
            out.clear();
            encode_value(&value, &mut out);
            assert!(out.starts_with(&hex(head)), "{head}");
            assert_eq!(decode_value(&out), Ok(value));
        }
    }

    #[test]
    fn other_encodings_decode_and_malformed_values_are_rejected() {
        #[rustfmt::skip]
        let cases = [
            ("ca 42 28 00 00", Value::Float(42.0)),
            ("cf 00 00 00 00 00 00 00 01", Value::Int(1)),
            ("cf 80 00 00 00 00 00 00 00", Value::UInt(1 << 63)),
            ("d1 ff 7f", Value::Int(-129)),
            ("d9 02 68 69", Value::Str("hi".into())),
            ("dc 00 01 c2", Value::Array(vec![Value::Bool(false)])),
            ("c7 0c ff 00 00 00 00 00 00 00 00 00 00 00 07", Value::Timestamp { seconds: 7, nanos: 0 }),
        ];
        for (text, value) in cases {
            assert_eq!(decode_value(&hex(text)), Ok(value), "{text}");
        }
        let malformed = [
            "",
            "c1",
            "2a 2a",
            "a2 68",
            "a2 ff fe",
            "92 01",
            "d5 ff 00 00",
        ];
        let bad_nanos = [
            "d7 ff ff ff ff ff 00 00 00 00",
            "c7 0c ff 3b 9a ca 00 00 00 00 00 00 00 00 00",
        ];
        for text in malformed.into_iter().chain(bad_nanos) {
            let error = decode_value(&hex(text));
            assert!(
                matches!(error, Err(HubProtocolError::MessagePack(_))),
                "{text}"
            );
        }
    }
}
