//! HTTP/1.1 message framing, sans-IO: request heads and chunked bodies in, responses out.
//!
//! This file owns:
//! - [`parse_head`], which turns the start of a read buffer into a [`RequestHead`] with
//!   `httparse`, enforcing [`HeadLimits`] on partial input too, so the server can answer 414/431
//!   before it has buffered an oversized head;
//! - the framing decisions made on a parsed head: [`RequestHead::body_kind`] (message body
//!   length), [`RequestHead::is_keep_alive`] (persistence), [`RequestHead::expects_continue`];
//! - [`ChunkedDecoder`], an incremental decoder for `Transfer-Encoding: chunked` request bodies;
//! - [`Response`], a small response builder whose head is encoded separately from its body so a
//!   large body [`Bytes`] is never copied.
//!
//! It deliberately does not touch sockets, clocks or timeouts (the transport owns them), route
//! requests, percent-decode targets, decode content codings (`gzip`, …), perform the WebSocket
//! upgrade handshake (`protocol::websocket`), parse responses, or speak HTTP/2. Running out of
//! input is `Ok(None)` / [`ChunkedStatus::NeedMore`], never an error; every error maps to one
//! HTTP status through `status()`.
//!
//! Spec references (RFC 9112, HTTP/1.1):
//! - §2.2 message parsing, leading empty lines, bare LF:
//!   <https://www.rfc-editor.org/rfc/rfc9112#section-2.2>
//! - §3 request line and its length: <https://www.rfc-editor.org/rfc/rfc9112#section-3>
//! - §5 field syntax, obs-fold rejection: <https://www.rfc-editor.org/rfc/rfc9112#section-5>
//! - §6.1 Transfer-Encoding: <https://www.rfc-editor.org/rfc/rfc9112#section-6.1>
//! - §6.3 message body length: <https://www.rfc-editor.org/rfc/rfc9112#section-6.3>
//! - §7.1 chunked transfer coding: <https://www.rfc-editor.org/rfc/rfc9112#section-7.1>
//! - §9.3 persistence: <https://www.rfc-editor.org/rfc/rfc9112#section-9.3>
//! - RFC 9110 §10.1.1 Expect, §15 status codes: <https://www.rfc-editor.org/rfc/rfc9110>

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Most empty lines (CRLF or LF) skipped before a request line (RFC 9112 §2.2); more is 400.
/// Bounds the bytes a peer can make us buffer without ever sending a request line.
const MAX_LEADING_EMPTY_LINES: usize = 8;

/// Header slots kept on the stack; larger [`HeadLimits::max_headers`] values use the heap.
const STACK_HEADERS: usize = 128;

/// Longest chunk-size line (size plus extensions, without CRLF) the decoder accepts.
const MAX_CHUNK_LINE: usize = 4096;

/// Most trailer-section bytes (field lines with their CRLFs) the decoder skips before failing.
const MAX_TRAILERS: usize = 8 * 1024;

/// Size limits on a request head, checked while it is still arriving so an oversized head is
/// answered early instead of buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Longest request line in bytes, excluding its CRLF; longer is 414. RFC 9112 §3 recommends
    /// supporting at least 8000 octets. Default: 8192.
    pub max_request_line: usize,
    /// Largest header block in bytes: everything after the request line's CRLF up to and
    /// including the blank line that ends the head; larger is 431. Default: 32768.
    pub max_header_block: usize,
    /// Most header field lines; more is 431. Also the size of the `httparse` slot array.
    /// Default: 100.
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_request_line: 8192,
            max_header_block: 32768,
            max_headers: 100,
        }
    }
}

/// Why a request head was rejected; each variant maps to one status via [`HeadError::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeadError {
    /// The header block is larger than [`HeadLimits::max_header_block`] (431).
    #[error("request header block too large")]
    HeaderBlockTooLarge,
    /// The head is not valid HTTP/1.0 or HTTP/1.1; the text names the broken rule (400).
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The request line is longer than [`HeadLimits::max_request_line`] (414).
    #[error("request line too long")]
    RequestLineTooLong,
    /// The head has more than [`HeadLimits::max_headers`] field lines (431).
    #[error("too many request header fields")]
    TooManyHeaders,
    /// `chunked` is the final transfer coding but other codings precede it; we decode none of
    /// them, so RFC 9112 §6.1 asks for 501.
    #[error("unsupported transfer coding")]
    UnsupportedTransferEncoding,
}

impl HeadError {
    /// The response status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Self::HeaderBlockTooLarge | Self::TooManyHeaders => 431,
            Self::Malformed(_) => 400,
            Self::RequestLineTooLong => 414,
            Self::UnsupportedTransferEncoding => 501,
        }
    }

    /// Short text for the response body.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::HeaderBlockTooLarge => "request header block too large",
            Self::Malformed(why) => why,
            Self::RequestLineTooLong => "request line too long",
            Self::TooManyHeaders => "too many request header fields",
            Self::UnsupportedTransferEncoding => "unsupported transfer coding",
        }
    }
}

/// A request method (RFC 9110 §9). Matching is case-sensitive, as the RFC requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`.
    Options,
    /// `PATCH` (RFC 5789).
    Patch,
    /// Any other method token, verbatim.
    Other(String),
}

