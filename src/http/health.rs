//! `GET /health`: the process is up and this shard answers, with the readiness facts and the
//! backplane's state. `GET /health/live`: the process is up. `GET /health/ready`: it should get
//! traffic: every shard accepts connections, the backplane is up (always, in process) and no
//! graceful stop began (SIGTERM: draining); 503 with the reason otherwise. The bodies are JSON
//! so load balancers and humans read the same thing, from the same source as the Health hub's
//! snapshot ([`crate::stats::Stats::readiness`]).

use crate::protocol::http::Response;
use crate::shard::ShardContext;

/// The health document as seen from the shard that serves the request.
pub fn respond(ctx: &ShardContext) -> Response {
    let readiness = ctx.stats.readiness();
    let body = serde_json::json!({
        "status": "ok",
        "ready": readiness.is_ready(),
        "accepting": readiness.accepting,
        "draining": readiness.draining,
        "version": env!("CARGO_PKG_VERSION"),
        "driver": ctx.driver.as_str(),
        "shards": ctx.config.workers.get(),
        "shard": {
            "id": ctx.id.0,
            "connections": ctx.connections.len(),
        },
        "uptime_seconds": ctx.started.elapsed().as_secs(),
        "backplane": backplane(ctx),
    });
    Response::json(200, body.to_string()).header("cache-control", "no-store")
}

fn backplane(ctx: &ShardContext) -> serde_json::Value {
    let up = ctx.stats.backplane_up();
    serde_json::json!({
        "kind": if ctx.backplane.is_redis() { "redis" } else { "in-process" },
        "state": if up { "up" } else { "down" },
        "dropped": ctx.stats.totals().backplane_dropped,
    })
}

/// `/health/live`: answering at all is the answer.
pub fn live() -> Response {
    Response::json(200, r#"{"status":"live"}"#).header("cache-control", "no-store")
}

/// `/health/ready`: 200 while ready, else 503 with the reason (draining, not accepting,
/// backplane down).
pub fn ready(ctx: &ShardContext) -> Response {
    let readiness = ctx.stats.readiness();
    let (status, text) = match readiness.reason() {
        None => (200, "ready"),
        Some(reason) => (503, reason),
    };
    let body = serde_json::json!({
        "status": text,
        "ready": readiness.is_ready(),
        "accepting": readiness.accepting,
        "draining": readiness.draining,
        "backplane": backplane(ctx),
    });
    Response::json(status, body.to_string()).header("cache-control", "no-store")
}
