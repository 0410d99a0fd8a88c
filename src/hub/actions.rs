//! The built-in actions hub methods are bound to: argument binding with ASP.NET's error texts,
//! and what each action answers.

use thiserror::Error;

use super::{Action, Param};
use crate::protocol::signalr::{CompletionOutcome, HubMessage, Invocation, Payload, Value};

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
            Self::CountTo { .. } => None,
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
    /// The method invokes a client method on the caller and completes with the client's result.
    AskCaller {
        /// The client method.
        target: String,
        /// Its arguments.
        arguments: Vec<Payload>,
    },
}

/// Who a published message is for, on the caller's hub.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Send a message to other connections (the caller included when it is a recipient).
    Publish {
        /// The recipients.
        target: Target,
        /// The message (an invocation without id).
        message: HubMessage,
    },
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
    let group = |arg: String| match group_template {
        Some(template) => template.replace("{0}", &arg),
        None => arg,
    };
    let params = action.params();
    let expected = params.iter().filter(|p| **p != Param::Upload).count();
    let expected_streams = params.len() - expected;
    if invocation.arguments.len() != expected {
        return Err(BindError::Arity {
            given: invocation.arguments.len(),
            expected,
        });
    }
    if invocation.stream_ids.len() != expected_streams {
        return Err(BindError::Streams {
            given: invocation.stream_ids.len(),
            expected: expected_streams,
        });
    }
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
        Action::Throw => {
            let message = string_arg(&mut args)?;
            Outcome::Complete(CompletionOutcome::Error(format!(
                "An unexpected error occurred invoking '{method_name}' on the server. HubException: {message}"
            )))
        }
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
        Action::JoinGroup => {
            let group = group(string_arg(&mut args)?);
            caller.effects.push(Effect::JoinGroup(group));
            Outcome::Complete(CompletionOutcome::Void)
        }
        Action::LeaveGroup => {
            let group = group(string_arg(&mut args)?);
            caller.effects.push(Effect::LeaveGroup(group));
            Outcome::Complete(CompletionOutcome::Void)
        }
        Action::SendToGroup => {
            let group = group(string_arg(&mut args)?);
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
            caller
                .effects
                .push(Effect::JoinGroup(format!("{kind}-{task}")));
            caller
                .effects
                .push(Effect::JoinGroup(format!("content-{task}")));
            Outcome::Complete(CompletionOutcome::Void)
        }
        Action::JoinKeyGroup => {
            let Some(id) = caller.key_id else {
                return Ok(Outcome::Complete(CompletionOutcome::Error(format!(
                    "An unexpected error occurred invoking '{method_name}' on the server. \
                     HubException: This method needs a virtual key."
                ))));
            };
            let template = group_template.unwrap_or("vkey-{vkey}");
            caller.effects.push(Effect::JoinGroup(
                template.replace("{vkey}", &id.to_string()),
            ));
            Outcome::Complete(CompletionOutcome::Void)
        }
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
}