impl Method {
    fn from_token(token: &str) -> Self {
        match token {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            "OPTIONS" => Self::Options,
            "PATCH" => Self::Patch,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// One header field line of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Field name, lowercased (names are case-insensitive; lowercasing once makes lookups cheap).
    pub name: String,
    /// Field value without surrounding whitespace; bytes, because values may be obs-text.
    pub value: Vec<u8>,
}

/// How the body after a request head is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `Transfer-Encoding: chunked`; decode with [`ChunkedDecoder`].
    Chunked,
    /// Neither Content-Length nor Transfer-Encoding: the request has no body.
    Empty,
    /// `Content-Length: n` (`Length(0)` when the client sent `Content-Length: 0`).
    Length(u64),
}

/// A parsed HTTP/1.x request head, owning its data so the read buffer can be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The request method.
    pub method: Method,
    /// The request target exactly as sent (not percent-decoded).
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1; nothing else parses.
    pub minor_version: u8,
    /// Header fields in arrival order, repeats included.
    pub headers: Vec<Header>,
}

impl RequestHead {
    /// The target's path: everything before the first `?`.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(&self.target, |(path, _)| path)
    }

    /// The target's query: everything after the first `?`, if there is one.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers_named(name).next().map(|h| h.value.as_slice())
    }

    /// The first `name` header's value, trimmed, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.header(name)?)
            .ok()
            .map(str::trim_ascii)
    }

    /// How many field lines named `name` (case-insensitive) the head has.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers_named(name).count()
    }

    /// Whether `token` appears (case-insensitive) in the comma-separated lists of any `name`
    /// header, e.g. `has_token("connection", "upgrade")` for `Connection: keep-alive, Upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.list_elements(name)
            .any(|element| element.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Whether the connection persists after this request (RFC 9112 §9.3): HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub fn is_keep_alive(&self) -> bool {
        if self.has_token("connection", "close") {
            return false;
        }
        self.minor_version >= 1 || self.has_token("connection", "keep-alive")
    }

    /// Whether the client sent `Expect: 100-continue` in HTTP/1.1 (RFC 9110 §10.1.1 says to
    /// ignore it in HTTP/1.0).
    pub fn expects_continue(&self) -> bool {
        self.minor_version >= 1 && self.has_token("expect", "100-continue")
    }

    /// How the request body is framed, per RFC 9112 §6.3.
    ///
    /// # Errors
    ///
    /// [`HeadError::Malformed`] (400) for: Transfer-Encoding together with Content-Length,
    /// Transfer-Encoding in HTTP/1.0, a final transfer coding other than `chunked`, `chunked`
    /// applied twice, or Content-Length values that are not all digits or that differ.
    /// [`HeadError::UnsupportedTransferEncoding`] (501) when other codings precede `chunked`.
    pub fn body_kind(&self) -> Result<BodyKind, HeadError> {
        let has_length = self.header_count("content-length") > 0;
        if self.header_count("transfer-encoding") > 0 {
            if has_length {
                return Err(HeadError::Malformed(
                    "Transfer-Encoding and Content-Length together",
                ));
            }
            if self.minor_version == 0 {
                return Err(HeadError::Malformed(
                    "Transfer-Encoding in an HTTP/1.0 request",
                ));
            }
            let (mut codings, mut chunked, mut last_is_chunked) = (0, 0, false);
            for coding in self.list_elements("transfer-encoding") {
                last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
                codings += 1;
                chunked += usize::from(last_is_chunked);
            }
            if !last_is_chunked {
                return Err(HeadError::Malformed("final transfer coding is not chunked"));
            }
            if chunked > 1 {
                return Err(HeadError::Malformed("chunked applied more than once"));
            }
            if codings > 1 {
                return Err(HeadError::UnsupportedTransferEncoding);
            }
            return Ok(BodyKind::Chunked);
        }
        if !has_length {
            return Ok(BodyKind::Empty);
        }
        let mut length = None;
        for header in self.headers_named("content-length") {
            for element in header.value.split(|&b| b == b',') {
                let value = parse_decimal(element.trim_ascii())
                    .ok_or(HeadError::Malformed("invalid Content-Length"))?;
                if length.is_some_and(|seen| seen != value) {
                    return Err(HeadError::Malformed("conflicting Content-Length values"));
                }
                length = Some(value);
            }
        }
        length
            .map(BodyKind::Length)
            .ok_or(HeadError::Malformed("invalid Content-Length"))
    }

    fn headers_named<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a Header> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
    }

    /// Non-empty, trimmed elements of the comma-separated lists in every `name` header.
    fn list_elements<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.headers_named(name)
            .flat_map(|h| h.value.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|element| !element.is_empty())
    }
}

