//! The REST publish API under `/api/hubs/{hub}`: backends send to clients (everyone, a user, a
//! group, a connection), manage group membership, close connections and check that
//! connections, groups and users exist. The conventions are the Azure SignalR data-plane API's
//! (`signalr-protocol.md` §9); `{hub}` is a served hub's name (`[hubs.NAME]`), matched exactly
//! or else ignoring case.
//!
//! Only server keys may call it: `Authorization: Bearer <key>` whose SHA-256 is in
//! `auth.server_key_hashes` (compared in constant time). With no server key configured, every
//! call is 401. A valid virtual or admin key is 403: a tenant's key must never publish into
//! another tenant's groups.
//!
//! Answers: 202 (empty body) for a send; 200 or 404 for the connection operations and the
//! existence checks (`HEAD`); 200 for adding a user to a group and 204 for removing one. Every
//! error is one [`RestError`] with one status and a JSON body `{"error": "<text>"}`, as the
//! rest of the server answers.
//!
//! Streamed responses (`POST …/streams/{key}/:item`, `:complete`, `:error`, 202) feed the
//! clients streaming that key ([`crate::hub::streams`]); a hub without a `stream-key` method
//! answers 404.
//!
//! A send's message is encoded once per protocol ([`PreparedMessage`](crate::hub::broadcast::PreparedMessage)) and handed to
//! [`publish_in_order`], which routes it through the hub's owner shard to every shard, in the order posted; the other operations
//! run on every shard through [`manage`].

pub mod request;

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use thiserror::Error;

use crate::auth::hash_key;
use crate::hub::access::unix_now;
use crate::hub::endpoint::{Manage, Managed, manage, prepare, publish_in_order};
use crate::hub::session::GroupLimit;
use crate::hub::streams::{self, StreamChunk};
use crate::hub::{Action, HubDefinition, Hubs};
use crate::protocol::http::{RequestHead, Response};
use crate::protocol::signalr::negotiate::error_document;
use crate::shard::ShardContext;
use request::{Operation, Options};

/// Why a REST request failed; each variant is answered with one status ([`Self::status`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RestError {
    /// No server key is configured (401).
    #[error("the REST API is disabled until auth.server_key_hashes is set")]
    Disabled,
    /// No `Authorization: Bearer` key (401).
    #[error("a server key is required: Authorization: Bearer <key>")]
    MissingKey,
    /// The key is not a server key, nor any other valid key (401).
    #[error("the server key is not valid")]
    WrongKey,
    /// A valid virtual or admin key: only server keys may use the API (403).
    #[error("only server keys may use the REST API")]
    NotAServerKey,
    /// The path is not one of the API's (404).
    #[error("no such REST API resource")]
    NotFound,
    /// No hub has this name (404).
    #[error("no hub is named '{0}'")]
    UnknownHub(String),
    /// No connection has this id on the hub (404).
    #[error("no such connection")]
    NoConnection,
    /// The group has no member (404).
    #[error("no such group")]
    NoGroup,
    /// The user has no connection (404).
    #[error("no such user")]
    NoUser,
    /// The path does not take this method (405, with `Allow`).
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The methods it takes.
        allow: &'static str,
    },
    /// A path segment has a bad percent-escape or is not UTF-8 once decoded (400).
    #[error("the path has an invalid percent-encoding")]
    BadEncoding,
    /// A name is empty or longer than 1024 characters (400).
    #[error("a {what} must be 1 to 1024 characters")]
    BadName {
        /// What the name is.
        what: &'static str,
    },
    /// The body is not JSON (400).
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body is not a JSON object (400).
    #[error("the body must be a JSON object: {{\"target\": \"<method>\", \"arguments\": [...]}}")]
    NotAnObject,
    /// `target` is missing, not a string, or empty (400).
    #[error("'target' must be a non-empty string")]
    BadTarget,
    /// `arguments` is not an array (400).
    #[error("'arguments' must be an array")]
    BadArguments,
    /// A stream post's body is not the expected form (400).
    #[error("the body must be {expected}")]
    BadStreamBody {
        /// The form the path takes.
        expected: &'static str,
    },
    /// The hub has no stream-key method, so nothing could stream a posted chunk (404).
    #[error("hub '{0}' has no stream-key method")]
    NoStreams(String),
    /// The body is larger than the hub's largest message (413).
    #[error("the body is larger than the hub's maximum message size ({max} bytes)")]
    TooLarge {
        /// The hub's maximum message size.
        max: usize,
    },
    /// The message could not be encoded for every protocol (500).
    #[error("the message could not be encoded")]
    Encode,
    /// The connection is in `signalr.max_groups_per_connection` groups already (409).
    #[error("{0}")]
    GroupLimit(GroupLimit),
}

