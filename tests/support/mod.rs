//! Test harness: an in-process server on port 0 and a raw, blocking WebSocket/HTTP client that
//! can send anything, including what a well-behaved client never would.

// Test-harness code: panicking on a broken test setup is the right failure.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::field_reassign_with_default
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringhub::config::{Config, DriverKind};
use ringhub::server::{self, ServerHandle};
pub mod bystander;
pub mod process;
pub mod redis;

/// Generates one test per monoio driver: `name::io_uring` and `name::legacy`.
#[macro_export]
macro_rules! on_both_drivers {
    ($($(#[$meta:meta])* fn $name:ident($driver:ident) $body:block)*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[allow(clippy::unwrap_used)]
            fn run($driver: ::ringhub::config::DriverKind) $body
            #[test]
            fn io_uring() { run(::ringhub::config::DriverKind::IoUring) }
            #[test]
            fn legacy() { run(::ringhub::config::DriverKind::Legacy) }
        }
    )*};
}

/// A server running in this process.
pub struct TestServer {
    handle: Option<ServerHandle>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl TestServer {
    /// Starts a server on 127.0.0.1:0 with the echo route on, one shard (so per-shard facts
    /// are the whole server's), and `tweak` applied to the config.
    pub fn start(driver: DriverKind, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.workers = std::num::NonZeroUsize::new(1).unwrap();
        config.runtime.driver = driver;
        config.runtime.pin_cores = false;
        config.echo.enabled = true;
        tweak(&mut config);
        let handle = server::start(Arc::new(config)).expect("server starts");
        let addr = handle.local_addr();
        Self {
            handle: Some(handle),
            addr,
        }
    }

    /// The running server's handle.
    pub fn handle(&mut self) -> &mut ServerHandle {
        self.handle.as_mut().unwrap()
    }

    /// Begins a graceful stop.
    pub fn shutdown(&mut self) {
        self.handle().shutdown();
    }

    /// Stops and waits.
    pub fn stop(mut self) {
        let mut handle = self.handle.take().unwrap();
        handle.shutdown();
        handle.join().expect("clean stop");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut handle) = self.handle.take() {
            handle.shutdown();
            let _ = handle.join();
        }
    }
}

/// Connects with a read timeout so a test fails instead of hanging.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// An HTTP response as read off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

/// Reads one response (head + content-length body) from `stream`.
pub fn read_response(stream: &mut TcpStream) -> HttpResponse {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = match stream.read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other.expect("read response head"),
        };
        assert!(
            n > 0,
            "connection closed before a response; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).unwrap();
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// Sends `request` on a fresh connection and reads the response.
pub fn http(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    read_response(&mut stream)
}

/// `GET path` with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Reads until the peer closes; returns what arrived (errors count as closed).
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the peer closed the connection (EOF or reset) within `within`.
pub fn closes_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
        if started.elapsed() > within {
            return false;
        }
    }
}

/// A frame as read by the test client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A raw WebSocket client.
pub struct WsClient {
    pub stream: TcpStream,
}

/// The masking key the test client uses.
pub const KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

/// Encodes a client frame; `mask` false produces an (illegal) unmasked frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let mask_bit = if mask { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if mask {
        out.extend_from_slice(&KEY);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

impl WsClient {
    /// Opens a WebSocket on `path` (the echo route unless stated) and checks the 101.
    pub fn connect(addr: SocketAddr, path: &str) -> Self {
        let mut stream = connect(addr);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let response = read_response(&mut stream);
        assert_eq!(response.status, 101, "upgrade refused: {response:?}");
        assert_eq!(
            response.header("sec-websocket-accept"),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        Self { stream }
    }

    /// Opens the echo route.
    pub fn echo(addr: SocketAddr) -> Self {
        Self::connect(addr, "/ws/echo")
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends raw bytes, tolerating a peer that already closed.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn send(&mut self, opcode: u8, payload: &[u8]) {
        self.send_raw(&client_frame(true, opcode, payload, true));
    }

    pub fn send_text(&mut self, text: &str) {
        self.send(1, text.as_bytes());
    }

    /// Reads one frame.
    pub fn read_frame(&mut self) -> Frame {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).expect("frame header");
        let fin = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0f;
        assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b).unwrap();
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).unwrap();
        Frame {
            fin,
            opcode,
            payload,
        }
    }

    /// Reads frames until a close frame and returns its code (None for an empty close).
    pub fn read_close(&mut self) -> Option<u16> {
        loop {
            let frame = self.read_frame();
            if frame.opcode == 8 {
                return frame.close_code();
            }
        }
    }

    /// Expects the server to close the TCP connection soon.
    pub fn expect_tcp_close(&mut self) {
        assert!(
            closes_within(&mut self.stream, Duration::from_secs(10)),
            "server kept the TCP connection open"
        );
    }
}

