//! The SignalR handshake: the client's first message, `{"protocol":…,"version":…}` + 0x1E
//! (always JSON, even for messagepack), and the server's answer, `{}` + 0x1E or
//! `{"error":…}` + 0x1E. Specs: HubProtocol.md "Overview"; `shared/reference/signalr-protocol.md`
//! §2 (fields, versions, error texts), §4.1 (test vectors) and §6 (an oversized handshake is
//! "canceled"). Parse errors follow .NET's `HandshakeProtocolTests.cs` texts.

use bytes::BytesMut;
use simd_json::{Node, StaticNode};
use thiserror::Error;

use super::json;
use super::{HubProtocol, RECORD_SEPARATOR, Value};

/// The server's answer to an accepted handshake: `{}` + 0x1E.
pub const SUCCESS_RESPONSE: &[u8] = b"{}\x1e";

/// A client's handshake request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// The hub protocol name, e.g. `"json"` or `"messagepack"`.
    pub protocol: String,
    /// The protocol version (1, or 2 when stateful reconnect was negotiated).
    pub version: i64,
}

/// The result of parsing the front of the first bytes a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeParse {
    /// A request, and how many bytes it used (0x1E included); hub messages may follow.
    Request(HandshakeRequest, usize),
    /// No 0x1E yet.
    NeedMore,
}

/// Why a handshake failed. [`HandshakeError::response_text`] gives the `error` the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    /// No complete handshake within the receive limit.
    #[error("Handshake was canceled.")]
    TooLarge,
    /// Not valid JSON, not an object, or a missing or mistyped property (the detail).
    #[error("{0}")]
    Malformed(String),
    /// A protocol the server does not know or has not enabled.
    #[error("The protocol '{0}' is not supported.")]
    UnsupportedProtocol(String),
    /// A version above the protocol's highest.
    #[error("The server does not support version {version} of the '{protocol}' protocol.")]
    UnsupportedVersion {
        /// The protocol name.
        protocol: String,
        /// The requested version.
        version: i64,
    },
    /// The handshake timed out or the connection went away.
    #[error("Handshake was canceled.")]
    Canceled,
}

impl HandshakeError {
    /// Each variant's metric label, by [`Self::reason_index`] (`canceled` includes the
    /// handshake timeout).
    pub const REASONS: [&'static str; 5] = [
        "too_large",
        "malformed",
        "unsupported_protocol",
        "unsupported_version",
        "canceled",
    ];

    /// The index of this error's label in [`Self::REASONS`].
    pub fn reason_index(&self) -> usize {
        match self {
            Self::TooLarge => 0,
            Self::Malformed(_) => 1,
            Self::UnsupportedProtocol(_) => 2,
            Self::UnsupportedVersion { .. } => 3,
            Self::Canceled => 4,
        }
    }

    /// The `error` text of the handshake response, as ASP.NET sends it: a malformed request
    /// gets a generic text, followed by ` InvalidDataException: {detail}` when `detailed`
    /// (`EnableDetailedErrors`); the other errors their [`Display`](std::fmt::Display) text.
    pub fn response_text(&self, detailed: bool) -> String {
        const GENERIC: &str = "An unexpected error occurred during connection handshake.";
        match self {
            Self::Malformed(detail) if detailed => {
                format!("{GENERIC} InvalidDataException: {detail}")
            }
            Self::Malformed(_) => GENERIC.to_owned(),
            other => other.to_string(),
        }
    }
}

