//! The REST publish API's requests, sans-IO: a method and path in, an [`Operation`] on a named
//! hub out; the query's `excluded` and `reason`; and a send's JSON body as a hub message.
//!
//! Paths follow the Azure SignalR data-plane API (`signalr-protocol.md` §9) under
//! `/api/hubs/{hub}`. Each path segment is split on `/` first and percent-decoded after
//! (strictly: a bad escape or non-UTF-8 result is an error, `+` stays `+`), so ids and group
//! names may hold any character, `/` included as `%2F`. The shape of a path decides 404, the
//! method 405, then the names are checked (1 to 1024 characters, 400).

use super::RestError;
use crate::hub::actions::{Target, event};
use crate::hub::streams::{EncodedItem, StreamEvent};
use crate::protocol::http::Method;
use crate::protocol::query;
use crate::protocol::signalr::json::decode_value;
use crate::protocol::signalr::{HubMessage, Payload, Value};

/// Where every REST path starts.
pub const PREFIX: &str = "/api/hubs/";

/// Longest group name, user id or connection id, in characters (Azure's group limit).
pub const MAX_NAME: usize = 1024;

/// What a REST request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `POST …/:send`, `…/users/{user}/:send`, `…/groups/{group}/:send`,
    /// `…/connections/{id}/:send`: send the body's message to these recipients.
    Send(Target),
    /// `PUT …/groups/{group}/connections/{id}`.
    AddToGroup {
        /// The group.
        group: String,
        /// The connection id.
        connection: String,
    },
    /// `DELETE …/groups/{group}/connections/{id}`.
    RemoveFromGroup {
        /// The group.
        group: String,
        /// The connection id.
        connection: String,
    },
    /// `PUT …/users/{user}/groups/{group}`.
    AddUserToGroup {
        /// The user.
        user: String,
        /// The group.
        group: String,
    },
    /// `DELETE …/users/{user}/groups/{group}`.
    RemoveUserFromGroup {
        /// The user.
        user: String,
        /// The group.
        group: String,
    },
    /// `DELETE …/connections/{id}`.
    CloseConnection(String),
    /// `HEAD …/connections/{id}`.
    ConnectionExists(String),
    /// `HEAD …/groups/{group}`.
    GroupExists(String),
    /// `HEAD …/users/{user}`.
    UserExists(String),
    /// `POST …/streams/{key}/:item`, `…/:complete`, `…/:error`: append to a stream key.
    Stream {
        /// The stream key.
        key: String,
        /// What the path posts; the body says the rest ([`parse_stream_body`]).
        post: StreamPost,
    },
}

/// What a stream path posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamPost {
    /// `:item`, body `{"item": <any JSON>}`.
    Item,
    /// `:complete`, body empty (or a JSON object, ignored).
    Complete,
    /// `:error`, body `{"error": "<text>"}`.
    Error,
}

/// A parsed REST request: the hub's name (as written, decoded) and the operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestRequest {
    /// The hub's name.
    pub hub: String,
    /// What to do on it.
    pub operation: Operation,
}

/// The query parameters the API reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `excluded` (repeatable): connection ids a send skips.
    pub excluded: Vec<String>,
    /// `reason`: the error text of the Close a `DELETE …/connections/{id}` sends.
    pub reason: Option<String>,
}

impl Options {
    /// Reads `excluded` and `reason` (names case-insensitive, values percent-decoded; empty
    /// values are ignored) from a query string.
    pub fn from_query(raw: Option<&str>) -> Self {
        let mut options = Self::default();
        for pair in raw.unwrap_or("").split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = query::decode(value);
            if value.is_empty() {
                continue;
            }
            let key = query::decode(key);
            if key.eq_ignore_ascii_case("excluded") {
                options.excluded.push(value.into_owned());
            } else if key.eq_ignore_ascii_case("reason") {
                options.reason = Some(value.into_owned());
            }
        }
        options
    }
}

/// The shape of a path, before the method is considered.
enum Resource {
    Send(Target),
    GroupConnection { group: String, connection: String },
    UserGroup { user: String, group: String },
    Connection(String),
    Group(String),
    User(String),
    Stream { key: String, post: StreamPost },
}

