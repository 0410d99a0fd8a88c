//! The `ringhub` binary as an operator runs it: signals, driver fallback, config errors.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use support::process::{BIN, ServerProcess};
use support::*;

/// The binary on 2 shards with `args` and `env` added.
fn start(args: &[&str], env: &[(&str, &str)]) -> (ServerProcess, SocketAddr) {
    let mut command = ServerProcess::command();
    command.args(["--workers", "2"]).args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let process = ServerProcess::spawn(command);
    let addr = process.addr;
    (process, addr)
}

#[test]
fn sigterm_closes_websockets_with_1001_stops_accepting_and_exits_zero() {
    let (mut server, addr) = start(&["--set", "echo.enabled=true"], &[]);
    let mut clients: Vec<WsClient> = (0..4).map(|_| WsClient::echo(addr)).collect();
    for ws in &mut clients {
        ws.send_text("before");
        assert_eq!(ws.read_frame().payload, b"before");
    }
    server.signal("TERM");
    for ws in &mut clients {
        assert_eq!(ws.read_close(), Some(1001));
        ws.send(8, &1001u16.to_be_bytes());
    }
    assert_eq!(server.wait_exit(), 0, "log: {:#?}", server.seen);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after exit"
    );
}

/// Reads frames until a text frame arrives; returns its payload.
fn next_text(ws: &mut WsClient) -> Vec<u8> {
    loop {
        let frame = ws.read_frame();
        if frame.opcode == 1 {
            return frame.payload;
        }
    }
}

#[test]
fn sigterm_drains_not_ready_first_then_tells_signalr_clients_to_reconnect_elsewhere_and_exits_zero()
{
    let (mut server, addr) = start(
        &[
            "--set",
            "diagnostics.enabled=true",
            "--set",
            "shutdown.drain_delay=5s",
        ],
        &[],
    );
    let mut ws = WsClient::connect(addr, "/hubs/diagnostics");
    ws.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}");
    assert_eq!(next_text(&mut ws), b"{}\x1e");
    assert!(eventually(Duration::from_secs(5), || get(
        addr,
        "/health/ready"
    )
    .status
        == 200));

    server.signal("TERM");
    // Not ready while the drain delay runs, but still serving.
    assert!(eventually(Duration::from_secs(4), || {
        let ready = get(addr, "/health/ready");
        ready.status == 503 && ready.body_str().contains("\"status\":\"draining\"")
    }));
    let health: serde_json::Value = serde_json::from_slice(&get(addr, "/health").body).unwrap();
    assert_eq!(
        (health["ready"].as_bool(), health["draining"].as_bool()),
        (Some(false), Some(true))
    );
    ws.send_text(
        "{\"type\":1,\"invocationId\":\"1\",\"target\":\"echo\",\"arguments\":[\"still\"]}\u{1e}",
    );
    assert_eq!(
        next_text(&mut ws),
        b"{\"type\":3,\"invocationId\":\"1\",\"result\":\"still\"}\x1e"
    );

    // Then every SignalR client is told to reconnect (to another instance) and the socket closes.
    let close = next_text(&mut ws);
    let close: serde_json::Value =
        serde_json::from_slice(close.strip_suffix(b"\x1e").unwrap()).unwrap();
    assert_eq!(close, serde_json::json!({"type":7,"allowReconnect":true}));
    assert_eq!(ws.read_close(), Some(1001));
    ws.send(8, &1001u16.to_be_bytes());
    assert_eq!(server.wait_exit(), 0, "log: {:#?}", server.seen);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after exit"
    );
}

