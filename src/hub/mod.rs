//! SignalR semantics: which hubs exist, which methods they have, and what each method does.
//! Never touches a socket: a [`session::Session`] turns hub messages into outgoing hub messages
//! and the transport moves the bytes.
//!
//! Hubs are declarative: a path plus a table of method names, each bound to a built-in
//! [`Action`]. Method names match case-insensitively, as in ASP.NET Core.

pub mod actions;
pub mod identity;
pub mod session;

use std::collections::HashMap;
use std::rc::Rc;

use crate::config::Config;

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
    /// The parameters the action binds.
    pub fn params(self) -> &'static [Param] {
        match self {
            Self::Echo => &[Param::Any],
            Self::CallerConnectionId | Self::NeverEnding => &[],
            Self::SendMessageToCaller | Self::Throw | Self::RequestHeader => &[Param::Str],
            Self::CountTo => &[Param::Int],
            Self::ConcatUpload => &[Param::Upload],
        }
    }

    /// Whether the action answers with a stream.
    pub fn reply(self) -> Reply {
        match self {
            Self::CountTo | Self::NeverEnding => Reply::Stream,
            _ => Reply::Single,
        }
    }
}

/// One hub method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// The name as declared (used in error texts).
    pub name: String,
    /// What it does.
    pub action: Action,
}

/// A hub: a path and its methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubDefinition {
    /// A short name for logs and metrics.
    pub name: String,
    /// The URL path clients connect to (negotiate is `{path}/negotiate`).
    pub path: String,
    /// Methods by lowercased name.
    methods: HashMap<String, Method>,
}

impl HubDefinition {
    /// A hub with the given methods.
    pub fn new(name: &str, path: &str, methods: &[(&str, Action)]) -> Self {
        Self {
            name: name.to_owned(),
            path: path.to_owned(),
            methods: methods
                .iter()
                .map(|(n, a)| {
                    (
                        n.to_lowercase(),
                        Method {
                            name: (*n).to_owned(),
                            action: *a,
                        },
                    )
                })
                .collect(),
        }
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
            ],
        )
    }
}

/// The hubs a server serves, by path.
#[derive(Debug, Clone, Default)]
pub struct Hubs {
    by_path: HashMap<String, Rc<HubDefinition>>,
}

impl Hubs {
    /// The hubs the configuration enables.
    pub fn from_config(config: &Config) -> Self {
        let mut hubs = Self::default();
        if config.diagnostics.enabled {
            hubs.add(HubDefinition::diagnostics(&config.diagnostics.path));
        }
        hubs
    }

    /// Adds (or replaces) a hub.
    pub fn add(&mut self, hub: HubDefinition) {
        self.by_path.insert(hub.path.clone(), Rc::new(hub));
    }

    /// The hub served at exactly `path`.
    pub fn at(&self, path: &str) -> Option<&Rc<HubDefinition>> {
        self.by_path.get(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_lookup_ignores_case() {
        let hub = HubDefinition::diagnostics("/hubs/diagnostics");
        assert_eq!(hub.method("echo").map(|m| m.action), Some(Action::Echo));
        assert_eq!(hub.method("ECHO").map(|m| m.name.as_str()), Some("Echo"));
        assert!(hub.method("Nope").is_none());
    }
}
