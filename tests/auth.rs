//! Hub auth over real sockets: the virtual-key file store, admin keys, the 401/403 answers on
//! negotiate and on the upgrade, and the `vkey-{id}` group every key's connections join.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};

use ringhub::auth::keys::{KeyRecord, add_key, hash_key};
use ringhub::config::{HubAuth, HubConfig};
use support::*;

const ADMIN_KEY: &str = "an-admin-key-for-tests-only";

/// A key file in a fresh temp directory with one good key; returns (dir, path, key).
fn key_file(name: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("ringhub-auth-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.json");
    let (key, record) = add_key(&path, "tester", false, None).unwrap();
    assert_eq!(record.id, 1);
    (path, key)
}

fn hub(name: &str, auth: HubAuth) -> HubConfig {
    HubConfig {
        name: name.into(),
        path: format!("/hubs/{name}"),
        auth,
        max_message_size: None,
        methods: vec![
            ("Echo".into(), "echo".into()),
            ("SendToGroup".into(), "send-to-group".into()),
        ],
        protocols: vec!["json".into(), "messagepack".into()],
        join_on_connect: if auth == HubAuth::Admin {
            vec!["admin".into()]
        } else {
            Vec::new()
        },
        redis_name: None,
        events_url: None,
    }
}

fn server(driver: ringhub::config::DriverKind, keys: &Path) -> TestServer {
    let keys = keys.to_path_buf();
    TestServer::start(driver, move |c| {
        c.auth.key_file = keys;
        c.auth.admin_key_hashes = vec![hash_key(ADMIN_KEY)];
        c.hubs.push(hub("secure", HubAuth::VirtualKey));
        c.hubs.push(hub("admin", HubAuth::Admin));
        c.diagnostics.enabled = true;
    })
}

