//! CORS for browser clients (Fetch standard; ASP.NET's SignalR guidance): only configured
//! origins, echoed exactly with credentials allowed, never `*`.

use crate::config::CorsConfig;
use crate::protocol::http::{Method, RequestHead, Response};

/// Adds the CORS headers `head`'s origin is entitled to.
pub fn allow(response: Response, head: &RequestHead, config: &CorsConfig) -> Response {
    let Some(origin) = allowed_origin(head, config) else {
        return response;
    };
    response
        .header("access-control-allow-origin", origin)
        .header("access-control-allow-credentials", "true")
        .header("vary", "Origin")
}

/// Whether `head` is a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`).
pub fn is_preflight(head: &RequestHead) -> bool {
    head.method == Method::Options && head.header("access-control-request-method").is_some()
}

/// The answer to a preflight: 204, plus permission when the origin is allowed.
pub fn preflight(head: &RequestHead, config: &CorsConfig, methods: &str) -> Response {
    let mut response = Response::new(204);
    if allowed_origin(head, config).is_some() {
        let headers = head
            .header_str("access-control-request-headers")
            .filter(|h| {
                h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ", -_".contains(c))
            })
            .unwrap_or("authorization, content-type, x-requested-with, x-signalr-user-agent")
            .to_owned();
        response = response
            .header("access-control-allow-methods", methods.to_owned())
            .header("access-control-allow-headers", headers)
            .header("access-control-max-age", "600");
    }
    allow(response, head, config)
}

fn allowed_origin(head: &RequestHead, config: &CorsConfig) -> Option<String> {
    let origin = head.header_str("origin")?;
    config
        .allowed_origins
        .iter()
        .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
        .then(|| origin.to_owned())
}
