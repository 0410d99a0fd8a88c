//! The HTTP surface: which path is which endpoint, and the plain (non-upgrade) responses.
//! One file per endpoint; sockets and keep-alive belong to [`crate::transport::connection`].

pub mod echo;
pub mod health;

use bytes::Bytes;

use crate::config::Config;
use crate::protocol::http::{Method, RequestHead, Response};
use crate::shard::ShardContext;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`: liveness with a JSON body.
    Health,
    /// The raw WebSocket echo route (conformance testing), when enabled.
    Echo,
    /// Nothing is served at this path.
    NotFound,
}

/// Finds the route for a request head.
pub fn route(head: &RequestHead, config: &Config) -> Route {
    let path = head.path();
    if config.echo.enabled && path == config.echo.path {
        return Route::Echo;
    }
    match path {
        "/health" => Route::Health,
        _ => Route::NotFound,
    }
}

/// Answers a plain HTTP request (every route but the WebSocket ones).
pub fn respond(route: Route, head: &RequestHead, _body: Bytes, ctx: &ShardContext) -> Response {
    match route {
        Route::Health => match head.method {
            Method::Get | Method::Head => health::respond(ctx),
            _ => method_not_allowed("GET, HEAD"),
        },
        Route::Echo => Response::text(400, "WebSocket upgrade expected"),
        Route::NotFound => Response::json(404, r#"{"error":"not found"}"#),
    }
}

/// 405 with the `Allow` header naming what is allowed.
fn method_not_allowed(allow: &'static str) -> Response {
    Response::json(405, r#"{"error":"method not allowed"}"#).header("allow", allow)
}