/// Parses a REST request's method and path (without the query).
///
/// # Errors
/// [`RestError::NotFound`] for a path that is not one of the API's;
/// [`RestError::BadEncoding`] for a bad percent-escape; [`RestError::MethodNotAllowed`] for a
/// method the path does not take; [`RestError::BadName`] for an empty or over-long name.
pub fn parse(method: &Method, path: &str) -> Result<RestRequest, RestError> {
    let rest = path.strip_prefix(PREFIX).ok_or(RestError::NotFound)?;
    let segments = rest
        .split('/')
        .map(decode_segment)
        .collect::<Result<Vec<_>, _>>()?;
    let Some((hub, tail)) = segments.split_first() else {
        return Err(RestError::NotFound);
    };
    if hub.is_empty() {
        return Err(RestError::NotFound);
    }
    let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
    let owned = |s: &str| s.to_owned();
    let resource = match tail.as_slice() {
        [":send"] => Resource::Send(Target::All),
        ["users", user, ":send"] => Resource::Send(Target::User(owned(user))),
        ["groups", group, ":send"] => Resource::Send(Target::Group(owned(group))),
        ["connections", id, ":send"] => Resource::Send(Target::Connection(owned(id))),
        ["groups", group, "connections", id] => Resource::GroupConnection {
            group: owned(group),
            connection: owned(id),
        },
        ["users", user, "groups", group] => Resource::UserGroup {
            user: owned(user),
            group: owned(group),
        },
        ["connections", id] => Resource::Connection(owned(id)),
        ["groups", group] => Resource::Group(owned(group)),
        ["users", user] => Resource::User(owned(user)),
        ["streams", key, post] => Resource::Stream {
            key: owned(key),
            post: match *post {
                ":item" => StreamPost::Item,
                ":complete" => StreamPost::Complete,
                ":error" => StreamPost::Error,
                _ => return Err(RestError::NotFound),
            },
        },
        _ => return Err(RestError::NotFound),
    };
    let not_allowed = |allow| Err(RestError::MethodNotAllowed { allow });
    let operation = match (resource, method) {
        (Resource::Send(target), Method::Post) => {
            match &target {
                Target::All => {}
                Target::User(user) => check("user id", user)?,
                Target::Group(group) => check("group name", group)?,
                Target::Connection(id) => check("connection id", id)?,
            }
            Operation::Send(target)
        }
        (Resource::Send(_), _) => return not_allowed("POST"),
        (Resource::GroupConnection { group, connection }, Method::Put | Method::Delete) => {
            check("group name", &group)?;
            check("connection id", &connection)?;
            if *method == Method::Put {
                Operation::AddToGroup { group, connection }
            } else {
                Operation::RemoveFromGroup { group, connection }
            }
        }
        (Resource::UserGroup { user, group }, Method::Put | Method::Delete) => {
            check("user id", &user)?;
            check("group name", &group)?;
            if *method == Method::Put {
                Operation::AddUserToGroup { user, group }
            } else {
                Operation::RemoveUserFromGroup { user, group }
            }
        }
        (Resource::GroupConnection { .. } | Resource::UserGroup { .. }, _) => {
            return not_allowed("PUT, DELETE");
        }
        (Resource::Connection(id), Method::Delete | Method::Head) => {
            check("connection id", &id)?;
            if *method == Method::Delete {
                Operation::CloseConnection(id)
            } else {
                Operation::ConnectionExists(id)
            }
        }
        (Resource::Connection(_), _) => return not_allowed("DELETE, HEAD"),
        (Resource::Group(group), Method::Head) => {
            check("group name", &group)?;
            Operation::GroupExists(group)
        }
        (Resource::User(user), Method::Head) => {
            check("user id", &user)?;
            Operation::UserExists(user)
        }
        (Resource::Group(_) | Resource::User(_), _) => return not_allowed("HEAD"),
        (Resource::Stream { key, post }, Method::Post) => {
            check("stream key", &key)?;
            Operation::Stream { key, post }
        }
        (Resource::Stream { .. }, _) => return not_allowed("POST"),
    };
    Ok(RestRequest {
        hub: hub.clone(),
        operation,
    })
}