/// Parses the handshake request at the front of `input`.
///
/// The request is the first JSON value of the record before the first 0x1E; anything after
/// that value and before the 0x1E is ignored, as .NET's reader stops at the end of the object.
/// `protocol` (string) and `version` (integer) are required; other properties are ignored and
/// a repeated property's last value wins.
///
/// # Errors
/// [`HandshakeError::TooLarge`] when no 0x1E lies within the first `max_size` bytes and
/// `input` already holds that many; [`HandshakeError::Malformed`] for a bad request.
pub fn parse_request(input: &[u8], max_size: usize) -> Result<HandshakeParse, HandshakeError> {
    let window = input.get(..max_size).unwrap_or(input);
    let Some(end) = window.iter().position(|&b| b == RECORD_SEPARATOR) else {
        return if input.len() >= max_size {
            Err(HandshakeError::TooLarge)
        } else {
            Ok(HandshakeParse::NeedMore)
        };
    };
    let record = window.get(..end).unwrap_or_default();
    let request = request_from(record)?;
    Ok(HandshakeParse::Request(request, end + 1))
}

/// Picks the enabled protocol `request` names (exact, case-sensitive) and checks its version.
///
/// # Errors
/// [`HandshakeError::UnsupportedProtocol`] or [`HandshakeError::UnsupportedVersion`].
pub fn select_protocol(
    request: &HandshakeRequest,
    enabled: &[HubProtocol],
) -> Result<HubProtocol, HandshakeError> {
    let protocol = HubProtocol::from_name(&request.protocol)
        .filter(|p| enabled.contains(p))
        .ok_or_else(|| HandshakeError::UnsupportedProtocol(request.protocol.clone()))?;
    if request.version > i64::from(protocol.max_version()) {
        return Err(HandshakeError::UnsupportedVersion {
            protocol: request.protocol.clone(),
            version: request.version,
        });
    }
    Ok(protocol)
}

/// Appends the error response `{"error":"<text>"}` + 0x1E, the text escaped as JSON.
pub fn encode_error_response(text: &str, out: &mut BytesMut) {
    out.extend_from_slice(b"{\"error\":");
    json::encode_value(&Value::Str(text.to_owned()), out);
    out.extend_from_slice(b"}\x1e");
}

/// The first top-level JSON value of `record` when it is an object or array (found with a
/// string-aware bracket count); otherwise the whole record, for the parser to judge.
fn first_value(record: &[u8]) -> &[u8] {
    let start = record.iter().position(|b| !b" \t\r\n".contains(b));
    if !matches!(start.and_then(|i| record.get(i)), Some(b'{' | b'[')) {
        return record;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in record.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return record.get(..=i).unwrap_or(record);
                }
            }
            _ => {}
        }
    }
    record
}

