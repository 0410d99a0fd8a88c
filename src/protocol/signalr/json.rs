//! The JSON hub protocol: UTF-8 JSON records ending in 0x1E, decoded by a span scanner (simd-json
//! for what it leaves alone) and encoded byte for byte as ASP.NET Core's `JsonHubProtocol` writes
//! them. Specs: HubProtocol.md "JSON Encoding"; `shared/reference/signalr-protocol.md` §3.1
//! (fields, order, parse rules), §4.4 (test vectors) and §6 (the receive window includes the
//! 0x1E).
//!
//! Decoding first tries the span scanner (`json/span.rs`): one validating pass over the received
//! bytes that keeps arguments, stream items and results as slices of them
//! ([`Payload::Json`], no copy). Whatever it does not accept — invalid records, shape errors,
//! and the rare constructs it leaves alone — takes the simd-json path below, which gives the
//! verdict and the error.
//!
//! The simd-json path walks simd-json's tape rather than its DOM: the tape keeps object members in
//! document order, duplicates included, so a repeated key can win in place (last value, first
//! position, as `JSON.parse` does) and map order survives a decode/encode round trip. The parser
//! itself rejects nesting deeper than 64 levels (`MAX_DEPTH`), which bounds the walk's recursion.
//!
//! Payload values are written as System.Text.Json writes them with SignalR's settings
//! (`UnsafeRelaxedJsonEscaping`); see [`encode_value`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{BufMut, Bytes, BytesMut};
use simd_json::{Buffers, ErrorType, Node, StaticNode, Tape};

use super::message::{
    CancelInvocation, Close, Completion, CompletionOutcome, Headers, Invocation, Payload,
    StreamItem,
};
use super::{Decoded, HubMessage, HubProtocolError, RECORD_SEPARATOR, Value};

mod span;

/// The deepest nesting accepted, the message object included (System.Text.Json's `MaxDepth`).
pub(super) const MAX_DEPTH: usize = 64;

/// Takes the next JSON record off the front of `input`.
///
/// The record must end (0x1E included) within `max_message_size` bytes, as ASP.NET gives its
/// parser a window of that many bytes. Unknown message types decode as [`HubMessage::Unknown`];
/// unknown properties are skipped; a repeated property's last value wins.
///
/// # Errors
/// [`HubProtocolError::MessageTooLarge`] when no record ends within the window; otherwise the
/// record's JSON or message-shape error.
pub fn decode(input: &Bytes, max_message_size: usize) -> Result<Decoded, HubProtocolError> {
    let window = input.get(..max_message_size).unwrap_or(input.as_ref());
    // memchr's vectorised search: a byte-at-a-time scan was two thirds of decoding a 32 KB
    // record (criterion `decode_invocation/json/32000b`).
    let Some(end) = memchr::memchr(RECORD_SEPARATOR, window) else {
        return if input.len() >= max_message_size {
            Err(HubProtocolError::MessageTooLarge {
                max: max_message_size,
            })
        } else {
            Ok(Decoded::NeedMore)
        };
    };
    if let Ok(message) = span::decode(input, end) {
        return Ok(Decoded::Message(message, end + 1));
    }
    let record = window.get(..end).unwrap_or_default();
    Ok(Decoded::Message(decode_record(record)?, end + 1))
}

/// The simd-json path: decodes one record (0x1E excluded) through a copy of it, with
/// payloads as [`Payload::Value`]s.
fn decode_record(record: &[u8]) -> Result<HubMessage, HubProtocolError> {
    let mut scratch = record.to_vec();
    let tape = parse_tape(&mut scratch).map_err(|e| json_error(&e))?;
    message_from(&tape.0)
}

/// Appends `message` as a JSON record plus 0x1E, with properties in .NET's order: `type`,
/// `headers` (if any), `invocationId` (if set and non-empty), then the type's own fields.
/// [`HubMessage::Unknown`] writes nothing.
///
/// # Errors
/// A [`Payload::MessagePack`] that cannot be transcoded; `out` is then left as it was.
pub fn encode(message: &HubMessage, out: &mut BytesMut) -> Result<(), HubProtocolError> {
    let start = out.len();
    let written = write_message(message, out);
    if written.is_err() {
        out.truncate(start);
    }
    written
}

/// Decodes exactly one JSON value (surrounding whitespace allowed), nested at most 64 levels
/// deep. Integers become [`Value::Int`] ([`Value::UInt`] above `i64::MAX`), other numbers
/// [`Value::Float`], objects [`Value::Map`]s with string keys in document order (a repeated
/// key keeps its first position and last value).
///
/// # Errors
/// Invalid JSON ([`HubProtocolError::Json`]) or nesting too deep ([`HubProtocolError::TooDeep`]).
pub fn decode_value(json: &[u8]) -> Result<Value, HubProtocolError> {
    let mut scratch = json.to_vec();
    let tape = parse_tape(&mut scratch).map_err(|e| json_error(&e))?;
    to_value(&tape.0)
}

/// The text of `json` when it is exactly one string literal without escapes (a payload from
/// the decoder, so already validated), e.g. to transcode it without building a [`Value`].
pub fn plain_string(json: &[u8]) -> Option<&str> {
    let inner = json.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if memchr::memchr2(b'"', b'\\', inner).is_some() {
        return None;
    }
    std::str::from_utf8(inner).ok()
}

/// Appends `value` as JSON text, the way System.Text.Json writes it for SignalR:
/// - strings: `"`, `\` and control characters escaped (`\n`-style where JSON has a short form,
///   else `\u00XX` with upper-case hex), U+2028/U+2029 escaped, other non-ASCII written raw, and
///   characters outside the BMP as `\uXXXX\uXXXX` surrogate pairs, as .NET's encoders do even
///   with `UnsafeRelaxedJsonEscaping`;
/// - floats: the shortest text that round-trips, in .NET's `double.ToString()` form (`42`,
///   `0.1`, `1E+15`, `1E-05`); NaN and ±Infinity are not JSON and are written as `null`;
/// - binary and other MessagePack extensions: base64 strings (standard alphabet, padded);
/// - timestamps: ISO-8601 UTC strings with 7 fractional digits (.NET's `"O"` format);
/// - map keys that are not strings: their JSON text, as a string.
///
/// Nesting is walked with an explicit stack, so any depth is safe.
pub fn encode_value(value: &Value, out: &mut BytesMut) {
    enum Frame<'a> {
        Array(std::slice::Iter<'a, Value>, bool),
        Map(std::slice::Iter<'a, (Value, Value)>, bool),
    }
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut next = Some(value);
    loop {
        match next.take() {
            Some(Value::Array(items)) => {
                out.put_u8(b'[');
                stack.push(Frame::Array(items.iter(), true));
            }
            Some(Value::Map(entries)) => {
                out.put_u8(b'{');
                stack.push(Frame::Map(entries.iter(), true));
            }
            Some(scalar) => write_scalar(scalar, out),
            None => {}
        }
        let Some(top) = stack.last_mut() else { break };
        match top {
            Frame::Array(items, first) => match items.next() {
                Some(item) => {
                    if !std::mem::take(first) {
                        out.put_u8(b',');
                    }
                    next = Some(item);
                }
                None => {
                    out.put_u8(b']');
                    stack.pop();
                }
            },
            Frame::Map(entries, first) => match entries.next() {
                Some((key, item)) => {
                    if !std::mem::take(first) {
                        out.put_u8(b',');
                    }
                    write_key(key, out);
                    out.put_u8(b':');
                    next = Some(item);
                }
                None => {
                    out.put_u8(b'}');
                    stack.pop();
                }
            },
        }
    }
}

// ---- decoding -------------------------------------------------------------------------------

/// Parses `scratch` (modified in place: simd-json unescapes strings there) into a tape, with
/// nesting limited to [`MAX_DEPTH`].
pub(super) fn parse_tape(scratch: &mut [u8]) -> Result<Tape<'_>, simd_json::Error> {
    let mut buffers = Buffers::with_max_depth(scratch.len(), MAX_DEPTH);
    simd_json::to_tape_with_buffers(scratch, &mut buffers)
}

