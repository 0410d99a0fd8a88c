//! The HTTP surface: which path is which endpoint, and the plain (non-upgrade) responses.
//! One file per endpoint; sockets and keep-alive belong to [`crate::transport::connection`].

pub mod cors;
pub mod echo;
pub mod health;
pub mod metrics;
pub mod negotiate;
pub mod publish;
pub mod status_page;

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;

use crate::config::Config;
use crate::hub::{HubDefinition, Hubs};
use crate::protocol::http::{Method, RequestHead, Response};
use crate::shard::ShardContext;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`: liveness with a JSON body.
    Health,
    /// `GET /health/live`: the process is up.
    Live,
    /// `GET /health/ready`: the server should get traffic (backplane up).
    Ready,
    /// The raw WebSocket echo route (conformance testing), when enabled.
    Echo,
    /// `GET /metrics` (Prometheus), when enabled.
    Metrics,
    /// `POST {hub}/negotiate` (and its CORS preflight).
    Negotiate(Rc<HubDefinition>),
    /// `GET {hub}` with a WebSocket upgrade: a SignalR connection.
    Hub(Rc<HubDefinition>),
    /// `/api/hubs/…`: the REST publish API ([`publish`]).
    Publish,
    /// `GET /`: the live status page ([`status_page`]), when enabled.
    StatusPage,
    /// Nothing is served at this path.
    NotFound,
}

/// Finds the route for a request head.
pub fn route(head: &RequestHead, config: &Config, hubs: &Hubs) -> Route {
    let path = head.path();
    if config.echo.enabled && path == config.echo.path {
        return Route::Echo;
    }
    if config.metrics.enabled && path == config.metrics.path {
        return Route::Metrics;
    }
    if let Some(hub) = hubs.at(path) {
        return Route::Hub(hub);
    }
    if let Some(hub) = path
        .strip_suffix("/negotiate")
        .and_then(|base| hubs.at(base))
    {
        return Route::Negotiate(hub);
    }
    if path.starts_with(publish::request::PREFIX) {
        return Route::Publish;
    }
    match path {
        "/health" => Route::Health,
        "/health/live" => Route::Live,
        "/health/ready" => Route::Ready,
        "/" if config.status_page.enabled => Route::StatusPage,
        _ => Route::NotFound,
    }
}

/// Answers a plain HTTP request (every route but the WebSocket ones).
pub async fn respond(
    route: &Route,
    head: &RequestHead,
    body: Bytes,
    peer: SocketAddr,
    ctx: &ShardContext,
) -> Response {
    match route {
        Route::Health => match head.method {
            Method::Get | Method::Head => health::respond(ctx),
            _ => method_not_allowed("GET, HEAD"),
        },
        Route::Live => match head.method {
            Method::Get | Method::Head => health::live(),
            _ => method_not_allowed("GET, HEAD"),
        },
        Route::Ready => match head.method {
            Method::Get | Method::Head => health::ready(ctx),
            _ => method_not_allowed("GET, HEAD"),
        },
        Route::Metrics => match head.method {
            Method::Get | Method::Head => metrics::respond(head, ctx),
            _ => method_not_allowed("GET, HEAD"),
        },
        Route::Negotiate(hub) => {
            let started = quanta::Instant::now();
            let response = negotiate::respond(hub, head, peer.ip(), ctx).await;
            crate::stats::local(|s| s.negotiated(started.elapsed()));
            response
        }
        Route::Publish => publish::respond(head, body, ctx).await,
        Route::StatusPage => match head.method {
            Method::Get | Method::Head => status_page::respond(ctx),
            _ => method_not_allowed("GET, HEAD"),
        },
        Route::Echo | Route::Hub(_) => Response::text(400, "WebSocket upgrade expected"),
        Route::NotFound => Response::json(404, r#"{"error":"not found"}"#),
    }
}

/// 405 with the `Allow` header naming what is allowed.
fn method_not_allowed(allow: &'static str) -> Response {
    Response::json(405, r#"{"error":"method not allowed"}"#).header("allow", allow)
}
