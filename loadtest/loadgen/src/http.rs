//! The bits of HTTP/1.1 a WebSocket client needs: the target URL, the negotiate request, and
//! reading a response head (plus a `Content-Length` body) out of bytes already received.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

use serde::Deserialize;

/// Where the load goes: `http://host:port[/base]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The resolved address.
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
    /// A path prefix without a trailing slash (usually empty).
    pub base: String,
}

/// A URL the load generator cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad --url: {}", self.0)
    }
}

impl std::error::Error for UrlError {}

impl Target {
    /// Parses `http://host:port[/base]` (plain HTTP only; `ws://` is accepted as a synonym).
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("ws://"))
            .ok_or_else(|| UrlError(format!("{url}: only http:// URLs are supported")))?;
        let (authority, base) = match rest.find('/') {
            Some(at) => (&rest[..at], rest[at..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let with_port = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| UrlError(format!("{url}: {e}")))?
            .next()
            .ok_or_else(|| UrlError(format!("{url}: no address")))?;
        Ok(Self {
            addr,
            host: authority.to_owned(),
            base: base.to_owned(),
        })
    }

    /// The full path for `path` (which starts with `/`).
    pub fn path(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

/// `POST {hub}/negotiate?negotiateVersion=1` with an empty body, keeping the connection open
/// so the WebSocket upgrade can reuse it.
pub fn negotiate_request(host: &str, hub_path: &str) -> Vec<u8> {
    format!(
        "POST {hub_path}/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: {host}\r\n\
         Content-Length: 0\r\nX-Requested-With: XMLHttpRequest\r\n\
         User-Agent: ringhub-loadgen\r\n\r\n"
    )
    .into_bytes()
}

/// The fields of a negotiate answer the client uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Negotiated {
    /// The token to put in `?id=` (version ≥ 1).
    pub connection_token: Option<String>,
    /// The public id (version 0 uses it as the token).
    pub connection_id: Option<String>,
    /// A refusal.
    pub error: Option<String>,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// Bytes of the head, including the blank line.
    pub head_len: usize,
    /// The `Content-Length`, if any.
    pub content_length: Option<usize>,
    /// The `Sec-WebSocket-Accept` value, if any.
    pub accept: Option<String>,
}

/// A response the client cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadError(pub String);

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad HTTP response: {}", self.0)
    }
}

impl std::error::Error for HeadError {}

/// Reads a response head from `input`; `Ok(None)` if it is not complete yet.
pub fn parse_response(input: &[u8]) -> Result<Option<ResponseHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(input) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(head_len)) => {
            let mut content_length = None;
            let mut accept = None;
            for header in response.headers.iter() {
                if header.name.eq_ignore_ascii_case("content-length") {
                    content_length = std::str::from_utf8(header.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok());
                } else if header.name.eq_ignore_ascii_case("sec-websocket-accept") {
                    accept = Some(String::from_utf8_lossy(header.value).trim().to_owned());
                }
            }
            Ok(Some(ResponseHead {
                status: response.code.unwrap_or(0),
                head_len,
                content_length,
                accept,
            }))
        }
        Err(error) => Err(HeadError(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_gives_address_host_and_base_path() {
        let t = Target::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.path("/hubs/x"), "/hubs/x");
        let t = Target::parse("http://127.0.0.1:9/app/").unwrap();
        assert_eq!(t.path("/hubs/x"), "/app/hubs/x");
        assert!(Target::parse("https://127.0.0.1:1").is_err());
    }

    #[test]
    fn a_response_head_is_read_once_complete() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(&full[..20]), Ok(None));
        let head = parse_response(full).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.content_length, Some(2));
        assert_eq!(&full[head.head_len..], b"{}");
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }
}
