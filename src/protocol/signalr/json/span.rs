//! The fast path of JSON decoding: one validating pass over the record that keeps every
//! argument, stream item and completion result as a span of the received bytes
//! ([`Payload::Json`], no copy), so an echo or a relay writes the client's text once into the
//! outbox.
//!
//! The scanner only ever *accepts*. It answers [`Unsure`] for anything it does not decide itself
//! — invalid JSON, a message-shape error, nesting deeper than [`MAX_DEPTH`], an escape in a
//! property name or envelope string, a `\u` surrogate escape, a number simd-json might refuse
//! (long integers, long mantissas, large exponents) — and the caller then runs the simd-json
//! path, which produces the verdict and the exact error. So every record accepted here is one
//! the simd-json path accepts with the same message (payloads aside, which are equal once
//! decoded), and every error is the simd-json path's error. Tests in `json.rs` check this
//! differentially on generated records.

use bytes::Bytes;

use super::MAX_DEPTH;
use crate::protocol::signalr::HubMessage;
use crate::protocol::signalr::message::{
    CancelInvocation, Close, Completion, CompletionOutcome, Headers, Invocation, Payload,
    StreamItem,
};

/// The scanner does not decide this record; the simd-json path must.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unsure;

type Scan<T> = Result<T, Unsure>;

/// What kind of JSON value a span holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool(bool),
    /// A number; `Some` when it is an integer of at most 18 digits.
    Number(Option<i64>),
    /// A string; `true` when it contains an escape.
    String(bool),
    Array,
    Object,
}

/// One JSON value of the record: its kind and byte range (quotes and brackets included).
#[derive(Debug, Clone, Copy)]
struct Span {
    kind: Kind,
    start: usize,
    end: usize,
}

/// The spans of the properties a hub message may carry (last occurrence wins).
#[derive(Default)]
struct Fields {
    kind: Option<Span>,
    headers: Option<Span>,
    invocation_id: Option<Span>,
    target: Option<Span>,
    arguments: Option<Span>,
    stream_ids: Option<Span>,
    item: Option<Span>,
    result: Option<Span>,
    error: Option<Span>,
    allow_reconnect: Option<Span>,
    sequence_id: Option<Span>,
    /// The elements of the last `arguments` array, collected in the same pass.
    argument_spans: Vec<Span>,
}

