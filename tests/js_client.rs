//! Runs the official JavaScript client suite (`tests/js/*.test.mjs`, `@microsoft/signalr` 10.x
//! from the committed lockfile) against an in-process server with two shards, on both drivers.
//! `tests/run-all.sh` installs the npm packages first; without them this test fails.

mod support;

use std::path::Path;

use support::*;

on_both_drivers! {
    fn official_javascript_client_suite_passes(driver) {
        let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
        assert!(
            js.join("node_modules/@microsoft/signalr").is_dir(),
            "npm packages missing: run `npm ci --prefix tests/js` (tests/run-all.sh does)"
        );
        let keys = std::env::temp_dir().join(format!("ringhub-js-keys-{}-{driver:?}", std::process::id()));
        let _ = std::fs::remove_dir_all(&keys);
        std::fs::create_dir_all(&keys).unwrap();
        let key_file = keys.join("keys.json");
        let (virtual_key, _) = ringhub::auth::keys::add_key(&key_file, "js", false, None).unwrap();
        let admin_key = "js-suite-admin-key";
        let server = TestServer::start(driver, |c| {
            c.auth.key_file = key_file.clone();
            c.auth.admin_key_hashes = vec![ringhub::auth::keys::hash_key(admin_key)];
            c.workers = std::num::NonZeroUsize::new(2).unwrap();
            c.diagnostics.enabled = true;
            // The suites burst hundreds of calls; the rate limit has its own test.
            c.signalr.invocation_rate = 1_000_000;
            c.signalr.invocation_burst = 1_000_000;
            c.hubs.push(ringhub::config::HubConfig {
                name: "configured".into(),
                path: "/hubs/configured".into(),
                auth: ringhub::config::HubAuth::Anonymous,
                max_message_size: Some(1024),
                methods: vec![("Shout".into(), "echo".into())],
                protocols: vec!["json".into(), "messagepack".into()],
                join_on_connect: Vec::new(),
                redis_name: None,
                events_url: None,
            });
            c.hubs.push(ringhub::config::HubConfig {
                name: "tasks".into(),
                path: "/hubs/tasks".into(),
                auth: ringhub::config::HubAuth::Anonymous,
                max_message_size: None,
                methods: vec![
                    ("SubscribeToTask".into(), "join-group:image-{0}".into()),
                    ("UnsubscribeFromTask".into(), "leave-group:image-{0}".into()),
                    ("Notify".into(), "send-to-group:image-{0}".into()),
                ],
                protocols: vec!["json".into(), "messagepack".into()],
                join_on_connect: Vec::new(),
                redis_name: None,
                events_url: None,
            });
            for only in ["json", "messagepack"] {
                c.hubs.push(ringhub::config::HubConfig {
                    name: format!("only-{only}"),
                    path: format!("/hubs/only-{only}"),
                    auth: ringhub::config::HubAuth::Anonymous,
                    max_message_size: None,
                    methods: vec![("Echo".into(), "echo".into())],
                    protocols: vec![only.into()],
                    join_on_connect: Vec::new(),
                    redis_name: None,
                    events_url: None,
                });
            }
        });
        run_js_suite(
            &js,
            "diagnostics.test.mjs",
            &server,
            &[("HUB_VIRTUAL_KEY", &virtual_key), ("HUB_ADMIN_KEY", admin_key)],
            30,
        );
    }
}