/// The path of a send to `target` on `hub` (each name percent-encoded), e.g.
/// `/api/hubs/chat/groups/a%20b/:send`: what a client of the API requests.
pub fn send_path(hub: &str, target: &Target) -> String {
    let mut path = format!("{PREFIX}{}/", encode_segment(hub));
    match target {
        Target::All => {}
        Target::User(user) => path.push_str(&format!("users/{}/", encode_segment(user))),
        Target::Group(group) => path.push_str(&format!("groups/{}/", encode_segment(group))),
        Target::Connection(id) => {
            path.push_str(&format!("connections/{}/", encode_segment(id)));
        }
    }
    path.push_str(":send");
    path
}

/// Percent-encodes every byte of `text` but RFC 3986's unreserved characters, so it is safe
/// as a path segment or a query value.
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A name must be 1 to [`MAX_NAME`] characters.
fn check(what: &'static str, name: &str) -> Result<(), RestError> {
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(RestError::BadName { what });
    }
    Ok(())
}

/// Percent-decodes one path segment strictly (`+` is literal in a path).
fn decode_segment(segment: &str) -> Result<String, RestError> {
    if !segment.contains('%') {
        return Ok(segment.to_owned());
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        if byte == b'%' {
            let escaped = bytes
                .get(at + 1..at + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or(RestError::BadEncoding)?;
            out.push(escaped);
            at += 3;
        } else {
            out.push(byte);
            at += 1;
        }
    }
    String::from_utf8(out).map_err(|_| RestError::BadEncoding)
}

/// Reads a send's body, `{"target": "<method>", "arguments": [ … ]}`, into the event to send.
/// `arguments` may be absent or null (no arguments); other members are ignored. Arguments are
/// kept as decoded values, so each protocol encodes them once ([`Payload::from_value`]).
///
/// # Errors
/// [`RestError::InvalidJson`], [`RestError::NotAnObject`], [`RestError::BadTarget`] (missing,
/// not a string, or empty) and [`RestError::BadArguments`] (not an array).
pub fn parse_body(body: &[u8]) -> Result<HubMessage, RestError> {
    if body.trim_ascii().is_empty() {
        return Err(RestError::NotAnObject);
    }
    let value = decode_value(body).map_err(|error| RestError::InvalidJson(error.to_string()))?;
    let Value::Map(entries) = value else {
        return Err(RestError::NotAnObject);
    };
    let mut target = None;
    let mut arguments = Vec::new();
    for (key, value) in entries {
        match (key.as_str(), value) {
            (Some("target"), Value::Str(name)) if !name.is_empty() => target = Some(name),
            (Some("target"), _) => return Err(RestError::BadTarget),
            (Some("arguments"), Value::Array(items)) => {
                arguments = items.into_iter().map(Payload::from_value).collect();
            }
            (Some("arguments"), Value::Null) => {}
            (Some("arguments"), _) => return Err(RestError::BadArguments),
            _ => {}
        }
    }
    let target = target.ok_or(RestError::BadTarget)?;
    Ok(event(&target, arguments))
}

/// Reads a stream post's body: `:item` takes `{"item": <any JSON>}` (null included; other
/// members are ignored), `:error` takes `{"error": "<non-empty text>"}`, `:complete` an empty
/// body or any JSON object.
///
/// # Errors
/// [`RestError::InvalidJson`], or [`RestError::BadStreamBody`] naming the expected form.
pub fn parse_stream_body(post: StreamPost, body: &[u8]) -> Result<StreamEvent, RestError> {
    let expected = match post {
        StreamPost::Item => r#"{"item": <any JSON>}"#,
        StreamPost::Error => r#"{"error": "<text>"}"#,
        StreamPost::Complete => "empty or a JSON object",
    };
    let bad = || RestError::BadStreamBody { expected };
    if body.trim_ascii().is_empty() {
        return match post {
            StreamPost::Complete => Ok(StreamEvent::Complete),
            _ => Err(bad()),
        };
    }
    let value = decode_value(body).map_err(|error| RestError::InvalidJson(error.to_string()))?;
    let Value::Map(entries) = value else {
        return Err(bad());
    };
    let member = |name: &str| {
        entries
            .iter()
            .find(|(key, _)| key.as_str() == Some(name))
            .map(|(_, value)| value)
    };
    match post {
        StreamPost::Complete => Ok(StreamEvent::Complete),
        StreamPost::Item => member("item")
            .map(|item| StreamEvent::Item(EncodedItem::new(item)))
            .ok_or_else(bad),
        StreamPost::Error => match member("error") {
            Some(Value::Str(text)) if !text.is_empty() => Ok(StreamEvent::Error(text.clone())),
            _ => Err(bad()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::signalr::Invocation;

    fn op(method: Method, path: &str) -> Result<Operation, RestError> {
        parse(&method, path).map(|request| {
            assert_eq!(request.hub, "chat");
            request.operation
        })
    }

    #[test]
    fn every_send_route_names_its_recipients() {
        let cases = [
            ("/api/hubs/chat/:send", Target::All),
            ("/api/hubs/chat/users/42/:send", Target::User("42".into())),
            ("/api/hubs/chat/groups/g1/:send", Target::Group("g1".into())),
            (
                "/api/hubs/chat/connections/abc/:send",
                Target::Connection("abc".into()),
            ),
        ];
        for (path, target) in cases {
            assert_eq!(
                op(Method::Post, path),
                Ok(Operation::Send(target)),
                "{path}"
            );
        }
    }

    #[test]
    fn group_user_and_connection_routes_map_by_method() {
        let path = "/api/hubs/chat/groups/g/connections/c";
        let (group, connection) = (String::from("g"), String::from("c"));
        assert_eq!(
            op(Method::Put, path),
            Ok(Operation::AddToGroup {
                group: group.clone(),
                connection: connection.clone()
            })
        );
        assert_eq!(
            op(Method::Delete, path),
            Ok(Operation::RemoveFromGroup { group, connection })
        );
        let path = "/api/hubs/chat/users/7/groups/g";
        let (user, group) = (String::from("7"), String::from("g"));
        assert_eq!(
            op(Method::Put, path),
            Ok(Operation::AddUserToGroup {
                user: user.clone(),
                group: group.clone()
            })
        );
        assert_eq!(
            op(Method::Delete, path),
            Ok(Operation::RemoveUserFromGroup { user, group })
        );
        let c = || "c".to_owned();
        assert_eq!(
            op(Method::Delete, "/api/hubs/chat/connections/c"),
            Ok(Operation::CloseConnection(c()))
        );
        assert_eq!(
            op(Method::Head, "/api/hubs/chat/connections/c"),
            Ok(Operation::ConnectionExists(c()))
        );
        assert_eq!(
            op(Method::Head, "/api/hubs/chat/groups/g"),
            Ok(Operation::GroupExists("g".into()))
        );
        assert_eq!(
            op(Method::Head, "/api/hubs/chat/users/7"),
            Ok(Operation::UserExists("7".into()))
        );
    }

    #[test]
    fn segments_are_percent_decoded_after_splitting() {
        assert_eq!(
            op(
                Method::Post,
                "/api/hubs/chat/groups/a%2Fb%20c+d%C3%A9/:send"
            ),
            Ok(Operation::Send(Target::Group("a/b c+dé".into())))
        );
        assert_eq!(
            op(Method::Head, "/api/hubs/chat/users/u%3A1"),
            Ok(Operation::UserExists("u:1".into()))
        );
        assert_eq!(
            op(Method::Post, "/api/hubs/chat/%3Asend"),
            Ok(Operation::Send(Target::All))
        );
        let request = parse(&Method::Post, "/api/hubs/image%2Dgeneration/:send").unwrap();
        assert_eq!(request.hub, "image-generation");
    }

    #[test]
    fn send_paths_encode_names_and_parse_back() {
        let targets = [
            Target::All,
            Target::User("42".into()),
            Target::Group("a/b c+d%é:send".into()),
            Target::Connection("x_-.~y".into()),
        ];
        for target in targets {
            let path = send_path("my hub", &target);
            let request = parse(&Method::Post, &path).unwrap();
            assert_eq!(request.hub, "my hub", "{path}");
            assert_eq!(request.operation, Operation::Send(target), "{path}");
        }
        assert_eq!(
            send_path("chat", &Target::Group("a b".into())),
            "/api/hubs/chat/groups/a%20b/:send"
        );
    }

    #[test]
    fn stream_routes_post_items_ends_and_errors_to_a_decoded_key() {
        for (suffix, post) in [
            (":item", StreamPost::Item),
            (":complete", StreamPost::Complete),
            (":error", StreamPost::Error),
        ] {
            assert_eq!(
                op(
                    Method::Post,
                    &format!("/api/hubs/chat/streams/response-%2042/{suffix}")
                ),
                Ok(Operation::Stream {
                    key: "response- 42".into(),
                    post
                })
            );
        }
        assert_eq!(
            op(Method::Get, "/api/hubs/chat/streams/k/:item"),
            Err(RestError::MethodNotAllowed { allow: "POST" })
        );
        assert_eq!(
            op(Method::Post, "/api/hubs/chat/streams//:item"),
            Err(RestError::BadName { what: "stream key" })
        );
        for path in [
            "/api/hubs/chat/streams/k/:send",
            "/api/hubs/chat/streams/k",
            "/api/hubs/chat/streams/k/:item/x",
        ] {
            assert_eq!(op(Method::Post, path), Err(RestError::NotFound), "{path}");
        }
    }

    #[test]
    fn stream_bodies_are_an_item_an_error_text_or_nothing() {
        let body = |post, text: &str| parse_stream_body(post, text.as_bytes());
        assert_eq!(
            body(StreamPost::Item, r#"{"item":{"delta":"Hel"},"x":1}"#),
            Ok(StreamEvent::Item(EncodedItem::new(&Value::Map(vec![(
                Value::Str("delta".into()),
                Value::Str("Hel".into())
            )]))))
        );
        assert_eq!(
            body(StreamPost::Item, r#"{"item":null}"#),
            Ok(StreamEvent::Item(EncodedItem::new(&Value::Null)))
        );
        assert_eq!(
            body(StreamPost::Error, r#"{"error":"model overloaded"}"#),
            Ok(StreamEvent::Error("model overloaded".into()))
        );
        for text in ["", " ", "{}"] {
            assert_eq!(body(StreamPost::Complete, text), Ok(StreamEvent::Complete));
        }
        for (post, text) in [
            (StreamPost::Item, ""),
            (StreamPost::Item, "{}"),
            (StreamPost::Item, "[1]"),
            (StreamPost::Error, r#"{"error":""}"#),
            (StreamPost::Error, r#"{"error":7}"#),
            (StreamPost::Error, ""),
            (StreamPost::Complete, "[]"),
        ] {
            assert!(
                matches!(body(post, text), Err(RestError::BadStreamBody { .. })),
                "{post:?} {text}"
            );
        }
        assert!(matches!(
            body(StreamPost::Item, "{nope"),
            Err(RestError::InvalidJson(_))
        ));
    }

    #[test]
    fn bad_escapes_are_bad_requests() {
        for path in [
            "/api/hubs/chat/groups/%zz/:send",
            "/api/hubs/chat/groups/%4/:send",
            "/api/hubs/chat/groups/%FF/:send",
        ] {
            assert_eq!(
                op(Method::Post, path),
                Err(RestError::BadEncoding),
                "{path}"
            );
        }
    }

    #[test]
    fn paths_outside_the_api_are_not_found() {
        for path in [
            "/api/hubs",
            "/api/hubs/",
            "/api/hubs//:send",
            "/api/hubs/chat",
            "/api/hubs/chat/send",
            "/api/hubs/chat/:send/",
            "/api/hubs/chat/groups/g/:send/x",
            "/api/hubs/chat/groups",
            "/api/hubs/chat/things/x",
            "/api/other/chat/:send",
        ] {
            assert_eq!(
                parse(&Method::Post, path),
                Err(RestError::NotFound),
                "{path}"
            );
        }
    }

    #[test]
    fn a_wrong_method_names_the_allowed_ones() {
        let cases = [
            (Method::Get, "/api/hubs/chat/:send", "POST"),
            (
                Method::Post,
                "/api/hubs/chat/groups/g/connections/c",
                "PUT, DELETE",
            ),
            (
                Method::Get,
                "/api/hubs/chat/users/u/groups/g",
                "PUT, DELETE",
            ),
            (Method::Post, "/api/hubs/chat/connections/c", "DELETE, HEAD"),
            (Method::Get, "/api/hubs/chat/groups/g", "HEAD"),
            (Method::Delete, "/api/hubs/chat/users/u", "HEAD"),
        ];
        for (method, path, allow) in cases {
            assert_eq!(
                parse(&method, path),
                Err(RestError::MethodNotAllowed { allow }),
                "{path}"
            );
        }
    }

    #[test]
    fn names_must_be_one_to_1024_characters() {
        let long = "é".repeat(MAX_NAME);
        assert!(op(Method::Post, &format!("/api/hubs/chat/groups/{long}/:send")).is_ok());
        let too_long = "x".repeat(MAX_NAME + 1);
        assert_eq!(
            op(
                Method::Post,
                &format!("/api/hubs/chat/groups/{too_long}/:send")
            ),
            Err(RestError::BadName { what: "group name" })
        );
        assert_eq!(
            op(Method::Post, "/api/hubs/chat/groups//:send"),
            Err(RestError::BadName { what: "group name" })
        );
        assert_eq!(
            op(Method::Put, "/api/hubs/chat/groups/g/connections/"),
            Err(RestError::BadName {
                what: "connection id"
            })
        );
        assert_eq!(
            op(Method::Head, "/api/hubs/chat/users/"),
            Err(RestError::BadName { what: "user id" })
        );
    }

    #[test]
    fn query_options_collect_every_excluded_id_and_the_reason() {
        let options = Options::from_query(Some(
            "api-version=2022-06-01&excluded=a&Excluded=b%2Bc&excluded=&reason=bye+now",
        ));
        assert_eq!(options.excluded, vec!["a".to_owned(), "b+c".to_owned()]);
        assert_eq!(options.reason.as_deref(), Some("bye now"));
        assert_eq!(Options::from_query(None), Options::default());
    }

    fn sent(body: &str) -> Result<Invocation, RestError> {
        parse_body(body.as_bytes()).map(|message| match message {
            HubMessage::Invocation(invocation) => invocation,
            other => panic!("not an invocation: {other:?}"),
        })
    }

    #[test]
    fn a_body_becomes_an_event_with_decoded_arguments() {
        let invocation =
            sent(r#"{"target":"Notify","arguments":["hi",{"n":1},[true,null]],"extra":1}"#)
                .unwrap();
        assert_eq!(invocation.target, "Notify");
        assert_eq!(invocation.invocation_id, None);
        assert_eq!(
            invocation.arguments,
            vec![
                Payload::from_value(Value::Str("hi".into())),
                Payload::from_value(Value::Map(vec![(Value::Str("n".into()), Value::Int(1))])),
                Payload::from_value(Value::Array(vec![Value::Bool(true), Value::Null])),
            ]
        );
        assert!(sent(r#"{"target":"T"}"#).unwrap().arguments.is_empty());
        assert!(
            sent(r#"{"arguments":null,"target":"T"}"#)
                .unwrap()
                .arguments
                .is_empty()
        );
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        assert!(matches!(sent("{nope"), Err(RestError::InvalidJson(_))));
        for body in ["", "  ", "[]", "\"x\"", "1"] {
            assert_eq!(sent(body), Err(RestError::NotAnObject), "{body}");
        }
        for body in [
            r#"{"arguments":[]}"#,
            r#"{"target":"","arguments":[]}"#,
            r#"{"target":1,"arguments":[]}"#,
            r#"{"target":null}"#,
        ] {
            assert_eq!(sent(body), Err(RestError::BadTarget), "{body}");
        }
        for body in [
            r#"{"target":"T","arguments":"x"}"#,
            r#"{"target":"T","arguments":{"a":1}}"#,
        ] {
            assert_eq!(sent(body), Err(RestError::BadArguments), "{body}");
        }
    }
}