/// The JSON token name .NET's reader reports for the value at the front of a tape.
fn token_name(node: Option<&Node<'_>>) -> &'static str {
    match node {
        Some(Node::Array { .. }) => "Array",
        Some(Node::Object { .. }) => "Object",
        Some(Node::String(_)) => "String",
        Some(Node::Static(StaticNode::Null)) => "Null",
        Some(Node::Static(StaticNode::Bool(true))) => "True",
        Some(Node::Static(StaticNode::Bool(false))) => "False",
        Some(Node::Static(_)) => "Number",
        None => "None",
    }
}

fn request_from(record: &[u8]) -> Result<HandshakeRequest, HandshakeError> {
    let malformed = HandshakeError::Malformed;
    let mut scratch = first_value(record).to_vec();
    let tape = json::parse_tape(&mut scratch)
        .map_err(|e| malformed(format!("Error reading JSON: {e}.")))?;
    let members = json::members(&tape.0).ok_or_else(|| {
        malformed(format!(
            "Unexpected JSON Token Type '{}'. Expected a JSON Object.",
            token_name(tape.0.first())
        ))
    })?;
    let (mut protocol, mut version) = (None, None);
    for member in members {
        let (key, value) = member.map_err(|e| malformed(e.to_string()))?;
        match (key, value.first()) {
            ("protocol", Some(Node::String(name))) => protocol = Some(*name),
            ("protocol", _) => {
                return Err(malformed(
                    "Expected 'protocol' to be of type String.".into(),
                ));
            }
            ("version", number) => {
                let number = match number {
                    Some(Node::Static(StaticNode::I64(v))) => Some(*v),
                    Some(Node::Static(StaticNode::U64(v))) => i64::try_from(*v).ok(),
                    _ => None,
                };
                let wrong = || malformed("Expected 'version' to be of type Number.".into());
                version = Some(number.ok_or_else(wrong)?);
            }
            _ => {}
        }
    }
    let missing = |property: &str| {
        let content = String::from_utf8_lossy(record);
        malformed(format!(
            "Missing required property '{property}'. Message content: {content}"
        ))
    };
    let protocol = protocol.ok_or_else(|| missing("protocol"))?;
    let version = version.ok_or_else(|| missing("version"))?;
    Ok(HandshakeRequest {
        protocol: protocol.to_owned(),
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Result<HandshakeParse, HandshakeError> {
        parse_request(input.as_bytes(), 32 * 1024)
    }

    fn request(protocol: &str, version: i64) -> HandshakeRequest {
        HandshakeRequest {
            protocol: protocol.to_owned(),
            version,
        }
    }

    fn malformed(input: &str) -> String {
        match parse(input) {
            Err(HandshakeError::Malformed(detail)) => detail,
            other => panic!("{input}: {other:?}"),
        }
    }

    #[test]
    fn the_reference_requests_parse() {
        let json = b"{\"protocol\":\"json\",\"version\":1}\x1e";
        assert_eq!(
            parse_request(json, 1024),
            Ok(HandshakeParse::Request(request("json", 1), 32))
        );
        let msgpack = "{\"protocol\":\"messagepack\",\"version\":2}\x1e";
        assert_eq!(
            parse(msgpack),
            Ok(HandshakeParse::Request(request("messagepack", 2), 39))
        );
        assert_eq!(SUCCESS_RESPONSE, [0x7b, 0x7d, 0x1e]);
    }

    #[test]
    fn dotnet_valid_requests_parse_with_unknown_and_repeated_fields() {
        for (input, protocol, version) in [
            ("{\"protocol\":\"dummy\",\"version\":1}\x1e", "dummy", 1),
            ("{\"protocol\":\"\",\"version\":10}\x1e", "", 10),
            (
                "{\"protocol\":\"\",\"version\":10,\"unknown\":null}\x1e",
                "",
                10,
            ),
            (
                "{\"version\":1,\"protocol\":\"x\",\"version\":2}\x1e",
                "x",
                2,
            ),
        ] {
            let Ok(HandshakeParse::Request(parsed, used)) = parse(input) else {
                panic!("{input}")
            };
            assert_eq!((parsed, used), (request(protocol, version), input.len()));
        }
    }

    #[test]
    fn only_the_first_object_of_the_record_counts() {
        let input =
            "{\"protocol\":\"dummy\",\"version\":1}{\"protocol\":\"wrong\",\"version\":99}\x1e";
        assert_eq!(
            parse(input),
            Ok(HandshakeParse::Request(request("dummy", 1), input.len()))
        );
        let braces_in_strings =
            "{\"protocol\":\"a}\\\"{\",\"version\":1} trailing\x1e{\"type\":6}\x1e";
        assert_eq!(
            parse(braces_in_strings),
            Ok(HandshakeParse::Request(
                request("a}\"{", 1),
                braces_in_strings.len() - 11
            ))
        );
    }

    #[test]
    fn invalid_requests_fail_with_the_dotnet_texts() {
        for (input, detail) in [
            (
                "42\x1e",
                "Unexpected JSON Token Type 'Number'. Expected a JSON Object.",
            ),
            (
                "\"42\"\x1e",
                "Unexpected JSON Token Type 'String'. Expected a JSON Object.",
            ),
            (
                "null\x1e",
                "Unexpected JSON Token Type 'Null'. Expected a JSON Object.",
            ),
            (
                "[]\x1e",
                "Unexpected JSON Token Type 'Array'. Expected a JSON Object.",
            ),
            (
                "{}\x1e",
                "Missing required property 'protocol'. Message content: {}",
            ),
            (
                "{\"protocol\":\"json\"}\x1e",
                "Missing required property 'version'. Message content: {\"protocol\":\"json\"}",
            ),
            (
                "{\"version\":1}\x1e",
                "Missing required property 'protocol'. Message content: {\"version\":1}",
            ),
            (
                "{\"version\":\"123\"}\x1e",
                "Expected 'version' to be of type Number.",
            ),
            (
                "{\"protocol\":\"json\",\"version\":1.5}\x1e",
                "Expected 'version' to be of type Number.",
            ),
            (
                "{\"protocol\":null,\"version\":123}\x1e",
                "Expected 'protocol' to be of type String.",
            ),
        ] {
            assert_eq!(malformed(input), detail, "{input}");
        }
        assert!(malformed("{\"protocol\":\x1e").starts_with("Error reading JSON: "));
    }

    #[test]
    fn an_incomplete_request_needs_more_until_the_limit() {
        assert_eq!(
            parse("{\"protocol\":\"json\""),
            Ok(HandshakeParse::NeedMore)
        );
        assert_eq!(
            parse_request(b"{\"protocol\"", 11),
            Err(HandshakeError::TooLarge)
        );
        assert_eq!(
            parse_request(b"{\"protocol\":\"json\",\"version\":1}\x1e", 31),
            Err(HandshakeError::TooLarge)
        );
        assert!(parse_request(b"{\"protocol\":\"json\",\"version\":1}\x1e", 32).is_ok());
    }

    #[test]
    fn protocol_selection_matches_enabled_names_exactly_and_caps_the_version() {
        let both = HubProtocol::ALL;
        assert_eq!(
            select_protocol(&request("json", 1), &both),
            Ok(HubProtocol::Json)
        );
        assert_eq!(
            select_protocol(&request("messagepack", 2), &both),
            Ok(HubProtocol::MessagePack)
        );
        assert_eq!(
            select_protocol(&request("json", 0), &both),
            Ok(HubProtocol::Json)
        );
        let texts = [
            (
                request("foo", 1),
                &both[..],
                "The protocol 'foo' is not supported.",
            ),
            (
                request("JSON", 1),
                &both[..],
                "The protocol 'JSON' is not supported.",
            ),
            (
                request("messagepack", 1),
                &[HubProtocol::Json][..],
                "The protocol 'messagepack' is not supported.",
            ),
            (
                request("json", 3),
                &both[..],
                "The server does not support version 3 of the 'json' protocol.",
            ),
        ];
        for (request, enabled, text) in texts {
            let error = select_protocol(&request, enabled).unwrap_err();
            assert_eq!(error.to_string(), text);
            assert_eq!(error.response_text(true), text);
        }
    }

    #[test]
    fn response_texts_hide_parse_details_unless_detailed() {
        let error = HandshakeError::Malformed(
            "Missing required property 'version'. Message content: {}".into(),
        );
        assert_eq!(
            error.response_text(false),
            "An unexpected error occurred during connection handshake."
        );
        assert_eq!(
            error.response_text(true),
            "An unexpected error occurred during connection handshake. InvalidDataException: \
             Missing required property 'version'. Message content: {}"
        );
        assert_eq!(
            HandshakeError::TooLarge.response_text(true),
            "Handshake was canceled."
        );
        assert_eq!(
            HandshakeError::Canceled.response_text(false),
            "Handshake was canceled."
        );
    }

    #[test]
    fn error_responses_are_escaped_json_records() {
        let mut out = BytesMut::new();
        encode_error_response("The protocol 'foo' is not supported.", &mut out);
        assert_eq!(
            &out[..],
            b"{\"error\":\"The protocol 'foo' is not supported.\"}\x1e"
        );
        out.clear();
        encode_error_response("a \"b\"\n", &mut out);
        assert_eq!(&out[..], b"{\"error\":\"a \\\"b\\\"\\n\"}\x1e");
    }
}