/// A fresh key file (under the temp dir, named after the suite and test) holding two virtual
/// keys, tenants 1 and 2 (ids 1 and 2); returns its path and the two keys.
pub fn two_tenant_keys(suite: &str, name: &str) -> (std::path::PathBuf, [String; 2]) {
    let dir = std::env::temp_dir().join(format!("ringhub-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.json");
    let (first, _) = ringhub::auth::keys::add_key(&path, "tenant-1", false, None).unwrap();
    let (second, _) = ringhub::auth::keys::add_key(&path, "tenant-2", false, None).unwrap();
    (path, [first, second])
}

/// Polls `condition` until it holds or `within` passes.
pub fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

/// The number of live connections the (single) shard reports on `/health`.
pub fn shard_connections(addr: SocketAddr) -> u64 {
    let response = get(addr, "/health");
    let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    // The health request's own connection counts too.
    json["shard"]["connections"].as_u64().unwrap() - 1
}

/// Runs one `node --test` suite from `js` (`tests/js`) against `server` (its URL in
/// `HUB_BASE_URL`, plus `env`); every test must pass and at least `min_tests` must run.
pub fn run_js_suite(
    js: &std::path::Path,
    file: &str,
    server: &TestServer,
    env: &[(&str, &str)],
    min_tests: u32,
) {
    let output = std::process::Command::new("node")
        .args([
            "--test",
            "--test-concurrency=1",
            "--test-reporter=spec",
            "--test-force-exit",
            "--test-timeout=60000",
        ])
        .arg(js.join(file))
        .current_dir(js)
        .env("HUB_BASE_URL", format!("http://{}", server.addr))
        .envs(env.iter().copied())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node --test failed\n{stdout}\n{stderr}"
    );
    let count = |label: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim_start_matches('ℹ').trim().strip_prefix(label))
            .and_then(|n| n.trim().parse::<u32>().ok())
    };
    assert_eq!(count("fail"), Some(0), "{stdout}");
    assert!(
        count("pass").is_some_and(|n| n >= min_tests),
        "too few tests ran:\n{stdout}"
    );
}

/// Debian's Chromium (`HUB_CHROMIUM` overrides the path). When it is missing, the test says so
/// loudly and the caller skips its test, except under CI (`CI` set), where a missing browser
/// fails it: `tests/run-all.sh` installs it whenever it runs as root.
pub fn chromium() -> Option<std::path::PathBuf> {
    let path = std::path::PathBuf::from(
        std::env::var("HUB_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()),
    );
    if path.is_file() {
        return Some(path);
    }
    let message = format!(
        "{} not found: the browser tests (the status page, the official browser client, the \
         browser example of the docs) did NOT run. Install Debian's chromium (tests/run-all.sh does as root: apt-get install \
         chromium) or set HUB_CHROMIUM.",
        path.display()
    );
    assert!(std::env::var_os("CI").is_none(), "{message}");
    eprintln!("\n!!!!!!!!!! SKIPPED: {message}\n");
    None
}

/// Serves `files` (path, content type, body) over HTTP/1.1 on a new port, as a second
/// origin for browser tests; returns the origin, e.g. `http://127.0.0.1:41234`. The threads
/// end with the test process.
pub fn serve_files(files: Vec<(String, &'static str, Vec<u8>)>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a static origin");
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let files = std::sync::Arc::new(files);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let files = std::sync::Arc::clone(&files);
            std::thread::spawn(move || answer_file(stream, &files));
        }
    });
    origin
}

fn answer_file(mut stream: TcpStream, files: &[(String, &'static str, Vec<u8>)]) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("/");
    let (status, content_type, body) = match files.iter().find(|(p, _, _)| p == path) {
        Some((_, content_type, body)) => ("200 OK", *content_type, body.as_slice()),
        None => ("404 Not Found", "text/plain", &b"not found"[..]),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}