fn negotiate(addr: std::net::SocketAddr, hub: &str, auth_header: &str) -> HttpResponse {
    http(
        addr,
        format!(
            "POST /hubs/{hub}/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: t\r\n{auth_header}Content-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
}

fn upgrade(addr: std::net::SocketAddr, path_and_query: &str) -> (u16, std::net::TcpStream) {
    let mut stream = support::connect(addr);
    stream
        .write_all(
            format!(
                "GET {path_and_query} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let status = read_response(&mut stream).status;
    (status, stream)
}

fn joined(addr: std::net::SocketAddr, hub: &str, key: &str) -> WsClient {
    let (status, stream) = upgrade(addr, &format!("/hubs/{hub}?access_token={key}"));
    assert_eq!(status, 101);
    let mut ws = WsClient { stream };
    ws.send(1, b"{\"protocol\":\"json\",\"version\":1}\x1e");
    assert_eq!(ws.read_frame().payload, b"{}\x1e");
    ws
}

on_both_drivers! {
    fn a_hub_with_virtual_key_auth_answers_401_without_a_valid_key(driver) {
        let (keys, _) = key_file(&format!("401-{driver:?}"));
        let server = server(driver, &keys);
        let none = negotiate(server.addr, "secure", "");
        assert_eq!(none.status, 401);
        assert_eq!(none.body_str(), "{\"error\":\"no API key was presented\"}");
        let bad = negotiate(server.addr, "secure", "Authorization: Bearer condt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n");
        assert_eq!(bad.status, 401);
        let garbage = negotiate(server.addr, "secure", "X-API-Key: hello\r\n");
        assert_eq!(garbage.status, 401);
        assert_eq!(upgrade(server.addr, "/hubs/secure").0, 401);
        assert_eq!(upgrade(server.addr, "/hubs/secure?access_token=condt_nope").0, 401);
    }

    fn a_valid_virtual_key_negotiates_and_connects_by_header_or_query(driver) {
        let (keys, key) = key_file(&format!("ok-{driver:?}"));
        let server = server(driver, &keys);
        assert_eq!(negotiate(server.addr, "secure", &format!("Authorization: Bearer {key}\r\n")).status, 200);
        assert_eq!(negotiate(server.addr, "secure", &format!("X-API-Key: {key}\r\n")).status, 200);
        let response = http(
            server.addr,
            format!("POST /hubs/secure/negotiate?negotiateVersion=1&api_key={key} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        );
        assert_eq!(response.status, 200);
        let mut ws = joined(server.addr, "secure", &key);
        ws.send(1, b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[\"in\"]}\x1e");
        assert!(String::from_utf8_lossy(&ws.read_frame().payload).contains("\"result\":\"in\""));
    }

    fn every_connection_of_a_key_is_in_its_vkey_group(driver) {
        let (keys, key) = key_file(&format!("group-{driver:?}"));
        let server = server(driver, &keys);
        let mut first = joined(server.addr, "secure", &key);
        let mut second = joined(server.addr, "secure", &key);
        first.send(1, b"{\"type\":1,\"target\":\"SendToGroup\",\"arguments\":[\"vkey-1\",\"to my key\"]}\x1e");
        for ws in [&mut first, &mut second] {
            let frame = String::from_utf8_lossy(&ws.read_frame().payload).into_owned();
            assert!(frame.contains("\"target\":\"Send\"") && frame.contains("to my key"), "{frame}");
        }
    }

    fn disabled_and_expired_keys_are_refused(driver) {
        let dir = std::env::temp_dir().join(format!("ringhub-auth-{}-states-{driver:?}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.json");
        let disabled = "condt_DisabledDisabledDisabledDisabled";
        let expired = "condt_ExpiredExpiredExpiredExpired1234";
        let records = vec![
            KeyRecord { id: 1, name: "off".into(), hash: hash_key(disabled), enabled: false, expires_at: None, admin: false },
            KeyRecord { id: 2, name: "old".into(), hash: hash_key(expired), enabled: true, expires_at: Some(1), admin: false },
        ];
        std::fs::write(&path, serde_json::json!({ "keys": records }).to_string()).unwrap();
        let server = server(driver, &path);
        let off = negotiate(server.addr, "secure", &format!("Authorization: Bearer {disabled}\r\n"));
        assert_eq!((off.status, off.body_str()), (401, "{\"error\":\"the API key is disabled\"}"));
        let old = negotiate(server.addr, "secure", &format!("Authorization: Bearer {expired}\r\n"));
        assert_eq!((old.status, old.body_str()), (401, "{\"error\":\"the API key has expired\"}"));
    }

    fn admin_hubs_take_admin_keys_and_refuse_virtual_keys_with_403(driver) {
        let (keys, key) = key_file(&format!("admin-{driver:?}"));
        let server = server(driver, &keys);
        let refused = negotiate(server.addr, "admin", &format!("Authorization: Bearer {key}\r\n"));
        assert_eq!((refused.status, refused.body_str()), (403, "{\"error\":\"this hub requires an admin key\"}"));
        assert_eq!(upgrade(server.addr, &format!("/hubs/admin?access_token={key}")).0, 403);
        assert_eq!(negotiate(server.addr, "admin", &format!("Authorization: Bearer {ADMIN_KEY}\r\n")).status, 200);
        // Every admin connection is in the hub's `admin` group (join_on_connect).
        let mut first = joined(server.addr, "admin", ADMIN_KEY);
        let mut second = joined(server.addr, "admin", ADMIN_KEY);
        first.send(1, b"{\"type\":1,\"target\":\"SendToGroup\",\"arguments\":[\"admin\",\"to admins\"]}\x1e");
        for ws in [&mut first, &mut second] {
            let frame = String::from_utf8_lossy(&ws.read_frame().payload).into_owned();
            assert!(frame.contains("to admins"), "{frame}");
        }
        // An admin key is accepted wherever a virtual key is.
        joined(server.addr, "secure", ADMIN_KEY);
    }

    fn anonymous_hubs_need_no_key(driver) {
        let (keys, _) = key_file(&format!("anon-{driver:?}"));
        let server = server(driver, &keys);
        assert_eq!(negotiate(server.addr, "diagnostics", "").status, 200);
    }
}