/// Decodes the record `input[..end]` (the 0x1E excluded), keeping payloads as slices of `input`.
///
/// # Errors
/// [`Unsure`] when the record is not one this scanner accepts (see the module docs).
pub(super) fn decode(input: &Bytes, end: usize) -> Scan<HubMessage> {
    let record = input.get(..end).ok_or(Unsure)?;
    // Bytes >= 0x80 are legal only inside strings; validating them all up front lets the
    // string scan look for ASCII only.
    if std::str::from_utf8(record).is_err() {
        return Err(Unsure);
    }
    let mut scanner = Scanner {
        bytes: record,
        pos: 0,
    };
    let fields = scanner.envelope()?;
    scanner.skip_whitespace();
    if scanner.pos != record.len() {
        return Err(Unsure);
    }
    Message { input, scanner }.build(&fields)
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes `byte` after optional whitespace.
    fn expect(&mut self, byte: u8) -> Scan<()> {
        self.skip_whitespace();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// The message object: known properties' value spans, other values validated and skipped.
    fn envelope(&mut self) -> Scan<Fields> {
        let mut f = Fields::default();
        self.expect(b'{')?;
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(f);
        }
        loop {
            self.skip_whitespace();
            let key = self.value(1)?;
            if key.kind != Kind::String(false) {
                return Err(Unsure);
            }
            let name = self.bytes.get(key.start + 1..key.end - 1).ok_or(Unsure)?;
            self.expect(b':')?;
            self.skip_whitespace();
            let value = if name == b"arguments" && self.peek() == Some(b'[') {
                f.argument_spans.clear();
                let start = self.pos;
                let kind = self.container(1, Some(&mut f.argument_spans))?;
                Span {
                    kind,
                    start,
                    end: self.pos,
                }
            } else {
                self.value(1)?
            };
            let slot = match name {
                b"type" => &mut f.kind,
                b"headers" => &mut f.headers,
                b"invocationId" => &mut f.invocation_id,
                b"target" => &mut f.target,
                b"arguments" => &mut f.arguments,
                b"streamIds" => &mut f.stream_ids,
                b"item" => &mut f.item,
                b"result" => &mut f.result,
                b"error" => &mut f.error,
                b"allowReconnect" => &mut f.allow_reconnect,
                b"sequenceId" => &mut f.sequence_id,
                _ => &mut None,
            };
            *slot = Some(value);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(f);
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// Validates the value starting at `pos` (no leading whitespace), nested inside `depth`
    /// containers, and returns its span.
    fn value(&mut self, depth: usize) -> Scan<Span> {
        let start = self.pos;
        let kind = match self.peek().ok_or(Unsure)? {
            b'"' => Kind::String(self.string()?),
            b'{' | b'[' => self.container(depth, None)?,
            b't' => self.literal(b"true", Kind::Bool(true))?,
            b'f' => self.literal(b"false", Kind::Bool(false))?,
            b'n' => self.literal(b"null", Kind::Null)?,
            b'-' | b'0'..=b'9' => Kind::Number(self.number()?),
            _ => return Err(Unsure),
        };
        Ok(Span {
            kind,
            start,
            end: self.pos,
        })
    }

    fn literal(&mut self, word: &[u8], kind: Kind) -> Scan<Kind> {
        if self.bytes.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(kind)
        } else {
            Err(Unsure)
        }
    }

    /// An array or object opened at `pos`, itself at nesting level `depth + 1`; an array's
    /// element spans are pushed to `elements` when given. Recursion is bounded by
    /// [`MAX_DEPTH`].
    fn container(&mut self, depth: usize, mut elements: Option<&mut Vec<Span>>) -> Scan<Kind> {
        let depth = depth + 1;
        if depth > MAX_DEPTH {
            return Err(Unsure);
        }
        let (close, kind) = match self.peek() {
            Some(b'[') => (b']', Kind::Array),
            _ => (b'}', Kind::Object),
        };
        self.pos += 1;
        self.skip_whitespace();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(kind);
        }
        loop {
            self.skip_whitespace();
            if kind == Kind::Object {
                if self.peek() != Some(b'"') {
                    return Err(Unsure);
                }
                self.string()?;
                self.expect(b':')?;
                self.skip_whitespace();
            }
            let element = self.value(depth)?;
            if let Some(elements) = elements.as_deref_mut() {
                elements.push(element);
            }
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b) if b == close => {
                    self.pos += 1;
                    return Ok(kind);
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// A string opened at `pos`; returns whether it contains an escape. Runs without `"`,
    /// `\` or control characters are skipped 16 bytes at a time (a loop the compiler
    /// vectorises); the record is already known to be valid UTF-8.
    fn string(&mut self) -> Scan<bool> {
        let mut escaped = false;
        self.pos += 1;
        loop {
            while let Some(chunk) = self.bytes.get(self.pos..self.pos + 16) {
                let special = chunk.iter().fold(false, |any, &b| {
                    any | (b < 0x20) | (b == b'"') | (b == b'\\')
                });
                if special {
                    break;
                }
                self.pos += 16;
            }
            match self.peek().ok_or(Unsure)? {
                b'"' => {
                    self.pos += 1;
                    return Ok(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                0..0x20 => return Err(Unsure),
                _ => self.pos += 1,
            }
        }
    }

    /// An escape at `pos` (the backslash). Surrogate escapes are left to simd-json, which
    /// checks their pairing.
    fn escape(&mut self) -> Scan<()> {
        match self.bytes.get(self.pos + 1).ok_or(Unsure)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                self.pos += 2;
                Ok(())
            }
            b'u' => {
                let hex = self.bytes.get(self.pos + 2..self.pos + 6).ok_or(Unsure)?;
                let text = std::str::from_utf8(hex).map_err(|_| Unsure)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(Unsure);
                }
                let unit = u16::from_str_radix(text, 16).map_err(|_| Unsure)?;
                if (0xd800..=0xdfff).contains(&unit) {
                    return Err(Unsure);
                }
                self.pos += 6;
                Ok(())
            }
            _ => Err(Unsure),
        }
    }

    /// A number at `pos`, by JSON's grammar; returns its value when it is an integer of at most
    /// 18 digits. Integers longer than that and fractions with more than 17 significant digits
    /// or an exponent beyond ±99 are left to simd-json, which may refuse them.
    fn number(&mut self) -> Scan<Option<i64>> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Unsure),
        }
        let int_digits = self.pos - int_start;
        let mut integer = true;
        let mut fraction_digits = 0;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let at = self.pos;
            self.digits();
            fraction_digits = self.pos - at;
            if fraction_digits == 0 {
                return Err(Unsure);
            }
            integer = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            let at = self.pos;
            self.digits();
            if !(1..=2).contains(&(self.pos - at)) {
                return Err(Unsure);
            }
            integer = false;
        }
        if integer {
            // `-0` may be a float to simd-json; leave it to it.
            if int_digits > 18 || (negative && self.bytes.get(int_start) == Some(&b'0')) {
                return Err(Unsure);
            }
            let text = self.bytes.get(start..self.pos).ok_or(Unsure)?;
            let text = std::str::from_utf8(text).map_err(|_| Unsure)?;
            return text.parse().map(Some).map_err(|_| Unsure);
        }
        if int_digits + fraction_digits > 17 {
            return Err(Unsure);
        }
        Ok(None)
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }
}

