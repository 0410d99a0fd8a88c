//! The built-in actions hub methods are bound to: argument binding with ASP.NET's error texts,
//! and what each action answers.

use std::sync::Arc;

use thiserror::Error;

use super::session::{GroupLimit, GroupRoom};
use super::{Action, Method, Param};
use crate::protocol::http_client::HttpUrl;
use crate::protocol::signalr::{
    Completion, CompletionOutcome, HubMessage, Invocation, Payload, Value,
};

/// Why arguments could not be bound to a method (ASP.NET: an `InvalidDataException`, whose text
/// is only shown with detailed errors).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BindError {
    /// Wrong number of (non-stream) arguments.
    #[error("Invocation provides {given} argument(s) but target expects {expected}.")]
    Arity {
        /// Arguments sent.
        given: usize,
        /// Arguments the method takes.
        expected: usize,
    },
    /// Wrong number of client-to-server streams.
    #[error("Client sent {given} stream(s), Hub method expects {expected}.")]
    Streams {
        /// Streams sent.
        given: usize,
        /// Streams the method takes.
        expected: usize,
    },
    /// An argument of the wrong type.
    #[error(
        "Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked."
    )]
    Type,
}

/// A server-to-client stream in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamSource {
    /// Yields `next..end`.
    CountTo {
        /// The next item.
        next: i64,
        /// One past the last item.
        end: i64,
    },
    /// Yields nothing until cancelled.
    NeverEnding,
    /// Yields what backends post to this stream key; the shard delivers it
    /// ([`super::streams`]).
    Keyed {
        /// The stream key.
        key: String,
    },
}

impl StreamSource {
    /// The next item, or `None` when the stream has ended (or yields nothing for now).
    pub fn next_item(&mut self) -> Option<Payload> {
        match self {
            Self::CountTo { next, end } if *next < *end => {
                let item = Payload::from_value(Value::Int(*next));
                *next += 1;
                Some(item)
            }
            _ => None,
        }
    }

    /// Whether the stream has no more items ever.
    pub fn is_finished(&self) -> bool {
        matches!(self, Self::CountTo { next, end } if next >= end)
    }

    /// The event sent to the caller when the client cancels the stream, if any.
    pub fn on_cancel(&self) -> Option<HubMessage> {
        match self {
            Self::NeverEnding => Some(event("StreamCanceled", Vec::new())),
            Self::CountTo { .. } | Self::Keyed { .. } => None,
        }
    }
}

/// What an invoked action produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The method finished.
    Complete(CompletionOutcome),
    /// The method streams its results.
    Stream(StreamSource),
    /// The method consumes this upload stream and completes when it ends.
    AwaitUpload {
        /// The client-to-server stream id.
        stream_id: String,
    },
    /// The method completes with what the shard answers to this question (see
    /// [`Effect::Query`]).
    Query(Query),
    /// The method is answered by a backend (see [`Effect::Upstream`]).
    Upstream {
        /// Where the invocation is POSTed.
        url: Arc<HttpUrl>,
        /// The invocation's arguments.
        arguments: Vec<Payload>,
    },
    /// The method invokes a client method on the caller and completes with the client's result.
    AskCaller {
        /// The client method.
        target: String,
        /// Its arguments.
        arguments: Vec<Payload>,
    },
}

/// A question only the shard can answer (its state, not the session's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// The caller's key's latest state on this hub (or null).
    KeyState,
    /// The health snapshot.
    Health,
    /// Nothing to look up: the method completes (void) once the groups it joined are
    /// subscribed on the Redis backplane, so a send right after it returns reaches the caller.
    Subscribed,
}

/// Who a published message is for, on the caller's hub.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every connection of the hub.
    All,
    /// The members of a group.
    Group(String),
    /// Every connection of a user (a virtual key id in decimal).
    User(String),
    /// One connection, by its public connection id.
    Connection(String),
}

/// Something an action asks the shard to do beyond answering the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Add the caller to a group.
    JoinGroup(String),
    /// Remove the caller from a group.
    LeaveGroup(String),
    /// Store `state` as the caller's key's state on this hub, and announce it to every
    /// connection of the key with event `event`.
    SetKeyState {
        /// The event announcing it (e.g. `NavigationUpdated`).
        event: String,
        /// The state as the client sent it.
        state: Payload,
    },
    /// Answer a method's invocation (`None`: sent without id, nothing to answer) with the
    /// shard's answer to `query`.
    Query {
        /// The invocation to complete.
        invocation_id: Option<String>,
        /// The question.
        query: Query,
    },
    /// Subscribe the caller's stream invocation to a stream key.
    SubscribeStream {
        /// The stream key.
        key: String,
        /// The StreamInvocation's id (the items carry it).
        invocation_id: String,
    },
    /// POST an invocation to a backend and complete it with the answer, later
    /// ([`crate::upstream::invoke`]).
    Upstream(UpstreamCall),
    /// Send the client's answer to a client result another server asked for (through the
    /// Redis backplane) back to that server.
    ReturnResult {
        /// The backplane channel the asking server listens on.
        return_channel: String,
        /// The client's Completion.
        completion: Completion,
    },
    /// Send a message to other connections (the caller included when it is a recipient).
    Publish {
        /// The recipients.
        target: Target,
        /// The message (an invocation without id).
        message: HubMessage,
    },
}

