//! The built-in hub set of the product document (`seed-signalr-readme.md`, "Available Hubs"),
//! written in the same declarative form operators use in `[hubs.NAME]`: a `[hubs.NAME]` table
//! with the same path replaces a built-in hub, and `seed.enabled = false` removes them all.
//!
//! All seven are served: NavigationState, ImageGeneration, VideoGeneration, Notifications,
//! Admin, Health and ContentGeneration (whose `StreamResponse(requestId)` streams what backends
//! post to `response-{requestId}`).

use crate::config::{HubAuth, HubConfig};

fn hub(
    name: &str,
    path: &str,
    auth: HubAuth,
    methods: &[(&str, &str)],
    join: &[&str],
) -> HubConfig {
    HubConfig {
        name: name.to_owned(),
        path: path.to_owned(),
        auth,
        max_message_size: None,
        methods: methods
            .iter()
            .map(|(m, a)| ((*m).to_owned(), (*a).into()))
            .collect(),
        protocols: vec!["json".to_owned(), "messagepack".to_owned()],
        join_on_connect: join.iter().map(|g| (*g).to_owned()).collect(),
        redis_name: None,
        events_url: None,
    }
}

/// The seed hubs.
pub fn seed_hubs() -> Vec<HubConfig> {
    vec![
        hub(
            "navigation-state",
            "/hubs/navigation-state",
            HubAuth::VirtualKey,
            &[
                ("UpdateNavigation", "set-key-state:NavigationUpdated"),
                ("GetNavigationState", "get-key-state"),
            ],
            &[],
        ),
        hub(
            "image-generation",
            "/hubs/image-generation",
            HubAuth::VirtualKey,
            &[
                ("SubscribeToTask", "join-group:image-{0}"),
                ("UnsubscribeFromTask", "leave-group:image-{0}"),
            ],
            &[],
        ),
        hub(
            "video-generation",
            "/hubs/video-generation",
            HubAuth::VirtualKey,
            &[
                ("SubscribeToTask", "join-group:video-{0}"),
                ("UnsubscribeFromTask", "leave-group:video-{0}"),
            ],
            &[],
        ),
        hub(
            "notifications",
            "/hubs/notifications",
            HubAuth::VirtualKey,
            &[],
            &[],
        ),
        hub(
            "content-generation",
            "/hubs/content-generation",
            HubAuth::VirtualKey,
            &[
                ("SubscribeToTask", "subscribe-content"),
                ("SubscribeToAllTasks", "join-key-group:vkey-{vkey}-content"),
                ("StreamResponse", "stream-key:response-{0}"),
            ],
            &[],
        ),
        hub(
            "admin",
            "/hubs/admin",
            HubAuth::Admin,
            &[("SubscribeToVirtualKey", "join-group:admin-vkey-{0}")],
            &["admin"],
        ),
        hub(
            "health",
            "/hubs/health",
            HubAuth::Anonymous,
            &[("GetHealth", "health")],
            &[],
        ),
    ]
}
