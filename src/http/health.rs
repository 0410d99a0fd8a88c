//! `GET /health`: the process is up and this shard answers. The body is JSON so load balancers
//! and humans read the same thing.

use crate::protocol::http::Response;
use crate::shard::ShardContext;

/// The health document as seen from the shard that serves the request.
pub fn respond(ctx: &ShardContext) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "driver": ctx.driver.as_str(),
        "shards": ctx.config.workers.get(),
        "shard": {
            "id": ctx.id.0,
            "connections": ctx.connections.len(),
        },
        "uptime_seconds": ctx.started.elapsed().as_secs(),
    });
    Response::json(200, body.to_string()).header("cache-control", "no-store")
}