/// An invocation to hand to a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamCall {
    /// The invocation to complete (`None`: sent without id, nothing to answer).
    pub invocation_id: Option<String>,
    /// The hub method, as declared.
    pub method: String,
    /// Where it is POSTed.
    pub url: Arc<HttpUrl>,
    /// Its arguments.
    pub arguments: Vec<Payload>,
}

/// What an action can see of its caller.
#[derive(Debug)]
pub struct Caller<'a> {
    /// The caller's public connection id.
    pub connection_id: &'a str,
    /// Headers of the HTTP request that opened the connection (lowercased names).
    pub request_headers: &'a [(String, String)],
    /// Messages to send to the caller (events), queued before the Completion.
    pub outgoing: &'a mut Vec<HubMessage>,
    /// Work for the shard (groups, publishing), applied after the invocation.
    pub effects: &'a mut Vec<Effect>,
    /// The caller's virtual key id, when it connected with one.
    pub key_id: Option<i64>,
    /// Whether the caller is an admin principal (an admin key, or a virtual key marked admin).
    pub admin: bool,
    /// The caller's groups, against `signalr.max_groups_per_connection`.
    pub groups: GroupRoom<'a>,
}

/// A method's joins refused by the group limit: the Completion error, counted.
fn group_limit(method_name: &str, limit: GroupLimit) -> Outcome {
    crate::stats::local(|s| s.refused(crate::stats::RefusalReason::GroupsPerConnection));
    hub_exception(method_name, &limit.to_string())
}

/// A server-to-client invocation without an id (an event), e.g. `Message("hi")`.
pub fn event(target: &str, arguments: Vec<Payload>) -> HubMessage {
    HubMessage::Invocation(Invocation {
        headers: Default::default(),
        invocation_id: None,
        target: target.to_owned(),
        arguments,
        stream_ids: Vec::new(),
    })
}

/// The HubException Completion ASP.NET sends when a hub method throws one.
fn hub_exception(method_name: &str, message: &str) -> Outcome {
    Outcome::Complete(CompletionOutcome::Error(format!(
        "An unexpected error occurred invoking '{method_name}' on the server. HubException: {message}"
    )))
}

/// Fails unless the invocation carries as many arguments and streams as `params` binds.
fn check_arity(params: &[Param], invocation: &Invocation) -> Result<(), BindError> {
    let expected = params.iter().filter(|p| **p != Param::Upload).count();
    let expected_streams = params.len() - expected;
    if invocation.arguments.len() != expected {
        return Err(BindError::Arity {
            given: invocation.arguments.len(),
            expected,
        });
    }
    check_streams(expected_streams, invocation)
}

/// Fails unless the invocation carries `expected` client-to-server streams.
fn check_streams(expected: usize, invocation: &Invocation) -> Result<(), BindError> {
    if invocation.stream_ids.len() != expected {
        return Err(BindError::Streams {
            given: invocation.stream_ids.len(),
            expected,
        });
    }
    Ok(())
}

/// Runs a configured method: the admin check, the `allowed` check, the action, then the
/// `reply` event (queued before the Completion, as an `await Clients.Caller.SendAsync` inside
/// the hub method would be).
///
/// # Errors
/// [`BindError`] when the arguments do not fit.
pub fn invoke_method(
    method: &Method,
    mut invocation: Invocation,
    caller: &mut Caller<'_>,
) -> Result<Outcome, BindError> {
    let template = method.group_template.as_deref();
    // ASP.NET binds arguments before the hub method runs its own checks. An upstream method
    // takes any arguments (the backend binds them), but no streams.
    if method.action == Action::Upstream {
        check_streams(0, &invocation)?;
    } else {
        check_arity(super::method_params(method.action, template), &invocation)?;
    }
    if method.admin && !caller.admin {
        return Ok(hub_exception(
            &method.name,
            "Unauthorized: Admin privileges required",
        ));
    }
    let reply_arguments = method.reply.as_ref().map(|_| invocation.arguments.clone());
    if !method.allowed.is_empty()
        && let Some(first) = invocation.arguments.first_mut()
    {
        let value = first.to_value().map_err(|_| BindError::Type)?;
        match canonical_choice(value, &method.allowed)? {
            Ok(value) => *first = Payload::from_value(value),
            Err(given) => {
                let message = format!(
                    "Invalid {} argument '{given}'. Valid values: {}.",
                    method.name,
                    method.allowed.join(", ")
                );
                return Ok(hub_exception(&method.name, &message));
            }
        }
    }
    if let (Action::Upstream, Some(url)) = (method.action, &method.upstream) {
        return Ok(Outcome::Upstream {
            url: Arc::clone(url),
            arguments: invocation.arguments,
        });
    }
    let outcome = invoke(method.action, &method.name, template, invocation, caller)?;
    if let (Some(reply), Some(arguments)) = (&method.reply, reply_arguments)
        && matches!(
            outcome,
            Outcome::Complete(CompletionOutcome::Void | CompletionOutcome::Result(_))
        )
    {
        caller.outgoing.push(event(reply, arguments));
    }
    Ok(outcome)
}