impl RestError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Disabled | Self::MissingKey | Self::WrongKey => 401,
            Self::NotAServerKey => 403,
            Self::NotFound
            | Self::UnknownHub(_)
            | Self::NoConnection
            | Self::NoGroup
            | Self::NoUser
            | Self::NoStreams(_) => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::BadEncoding
            | Self::BadName { .. }
            | Self::InvalidJson(_)
            | Self::NotAnObject
            | Self::BadTarget
            | Self::BadArguments
            | Self::BadStreamBody { .. } => 400,
            Self::GroupLimit(_) => 409,
            Self::TooLarge { .. } => 413,
            Self::Encode => 500,
        }
    }

    /// The response: the status and `{"error": "<text>"}`, plus `Allow` for a 405 and
    /// `WWW-Authenticate` for a 401.
    pub fn response(&self) -> Response {
        let response = Response::json(self.status(), error_document(&self.to_string()));
        match self {
            Self::MethodNotAllowed { allow } => response.header("allow", *allow),
            Self::Disabled | Self::MissingKey | Self::WrongKey => {
                response.header("www-authenticate", "Bearer")
            }
            _ => response,
        }
    }
}

/// The served hubs by name, for `/api/hubs/{hub}`: exact names first, then ignoring case.
/// Swapped with the hub table on reload.
#[derive(Debug, Default)]
pub struct HubNames {
    names: std::cell::RefCell<Names>,
}

#[derive(Debug, Default)]
struct Names {
    exact: HashMap<String, Rc<HubDefinition>>,
    folded: HashMap<String, Rc<HubDefinition>>,
}

impl HubNames {
    /// Indexes `definitions` by name, sharing the shard's hub table entries.
    pub fn new(definitions: &[HubDefinition], hubs: &Hubs) -> Self {
        let names = Self::default();
        names.replace(definitions, hubs);
        names
    }

    /// Indexes `definitions` from now on (a reload; `hubs` already holds them).
    pub fn replace(&self, definitions: &[HubDefinition], hubs: &Hubs) {
        let mut names = Names::default();
        for definition in definitions {
            let hub = hubs
                .at(&definition.path)
                .unwrap_or_else(|| Rc::new(definition.clone()));
            names
                .folded
                .entry(definition.name.to_lowercase())
                .or_insert_with(|| Rc::clone(&hub));
            names.exact.insert(definition.name.clone(), hub);
        }
        *self.names.borrow_mut() = names;
    }

    /// The hub named `name` exactly, or else ignoring case.
    pub fn get(&self, name: &str) -> Option<Rc<HubDefinition>> {
        let names = self.names.borrow();
        names
            .exact
            .get(name)
            .or_else(|| names.folded.get(&name.to_lowercase()))
            .cloned()
    }
}

/// Answers a request under `/api/hubs/`.
pub async fn respond(head: &RequestHead, body: Bytes, ctx: &ShardContext) -> Response {
    match handle(head, &body, ctx).await {
        Ok(status) => Response::new(status),
        Err(error) => error.response(),
    }
}

async fn handle(head: &RequestHead, body: &[u8], ctx: &ShardContext) -> Result<u16, RestError> {
    authorize(head, ctx).await?;
    let request = request::parse(&head.method, head.path())?;
    let hub = ctx
        .hub_names
        .get(&request.hub)
        .ok_or_else(|| RestError::UnknownHub(request.hub.clone()))?;
    let options = Options::from_query(head.query());
    let name = hub.name.as_str();
    let found = |managed: Managed, missing: RestError| match managed {
        Managed::Done => Ok(200),
        Managed::NotFound => Err(missing),
        Managed::GroupLimit(limit) => Err(RestError::GroupLimit(limit)),
    };
    let max = hub.session.max_message_size;
    match request.operation {
        Operation::Send(target) => {
            if body.len() > max {
                return Err(RestError::TooLarge { max });
            }
            let message = request::parse_body(body)?;
            // Encoded once, tagged for conflation (progress events).
            let prepared = prepare(ctx, &target, &message).map_err(|_| RestError::Encode)?;
            publish_in_order(ctx, name, target, options.excluded, prepared);
            Ok(202)
        }
        Operation::Stream { key, post } => {
            if !hub.uses(Action::StreamKey) {
                return Err(RestError::NoStreams(hub.name.clone()));
            }
            if body.len() > max {
                return Err(RestError::TooLarge { max });
            }
            let event = request::parse_stream_body(post, body)?;
            let hub = name.to_owned();
            streams::publish_in_order(ctx, StreamChunk { hub, key, event });
            Ok(202)
        }
        Operation::AddToGroup { group, connection } => found(
            manage(ctx, name, Manage::AddToGroup { connection, group }).await,
            RestError::NoConnection,
        ),
        Operation::RemoveFromGroup { group, connection } => found(
            manage(ctx, name, Manage::RemoveFromGroup { connection, group }).await,
            RestError::NoConnection,
        ),
        Operation::AddUserToGroup { user, group } => {
            manage(ctx, name, Manage::AddUserToGroup { user, group }).await;
            Ok(200)
        }
        Operation::RemoveUserFromGroup { user, group } => {
            manage(ctx, name, Manage::RemoveUserFromGroup { user, group }).await;
            Ok(204)
        }
        Operation::CloseConnection(connection) => {
            let reason = options.reason;
            found(
                manage(ctx, name, Manage::Close { connection, reason }).await,
                RestError::NoConnection,
            )
        }
        Operation::ConnectionExists(id) => found(
            manage(ctx, name, Manage::ConnectionExists(id)).await,
            RestError::NoConnection,
        ),
        Operation::GroupExists(group) => found(
            manage(ctx, name, Manage::GroupExists(group)).await,
            RestError::NoGroup,
        ),
        Operation::UserExists(user) => found(
            manage(ctx, name, Manage::UserExists(user)).await,
            RestError::NoUser,
        ),
    }
}