fn json_error(error: &simd_json::Error) -> HubProtocolError {
    if *error.error() == ErrorType::DepthLimitExceeded {
        HubProtocolError::TooDeep
    } else {
        HubProtocolError::Json(format!("Error reading JSON: {error}."))
    }
}

/// A tape that does not have the shape simd-json promises (never expected).
fn bad_tape() -> HubProtocolError {
    HubProtocolError::Json("Error reading JSON: malformed tape.".to_owned())
}

/// Splits the value at the front of `nodes` from the nodes after it.
fn split_value<'t, 'i>(
    nodes: &'t [Node<'i>],
) -> Result<(&'t [Node<'i>], &'t [Node<'i>]), HubProtocolError> {
    let len = match nodes.first() {
        Some(Node::Object { count, .. } | Node::Array { count, .. }) => count.saturating_add(1),
        Some(_) => 1,
        None => return Err(bad_tape()),
    };
    nodes.split_at_checked(len).ok_or_else(bad_tape)
}

/// The members (key, value nodes) of the object at the front of a tape, in document order,
/// duplicates included; `None` if the value is not an object.
pub(super) fn members<'t, 'i>(
    nodes: &'t [Node<'i>],
) -> Option<impl Iterator<Item = Result<(&'i str, &'t [Node<'i>]), HubProtocolError>>> {
    let Some((Node::Object { len, .. }, mut rest)) = nodes.split_first() else {
        return None;
    };
    Some((0..*len).map(move |_| {
        let Some((Node::String(key), after)) = rest.split_first() else {
            return Err(bad_tape());
        };
        let (value, after) = split_value(after)?;
        rest = after;
        Ok((*key, value))
    }))
}

/// The elements (value nodes) of the array at the front of a tape; `None` if not an array.
fn elements<'t, 'i>(
    nodes: &'t [Node<'i>],
) -> Option<impl Iterator<Item = Result<&'t [Node<'i>], HubProtocolError>>> {
    let Some((Node::Array { len, .. }, mut rest)) = nodes.split_first() else {
        return None;
    };
    Some((0..*len).map(move |_| {
        let (value, after) = split_value(rest)?;
        rest = after;
        Ok(value)
    }))
}

/// Appends `(key, value)`, or replaces the value of an earlier entry with that key (last wins,
/// first position). Small objects are scanned; `index` takes over once one grows past 16 keys.
fn upsert<'i, V>(
    entries: &mut Vec<(&'i str, V)>,
    index: &mut HashMap<&'i str, usize>,
    key: &'i str,
    value: V,
) {
    let found = if entries.len() < 16 {
        entries.iter().position(|(k, _)| *k == key)
    } else {
        if index.is_empty() {
            index.extend(entries.iter().enumerate().map(|(i, (k, _))| (*k, i)));
        }
        index.get(key).copied()
    };
    match found.and_then(|i| entries.get_mut(i)) {
        Some(slot) => slot.1 = value,
        None => {
            if !index.is_empty() {
                index.insert(key, entries.len());
            }
            entries.push((key, value));
        }
    }
}

/// Converts the value at the front of a tape. Recursion is bounded by the parser's depth limit.
fn to_value(nodes: &[Node<'_>]) -> Result<Value, HubProtocolError> {
    Ok(match nodes.first().ok_or_else(bad_tape)? {
        Node::Static(StaticNode::Null) => Value::Null,
        Node::Static(StaticNode::Bool(b)) => Value::Bool(*b),
        Node::Static(StaticNode::I64(i)) => Value::Int(*i),
        Node::Static(StaticNode::U64(u)) => i64::try_from(*u).map_or(Value::UInt(*u), Value::Int),
        Node::Static(StaticNode::F64(f)) => Value::Float(*f),
        Node::String(s) => Value::Str((*s).to_owned()),
        Node::Array { .. } => Value::Array(
            elements(nodes)
                .ok_or_else(bad_tape)?
                .map(|element| element.and_then(to_value))
                .collect::<Result<_, _>>()?,
        ),
        Node::Object { len, .. } => {
            let mut entries = Vec::with_capacity(*len);
            let mut index = HashMap::new();
            for member in members(nodes).ok_or_else(bad_tape)? {
                let (key, value) = member?;
                upsert(&mut entries, &mut index, key, to_value(value)?);
            }
            Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (Value::Str(k.to_owned()), v))
                    .collect(),
            )
        }
    })
}

/// The value nodes of each property a hub message may carry (last occurrence).
#[derive(Default)]
struct Fields<'t, 'i> {
    kind: Option<&'t [Node<'i>]>,
    headers: Option<&'t [Node<'i>]>,
    invocation_id: Option<&'t [Node<'i>]>,
    target: Option<&'t [Node<'i>]>,
    arguments: Option<&'t [Node<'i>]>,
    stream_ids: Option<&'t [Node<'i>]>,
    item: Option<&'t [Node<'i>]>,
    result: Option<&'t [Node<'i>]>,
    error: Option<&'t [Node<'i>]>,
    allow_reconnect: Option<&'t [Node<'i>]>,
    sequence_id: Option<&'t [Node<'i>]>,
}

/// The value of a required property.
fn required<'t, 'i>(
    field: Option<&'t [Node<'i>]>,
    property: &'static str,
) -> Result<&'t [Node<'i>], HubProtocolError> {
    field.ok_or(HubProtocolError::MissingProperty(property))
}

fn wrong(property: &'static str, expected: &'static str) -> HubProtocolError {
    HubProtocolError::WrongType { property, expected }
}

fn integer(nodes: &[Node<'_>], property: &'static str) -> Result<i64, HubProtocolError> {
    match nodes.first() {
        Some(Node::Static(StaticNode::I64(i))) => Ok(*i),
        Some(Node::Static(StaticNode::U64(u))) => {
            i64::try_from(*u).map_err(|_| wrong(property, "Number"))
        }
        _ => Err(wrong(property, "Number")),
    }
}

fn string<'i>(nodes: &[Node<'i>], property: &'static str) -> Result<&'i str, HubProtocolError> {
    match nodes.first() {
        Some(Node::String(s)) => Ok(s),
        _ => Err(wrong(property, "String")),
    }
}