/// `value` with each string replaced by its spelling in `allowed` (matched ignoring case);
/// `Ok(Err(text))` names a value that is not allowed. Integers match their decimal text and
/// arrays are checked element by element.
fn canonical_choice(value: Value, allowed: &[String]) -> Result<Result<Value, String>, BindError> {
    let find = |text: &str| {
        allowed
            .iter()
            .find(|a| a.to_lowercase() == text.to_lowercase())
    };
    Ok(match value {
        Value::Str(text) => match find(&text) {
            Some(choice) => Ok(Value::Str(choice.clone())),
            None => Err(text),
        },
        Value::Int(_) | Value::UInt(_) => {
            let text = scalar_text(&value).unwrap_or_default();
            if find(&text).is_some() {
                Ok(value)
            } else {
                Err(text)
            }
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if matches!(item, Value::Array(_)) {
                    return Err(BindError::Type);
                }
                match canonical_choice(item, allowed)? {
                    Ok(item) => out.push(item),
                    Err(given) => return Ok(Err(given)),
                }
            }
            Ok(Value::Array(out))
        }
        _ => return Err(BindError::Type),
    })
}

/// The text a string or integer argument contributes to a group name.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Str(text) => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        Value::UInt(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A transform applied to `{0}` in a group template: `{0|lower}`, `{0|url}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// Lowercased (Conduit's `metrics-{type.ToLower()}`).
    Lower,
    /// An absolute URL as Conduit's webhook groups name it: `{host with . → -}-{path with / → -}`,
    /// e.g. `https://api.example.com/hook` → `api-example-com--hook`.
    Url,
}

impl Transform {
    /// Every transform, with the name templates use for it.
    pub const NAMES: [(&'static str, Self); 2] = [("lower", Self::Lower), ("url", Self::Url)];

    /// Applies the transform; `None` when the text does not fit (not an absolute URL).
    fn apply(self, text: &str) -> Option<String> {
        match self {
            Self::Lower => Some(text.to_lowercase()),
            Self::Url => url_slug(text),
        }
    }
}

/// One piece of a parsed group template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Literal text.
    Text(&'a str),
    /// `{0}` (the first argument), possibly transformed.
    Arg(Option<Transform>),
    /// `{vkey}`: the caller's virtual key id.
    VKey,
}

/// Parses a group template. The error names the offending placeholder.
///
/// # Errors
/// An unclosed `{`, a placeholder other than `{0}`/`{vkey}` (e.g. `{1}`: group actions bind
/// one argument), or an unknown transform.
pub fn parse_template(template: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("unclosed '{{' in \"{template}\""));
        };
        let inner = &rest[open + 1..open + close];
        let (name, transform) = match inner.split_once('|') {
            Some((name, transform)) => (name, Some(transform)),
            None => (inner, None),
        };
        let transform = match transform {
            None => None,
            Some(t) => match Transform::NAMES.iter().find(|(n, _)| *n == t) {
                Some((_, transform)) => Some(*transform),
                None => {
                    let known = Transform::NAMES.map(|(n, _)| n).join(", ");
                    return Err(format!(
                        "unknown transform '{t}' in {{{inner}}} (known: {known})"
                    ));
                }
            },
        };
        pieces.push(match (name, transform) {
            ("0", transform) => Piece::Arg(transform),
            ("vkey", None) => Piece::VKey,
            ("vkey", Some(_)) => return Err("transforms apply to {0} only, not {vkey}".into()),
            (n, _) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(format!(
                    "placeholder {{{n}}} cannot be filled: group actions bind one argument, {{0}}"
                ));
            }
            (n, _) => {
                return Err(format!(
                    "unknown placeholder {{{n}}} (known: {{0}}, {{vkey}})"
                ));
            }
        });
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// Why a group name could not be made for this call.
#[derive(Debug)]
enum GroupFailure {
    /// The argument has the wrong type.
    Bind,
    /// A HubException for the caller, with this message.
    Hub(String),
}

/// The group names a group action acts on: one per element when the argument is an array
/// (Conduit's `SubscribeToWebhooks(string[])`), else one. Strings and integers fill `{0}`.
fn group_names(
    template: Option<&str>,
    argument: Option<Payload>,
    key_id: Option<i64>,
) -> Result<Vec<String>, GroupFailure> {
    let values: Vec<Option<String>> = match argument {
        None => vec![None],
        Some(payload) => match payload.to_value().map_err(|_| GroupFailure::Bind)? {
            Value::Array(items) => items
                .iter()
                .map(|item| scalar_text(item).map(Some).ok_or(GroupFailure::Bind))
                .collect::<Result<_, _>>()?,
            value => vec![Some(scalar_text(&value).ok_or(GroupFailure::Bind)?)],
        },
    };
    let pieces = match template {
        Some(template) => parse_template(template).map_err(GroupFailure::Hub)?,
        None => vec![Piece::Arg(None)],
    };
    values
        .iter()
        .map(|value| {
            let mut name = String::new();
            for piece in &pieces {
                match (piece, value) {
                    (Piece::Text(text), _) => name.push_str(text),
                    (Piece::Arg(None), Some(value)) => name.push_str(value),
                    (Piece::Arg(Some(transform)), Some(value)) => {
                        let Some(text) = transform.apply(value) else {
                            return Err(GroupFailure::Hub(format!(
                                "'{value}' is not an absolute URL."
                            )));
                        };
                        name.push_str(&text);
                    }
                    (Piece::Arg(_), None) => return Err(GroupFailure::Bind),
                    (Piece::VKey, _) => match key_id {
                        Some(id) => name.push_str(&id.to_string()),
                        None => {
                            return Err(GroupFailure::Hub(
                                "This method needs a virtual key.".into(),
                            ));
                        }
                    },
                }
            }
            Ok(name)
        })
        .collect()
}