/// `1*DIGIT` as a `u64`; `None` when empty, not all digits, or overflowing.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Parses a complete request head from the start of `buf`.
///
/// Returns the head and the bytes consumed through the blank line that ends it (leading empty
/// lines included), or `Ok(None)` when more input is needed. The limits are enforced on partial
/// input too, so a server can answer as soon as a limit is crossed.
///
/// # Errors
///
/// [`HeadError::RequestLineTooLong`] (414), [`HeadError::HeaderBlockTooLarge`] and
/// [`HeadError::TooManyHeaders`] (431) when a [`HeadLimits`] limit is exceeded;
/// [`HeadError::Malformed`] (400) for anything `httparse` rejects (bad token, version other than
/// HTTP/1.0 or HTTP/1.1, obs-fold, NUL, non-UTF-8 target) or too many leading empty lines.
pub fn parse_head(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let Some(skipped) = skip_empty_lines(buf)? else {
        return Ok(None);
    };
    let rest = &buf[skipped..];

    // Request line: look no further than the longest allowed line plus CRLF.
    let window = &rest[..rest.len().min(limits.max_request_line.saturating_add(2))];
    let newline = window.iter().position(|&b| b == b'\n');
    let line_len = match newline {
        Some(at) => at - usize::from(at > 0 && window[at - 1] == b'\r'),
        None => window.len() - usize::from(window.last() == Some(&b'\r')),
    };
    if line_len > limits.max_request_line {
        return Err(HeadError::RequestLineTooLong);
    }

    // Header block: hand httparse no more than the largest allowed block, so an incomplete
    // parse of a truncated buffer means the block is too large.
    let parse_end = match newline {
        Some(at) => rest
            .len()
            .min((at + 1).saturating_add(limits.max_header_block)),
        None => rest.len(),
    };
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap;
    let slots = if limits.max_headers <= STACK_HEADERS {
        &mut stack[..limits.max_headers]
    } else {
        heap = vec![httparse::EMPTY_HEADER; limits.max_headers];
        heap.as_mut_slice()
    };
    let mut request = httparse::Request::new(slots);
    let consumed = match request.parse(&rest[..parse_end]) {
        Ok(httparse::Status::Complete(consumed)) => consumed,
        Ok(httparse::Status::Partial) if parse_end < rest.len() => {
            return Err(HeadError::HeaderBlockTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(head_error(error, rest)),
    };
    let (Some(method), Some(target), Some(minor_version)) =
        (request.method, request.path, request.version)
    else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let head = RequestHead {
        method: Method::from_token(method),
        target: target.to_owned(),
        minor_version,
        headers: request
            .headers
            .iter()
            .map(|h| Header {
                name: h.name.to_ascii_lowercase(),
                value: h.value.to_vec(),
            })
            .collect(),
    };
    Ok(Some((head, skipped + consumed)))
}

/// Length of the empty lines (CRLF or bare LF) at the start of `buf`, or `None` if `buf` is
/// nothing but (the start of) empty lines.
fn skip_empty_lines(buf: &[u8]) -> Result<Option<usize>, HeadError> {
    let (mut at, mut lines) = (0, 0);
    loop {
        let len = match buf[at..] {
            [] | [b'\r'] => return Ok(None),
            [b'\r', b'\n', ..] => 2,
            [b'\n', ..] => 1,
            [b'\r', ..] => return Err(HeadError::Malformed("CR not followed by LF")),
            _ => return Ok(Some(at)),
        };
        lines += 1;
        if lines > MAX_LEADING_EMPTY_LINES {
            return Err(HeadError::Malformed(
                "too many empty lines before the request line",
            ));
        }
        at += len;
    }
}

fn head_error(error: httparse::Error, rest: &[u8]) -> HeadError {
    use httparse::Error as E;
    if error == E::TooManyHeaders {
        return HeadError::TooManyHeaders;
    }
    HeadError::Malformed(match error {
        E::Version if rest.starts_with(b"PRI * HTTP/2") => {
            "HTTP/2 prior knowledge is not supported"
        }
        E::Version => "unsupported HTTP version",
        E::HeaderName => "invalid header field name",
        E::HeaderValue => "invalid header field value",
        E::NewLine => "invalid line ending",
        E::Token => "invalid method or request target",
        E::Status | E::TooManyHeaders => "invalid request line",
    })
}

/// Why a chunked body was rejected; each variant maps to one status via [`ChunkedError::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ChunkedError {
    /// The chunked framing is invalid; the text names the broken rule (400).
    #[error("malformed chunked body: {0}")]
    Malformed(&'static str),
    /// The decoded body would exceed the decoder's `max_body` (413).
    #[error("request body too large")]
    TooLarge,
    /// The trailer section exceeds 8 KiB (431).
    #[error("chunked trailer section too large")]
    TrailersTooLarge,
}

impl ChunkedError {
    /// The response status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Malformed(_) => 400,
            Self::TooLarge => 413,
            Self::TrailersTooLarge => 431,
        }
    }
}

/// Progress reported by [`ChunkedDecoder::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedStatus {
    /// The last chunk and trailer section were read; bytes after them stay in `input`.
    Done,
    /// All usable input was consumed; call again with more.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkedState {
    Size,
    Data { remaining: u64 },
    DataEnd,
    Trailers { seen: usize },
    Done,
}

/// Incremental decoder for a `Transfer-Encoding: chunked` body (RFC 9112 §7.1).
///
/// Chunk extensions are validated loosely and ignored; trailer fields are skipped (up to
/// 8 KiB). Line endings must be CRLF. After an error the decoder's state is unspecified: answer
/// with [`ChunkedError::status`] and close the connection.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkedState,
    max_body: u64,
    total: u64,
}

impl ChunkedDecoder {
    /// A decoder that accepts at most `max_body` decoded bytes.
    pub fn new(max_body: usize) -> Self {
        Self {
            state: ChunkedState::Size,
            max_body: u64::try_from(max_body).unwrap_or(u64::MAX),
            total: 0,
        }
    }

