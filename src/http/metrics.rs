//! `GET /metrics`: the Prometheus text exposition ([`crate::metrics`]) of every shard's
//! counters, summed by the shard that serves the scrape. With `metrics.key_hash` set, a scrape
//! must carry `Authorization: Bearer KEY` whose SHA-256 is that hash (401 otherwise).

use crate::auth::keys::hash_key;
use crate::auth::token::bearer;
use crate::metrics::{CONTENT_TYPE, ProcessSample, render};
use crate::protocol::http::{RequestHead, Response};
use crate::shard::ShardContext;

/// The exposition, or 401 when a key is configured and not presented.
pub fn respond(head: &RequestHead, ctx: &ShardContext) -> Response {
    if let Some(expected) = &ctx.config.metrics.key_hash {
        let presented = bearer(head).map(|key| hash_key(&key));
        if presented.as_deref() != Some(expected.as_str()) {
            return Response::json(401, r#"{"error":"a metrics key is required"}"#)
                .header("www-authenticate", "Bearer")
                .header("cache-control", "no-store");
        }
    }
    let text = render(&ctx.stats, &ProcessSample::read());
    Response::new(200)
        .body(CONTENT_TYPE, text)
        .header("cache-control", "no-store")
}
