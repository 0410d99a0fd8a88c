//! HTTP/1.1 client framing, sans-IO: `http://` URLs, request heads out, responses in.
//!
//! This file owns:
//! - [`HttpUrl`], a parsed `http://host[:port][/path]` URL (no `https`: TLS is out of scope;
//!   put a local TLS-terminating proxy in front of an `https` backend);
//! - [`encode_post`], the head and body of a `POST` with a `Content-Length` body;
//! - [`ResponseReader`], an incremental response parser with limits: the head through
//!   `httparse`, then the body framed by `Content-Length`, `Transfer-Encoding: chunked` (the
//!   server's [`ChunkedDecoder`] is reused) or the end of the connection (RFC 9112 §6.3).
//!
//! Running out of input is `Ok(None)`, never an error. Interim `1xx` responses are skipped.
//! The transport ([`crate::upstream`]) owns sockets, timeouts and the connection pool, and uses
//! [`ClientResponse::keep_alive`] to decide whether a connection may be reused.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::http::{ChunkedDecoder, ChunkedError, ChunkedStatus, Header};

/// Header slots offered to `httparse` for a response head.
const MAX_RESPONSE_HEADERS: usize = 64;

/// Why a URL is not a usable upstream address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct UrlError(&'static str);

/// An `http://` URL: where to connect and what to ask for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpUrl {
    /// The host as written (a name, an IPv4 address, or an IPv6 address in brackets).
    host: String,
    /// The port (80 when the URL names none).
    port: u16,
    /// The request target: the path (at least `/`) and the query, if any.
    target: String,
}

impl HttpUrl {
    /// Parses `http://host[:port][/path][?query]`.
    ///
    /// # Errors
    /// [`UrlError`] for another scheme (`https` included), user info, a fragment, an empty or
    /// malformed host, a port that is not a number in `1..=65535`, or white space.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let Some(rest) = text.strip_prefix("http://") else {
            if text.starts_with("https://") {
                return Err(UrlError(
                    "https is not supported (put a TLS-terminating proxy on localhost in front of it)",
                ));
            }
            return Err(UrlError(
                "expected an http:// URL, e.g. \"http://127.0.0.1:9000/hub\"",
            ));
        };
        if text.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(UrlError("must not contain white space"));
        }
        if text.contains('#') {
            return Err(UrlError("must not have a fragment ('#')"));
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        if authority.contains('@') {
            return Err(UrlError("must not carry user info ('user@host')"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some(close) = v6.find(']') else {
                return Err(UrlError("unclosed '[' in the host"));
            };
            let (address, after) = (&v6[..close], &v6[close + 1..]);
            if address.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(UrlError("the bracketed host is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or(UrlError("junk after ']'"))?),
            };
            (&authority[..close + 2], port)
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError("needs a host"));
        }
        if !host.starts_with('[')
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(UrlError("the host has characters a host name cannot have"));
        }
        let port = match port {
            None => 80,
            Some(digits) => digits
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0 && digits.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(UrlError("the port must be a number from 1 to 65535"))?,
        };
        let target = match target {
            "" => "/".to_owned(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_owned(),
        };
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
            target,
        })
    }

    /// `host:port` (IPv6 in brackets): what to connect to, and the connection pool's key.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The `Host` header: the host, with the port unless it is 80.
    pub fn host_header(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            self.authority()
        }
    }

    /// The request target (path and query).
    pub fn target(&self) -> &str {
        &self.target
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.target)
    }
}

/// Appends a `POST` request to `url` carrying `body` as `content_type`, framed with
/// `Content-Length` (the connection stays open for reuse).
pub fn encode_post(url: &HttpUrl, content_type: &str, body: &[u8], out: &mut BytesMut) {
    out.reserve(160 + url.target.len() + body.len());
    out.put_slice(b"POST ");
    out.put_slice(url.target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\nHost: ");
    out.put_slice(url.host_header().as_bytes());
    out.put_slice(b"\r\nUser-Agent: ringhub\r\nAccept: application/json\r\nContent-Type: ");
    out.put_slice(content_type.as_bytes());
    out.put_slice(b"\r\nContent-Length: ");
    out.put_slice(body.len().to_string().as_bytes());
    out.put_slice(b"\r\n\r\n");
    out.put_slice(body);
}

/// Limits on a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseLimits {
    /// Largest head (status line and header block) in bytes.
    pub max_head: usize,
    /// Largest body in bytes (decoded, for chunked bodies).
    pub max_body: usize,
}