    /// Consumes what it can from `input`, appending chunk data to `out`.
    ///
    /// An incomplete chunk-size or trailer line is left in `input`; so is anything after the
    /// end of the body (a pipelined request). Once `Done`, further calls return `Done` without
    /// consuming anything.
    ///
    /// # Errors
    ///
    /// [`ChunkedError::TooLarge`] as soon as a chunk size would take the body past `max_body`,
    /// [`ChunkedError::TrailersTooLarge`] past 8 KiB of trailers, [`ChunkedError::Malformed`]
    /// for a non-hex or overflowing size, a size line over 4 KiB, a bare LF, or chunk data not
    /// followed by CRLF.
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<ChunkedStatus, ChunkedError> {
        loop {
            match self.state {
                ChunkedState::Size => {
                    let len = match find_line(input, MAX_CHUNK_LINE)? {
                        Line::Found(len) => len,
                        Line::NeedMore => return Ok(ChunkedStatus::NeedMore),
                        Line::TooLong => {
                            return Err(ChunkedError::Malformed("chunk size line too long"));
                        }
                    };
                    let size = parse_chunk_size(&input[..len])?;
                    input.advance(len + 2);
                    self.total = self
                        .total
                        .checked_add(size)
                        .filter(|total| *total <= self.max_body)
                        .ok_or(ChunkedError::TooLarge)?;
                    self.state = match size {
                        0 => ChunkedState::Trailers { seen: 0 },
                        remaining => ChunkedState::Data { remaining },
                    };
                }
                ChunkedState::Data { remaining } => {
                    if input.is_empty() {
                        return Ok(ChunkedStatus::NeedMore);
                    }
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input.advance(take);
                    // `take <= remaining`, so this cannot underflow.
                    self.state = match remaining - take as u64 {
                        0 => ChunkedState::DataEnd,
                        remaining => ChunkedState::Data { remaining },
                    };
                }
                ChunkedState::DataEnd => match input[..] {
                    [] | [b'\r'] => return Ok(ChunkedStatus::NeedMore),
                    [b'\r', b'\n', ..] => {
                        input.advance(2);
                        self.state = ChunkedState::Size;
                    }
                    _ => return Err(ChunkedError::Malformed("chunk data not followed by CRLF")),
                },
                ChunkedState::Trailers { seen } => {
                    let budget = MAX_TRAILERS.saturating_sub(seen).saturating_sub(2);
                    let len = match find_line(input, budget)? {
                        Line::Found(len) => len,
                        Line::NeedMore => return Ok(ChunkedStatus::NeedMore),
                        Line::TooLong => return Err(ChunkedError::TrailersTooLarge),
                    };
                    if input[..len].contains(&b'\r') {
                        return Err(ChunkedError::Malformed("CR inside a trailer line"));
                    }
                    input.advance(len + 2);
                    self.state = match len {
                        0 => ChunkedState::Done,
                        _ => ChunkedState::Trailers {
                            seen: seen + len + 2,
                        },
                    };
                }
                ChunkedState::Done => return Ok(ChunkedStatus::Done),
            }
        }
    }
}

/// Outcome of looking for a CRLF-terminated line at the start of the input.
enum Line {
    /// A line of this many bytes (CRLF excluded) is complete.
    Found(usize),
    /// No line end yet, and the line so far is within its limit.
    NeedMore,
    /// The line is (or will be) longer than its limit.
    TooLong,
}

fn find_line(input: &[u8], max: usize) -> Result<Line, ChunkedError> {
    let window = &input[..input.len().min(max.saturating_add(2))];
    match window.iter().position(|&b| b == b'\n') {
        Some(at) if at == 0 || window[at - 1] != b'\r' => {
            Err(ChunkedError::Malformed("bare LF in chunked framing"))
        }
        Some(at) => Ok(Line::Found(at - 1)),
        None if window.len() == max.saturating_add(2) => Ok(Line::TooLong),
        None => Ok(Line::NeedMore),
    }
}

/// `chunk-size [ chunk-ext ]` (RFC 9112 §7.1, §7.1.1); extensions are checked for control
/// characters and otherwise ignored.
fn parse_chunk_size(line: &[u8]) -> Result<u64, ChunkedError> {
    let (mut size, mut digits) = (0u64, 0);
    for &b in line {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => break,
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(digit)))
            .ok_or(ChunkedError::Malformed("chunk size overflows"))?;
        digits += 1;
    }
    if digits == 0 {
        return Err(ChunkedError::Malformed("chunk size is not hexadecimal"));
    }
    let after = &line[digits..];
    let ext_start = after.iter().position(|&b| b != b' ' && b != b'\t');
    match ext_start.map(|at| &after[at..]) {
        None => Ok(size),
        Some([b';', ext @ ..]) if !ext.iter().any(|&b| b.is_ascii_control() && b != b'\t') => {
            Ok(size)
        }
        Some([b';', ..]) => Err(ChunkedError::Malformed("invalid chunk extension")),
        Some(_) => Err(ChunkedError::Malformed("chunk size is not hexadecimal")),
    }
}

/// A response to encode: status, headers and a body written after the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// Header fields in order; names are lowercase tokens. `content-length` and
    /// `connection: close` are written by the encoder and must not be added here.
    pub headers: Vec<(&'static str, String)>,
    /// The body; for 1xx, 204 and 304 it is never written.
    pub body: Bytes,
}

impl Response {
    /// A response with no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header field. The value must not contain CR or LF (debug-asserted; stripped when
    /// encoding either way).
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        let value = value.into();
        debug_assert!(
            !value.contains(['\r', '\n']),
            "CR/LF in header value {value:?}"
        );
        self.headers.push((name, value));
        self
    }

    /// Sets the body and its `content-type`.
    pub fn body(self, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        let mut response = self.header("content-type", content_type);
        response.body = body.into();
        response
    }

    /// A response with an `application/json` body.
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Self::new(status).body("application/json", body)
    }

    /// A response with a `text/plain; charset=utf-8` body.
    pub fn text(status: u16, body: &str) -> Self {
        Self::new(status).body(
            "text/plain; charset=utf-8",
            Bytes::copy_from_slice(body.as_bytes()),
        )
    }

    /// Writes the status line, headers, `content-length` (except for 1xx, 204 and 304, which
    /// have no body), `connection: close` when `!keep_alive` (except for 1xx, which are
    /// interim or upgrade responses), and the blank line. The caller writes [`Self::body`].
    pub fn encode_head(&self, keep_alive: bool, out: &mut BytesMut) {
        let reason = reason_phrase(self.status);
        let headers_len: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum();
        out.reserve(64 + reason.len() + headers_len);
        out.put_slice(b"HTTP/1.1 ");
        put_decimal(out, u64::from(self.status));
        out.put_u8(b' ');
        out.put_slice(reason.as_bytes());
        out.put_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            if value.contains(['\r', '\n']) {
                let clean = value.bytes().filter(|b| *b != b'\r' && *b != b'\n');
                clean.for_each(|b| out.put_u8(b));
            } else {
                out.put_slice(value.as_bytes());
            }
            out.put_slice(b"\r\n");
        }
        if self.has_body() {
            out.put_slice(b"content-length: ");
            put_decimal(out, self.body.len() as u64);
            out.put_slice(b"\r\n");
        }
        if !keep_alive && !self.is_informational() {
            out.put_slice(b"connection: close\r\n");
        }
        out.put_slice(b"\r\n");
    }

    /// Writes the head and, unless the status forbids one, the body; for small responses.
    pub fn encode(&self, keep_alive: bool, out: &mut BytesMut) {
        self.encode_head(keep_alive, out);
        if self.has_body() {
            out.put_slice(&self.body);
        }
    }

    fn is_informational(&self) -> bool {
        (100..200).contains(&self.status)
    }

    fn has_body(&self) -> bool {
        !self.is_informational() && self.status != 204 && self.status != 304
    }
}

