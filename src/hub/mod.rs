//! SignalR semantics: which hubs exist, which methods they have, and what each method does.
//! Never touches a socket: a [`session::Session`] turns hub messages into outgoing hub messages
//! and the transport moves the bytes.
//!
//! Hubs are declarative: a path plus a table of method names, each bound to a built-in
//! [`Action`]. Method names match case-insensitively, as in ASP.NET Core.

pub mod access;
pub mod actions;
pub mod broadcast;
pub mod conflation;
pub mod endpoint;
pub mod identity;
pub mod quota;
pub mod reference;
pub mod seed;
pub mod session;
pub mod streams;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::config::{Config, HubAuth, MethodConfig};
use crate::hub::session::SessionOptions;
use crate::protocol::http_client::HttpUrl;
use crate::protocol::signalr::HubProtocol;

/// What a hub method does: one of the built-in behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Returns its argument unchanged (`Echo`, `EchoComplexObject`).
    Echo,
    /// Returns the caller's connection id.
    CallerConnectionId,
    /// Sends its string argument back to the caller as event `Message`.
    SendMessageToCaller,
    /// Streams the integers `0..n`, then completes.
    CountTo,
    /// Streams nothing until cancelled; then tells the caller `StreamCanceled`.
    NeverEnding,
    /// Fails with a hub exception carrying its argument.
    Throw,
    /// Concatenates the strings of an uploaded stream and returns them.
    ConcatUpload,
    /// Returns a header of the connecting HTTP request (or null).
    RequestHeader,
    /// Invokes the caller's client method named by the first argument with the second, and
    /// returns the client's result (a client result).
    InvokeCaller,
    /// Adds the caller to the group named by its argument.
    JoinGroup,
    /// Removes the caller from the group named by its argument.
    LeaveGroup,
    /// Sends event `Send(message)` to every member of a group, on every shard.
    SendToGroup,
    /// Sends event `Send(message)` to every connection of the hub, on every shard.
    SendToAll,
    /// `SubscribeToTask(taskId, contentType)`: joins `{contentType}-{taskId}` and
    /// `content-{taskId}`; the type must be `image` or `video`.
    SubscribeContent,
    /// Joins a group named after the caller's virtual key: the template with `{vkey}` (default
    /// `vkey-{vkey}`), e.g. `join-key-group:vkey-{vkey}-content`.
    JoinKeyGroup,
    /// Stores its argument as the caller's key's state on this hub (replicated to every shard)
    /// and sends it, as the event named by the template (`set-key-state:NavigationUpdated`),
    /// to every connection of the key; a map's `view` is copied to `currentView`. A new
    /// connection of the key receives the current state right after its handshake.
    SetKeyState,
    /// Returns the caller's key's state on this hub (null before the first update).
    GetKeyState,
    /// Returns the health snapshot; a hub with this method also gets it pushed as
    /// `HealthStatus` every `health.push_interval`.
    Health,
    /// Does nothing but succeed; with the method's `reply` it answers the caller with an event
    /// carrying its argument (Conduit's `UpdatePreferences(p)` → `PreferencesUpdated(p)`).
    ReplyEvent,
    /// Streams what backends post to the stream key made from the template
    /// (`stream-key:response-{0}`; [`streams`]), until they complete or fail it or the client
    /// cancels.
    StreamKey,
    /// POSTs the invocation to the method's `url` and completes with the backend's answer
    /// ([`crate::upstream`]); takes any arguments.
    Upstream,
}

/// How a method answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// One Completion (invoked with `invoke`/`send`).
    Single,
    /// StreamItems then a Completion (invoked with `stream`).
    Stream,
}

/// What a method's parameters are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// Any value.
    Any,
    /// A string.
    Str,
    /// An integer.
    Int,
    /// A client-to-server stream (bound from `streamIds`, not from `arguments`).
    Upload,
}

impl Action {
    /// Every action, with the name configuration uses for it.
    pub const NAMES: [(&'static str, Self); 21] = [
        ("echo", Self::Echo),
        ("caller-connection-id", Self::CallerConnectionId),
        ("send-message-to-caller", Self::SendMessageToCaller),
        ("count-to", Self::CountTo),
        ("never-ending", Self::NeverEnding),
        ("throw", Self::Throw),
        ("concat-upload", Self::ConcatUpload),
        ("request-header", Self::RequestHeader),
        ("invoke-caller", Self::InvokeCaller),
        ("join-group", Self::JoinGroup),
        ("leave-group", Self::LeaveGroup),
        ("send-to-group", Self::SendToGroup),
        ("send-to-all", Self::SendToAll),
        ("subscribe-content", Self::SubscribeContent),
        ("join-key-group", Self::JoinKeyGroup),
        ("set-key-state", Self::SetKeyState),
        ("get-key-state", Self::GetKeyState),
        ("health", Self::Health),
        ("reply-event", Self::ReplyEvent),
        ("stream-key", Self::StreamKey),
        ("upstream", Self::Upstream),
    ];

    /// The action configured as `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, action)| *action)
    }

