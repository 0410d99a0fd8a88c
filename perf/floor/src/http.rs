//! The HTTP/1.1 request head before a WebSocket upgrade (RFC 6455 §4.2): the route and the
//! `Sec-WebSocket-Accept` answer, and nothing else.

use base64::Engine as _;
use sha1::{Digest as _, Sha1};

/// A request head larger than this is refused.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

/// What a connection does once upgraded, chosen by the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/ws/broadcast`: receives every message any publisher sends.
    Broadcast,
    /// `/ws/publish`: each message it sends goes to every `/ws/broadcast` connection.
    Publish,
    /// `/ws/echo`: each message it sends comes back to it.
    Echo,
    /// `/ws/group/A[,B…]`: a member of groups A, B, …; each message it sends goes to every
    /// member of A, itself included.
    Group,
    /// `/ws/idle`: its messages are read and dropped; with `--idle` the server sends it a
    /// keepalive every interval (S1).
    Idle,
}

/// What the bytes read so far on a new connection amount to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Head {
    /// The head is not complete yet.
    Incomplete,
    /// A WebSocket upgrade: answer with `response`; the head took `len` bytes.
    Upgrade {
        /// The route asked for.
        route: Route,
        /// The groups named by a `/ws/group/…` path (empty for the other routes).
        groups: Vec<String>,
        /// The full `101` response.
        response: String,
        /// Bytes of the request head, including the blank line.
        len: usize,
    },
    /// Anything else: answer with this response and close.
    Refuse(&'static str),
}

const NOT_FOUND: &str = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const BAD_REQUEST: &str =
    "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const READY: &str = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Paths under this prefix name the groups a connection joins.
const GROUP_PREFIX: &str = "/ws/group/";

/// Reads the request head at the start of `buf`.
pub(crate) fn parse(buf: &[u8]) -> Head {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_HEAD {
            Head::Refuse(BAD_REQUEST)
        } else {
            Head::Incomplete
        };
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Head::Refuse(BAD_REQUEST);
    };
    let mut lines = head.split("\r\n");
    let mut request = lines.next().unwrap_or_default().split(' ');
    let (Some("GET"), Some(target)) = (request.next(), request.next()) else {
        return Head::Refuse(BAD_REQUEST);
    };
    let path = target.split('?').next().unwrap_or_default();
    let mut groups = Vec::new();
    let route = match path {
        _ if path.len() > GROUP_PREFIX.len() && path.starts_with(GROUP_PREFIX) => {
            groups = path[GROUP_PREFIX.len()..]
                .split(',')
                .map(str::to_owned)
                .collect();
            Route::Group
        }
        "/ws/broadcast" => Route::Broadcast,
        "/ws/publish" => Route::Publish,
        "/ws/echo" => Route::Echo,
        "/ws/idle" => Route::Idle,
        "/health/ready" => return Head::Refuse(READY),
        _ => return Head::Refuse(NOT_FOUND),
    };
    let key = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim())
    });
    let Some(key) = key else {
        return Head::Refuse(BAD_REQUEST);
    };
    Head::Upgrade {
        route,
        groups,
        response: format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept(key)
        ),
        len: end + 4,
    }
}

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
fn accept(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str) -> Vec<u8> {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn the_accept_value_matches_the_rfc_example() {
        assert_eq!(
            accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn each_route_is_chosen_by_its_path_ignoring_the_query() {
        for (path, want) in [
            ("/ws/broadcast", Route::Broadcast),
            ("/ws/publish?x=1", Route::Publish),
            ("/ws/echo", Route::Echo),
        ] {
            let mut buf = request(path);
            let len = buf.len();
            buf.extend_from_slice(b"\x81\x80");
            let Head::Upgrade {
                route,
                response,
                len: used,
                ..
            } = parse(&buf)
            else {
                panic!("expected an upgrade for {path}");
            };
            assert_eq!(route, want);
            assert_eq!(used, len, "the bytes after the head are left for framing");
            assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        }
    }

    #[test]
    fn a_group_path_names_the_groups_joined_in_order() {
        let Head::Upgrade { route, groups, .. } = parse(&request("/ws/group/g1,k20,k21?x=1"))
        else {
            panic!("expected an upgrade");
        };
        assert_eq!(route, Route::Group);
        assert_eq!(groups, ["g1", "k20", "k21"]);
        assert_eq!(parse(&request("/ws/group/")), Head::Refuse(NOT_FOUND));
    }

    #[test]
    fn a_head_without_its_blank_line_is_incomplete() {
        let buf = request("/ws/echo");
        assert_eq!(parse(&buf[..buf.len() - 2]), Head::Incomplete);
    }

    #[test]
    fn an_unknown_path_is_not_found_and_health_is_ready() {
        assert_eq!(parse(&request("/nope")), Head::Refuse(NOT_FOUND));
        assert_eq!(parse(&request("/health/ready")), Head::Refuse(READY));
    }

    #[test]
    fn an_upgrade_without_a_key_or_an_oversized_head_is_a_bad_request() {
        let buf = b"GET /ws/echo HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(parse(buf), Head::Refuse(BAD_REQUEST));
        assert_eq!(parse(&vec![b'a'; MAX_HEAD]), Head::Refuse(BAD_REQUEST));
    }
}
