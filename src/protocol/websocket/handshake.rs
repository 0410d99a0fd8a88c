//! The opening handshake, server side (RFC 6455 §4.2,
//! <https://www.rfc-editor.org/rfc/rfc6455#section-4.2>).
//!
//! [`UpgradeRequest::from_head`] validates a parsed HTTP request as a WebSocket upgrade and keeps
//! what later layers need (`Origin` for auth, offered subprotocols); [`accept_key`] computes
//! `Sec-WebSocket-Accept`; [`switching_protocols`] builds the 101 response. Each failure is a
//! [`HandshakeError`] with exactly one HTTP status.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};
use thiserror::Error;

use crate::protocol::http::{Method, RequestHead, Response};

/// The GUID RFC 6455 appends to the client's key.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version this server speaks.
pub const WEBSOCKET_VERSION: &str = "13";

/// Why an upgrade request was refused. [`Self::status`] is the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    /// The method was not GET.
    #[error("WebSocket upgrade requires GET")]
    MethodNotGet,
    /// HTTP/1.0 cannot upgrade.
    #[error("WebSocket upgrade requires HTTP/1.1")]
    HttpVersionTooOld,
    /// No `Host` header.
    #[error("missing Host header")]
    MissingHost,
    /// `Upgrade` does not name `websocket`.
    #[error("missing or invalid Upgrade: websocket header")]
    MissingUpgrade,
    /// `Connection` does not contain the `upgrade` token.
    #[error("missing Connection: upgrade header")]
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Key` is absent, repeated, or not 16 bytes in base64.
    #[error("missing or invalid Sec-WebSocket-Key")]
    InvalidKey,
    /// `Sec-WebSocket-Version` is absent or not 13.
    #[error("unsupported Sec-WebSocket-Version (only 13 is supported)")]
    UnsupportedVersion,
}

impl HandshakeError {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Self::MethodNotGet => 405,
            Self::UnsupportedVersion => 426,
            _ => 400,
        }
    }

    /// The complete refusal response, with the headers the RFC asks for.
    pub fn response(&self) -> Response {
        let response = Response::text(self.status(), &self.to_string());
        match self {
            Self::UnsupportedVersion => {
                response.header("sec-websocket-version", WEBSOCKET_VERSION.to_owned())
            }
            Self::MethodNotGet => response.header("allow", "GET".to_owned()),
            _ => response,
        }
    }
}

/// A validated WebSocket upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// The client's `Sec-WebSocket-Key`, as sent.
    pub key: String,
    /// The `Origin` header, when a browser sent one (checked by auth later).
    pub origin: Option<String>,
    /// Subprotocols offered in `Sec-WebSocket-Protocol`, in the client's order.
    pub protocols: Vec<String>,
}

impl UpgradeRequest {
    /// Validates `head` as an upgrade request (RFC 6455 §4.2.1).
    ///
    /// # Errors
    /// The first rule the request breaks, as a [`HandshakeError`].
    pub fn from_head(head: &RequestHead) -> Result<Self, HandshakeError> {
        if head.method != Method::Get {
            return Err(HandshakeError::MethodNotGet);
        }
        if head.minor_version < 1 {
            return Err(HandshakeError::HttpVersionTooOld);
        }
        if head.header("host").is_none() {
            return Err(HandshakeError::MissingHost);
        }
        if !head.has_token("upgrade", "websocket") {
            return Err(HandshakeError::MissingUpgrade);
        }
        if !head.has_token("connection", "upgrade") {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        if head.header_count("sec-websocket-version") != 1
            || head.header_str("sec-websocket-version") != Some(WEBSOCKET_VERSION)
        {
            return Err(HandshakeError::UnsupportedVersion);
        }
        if head.header_count("sec-websocket-key") != 1 {
            return Err(HandshakeError::InvalidKey);
        }
        let key = head
            .header_str("sec-websocket-key")
            .ok_or(HandshakeError::InvalidKey)?;
        match STANDARD.decode(key) {
            Ok(raw) if raw.len() == 16 => {}
            _ => return Err(HandshakeError::InvalidKey),
        }
        let protocols = head
            .headers
            .iter()
            .filter(|h| h.name == "sec-websocket-protocol")
            .filter_map(|h| std::str::from_utf8(&h.value).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Self {
            key: key.to_owned(),
            origin: head.header_str("origin").map(str::to_owned),
            protocols,
        })
    }
}

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID);
    STANDARD.encode(sha.finalize())
}

/// The 101 response that completes the handshake.
pub fn switching_protocols(request: &UpgradeRequest, protocol: Option<&str>) -> Response {
    let response = Response::new(101)
        .header("upgrade", "websocket".to_owned())
        .header("connection", "Upgrade".to_owned())
        .header("sec-websocket-accept", accept_key(&request.key));
    match protocol {
        Some(p) => response.header("sec-websocket-protocol", p.to_owned()),
        None => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http::{HeadLimits, parse_head};

    fn head(text: &str) -> RequestHead {
        let (head, _) = parse_head(text.as_bytes(), &HeadLimits::default())
            .unwrap()
            .unwrap();
        head
    }

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn rfc_sample_key_gives_the_rfc_accept_value() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn valid_upgrade_keeps_origin_and_protocols() {
        let req = UpgradeRequest::from_head(&head(GOOD)).unwrap();
        assert_eq!(req.origin.as_deref(), Some("http://example.com"));
        assert_eq!(req.protocols, vec!["chat", "superchat"]);
        let resp = switching_protocols(&req, None);
        assert_eq!(resp.status, 101);
        assert!(
            resp.headers
                .iter()
                .any(|(n, v)| *n == "sec-websocket-accept" && v == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
    }

    #[test]
    fn header_names_and_tokens_are_case_insensitive() {
        let text = GOOD
            .replace("Upgrade: websocket", "UPGRADE: WebSocket")
            .replace("keep-alive, Upgrade", "UPGRADE");
        assert!(UpgradeRequest::from_head(&head(&text)).is_ok());
    }

    #[test]
    fn wrong_version_is_426_with_the_supported_version() {
        let err = UpgradeRequest::from_head(&head(&GOOD.replace("Version: 13", "Version: 8")))
            .unwrap_err();
        assert_eq!(err, HandshakeError::UnsupportedVersion);
        let resp = err.response();
        assert_eq!(resp.status, 426);
        assert!(
            resp.headers
                .iter()
                .any(|(n, v)| *n == "sec-websocket-version" && v == "13")
        );
    }

    #[test]
    fn missing_version_is_426() {
        let text = GOOD.replace("Sec-WebSocket-Version: 13\r\n", "");
        assert_eq!(
            UpgradeRequest::from_head(&head(&text))
                .unwrap_err()
                .status(),
            426
        );
    }

    #[test]
    fn bad_requests_are_400_or_405() {
        let cases = [
            (GOOD.replace("GET", "POST"), 405),
            (GOOD.replace("HTTP/1.1", "HTTP/1.0"), 400),
            (GOOD.replace("Host: server.example.com\r\n", ""), 400),
            (GOOD.replace("Upgrade: websocket\r\n", ""), 400),
            (GOOD.replace("Upgrade: websocket", "Upgrade: h2c"), 400),
            (GOOD.replace("keep-alive, Upgrade", "keep-alive"), 400),
            (GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="), 400),
            (GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "not base64!"), 400),
            (
                GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                400,
            ),
        ];
        for (text, status) in cases {
            let err = UpgradeRequest::from_head(&head(&text)).unwrap_err();
            assert_eq!(err.status(), status, "{err}");
        }
    }
}