    /// The parameters the action binds.
    pub fn params(self) -> &'static [Param] {
        match self {
            Self::Echo | Self::ReplyEvent => &[Param::Any],
            Self::CallerConnectionId
            | Self::NeverEnding
            | Self::JoinKeyGroup
            | Self::GetKeyState
            | Self::Health
            | Self::Upstream => &[],
            Self::SubscribeContent => &[Param::Str, Param::Str],
            Self::SendMessageToCaller
            | Self::Throw
            | Self::RequestHeader
            | Self::JoinGroup
            | Self::LeaveGroup
            | Self::StreamKey => &[Param::Str],
            Self::SendToGroup => &[Param::Str, Param::Any],
            Self::SendToAll | Self::SetKeyState => &[Param::Any],
            Self::CountTo => &[Param::Int],
            Self::ConcatUpload => &[Param::Upload],
            Self::InvokeCaller => &[Param::Str, Param::Any],
        }
    }

    /// Whether the action answers with a stream.
    pub fn reply(self) -> Reply {
        match self {
            Self::CountTo | Self::NeverEnding | Self::StreamKey => Reply::Stream,
            _ => Reply::Single,
        }
    }

    /// Whether the action names a group and so takes a group template.
    fn is_group_action(self) -> bool {
        matches!(
            self,
            Self::JoinGroup
                | Self::LeaveGroup
                | Self::SendToGroup
                | Self::JoinKeyGroup
                | Self::StreamKey
        )
    }
}

/// What an action does, written for people: the hub reference (`ringhub docs hubs`,
/// [`mod@reference`]) is generated from these, next to the behaviour they describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionDoc {
    /// What a call does, in one sentence.
    pub summary: &'static str,
    /// `(name, shape)` of each argument, one per [`Action::params`] entry.
    pub args: &'static [(&'static str, &'static str)],
    /// The Completion's result, or each item's shape for a streaming method.
    pub result: &'static str,
    /// `(event, payload, recipients, when)` of each event the method makes the server send;
    /// `{event}` in an event name stands for the method's template (the state event of
    /// `set-key-state`), `{method}` in `when` for the method's name.
    pub events: &'static [(&'static str, &'static str, &'static str, &'static str)],
}

/// The argument shape of the group actions' first argument.
const GROUP_ARG: &str = "string or integer; an array names one group per element";

