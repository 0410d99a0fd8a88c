//! `POST {hub}/negotiate`: issues a connection id and token for a WebSocket connect.
//!
//! Nothing is stored: the token is signed with the cluster secret and carries the connection
//! id (whose first byte names this shard), the hub, what was agreed and an expiry
//! ([`crate::hub::identity`]), so the WebSocket that presents it may land on any shard of any
//! instance sharing the secret. Errors ASP.NET reports in the body (`{"error": …}`, status 200)
//! are reported the same way.

use std::net::IpAddr;
use std::rc::Rc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::auth::Principal;
use crate::http::cors;
use crate::hub::HubDefinition;
use crate::hub::access::{Caller, admit, unix_now};
use crate::hub::identity::{TokenClaims, hub_tag, new_connection_id_bytes, unix_millis};
use crate::protocol::http::{Method, RequestHead, Response};
use crate::protocol::query::Query;
use crate::protocol::signalr::negotiate::{NegotiateRequest, NegotiateResponse, error_document};
use crate::shard::ShardContext;
use crate::stats::RefusalReason;
use crate::transport::per_ip::PerIpRefusal;

/// Answers a negotiate request (or its preflight) from a client at `ip`.
pub async fn respond(
    hub: &Rc<HubDefinition>,
    head: &RequestHead,
    ip: IpAddr,
    ctx: &ShardContext,
) -> Response {
    let cors_config = &ctx.config.cors;
    if cors::is_preflight(head) {
        return cors::preflight(head, cors_config, "POST, OPTIONS");
    }
    if head.method != Method::Post {
        return Response::json(405, r#"{"error":"method not allowed"}"#).header("allow", "POST");
    }
    // Before the key is looked up: a flood costs a hash and a compare-and-swap, not a
    // key-store round trip.
    if let Err(refusal) = ctx.per_ip.negotiate(ip) {
        crate::stats::local(|s| s.refused(RefusalReason::NegotiateRatePerIp));
        let retry_after = match refusal {
            PerIpRefusal::NegotiateRate { retry_after } => retry_after.as_secs().max(1),
            PerIpRefusal::Connections(_) => 1,
        };
        let response = Response::json(429, error_document(&refusal.to_string()))
            .header("retry-after", retry_after.to_string())
            .header("cache-control", "no-store");
        return cors::allow(response, head, cors_config);
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
                Err(error) => {
                    crate::stats::local(|s| s.refused(error.refusal()));
                    Response::json(error.status(), error_document(&error.to_string()))
                }
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
    let Ok(id) = new_connection_id_bytes(ctx.id, ctx.config.workers.get()) else {
        return Response::json(500, error_document("Could not create a connection id."));
    };
    let stateful = request.use_stateful_reconnect && ctx.config.signalr.stateful_reconnect;
    let lifetime = u64::try_from(ctx.config.signalr.disconnect_timeout.as_millis());
    let claims = TokenClaims {
        id,
        hub: hub_tag(&hub.path),
        stateful,
        // v0 clients connect with the connection id itself, so it must be the token.
        v0: request.negotiate_version == 0,
        expires_unix_ms: unix_millis().saturating_add(lifetime.unwrap_or(u64::MAX)),
    };
    let token = ctx.tokens.issue(&claims);
    let connection_id = if claims.v0 {
        token.clone()
    } else {
        URL_SAFE_NO_PAD.encode(id)
    };
    let body = NegotiateResponse {
        negotiate_version: request.negotiate_version,
        connection_id: &connection_id,
        connection_token: &token,
        use_stateful_reconnect: stateful,
    }
    .to_json();
    Response::json(200, body)
}
