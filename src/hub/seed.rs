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

/// An event backends push to a seed hub's clients (REST publish API or Redis backplane), as
/// the product document and Conduit use it. ringhub relays any event name and payload; these
/// rows say which group reaches whom, for the hub reference (`ringhub docs hubs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendEvent {
    /// The seed hub's name.
    pub hub: &'static str,
    /// The event (client method) name.
    pub event: &'static str,
    /// Its argument's shape.
    pub payload: &'static str,
    /// The group or target a backend sends it to.
    pub to: &'static str,
}

/// The events of the seed hubs that backends send (the product document's examples).
pub const BACKEND_EVENTS: &[BackendEvent] = &[
    BackendEvent {
        hub: "image-generation",
        event: "ImageProgress",
        payload: "`{taskId, percentage, status, …}` (conflated; `status` completed/failed/cancelled is final)",
        to: "group `image-{taskId}`",
    },
    BackendEvent {
        hub: "video-generation",
        event: "VideoStatus",
        payload: "`{taskId, completed, url, …}` (conflated; `completed: true` is final)",
        to: "group `video-{taskId}`",
    },
    BackendEvent {
        hub: "notifications",
        event: "any, e.g. `SystemAlert`",
        payload: "any",
        to: "group `vkey-{keyId}` (one key), user `{keyId}`, or every connection",
    },
    BackendEvent {
        hub: "content-generation",
        event: "any, e.g. `ContentGenerationProgress`",
        payload: "`{taskId, …}` (conflated when listed in `signalr.conflate_events`)",
        to: "groups `{type}-{taskId}`, `content-{taskId}` or `vkey-{keyId}-content`",
    },
    BackendEvent {
        hub: "admin",
        event: "any, e.g. `VirtualKeyUpdate`",
        payload: "any",
        to: "group `admin` (every admin connection) or `admin-vkey-{keyId}`",
    },
];