impl Default for ResponseLimits {
    fn default() -> Self {
        Self {
            max_head: 16 * 1024,
            max_body: 1 << 20,
        }
    }
}

/// Why a response could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ResponseError {
    /// Not a valid HTTP/1.x response; the text names the broken rule.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// The head is larger than [`ResponseLimits::max_head`] or has too many fields.
    #[error("response head too large")]
    HeadTooLarge,
    /// The body is larger than [`ResponseLimits::max_body`].
    #[error("response body too large")]
    BodyTooLarge,
    /// The chunked framing is broken.
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
    /// The connection ended before the response did.
    #[error("the connection ended in the middle of the response")]
    Truncated,
}

impl From<ChunkedError> for ResponseError {
    fn from(error: ChunkedError) -> Self {
        match error {
            ChunkedError::TooLarge => Self::BodyTooLarge,
            ChunkedError::TrailersTooLarge => Self::HeadTooLarge,
            ChunkedError::Malformed(why) => Self::Chunked(why),
        }
    }
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    /// The status code.
    pub status: u16,
    /// Header fields in arrival order, names lowercased.
    pub headers: Vec<Header>,
    /// The body (decoded from chunks when it was chunked).
    pub body: Bytes,
    /// Whether the connection may carry another request (HTTP/1.1 without
    /// `Connection: close`, a body framed by length or chunks).
    pub keep_alive: bool,
}

impl ClientResponse {
    /// The first `name` header's value, trimmed, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(&h.value).ok())
            .map(str::trim_ascii)
    }
}

/// How the body after a response head is framed.
#[derive(Debug, Clone)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    /// Chunks until the last one.
    Chunked(ChunkedDecoder),
    /// Everything until the server closes the connection.
    UntilClose,
}

#[derive(Debug, Clone)]
enum State {
    Head,
    Body {
        status: u16,
        headers: Vec<Header>,
        keep_alive: bool,
        framing: Framing,
        body: BytesMut,
    },
    Done,
}

/// Reads one response incrementally: feed it what the socket gave until it returns one.
#[derive(Debug, Clone)]
pub struct ResponseReader {
    limits: ResponseLimits,
    state: State,
}

impl ResponseReader {
    /// A reader for the response to one request (not `HEAD`).
    pub fn new(limits: ResponseLimits) -> Self {
        Self {
            limits,
            state: State::Head,
        }
    }

    /// Consumes what it can from `input`; `Ok(Some)` once the response is complete, with any
    /// bytes after it left in `input`.
    ///
    /// # Errors
    /// [`ResponseError`] for a malformed head or body, or one over the limits.
    pub fn feed(&mut self, input: &mut BytesMut) -> Result<Option<ClientResponse>, ResponseError> {
        loop {
            match &mut self.state {
                State::Head => {
                    let Some(next) = self.parse_head(input)? else {
                        return Ok(None);
                    };
                    self.state = next;
                }
                State::Body { framing, body, .. } => {
                    let done = match framing {
                        Framing::Length(remaining) => {
                            let take = usize::try_from(*remaining)
                                .unwrap_or(usize::MAX)
                                .min(input.len());
                            body.extend_from_slice(&input[..take]);
                            input.advance(take);
                            *remaining -= take as u64;
                            *remaining == 0
                        }
                        Framing::Chunked(decoder) => {
                            decoder.decode(input, body)? == ChunkedStatus::Done
                        }
                        Framing::UntilClose => {
                            if body.len() + input.len() > self.limits.max_body {
                                return Err(ResponseError::BodyTooLarge);
                            }
                            body.extend_from_slice(input);
                            input.clear();
                            false
                        }
                    };
                    return Ok(if done { Some(self.take()) } else { None });
                }
                State::Done => return Ok(None),
            }
        }
    }

    /// The connection ended: completes a body framed by the end of the connection.
    ///
    /// # Errors
    /// [`ResponseError::Truncated`] when the response was not complete.
    pub fn finish(&mut self) -> Result<ClientResponse, ResponseError> {
        match &self.state {
            State::Body {
                framing: Framing::UntilClose,
                ..
            } => Ok(self.take()),
            _ => Err(ResponseError::Truncated),
        }
    }