impl Action {
    /// What the action does, its arguments, result and events.
    pub fn doc(self) -> ActionDoc {
        let doc = |summary, args, result, events| ActionDoc {
            summary,
            args,
            result,
            events,
        };
        match self {
            Self::Echo => doc(
                "Returns its argument unchanged.",
                &[("value", "any")],
                "the argument",
                &[],
            ),
            Self::CallerConnectionId => {
                doc("Returns the caller's connection id.", &[], "string", &[])
            }
            Self::SendMessageToCaller => doc(
                "Sends its argument back to the caller as an event.",
                &[("text", "string")],
                "no result",
                &[(
                    "Message",
                    "the text (string)",
                    "the caller",
                    "`{method}` is called",
                )],
            ),
            Self::CountTo => doc(
                "Streams the integers 0 to n-1, then completes.",
                &[("n", "integer")],
                "a stream of integers",
                &[],
            ),
            Self::NeverEnding => doc(
                "A stream that yields nothing until the client cancels it.",
                &[],
                "a stream that yields nothing",
                &[(
                    "StreamCanceled",
                    "no arguments",
                    "the caller",
                    "the client cancels the stream",
                )],
            ),
            Self::Throw => doc(
                "Fails with a hub exception carrying its argument.",
                &[("message", "string")],
                "an error: the hub exception with `message`",
                &[],
            ),
            Self::ConcatUpload => doc(
                "Concatenates the items of a client-to-server stream.",
                &[("stream", "client-to-server stream of strings")],
                "string",
                &[],
            ),
            Self::RequestHeader => doc(
                "Returns a header of the HTTP request that opened the connection.",
                &[("name", "string, case-insensitive")],
                "string, or null when absent",
                &[],
            ),
            Self::InvokeCaller => doc(
                "Invokes the caller's client method named by `method` with `argument` and returns its answer (a client result).",
                &[("method", "string"), ("argument", "any")],
                "what the client method returns",
                &[],
            ),
            Self::JoinGroup => doc(
                "Adds the caller to the group(s).",
                &[("group", GROUP_ARG)],
                "no result",
                &[],
            ),
            Self::LeaveGroup => doc(
                "Removes the caller from the group(s).",
                &[("group", GROUP_ARG)],
                "no result",
                &[],
            ),
            Self::SendToGroup => doc(
                "Sends an event to every member of the group, on every shard and instance.",
                &[("group", "string"), ("message", "any")],
                "no result",
                &[(
                    "Send",
                    "the message",
                    "the group's members",
                    "`{method}` is called",
                )],
            ),
            Self::SendToAll => doc(
                "Sends an event to every connection of the hub, on every shard and instance.",
                &[("message", "any")],
                "no result",
                &[(
                    "Send",
                    "the message",
                    "every connection of the hub",
                    "`{method}` is called",
                )],
            ),
            Self::SubscribeContent => doc(
                "Joins the typed and the unified group of a task.",
                &[
                    ("taskId", "string"),
                    ("contentType", "string: `image` or `video`"),
                ],
                "no result; another type is the error `Invalid content type '…'. Expected 'image' or 'video'.`",
                &[],
            ),
            Self::JoinKeyGroup => doc(
                "Joins the group named after the caller's virtual key (needs a virtual key).",
                &[],
                "no result",
                &[],
            ),
            Self::SetKeyState => doc(
                "Stores its argument as the caller's key's state on this hub (every shard) and \
                 announces it; a map's `view` is copied to `currentView`. A new connection of the \
                 key receives the current state right after its handshake (needs a virtual key).",
                &[("state", "any; usually a map")],
                "no result",
                &[(
                    "{event}",
                    "the state (a map gets `currentView` = its `view`)",
                    "every connection of the caller's key on this hub (`vkey-{keyId}`)",
                    "`{method}` is called; also to a new connection of the key after its handshake",
                )],
            ),
            Self::GetKeyState => doc(
                "Returns the caller's key's state on this hub (needs a virtual key).",
                &[],
                "the state, or null before the first update",
                &[],
            ),
            Self::Health => doc(
                "Returns the health snapshot; the hub's connections also get it pushed every \
                 `health.push_interval`.",
                &[],
                "the health snapshot",
                &[(
                    "HealthStatus",
                    "the health snapshot",
                    "every connection of the hub",
                    "every `health.push_interval`, because the hub has `{method}`",
                )],
            ),
            Self::ReplyEvent => doc(
                "Does nothing but succeed; its `reply` event answers the caller.",
                &[("value", "any")],
                "no result",
                &[],
            ),
            Self::StreamKey => doc(
                "Streams what backends post to the stream key (`POST /api/hubs/{hub}/streams/{key}/:item`) \
                 until they complete or fail it, or the client cancels.",
                &[("id", "string or integer")],
                "a stream of what backends post",
                &[],
            ),
            Self::Upstream => doc(
                "POSTs the invocation as JSON `{hub, method, arguments, connectionId, virtualKeyId, \
                 userId}` to the method's `url`; a 2xx body is the result.",
                &[],
                "the backend's response body (JSON; empty or 204 = null)",
                &[],
            ),
        }
    }
}

/// The parameters a method binds: the action's, except that join/leave-group and stream-key
/// with a template that has no `{0}` (a fixed group such as `threat-level-subscribers`, or
/// `vkey-{vkey}-x`) take no argument.
pub fn method_params(action: Action, group_template: Option<&str>) -> &'static [Param] {
    let fixed = |template: &str| {
        actions::parse_template(template)
            .is_ok_and(|pieces| !pieces.iter().any(|p| matches!(p, actions::Piece::Arg(_))))
    };
    match (action, group_template) {
        (Action::JoinGroup | Action::LeaveGroup | Action::StreamKey, Some(template))
            if fixed(template) =>
        {
            &[]
        }
        _ => action.params(),
    }
}

/// One hub method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// The name as declared (used in error texts).
    pub name: String,
    /// What it does.
    pub action: Action,
    /// For the group actions: how the group name is made from the first argument, with `{0}`
    /// standing for it (e.g. `image-{0}` for a task id) and `{vkey}` for the caller's virtual
    /// key; `None` means the argument itself.
    pub group_template: Option<String>,
    /// The first argument must be one of these (ignoring case); empty means any.
    pub allowed: Vec<String>,
    /// The event sent to the caller, with the method's arguments, after it succeeds.
    pub reply: Option<String>,
    /// Only admin principals may call it.
    pub admin: bool,
    /// For [`Action::Upstream`]: where the invocation is POSTed.
    pub upstream: Option<Arc<HttpUrl>>,
}

/// A hub: a path and its methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubDefinition {
    /// A short name for logs and metrics.
    pub name: String,
    /// Its position among the served hubs ([`definitions`]): the index of its per-hub counters
    /// in [`crate::stats::Stats`].
    pub index: usize,
    /// The URL path clients connect to (negotiate is `{path}/negotiate`).
    pub path: String,
    /// Protocols the handshake may choose.
    pub protocols: Vec<HubProtocol>,
    /// Who may connect.
    pub auth: HubAuth,
    /// Groups every connection joins when it connects.
    pub join_on_connect: Vec<String>,
    /// Its name on the Redis backplane (channel names start with it).
    pub redis_name: String,
    /// Where connect and disconnect events are POSTed ([`crate::upstream::post_event`]).
    pub events_url: Option<Arc<HttpUrl>>,
    /// The timers and limits its sessions run with (`[signalr]` with this hub's overrides),
    /// shared by every session instead of copied into each.
    pub session: SessionOptions,
    /// Methods by lowercased name.
    methods: HashMap<String, Method>,
}

