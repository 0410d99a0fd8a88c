//! `GET /`: the live status page, one self-contained HTML document ([`PAGE`], inline CSS and
//! JavaScript, no external assets) served from the binary.
//!
//! The page holds no numbers of its own. A small SignalR JSON client written in it negotiates
//! with the Health hub, opens its WebSocket, answers pings, invokes the hub's `health` method
//! every few seconds and renders each `HealthStatus` push: the same snapshot the Health hub
//! gives every client ([`crate::stats::Stats::snapshot`]). So the page shows exactly what the
//! hub's auth lets the viewer see: when the Health hub needs a key, the page says so and asks
//! for one.
//!
//! The response carries a strict `Content-Security-Policy`: nothing loads but the page itself,
//! its one inline script and one inline style (allowed by their SHA-256, computed from the
//! embedded document once) and requests to its own origin (negotiate and the WebSocket).

use std::sync::OnceLock;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::config::HubAuth;
use crate::hub::{Action, Hubs};
use crate::protocol::http::Response;
use crate::protocol::signalr::HubProtocol;
use crate::shard::ShardContext;

/// The page as embedded in the binary; [`render`] fills in the Health hub.
pub const PAGE: &str = include_str!("status_page.html");

/// The page, with the `Content-Security-Policy` that allows exactly its inline code.
pub fn respond(ctx: &ShardContext) -> Response {
    Response::new(200)
        .body("text/html; charset=utf-8", render(health_hub(&ctx.hubs)))
        .header("content-security-policy", content_security_policy())
        .header("cache-control", "no-cache")
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .header("x-frame-options", "DENY")
}

/// Where the page finds the Health hub: its path, who may connect, the method to invoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthHub {
    /// The hub's path, e.g. `/hubs/health`.
    pub path: String,
    /// `anonymous`, `virtual-key` or `admin` (the page asks for a key unless anonymous).
    pub auth: &'static str,
    /// The method bound to the `health` action, e.g. `GetHealth`.
    pub method: String,
}

/// The Health hub the page connects to: among the hubs with a `health` method that speak JSON,
/// the seed's `/hubs/health` if served, else the first by path. `None` when there is none.
pub fn health_hub(hubs: &Hubs) -> Option<HealthHub> {
    hubs.using(Action::Health)
        .into_iter()
        .filter(|hub| hub.protocols.contains(&HubProtocol::Json))
        .filter_map(|hub| {
            let method = hub.method_bound_to(Action::Health)?.to_owned();
            let auth = match hub.auth {
                HubAuth::Anonymous => "anonymous",
                HubAuth::VirtualKey => "virtual-key",
                HubAuth::Admin => "admin",
            };
            Some(HealthHub {
                path: hub.path.clone(),
                auth,
                method,
            })
        })
        .min_by_key(|hub| (hub.path != "/hubs/health", hub.path.clone()))
}

/// The page with the Health hub written into its `<meta name="ringhub-health-hub">` (outside
/// the script and the style, so their hashes stay those of [`PAGE`]).
pub fn render(hub: Option<HealthHub>) -> String {
    let (path, auth, method) = match &hub {
        Some(hub) => (hub.path.as_str(), hub.auth, hub.method.as_str()),
        None => ("", "", ""),
    };
    PAGE.replacen("{{health_hub_path}}", &escape_attribute(path), 1)
        .replacen("{{health_hub_auth}}", auth, 1)
        .replacen("{{health_hub_method}}", &escape_attribute(method), 1)
}

/// `default-src 'none'` with the inline script and style allowed by hash, and `connect-src
/// 'self'` (CSP 3 matches `ws:`/`wss:` to the page's own host with it).
pub fn content_security_policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
             img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            source_hash(inline_block(PAGE, "script")),
            source_hash(inline_block(PAGE, "style")),
        )
    })
}

/// The text between `<tag>` and `</tag>` (the page has one of each; a test holds it to that).
fn inline_block<'a>(page: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    page.split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&close))
        .map_or("", |(inner, _)| inner)
}

/// A CSP hash source: `sha256-` and the base64 of the SHA-256 of `text` as UTF-8.
fn source_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// `text` safe inside a double-quoted HTML attribute.
fn escape_attribute(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, HubConfig};
    use crate::hub::definitions;

    fn hubs(config: &Config) -> Hubs {
        Hubs::new(&definitions(config).unwrap())
    }

    #[test]
    fn the_page_has_one_inline_script_and_one_inline_style_and_nothing_else_executable() {
        for tag in ["script", "style"] {
            assert_eq!(PAGE.matches(&format!("<{tag}")).count(), 1, "<{tag}>");
            assert!(
                !inline_block(PAGE, tag).trim().is_empty(),
                "<{tag}> is empty"
            );
        }
        let lower = PAGE.to_ascii_lowercase();
        for forbidden in [
            " style=",
            " onclick=",
            " onload=",
            " onsubmit=",
            "=\"javascript:",
        ] {
            assert!(!lower.contains(forbidden), "{forbidden}");
        }
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let lower = PAGE.to_ascii_lowercase();
        for external in ["http://", "https://", "//cdn", "@import", "url(", " src="] {
            assert!(!lower.contains(external), "{external}");
        }
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_script_and_style_by_hash() {
        let policy = content_security_policy();
        assert!(policy.starts_with("default-src 'none'; "), "{policy}");
        let script = source_hash(inline_block(PAGE, "script"));
        let style = source_hash(inline_block(PAGE, "style"));
        assert!(
            policy.contains(&format!("script-src '{script}';")),
            "{policy}"
        );
        assert!(
            policy.contains(&format!("style-src '{style}';")),
            "{policy}"
        );
        assert!(policy.contains("connect-src 'self';"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        // The known digest of a known text, so the encoding is CSP's (standard base64).
        assert_eq!(
            source_hash("alert(1)"),
            "sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI="
        );
    }

    #[test]
    fn the_seed_health_hub_is_written_into_the_page_and_the_hashed_blocks_do_not_change() {
        let hub = health_hub(&hubs(&Config::default()));
        assert_eq!(
            hub,
            Some(HealthHub {
                path: "/hubs/health".into(),
                auth: "anonymous",
                method: "GetHealth".into(),
            })
        );
        let page = render(hub);
        assert!(page.contains(
            r#"<meta name="ringhub-health-hub" content="/hubs/health" data-auth="anonymous" data-method="GetHealth">"#
        ));
        assert!(!page.contains("{{"));
        for tag in ["script", "style"] {
            assert_eq!(inline_block(&page, tag), inline_block(PAGE, tag));
        }
    }

    #[test]
    fn a_key_protected_health_hub_is_announced_so_the_page_asks_for_a_key() {
        let mut config = Config::default();
        config.seed.enabled = false;
        config.hubs.push(HubConfig {
            name: "ops".into(),
            path: "/ops/\"health\"".into(),
            auth: HubAuth::Admin,
            max_message_size: None,
            methods: vec![("Snapshot".into(), "health".into())],
            protocols: vec!["json".into()],
            join_on_connect: Vec::new(),
            redis_name: None,
            events_url: None,
        });
        let page = render(health_hub(&hubs(&config)));
        assert!(page.contains(
            r#"content="/ops/&quot;health&quot;" data-auth="admin" data-method="Snapshot">"#
        ));
    }

    #[test]
    fn without_a_health_hub_the_page_says_so_instead_of_connecting() {
        let mut config = Config::default();
        config.seed.enabled = false;
        assert_eq!(health_hub(&hubs(&config)), None);
        let page = render(None);
        assert!(page.contains(r#"content="" data-auth="" data-method="""#));
    }
}