/// A required invocation id: absent or empty is missing, as .NET's `string.IsNullOrEmpty`.
fn required_id(nodes: Option<&[Node<'_>]>) -> Result<String, HubProtocolError> {
    optional_id(nodes)?.ok_or(HubProtocolError::MissingProperty("invocationId"))
}

/// An optional invocation id; an empty one is normalised to none, as .NET does.
fn optional_id(nodes: Option<&[Node<'_>]>) -> Result<Option<String>, HubProtocolError> {
    let id = nodes.map(|n| string(n, "invocationId")).transpose()?;
    Ok(id.filter(|id| !id.is_empty()).map(str::to_owned))
}

fn payload(nodes: &[Node<'_>]) -> Result<Payload, HubProtocolError> {
    to_value(nodes).map(Payload::Value)
}

fn headers(nodes: Option<&[Node<'_>]>) -> Result<Headers, HubProtocolError> {
    let Some(nodes) = nodes else {
        return Ok(Headers::new());
    };
    let members = members(nodes).ok_or(wrong("headers", "StartObject"))?;
    let mut entries = Vec::new();
    let mut index = HashMap::new();
    for member in members {
        let (key, value) = member?;
        let Some(Node::String(value)) = value.first() else {
            return Err(HubProtocolError::HeaderNotString(key.to_owned()));
        };
        upsert(&mut entries, &mut index, key, *value);
    }
    Ok(Headers(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    ))
}

fn invocation(fields: &Fields<'_, '_>, streaming: bool) -> Result<Invocation, HubProtocolError> {
    let invocation_id = if streaming {
        Some(required_id(fields.invocation_id)?)
    } else {
        optional_id(fields.invocation_id)?
    };
    let target = string(required(fields.target, "target")?, "target")?;
    if target.is_empty() {
        return Err(HubProtocolError::EmptyTarget);
    }
    let arguments = elements(required(fields.arguments, "arguments")?)
        .ok_or(wrong("arguments", "Array"))?
        .map(|element| element.and_then(payload))
        .collect::<Result<_, _>>()?;
    let stream_ids = match fields.stream_ids {
        None => Vec::new(),
        Some(nodes) => elements(nodes)
            .ok_or(wrong("streamIds", "Array"))?
            .map(|id| id.and_then(|id| string(id, "streamIds")).map(str::to_owned))
            .collect::<Result<_, _>>()?,
    };
    Ok(Invocation {
        headers: headers(fields.headers)?,
        invocation_id,
        target: target.to_owned(),
        arguments,
        stream_ids,
    })
}

fn message_from(nodes: &[Node<'_>]) -> Result<HubMessage, HubProtocolError> {
    let members = members(nodes).ok_or(HubProtocolError::NotAMessage)?;
    let mut f = Fields::default();
    for member in members {
        let (key, value) = member?;
        let slot = match key {
            "type" => &mut f.kind,
            "headers" => &mut f.headers,
            "invocationId" => &mut f.invocation_id,
            "target" => &mut f.target,
            "arguments" => &mut f.arguments,
            "streamIds" => &mut f.stream_ids,
            "item" => &mut f.item,
            "result" => &mut f.result,
            "error" => &mut f.error,
            "allowReconnect" => &mut f.allow_reconnect,
            "sequenceId" => &mut f.sequence_id,
            _ => continue,
        };
        *slot = Some(value);
    }
    let kind = integer(required(f.kind, "type")?, "type")?;
    let sequence_id = || integer(required(f.sequence_id, "sequenceId")?, "sequenceId");
    Ok(match kind {
        1 => HubMessage::Invocation(invocation(&f, false)?),
        2 => HubMessage::StreamItem(StreamItem {
            invocation_id: required_id(f.invocation_id)?,
            item: payload(required(f.item, "item")?)?,
            headers: headers(f.headers)?,
        }),
        3 => {
            let invocation_id = required_id(f.invocation_id)?;
            let error = f.error.map(|e| string(e, "error")).transpose()?;
            let outcome = match (error, f.result) {
                (Some(_), Some(_)) => return Err(HubProtocolError::ErrorAndResult),
                (Some(error), None) => CompletionOutcome::Error(error.to_owned()),
                (None, Some(result)) => CompletionOutcome::Result(payload(result)?),
                (None, None) => CompletionOutcome::Void,
            };
            HubMessage::Completion(Completion {
                headers: headers(f.headers)?,
                invocation_id,
                outcome,
            })
        }
        4 => HubMessage::StreamInvocation(invocation(&f, true)?),
        5 => HubMessage::CancelInvocation(CancelInvocation {
            invocation_id: required_id(f.invocation_id)?,
            headers: headers(f.headers)?,
        }),
        6 => HubMessage::Ping,
        7 => HubMessage::Close(Close {
            error: match f.error {
                Some([Node::Static(StaticNode::Null)]) | None => None,
                Some(error) => Some(string(error, "error")?.to_owned()),
            },
            allow_reconnect: match f.allow_reconnect.map(<[Node<'_>]>::first) {
                None => false,
                Some(Some(Node::Static(StaticNode::Bool(allow)))) => *allow,
                Some(_) => return Err(wrong("allowReconnect", "Boolean")),
            },
        }),
        8 => HubMessage::Ack(sequence_id()?),
        9 => HubMessage::Sequence(sequence_id()?),
        other => HubMessage::Unknown(other),
    })
}

// ---- encoding -------------------------------------------------------------------------------

/// Appends the `Display` text of `value`.
fn write_display(value: impl std::fmt::Display, out: &mut BytesMut) {
    // invariant: `BytesMut`'s `fmt::Write` grows the buffer and cannot fail.
    let _ = write!(out, "{value}");
}

fn write_message(message: &HubMessage, out: &mut BytesMut) -> Result<(), HubProtocolError> {
    if let HubMessage::Unknown(_) = message {
        return Ok(());
    }
    // One reservation for the raw payloads plus the envelope, so that a large payload is
    // copied once: growing after it (for the closing `}` and 0x1E) would copy it again.
    out.reserve(raw_payload_len(message) + 128);
    out.extend_from_slice(b"{\"type\":");
    write_display(message.type_id(), out);
    match message {
        HubMessage::Invocation(m) | HubMessage::StreamInvocation(m) => {
            write_headers(&m.headers, out);
            write_id(m.invocation_id.as_deref().unwrap_or_default(), out);
            out.extend_from_slice(b",\"target\":");
            write_string(&m.target, out);
            out.extend_from_slice(b",\"arguments\":[");
            write_list(&m.arguments, out, write_payload)?;
            out.put_u8(b']');
            if !m.stream_ids.is_empty() {
                out.extend_from_slice(b",\"streamIds\":[");
                write_list(&m.stream_ids, out, |id, out| {
                    write_string(id, out);
                    Ok(())
                })?;
                out.put_u8(b']');
            }
        }
        HubMessage::StreamItem(m) => {
            write_headers(&m.headers, out);
            write_id(&m.invocation_id, out);
            out.extend_from_slice(b",\"item\":");
            write_payload(&m.item, out)?;
        }
        HubMessage::Completion(m) => {
            write_headers(&m.headers, out);
            write_id(&m.invocation_id, out);
            match &m.outcome {
                CompletionOutcome::Void => {}
                CompletionOutcome::Result(result) => {
                    out.extend_from_slice(b",\"result\":");
                    write_payload(result, out)?;
                }
                CompletionOutcome::Error(error) => {
                    out.extend_from_slice(b",\"error\":");
                    write_string(error, out);
                }
            }
        }
        HubMessage::CancelInvocation(m) => {
            write_headers(&m.headers, out);
            write_id(&m.invocation_id, out);
        }
        HubMessage::Close(close) => {
            if let Some(error) = &close.error {
                out.extend_from_slice(b",\"error\":");
                write_string(error, out);
            }
            if close.allow_reconnect {
                out.extend_from_slice(b",\"allowReconnect\":true");
            }
        }
        HubMessage::Ack(id) | HubMessage::Sequence(id) => {
            out.extend_from_slice(b",\"sequenceId\":");
            write_display(id, out);
        }
        HubMessage::Ping | HubMessage::Unknown(_) => {}
    }
    out.extend_from_slice(b"}\x1e");
    Ok(())
}

/// The bytes of the message's payloads that are written as they are ([`Payload::Json`]).
fn raw_payload_len(message: &HubMessage) -> usize {
    let raw = |payload: &Payload| match payload {
        Payload::Json(json) => json.len(),
        _ => 0,
    };
    match message {
        HubMessage::Invocation(m) | HubMessage::StreamInvocation(m) => {
            m.arguments.iter().map(raw).sum()
        }
        HubMessage::StreamItem(m) => raw(&m.item),
        HubMessage::Completion(Completion {
            outcome: CompletionOutcome::Result(result),
            ..
        }) => raw(result),
        _ => 0,
    }
}

fn write_headers(headers: &Headers, out: &mut BytesMut) {
    if headers.is_empty() {
        return;
    }
    out.extend_from_slice(b",\"headers\":{");
    let Ok(()) = write_list(
        &headers.0,
        out,
        |(key, value), out| -> Result<(), Infallible> {
            write_string(key, out);
            out.put_u8(b':');
            write_string(value, out);
            Ok(())
        },
    );
    out.put_u8(b'}');
}

/// Writes `items` with `write`, separated by commas.
fn write_list<T, E>(
    items: &[T],
    out: &mut BytesMut,
    mut write: impl FnMut(&T, &mut BytesMut) -> Result<(), E>,
) -> Result<(), E> {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        write(item, out)?;
    }
    Ok(())
}

/// Writes `,"invocationId":…` unless the id is empty (.NET's `string.IsNullOrEmpty` check).
fn write_id(id: &str, out: &mut BytesMut) {
    if !id.is_empty() {
        out.extend_from_slice(b",\"invocationId\":");
        write_string(id, out);
    }
}

fn write_payload(payload: &Payload, out: &mut BytesMut) -> Result<(), HubProtocolError> {
    match payload {
        Payload::Json(json) => out.extend_from_slice(json),
        Payload::Value(value) => encode_value(value, out),
        Payload::MessagePack(bytes) => encode_value(&super::msgpack::decode_value(bytes)?, out),
    }
    Ok(())
}

fn write_scalar(value: &Value, out: &mut BytesMut) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => write_display(i, out),
        Value::UInt(u) => write_display(u, out),
        Value::Float(f) => write_float(*f, out),
        Value::Str(s) => write_string(s, out),
        Value::Bin(data) | Value::Ext(_, data) => {
            out.put_u8(b'"');
            out.extend_from_slice(BASE64.encode(data).as_bytes());
            out.put_u8(b'"');
        }
        Value::Timestamp { seconds, nanos } => write_timestamp(*seconds, *nanos, out),
        // Containers are walked by `encode_value`.
        Value::Array(_) | Value::Map(_) => encode_value(value, out),
    }
}

/// A map key: strings (and what is written as a string) as they are, anything else as the
/// string of its JSON text.
fn write_key(key: &Value, out: &mut BytesMut) {
    match key {
        Value::Str(_) | Value::Bin(_) | Value::Ext(..) | Value::Timestamp { .. } => {
            write_scalar(key, out);
        }
        other => {
            let mut text = BytesMut::new();
            encode_value(other, &mut text);
            write_string(&String::from_utf8_lossy(&text), out);
        }
    }
}

/// Writes a quoted, escaped JSON string (see [`encode_value`] for the rules).
///
/// Runs of plain printable ASCII (the bulk of most strings) are found eight bytes at a time and
/// copied whole; only the bytes around an escape or a non-ASCII character are looked at one
/// character at a time.
fn write_string(s: &str, out: &mut BytesMut) {
    fn hex4(unit: u32, out: &mut BytesMut) {
        write_display(format_args!("\\u{unit:04X}"), out);
    }
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.put_u8(b'"');
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8)
            && let Ok(chunk) = <[u8; 8]>::try_from(chunk)
            && is_plain_ascii(u64::from_le_bytes(chunk))
        {
            i += 8;
            continue;
        }
        let Some(c) = s.get(i..).and_then(|rest| rest.chars().next()) else {
            // invariant: `i` only ever advances by whole ASCII words or whole characters, so
            // it is a character boundary; stop rather than split one.
            break;
        };
        let len = c.len_utf8();
        let short = match c {
            '"' => Some(b'"'),
            '\\' => Some(b'\\'),
            '\n' => Some(b'n'),
            '\r' => Some(b'r'),
            '\t' => Some(b't'),
            '\u{8}' => Some(b'b'),
            '\u{c}' => Some(b'f'),
            _ => None,
        };
        let code = u32::from(c);
        let escape = short.is_some()
            || code < 0x20
            || (0x7f..=0x9f).contains(&code)
            || c == '\u{2028}'
            || c == '\u{2029}'
            || code > 0xffff;
        if !escape {
            i += len;
            continue;
        }
        out.extend_from_slice(bytes.get(run_start..i).unwrap_or_default());
        i += len;
        run_start = i;
        match short {
            Some(letter) => out.extend_from_slice(&[b'\\', letter]),
            None if code > 0xffff => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    hex4(u32::from(*unit), out);
                }
            }
            None => hex4(code, out),
        }
    }
    out.extend_from_slice(bytes.get(run_start..).unwrap_or_default());
    out.put_u8(b'"');
}