/// Builds a hub message from the envelope's spans. Only well-formed messages are built; any
/// shape error is [`Unsure`], so the simd-json path reports it.
struct Message<'a> {
    input: &'a Bytes,
    scanner: Scanner<'a>,
}

impl Message<'_> {
    fn build(mut self, f: &Fields) -> Scan<HubMessage> {
        let Some(Kind::Number(Some(kind))) = f.kind.map(|s| s.kind) else {
            return Err(Unsure);
        };
        Ok(match kind {
            1 => HubMessage::Invocation(self.invocation(f, false)?),
            2 => HubMessage::StreamItem(StreamItem {
                invocation_id: self.required_id(f.invocation_id)?,
                item: self.payload(f.item.ok_or(Unsure)?),
                headers: self.headers(f.headers)?,
            }),
            3 => {
                let outcome = match (f.error, f.result) {
                    (Some(_), Some(_)) => return Err(Unsure),
                    (Some(error), None) => CompletionOutcome::Error(self.string(error)?.to_owned()),
                    (None, Some(result)) => CompletionOutcome::Result(self.payload(result)),
                    (None, None) => CompletionOutcome::Void,
                };
                HubMessage::Completion(Completion {
                    invocation_id: self.required_id(f.invocation_id)?,
                    headers: self.headers(f.headers)?,
                    outcome,
                })
            }
            4 => HubMessage::StreamInvocation(self.invocation(f, true)?),
            5 => HubMessage::CancelInvocation(CancelInvocation {
                invocation_id: self.required_id(f.invocation_id)?,
                headers: self.headers(f.headers)?,
            }),
            6 => HubMessage::Ping,
            7 => HubMessage::Close(Close {
                error: match f.error {
                    None => None,
                    Some(span) if span.kind == Kind::Null => None,
                    Some(span) => Some(self.string(span)?.to_owned()),
                },
                allow_reconnect: match f.allow_reconnect.map(|s| s.kind) {
                    None => false,
                    Some(Kind::Bool(allow)) => allow,
                    Some(_) => return Err(Unsure),
                },
            }),
            8 => HubMessage::Ack(Self::integer(f.sequence_id)?),
            9 => HubMessage::Sequence(Self::integer(f.sequence_id)?),
            other => HubMessage::Unknown(other),
        })
    }

    fn integer(span: Option<Span>) -> Scan<i64> {
        match span.map(|s| s.kind) {
            Some(Kind::Number(Some(value))) => Ok(value),
            _ => Err(Unsure),
        }
    }

    /// The text of a string without escapes.
    fn string(&self, span: Span) -> Scan<&str> {
        if span.kind != Kind::String(false) {
            return Err(Unsure);
        }
        let raw = self.scanner.bytes.get(span.start + 1..span.end - 1);
        // The record was validated as UTF-8, and a span starts and ends at ASCII quotes.
        std::str::from_utf8(raw.ok_or(Unsure)?).map_err(|_| Unsure)
    }

    fn payload(&self, span: Span) -> Payload {
        Payload::Json(self.input.slice(span.start..span.end))
    }

    /// A non-empty invocation id.
    fn required_id(&self, span: Option<Span>) -> Scan<String> {
        self.optional_id(span)?.ok_or(Unsure)
    }

    /// An optional invocation id; empty is none, as .NET does.
    fn optional_id(&self, span: Option<Span>) -> Scan<Option<String>> {
        let Some(span) = span else { return Ok(None) };
        let id = self.string(span)?;
        Ok((!id.is_empty()).then(|| id.to_owned()))
    }

    /// Walks the (already validated) array at `span`, calling `each` with every element's span.
    fn elements(&mut self, span: Span, mut each: impl FnMut(&Self, Span) -> Scan<()>) -> Scan<()> {
        if span.kind != Kind::Array {
            return Err(Unsure);
        }
        self.scanner.pos = span.start + 1;
        self.scanner.skip_whitespace();
        if self.scanner.peek() == Some(b']') {
            return Ok(());
        }
        loop {
            self.scanner.skip_whitespace();
            // Nesting was checked by the first pass.
            let element = self.scanner.value(0)?;
            each(self, element)?;
            self.scanner.skip_whitespace();
            match self.scanner.peek() {
                Some(b',') => self.scanner.pos += 1,
                _ => return Ok(()),
            }
        }
    }

    fn invocation(&mut self, f: &Fields, streaming: bool) -> Scan<Invocation> {
        let invocation_id = if streaming {
            Some(self.required_id(f.invocation_id)?)
        } else {
            self.optional_id(f.invocation_id)?
        };
        let target = self.string(f.target.ok_or(Unsure)?)?.to_owned();
        if target.is_empty() {
            return Err(Unsure);
        }
        if f.arguments.map(|s| s.kind) != Some(Kind::Array) {
            return Err(Unsure);
        }
        let arguments = f.argument_spans.iter().map(|s| self.payload(*s)).collect();
        let mut stream_ids = Vec::new();
        if let Some(span) = f.stream_ids {
            self.elements(span, |m, id| {
                stream_ids.push(m.string(id)?.to_owned());
                Ok(())
            })?;
        }
        Ok(Invocation {
            headers: self.headers(f.headers)?,
            invocation_id,
            target,
            arguments,
            stream_ids,
        })
    }

    /// Headers: an object of strings, in order; a repeated key keeps its first position and
    /// last value.
    fn headers(&mut self, span: Option<Span>) -> Scan<Headers> {
        let Some(span) = span else {
            return Ok(Headers::new());
        };
        if span.kind != Kind::Object {
            return Err(Unsure);
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        self.scanner.pos = span.start + 1;
        self.scanner.skip_whitespace();
        if self.scanner.peek() == Some(b'}') {
            return Ok(Headers(headers));
        }
        loop {
            self.scanner.skip_whitespace();
            let key = self.scanner.value(0)?;
            self.scanner.expect(b':')?;
            self.scanner.skip_whitespace();
            let value = self.scanner.value(0)?;
            let (key, value) = (self.string(key)?, self.string(value)?);
            match headers.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => value.clone_into(&mut slot.1),
                None => headers.push((key.to_owned(), value.to_owned())),
            }
            self.scanner.skip_whitespace();
            match self.scanner.peek() {
                Some(b',') => self.scanner.pos += 1,
                _ => return Ok(Headers(headers)),
            }
        }
    }
}