/// Conduit's webhook group suffix for an absolute URL (.NET `Uri.Host` and `AbsolutePath`):
/// the lowercased host with `.` → `-`, a `-`, then the path (`/` when empty) with `/` → `-`.
/// Query, fragment, user info and port are dropped. `None` for text that is not an absolute
/// URL with a host.
fn url_slug(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let mut chars = scheme.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        &host_port[..=host_port.find(']')?]
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    let path = &after[..after.find(['?', '#']).unwrap_or(after.len())];
    let path = if path.is_empty() { "/" } else { path };
    Some(format!(
        "{}-{}",
        host.to_ascii_lowercase().replace('.', "-"),
        path.replace('/', "-")
    ))
}

/// Checks the arguments against the action's parameters and runs it.
///
/// # Errors
/// [`BindError`] when the arguments do not fit.
pub fn invoke(
    action: Action,
    method_name: &str,
    group_template: Option<&str>,
    invocation: Invocation,
    caller: &mut Caller<'_>,
) -> Result<Outcome, BindError> {
    check_arity(super::method_params(action, group_template), &invocation)?;
    let mut args = invocation.arguments.into_iter();
    Ok(match action {
        Action::Echo => {
            let value = args.next().ok_or(BindError::Type)?;
            Outcome::Complete(CompletionOutcome::Result(value))
        }
        Action::CallerConnectionId => Outcome::Complete(CompletionOutcome::Result(
            Payload::string(caller.connection_id),
        )),
        Action::SendMessageToCaller => {
            let text = string_arg(&mut args)?;
            caller
                .outgoing
                .push(event("Message", vec![Payload::string(text)]));
            Outcome::Complete(CompletionOutcome::Void)
        }
        Action::CountTo => {
            let count = args
                .next()
                .and_then(|p| p.to_value().ok())
                .and_then(|v| v.as_i64())
                .ok_or(BindError::Type)?;
            Outcome::Stream(StreamSource::CountTo {
                next: 0,
                end: count.max(0),
            })
        }
        Action::NeverEnding => Outcome::Stream(StreamSource::NeverEnding),
        Action::Throw => hub_exception(method_name, &string_arg(&mut args)?),
        Action::ConcatUpload => Outcome::AwaitUpload {
            stream_id: invocation
                .stream_ids
                .into_iter()
                .next()
                .ok_or(BindError::Streams {
                    given: 0,
                    expected: 1,
                })?,
        },
        Action::JoinGroup | Action::LeaveGroup => {
            let groups = match group_names(group_template, args.next(), caller.key_id) {
                Ok(groups) => groups,
                Err(GroupFailure::Bind) => return Err(BindError::Type),
                Err(GroupFailure::Hub(message)) => return Ok(hub_exception(method_name, &message)),
            };
            let join = action == Action::JoinGroup;
            if join && let Err(limit) = caller.groups.admits(&groups) {
                return Ok(group_limit(method_name, limit));
            }
            caller.effects.extend(groups.into_iter().map(|group| {
                if join {
                    Effect::JoinGroup(group)
                } else {
                    Effect::LeaveGroup(group)
                }
            }));
            Outcome::Complete(CompletionOutcome::Void)
        }
        Action::ReplyEvent => Outcome::Complete(CompletionOutcome::Void),
        Action::StreamKey => {
            let key = match group_names(group_template, args.next(), caller.key_id) {
                Ok(mut keys) if keys.len() == 1 => keys.pop().ok_or(BindError::Type)?,
                // An array names several keys; a stream has one.
                Ok(_) | Err(GroupFailure::Bind) => return Err(BindError::Type),
                Err(GroupFailure::Hub(message)) => return Ok(hub_exception(method_name, &message)),
            };
            caller.effects.push(Effect::SubscribeStream {
                key: key.clone(),
                invocation_id: invocation.invocation_id.unwrap_or_default(),
            });
            Outcome::Stream(StreamSource::Keyed { key })
        }
        Action::SendToGroup => {
            let name = Payload::string(string_arg(&mut args)?);
            let group = match group_names(group_template, Some(name), caller.key_id) {
                Ok(mut groups) => groups.pop().ok_or(BindError::Type)?,
                Err(GroupFailure::Bind) => return Err(BindError::Type),
                Err(GroupFailure::Hub(message)) => return Ok(hub_exception(method_name, &message)),
            };
            let message = args.next().ok_or(BindError::Type)?;
            caller.effects.push(Effect::Publish {
                target: Target::Group(group),
                message: event("Send", vec![message]),
            });
            Outcome::Complete(CompletionOutcome::Void)
        }
        Action::SubscribeContent => {
            let task = string_arg(&mut args)?;
            let kind = string_arg(&mut args)?;
            if kind != "image" && kind != "video" {
                return Ok(Outcome::Complete(CompletionOutcome::Error(format!(
                    "An unexpected error occurred invoking '{method_name}' on the server. \
                     HubException: Invalid content type '{kind}'. Expected 'image' or 'video'."
                ))));
            }
            let groups = [format!("{kind}-{task}"), format!("content-{task}")];
            if let Err(limit) = caller.groups.admits(&groups) {
                return Ok(group_limit(method_name, limit));
            }
            caller
                .effects
                .extend(groups.into_iter().map(Effect::JoinGroup));
            Outcome::Complete(CompletionOutcome::Void)
        }
        Action::JoinKeyGroup => {
            let template = Some(group_template.unwrap_or("vkey-{vkey}"));
            match group_names(template, None, caller.key_id) {
                Ok(groups) => {
                    if let Err(limit) = caller.groups.admits(&groups) {
                        return Ok(group_limit(method_name, limit));
                    }
                    caller
                        .effects
                        .extend(groups.into_iter().map(Effect::JoinGroup));
                }
                Err(GroupFailure::Bind) => return Err(BindError::Type),
                Err(GroupFailure::Hub(message)) => return Ok(hub_exception(method_name, &message)),
            }
            Outcome::Complete(CompletionOutcome::Void)
        }
        Action::SetKeyState => {
            let state = args.next().ok_or(BindError::Type)?;
            if caller.key_id.is_none() {
                return Ok(needs_virtual_key(method_name));
            }
            caller.effects.push(Effect::SetKeyState {
                event: group_template.unwrap_or("StateUpdated").to_owned(),
                state,
            });
            Outcome::Complete(CompletionOutcome::Void)
        }
        Action::GetKeyState => {
            if caller.key_id.is_none() {
                return Ok(needs_virtual_key(method_name));
            }
            Outcome::Query(Query::KeyState)
        }
        Action::Health => Outcome::Query(Query::Health),
        // Bound with its URL in `invoke_method`; an action alone has no backend.
        Action::Upstream => hub_exception(method_name, "This method has no upstream URL."),
        Action::SendToAll => {
            let message = args.next().ok_or(BindError::Type)?;
            caller.effects.push(Effect::Publish {
                target: Target::All,
                message: event("Send", vec![message]),
            });
            Outcome::Complete(CompletionOutcome::Void)
        }
        Action::InvokeCaller => {
            let target = string_arg(&mut args)?;
            Outcome::AskCaller {
                target,
                arguments: args.collect(),
            }
        }
        Action::RequestHeader => {
            let name = string_arg(&mut args)?.to_ascii_lowercase();
            let value = caller
                .request_headers
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(Value::Null, |(_, v)| Value::Str(v.clone()));
            Outcome::Complete(CompletionOutcome::Result(Payload::from_value(value)))
        }
    })
}

