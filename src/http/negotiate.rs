//! `POST {hub}/negotiate`: issues a connection id and token for a WebSocket connect.
//!
//! The token's first byte names this shard, so the WebSocket that presents it is served here
//! whichever shard accepts it. Errors ASP.NET reports in the body (`{"error": …}`, status 200)
//! are reported the same way.

use std::rc::Rc;

use crate::auth::Principal;
use crate::http::cors;
use crate::hub::HubDefinition;
use crate::hub::access::{Caller, admit, unix_now};
use crate::hub::identity::{new_connection_id, new_connection_token};
use crate::protocol::http::{Method, RequestHead, Response};
use crate::protocol::query::Query;
use crate::protocol::signalr::negotiate::{NegotiateRequest, NegotiateResponse, error_document};
use crate::shard::ShardContext;
use crate::shard::negotiations::{Negotiation, Slot};

/// Answers a negotiate request (or its preflight).
pub async fn respond(hub: &Rc<HubDefinition>, head: &RequestHead, ctx: &ShardContext) -> Response {
    let cors_config = &ctx.config.cors;
    if cors::is_preflight(head) {
        return cors::preflight(head, cors_config, "POST, OPTIONS");
    }
    if head.method != Method::Post {
        return Response::json(405, r#"{"error":"method not allowed"}"#).header("allow", "POST");
    }
    let admitted = admit(
        hub.auth,
        head,
        &ctx.keys,
        &ctx.config.auth.admin_key_hashes,
        unix_now(),
    )
    .await;
    let response = match (
        admitted,
        NegotiateRequest::from_query(&Query::new(head.query())),
    ) {
        (Err(error), _) => Response::json(error.status(), error_document(&error.to_string())),
        (Ok(_), Err(error)) => Response::json(200, error_document(&error.to_string())),
        (Ok(caller), Ok(request)) => {
            let key_id = match caller {
                Caller::Key(Principal::VirtualKey { id, .. }) => Some(id),
                _ => None,
            };
            match ctx.quota.check(key_id) {
                Ok(()) => negotiate(hub, request, ctx),
                Err(error) => Response::json(error.status(), error_document(&error.to_string())),
            }
        }
    };
    cors::allow(
        response.header("cache-control", "no-store"),
        head,
        cors_config,
    )
}

fn negotiate(hub: &Rc<HubDefinition>, request: NegotiateRequest, ctx: &ShardContext) -> Response {
    let shards = ctx.config.workers.get();
    // v0 clients connect with the connection id itself, so it must carry the home shard.
    let ids = if request.negotiate_version > 0 {
        new_connection_id(ctx.id, shards)
            .and_then(|id| Ok((id, new_connection_token(ctx.id, shards)?)))
    } else {
        new_connection_token(ctx.id, shards).map(|id| (id.clone(), id))
    };
    let Ok((connection_id, token)) = ids else {
        return Response::json(500, error_document("Could not create a connection id."));
    };
    let stateful = request.use_stateful_reconnect && ctx.config.signalr.stateful_reconnect;
    let body = NegotiateResponse {
        negotiate_version: request.negotiate_version,
        connection_id: &connection_id,
        connection_token: &token,
        use_stateful_reconnect: stateful,
    }
    .to_json();
    ctx.negotiations.insert(
        token.into(),
        Negotiation {
            connection_id: connection_id.into(),
            hub: Rc::clone(hub),
            expires: ctx.timers.now() + ctx.config.signalr.disconnect_timeout,
            stateful,
            slot: Slot::Waiting,
        },
    );
    Response::json(200, body)
}