/// Admits server keys only.
async fn authorize(head: &RequestHead, ctx: &ShardContext) -> Result<(), RestError> {
    let auth = &ctx.config.auth;
    if auth.server_key_hashes.is_empty() {
        return Err(RestError::Disabled);
    }
    let key = bearer(head).ok_or(RestError::MissingKey)?;
    if is_server_key(key, &auth.server_key_hashes) {
        return Ok(());
    }
    match ctx
        .keys
        .authenticate(key, &auth.admin_key_hashes, unix_now())
        .await
    {
        Ok(_) => Err(RestError::NotAServerKey),
        Err(_) => Err(RestError::WrongKey),
    }
}

/// The key of an `Authorization: Bearer <key>` header (scheme case-insensitive, key trimmed).
fn bearer(head: &RequestHead) -> Option<&str> {
    let value = head.header_str("authorization")?;
    let (scheme, key) = value.split_once([' ', '\t'])?;
    let key = key.trim_ascii();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// Whether `key`'s SHA-256 is one of `hashes` (lowercase hex, as config stores them). Every
/// hash is compared, each in constant time.
pub fn is_server_key(key: &str, hashes: &[String]) -> bool {
    let hash = hash_key(key);
    hashes.iter().fold(false, |found, candidate| {
        found | constant_time_eq(candidate.as_bytes(), hash.as_bytes())
    })
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_keys_match_by_their_sha256_only() {
        let hashes = vec![hash_key("other"), hash_key("backend-key")];
        assert!(is_server_key("backend-key", &hashes));
        assert!(!is_server_key("backend-key ", &hashes));
        assert!(!is_server_key(&hash_key("backend-key"), &hashes));
        assert!(!is_server_key("backend-key", &[]));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn each_error_maps_to_one_status_and_a_json_body() {
        let cases = [
            (RestError::Disabled, 401),
            (RestError::WrongKey, 401),
            (RestError::NotAServerKey, 403),
            (RestError::UnknownHub("x".into()), 404),
            (RestError::MethodNotAllowed { allow: "POST" }, 405),
            (RestError::BadTarget, 400),
            (RestError::TooLarge { max: 10 }, 413),
        ];
        for (error, status) in cases {
            assert_eq!(error.status(), status, "{error}");
        }
        let mut out = bytes::BytesMut::new();
        RestError::MethodNotAllowed { allow: "POST" }
            .response()
            .encode(false, &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("allow: POST\r\n"), "{text}");
        assert!(
            text.ends_with("{\"error\":\"method not allowed\"}"),
            "{text}"
        );
    }

    #[test]
    fn hubs_are_found_by_exact_name_then_ignoring_case() {
        let mut upper = HubDefinition::new("Chat", "/hubs/upper", &[]);
        upper.session.max_message_size = 1;
        let definitions = vec![HubDefinition::new("chat", "/hubs/chat", &[]), upper];
        let names = HubNames::new(&definitions, &Hubs::new(&definitions));
        assert_eq!(
            names.get("chat").map(|h| h.path.clone()).as_deref(),
            Some("/hubs/chat")
        );
        assert_eq!(
            names.get("Chat").map(|h| h.path.clone()).as_deref(),
            Some("/hubs/upper")
        );
        assert_eq!(
            names.get("CHAT").map(|h| h.path.clone()).as_deref(),
            Some("/hubs/chat")
        );
        assert!(names.get("nope").is_none());
    }
}