fn put_decimal(out: &mut BytesMut, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}

/// The reason phrase for `status` (RFC 9110 §15), with a per-class fallback for codes the
/// server does not use.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => match status / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HeadError::{HeaderBlockTooLarge, RequestLineTooLong, TooManyHeaders};

    const GET: &[u8] = b"GET /chat?id=7 HTTP/1.1\r\nHost: example.com\r\n\
        Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
    const LINE_16: &[u8] = b"GET / HTTP/1.1\r\n";

    type Parsed = Result<Option<(RequestHead, usize)>, HeadError>;

    fn parse(buf: &[u8]) -> Parsed {
        parse_head(buf, &HeadLimits::default())
    }

    /// Bytes consumed by the head in `parts` under small limits: request line 16 bytes, header
    /// block 32 bytes, 2 headers.
    fn small(parts: &[&[u8]]) -> Result<Option<usize>, HeadError> {
        let limits = HeadLimits {
            max_request_line: 16,
            max_header_block: 32,
            max_headers: 2,
        };
        let parsed = parse_head(&parts.concat(), &limits)?;
        Ok(parsed.map(|(_, consumed)| consumed))
    }

    /// A request line of `len` bytes (`GET /a… HTTP/1.1`) followed by `rest`, under [`small`].
    fn with_line(len: usize, rest: &[u8]) -> Result<Option<usize>, HeadError> {
        let line = format!("GET /{} HTTP/1.1", "a".repeat(len - 14));
        small(&[line.as_bytes(), rest])
    }

    /// A 16-byte request line, a field line of `len` bytes (`x: v…`), then `rest`.
    fn with_field(len: usize, rest: &[u8]) -> Result<Option<usize>, HeadError> {
        let field = format!("x: {}", "v".repeat(len - 3));
        small(&[LINE_16, field.as_bytes(), rest])
    }

    fn with_headers(minor_version: u8, headers: &[(&str, &str)]) -> RequestHead {
        let header = |(name, value): &(&str, &str)| Header {
            name: name.to_ascii_lowercase(),
            value: value.as_bytes().to_vec(),
        };
        let headers = headers.iter().map(header).collect();
        let (method, target) = (Method::Get, "/".to_owned());
        RequestHead {
            method,
            target,
            minor_version,
            headers,
        }
    }

    #[test]
    fn request_head_parses_into_typed_values_with_lowercased_names() {
        let (head, consumed) = parse(GET).unwrap().unwrap();
        assert_eq!(
            (consumed, &head.method, head.minor_version),
            (GET.len(), &Method::Get, 1)
        );
        assert_eq!(head.target, "/chat?id=7");
        let names: Vec<_> = head.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["host", "connection", "upgrade"]);
        assert_eq!(head.headers[0].value, b"example.com");
    }

    #[test]
    fn every_proper_prefix_of_a_request_is_incomplete() {
        for buf in [GET.to_vec(), [b"\r\n\n".as_slice(), GET].concat()] {
            for end in 0..buf.len() {
                assert_eq!(parse(&buf[..end]), Ok(None), "prefix of {end} bytes");
            }
            assert_eq!(parse(&buf).unwrap().unwrap().1, buf.len());
        }
    }

    #[test]
    fn leading_empty_lines_are_skipped_and_counted_as_consumed() {
        let eight = [b"\r\n".repeat(7).as_slice(), b"\n", LINE_16, b"\r\n"].concat();
        assert_eq!(parse(&eight).unwrap().unwrap().1, 15 + 18);
        let nine = [b"\r\n".repeat(9).as_slice(), LINE_16, b"\r\n"].concat();
        assert!(matches!(parse(&nine), Err(HeadError::Malformed(_))));
        assert!(matches!(parse(b"\r\rGET"), Err(HeadError::Malformed(_))));
    }

    #[test]
    fn pipelined_requests_parse_one_after_another() {
        let buf = [GET, b"POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"].concat();
        let (first, consumed) = parse(&buf).unwrap().unwrap();
        assert_eq!((first.method, consumed), (Method::Get, GET.len()));
        let (second, more) = parse(&buf[consumed..]).unwrap().unwrap();
        assert_eq!((second.method, second.target), (Method::Post, "/b".into()));
        assert_eq!(&buf[consumed + more..], b"hi");
    }

    #[test]
    fn request_line_at_or_under_limit_is_accepted_whole_and_awaited_in_part() {
        assert_eq!(with_line(16, b"\r\n\r\n"), Ok(Some(20)));
        assert_eq!(with_line(15, b"\r\n\r\n"), Ok(Some(19)));
        assert_eq!(with_line(16, b"\n\n"), Ok(Some(18)));
        assert_eq!(with_line(16, b"\r"), Ok(None));
        assert_eq!(with_line(16, b""), Ok(None));
    }

    #[test]
    fn request_line_longer_than_limit_is_414_even_before_its_crlf() {
        assert_eq!(with_line(17, b"\r\n\r\n"), Err(RequestLineTooLong));
        assert_eq!(with_line(17, b"\r"), Err(RequestLineTooLong));
        assert_eq!(with_line(17, b""), Err(RequestLineTooLong));
        assert_eq!(RequestLineTooLong.status(), 414);
    }

    #[test]
    fn header_block_at_or_under_limit_is_accepted_whole_and_awaited_in_part() {
        assert_eq!(with_field(28, b"\r\n\r\n"), Ok(Some(16 + 32)));
        assert_eq!(with_field(27, b"\r\n\r\n"), Ok(Some(16 + 31)));
        assert_eq!(with_field(28, b"\r\n\r"), Ok(None));
        assert_eq!(with_field(32, b""), Ok(None));
        assert_eq!(small(&[LINE_16, b"\r\n"]), Ok(Some(18)));
    }

    #[test]
    fn header_block_larger_than_limit_is_431_even_before_it_ends() {
        assert_eq!(with_field(29, b"\r\n\r\n"), Err(HeaderBlockTooLarge));
        assert_eq!(with_field(30, b"\r\n\r"), Err(HeaderBlockTooLarge));
        assert_eq!(with_field(33, b""), Err(HeaderBlockTooLarge));
        assert_eq!(HeaderBlockTooLarge.status(), 431);
    }

    #[test]
    fn more_headers_than_limit_is_431_even_before_the_blank_line() {
        assert_eq!(small(&[LINE_16, b"a: 1\r\n\r\n"]), Ok(Some(24)));
        assert_eq!(small(&[LINE_16, b"a: 1\r\nb: 2\r\n\r\n"]), Ok(Some(30)));
        let three: &[u8] = b"a: 1\r\nb: 2\r\nc: 3\r\n";
        assert_eq!(small(&[LINE_16, three, b"\r\n"]), Err(TooManyHeaders));
        assert_eq!(small(&[LINE_16, three]), Err(TooManyHeaders));
        assert_eq!(TooManyHeaders.status(), 431);
        // Above the stack slots, the heap array enforces the same boundary.
        let limits = HeadLimits {
            max_headers: 200,
            ..HeadLimits::default()
        };
        let fields = |n| (0..n).map(|i| format!("h{i}: v\r\n")).collect::<String>();
        let request = |n| format!("GET / HTTP/1.1\r\n{}\r\n", fields(n)).into_bytes();
        assert!(parse_head(&request(200), &limits).unwrap().is_some());
        assert_eq!(parse_head(&request(201), &limits), Err(TooManyHeaders));
    }

    #[test]
    fn http2_prior_knowledge_preface_is_400_with_its_own_reason() {
        let expected = Err(HeadError::Malformed(
            "HTTP/2 prior knowledge is not supported",
        ));
        assert_eq!(parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), expected);
        assert_eq!(parse(b"PRI * HTTP/2"), expected);
    }

    #[test]
    fn malformed_heads_are_400() {
        let cases: [&[u8]; 10] = [
            b"GE(T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.2\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01",
        ];
        for case in cases {
            let error = parse(case).unwrap_err();
            assert!(
                matches!(error, HeadError::Malformed(_)),
                "{case:?}: {error:?}"
            );
            assert_eq!(error.status(), 400);
        }
    }

    #[test]
    fn bare_lf_line_endings_are_accepted_as_httparse_does() {
        let (head, consumed) = parse(b"GET / HTTP/1.0\nHost: a\n\n").unwrap().unwrap();
        assert_eq!((head.minor_version, consumed), (0, 24));
        assert_eq!(head.header_str("host"), Some("a"));
    }

    #[test]
    fn methods_map_to_variants_and_unknown_ones_are_kept_verbatim() {
        use Method::*;
        let other = |token: &str| Other(token.into());
        let tokens = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get", "MOVE",
        ];
        let expected = [
            Get,
            Head,
            Post,
            Put,
            Delete,
            Options,
            Patch,
            other("get"),
            other("MOVE"),
        ];
        for (token, method) in tokens.into_iter().zip(expected) {
            let request = format!("{token} / HTTP/1.1\r\n\r\n");
            assert_eq!(parse(request.as_bytes()).unwrap().unwrap().0.method, method);
        }
    }

    #[test]
    fn path_and_query_split_at_the_first_question_mark() {
        let mut head = with_headers(1, &[]);
        assert_eq!((head.path(), head.query()), ("/", None));
        head.target = "/hub/negotiate?negotiateVersion=1&x=?".into();
        assert_eq!(head.path(), "/hub/negotiate");
        assert_eq!(head.query(), Some("negotiateVersion=1&x=?"));
        head.target = "/a?".into();
        assert_eq!((head.path(), head.query()), ("/a", Some("")));
    }

    #[test]
    fn header_lookups_are_case_insensitive_and_return_the_first() {
        let mut head = with_headers(1, &[("X-A", " one "), ("x-a", "two")]);
        head.headers.push(Header {
            name: "bin".into(),
            value: vec![0xff],
        });
        assert_eq!(head.header("X-a"), Some(&b" one "[..]));
        assert_eq!(head.header_str("X-A"), Some("one"));
        assert_eq!(
            (head.header_count("x-A"), head.header_count("missing")),
            (2, 0)
        );
        assert_eq!(
            (head.header("missing"), head.header_str("bin")),
            (None, None)
        );
    }

    #[test]
    fn has_token_searches_comma_separated_lists_across_occurrences() {
        let head = parse(GET).unwrap().unwrap().0;
        assert!(head.has_token("Connection", "upgrade"));
        assert!(head.has_token("connection", "KEEP-ALIVE"));
        assert!(!head.has_token("connection", "close"));
        assert!(!head.has_token("connection", "keep"));
        let split = with_headers(1, &[("Connection", "close"), ("Connection", " ,Upgrade ,")]);
        assert!(split.has_token("connection", "upgrade"));
        assert!(split.has_token("connection", "close"));
        assert!(!split.has_token("connection", ""));
    }

    #[test]
    fn keep_alive_is_the_default_in_http_1_1_and_opt_in_for_http_1_0() {
        let cases = [
            (1, None, true),
            (1, Some("close"), false),
            (1, Some("Upgrade, Close"), false),
            (1, Some("keep-alive"), true),
            (0, None, false),
            (0, Some("Keep-Alive"), true),
            (0, Some("keep-alive, close"), false),
        ];
        for (minor, connection, expected) in cases {
            let head = with_headers(minor, connection.map(|c| ("connection", c)).as_slice());
            assert_eq!(
                head.is_keep_alive(),
                expected,
                "HTTP/1.{minor} {connection:?}"
            );
        }
    }

    #[test]
    fn expects_continue_only_in_http_1_1() {
        assert!(with_headers(1, &[("Expect", "100-Continue")]).expects_continue());
        assert!(!with_headers(0, &[("Expect", "100-continue")]).expects_continue());
        assert!(!with_headers(1, &[]).expects_continue());
    }

    #[test]
    fn body_kind_follows_rfc_9112_section_6_3() {
        use BodyKind::*;
        const TE: &str = "transfer-encoding";
        const CL: &str = "content-length";
        type Case = (
            u8,
            &'static [(&'static str, &'static str)],
            Result<BodyKind, u16>,
        );
        let cases: [Case; 17] = [
            (1, &[], Ok(Empty)),
            (1, &[(CL, "0")], Ok(Length(0))),
            (1, &[(CL, "42")], Ok(Length(42))),
            (0, &[(CL, "42")], Ok(Length(42))),
            (1, &[(CL, "7"), (CL, "7")], Ok(Length(7))),
            (1, &[(CL, "7, 7")], Ok(Length(7))),
            (1, &[(CL, "7"), (CL, "8")], Err(400)),
            (1, &[(CL, "+7")], Err(400)),
            (1, &[(CL, "")], Err(400)),
            (1, &[(CL, "99999999999999999999")], Err(400)),
            (1, &[(TE, "Chunked")], Ok(Chunked)),
            (1, &[(TE, "gzip"), (TE, "chunked")], Err(501)),
            (1, &[(TE, "chunked, gzip")], Err(400)),
            (1, &[(TE, "chunked, chunked")], Err(400)),
            (1, &[(TE, "")], Err(400)),
            (1, &[(TE, "chunked"), (CL, "5")], Err(400)),
            (0, &[(TE, "chunked")], Err(400)),
        ];
        for (minor, headers, expected) in cases {
            let kind = with_headers(minor, headers).body_kind();
            assert_eq!(
                kind.map_err(|e| e.status()),
                expected,
                "1.{minor} {headers:?}"
            );
        }
    }

    #[test]
    fn head_errors_give_a_short_reason_for_the_response_body() {
        assert_eq!(HeadError::Malformed("bad").reason(), "bad");
        assert_eq!(RequestLineTooLong.reason(), "request line too long");
        assert_eq!(
            HeadError::Malformed("bad").to_string(),
            "malformed request: bad"
        );
    }

    const CHUNKED: &[u8] =
        b"4\r\nWiki\r\n5;name=value;flag\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n\
        0;last\r\nExpires: never\r\nX-Sum: 1\r\n\r\nGET";
    const DECODED: &[u8] = b"Wikipedia in\r\n\r\nchunks.";

    fn decode(max_body: usize, input: &[u8]) -> Result<ChunkedStatus, ChunkedError> {
        let (mut input, mut out) = (BytesMut::from(input), BytesMut::new());
        ChunkedDecoder::new(max_body).decode(&mut input, &mut out)
    }

    #[test]
    fn chunked_body_decodes_in_one_piece_and_leaves_what_follows() {
        let (mut input, mut out) = (BytesMut::from(CHUNKED), BytesMut::new());
        let mut decoder = ChunkedDecoder::new(1024);
        assert_eq!(
            decoder.decode(&mut input, &mut out),
            Ok(ChunkedStatus::Done)
        );
        assert_eq!((&out[..], &input[..]), (DECODED, &b"GET"[..]));
        assert_eq!(
            decoder.decode(&mut input, &mut out),
            Ok(ChunkedStatus::Done)
        );
        assert_eq!(&input[..], b"GET");
    }

    #[test]
    fn chunked_body_decodes_when_fed_one_byte_at_a_time() {
        let body = &CHUNKED[..CHUNKED.len() - 3];
        let (mut input, mut out) = (BytesMut::new(), BytesMut::new());
        let mut decoder = ChunkedDecoder::new(1024);
        for (at, &byte) in body.iter().enumerate() {
            input.extend_from_slice(&[byte]);
            let status = decoder.decode(&mut input, &mut out);
            let done = at + 1 == body.len();
            assert_eq!(
                status == Ok(ChunkedStatus::Done),
                done,
                "after byte {at}: {status:?}"
            );
            assert!(status.is_ok(), "after byte {at}: {status:?}");
        }
        assert_eq!((&out[..], input.is_empty()), (DECODED, true));
    }

    #[test]
    fn partial_chunk_size_line_is_left_in_input() {
        let (mut input, mut out) = (BytesMut::from(&b"3\r\nabc\r\n1f;ext"[..]), BytesMut::new());
        let status = ChunkedDecoder::new(64).decode(&mut input, &mut out);
        assert_eq!(status, Ok(ChunkedStatus::NeedMore));
        assert_eq!((&input[..], &out[..]), (&b"1f;ext"[..], &b"abc"[..]));
    }

    #[test]
    fn chunked_body_over_limit_is_413_as_soon_as_a_size_says_so() {
        let body = b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        assert_eq!(decode(9, body), Ok(ChunkedStatus::Done));
        assert_eq!(decode(8, body), Err(ChunkedError::TooLarge));
        assert_eq!(decode(15, b"10\r\n"), Err(ChunkedError::TooLarge));
        let max_u64 = b"ffffffffffffffff\r\n";
        assert_eq!(decode(usize::MAX, max_u64), Ok(ChunkedStatus::NeedMore));
        assert_eq!(decode(1 << 20, max_u64), Err(ChunkedError::TooLarge));
        assert_eq!(ChunkedError::TooLarge.status(), 413);
    }

    #[test]
    fn malformed_chunked_framing_is_400() {
        let long_line = [&b"1;"[..], &[b'x'; MAX_CHUNK_LINE]].concat();
        let cases: [&[u8]; 10] = [
            b"zz\r\n",
            b"\r\n",
            b";ext\r\n",
            b"ffffffffffffffffff\r\n",
            b"4 x\r\n",
            b"4;a\x01\r\n",
            b"4\nWiki\r\n",
            b"4\r\nWikiX\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
            &long_line,
        ];
        for case in cases {
            let error = decode(1024, case).unwrap_err();
            assert!(
                matches!(error, ChunkedError::Malformed(_)),
                "{case:?}: {error:?}"
            );
            assert_eq!(error.status(), 400);
        }
        assert_eq!(decode(1024, b"4 ;x\r\n"), Ok(ChunkedStatus::NeedMore));
    }

    #[test]
    fn trailers_over_8_kib_are_431() {
        let fields = format!("x: {}\r\n", "v".repeat(1019)).repeat(8); // 8 x 1024 bytes
        let at_limit = format!("0\r\n{fields}\r\n");
        assert_eq!(decode(0, at_limit.as_bytes()), Ok(ChunkedStatus::Done));
        let over = format!("0\r\n{fields}y: 1\r\n");
        assert_eq!(
            decode(0, over.as_bytes()),
            Err(ChunkedError::TrailersTooLarge)
        );
        assert_eq!(ChunkedError::TrailersTooLarge.status(), 431);
    }

    fn encoded(response: &Response, keep_alive: bool) -> String {
        let mut out = BytesMut::new();
        response.encode(keep_alive, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn text_response_encodes_exact_bytes_with_connection_close() {
        let expected = "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain; charset=utf-8\r\n\
            content-length: 4\r\nconnection: close\r\n\r\nnope";
        assert_eq!(encoded(&Response::text(404, "nope"), false), expected);
    }

    #[test]
    fn keep_alive_json_response_has_no_connection_header() {
        let response = Response::json(200, r#"{"a":1}"#).header("x-id", "7");
        let expected = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-id: 7\r\n\
            content-length: 7\r\n\r\n{\"a\":1}";
        assert_eq!(encoded(&response, true), expected);
    }

    #[test]
    fn bodiless_statuses_have_no_content_length_and_1xx_no_connection_close() {
        let no_content = "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n";
        assert_eq!(encoded(&Response::new(204), false), no_content);
        let not_modified =
            "HTTP/1.1 304 Not Modified\r\ncontent-type: text/plain; charset=utf-8\r\n\r\n";
        assert_eq!(encoded(&Response::text(304, "x"), true), not_modified);
        let upgrade = Response::new(101).header("upgrade", "websocket");
        let switching = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n";
        assert_eq!(encoded(&upgrade, false), switching);
        assert_eq!(
            encoded(&Response::new(100), true),
            "HTTP/1.1 100 Continue\r\n\r\n"
        );
    }

    #[test]
    fn encode_head_leaves_the_body_to_the_caller() {
        let response = Response::new(200).body("a/b", vec![0u8; 70_000]);
        let mut out = BytesMut::new();
        response.encode_head(true, &mut out);
        let expected = "HTTP/1.1 200 OK\r\ncontent-type: a/b\r\ncontent-length: 70000\r\n\r\n";
        assert_eq!(out, expected.as_bytes());
    }

    #[test]
    fn cr_and_lf_are_stripped_from_header_values() {
        let mut response = Response::new(500);
        response
            .headers
            .push(("x-bad", "a\r\nset-cookie: b\n".into()));
        let expected = "HTTP/1.1 500 Internal Server Error\r\nx-bad: aset-cookie: b\r\n\
            content-length: 0\r\n\r\n";
        assert_eq!(encoded(&response, true), expected);
    }

    #[test]
    fn reason_phrases_cover_used_statuses_and_fall_back_by_class() {
        let generic = [
            "Informational",
            "Success",
            "Redirection",
            "Client Error",
            "Server Error",
        ];
        let used = [
            100, 101, 200, 204, 304, 400, 401, 403, 404, 405, 408, 409, 411, 413, 414,
        ];
        for status in used
            .into_iter()
            .chain([415, 426, 429, 431, 500, 501, 503, 505])
        {
            assert!(!generic.contains(&reason_phrase(status)), "{status}");
        }
        let fallbacks = [418, 302, 599].map(reason_phrase);
        assert_eq!(fallbacks, ["Client Error", "Redirection", "Server Error"]);
    }
}
