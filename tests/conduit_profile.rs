//! The Conduit profile (`profiles/conduit.toml`): it loads, serves Conduit's real hub paths with
//! their auth, and its methods answer as Conduit's do, over real sockets with virtual keys and
//! admin keys.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use ringhub::auth::keys::{add_key, hash_key};
use ringhub::config::{Config, ConfigSources, HubAuth};
use serde_json::{Value, json};
use support::*;

const ADMIN_KEY: &str = "conduit-backend-key-for-tests-only";
const RS: u8 = 0x1e;

fn profile_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("profiles/conduit.toml")
}

fn profile() -> Config {
    Config::load(&ConfigSources {
        file: Some(profile_path()),
        ..ConfigSources::default()
    })
    .unwrap()
}

/// A key file with an ordinary virtual key (id 1) and one marked admin (id 2).
fn keys(name: &str) -> (PathBuf, String, String) {
    let dir = std::env::temp_dir().join(format!("ringhub-conduit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.json");
    let (plain, record) = add_key(&path, "tenant", false, None).unwrap();
    assert_eq!(record.id, 1);
    let (admin, record) = add_key(&path, "operator", true, None).unwrap();
    assert_eq!(record.id, 2);
    (path, plain, admin)
}

/// A server with the profile's hubs and SignalR settings, plus a test-only `TestSendToGroup`
/// (send-to-group) on every hub so a test can see who is in a group.
fn server(driver: ringhub::config::DriverKind, key_file: PathBuf) -> TestServer {
    let profile = profile();
    TestServer::start(driver, move |c| {
        c.seed = profile.seed;
        c.signalr = profile.signalr;
        c.hubs = profile.hubs;
        for hub in &mut c.hubs {
            hub.methods
                .push(("TestSendToGroup".into(), "send-to-group".into()));
        }
        c.auth.key_file = key_file;
        c.auth.admin_key_hashes = vec![hash_key(ADMIN_KEY)];
    })
}

fn negotiate(addr: SocketAddr, path: &str, key: &str) -> u16 {
    http(
        addr,
        format!(
            "POST {path}/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: t\r\n\
             Authorization: Bearer {key}\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .status
}

/// A SignalR JSON client on one hub.
struct Client {
    ws: WsClient,
    /// Records read but not consumed yet.
    pending: Vec<Value>,
    next_id: u32,
}

impl Client {
    fn connect(addr: SocketAddr, path: &str, key: &str) -> Self {
        let mut stream = support::connect(addr);
        stream
            .write_all(
                format!(
                    "GET {path}?access_token={key} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                     Sec-WebSocket-Version: 13\r\n\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
        assert_eq!(read_response(&mut stream).status, 101, "{path}");
        let mut ws = WsClient { stream };
        ws.send(1, b"{\"protocol\":\"json\",\"version\":1}\x1e");
        assert_eq!(ws.read_frame().payload, b"{}\x1e");
        Self {
            ws,
            pending: Vec::new(),
            next_id: 0,
        }
    }

    /// The next record that is not a Ping.
    fn next(&mut self) -> Value {
        loop {
            if !self.pending.is_empty() {
                let record = self.pending.remove(0);
                if record["type"] != 6 {
                    return record;
                }
                continue;
            }
            let frame = self.ws.read_frame();
            self.pending.extend(
                frame
                    .payload
                    .split(|b| *b == RS)
                    .filter(|r| !r.is_empty())
                    .map(|r| serde_json::from_slice::<Value>(r).unwrap()),
            );
        }
    }

    /// Invokes `target` and returns the records up to and including its Completion.
    fn invoke(&mut self, target: &str, arguments: Value) -> Vec<Value> {
        self.next_id += 1;
        let id = self.next_id.to_string();
        let mut bytes = serde_json::to_vec(
            &json!({"type": 1, "invocationId": id, "target": target, "arguments": arguments}),
        )
        .unwrap();
        bytes.push(RS);
        self.ws.send(1, &bytes);
        let mut records = Vec::new();
        loop {
            let record = self.next();
            let done = record["type"] == 3 && record["invocationId"] == id.as_str();
            records.push(record);
            if done {
                return records;
            }
        }
    }

    /// Invokes `target`, expecting a void Completion and nothing else.
    fn call_ok(&mut self, target: &str, arguments: Value) {
        let records = self.invoke(target, arguments);
        assert_eq!(records.len(), 1, "{target}: {records:?}");
        assert_eq!(records[0].get("error"), None, "{target}: {records:?}");
    }

    /// Sends `Send(text)` to `group` through the test-only method.
    fn send_to_group(&mut self, group: &str, text: &str) {
        let records = self.invoke("TestSendToGroup", json!([group, text]));
        // The caller may be a member: then its copy can arrive before the Completion.
        let completion = records.last().unwrap();
        assert_eq!(completion.get("error"), None, "{records:?}");
        self.pending
            .splice(0..0, records[..records.len() - 1].to_vec());
    }

    /// The next event, as (target, arguments).
    fn event(&mut self) -> (String, Value) {
        let record = self.next();
        assert_eq!(record["type"], 1, "{record}");
        (
            record["target"].as_str().unwrap().to_owned(),
            record["arguments"].clone(),
        )
    }
}

fn hub_exception(method: &str, message: &str) -> String {
    format!(
        "An unexpected error occurred invoking '{method}' on the server. HubException: {message}"
    )
}

#[test]
fn the_profile_loads_with_every_conduit_hub_path_and_its_auth() {
    let config = profile();
    assert!(!config.seed.enabled, "the seed hubs must be off");
    let hubs = ringhub::hub::definitions(&config).unwrap();
    let expected = [
        ("/hubs/tasks", HubAuth::VirtualKey),
        ("/hubs/image-generation", HubAuth::VirtualKey),
        ("/hubs/video-generation", HubAuth::VirtualKey),
        ("/hubs/notifications", HubAuth::VirtualKey),
        ("/hubs/spend", HubAuth::VirtualKey),
        ("/hubs/webhooks", HubAuth::VirtualKey),
        ("/hubs/virtual-key-management", HubAuth::VirtualKey),
        ("/hubs/usage-analytics", HubAuth::VirtualKey),
        ("/hubs/enhanced-video-generation", HubAuth::VirtualKey),
        ("/hubs/metrics", HubAuth::Admin),
        ("/hubs/health-monitoring", HubAuth::Admin),
        ("/hubs/security-monitoring", HubAuth::Admin),
        ("/hubs/admin-notifications", HubAuth::Admin),
    ];
    let mut served: Vec<_> = hubs.iter().map(|h| (h.path.as_str(), h.auth)).collect();
    served.sort_by_key(|(path, _)| *path);
    let mut want = expected.to_vec();
    want.sort_by_key(|(path, _)| *path);
    assert_eq!(served, want);
    for hub in &hubs {
        assert_eq!(
            hub.protocols,
            [ringhub::protocol::signalr::HubProtocol::Json],
            "{}",
            hub.path
        );
    }
    let joins = |path: &str| {
        hubs.iter()
            .find(|h| h.path == path)
            .unwrap()
            .join_on_connect
            .clone()
    };
    assert_eq!(joins("/hubs/admin-notifications"), ["admin"]);
    // Redis channels match Conduit's .NET servers: prefix and hub class names (§2.3).
    assert_eq!(config.backplane.channel_prefix, "conduit_signalr:");
    for hub in &hubs {
        assert!(
            hub.redis_name.starts_with("ConduitLLM.Http.Hubs.")
                || hub.redis_name == "ConduitLLM.Admin.Hubs.AdminNotificationHub",
            "{}: {}",
            hub.path,
            hub.redis_name
        );
    }
    let image = hubs
        .iter()
        .find(|h| h.path == "/hubs/image-generation")
        .unwrap();
    assert_eq!(image.redis_name, "ConduitLLM.Http.Hubs.ImageGenerationHub");
    assert_eq!(joins("/hubs/metrics"), ["metrics-subscribers"]);
    // Conduit's limits, with the keep-alive halved for default JS clients.
    assert_eq!(config.signalr.keepalive_interval, Duration::from_secs(15));
    assert_eq!(config.signalr.client_timeout, Duration::from_secs(60));
    assert_eq!(config.signalr.max_message_size, 32 * 1024);
    // Server-intent methods are not served.
    let tasks = hubs.iter().find(|h| h.path == "/hubs/tasks").unwrap();
    assert!(tasks.method("TaskCompleted").is_none());
}

#[test]
fn check_config_accepts_the_profile() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringhub"))
        .arg("--config")
        .arg(profile_path())
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

on_both_drivers! {
    fn task_subscriptions_join_task_and_per_key_task_type_groups(driver) {
        let (key_file, key, _) = keys(&format!("tasks-{driver:?}"));
        let server = server(driver, key_file);
        let mut subscriber = Client::connect(server.addr, "/hubs/tasks", &key);
        let mut other = Client::connect(server.addr, "/hubs/tasks", &key);
        subscriber.call_ok("SubscribeToTaskType", json!(["batch_spend_update"]));
        subscriber.call_ok("SubscribeToTask", json!(["task_0123"]));
        other.send_to_group("vkey-1-batch_spend_update", "started");
        assert_eq!(subscriber.event(), ("Send".to_owned(), json!(["started"])));
        other.send_to_group("task-task_0123", "progress");
        assert_eq!(subscriber.event(), ("Send".to_owned(), json!(["progress"])));
        // The other connection of the same key is in vkey-1 only: the first event it sees is
        // the one sent to vkey-1 after the two above.
        subscriber.send_to_group("vkey-1", "to the key");
        assert_eq!(other.event(), ("Send".to_owned(), json!(["to the key"])));
        assert_eq!(subscriber.event(), ("Send".to_owned(), json!(["to the key"])));
        subscriber.call_ok("UnsubscribeFromTaskType", json!(["batch_spend_update"]));
        other.send_to_group("vkey-1-batch_spend_update", "gone");
        other.send_to_group("vkey-1", "after");
        assert_eq!(subscriber.event(), ("Send".to_owned(), json!(["after"])));
    }

    fn usage_analytics_checks_the_type_replies_and_keeps_global_analytics_for_admins(driver) {
        let (key_file, key, admin_key) = keys(&format!("analytics-{driver:?}"));
        let server = server(driver, key_file);
        let mut client = Client::connect(server.addr, "/hubs/usage-analytics", &key);
        let records = client.invoke("SubscribeToAnalytics", json!(["cost"]));
        assert_eq!(records[0], json!({"type": 1, "target": "SubscribedToAnalytics", "arguments": ["cost"]}));
        assert_eq!(records[1], json!({"type": 3, "invocationId": "1"}));
        client.send_to_group("analytics-cost-1", "costs");
        assert_eq!(client.event(), ("Send".to_owned(), json!(["costs"])));
        let records = client.invoke("SubscribeToAnalytics", json!(["tokens"]));
        assert_eq!(records.len(), 1);
        assert_eq!(
            records[0]["error"],
            hub_exception(
                "SubscribeToAnalytics",
                "Invalid SubscribeToAnalytics argument 'tokens'. Valid values: usage, cost, performance, errors."
            )
        );
        let records = client.invoke("SubscribeToGlobalAnalytics", json!(["cost"]));
        assert_eq!(
            records,
            [json!({"type": 3, "invocationId": "4", "error": hub_exception("SubscribeToGlobalAnalytics", "Unauthorized: Admin privileges required")})]
        );
        let mut operator = Client::connect(server.addr, "/hubs/usage-analytics", &admin_key);
        let records = operator.invoke("SubscribeToGlobalAnalytics", json!(["Cost"]));
        assert_eq!(records[0]["target"], "SubscribedToGlobalAnalytics");
        operator.send_to_group("analytics-global-cost", "all tenants");
        assert_eq!(operator.event(), ("Send".to_owned(), json!(["all tenants"])));
    }

    fn key_management_is_for_admin_virtual_keys_only(driver) {
        let (key_file, key, admin_key) = keys(&format!("vkm-{driver:?}"));
        let server = server(driver, key_file);
        let mut tenant = Client::connect(server.addr, "/hubs/virtual-key-management", &key);
        let records = tenant.invoke("SubscribeToKeyManagement", json!([1]));
        assert_eq!(
            records[0]["error"],
            hub_exception("SubscribeToKeyManagement", "Unauthorized: Admin privileges required")
        );
        let mut operator = Client::connect(server.addr, "/hubs/virtual-key-management", &admin_key);
        let records = operator.invoke("SubscribeToKeyManagement", json!([1]));
        assert_eq!(records[0], json!({"type": 1, "target": "SubscribedToKeyManagement", "arguments": [1]}));
        tenant.send_to_group("vkey-mgmt-1", "updated");
        assert_eq!(operator.event(), ("Send".to_owned(), json!(["updated"])));
    }

    fn notification_preferences_are_echoed_back_as_preferences_updated(driver) {
        let (key_file, key, _) = keys(&format!("prefs-{driver:?}"));
        let server = server(driver, key_file);
        let mut client = Client::connect(server.addr, "/hubs/notifications", &key);
        let preferences = json!({"enabledTypes": ["rate_limit"], "minimumPriority": 2});
        let records = client.invoke("UpdatePreferences", json!([preferences]));
        assert_eq!(
            records,
            [
                json!({"type": 1, "target": "PreferencesUpdated", "arguments": [preferences]}),
                json!({"type": 3, "invocationId": "1"}),
            ]
        );
        let records = client.invoke("SystemAnnouncement", json!(["hi", 3]));
        assert_eq!(records[0]["error"], "Unknown hub method 'SystemAnnouncement'");
    }

    fn webhook_subscriptions_join_one_group_per_url(driver) {
        let (key_file, key, _) = keys(&format!("hooks-{driver:?}"));
        let server = server(driver, key_file);
        let mut client = Client::connect(server.addr, "/hubs/webhooks", &key);
        client.call_ok(
            "SubscribeToWebhooks",
            json!([["https://api.example.com/hook", "https://hooks.example.org/a/b"]]),
        );
        client.send_to_group("webhook-api-example-com--hook", "first");
        assert_eq!(client.event(), ("Send".to_owned(), json!(["first"])));
        client.send_to_group("webhook-hooks-example-org--a-b", "second");
        assert_eq!(client.event(), ("Send".to_owned(), json!(["second"])));
        let records = client.invoke("SubscribeToWebhooks", json!([["not a url"]]));
        assert_eq!(
            records[0]["error"],
            hub_exception("SubscribeToWebhooks", "'not a url' is not an absolute URL.")
        );
    }

    fn admin_hubs_refuse_virtual_keys_and_join_admin_keys_to_their_groups(driver) {
        let (key_file, key, admin_vkey) = keys(&format!("admin-{driver:?}"));
        let server = server(driver, key_file);
        for path in ["/hubs/admin-notifications", "/hubs/metrics", "/hubs/health-monitoring", "/hubs/security-monitoring"] {
            assert_eq!(negotiate(server.addr, path, &key), 403, "{path}");
            // Conduit's backend and master keys are not virtual keys, admin or not.
            assert_eq!(negotiate(server.addr, path, &admin_vkey), 403, "{path}");
            assert_eq!(negotiate(server.addr, path, ADMIN_KEY), 200, "{path}");
        }
        assert_eq!(negotiate(server.addr, "/hubs/tasks", &key), 200);
        let mut admin = Client::connect(server.addr, "/hubs/admin-notifications", ADMIN_KEY);
        let records = admin.invoke("SubscribeToVirtualKey", json!([5]));
        assert_eq!(records[0], json!({"type": 1, "target": "SubscribedToVirtualKey", "arguments": [5]}));
        admin.send_to_group("admin-vkey-5", "key 5");
        assert_eq!(admin.event(), ("Send".to_owned(), json!(["key 5"])));
        admin.send_to_group("admin", "everyone");
        assert_eq!(admin.event(), ("Send".to_owned(), json!(["everyone"])));
        let mut metrics = Client::connect(server.addr, "/hubs/metrics", ADMIN_KEY);
        metrics.call_ok("SubscribeToMetrics", json!([["HTTP", "providers"]]));
        metrics.send_to_group("metrics-http", "http");
        assert_eq!(metrics.event(), ("Send".to_owned(), json!(["http"])));
        metrics.send_to_group("metrics-subscribers", "snapshot");
        assert_eq!(metrics.event(), ("Send".to_owned(), json!(["snapshot"])));
        let mut security = Client::connect(server.addr, "/hubs/security-monitoring", ADMIN_KEY);
        security.call_ok("SubscribeToThreatLevel", json!([]));
        security.send_to_group("threat-level-subscribers", "threat");
        assert_eq!(security.event(), ("Send".to_owned(), json!(["threat"])));
    }
}