#[test]
fn debug_logs_name_each_connection_end_with_its_reason_and_never_a_key_or_token() {
    let dir = std::env::temp_dir().join(format!("ringhub-log-secrets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys.json");
    let (key, _) = ringhub::auth::keys::add_key(&file, "logs", false, None).unwrap();
    let (mut server, addr) = start(
        &[
            "--set",
            &format!("auth.key_file={}", file.display()),
            "--set",
            "log.format=json",
        ],
        &[("RINGHUB_LOG", "debug")],
    );
    // A virtual key in the query (the browser path), a token from negotiate, a refused key.
    let negotiate = format!(
        "POST /hubs/notifications/negotiate?negotiateVersion=1&access_token={key} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
    );
    let negotiated = http(addr, negotiate.as_bytes());
    assert_eq!(negotiated.status, 200, "{}", negotiated.body_str());
    let body: serde_json::Value = serde_json::from_slice(&negotiated.body).unwrap();
    let token = body["connectionToken"].as_str().unwrap().to_owned();
    let mut ws = WsClient::connect(
        addr,
        &format!("/hubs/notifications?id={token}&access_token={key}"),
    );
    ws.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}");
    assert_eq!(next_text(&mut ws), b"{}\x1e");
    ws.send_text("{\"type\":7}\u{1e}");
    assert_eq!(ws.read_close(), Some(1000));
    let wrong = "condt_0123456789abcdefghijklmnopqrstuv";
    let refused = http(
        addr,
        format!("POST /hubs/notifications/negotiate?access_token={wrong} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    );
    assert_eq!(refused.status, 401);
    let ended = server.wait_for("hub connection ended");
    let ended: serde_json::Value = serde_json::from_str(&ended).expect("JSON log lines");
    assert_eq!(ended["level"], "DEBUG");
    assert!(ended["fields"]["code"].is_number(), "{ended}");
    assert!(ended["fields"]["reason"].is_string(), "{ended}");
    server.signal("TERM");
    assert_eq!(server.wait_exit(), 0);
    for line in &server.seen {
        for secret in [key.as_str(), token.as_str(), wrong] {
            assert!(!line.contains(secret), "a secret was logged: {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Invokes `target("x")` on a JSON hub connection and returns the Completion record.
fn invoke(ws: &mut WsClient, id: &str, target: &str) -> serde_json::Value {
    ws.send_text(&format!(
        "{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"{target}\",\"arguments\":[\"x\"]}}\u{1e}"
    ));
    let text = next_text(ws);
    serde_json::from_slice(text.strip_suffix(b"\x1e").unwrap()).unwrap()
}

#[test]
fn sighup_reloads_hub_methods_and_keys_for_new_connections_without_dropping_open_ones() {
    let dir = std::env::temp_dir().join(format!("ringhub-sighup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.json");
    let config = dir.join("ringhub.toml");
    let write_config = |methods: &str, extra: &str| {
        std::fs::write(
            &config,
            format!(
                "[auth]\nkey_file = \"{}\"\n[hubs.chat]\npath = \"/hubs/chat\"\nmethods = {{ {methods} }}\n{extra}",
                keys.display()
            ),
        )
        .unwrap();
    };
    write_config("Echo = \"echo\"", "");
    let (first_key, _) = ringhub::auth::keys::add_key(&keys, "first", false, None).unwrap();
    let config_arg = config.display().to_string();
    let (mut server, addr) = start(&["--config", &config_arg], &[]);
    let negotiate = |key: &str| {
        http(
            addr,
            format!("POST /hubs/notifications/negotiate?access_token={key} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        )
        .status
    };
    let mut open = WsClient::connect(addr, "/hubs/chat");
    open.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}");
    assert_eq!(next_text(&mut open), b"{}\x1e");
    assert_eq!(invoke(&mut open, "1", "Echo")["result"], "x");
    assert!(
        invoke(&mut open, "2", "Shout")["error"]
            .as_str()
            .unwrap()
            .contains("Unknown hub method")
    );
    let (second_key, _) = ringhub::auth::keys::add_key(&keys, "second", false, None).unwrap();
    assert_eq!(negotiate(&first_key), 200);
    assert_eq!(negotiate(&second_key), 401, "not loaded yet");

    write_config("Echo = \"echo\", Shout = \"echo\"", "");
    server.signal("HUP");
    server.wait_for("reloaded hub definitions and the key store");
    assert_eq!(
        negotiate(&second_key),
        200,
        "the reloaded key store knows the new key"
    );
    let mut fresh = WsClient::connect(addr, "/hubs/chat");
    fresh.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}");
    assert_eq!(next_text(&mut fresh), b"{}\x1e");
    assert_eq!(
        invoke(&mut fresh, "1", "Shout")["result"],
        "x",
        "new connections get the new methods"
    );
    assert_eq!(
        invoke(&mut open, "3", "Echo")["result"],
        "x",
        "the open connection was kept"
    );

    // Adding a hub needs a restart: the reload is refused and everything keeps running.
    write_config(
        "Echo = \"echo\"",
        "[hubs.extra]\npath = \"/hubs/extra\"\nmethods = { Echo = \"echo\" }\n",
    );
    server.signal("HUP");
    let refused = server.wait_for("reload refused");
    assert!(refused.contains("needs a restart"), "{refused}");
    assert_eq!(
        invoke(&mut fresh, "2", "Shout")["result"],
        "x",
        "the refused reload changed nothing"
    );
    assert_eq!(get(addr, "/hubs/extra/negotiate").status, 404);

    server.signal("TERM");
    assert_eq!(server.wait_exit(), 0, "log: {:#?}", server.seen);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigint_stops_gracefully_too() {
    let (mut server, addr) = start(&[], &[]);
    assert_eq!(get(addr, "/health").status, 200);
    server.signal("INT");
    assert_eq!(server.wait_exit(), 0);
}

#[test]
fn clients_that_ignore_the_close_do_not_hold_the_exit_past_the_deadline() {
    let (mut server, addr) = start(
        &[
            "--set",
            "echo.enabled=true",
            "--set",
            "shutdown.deadline=1s",
            "--set",
            "websocket.close_timeout=30s",
        ],
        &[],
    );
    let mut stubborn = WsClient::echo(addr);
    server.signal("TERM");
    assert_eq!(stubborn.read_close(), Some(1001));
    // No close reply: the shard gives up at the deadline and the process still exits 0.
    assert_eq!(server.wait_exit(), 0, "log: {:#?}", server.seen);
}

#[test]
fn without_io_uring_the_legacy_driver_is_used_with_one_log_line() {
    let (mut server, addr) = start(&[], &[("MONOIO_FORCE_LEGACY_DRIVER", "1")]);
    let body: serde_json::Value = serde_json::from_slice(&get(addr, "/health").body).unwrap();
    assert_eq!(body["driver"], "legacy");
    server.signal("TERM");
    assert_eq!(server.wait_exit(), 0);
    let fallbacks = server
        .seen
        .iter()
        .filter(|l| l.contains("falling back to the legacy"))
        .count();
    assert_eq!(fallbacks, 1, "log: {:#?}", server.seen);
}

#[test]
fn io_uring_is_the_default_driver_where_available() {
    let (mut server, addr) = start(&[], &[]);
    let body: serde_json::Value = serde_json::from_slice(&get(addr, "/health").body).unwrap();
    assert_eq!(body["driver"], "io_uring");
    assert_eq!(body["shards"], 2);
    server.signal("TERM");
    assert_eq!(server.wait_exit(), 0);
}

#[test]
fn printed_default_config_passes_check_config() {
    let printed = Command::new(BIN)
        .arg("--print-default-config")
        .output()
        .unwrap();
    assert!(printed.status.success());
    let path = std::env::temp_dir().join(format!("ringhub-default-{}.toml", std::process::id()));
    std::fs::write(&path, &printed.stdout).unwrap();
    let checked = Command::new(BIN)
        .args(["--check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let text = String::from_utf8(printed.stdout).unwrap();
    for key in [
        "listen",
        "header_timeout",
        "max_message_size",
        "deadline",
        "driver",
    ] {
        assert!(text.contains(key), "{key} missing from the default config");
    }
}

#[test]
fn unknown_key_in_the_config_file_is_named_with_the_file() {
    let path = std::env::temp_dir().join(format!("ringhub-typo-{}.toml", std::process::id()));
    std::fs::write(&path, "[http]\nheader_timout = \"5s\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("--check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http.header_timout"), "{stderr}");
    assert!(stderr.contains(&*path.to_string_lossy()), "{stderr}");
}

#[test]
fn flags_beat_environment_and_bad_values_are_explained() {
    let out = Command::new(BIN)
        .args(["--check-config", "--set", "http.max_body_size=12 parsecs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http.max_body_size"), "{stderr}");
    let out = Command::new(BIN)
        .args(["--check-config", "--set", "http.max_body_size=2MiB"])
        .env("RINGHUB_HTTP__MAX_BODY_SIZE", "12 parsecs")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn keys_add_prints_a_key_once_and_stores_only_its_hash() {
    let dir = std::env::temp_dir().join(format!("ringhub-cli-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys.json");
    let add = |name: &str| {
        Command::new(BIN)
            .args([
                "--set",
                &format!("auth.key_file={}", file.display()),
                "keys",
                "add",
                "--name",
                name,
            ])
            .output()
            .unwrap()
    };
    let first = add("first");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let key = String::from_utf8(first.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("condt_") && key.len() == 38, "{key}");
    let second = add("second");
    assert!(second.status.success());
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(!stored.contains(&key), "the raw key must never be stored");
    assert!(stored.contains(&ringhub::auth::keys::hash_key(&key)));
    let records: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(records["keys"].as_array().unwrap().len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