    /// Moves the finished response out.
    fn take(&mut self) -> ClientResponse {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Body {
                status,
                headers,
                keep_alive,
                body,
                ..
            } => ClientResponse {
                status,
                headers,
                body: body.freeze(),
                keep_alive,
            },
            // Only called in the Body state.
            State::Head | State::Done => ClientResponse {
                status: 0,
                headers: Vec::new(),
                body: Bytes::new(),
                keep_alive: false,
            },
        }
    }

    /// Parses a head at the start of `input`: the next state, or `None` for more input.
    fn parse_head(&self, input: &mut BytesMut) -> Result<Option<State>, ResponseError> {
        let window = &input[..input.len().min(self.limits.max_head)];
        let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut response = httparse::Response::new(&mut slots);
        let consumed = match response.parse(window) {
            Ok(httparse::Status::Complete(consumed)) => consumed,
            Ok(httparse::Status::Partial) if window.len() >= self.limits.max_head => {
                return Err(ResponseError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::HeadTooLarge),
            Err(_) => return Err(ResponseError::Malformed("invalid status line or header")),
        };
        let (Some(status), Some(minor)) = (response.code, response.version) else {
            return Err(ResponseError::Malformed("incomplete status line"));
        };
        let headers: Vec<Header> = response
            .headers
            .iter()
            .map(|h| Header {
                name: h.name.to_ascii_lowercase(),
                value: h.value.to_vec(),
            })
            .collect();
        input.advance(consumed);
        if status == 101 {
            return Err(ResponseError::Malformed(
                "unexpected 101 Switching Protocols",
            ));
        }
        if (100..200).contains(&status) {
            // Interim response (100 Continue, 103 Early Hints): the real one follows.
            return Ok(Some(State::Head));
        }
        let has = |name: &str, token: &str| {
            headers
                .iter()
                .filter(|h| h.name == name)
                .flat_map(|h| h.value.split(|b| *b == b','))
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        };
        let mut keep_alive = if minor >= 1 {
            !has("connection", "close")
        } else {
            has("connection", "keep-alive")
        };
        let framing = if status == 204 || status == 304 {
            Framing::Length(0)
        } else if headers.iter().any(|h| h.name == "transfer-encoding") {
            let codings: Vec<&[u8]> = headers
                .iter()
                .filter(|h| h.name == "transfer-encoding")
                .flat_map(|h| h.value.split(|b| *b == b','))
                .map(<[u8]>::trim_ascii)
                .filter(|t| !t.is_empty())
                .collect();
            match codings.as_slice() {
                [b] if b.eq_ignore_ascii_case(b"chunked") => {
                    Framing::Chunked(ChunkedDecoder::new(self.limits.max_body))
                }
                [.., last] if last.eq_ignore_ascii_case(b"chunked") => {
                    return Err(ResponseError::Malformed("unsupported transfer coding"));
                }
                _ => Framing::UntilClose,
            }
        } else {
            let mut length: Option<u64> = None;
            for header in headers.iter().filter(|h| h.name == "content-length") {
                for element in header.value.split(|b| *b == b',') {
                    let element = element.trim_ascii();
                    let value = std::str::from_utf8(element)
                        .ok()
                        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|t| t.parse::<u64>().ok())
                        .ok_or(ResponseError::Malformed("invalid Content-Length"))?;
                    if length.is_some_and(|seen| seen != value) {
                        return Err(ResponseError::Malformed(
                            "conflicting Content-Length values",
                        ));
                    }
                    length = Some(value);
                }
            }
            match length {
                Some(n) if n > self.limits.max_body as u64 => {
                    return Err(ResponseError::BodyTooLarge);
                }
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        };
        if matches!(framing, Framing::UntilClose) {
            keep_alive = false;
        }
        Ok(Some(State::Body {
            status,
            headers,
            keep_alive,
            framing,
            body: BytesMut::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ResponseLimits {
        ResponseLimits {
            max_head: 1024,
            max_body: 64,
        }
    }

    /// Feeds `bytes` in one piece.
    fn read(bytes: &[u8]) -> Result<Option<ClientResponse>, ResponseError> {
        ResponseReader::new(limits()).feed(&mut BytesMut::from(bytes))
    }

    #[test]
    fn http_urls_parse_into_authority_host_header_and_target() {
        let url = HttpUrl::parse("http://Backend.local:9000/hub/invoke?x=1").unwrap();
        assert_eq!(
            (url.authority(), url.host_header(), url.target()),
            (
                "backend.local:9000".to_owned(),
                "backend.local:9000".to_owned(),
                "/hub/invoke?x=1"
            )
        );
        let url = HttpUrl::parse("http://127.0.0.1").unwrap();
        assert_eq!(
            (url.authority(), url.host_header(), url.target()),
            ("127.0.0.1:80".to_owned(), "127.0.0.1".to_owned(), "/")
        );
        let url = HttpUrl::parse("http://[::1]:81?q").unwrap();
        assert_eq!(
            (url.authority(), url.target()),
            ("[::1]:81".to_owned(), "/?q")
        );
        assert_eq!(url.to_string(), "http://[::1]:81/?q");
    }

    #[test]
    fn urls_other_than_plain_http_with_a_host_and_port_are_refused() {
        for (text, says) in [
            ("https://x/y", "https is not supported"),
            ("ftp://x", "expected an http:// URL"),
            ("http://", "needs a host"),
            ("http://:80/", "needs a host"),
            ("http://x:0/", "port must be"),
            ("http://x:70000/", "port must be"),
            ("http://x:+80/", "port must be"),
            ("http://u:p@x/", "user info"),
            ("http://x/a#b", "fragment"),
            ("http://x /", "white space"),
            ("http://[::1/", "unclosed"),
            ("http://[zz]/", "not an IPv6"),
            ("http://a$b/", "cannot have"),
        ] {
            let error = HttpUrl::parse(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn a_post_carries_host_content_type_and_length() {
        let url = HttpUrl::parse("http://h:8080/p").unwrap();
        let mut out = BytesMut::new();
        encode_post(&url, "application/json", b"{}", &mut out);
        assert_eq!(
            &out[..],
            b"POST /p HTTP/1.1\r\nHost: h:8080\r\nUser-Agent: ringhub\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn a_content_length_response_completes_at_its_length_and_keeps_the_connection() {
        let response = read(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n[1]\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (response.status, &response.body[..], response.keep_alive),
            (200, &b"[1]\n"[..], true)
        );
    }

    #[test]
    fn every_proper_prefix_of_a_response_is_incomplete_and_bytes_after_it_stay() {
        let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA";
        for cut in 0..whole.len() - 5 {
            let mut reader = ResponseReader::new(limits());
            let mut input = BytesMut::from(&whole[..cut]);
            assert_eq!(reader.feed(&mut input), Ok(None), "cut at {cut}");
            input.extend_from_slice(&whole[cut..]);
            let response = reader.feed(&mut input).unwrap().unwrap();
            assert_eq!(&response.body[..], b"ok");
            assert_eq!(&input[..], b"EXTRA");
        }
    }

    #[test]
    fn a_chunked_response_is_decoded_and_trailers_skipped() {
        let response = read(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\nT: v\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (response.status, &response.body[..], response.keep_alive),
            (201, &b"{\"a\":1}"[..], true)
        );
    }

    #[test]
    fn interim_responses_are_skipped_and_204_has_no_body() {
        let response = read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((response.status, response.body.len()), (204, 0));
    }

    #[test]
    fn a_body_until_close_completes_at_the_end_and_ends_the_connection() {
        let mut reader = ResponseReader::new(limits());
        let mut input = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\nhello"[..]);
        assert_eq!(reader.feed(&mut input), Ok(None));
        let response = reader.finish().unwrap();
        assert_eq!(
            (&response.body[..], response.keep_alive),
            (&b"hello"[..], false)
        );
    }

    #[test]
    fn connection_close_and_http_1_0_without_keep_alive_are_not_reused() {
        let close = read(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(!close.unwrap().unwrap().keep_alive);
        let old = read(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!old.unwrap().unwrap().keep_alive);
        let kept = read(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(kept.unwrap().unwrap().keep_alive);
    }

    #[test]
    fn bodies_and_heads_over_the_limits_are_refused_early() {
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n"),
            Err(ResponseError::BodyTooLarge)
        );
        assert_eq!(
            read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n"),
            Err(ResponseError::BodyTooLarge)
        );
        let mut reader = ResponseReader::new(limits());
        let mut input = BytesMut::from(&b"HTTP/1.1 200 OK\r\n\r\n"[..]);
        input.extend_from_slice(&[b'x'; 65]);
        assert_eq!(reader.feed(&mut input), Err(ResponseError::BodyTooLarge));
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        head.extend(std::iter::repeat_n(b'a', 1100));
        assert_eq!(read(&head), Err(ResponseError::HeadTooLarge));
    }

    #[test]
    fn malformed_responses_are_errors_not_panics() {
        for bytes in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            assert!(read(bytes).is_err(), "{:?}", String::from_utf8_lossy(bytes));
        }
        let mut reader = ResponseReader::new(limits());
        let mut input = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"[..]);
        assert_eq!(reader.feed(&mut input), Ok(None));
        assert_eq!(reader.finish(), Err(ResponseError::Truncated));
    }
}
