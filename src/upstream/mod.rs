//! Upstream invocations: hub methods answered by a backend over HTTP, and connect/disconnect
//! events forwarded to one.
//!
//! A method bound to `upstream` ([`crate::hub::Action::Upstream`]) makes the session count the
//! invocation as running and ask the shard for an [`crate::hub::actions::Effect::Upstream`]
//! call. [`invoke`] then runs the call as its own task: it POSTs
//! `{hub, method, arguments, connectionId, virtualKeyId, userId}` through the shard's
//! [`UpstreamClient`], turns the answer into a Completion ([`completion_for`]) and hands it to
//! the session ([`crate::shard::sessions::SessionSlot::complete`]), which wakes its connection.
//! A session that ended meanwhile is simply not answered. Events ([`post_event`]) are
//! fire-and-forget: failures are logged, never seen by the connection.
//!
//! Only `http://` is supported; reach an `https` backend through a TLS-terminating proxy.

pub mod client;

use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

pub use client::{UpstreamClient, UpstreamError};

use crate::hub::actions::UpstreamCall;
use crate::protocol::http_client::{ClientResponse, HttpUrl};
use crate::protocol::signalr::json::{decode_value, encode_value};
use crate::protocol::signalr::{CompletionOutcome, Payload, Value};
use crate::shard::ShardContext;
use crate::shard::sessions::SessionSlot;

/// Who is calling, as the backend is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerInfo {
    /// The hub's name.
    pub hub: String,
    /// The caller's public connection id.
    pub connection_id: String,
    /// The caller's virtual key id, if it connected with one.
    pub key_id: Option<i64>,
    /// The caller's user (its virtual key id in decimal), if it has one.
    pub user: Option<String>,
}

/// The JSON body of an upstream invocation:
/// `{"hub","method","arguments":[…],"connectionId","virtualKeyId","userId"}`. Arguments keep
/// their JSON text; MessagePack ones are converted (binary becomes base64, as in JSON hubs).
pub fn invocation_body(caller: &CallerInfo, method: &str, arguments: &[Payload]) -> Bytes {
    let arguments = arguments
        .iter()
        // Payloads were validated by the codecs; an undecodable one would be sent as null.
        .map(|payload| payload.to_value().unwrap_or(Value::Null))
        .collect();
    let body = Value::Map(vec![
        (key("hub"), Value::Str(caller.hub.clone())),
        (key("method"), Value::Str(method.to_owned())),
        (key("arguments"), Value::Array(arguments)),
        (
            key("connectionId"),
            Value::Str(caller.connection_id.clone()),
        ),
        (
            key("virtualKeyId"),
            caller.key_id.map_or(Value::Null, Value::Int),
        ),
        (
            key("userId"),
            caller.user.clone().map_or(Value::Null, Value::Str),
        ),
    ]);
    encode(&body)
}

/// The JSON body of a hub event: `{"event","hub","connectionId","virtualKeyId"}`.
pub fn event_body(event: &str, caller: &CallerInfo) -> Bytes {
    encode(&Value::Map(vec![
        (key("event"), Value::Str(event.to_owned())),
        (key("hub"), Value::Str(caller.hub.clone())),
        (
            key("connectionId"),
            Value::Str(caller.connection_id.clone()),
        ),
        (
            key("virtualKeyId"),
            caller.key_id.map_or(Value::Null, Value::Int),
        ),
    ]))
}

fn key(name: &str) -> Value {
    Value::Str(name.to_owned())
}

fn encode(value: &Value) -> Bytes {
    let mut out = BytesMut::new();
    encode_value(value, &mut out);
    out.freeze()
}

