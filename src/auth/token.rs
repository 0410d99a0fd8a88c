//! Where a request carries its API key, in Conduit's order (`conduit-hubs.md` §3.1): query
//! `access_token`, query `api_key`, `Authorization: Bearer <key>`, `X-API-Key`.
//!
//! Browsers cannot set headers on WebSocket requests, so the JS client sends
//! `?access_token=` there and `Authorization: Bearer` on `/negotiate`. Sans-IO: a parsed
//! [`RequestHead`] in, the key out; checking it is [`crate::auth::keys`]' job.

use crate::protocol::http::RequestHead;
use crate::protocol::query::Query;

/// Query parameters that may carry the key, in priority order (names are case-insensitive).
const QUERY_NAMES: [&str; 2] = ["access_token", "api_key"];

/// The API key a request presents, from the first place that has a non-empty one: query
/// `access_token`, query `api_key` (percent-decoded), `Authorization: Bearer <key>` (scheme
/// case-insensitive, key trimmed), then `X-API-Key` (trimmed). `None` when there is none; an
/// empty value counts as absent and the search goes on.
pub fn extract(head: &RequestHead) -> Option<String> {
    let query = Query::new(head.query());
    QUERY_NAMES
        .iter()
        .filter_map(|name| query.get(name))
        .find(|value| !value.is_empty())
        .map(|value| value.into_owned())
        .or_else(|| bearer(head))
        .or_else(|| non_empty(head.header_str("x-api-key")))
}

/// The credentials of an `Authorization: Bearer …` header, if that is its scheme.
pub fn bearer(head: &RequestHead) -> Option<String> {
    let value = head.header_str("authorization")?;
    let (scheme, credentials) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    non_empty(Some(credentials.trim_ascii()))
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value.filter(|v| !v.is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http::{HeadLimits, parse_head};

    fn head(target: &str, headers: &[&str]) -> RequestHead {
        let mut text = format!("GET {target} HTTP/1.1\r\nHost: h\r\n");
        for header in headers {
            text.push_str(header);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        parse_head(text.as_bytes(), &HeadLimits::default())
            .unwrap()
            .unwrap()
            .0
    }

    fn token(target: &str, headers: &[&str]) -> Option<String> {
        extract(&head(target, headers))
    }

    #[test]
    fn access_token_wins_over_every_other_place() {
        let headers = ["Authorization: Bearer b", "X-API-Key: x"];
        assert_eq!(
            token("/hubs/n?api_key=k&access_token=a", &headers).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn api_key_comes_before_the_headers() {
        let headers = ["Authorization: Bearer b", "X-API-Key: x"];
        assert_eq!(token("/hubs/n?api_key=k", &headers).as_deref(), Some("k"));
    }

    #[test]
    fn bearer_comes_before_x_api_key() {
        let headers = ["X-API-Key: x", "Authorization: Bearer b"];
        assert_eq!(token("/hubs/n", &headers).as_deref(), Some("b"));
        assert_eq!(token("/hubs/n", &["X-API-Key:  x  "]).as_deref(), Some("x"));
    }

    #[test]
    fn query_names_are_case_insensitive_and_values_percent_decoded() {
        assert_eq!(
            token("/hubs/n?Access_Token=condt_a%2Bb%3D", &[]).as_deref(),
            Some("condt_a+b=")
        );
        assert_eq!(token("/hubs/n?API_KEY=k%20", &[]).as_deref(), Some("k "));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_the_key_trimmed() {
        for header in [
            "Authorization: bearer key1",
            "Authorization: BEARER    key1   ",
            "authorization: BeArEr\tkey1",
        ] {
            assert_eq!(token("/", &[header]).as_deref(), Some("key1"), "{header}");
        }
    }

    #[test]
    fn other_schemes_and_bare_bearer_are_not_keys() {
        assert_eq!(token("/", &["Authorization: Basic dXNlcjpwYXNz"]), None);
        assert_eq!(token("/", &["Authorization: Bearer"]), None);
        assert_eq!(token("/", &["Authorization: Bearer    "]), None);
        assert_eq!(token("/", &["Authorization: Bearerkey"]), None);
        assert_eq!(
            token("/", &["Authorization: Basic x", "X-API-Key: x"]).as_deref(),
            Some("x")
        );
    }

    #[test]
    fn empty_values_count_as_absent() {
        assert_eq!(
            token("/?access_token=&api_key=k", &[]).as_deref(),
            Some("k")
        );
        assert_eq!(
            token("/?access_token&api_key=", &["Authorization: Bearer b"]).as_deref(),
            Some("b")
        );
        assert_eq!(
            token("/", &["Authorization: Bearer ", "X-API-Key: x"]).as_deref(),
            Some("x")
        );
        assert_eq!(token("/?access_token=", &["X-API-Key: "]), None);
    }

    #[test]
    fn a_request_without_any_key_has_none() {
        assert_eq!(token("/hubs/notifications?id=abc", &[]), None);
    }
}