/// Whether all eight bytes of `word` are printable ASCII that JSON writes as is: none is a
/// control character (< 0x20), DEL (0x7f), non-ASCII (>= 0x80), `"` or `\\`.
fn is_plain_ascii(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is zero exactly when the matching high bit of this is set.
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_0x20 = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    word & HIGH == 0
        && below_0x20 == 0
        && has_zero(word ^ (ONES * u64::from(b'"'))) == 0
        && has_zero(word ^ (ONES * u64::from(b'\\'))) == 0
        && has_zero(word ^ (ONES * 0x7f)) == 0
}

/// Writes a double as .NET Core's `double.ToString()` does: the shortest round-trip digits,
/// fixed-point when the decimal exponent is in -5 < e < 15, else `d.dddE+XX`.
fn write_float(f: f64, out: &mut BytesMut) {
    if !f.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let (lead, tail) = digits.split_at_checked(1).unwrap_or(("0", ""));
    if negative {
        out.put_u8(b'-');
    }
    if !(-5 < exponent && exponent < 15) {
        let sign = if exponent < 0 { '-' } else { '+' };
        let dot = if tail.is_empty() { "" } else { "." };
        write_display(
            format_args!("{lead}{dot}{tail}E{sign}{:02}", exponent.unsigned_abs()),
            out,
        );
    } else if exponent < 0 {
        let zeros = "0".repeat(exponent.unsigned_abs() as usize - 1);
        write_display(format_args!("0.{zeros}{digits}"), out);
    } else {
        let int_len = exponent as usize + 1;
        match digits.split_at_checked(int_len) {
            Some((int, frac)) if !frac.is_empty() => {
                write_display(format_args!("{int}.{frac}"), out)
            }
            _ => write_display(format_args!("{digits:0<int_len$}"), out),
        }
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `yyyy-MM-ddTHH:mm:ss.fffffffZ` for a time since the epoch, as .NET writes a UTC
/// `DateTime` (the round-trip `"O"` format).
pub fn format_timestamp(seconds: i64, nanos: u32) -> String {
    let mut out = BytesMut::new();
    write_timestamp(seconds, nanos, &mut out);
    let text = String::from_utf8_lossy(&out);
    text.trim_matches('"').to_owned()
}

/// Writes `"yyyy-MM-ddTHH:mm:ss.fffffffZ"` (.NET's round-trip `"O"` format for UTC; 100 ns).
fn write_timestamp(seconds: i64, nanos: u32, out: &mut BytesMut) {
    const NANOS: u32 = 1_000_000_000;
    let seconds = seconds.saturating_add(i64::from(nanos / NANOS));
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let time = seconds.rem_euclid(86_400);
    let sign = if year < 0 { "-" } else { "" };
    write_display(
        format_args!(
            "\"{sign}{:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:07}Z\"",
            year.unsigned_abs(),
            time / 3_600,
            time / 60 % 60,
            time % 60,
            nanos % NANOS / 100,
        ),
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use CompletionOutcome::{Error as Failed, Result as Returned, Void};
    use HubMessage as M;
    use HubProtocolError::*;
    use Value::{Bool, Float, Int, Null};

    const MAX: usize = 32 * 1024;

    /// Decodes one framed record and checks that all of it was used.
    /// Decodes one framed record, checks that all of it was used, and turns its JSON payloads
    /// into values (see [`values`]).
    fn one(json: &str) -> Result<HubMessage, HubProtocolError> {
        raw(json).map(values)
    }

    /// Decodes one framed record and checks that all of it was used.
    fn raw(json: &str) -> Result<HubMessage, HubProtocolError> {
        match decode(&Bytes::from(format!("{json}\x1e")), MAX)? {
            Decoded::Message(message, used) if used == json.len() + 1 => Ok(message),
            other => panic!("{json}: {other:?}"),
        }
    }

    /// The message with every [`Payload::Json`] decoded to a [`Payload::Value`], so messages
    /// from either decoding path compare equal when they mean the same.
    fn values(message: HubMessage) -> HubMessage {
        let value = |payload: Payload| match payload {
            Payload::Json(json) => Payload::Value(decode_value(&json).unwrap()),
            other => other,
        };
        match message {
            M::Invocation(mut m) => {
                m.arguments = m.arguments.into_iter().map(value).collect();
                M::Invocation(m)
            }
            M::StreamInvocation(mut m) => {
                m.arguments = m.arguments.into_iter().map(value).collect();
                M::StreamInvocation(m)
            }
            M::StreamItem(mut m) => {
                m.item = value(m.item);
                M::StreamItem(m)
            }
            M::Completion(Completion {
                headers,
                invocation_id,
                outcome: Returned(result),
            }) => M::Completion(Completion {
                headers,
                invocation_id,
                outcome: Returned(value(result)),
            }),
            other => other,
        }
    }

    fn enc(message: &HubMessage) -> String {
        let mut out = BytesMut::new();
        encode(message, &mut out).unwrap();
        String::from_utf8(out.to_vec()).unwrap()
    }

    fn text(value: &Value) -> String {
        let mut out = BytesMut::new();
        encode_value(value, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    fn s(text: &str) -> Value {
        Value::Str(text.to_owned())
    }

    fn call(id: Option<&str>, target: &str, arguments: &[Value]) -> Invocation {
        Invocation {
            headers: Headers::new(),
            invocation_id: id.map(str::to_owned),
            target: target.to_owned(),
            arguments: arguments.iter().cloned().map(Payload::Value).collect(),
            stream_ids: Vec::new(),
        }
    }

    fn item(id: &str, item: Payload) -> HubMessage {
        let (headers, invocation_id) = (Headers::new(), id.to_owned());
        M::StreamItem(StreamItem {
            headers,
            invocation_id,
            item,
        })
    }

    fn completion(id: &str, outcome: CompletionOutcome) -> Completion {
        Completion {
            headers: Headers::new(),
            invocation_id: id.to_owned(),
            outcome,
        }
    }

    fn done(id: &str, outcome: CompletionOutcome) -> HubMessage {
        M::Completion(completion(id, outcome))
    }

    fn cancel(id: &str) -> HubMessage {
        let (headers, invocation_id) = (Headers::new(), id.to_owned());
        M::CancelInvocation(CancelInvocation {
            headers,
            invocation_id,
        })
    }

    fn close(error: Option<&str>, allow_reconnect: bool) -> HubMessage {
        M::Close(Close {
            error: error.map(str::to_owned),
            allow_reconnect,
        })
    }

    #[test]
    fn every_reference_vector_decodes_and_encodes_back_byte_for_byte() {
        let streams = Invocation {
            stream_ids: vec!["__test_id__".into()],
            ..call(None, "Target", &[])
        };
        let headers = Headers(vec![
            ("Foo".into(), "Bar".into()),
            ("KeyWith\nNew\r\nLines".into(), "Still Works".into()),
            ("ValueWithNewLines".into(), "Also\nWorks\r\nFine".into()),
        ]);
        let whoops = Completion {
            headers,
            ..completion("123", Failed("Whoops!".into()))
        };
        #[rustfmt::skip]
        let vectors = [
            (r#"{"type":1,"invocationId":"123","target":"Target","arguments":[1,"Foo"]}"#, M::Invocation(call(Some("123"), "Target", &[Int(1), s("Foo")]))),
            (r#"{"type":1,"target":"Target","arguments":[true]}"#, M::Invocation(call(None, "Target", &[Bool(true)]))),
            (r#"{"type":1,"target":"Target","arguments":[],"streamIds":["__test_id__"]}"#, M::Invocation(streams)),
            (r#"{"type":2,"invocationId":"123","item":null}"#, item("123", Payload::Value(Null))),
            (r#"{"type":3,"invocationId":"123"}"#, done("123", Void)),
            (r#"{"type":3,"invocationId":"123","result":null}"#, done("123", Returned(Payload::Value(Null)))),
            (r#"{"type":3,"invocationId":"123","error":"Whoops!"}"#, done("123", Failed("Whoops!".into()))),
            (r#"{"type":3,"headers":{"Foo":"Bar","KeyWith\nNew\r\nLines":"Still Works","ValueWithNewLines":"Also\nWorks\r\nFine"},"invocationId":"123","error":"Whoops!"}"#, M::Completion(whoops)),
            (r#"{"type":4,"invocationId":"123","target":"Target","arguments":[1,"Foo"]}"#, M::StreamInvocation(call(Some("123"), "Target", &[Int(1), s("Foo")]))),
            (r#"{"type":5,"invocationId":"123"}"#, cancel("123")),
            (r#"{"type":6}"#, M::Ping),
            (r#"{"type":7}"#, close(None, false)),
            (r#"{"type":7,"error":"Error!"}"#, close(Some("Error!"), false)),
            (r#"{"type":7,"error":""}"#, close(Some(""), false)),
            (r#"{"type":7,"allowReconnect":true}"#, close(None, true)),
            (r#"{"type":7,"error":"Error!","allowReconnect":true}"#, close(Some("Error!"), true)),
            (r#"{"type":8,"sequenceId":1394}"#, M::Ack(1394)),
            (r#"{"type":9,"sequenceId":1234}"#, M::Sequence(1234)),
            (r#"{"type":1,"target":"ReceiveMessage","arguments":["hi"]}"#, M::Invocation(call(None, "ReceiveMessage", &[s("hi")]))),
        ];
        for (json, expected) in vectors {
            assert_eq!(one(json), Ok(expected.clone()), "{json}");
            assert_eq!(enc(&expected), format!("{json}\x1e"));
        }
        assert_eq!(
            enc(&M::Invocation(call(None, "ReceiveMessage", &[s("hi")]))).len(),
            56
        );
    }

    #[test]
    fn js_client_messages_with_type_last_decode() {
        let send = one(r#"{"arguments":["hi"],"invocationId":"0","target":"Send","type":1}"#);
        assert_eq!(send, Ok(M::Invocation(call(Some("0"), "Send", &[s("hi")]))));
        let streamed = one(r#"{"invocationId":"1","item":5,"type":2}"#);
        assert_eq!(streamed, Ok(item("1", Payload::Value(Int(5)))));
        let failed = one(r#"{"error":"x","invocationId":"3","type":3}"#);
        assert_eq!(failed, Ok(done("3", Failed("x".into()))));
        assert_eq!(one(r#"{"invocationId":"2","type":5}"#), Ok(cancel("2")));
    }

    #[test]
    fn several_records_in_one_buffer_decode_one_after_another() {
        let mut input = Bytes::from_static(
            b"{\"type\":6}\x1e{\"type\":8,\"sequenceId\":1}\x1e{\"type\":7}\x1e{\"type\"",
        );
        let mut seen = Vec::new();
        while let Decoded::Message(message, used) = decode(&input, MAX).unwrap() {
            seen.push(message);
            input = input.slice(used..);
        }
        assert_eq!(seen, [M::Ping, M::Ack(1), close(None, false)]);
        assert_eq!(&input[..], b"{\"type\"");
    }

    #[test]
    fn escapes_decode_and_astral_characters_encode_as_surrogate_pairs() {
        let json = r#"{"type":1,"target":"T","arguments":["\u00e9\"\\\ud83d\ude00\n"]}"#;
        let message = one(json).unwrap();
        assert_eq!(message, M::Invocation(call(None, "T", &[s("é\"\\😀\n")])));
        let written = r#"{"type":1,"target":"T","arguments":["é\"\\\uD83D\uDE00\n"]}"#;
        assert_eq!(enc(&message), format!("{written}\x1e"));
    }

    #[test]
    fn raw_non_ascii_round_trips_unescaped() {
        let json = r#"{"type":1,"target":"Grüße","arguments":["日本語 héllo"]}"#;
        assert_eq!(enc(&one(json).unwrap()), format!("{json}\x1e"));
    }

    #[test]
    fn strings_escape_the_same_whether_special_bytes_fall_inside_or_across_eight_byte_words() {
        // Every special character at every offset of a long ASCII run, checked against a
        // character-at-a-time reference.
        let specials = [
            '"', '\\', '\n', '\u{1}', '\u{7f}', '\u{85}', 'é', '\u{2028}', '😀', '~', ' ',
        ];
        for special in specials {
            for at in 0..20 {
                let mut text: String = "abcdefghijklmnopqrstuvwxyz".chars().take(at).collect();
                text.push(special);
                text.push_str("0123456789ABCDEF");
                let mut fast = BytesMut::new();
                write_string(&text, &mut fast);
                let mut slow = String::from("\"");
                for c in text.chars() {
                    let code = u32::from(c);
                    match c {
                        '"' => slow.push_str("\\\""),
                        '\\' => slow.push_str("\\\\"),
                        '\n' => slow.push_str("\\n"),
                        _ if code < 0x20 || (0x7f..=0x9f).contains(&code) || c == '\u{2028}' => {
                            slow.push_str(&format!("\\u{code:04X}"));
                        }
                        _ if code > 0xffff => {
                            let mut units = [0u16; 2];
                            for unit in c.encode_utf16(&mut units) {
                                slow.push_str(&format!("\\u{:04X}", *unit));
                            }
                        }
                        _ => slow.push(c),
                    }
                }
                slow.push('"');
                assert_eq!(
                    std::str::from_utf8(&fast).unwrap(),
                    slow,
                    "{special:?} at {at}"
                );
            }
        }
    }

    #[test]
    fn control_characters_are_escaped_like_system_text_json() {
        let raw = "a\u{1}\u{8}\u{c}\t\r\u{1f}\u{7f}\u{85}\u{2028}\u{2029}<&'";
        assert_eq!(
            text(&s(raw)),
            r#""a\u0001\b\f\t\r\u001F\u007F\u0085\u2028\u2029<&'""#
        );
    }

    #[test]
    fn headers_decode_in_order_and_a_repeated_header_keeps_its_last_value() {
        let json = r#"{"type":5,"headers":{"a":"1","b":"2","a":"3"},"invocationId":"9"}"#;
        let Ok(M::CancelInvocation(m)) = one(json) else {
            panic!("{json}")
        };
        assert_eq!(
            m.headers.0,
            [("a".into(), "3".into()), ("b".into(), "2".into())]
        );
        let written = r#"{"type":5,"headers":{"a":"3","b":"2"},"invocationId":"9"}"#;
        assert_eq!(enc(&M::CancelInvocation(m)), format!("{written}\x1e"));
    }

    #[test]
    fn an_empty_invocation_id_is_no_invocation_id_and_stream_ids_are_kept() {
        let json =
            r#"{"type":1,"invocationId":"","target":"T","arguments":[],"streamIds":["1","2"]}"#;
        let expected = Invocation {
            stream_ids: vec!["1".into(), "2".into()],
            ..call(None, "T", &[])
        };
        assert_eq!(one(json), Ok(M::Invocation(expected)));
    }

    #[test]
    fn a_repeated_property_keeps_its_last_value() {
        assert_eq!(one(r#"{"type":2,"target":"x","type":6}"#), Ok(M::Ping));
    }

    #[test]
    fn malformed_messages_fail_with_the_dotnet_errors() {
        #[rustfmt::skip]
        let cases = [
            (r#"{"target":"T","arguments":[]}"#, MissingProperty("type")),
            (r#"{"type":"1"}"#, wrong("type", "Number")),
            (r#"{"type":1.5}"#, wrong("type", "Number")),
            (r#"{"type":1,"arguments":[]}"#, MissingProperty("target")),
            (r#"{"type":1,"target":"","arguments":[]}"#, EmptyTarget),
            (r#"{"type":1,"target":5,"arguments":[]}"#, wrong("target", "String")),
            (r#"{"type":1,"target":"T"}"#, MissingProperty("arguments")),
            (r#"{"type":1,"target":"T","arguments":{}}"#, wrong("arguments", "Array")),
            (r#"{"type":1,"target":"T","arguments":[],"invocationId":1}"#, wrong("invocationId", "String")),
            (r#"{"type":1,"target":"T","arguments":[],"streamIds":"1"}"#, wrong("streamIds", "Array")),
            (r#"{"type":1,"target":"T","arguments":[],"streamIds":[1]}"#, wrong("streamIds", "String")),
            (r#"{"type":1,"target":"T","arguments":[],"headers":[]}"#, wrong("headers", "StartObject")),
            (r#"{"type":1,"target":"T","arguments":[],"headers":{"h":1}}"#, HeaderNotString("h".into())),
            (r#"{"type":4,"target":"T","arguments":[]}"#, MissingProperty("invocationId")),
            (r#"{"type":2,"item":1}"#, MissingProperty("invocationId")),
            (r#"{"type":2,"invocationId":"1"}"#, MissingProperty("item")),
            (r#"{"type":3,"invocationId":""}"#, MissingProperty("invocationId")),
            (r#"{"type":3,"invocationId":"1","error":"e","result":1}"#, ErrorAndResult),
            (r#"{"type":3,"invocationId":"1","error":2}"#, wrong("error", "String")),
            (r#"{"type":5}"#, MissingProperty("invocationId")),
            (r#"{"type":7,"allowReconnect":"yes"}"#, wrong("allowReconnect", "Boolean")),
            (r#"{"type":8}"#, MissingProperty("sequenceId")),
            (r#"{"type":9,"sequenceId":"1"}"#, wrong("sequenceId", "Number")),
            (r#"{"type":9,"sequenceId":18446744073709551615}"#, wrong("sequenceId", "Number")),
            ("[1]", NotAMessage),
            ("\"x\"", NotAMessage),
        ];
        for (json, error) in cases {
            assert_eq!(one(json), Err(error), "{json}");
        }
        for json in ["{\"type\":1", "{\"type\":6} x", "", "{\"type\":6,}"] {
            assert!(matches!(one(json), Err(Json(_))), "{json}");
        }
    }

    #[test]
    fn nesting_is_limited_to_64_levels_message_object_included() {
        let nested = |depth: usize| {
            let (open, close) = ("[".repeat(depth - 1), "]".repeat(depth - 1));
            format!(r#"{{"type":1,"target":"T","arguments":{open}{close}}}"#)
        };
        assert!(one(&nested(64)).is_ok());
        assert_eq!(one(&nested(65)), Err(TooDeep));
        let spans = |json: String| span::decode(&Bytes::from(json.clone()), json.len());
        assert!(spans(nested(64)).is_ok());
        assert_eq!(spans(nested(65)), Err(span::Unsure));
        let array = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(decode_value(array(64).as_bytes()).is_ok());
        assert_eq!(decode_value(array(65).as_bytes()), Err(TooDeep));
    }

    #[test]
    fn a_record_without_separator_needs_more_until_the_window_is_full() {
        let partial = Bytes::from_static(b"{\"type\":6}");
        assert_eq!(decode(&partial, 11), Ok(Decoded::NeedMore));
        assert_eq!(decode(&Bytes::new(), 11), Ok(Decoded::NeedMore));
        assert_eq!(decode(&partial, 10), Err(MessageTooLarge { max: 10 }));
    }

    #[test]
    fn the_window_includes_the_separator() {
        let two = Bytes::from_static(b"{\"type\":6}\x1e{\"type\":7}\x1e");
        assert_eq!(decode(&two, 11), Ok(Decoded::Message(M::Ping, 11)));
        assert_eq!(decode(&two, 10), Err(MessageTooLarge { max: 10 }));
    }

    #[test]
    fn an_unknown_type_decodes_as_unknown_and_encodes_as_nothing() {
        let message = one(r#"{"type":99,"whatever":[1]}"#).unwrap();
        assert_eq!(message, M::Unknown(99));
        let mut out = BytesMut::from(&b"x"[..]);
        encode(&message, &mut out).unwrap();
        assert_eq!(&out[..], b"x");
    }

    #[test]
    fn json_payloads_are_copied_and_values_encoded() {
        let mut invocation = call(Some("7"), "T", &[Value::Map(vec![(s("b"), Float(0.5))])]);
        invocation
            .arguments
            .insert(0, Payload::Json(Bytes::from_static(b"{\"a\":[1, 2]}")));
        let json =
            r#"{"type":1,"invocationId":"7","target":"T","arguments":[{"a":[1, 2]},{"b":0.5}]}"#;
        assert_eq!(enc(&M::Invocation(invocation)), format!("{json}\x1e"));
    }

    #[test]
    fn only_a_single_string_literal_without_escapes_is_a_plain_string() {
        assert_eq!(plain_string("\"héllo\"".as_bytes()), Some("héllo"));
        assert_eq!(plain_string(b"\"\""), Some(""));
        for json in [
            &b"\"a\\nb\""[..],
            b"\"a\" ",
            b"1",
            b"[\"a\"]",
            b"\"",
            b"\"a\",\"b\"",
        ] {
            assert_eq!(
                plain_string(json),
                None,
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    #[test]
    fn messagepack_payloads_are_transcoded_to_json() {
        let message = item(
            "1",
            Payload::MessagePack(Bytes::from_static(&[0xa2, 0x68, 0x69])),
        );
        assert_eq!(
            enc(&message),
            "{\"type\":2,\"invocationId\":\"1\",\"item\":\"hi\"}\x1e"
        );
    }

    #[test]
    fn floats_are_written_as_dotnet_formats_doubles() {
        #[rustfmt::skip]
        let cases: [(f64, &str); 14] = [
            (42.0, "42"), (0.1, "0.1"), (-1.5, "-1.5"), (0.0, "0"), (-0.0, "-0"),
            (123_456_789_012_345.0, "123456789012345"), (1e15, "1E+15"),
            (123_456_789_012_345_680_000.0, "1.2345678901234568E+20"),
            (0.0001, "0.0001"), (0.000_012_5, "1.25E-05"),
            (f64::MAX, "1.7976931348623157E+308"), (5e-324, "5E-324"),
            (f64::NAN, "null"), (f64::NEG_INFINITY, "null"),
        ];
        for (f, written) in cases {
            assert_eq!(text(&Float(f)), written, "{f:e}");
            match decode_value(written.as_bytes()).unwrap() {
                Float(back) => assert_eq!(back, f),
                Int(back) => assert_eq!(back as f64, f),
                other => assert!(!f.is_finite(), "{other:?}"),
            }
        }
    }

    #[test]
    fn binary_extensions_and_timestamps_are_written_as_strings() {
        assert_eq!(
            text(&Value::Bin(Bytes::from_static(b"hi!?"))),
            r#""aGkhPw==""#
        );
        assert_eq!(
            text(&Value::Ext(5, Bytes::from_static(&[1, 2]))),
            r#""AQI=""#
        );
        let at = |seconds, nanos| text(&Value::Timestamp { seconds, nanos });
        assert_eq!(at(0, 0), r#""1970-01-01T00:00:00.0000000Z""#);
        assert_eq!(
            at(1_795_860_567, 123_456_789),
            r#""2026-11-28T10:09:27.1234567Z""#
        );
        assert_eq!(at(951_782_400, 0), r#""2000-02-29T00:00:00.0000000Z""#);
        assert_eq!(at(-1, 999_999_999), r#""1969-12-31T23:59:59.9999999Z""#);
    }

    #[test]
    fn objects_keep_document_order_through_decode_and_encode() {
        let json = r#"{"b":1,"a":{"d":[],"c":null},"e":-5,"f":18446744073709551615,"g":2.5}"#;
        let value = decode_value(json.as_bytes()).unwrap();
        assert_eq!(value.get("e"), Some(&Int(-5)));
        assert_eq!(value.get("f"), Some(&Value::UInt(u64::MAX)));
        assert_eq!(text(&value), json);
        let keys: String = (0..40).map(|i| format!("\"k{i}\":{i},")).collect();
        let big = format!("{{{keys}\"k3\":\"last\",\"k0\":\"again\"}}");
        let Ok(Value::Map(entries)) = decode_value(big.as_bytes()) else {
            panic!("{big}")
        };
        assert_eq!(entries.len(), 40);
        assert_eq!(entries[0], (s("k0"), s("again")));
        assert_eq!(entries[3], (s("k3"), s("last")));
        assert_eq!(entries[39], (s("k39"), Int(39)));
    }

    #[test]
    fn non_string_map_keys_become_their_json_text() {
        let map = Value::Map(vec![
            (Int(1), Bool(true)),
            (Value::Array(vec![Null]), Value::Array(vec![])),
            (Value::Bin(Bytes::from_static(b"k")), Value::Map(vec![])),
        ]);
        assert_eq!(text(&map), r#"{"1":true,"[null]":[],"aw==":{}}"#);
    }

    #[test]
    fn invalid_json_values_are_rejected() {
        let long = "123456789012345678901234567890";
        for json in ["[1,2", "1 2", "{\"a\":}", "", long] {
            let decoded = decode_value(json.as_bytes());
            assert!(matches!(decoded, Err(Json(_))), "{json}");
        }
    }

    #[test]
    fn a_32_kb_argument_is_a_slice_of_the_received_bytes_and_echoes_back_byte_identical() {
        let text: String = (0..32_000)
            .map(|i| char::from(b' ' + (i % 95) as u8))
            .collect();
        let mut argument = BytesMut::new();
        write_string(&text, &mut argument);
        let argument = String::from_utf8(argument.to_vec()).unwrap();
        let record =
            format!(r#"{{"type":1,"invocationId":"42","target":"Echo","arguments":[{argument}]}}"#);
        let input = Bytes::from(format!("{record}\x1e"));
        let Ok(Decoded::Message(M::Invocation(call), _)) = decode(&input, 64 * 1024) else {
            panic!("not decoded")
        };
        let [Payload::Json(kept)] = &call.arguments[..] else {
            panic!("{:?}", call.arguments)
        };
        let received = input.as_ptr_range();
        assert!(received.contains(&kept.as_ptr()), "the argument was copied");
        let echoed = enc(&done("42", Returned(call.arguments[0].clone())));
        assert_eq!(
            echoed,
            format!(
                r#"{{"type":3,"invocationId":"42","result":{argument}}}{}"#,
                '\x1e'
            )
        );
    }

    #[test]
    fn payload_text_is_relayed_verbatim_whatever_its_escapes_unicode_nesting_and_whitespace() {
        #[rustfmt::skip]
        let payloads = [
            r#""tab\there \"quoted\" back\\slash \/ \b\f\n\r \u00e9\u0000\u2028""#,
            r#""raw unicode: é 日本語 😀 \u007f""#,
            r#"{"a":[1,{"b":[[[]]]},null],"a":2, "c" : { } }"#,
            "[ 1 ,\t2\r\n, 3 ]",
            r#"[0,-1,-0.5,1.25e-7,6.02E+23,123456789012345678,1e5,-9.99E-99]"#,
            "true", "false", "null", r#""""#, "[]", "{}",
        ];
        for payload in payloads {
            let json = format!(r#"{{"type":2,"invocationId":"1","item": {payload} }}"#);
            let Ok(M::StreamItem(message)) = raw(&json) else {
                panic!("{json}")
            };
            assert_eq!(message.item, Payload::Json(Bytes::from(payload)), "{json}");
            let again = enc(&M::StreamItem(message.clone()));
            assert_eq!(
                again,
                format!(
                    r#"{{"type":2,"invocationId":"1","item":{payload}}}{}"#,
                    '\x1e'
                )
            );
            let slow = decode_record(json.as_bytes()).unwrap();
            assert_eq!(values(M::StreamItem(message)), slow, "{json}");
        }
    }

    #[test]
    fn records_the_span_scanner_leaves_alone_still_decode_through_simd_json() {
        #[rustfmt::skip]
        let records = [
            r#"{"type":1,"target":"T\u0041","arguments":[]}"#,
            r#"{"typ\u0065":6}"#,
            r#"{"type":2,"invocationId":"1","item":"\ud83d\ude00"}"#,
            r#"{"type":2,"invocationId":"1","item":18446744073709551615}"#,
            r#"{"type":2,"invocationId":"1","item":0.12345678901234567890}"#,
            r#"{"type":2,"invocationId":"1","item":1e300}"#,
        ];
        for json in records {
            assert_eq!(
                span::decode(&Bytes::from(json), json.len()),
                Err(span::Unsure)
            );
            assert_eq!(one(json), decode_record(json.as_bytes()), "{json}");
            assert!(one(json).is_ok(), "{json}");
        }
    }

    /// A small deterministic generator (xorshift) of JSON-ish records: valid messages of every
    /// type with random payloads, spacing and property order, some mutated into invalid ones.
    struct Records(u64);

    impl Records {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
            options[(self.next() % options.len() as u64) as usize]
        }

        fn space(&mut self) -> &'static str {
            self.pick(&["", "", "", " ", "\n\t ", "\r\n"])
        }

        fn value(&mut self, depth: usize) -> String {
            let plain = [
                "0",
                "7",
                "-42",
                "123456789012345678",
                "1.5",
                "-0.25e3",
                "1E+5",
                "true",
                "false",
                "null",
                r#""""#,
                r#""plain""#,
                r#""esc\n\t\"\\\/""#,
                r#""\u00e9\u0000""#,
                "\"raw é 日 😀\"",
                "\"\u{2028}\"",
            ];
            let risky = [
                "-0",
                "1234567890123456789",
                "-9223372036854775808",
                "18446744073709551615",
                "99999999999999999999",
                "1e400",
                "1e-400",
                "0.1234567890123456789",
                "01",
                "1.",
                ".5",
                "-",
                "1e",
                "nul",
                r#""\ud83d\ude00""#,
                r#""\ud83d""#,
                r#""\ude00x""#,
                "\"ctl \u{1}\"",
                r#""bad \x""#,
                r#""\u12g4""#,
            ];
            match self.next() % 8 {
                0 if depth < 66 => {
                    let n = self.next() % 4;
                    let items: Vec<String> = (0..n).map(|_| self.value(depth + 1)).collect();
                    let sep = format!("{},{}", self.space(), self.space());
                    format!("[{}{}]", items.join(&sep), self.space())
                }
                1 if depth < 66 => {
                    let n = self.next() % 4;
                    let items: Vec<String> = (0..n)
                        .map(|_| {
                            let key = self.pick(&[r#""a""#, r#""b""#, r#""a""#, r#""\u0061""#]);
                            format!(
                                "{key}{}:{}{}",
                                self.space(),
                                self.space(),
                                self.value(depth + 1)
                            )
                        })
                        .collect();
                    format!("{{{}}}", items.join(","))
                }
                2 if depth < 66 => format!("[{}]", self.value(depth + 1)),
                7 => self.pick(&risky).to_owned(),
                _ => self.pick(&plain).to_owned(),
            }
        }

        fn record(&mut self) -> Vec<u8> {
            let mut fields: Vec<String> = Vec::new();
            let kind = self.pick(&[
                "1", "2", "3", "4", "5", "6", "7", "8", "9", "42", "-0", "1.0", "\"1\"",
            ]);
            fields.push(format!(r#""type":{kind}"#));
            let extra = [
                r#""invocationId":"7""#,
                r#""invocationId":"""#,
                r#""invocationId":7"#,
                r#""target":"Send""#,
                r#""target":"""#,
                r#""target":null"#,
                r#""streamIds":["1","2"]"#,
                r#""streamIds":[1]"#,
                r#""streamIds":"1""#,
                r#""headers":{"h":"v","k":"w","h":"x"}"#,
                r#""headers":{"h":1}"#,
                r#""headers":[]"#,
                r#""headers":{"h\n":"v"}"#,
                r#""error":"e""#,
                r#""error":null"#,
                r#""error":5"#,
                r#""allowReconnect":true"#,
                r#""allowReconnect":"yes""#,
                r#""sequenceId":12"#,
                r#""sequenceId":-3"#,
                r#""sequenceId":1.5"#,
                r#""sequenceId":99999999999999999999"#,
                r#""unknown":{"x":[1,2]}"#,
            ];
            for _ in 0..self.next() % 5 {
                fields.push(self.pick(&extra).to_owned());
            }
            for key in ["arguments", "item", "result"] {
                if !self.next().is_multiple_of(3) {
                    let n = self.next() % 3;
                    let value = if key == "arguments" && !self.next().is_multiple_of(8) {
                        let items: Vec<String> = (0..n).map(|_| self.value(2)).collect();
                        format!("[{}]", items.join(","))
                    } else {
                        self.value(1)
                    };
                    fields.push(format!(r#""{key}":{}{value}"#, self.space()));
                }
            }
            for i in (1..fields.len()).rev() {
                fields.swap(i, (self.next() % (i as u64 + 1)) as usize);
            }
            let mut record =
                format!("{}{{{}}}{}", self.space(), fields.join(","), self.space()).into_bytes();
            if self.next().is_multiple_of(6) && !record.is_empty() {
                let at = (self.next() % record.len() as u64) as usize;
                match self.next() % 3 {
                    0 => {
                        record.remove(at);
                    }
                    1 => record.insert(at, 0xff),
                    _ => record.insert(at, b"{}[],:\"\\ 0"[(self.next() % 10) as usize]),
                }
            }
            record
        }
    }

    #[test]
    fn the_span_path_accepts_only_what_simd_json_accepts_and_means_the_same() {
        let mut records = Records(0x9e37_79b9_7f4a_7c15);
        let (mut fast, mut accepted) = (0, 0);
        for _ in 0..8_000 {
            let record = records.record();
            let slow = decode_record(&record);
            let input = Bytes::from(record.clone());
            let text = String::from_utf8_lossy(&record);
            if let Ok(message) = span::decode(&input, input.len()) {
                fast += 1;
                assert_eq!(Ok(values(message)), slow, "{text}");
            }
            let mut framed = record.clone();
            framed.push(RECORD_SEPARATOR);
            let decoded = decode(&Bytes::from(framed), usize::MAX).map(|d| match d {
                Decoded::Message(message, _) => values(message),
                Decoded::NeedMore => panic!("{text}"),
            });
            assert_eq!(decoded, slow, "{text}");
            accepted += usize::from(slow.is_ok());
        }
        // Most valid records take the span path (the rest hold constructs it leaves alone).
        assert!(
            fast * 2 > accepted,
            "the span path took only {fast} of {accepted}"
        );
    }
}