/// The error of a per-key method called by a connection without a virtual key (an admin key).
fn needs_virtual_key(method_name: &str) -> Outcome {
    Outcome::Complete(CompletionOutcome::Error(format!(
        "An unexpected error occurred invoking '{method_name}' on the server. \
         HubException: This method needs a virtual key."
    )))
}

/// The next argument as a string.
fn string_arg(args: &mut impl Iterator<Item = Payload>) -> Result<String, BindError> {
    args.next()
        .and_then(|p| p.as_string())
        .ok_or(BindError::Type)
}

/// Accumulates an upload stream for [`Action::ConcatUpload`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Concat {
    text: String,
}

impl Concat {
    /// Adds one stream item (strings are appended as is, other values as their JSON text).
    pub fn push(&mut self, item: &Payload) {
        match item.to_value() {
            Ok(Value::Str(s)) => self.text.push_str(&s),
            Ok(Value::Null) | Err(_) => {}
            Ok(other) => {
                let mut out = bytes::BytesMut::new();
                crate::protocol::signalr::json::encode_value(&other, &mut out);
                self.text.push_str(&String::from_utf8_lossy(&out));
            }
        }
    }

    /// The concatenation.
    pub fn into_string(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(
        action: Action,
        arguments: Vec<Payload>,
        stream_ids: Vec<String>,
    ) -> (Result<Outcome, BindError>, Vec<HubMessage>) {
        let mut outgoing = Vec::new();
        let mut effects = Vec::new();
        let headers = vec![("x-test".to_owned(), "yes".to_owned())];
        let mut caller = Caller {
            connection_id: "conn-1",
            request_headers: &headers,
            outgoing: &mut outgoing,
            effects: &mut effects,
            key_id: Some(7),
            admin: false,
            groups: GroupRoom::UNLIMITED,
        };
        let invocation = Invocation {
            headers: Default::default(),
            invocation_id: Some("1".into()),
            target: "M".into(),
            arguments,
            stream_ids,
        };
        let result = invoke(action, "M", None, invocation, &mut caller);
        (result, outgoing)
    }

    #[test]
    fn echo_returns_its_payload_untouched() {
        let raw = Payload::MessagePack(bytes::Bytes::from_static(&[0xc4, 0x01, 0x07]));
        let (out, _) = call(Action::Echo, vec![raw.clone()], vec![]);
        assert_eq!(out, Ok(Outcome::Complete(CompletionOutcome::Result(raw))));
    }

    #[test]
    fn wrong_argument_count_is_a_bind_error_with_aspnet_text() {
        let (out, _) = call(Action::Echo, vec![], vec![]);
        assert_eq!(
            out.unwrap_err().to_string(),
            "Invocation provides 0 argument(s) but target expects 1."
        );
    }

    #[test]
    fn throw_builds_the_hub_exception_text() {
        let (out, _) = call(Action::Throw, vec![Payload::string("boom")], vec![]);
        assert_eq!(
            out,
            Ok(Outcome::Complete(CompletionOutcome::Error(
                "An unexpected error occurred invoking 'M' on the server. HubException: boom"
                    .into()
            )))
        );
    }

    #[test]
    fn send_message_to_caller_queues_an_event() {
        let (out, events) = call(
            Action::SendMessageToCaller,
            vec![Payload::string("hi")],
            vec![],
        );
        assert_eq!(out, Ok(Outcome::Complete(CompletionOutcome::Void)));
        assert_eq!(events, vec![event("Message", vec![Payload::string("hi")])]);
    }

    #[test]
    fn count_to_streams_then_finishes() {
        let (out, _) = call(
            Action::CountTo,
            vec![Payload::from_value(Value::Int(3))],
            vec![],
        );
        let Ok(Outcome::Stream(mut source)) = out else {
            panic!("stream expected")
        };
        let items: Vec<_> = std::iter::from_fn(|| source.next_item()).collect();
        assert_eq!(items.len(), 3);
        assert!(source.is_finished());
    }

    #[test]
    fn uploads_bind_from_stream_ids_only() {
        let (out, _) = call(Action::ConcatUpload, vec![], vec!["7".into()]);
        assert_eq!(
            out,
            Ok(Outcome::AwaitUpload {
                stream_id: "7".into()
            })
        );
        let (out, _) = call(Action::ConcatUpload, vec![], vec![]);
        assert_eq!(
            out,
            Err(BindError::Streams {
                given: 0,
                expected: 1
            })
        );
        let (out, _) = call(Action::Echo, vec![Payload::string("x")], vec!["1".into()]);
        assert_eq!(
            out,
            Err(BindError::Streams {
                given: 1,
                expected: 0
            })
        );
    }

    #[test]
    fn content_subscriptions_join_two_groups_or_explain_a_bad_type() {
        let mut effects = Vec::new();
        let mut outgoing = Vec::new();
        let mut caller = Caller {
            connection_id: "c",
            request_headers: &[],
            outgoing: &mut outgoing,
            effects: &mut effects,
            key_id: Some(7),
            admin: false,
            groups: GroupRoom::UNLIMITED,
        };
        let call = |args: Vec<Payload>| Invocation {
            headers: Default::default(),
            invocation_id: Some("1".into()),
            target: "SubscribeToTask".into(),
            arguments: args,
            stream_ids: vec![],
        };
        let ok = invoke(
            Action::SubscribeContent,
            "SubscribeToTask",
            None,
            call(vec![Payload::string("t1"), Payload::string("video")]),
            &mut caller,
        );
        assert_eq!(ok, Ok(Outcome::Complete(CompletionOutcome::Void)));
        let bad = invoke(
            Action::SubscribeContent,
            "SubscribeToTask",
            None,
            call(vec![Payload::string("t1"), Payload::string("audio")]),
            &mut caller,
        );
        assert_eq!(
            bad,
            Ok(Outcome::Complete(CompletionOutcome::Error(
                "An unexpected error occurred invoking 'SubscribeToTask' on the server. HubException: Invalid content type 'audio'. Expected 'image' or 'video'.".into()
            )))
        );
        let all = invoke(
            Action::JoinKeyGroup,
            "SubscribeToAllTasks",
            Some("vkey-{vkey}-content"),
            call(vec![]),
            &mut caller,
        );
        assert_eq!(all, Ok(Outcome::Complete(CompletionOutcome::Void)));
        assert_eq!(
            effects,
            vec![
                Effect::JoinGroup("video-t1".into()),
                Effect::JoinGroup("content-t1".into()),
                Effect::JoinGroup("vkey-7-content".into()),
            ]
        );
    }

    #[test]
    fn request_header_is_found_ignoring_case_or_null() {
        let (out, _) = call(
            Action::RequestHeader,
            vec![Payload::string("X-Test")],
            vec![],
        );
        assert_eq!(
            out,
            Ok(Outcome::Complete(CompletionOutcome::Result(
                Payload::string("yes")
            )))
        );
        let (out, _) = call(Action::RequestHeader, vec![Payload::string("nope")], vec![]);
        assert_eq!(
            out,
            Ok(Outcome::Complete(CompletionOutcome::Result(
                Payload::from_value(Value::Null)
            )))
        );
    }

    /// Runs `method` as a caller with virtual key 7 (admin or not); returns the outcome, the
    /// events for the caller and the effects.
    fn run(
        method: &Method,
        arguments: Vec<Payload>,
        admin: bool,
    ) -> (Result<Outcome, BindError>, Vec<HubMessage>, Vec<Effect>) {
        let (mut outgoing, mut effects) = (Vec::new(), Vec::new());
        let mut caller = Caller {
            connection_id: "c",
            request_headers: &[],
            outgoing: &mut outgoing,
            effects: &mut effects,
            key_id: Some(7),
            admin,
            groups: GroupRoom::UNLIMITED,
        };
        let invocation = Invocation {
            headers: Default::default(),
            invocation_id: Some("1".into()),
            target: method.name.clone(),
            arguments,
            stream_ids: vec![],
        };
        let out = invoke_method(method, invocation, &mut caller);
        (out, outgoing, effects)
    }

    fn method(action: Action, group: Option<&str>) -> Method {
        Method {
            name: "M".into(),
            action,
            group_template: group.map(str::to_owned),
            allowed: Vec::new(),
            reply: None,
            admin: false,
            upstream: None,
        }
    }

    fn error(text: &str) -> Result<Outcome, BindError> {
        Ok(Outcome::Complete(CompletionOutcome::Error(format!(
            "An unexpected error occurred invoking 'M' on the server. HubException: {text}"
        ))))
    }

    const VOID: Result<Outcome, BindError> = Ok(Outcome::Complete(CompletionOutcome::Void));

    #[test]
    fn group_templates_fill_the_argument_and_the_callers_virtual_key() {
        let join = method(Action::JoinGroup, Some("vkey-{vkey}-{0}"));
        let (out, _, effects) = run(&join, vec![Payload::string("x")], false);
        assert_eq!(
            (out, effects),
            (VOID, vec![Effect::JoinGroup("vkey-7-x".into())])
        );
        // Integers format into the name (Conduit's `SubscribeToVirtualKey(int)`).
        let by_id = method(Action::LeaveGroup, Some("admin-vkey-{0}"));
        let (_, _, effects) = run(&by_id, vec![Payload::from_value(Value::Int(42))], false);
        assert_eq!(effects, vec![Effect::LeaveGroup("admin-vkey-42".into())]);
        // Objects are not group names.
        let (out, _, _) = run(&by_id, vec![Payload::from_value(Value::Map(vec![]))], false);
        assert_eq!(out, Err(BindError::Type));
    }

    #[test]
    fn a_string_array_joins_one_group_per_element() {
        let metrics = method(Action::JoinGroup, Some("metrics-{0|lower}"));
        let types = Value::Array(vec![
            Value::Str("HTTP".into()),
            Value::Str("Business".into()),
        ]);
        let (out, _, effects) = run(&metrics, vec![Payload::from_value(types)], false);
        assert_eq!(out, VOID);
        assert_eq!(
            effects,
            vec![
                Effect::JoinGroup("metrics-http".into()),
                Effect::JoinGroup("metrics-business".into())
            ]
        );
        let nested = Value::Array(vec![Value::Array(vec![])]);
        let (out, _, _) = run(&metrics, vec![Payload::from_value(nested)], false);
        assert_eq!(out, Err(BindError::Type));
    }

    #[test]
    fn webhook_urls_become_conduits_group_names() {
        let hooks = method(Action::JoinGroup, Some("webhook-{0|url}"));
        let urls = Value::Array(vec![
            Value::Str("https://api.example.com/hook".into()),
            Value::Str("http://user@Hooks.Example.org:8443/a/b?x=1#f".into()),
            Value::Str("https://example.com".into()),
        ]);
        let (_, _, effects) = run(&hooks, vec![Payload::from_value(urls)], false);
        assert_eq!(
            effects,
            vec![
                Effect::JoinGroup("webhook-api-example-com--hook".into()),
                Effect::JoinGroup("webhook-hooks-example-org--a-b".into()),
                Effect::JoinGroup("webhook-example-com--".into()),
            ]
        );
        let (out, _, effects) = run(&hooks, vec![Payload::string("not a url")], false);
        assert_eq!(out, error("'not a url' is not an absolute URL."));
        assert!(effects.is_empty());
    }

    #[test]
    fn a_fixed_group_takes_no_argument() {
        let threat = method(Action::JoinGroup, Some("threat-level-subscribers"));
        let (out, _, effects) = run(&threat, vec![], false);
        assert_eq!(
            (out, effects),
            (
                VOID,
                vec![Effect::JoinGroup("threat-level-subscribers".into())]
            )
        );
        let (out, _, _) = run(&threat, vec![Payload::string("x")], false);
        assert_eq!(
            out,
            Err(BindError::Arity {
                given: 1,
                expected: 0
            })
        );
    }

    #[test]
    fn allowed_values_match_ignoring_case_and_others_get_a_hub_exception() {
        let mut analytics = method(Action::JoinGroup, Some("analytics-{0}-{vkey}"));
        analytics.allowed = vec!["usage".into(), "cost".into()];
        analytics.reply = Some("SubscribedToAnalytics".into());
        let (out, events, effects) = run(&analytics, vec![Payload::string("COST")], false);
        assert_eq!(out, VOID);
        assert_eq!(effects, vec![Effect::JoinGroup("analytics-cost-7".into())]);
        // The reply carries the arguments as the client sent them.
        assert_eq!(
            events,
            vec![event(
                "SubscribedToAnalytics",
                vec![Payload::string("COST")]
            )]
        );
        let (out, events, effects) = run(&analytics, vec![Payload::string("tokens")], false);
        assert_eq!(
            out,
            error("Invalid M argument 'tokens'. Valid values: usage, cost.")
        );
        assert!(events.is_empty() && effects.is_empty());
    }

    #[test]
    fn admin_methods_refuse_other_callers_after_binding() {
        let mut manage = method(Action::JoinGroup, Some("vkey-mgmt-{0}"));
        manage.admin = true;
        let (out, _, effects) = run(&manage, vec![Payload::from_value(Value::Int(3))], false);
        assert_eq!(out, error("Unauthorized: Admin privileges required"));
        assert!(effects.is_empty());
        let (out, _, _) = run(&manage, vec![], false);
        assert_eq!(
            out,
            Err(BindError::Arity {
                given: 0,
                expected: 1
            })
        );
        let (out, _, effects) = run(&manage, vec![Payload::from_value(Value::Int(3))], true);
        assert_eq!(
            (out, effects),
            (VOID, vec![Effect::JoinGroup("vkey-mgmt-3".into())])
        );
    }

    #[test]
    fn reply_event_answers_the_caller_with_its_argument() {
        let mut prefs = method(Action::ReplyEvent, None);
        prefs.reply = Some("PreferencesUpdated".into());
        let body = Payload::from_value(Value::Map(vec![(
            Value::Str("minimumPriority".into()),
            Value::Int(2),
        )]));
        let (out, events, effects) = run(&prefs, vec![body.clone()], false);
        assert_eq!(out, VOID);
        assert_eq!(events, vec![event("PreferencesUpdated", vec![body])]);
        assert!(effects.is_empty());
    }

    #[test]
    fn stream_key_subscribes_the_invocation_to_the_templated_key() {
        let stream = method(Action::StreamKey, Some("response-{0}"));
        let (out, _, effects) = run(&stream, vec![Payload::from_value(Value::Int(42))], false);
        assert_eq!(
            out,
            Ok(Outcome::Stream(StreamSource::Keyed {
                key: "response-42".into()
            }))
        );
        assert_eq!(
            effects,
            vec![Effect::SubscribeStream {
                key: "response-42".into(),
                invocation_id: "1".into()
            }]
        );
        let two = Value::Array(vec![Value::Str("a".into()), Value::Str("b".into())]);
        let (out, _, effects) = run(&stream, vec![Payload::from_value(two)], false);
        assert_eq!((out, effects), (Err(BindError::Type), vec![]));
        let Ok(Outcome::Stream(source)) = run(&stream, vec![Payload::string("x")], false).0 else {
            panic!("a stream")
        };
        assert_eq!((source.on_cancel(), source.is_finished()), (None, false));
    }

    #[test]
    fn templates_with_unknown_placeholders_or_transforms_do_not_parse() {
        assert_eq!(
            parse_template("a-{0|lower}-{vkey}"),
            Ok(vec![
                Piece::Text("a-"),
                Piece::Arg(Some(Transform::Lower)),
                Piece::Text("-"),
                Piece::VKey
            ])
        );
        for (bad, says) in [
            ("x-{1}", "placeholder {1} cannot be filled"),
            ("x-{id}", "unknown placeholder {id}"),
            ("x-{0|upper}", "unknown transform 'upper'"),
            ("x-{vkey|url}", "transforms apply to {0} only"),
            ("x-{0", "unclosed '{'"),
        ] {
            let error = parse_template(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn an_upstream_method_takes_any_arguments_and_defers_to_its_backend() {
        let url = Arc::new(HttpUrl::parse("http://127.0.0.1:9/ask").unwrap());
        let upstream = Method {
            upstream: Some(Arc::clone(&url)),
            ..method(Action::Upstream, None)
        };
        for arguments in [vec![], vec![Payload::string("a"), Payload::string("b")]] {
            let (outcome, outgoing, effects) = run(&upstream, arguments.clone(), false);
            assert_eq!(
                outcome,
                Ok(Outcome::Upstream {
                    url: Arc::clone(&url),
                    arguments
                })
            );
            assert!(outgoing.is_empty() && effects.is_empty());
        }
        let admin_only = Method {
            admin: true,
            ..upstream.clone()
        };
        assert_eq!(
            run(&admin_only, vec![], false).0,
            error("Unauthorized: Admin privileges required")
        );
    }
}