/// The Completion for the backend's answer to a call of `method`:
/// - 2xx: the body's JSON as the result (an empty body or 204: null);
/// - another status: a HubException with the body's `error` string if it is JSON with one,
///   else `upstream answered <status>`;
/// - no answer: a HubException saying why, without addresses ([`UpstreamError::client_text`]).
pub fn completion_for(
    method: &str,
    answer: Result<ClientResponse, UpstreamError>,
) -> CompletionOutcome {
    let hub_exception = |text: &str| {
        CompletionOutcome::Error(format!(
            "An unexpected error occurred invoking '{method}' on the server. HubException: {text}"
        ))
    };
    let response = match answer {
        Ok(response) => response,
        Err(error) => return hub_exception(&error.client_text()),
    };
    let body = trimmed(&response.body);
    if (200..300).contains(&response.status) {
        if response.status == 204 || body.is_empty() {
            return CompletionOutcome::Result(Payload::from_value(Value::Null));
        }
        return match decode_value(&body) {
            // Validated: relayed as the backend wrote it (transcoded for MessagePack callers).
            Ok(_) => CompletionOutcome::Result(Payload::Json(body)),
            Err(_) => hub_exception("upstream answered with a body that is not JSON"),
        };
    }
    let error = decode_value(&body).ok().and_then(|value| {
        value
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    match error {
        Some(text) => hub_exception(&text),
        None => hub_exception(&format!("upstream answered {}", response.status)),
    }
}

/// `body` without surrounding JSON white space.
fn trimmed(body: &Bytes) -> Bytes {
    let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = body.iter().position(|b| !is_space(b)).unwrap_or(body.len());
    let end = body
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |at| at + 1);
    body.slice(start..end)
}

/// What the backend is told about the caller of `slot`.
fn caller_of(slot: &SessionSlot) -> CallerInfo {
    CallerInfo {
        hub: slot.hub.name.clone(),
        connection_id: slot.connection_id.to_string(),
        key_id: slot.session.borrow().key_id(),
        user: slot.user.borrow().clone(),
    }
}

/// Runs an upstream call for the session in `slot` as a task of its own; its Completion is
/// handed to the session when the backend answers (or the call fails or times out).
pub fn invoke(ctx: &ShardContext, slot: Rc<SessionSlot>, call: UpstreamCall) {
    let client = Rc::clone(&ctx.upstream);
    let body = invocation_body(&caller_of(&slot), &call.method, &call.arguments);
    let started = quanta::Instant::now();
    monoio::spawn(async move {
        let answer = client.post_json(&call.url, &body).await;
        if let Err(error) = &answer {
            warn!(method = %call.method, url = %call.url, %error, "upstream call failed");
        }
        let hub = slot.hub.index;
        crate::stats::local(|s| s.invocation_completed(hub, started.elapsed()));
        slot.complete(call.invocation_id, completion_for(&call.method, answer));
    });
}

/// POSTs `{"event": event, …}` for the session in `slot` to its hub's `events_url`, if it has
/// one, without waiting; a failure is logged and nothing else.
pub fn post_event(ctx: &ShardContext, slot: &SessionSlot, event: &'static str) {
    let Some(url) = slot.hub.events_url.clone() else {
        return;
    };
    let body = event_body(event, &caller_of(slot));
    let client = Rc::clone(&ctx.upstream);
    monoio::spawn(send_event(client, url, body, event));
}

async fn send_event(client: Rc<UpstreamClient>, url: Arc<HttpUrl>, body: Bytes, event: &str) {
    match client.post_json(&url, &body).await {
        Ok(response) if (200..300).contains(&response.status) => {
            debug!(%url, event, "hub event delivered");
        }
        Ok(response) => warn!(%url, event, status = response.status, "hub event refused"),
        Err(error) => warn!(%url, event, %error, "hub event not delivered"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> CallerInfo {
        CallerInfo {
            hub: "chat".into(),
            connection_id: "c-1".into(),
            key_id: Some(7),
            user: Some("7".into()),
        }
    }

    fn response(status: u16, body: &str) -> Result<ClientResponse, UpstreamError> {
        Ok(ClientResponse {
            status,
            headers: Vec::new(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            keep_alive: true,
        })
    }

    fn error_text(outcome: CompletionOutcome) -> String {
        match outcome {
            CompletionOutcome::Error(text) => text,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn the_invocation_body_names_hub_method_caller_and_json_arguments() {
        let arguments = vec![
            Payload::Json(Bytes::from_static(b"{\"a\":[1,2]}")),
            Payload::string("x"),
        ];
        let body = invocation_body(&caller(), "Ask", &arguments);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"hub":"chat","method":"Ask","arguments":[{"a":[1,2]},"x"],"connectionId":"c-1","virtualKeyId":7,"userId":"7"}"#
        );
        let anonymous = CallerInfo {
            key_id: None,
            user: None,
            ..caller()
        };
        let body = event_body("connected", &anonymous);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"event":"connected","hub":"chat","connectionId":"c-1","virtualKeyId":null}"#
        );
    }

    #[test]
    fn a_2xx_answer_is_the_result_and_an_empty_one_is_null() {
        assert_eq!(
            completion_for("Ask", response(200, " {\"ok\":true}\n")),
            CompletionOutcome::Result(Payload::Json(Bytes::from_static(b"{\"ok\":true}")))
        );
        for (status, body) in [(204, ""), (200, ""), (201, " \r\n")] {
            assert_eq!(
                completion_for("Ask", response(status, body)),
                CompletionOutcome::Result(Payload::from_value(Value::Null))
            );
        }
        assert!(
            error_text(completion_for("Ask", response(200, "nope")))
                .ends_with("HubException: upstream answered with a body that is not JSON")
        );
    }

    #[test]
    fn other_statuses_are_hub_exceptions_with_the_error_field_or_the_status() {
        assert_eq!(
            error_text(completion_for(
                "Ask",
                response(422, r#"{"error":"No such task"}"#)
            )),
            "An unexpected error occurred invoking 'Ask' on the server. HubException: No such task"
        );
        assert!(
            error_text(completion_for(
                "Ask",
                response(502, "<html>bad gateway</html>")
            ))
            .ends_with("HubException: upstream answered 502")
        );
        assert!(
            error_text(completion_for("Ask", response(500, r#"{"error":5}"#)))
                .ends_with("HubException: upstream answered 500")
        );
    }

    #[test]
    fn a_failed_call_says_why_without_the_address() {
        let text = error_text(completion_for(
            "Ask",
            Err(UpstreamError::Timeout {
                authority: "10.0.0.1:80".into(),
                after: std::time::Duration::from_millis(200),
            }),
        ));
        assert!(
            text.ends_with("HubException: upstream did not answer within 200ms"),
            "{text}"
        );
        let text = error_text(completion_for(
            "Ask",
            Err(UpstreamError::Connect {
                authority: "10.0.0.1:80".into(),
                source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            }),
        ));
        assert!(
            text.ends_with("HubException: upstream unavailable"),
            "{text}"
        );
    }
}
