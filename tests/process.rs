//! The `ringhub` binary as an operator runs it: signals, driver fallback, config errors.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_ringhub");

/// A server process whose log lines are collected.
struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Process {
    fn start(args: &[&str], env: &[(&str, &str)]) -> (Self, SocketAddr) {
        let mut command = Command::new(BIN);
        command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--workers",
                "2",
                "--set",
                "runtime.pin_cores=false",
            ])
            .args(args)
            .env("RINGHUB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn ringhub");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Self {
            child,
            lines,
            seen: Vec::new(),
        };
        let line = process.wait_for("listening");
        let addr = line
            .split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("addr in the listening line")
            .parse()
            .unwrap();
        (process, addr)
    }

    /// Waits for a log line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no log line with {needle:?}; saw {:#?}", self.seen));
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit and returns the exit code, draining the log.
    fn wait_exit(&mut self) -> i32 {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return status.code().unwrap_or(-1);
            }
            assert!(std::time::Instant::now() < deadline, "ringhub did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigterm_closes_websockets_with_1001_stops_accepting_and_exits_zero() {
    let (mut server, addr) = Process::start(&["--set", "echo.enabled=true"], &[]);
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

#[test]
fn sigint_stops_gracefully_too() {
    let (mut server, addr) = Process::start(&[], &[]);
    assert_eq!(get(addr, "/health").status, 200);
    server.signal("INT");
    assert_eq!(server.wait_exit(), 0);
}

#[test]
fn clients_that_ignore_the_close_do_not_hold_the_exit_past_the_deadline() {
    let (mut server, addr) = Process::start(
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
    let (mut server, addr) = Process::start(&[], &[("MONOIO_FORCE_LEGACY_DRIVER", "1")]);
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
    let (mut server, addr) = Process::start(&[], &[]);
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