on_both_drivers! {
    fn official_javascript_client_passes_the_seed_hub_suite(driver) {
        let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
        assert!(
            js.join("node_modules/@microsoft/signalr").is_dir(),
            "npm packages missing: run `npm ci --prefix tests/js` (tests/run-all.sh does)"
        );
        let keys = std::env::temp_dir().join(format!("ringhub-js-seed-{}-{driver:?}", std::process::id()));
        let _ = std::fs::remove_dir_all(&keys);
        std::fs::create_dir_all(&keys).unwrap();
        let key_file = keys.join("keys.json");
        let add = |name: &str| ringhub::auth::keys::add_key(&key_file, name, false, None).unwrap();
        let ((key, record), (other, _), (limited, _)) = (add("seed-a"), add("seed-b"), add("seed-limited"));
        // A disabled and an expired key, for the auth matrix.
        let (disabled, expired) = ("condt_DisabledDisabledDisabledDisabled", "condt_ExpiredExpiredExpiredExpired1234");
        let mut file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
        let keys = file["keys"].as_array_mut().unwrap();
        for (id, key, enabled, expires_at) in [(100, disabled, false, None), (101, expired, true, Some(1))] {
            let record = ringhub::auth::KeyRecord {
                id, name: format!("matrix-{id}"), hash: ringhub::auth::keys::hash_key(key), enabled, expires_at, admin: false,
            };
            keys.push(serde_json::to_value(record).unwrap());
        }
        std::fs::write(&key_file, file.to_string()).unwrap();
        let per_key_limit = 6;
        let (admin_key, server_key) = ("seed-suite-admin-key", "seed-suite-server-key");
        let server = TestServer::start(driver, |c| {
            c.auth.key_file = key_file.clone();
            c.workers = std::num::NonZeroUsize::new(2).unwrap();
            c.signalr.invocation_rate = 1_000_000;
            c.signalr.invocation_burst = 1_000_000;
            c.health.push_interval = std::time::Duration::from_millis(200);
            c.limits.max_connections_per_key = per_key_limit;
            c.auth.admin_key_hashes = vec![ringhub::auth::keys::hash_key(admin_key)];
            c.auth.server_key_hashes = vec![ringhub::auth::keys::hash_key(server_key)];
        });
        run_js_suite(
            &js,
            "seed-hubs.test.mjs",
            &server,
            &[
                ("HUB_VIRTUAL_KEY", &key),
                ("HUB_VIRTUAL_KEY_2", &other),
                ("HUB_LIMITED_KEY", &limited),
                ("HUB_PER_KEY_LIMIT", &per_key_limit.to_string()),
                ("HUB_VIRTUAL_KEY_ID", &record.id.to_string()),
                ("HUB_ADMIN_KEY", admin_key),
                ("HUB_SERVER_KEY", server_key),
                ("HUB_DISABLED_KEY", disabled),
                ("HUB_EXPIRED_KEY", expired),
                ("HUB_CONFLATE_RATE", &ringhub::config::Config::default().signalr.conflate_rate.to_string()),
            ],
            20,
        );
    }
}

on_both_drivers! {
    fn official_javascript_client_streams_responses_posted_by_backends(driver) {
        let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
        assert!(
            js.join("node_modules/@microsoft/signalr").is_dir(),
            "npm packages missing: run `npm ci --prefix tests/js` (tests/run-all.sh does)"
        );
        let keys = std::env::temp_dir().join(format!("ringhub-js-streams-{}-{driver:?}", std::process::id()));
        let _ = std::fs::remove_dir_all(&keys);
        std::fs::create_dir_all(&keys).unwrap();
        let key_file = keys.join("keys.json");
        let (key, _) = ringhub::auth::keys::add_key(&key_file, "streams", false, None).unwrap();
        let server_key = "streams-suite-server-key";
        let window = std::time::Duration::from_secs(2);
        let server = TestServer::start(driver, |c| {
            c.auth.key_file = key_file.clone();
            c.workers = std::num::NonZeroUsize::new(2).unwrap();
            c.signalr.invocation_rate = 1_000_000;
            c.signalr.invocation_burst = 1_000_000;
            c.signalr.stream_backlog_window = window;
            c.auth.server_key_hashes = vec![ringhub::auth::keys::hash_key(server_key)];
        });
        run_js_suite(
            &js,
            "streams.test.mjs",
            &server,
            &[
                ("HUB_VIRTUAL_KEY", &key),
                ("HUB_SERVER_KEY", server_key),
                ("HUB_STREAM_WINDOW_MS", &window.as_millis().to_string()),
            ],
            13,
        );
    }
}