/// A configured hub that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubConfigError {
    /// A method bound to an action that does not exist.
    #[error("hubs.{hub}.methods.{method}: unknown action '{action}' (known: {known})")]
    UnknownAction {
        /// The hub's table name.
        hub: String,
        /// The method.
        method: String,
        /// The action named.
        action: String,
        /// The actions that exist.
        known: String,
    },
    /// A method whose group template or modifiers (`allowed`, `reply`) its action cannot use.
    #[error("hubs.{hub}.methods.{method}: {reason}")]
    InvalidMethod {
        /// The hub's table name.
        hub: String,
        /// The method.
        method: String,
        /// What is wrong, naming the placeholder or key.
        reason: String,
    },
    /// Two hubs (a configured one and a built-in one) share a path.
    #[error("hubs.{hub}.path: '{path}' is already served by {other}")]
    PathTaken {
        /// The hub's table name.
        hub: String,
        /// The path.
        path: String,
        /// What else serves it.
        other: &'static str,
    },
}

impl HubDefinition {
    /// A hub with the given methods.
    pub fn new(name: &str, path: &str, methods: &[(&str, Action)]) -> Self {
        Self {
            name: name.to_owned(),
            index: 0,
            path: path.to_owned(),
            protocols: HubProtocol::ALL.to_vec(),
            auth: HubAuth::Anonymous,
            join_on_connect: Vec::new(),
            redis_name: name.to_owned(),
            events_url: None,
            session: SessionOptions::from_config(&Config::default().signalr),
            methods: methods
                .iter()
                .map(|(n, a)| {
                    (
                        n.to_lowercase(),
                        Method {
                            name: (*n).to_owned(),
                            action: *a,
                            group_template: None,
                            allowed: Vec::new(),
                            reply: None,
                            admin: false,
                            upstream: None,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Whether any method is bound to `action` (e.g. only hubs that read request headers keep
    /// them per connection).
    pub fn uses(&self, action: Action) -> bool {
        self.methods.values().any(|m| m.action == action)
    }

    /// The name of a method bound to `action`, as declared (the status page invokes the
    /// `health` one).
    pub fn method_bound_to(&self, action: Action) -> Option<&str> {
        self.methods
            .values()
            .filter(|m| m.action == action)
            .map(|m| m.name.as_str())
            .min()
    }

    /// The event announcing a key's new state, when a method stores per-key state.
    pub fn key_state_event(&self) -> Option<&str> {
        self.methods
            .values()
            .find(|m| m.action == Action::SetKeyState)
            .map(|m| m.group_template.as_deref().unwrap_or("StateUpdated"))
    }

    /// Finds a method, ignoring case.
    pub fn method(&self, target: &str) -> Option<&Method> {
        self.methods.get(&target.to_lowercase())
    }

    /// The Diagnostics hub for operators and conformance tests.
    pub fn diagnostics(path: &str) -> Self {
        Self::new(
            "diagnostics",
            path,
            &[
                ("Echo", Action::Echo),
                ("EchoComplexObject", Action::Echo),
                ("GetCallerConnectionId", Action::CallerConnectionId),
                ("InvokeWithString", Action::SendMessageToCaller),
                ("Stream", Action::CountTo),
                ("InfiniteStream", Action::NeverEnding),
                ("ThrowException", Action::Throw),
                ("StreamingConcat", Action::ConcatUpload),
                ("GetHeader", Action::RequestHeader),
                ("GetClientResult", Action::InvokeCaller),
                ("JoinGroup", Action::JoinGroup),
                ("LeaveGroup", Action::LeaveGroup),
                ("SendToGroup", Action::SendToGroup),
                ("SendToAll", Action::SendToAll),
            ],
        )
    }
}

/// Every hub the configuration describes (built-in ones included), validated. Plain data, so
/// it is built once and handed to every shard.
///
/// # Errors
/// [`HubConfigError`] for an unknown action, a method its action cannot run as written (a
/// placeholder it cannot fill, a modifier it cannot use), or a path served twice.
pub fn definitions(config: &Config) -> Result<Vec<HubDefinition>, HubConfigError> {
    let mut out: Vec<HubDefinition> = Vec::new();
    if config.diagnostics.enabled {
        let mut diagnostics = HubDefinition::diagnostics(&config.diagnostics.path);
        diagnostics.session = SessionOptions::from_config(&config.signalr);
        out.push(diagnostics);
    }
    // The seed hubs first; a configured hub with the same path replaces one.
    let seed = if config.seed.enabled {
        seed::seed_hubs()
    } else {
        Vec::new()
    };
    let configured = seed
        .iter()
        .filter(|s| !config.hubs.iter().any(|h| h.path == s.path))
        .chain(&config.hubs);
    for hub in configured {
        let taken = if config.diagnostics.enabled && hub.path == config.diagnostics.path {
            Some("the Diagnostics hub")
        } else if config.echo.enabled && hub.path == config.echo.path {
            Some("the echo route")
        } else if hub.path == "/health" {
            Some("the health endpoint")
        } else if config.metrics.enabled && hub.path == config.metrics.path {
            Some("the metrics endpoint")
        } else {
            None
        };
        if let Some(other) = taken {
            return Err(HubConfigError::PathTaken {
                hub: hub.name.clone(),
                path: hub.path.clone(),
                other,
            });
        }
        let mut methods = Vec::with_capacity(hub.methods.len());
        for (name, spec) in &hub.methods {
            methods.push(method(&hub.name, name, spec)?);
        }
        let mut definition = HubDefinition::new(&hub.name, &hub.path, &[]);
        definition.methods = methods
            .into_iter()
            .map(|m| (m.name.to_lowercase(), m))
            .collect();
        definition.session = SessionOptions::from_config(&config.signalr);
        if let Some(max) = hub.max_message_size {
            definition.session.max_message_size = max;
        }
        definition.auth = hub.auth;
        definition.join_on_connect = hub.join_on_connect.clone();
        if let Some(redis_name) = &hub.redis_name {
            definition.redis_name = redis_name.clone();
        }
        definition.events_url = match &hub.events_url {
            None => None,
            Some(url) => Some(Arc::new(HttpUrl::parse(url).map_err(|e| {
                HubConfigError::InvalidMethod {
                    hub: hub.name.clone(),
                    method: "(events_url)".to_owned(),
                    reason: e.to_string(),
                }
            })?)),
        };
        definition.protocols = hub
            .protocols
            .iter()
            .filter_map(|name| HubProtocol::from_name(name))
            .collect();
        out.push(definition);
    }
    for (index, definition) in out.iter_mut().enumerate() {
        definition.index = index;
    }
    Ok(out)
}

/// Builds one configured method, checking that its action can use its group template and
/// modifiers.
fn method(hub: &str, name: &str, spec: &MethodConfig) -> Result<Method, HubConfigError> {
    let invalid = |reason: String| HubConfigError::InvalidMethod {
        hub: hub.to_owned(),
        method: name.to_owned(),
        reason,
    };
    let Some(action) = Action::from_name(&spec.action) else {
        return Err(HubConfigError::UnknownAction {
            hub: hub.to_owned(),
            method: name.to_owned(),
            action: spec.action.clone(),
            known: Action::NAMES.map(|(n, _)| n).join(", "),
        });
    };
    if let (Action::SetKeyState, Some(event)) = (action, &spec.group) {
        // `set-key-state:NavigationUpdated`: the suffix names the event, not a group.
        if event.is_empty() || event.contains(['{', '}', ' ']) {
            return Err(invalid(format!(
                "set-key-state takes an event name (e.g. set-key-state:NavigationUpdated), not \"{event}\""
            )));
        }
    } else if let Some(template) = &spec.group {
        if !action.is_group_action() {
            return Err(invalid(format!(
                "action '{}' takes no group template (only join-group, leave-group, \
                 send-to-group, join-key-group and stream-key do)",
                spec.action
            )));
        }
        let pieces = actions::parse_template(template)
            .map_err(|reason| invalid(format!("group \"{template}\": {reason}")))?;
        let has = |want: fn(&actions::Piece<'_>) -> bool| pieces.iter().any(want);
        let uses_arg = has(|p| matches!(p, actions::Piece::Arg(_)));
        let uses_vkey = has(|p| matches!(p, actions::Piece::VKey));
        let problem = match action {
            Action::SendToGroup if !uses_arg => {
                Some("send-to-group needs {0} (its first argument) in the group")
            }
            Action::JoinKeyGroup if uses_arg => {
                Some("join-key-group takes no argument, so {0} cannot be filled; use join-group")
            }
            Action::JoinKeyGroup if !uses_vkey => Some("join-key-group needs {vkey} in the group"),
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(invalid(format!("group \"{template}\": {problem}")));
        }
    }
    let template = spec.group.as_deref();
    let params = method_params(action, template);
    if !spec.allowed.is_empty() && params.first().is_none_or(|p| *p == Param::Upload) {
        return Err(invalid(format!(
            "allowed needs a method that takes an argument; '{}' with this group takes none",
            spec.action
        )));
    }
    if spec.reply.is_some()
        && (action.reply() == Reply::Stream
            || matches!(
                action,
                Action::InvokeCaller | Action::ConcatUpload | Action::Upstream
            ))
    {
        return Err(invalid(format!(
            "reply needs an action that completes at once; '{}' does not",
            spec.action
        )));
    }
    if action == Action::ReplyEvent && spec.reply.is_none() {
        return Err(invalid(
            "reply-event needs the event to send: write the method as a table with \
             reply = \"EventName\""
                .to_owned(),
        ));
    }
    let upstream = match (action, &spec.url) {
        (Action::Upstream, Some(url)) => Some(Arc::new(
            HttpUrl::parse(url).map_err(|e| invalid(format!("url \"{url}\": {e}")))?,
        )),
        (Action::Upstream, None) => {
            return Err(invalid(
                "upstream needs the backend: write the method as a table with \
                 url = \"http://host:port/path\""
                    .to_owned(),
            ));
        }
        (_, Some(_)) => {
            return Err(invalid(format!(
                "url is for action = \"upstream\" only, not '{}'",
                spec.action
            )));
        }
        (_, None) => None,
    };
    Ok(Method {
        name: name.to_owned(),
        action,
        group_template: spec.group.clone(),
        allowed: spec.allowed.clone(),
        reply: spec.reply.clone(),
        admin: spec.admin,
        upstream,
    })
}

/// The hubs a server serves, by path. A reload ([`Self::replace`]) swaps the table: new
/// connections get the new definitions, open ones keep theirs.
#[derive(Debug, Default)]
pub struct Hubs {
    by_path: std::cell::RefCell<HashMap<String, Rc<HubDefinition>>>,
}

impl Hubs {
    /// A shard's table of the validated [`definitions`].
    pub fn new(definitions: &[HubDefinition]) -> Self {
        let hubs = Self::default();
        hubs.replace(definitions);
        hubs
    }

    /// Serves exactly `definitions` from now on.
    pub fn replace(&self, definitions: &[HubDefinition]) {
        *self.by_path.borrow_mut() = definitions
            .iter()
            .map(|d| (d.path.clone(), Rc::new(d.clone())))
            .collect();
    }

    /// The hubs with a method bound to `action`.
    pub fn using(&self, action: Action) -> Vec<Rc<HubDefinition>> {
        self.by_path
            .borrow()
            .values()
            .filter(|hub| hub.uses(action))
            .cloned()
            .collect()
    }

    /// The hub served at exactly `path`.
    pub fn at(&self, path: &str) -> Option<Rc<HubDefinition>> {
        self.by_path.borrow().get(path).cloned()
    }
}

/// A hub set that may not change without a restart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the hubs served changed ({0}); adding, removing or renaming hubs (name, path, redis_name) \
     needs a restart, reload applies changes to existing hubs only"
)]
pub struct HubSetChanged(pub String);

/// Checks that `reloaded` serves the same hubs as `running` (by name, path and backplane name)
/// and gives each its running counterpart's [`HubDefinition::index`], so counters and backplane
/// subscriptions stay valid.
///
/// # Errors
/// [`HubSetChanged`] naming the first difference.
pub fn reconcile(
    running: &[HubDefinition],
    reloaded: &mut [HubDefinition],
) -> Result<(), HubSetChanged> {
    let identity = |h: &HubDefinition| (h.name.clone(), h.path.clone(), h.redis_name.clone());
    let mut before: Vec<_> = running.iter().map(identity).collect();
    let mut after: Vec<_> = reloaded.iter().map(identity).collect();
    before.sort();
    after.sort();
    if before != after {
        let added = after.iter().find(|h| !before.contains(h));
        let removed = before.iter().find(|h| !after.contains(h));
        let describe = |h: &(String, String, String)| format!("{} at {}", h.0, h.1);
        return Err(HubSetChanged(match (added, removed) {
            (Some(a), _) => format!("new or changed: {}", describe(a)),
            (None, Some(r)) => format!("gone: {}", describe(r)),
            (None, None) => "duplicates".to_owned(),
        }));
    }
    for hub in reloaded.iter_mut() {
        if let Some(old) = running.iter().find(|r| r.name == hub.name) {
            hub.index = old.index;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_hubs_bind_methods_to_actions_by_name() {
        let config = Config::from_toml_str(
            "[hubs.chat]\npath = \"/hubs/chat\"\nmax_message_size = \"4KiB\"\nmethods = { Say = \"echo\", Who = \"caller-connection-id\" }\n",
            "test",
        )
        .unwrap();
        let hubs: Vec<_> = definitions(&config)
            .unwrap()
            .into_iter()
            .filter(|h| h.path == "/hubs/chat")
            .collect();
        assert_eq!(hubs.len(), 1);
        assert_eq!(hubs[0].session.max_message_size, 4096);
        assert_eq!(hubs[0].method("say").map(|m| m.action), Some(Action::Echo));
        assert_eq!(
            hubs[0].method("WHO").map(|m| m.action),
            Some(Action::CallerConnectionId)
        );
    }

    #[test]
    fn the_seed_hubs_are_served_by_default_and_a_configured_hub_replaces_one() {
        let hubs = definitions(&Config::default()).unwrap();
        let paths: Vec<_> = hubs.iter().map(|h| h.path.as_str()).collect();
        for path in [
            "/hubs/navigation-state",
            "/hubs/image-generation",
            "/hubs/video-generation",
            "/hubs/notifications",
            "/hubs/admin",
            "/hubs/health",
            "/hubs/content-generation",
        ] {
            assert!(paths.contains(&path), "{path} missing from {paths:?}");
        }
        let admin = hubs.iter().find(|h| h.path == "/hubs/admin").unwrap();
        assert_eq!(
            (admin.auth, admin.join_on_connect.as_slice()),
            (HubAuth::Admin, &["admin".to_owned()][..])
        );
        let image = hubs
            .iter()
            .find(|h| h.path == "/hubs/image-generation")
            .unwrap();
        assert_eq!(
            image
                .method("subscribetotask")
                .unwrap()
                .group_template
                .as_deref(),
            Some("image-{0}")
        );
        let config = Config::from_toml_str(
            "[hubs.mine]\npath = \"/hubs/admin\"\nmethods = { Echo = \"echo\" }\n",
            "t",
        )
        .unwrap();
        let hubs = definitions(&config).unwrap();
        let admin: Vec<_> = hubs.iter().filter(|h| h.path == "/hubs/admin").collect();
        assert_eq!(admin.len(), 1);
        assert_eq!(admin[0].name, "mine");
        let off = Config::from_toml_str("[seed]\nenabled = false\n", "t").unwrap();
        assert!(definitions(&off).unwrap().is_empty());
    }

    #[test]
    fn group_actions_take_a_name_template() {
        let config = Config::from_toml_str(
            "[hubs.img]\npath = \"/i\"\nmethods = { SubscribeToTask = \"join-group:image-{0}\" }\n",
            "t",
        )
        .unwrap();
        let hubs: Vec<_> = definitions(&config)
            .unwrap()
            .into_iter()
            .filter(|h| h.path == "/i")
            .collect();
        let method = hubs[0].method("subscribetotask").unwrap();
        assert_eq!(
            (method.action, method.group_template.as_deref()),
            (Action::JoinGroup, Some("image-{0}"))
        );
        for bad in ["echo:x-{0}", "join-group:image-{1}"] {
            let config = Config::from_toml_str(
                &format!("[hubs.img]\npath = \"/i\"\nmethods = {{ M = \"{bad}\" }}\n"),
                "t",
            )
            .unwrap();
            assert!(definitions(&config).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_unknown_action_or_a_taken_path_is_a_config_error() {
        let config = Config::from_toml_str(
            "[hubs.chat]\npath = \"/x\"\nmethods = { Say = \"shout\" }\n",
            "t",
        )
        .unwrap();
        let error = definitions(&config).unwrap_err().to_string();
        assert!(
            error.starts_with("hubs.chat.methods.Say: unknown action 'shout' (known: echo,"),
            "{error}"
        );
        let config = Config::from_toml_str(
            "[diagnostics]\nenabled = true\n[hubs.d]\npath = \"/hubs/diagnostics\"\nmethods = { A = \"echo\" }\n",
            "t",
        )
        .unwrap();
        assert!(matches!(
            definitions(&config),
            Err(HubConfigError::PathTaken { .. })
        ));
    }

    #[test]
    fn method_lookup_ignores_case() {
        let hub = HubDefinition::diagnostics("/hubs/diagnostics");
        assert_eq!(hub.method("echo").map(|m| m.action), Some(Action::Echo));
        assert_eq!(hub.method("ECHO").map(|m| m.name.as_str()), Some("Echo"));
        assert!(hub.method("Nope").is_none());
    }

    /// The definitions of a config holding only `[hubs.h]` (path `/h`) with `methods`.
    fn only_hub(methods: &str) -> Result<HubDefinition, HubConfigError> {
        let text = format!("[seed]\nenabled = false\n[hubs.h]\npath = \"/h\"\n{methods}");
        let config = Config::from_toml_str(&text, "t").unwrap();
        definitions(&config).map(|mut hubs| hubs.remove(0))
    }

    #[test]
    fn a_method_table_sets_group_allowed_values_reply_and_admin() {
        let hub = only_hub(
            "[hubs.h.methods.SubscribeToAnalytics]\naction = \"join-group\"\n\
             group = \"analytics-{0}-{vkey}\"\nallowed = [\"usage\", \"cost\"]\n\
             reply = \"SubscribedToAnalytics\"\nadmin = true\n\
             [hubs.h.methods]\nUnsubscribeFromTask = \"leave-group:task-{0}\"\n",
        )
        .unwrap();
        assert_eq!(
            hub.method("subscribetoanalytics"),
            Some(&Method {
                name: "SubscribeToAnalytics".into(),
                action: Action::JoinGroup,
                group_template: Some("analytics-{0}-{vkey}".into()),
                allowed: vec!["usage".into(), "cost".into()],
                reply: Some("SubscribedToAnalytics".into()),
                admin: true,
                upstream: None,
            })
        );
        let leave = hub.method("UnsubscribeFromTask").unwrap();
        assert_eq!(
            (leave.action, leave.group_template.as_deref(), leave.admin),
            (Action::LeaveGroup, Some("task-{0}"), false)
        );
    }

    #[test]
    fn methods_their_action_cannot_run_as_written_are_config_errors() {
        for (methods, says) in [
            (
                "methods = { M = \"join-group:task-{1}\" }\n",
                "hubs.h.methods.M: group \"task-{1}\": placeholder {1} cannot be filled",
            ),
            (
                "methods = { M = \"join-group:x-{0|shout}\" }\n",
                "unknown transform 'shout'",
            ),
            (
                "methods = { M = \"echo:x-{0}\" }\n",
                "hubs.h.methods.M: action 'echo' takes no group template",
            ),
            (
                "methods = { M = \"send-to-group:fixed\" }\n",
                "send-to-group needs {0}",
            ),
            (
                "methods = { M = \"join-key-group:x-{0}\" }\n",
                "join-key-group takes no argument",
            ),
            (
                "methods = { M = \"reply-event\" }\n",
                "reply-event needs the event to send",
            ),
            (
                "methods.M = { action = \"count-to\", reply = \"Done\" }\n",
                "reply needs an action that completes at once",
            ),
            (
                "methods.M = { action = \"join-group\", group = \"fixed\", allowed = [\"a\"] }\n",
                "allowed needs a method that takes an argument",
            ),
            (
                "methods.M = { action = \"shout\" }\n",
                "hubs.h.methods.M: unknown action 'shout'",
            ),
            (
                "methods = { M = \"upstream\" }\n",
                "upstream needs the backend",
            ),
            (
                "methods.M = { action = \"echo\", url = \"http://b/\" }\n",
                "url is for action = \"upstream\" only",
            ),
            (
                "methods.M = { action = \"upstream\", url = \"http://b/\", reply = \"R\" }\n",
                "reply needs an action that completes at once",
            ),
        ] {
            let error = only_hub(methods).unwrap_err().to_string();
            assert!(error.contains(says), "{methods}: {error}");
        }
    }

    #[test]
    fn stream_key_methods_stream_and_take_a_key_template() {
        let hub = only_hub(
            "methods = { StreamResponse = \"stream-key:response-{0}\", Feed = \"stream-key:feed-{vkey}\" }\n",
        )
        .unwrap();
        let method = hub.method("streamresponse").unwrap();
        assert_eq!(
            (method.action.reply(), method.group_template.as_deref()),
            (Reply::Stream, Some("response-{0}"))
        );
        assert_eq!(
            method_params(Action::StreamKey, Some("feed-{vkey}")),
            &[][..]
        );
        assert!(hub.uses(Action::StreamKey));
        let error = only_hub("methods = { S = \"stream-key:r-{1}\" }\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("placeholder {1} cannot be filled"),
            "{error}"
        );
        let seed = definitions(&Config::default()).unwrap();
        let content = seed
            .iter()
            .find(|h| h.path == "/hubs/content-generation")
            .unwrap();
        assert_eq!(
            content.method("StreamResponse").map(|m| m.action),
            Some(Action::StreamKey)
        );
    }

    #[test]
    fn join_group_with_a_fixed_or_key_only_group_takes_no_argument() {
        let hub = only_hub(
            "methods = { Threat = \"join-group:threat-level-subscribers\", Mine = \"join-group:vkey-{vkey}-x\", Task = \"join-group:task-{0}\" }\n",
        )
        .unwrap();
        let params = |name: &str| {
            let m = hub.method(name).unwrap();
            method_params(m.action, m.group_template.as_deref())
        };
        assert_eq!(
            (params("Threat"), params("Mine"), params("Task")),
            (&[][..], &[][..], &[Param::Str][..])
        );
    }

    #[test]
    fn the_documented_hub_example_builds_when_uncommented() {
        let printed = crate::config::default_config_toml();
        let example: String = printed
            .lines()
            .skip_while(|l| !l.starts_with("# [hubs.chat]"))
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        assert!(example.contains("allowed"), "{example}");
        let config = Config::from_toml_str(&example, "example").unwrap();
        let hubs = definitions(&config).unwrap();
        let chat = hubs.iter().find(|h| h.path == "/hubs/chat").unwrap();
        assert_eq!(
            chat.method("subscribe").map(|m| m.reply.as_deref()),
            Some(Some("Subscribed"))
        );
    }

    #[test]
    fn an_upstream_method_carries_its_parsed_url_and_a_hub_its_events_url() {
        let hub = only_hub(
            "events_url = \"http://127.0.0.1:9000/events\"\n\
             [hubs.h.methods.Ask]\naction = \"upstream\"\nurl = \"http://127.0.0.1:9000/ask\"\n",
        )
        .unwrap();
        let ask = hub.method("ask").unwrap();
        assert_eq!(
            (
                ask.action,
                ask.upstream.as_ref().map(|u| u.to_string()),
                hub.events_url.as_ref().map(|u| u.to_string())
            ),
            (
                Action::Upstream,
                Some("http://127.0.0.1:9000/ask".to_owned()),
                Some("http://127.0.0.1:9000/events".to_owned())
            )
        );
    }
}
