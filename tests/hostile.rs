//! The hostile-input suite (issue 8): every attack gets its specified answer on the wire, and a
//! bystander on the same shard (`support/bystander.rs`: a SignalR connection in a group fed a
//! numbered REST publish every 10 ms) receives every message, in order, and stays connected.
//!
//! Where no document of ours specifies an outcome, the test follows Kestrel / ASP.NET Core
//! SignalR and says so. Timeouts are configured small so the slow attacks take seconds; the
//! "ended before 3x the timeout" bounds are correctness checks (the deadline fires at all and is
//! not extended by the drip), not speed claims.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringhub::config::{Config, DriverKind};
use serde_json::json;
use support::bystander::{self, Bystander};
use support::*;

const RS: u8 = 0x1e;
/// The small timeouts the slow attacks run against.
const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(1000);
const CLIENT_TIMEOUT: Duration = Duration::from_millis(1000);

struct Setup {
    server: TestServer,
    /// Virtual keys of tenants 1 and 2 (the seed hubs take them).
    keys: [String; 2],
    bystander: Bystander,
}

/// One shard with the echo route, the diagnostics hub, the seed hubs, two tenants' keys, small
/// timeouts and a bystander; `tweak` last.
fn setup(driver: DriverKind, name: &str, tweak: impl FnOnce(&mut Config)) -> Setup {
    let (keys_path, keys) = two_tenant_keys("hostile", &format!("{name}-{driver:?}"));
    let server = TestServer::start(driver, move |c| {
        bystander::configure(c);
        c.auth.key_file = keys_path;
        c.diagnostics.enabled = true;
        c.http.header_timeout = HEADER_TIMEOUT;
        c.signalr.handshake_timeout = HANDSHAKE_TIMEOUT;
        tweak(c);
    });
    let bystander = Bystander::start(&server);
    Setup {
        server,
        keys,
        bystander,
    }
}

/// The status line, headers and body of whatever the server answers `bytes` with on a fresh
/// connection, read until the server closes.
fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = connect(addr);
    let _ = stream.write_all(bytes);
    String::from_utf8_lossy(&read_to_close(&mut stream)).into_owned()
}

/// The status and body of a one-request exchange that the server ends.
fn status_and_body(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let raw = raw_exchange(addr, bytes);
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no response to {:?}: {raw:?}",
                String::from_utf8_lossy(bytes)
            )
        });
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A SignalR connection to `path` (no negotiate) after a successful handshake in `protocol`.
fn hub_client(addr: SocketAddr, path: &str, protocol: &str) -> WsClient {
    let mut ws = WsClient::connect(addr, path);
    ws.send_text(&format!(
        "{{\"protocol\":\"{protocol}\",\"version\":1}}\u{1e}"
    ));
    let ok = ws.read_frame();
    assert_eq!(ok.payload, b"{}\x1e", "handshake on {path}");
    ws
}

fn diagnostics_json(addr: SocketAddr) -> WsClient {
    hub_client(addr, "/hubs/diagnostics", "json")
}

fn diagnostics_msgpack(addr: SocketAddr) -> WsClient {
    hub_client(addr, "/hubs/diagnostics", "messagepack")
}

/// The JSON records of the next frame that holds something other than pings.
fn next_records(ws: &mut WsClient) -> Vec<serde_json::Value> {
    loop {
        let frame = ws.read_frame();
        assert_ne!(frame.opcode, 8, "closed: {:?}", frame.close_code());
        let records: Vec<serde_json::Value> = frame
            .payload
            .split(|b| *b == RS)
            .filter(|r| !r.is_empty())
            .map(|r| serde_json::from_slice(r).unwrap())
            .filter(|m: &serde_json::Value| m["type"] != 6)
            .collect();
        if !records.is_empty() {
            return records;
        }
    }
}

fn next_record(ws: &mut WsClient) -> serde_json::Value {
    let records = next_records(ws);
    assert_eq!(records.len(), 1, "{records:?}");
    records.into_iter().next().unwrap()
}

fn invoke(ws: &mut WsClient, id: &str, target: &str, arguments: &str) {
    ws.send_text(&format!(
        "{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"{target}\",\"arguments\":{arguments}}}\u{1e}"
    ));
}

/// A JSON client's hub connection ended with ASP.NET's error Close then WebSocket close 1000.
fn expect_json_error_close(ws: &mut WsClient) {
    assert_eq!(
        next_record(ws),
        json!({"type": 7, "error": "Connection closed with an error.", "allowReconnect": true})
    );
    assert_eq!(ws.read_close(), Some(1000));
}

/// MessagePack `[7, "Connection closed with an error.", true]` with its VarInt prefix.
fn msgpack_error_close() -> Vec<u8> {
    let text = b"Connection closed with an error.";
    let mut body = vec![0x93, 0x07, 0xd9, text.len() as u8];
    body.extend_from_slice(text);
    body.push(0xc3);
    let mut framed = vec![body.len() as u8];
    framed.extend(body);
    framed
}

fn expect_msgpack_error_close(ws: &mut WsClient) {
    loop {
        let frame = ws.read_frame();
        assert_ne!(frame.opcode, 8, "closed without a SignalR Close");
        // Skip server pings: [6] is `02 91 06`.
        if frame.payload == [0x02, 0x91, 0x06] {
            continue;
        }
        assert_eq!(frame.payload, msgpack_error_close());
        break;
    }
    assert_eq!(ws.read_close(), Some(1000));
}

/// `n` as a SignalR MessagePack VarInt length prefix.
fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Sends `bytes` one byte per second from another thread while the caller waits for the answer;
/// the drip stops at the first failed write or after `bytes` ends.
fn drip(stream: &TcpStream, bytes: Vec<u8>) -> std::thread::JoinHandle<()> {
    let mut writer = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        for byte in bytes {
            if writer.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

/// A frame header announcing `len` payload bytes (masked binary frame, 64-bit length).
fn header_with_length(len: u64) -> Vec<u8> {
    let mut out = vec![0x82, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&KEY);
    out
}

/// Nothing but pings arrives on `ws` for `within`.
fn assert_silent(ws: &mut WsClient, within: Duration) {
    ws.stream.set_read_timeout(Some(within)).unwrap();
    let started = Instant::now();
    let mut head = [0u8; 2];
    while started.elapsed() < within {
        match ws.stream.read_exact(&mut head) {
            Ok(()) => {
                let len = usize::from(head[1] & 0x7f);
                assert!(len < 126, "an unexpected large frame");
                let mut payload = vec![0u8; len];
                ws.stream.read_exact(&mut payload).unwrap();
                assert_eq!(
                    payload, b"{\"type\":6}\x1e",
                    "an unexpected message arrived"
                );
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break;
            }
            Err(e) => panic!("the connection failed: {e}"),
        }
    }
    ws.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
}

on_both_drivers! {
    // ---- HTTP heads --------------------------------------------------------------------------

    fn malformed_heads_get_400_with_the_reason_and_are_closed(driver) {
        let Setup { server, bystander, .. } = setup(driver, "malformed", |_| {});
        let cases: [(&[u8], &str); 13] = [
            (b"GET\r\n\r\n", "invalid method or request target"),
            (b"G@T / HTTP/1.1\r\nHost: t\r\n\r\n", "invalid method or request target"),
            (b" GET / HTTP/1.1\r\n\r\n", "invalid method or request target"),
            (b"GET / HTTP/1.1 extra\r\nHost: t\r\n\r\n", "invalid line ending"),
            (b"GET /health HTTP/9.9\r\n\r\n", ""),
            (b"GE\x00T / HTTP/1.1\r\n\r\n", ""),
            // CR-only line endings.
            (b"GET /health HTTP/1.1\rHost: t\r\r", "invalid line ending"),
            (b"GET /health HTTP/1.1\r\nHost: t\x00\r\n\r\n", "invalid header field value"),
            (b"GET /health HTTP/1.1\r\nBad Name: x\r\n\r\n", "invalid header field name"),
            (b"GET /health HTTP/1.1\r\nX(y): z\r\n\r\n", "invalid header field name"),
            (b"GET /health HTTP/1.1\r\n: v\r\n\r\n", "invalid header field name"),
            // Obsolete line folding and whitespace before the colon (RFC 9112 5.1, 5.2).
            (b"GET /health HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n", "invalid header field name"),
            (b"GET /health HTTP/1.1\r\nHost : t\r\n\r\n", "invalid header field name"),
        ];
        for (request, reason) in cases {
            let (status, body) = status_and_body(server.addr, request);
            assert_eq!(status, 400, "{:?}", String::from_utf8_lossy(request));
            assert!(body.starts_with(reason), "{:?}: {body}", String::from_utf8_lossy(request));
        }
        bystander.finish();
    }

    fn request_smuggling_and_bad_chunk_sizes_get_400_and_are_closed(driver) {
        let Setup { server, bystander, .. } = setup(driver, "smuggling", |_| {});
        let cases: [(&[u8], &str); 8] = [
            (b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "conflicting Content-Length values"),
            (b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 1, 2\r\n\r\nab", "conflicting Content-Length values"),
            (b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "Transfer-Encoding and Content-Length together"),
            (b"POST /health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", "Transfer-Encoding and Content-Length together"),
            (b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
            (b"POST /health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", "invalid chunked body"),
            (b"POST /health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nab\r\n0\r\n\r\n", "invalid chunked body"),
            (b"POST /health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nab\r\n0\r\n\r\n", "invalid chunked body"),
        ];
        for (request, reason) in cases {
            // A smuggled second request after the first must never be answered: the server
            // answers once and closes.
            let mut bytes = request.to_vec();
            bytes.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
            let raw = raw_exchange(server.addr, &bytes);
            assert!(raw.starts_with("HTTP/1.1 400 "), "{:?}: {raw}", String::from_utf8_lossy(request));
            assert!(raw.contains(&format!("\r\n\r\n{reason}")), "{raw}");
            assert_eq!(raw.matches("HTTP/1.1").count(), 1, "a smuggled request was answered: {raw}");
        }
        bystander.finish();
    }

    fn oversized_heads_get_414_and_431(driver) {
        let Setup { server, bystander, .. } = setup(driver, "oversized", |_| {});
        let long_line = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000));
        assert_eq!(status_and_body(server.addr, long_line.as_bytes()).0, 414);
        let mut block = String::from("GET /health HTTP/1.1\r\nHost: t\r\n");
        for i in 0..40 {
            block.push_str(&format!("x-filler-{i}: {}\r\n", "v".repeat(1000)));
        }
        block.push_str("\r\n");
        assert_eq!(status_and_body(server.addr, block.as_bytes()).0, 431);
        let mut count = String::from("GET /health HTTP/1.1\r\nHost: t\r\n");
        for i in 0..200 {
            count.push_str(&format!("x-h{i}: v\r\n"));
        }
        count.push_str("\r\n");
        assert_eq!(status_and_body(server.addr, count.as_bytes()).0, 431);
        // A megabyte of garbage without a line end is refused at the request-line limit.
        let (status, _) = status_and_body(server.addr, &[b'A'; 1 << 20]);
        assert_eq!(status, 414);
        bystander.finish();
    }

    // ---- slowloris ---------------------------------------------------------------------------

    fn a_head_dripped_one_byte_per_second_gets_408_at_the_header_timeout(driver) {
        let Setup { server, bystander, .. } = setup(driver, "slow-head", |_| {});
        let mut stream = connect(server.addr);
        let started = Instant::now();
        let dripper = drip(&stream, b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaa\r\n\r\n".to_vec());
        assert_eq!(read_response(&mut stream).status, 408);
        assert!(closes_within(&mut stream, Duration::from_secs(5)));
        assert!(started.elapsed() < HEADER_TIMEOUT * 3, "the drip extended the deadline");
        drop(stream);
        dripper.join().unwrap();
        bystander.finish();
    }

    fn a_websocket_upgrade_dripped_one_byte_per_second_gets_408(driver) {
        let Setup { server, bystander, .. } = setup(driver, "slow-upgrade", |_| {});
        let mut stream = connect(server.addr);
        let started = Instant::now();
        let dripper = drip(&stream, upgrade_request("/hubs/diagnostics").into_bytes());
        assert_eq!(read_response(&mut stream).status, 408);
        assert!(closes_within(&mut stream, Duration::from_secs(5)));
        assert!(started.elapsed() < HEADER_TIMEOUT * 3, "the drip extended the deadline");
        drop(stream);
        dripper.join().unwrap();
        bystander.finish();
    }

    fn a_signalr_handshake_dripped_one_byte_per_second_is_canceled_at_the_handshake_timeout(driver) {
        let Setup { server, bystander, .. } = setup(driver, "slow-handshake", |_| {});
        // One handshake byte per WebSocket frame, one frame per second...
        let mut ws = WsClient::connect(server.addr, "/hubs/diagnostics");
        let started = Instant::now();
        let mut frames = Vec::new();
        for byte in b"{\"protocol\":\"json\",\"version\":1}\x1e" {
            frames.push(client_frame(true, 1, &[*byte], true));
        }
        let writer = ws.stream.try_clone().unwrap();
        let dripper = std::thread::spawn(move || {
            let mut writer = writer;
            for frame in frames {
                if writer.write_all(&frame).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        assert_eq!(ws.read_frame().payload, b"{\"error\":\"Handshake was canceled.\"}\x1e");
        assert_eq!(ws.read_close(), Some(1000));
        assert!(started.elapsed() < HANDSHAKE_TIMEOUT * 3, "the drip extended the deadline");
        drop(ws);
        dripper.join().unwrap();
        // ...and the bytes of one frame, one per second.
        let mut ws = WsClient::connect(server.addr, "/hubs/diagnostics");
        let started = Instant::now();
        let dripper = drip(&ws.stream, client_frame(true, 1, b"{\"protocol\":\"json\",\"version\":1}\x1e", true));
        assert_eq!(ws.read_frame().payload, b"{\"error\":\"Handshake was canceled.\"}\x1e");
        assert_eq!(ws.read_close(), Some(1000));
        assert!(started.elapsed() < HANDSHAKE_TIMEOUT * 3, "the drip extended the deadline");
        drop(ws);
        dripper.join().unwrap();
        bystander.finish();
    }

    // ---- WebSocket upgrades ------------------------------------------------------------------

    fn bad_upgrade_headers_are_refused_with_kestrels_statuses(driver) {
        let Setup { server, bystander, .. } = setup(driver, "upgrade", |_| {});
        let request = |lines: &str, method: &str| {
            format!("{method} /ws/echo HTTP/1.1\r\nHost: t\r\n{lines}\r\n").into_bytes()
        };
        let up = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
        let v13 = "Sec-WebSocket-Version: 13\r\n";
        let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        // No key, or a key that is not 16 bytes in base64: 400.
        assert_eq!(status_and_body(server.addr, &request(&format!("{up}{v13}"), "GET")).0, 400);
        for bad_key in ["not base64!!", "c2hvcnQ=", "dGhlIHNhbXBsZSBub25jZQ==dGhl", ""] {
            let lines = format!("{up}{v13}Sec-WebSocket-Key: {bad_key}\r\n");
            assert_eq!(status_and_body(server.addr, &request(&lines, "GET")).0, 400, "{bad_key}");
        }
        // Another version: 426 naming 13 (RFC 6455 4.4).
        let mut stream = connect(server.addr);
        stream.write_all(&request(&format!("{up}{key}Sec-WebSocket-Version: 8\r\n"), "GET")).unwrap();
        let response = read_response(&mut stream);
        assert_eq!((response.status, response.header("sec-websocket-version")), (426, Some("13")));
        // Without `Connection: upgrade` or `Upgrade: websocket` it is no upgrade: the echo route
        // only speaks WebSocket, so 400 (ASP.NET's WebSocket middleware passes such a request on,
        // and an endpoint that requires a WebSocket answers 400).
        for lines in [
            format!("Upgrade: websocket\r\n{key}{v13}"),
            format!("Upgrade: websocket\r\nConnection: keep-alive\r\n{key}{v13}"),
            format!("Connection: Upgrade\r\n{key}{v13}"),
            format!("Upgrade: h2c\r\nConnection: Upgrade\r\n{key}{v13}"),
        ] {
            let (status, _) = status_and_body(server.addr, &request(&format!("{lines}Connection: close\r\n"), "GET"));
            assert_eq!(status, 400, "{lines}");
        }
        // An upgrade is a GET (RFC 6455 4.1); a POST is not one.
        let (status, _) = status_and_body(server.addr, &request(&format!("{up}{key}{v13}Content-Length: 0\r\n"), "POST"));
        assert_eq!(status, 405);
        bystander.finish();
    }

    // ---- WebSocket frames --------------------------------------------------------------------

    fn protocol_violating_frames_are_closed_with_1002(driver) {
        let Setup { server, bystander, .. } = setup(driver, "frames", |_| {});
        let mut length_top_bit = header_with_length(1 << 63);
        length_top_bit.extend_from_slice(b"x");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("unmasked", client_frame(true, 1, b"hi", false)),
            ("RSV1", { let mut f = client_frame(true, 1, b"hi", true); f[0] |= 0x40; f }),
            ("RSV2", { let mut f = client_frame(true, 1, b"hi", true); f[0] |= 0x20; f }),
            ("RSV3", { let mut f = client_frame(true, 1, b"hi", true); f[0] |= 0x10; f }),
            ("64-bit length with the top bit set", length_top_bit),
            ("fragmented ping", client_frame(false, 9, b"p", true)),
            ("fragmented close", client_frame(false, 8, &1000u16.to_be_bytes(), true)),
            ("ping over 125 bytes", client_frame(true, 9, &[0; 126], true)),
            ("reserved opcode", client_frame(true, 3, b"", true)),
            ("continuation without a message", client_frame(true, 0, b"x", true)),
            ("a one-byte close", client_frame(true, 8, &[3], true)),
        ];
        for (what, bytes) in cases {
            let mut ws = WsClient::echo(server.addr);
            ws.send_raw(&bytes);
            assert_eq!(ws.read_close(), Some(1002), "{what}");
            ws.expect_tcp_close();
        }
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            let mut ws = WsClient::echo(server.addr);
            ws.send(8, &code.to_be_bytes());
            assert_eq!(ws.read_close(), Some(1002), "close code {code}");
            ws.expect_tcp_close();
        }
        bystander.finish();
    }

    fn valid_close_codes_are_echoed(driver) {
        let Setup { server, bystander, .. } = setup(driver, "close-codes", |_| {});
        for code in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            let mut ws = WsClient::echo(server.addr);
            ws.send(8, &code.to_be_bytes());
            assert_eq!(ws.read_close(), Some(code));
            ws.expect_tcp_close();
        }
        bystander.finish();
    }

    fn invalid_utf8_in_text_and_close_reasons_is_closed_with_1007(driver) {
        let Setup { server, bystander, .. } = setup(driver, "utf8", |_| {});
        let mut reason = 1000u16.to_be_bytes().to_vec();
        reason.extend_from_slice(b"bye \xff\xfe");
        let cases: [(&str, u8, Vec<u8>); 4] = [
            ("text", 1, b"hello \xc3\x28".to_vec()),
            ("an encoded surrogate", 1, b"\xed\xa0\x80".to_vec()),
            ("an overlong encoding", 1, b"\xc0\xaf".to_vec()),
            ("a close reason", 8, reason),
        ];
        for (what, opcode, payload) in cases {
            let mut ws = WsClient::echo(server.addr);
            ws.send(opcode, &payload);
            assert_eq!(ws.read_close(), Some(1007), "{what}");
            ws.expect_tcp_close();
        }
        // On a hub connection too.
        let mut ws = diagnostics_json(server.addr);
        ws.send(1, b"{\"type\":6}\xff\x1e");
        assert_eq!(ws.read_close(), Some(1007));
        bystander.finish();
    }

    fn a_frame_announcing_2_pow_63_minus_1_bytes_is_closed_with_1009_from_its_header(driver) {
        let Setup { server, bystander, .. } = setup(driver, "huge-frame", |_| {});
        // Only the header is sent: the answer cannot wait for (or allocate) the payload.
        for path in ["/ws/echo", "/hubs/diagnostics"] {
            let mut ws = WsClient::connect(server.addr, path);
            ws.send_raw(&header_with_length(u64::MAX >> 1));
            assert_eq!(ws.read_close(), Some(1009), "{path}");
            ws.expect_tcp_close();
        }
        // The same for a continuation that would take the message over the limit.
        let mut ws = WsClient::echo(server.addr);
        ws.send_raw(&client_frame(false, 2, b"start", true));
        let mut continuation = header_with_length(u64::MAX >> 1);
        continuation[0] = 0x80;
        ws.send_raw(&continuation);
        assert_eq!(ws.read_close(), Some(1009));
        bystander.finish();
    }

    // ---- SignalR MessagePack framing ---------------------------------------------------------

    fn bad_messagepack_varints_close_with_the_aspnet_error(driver) {
        let Setup { server, bystander, .. } = setup(driver, "varint", |_| {});
        let mut over_limit = varint(40_000);
        over_limit.extend(std::iter::repeat_n(0xc0, 33_000));
        let cases: [(&str, Vec<u8>); 4] = [
            ("over 2 GB", vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
            ("six bytes", vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
            ("all continuation bytes", vec![0x80; 16]),
            ("over the 32 KiB message limit", over_limit),
        ];
        for (what, bytes) in cases {
            let mut ws = diagnostics_msgpack(server.addr);
            ws.send(2, &bytes);
            expect_msgpack_error_close(&mut ws);
            let _ = what;
        }
        bystander.finish();
    }

    fn a_truncated_varint_or_short_body_then_silence_ends_at_the_client_timeout(driver) {
        let Setup { server, bystander, .. } = setup(driver, "short", |c| c.signalr.client_timeout = CLIENT_TIMEOUT);
        let mut short_body = varint(100);
        short_body.extend_from_slice(&[0x95; 10]);
        for (what, bytes) in [("a truncated VarInt", vec![0x80]), ("a short body", short_body)] {
            let mut ws = diagnostics_msgpack(server.addr);
            let started = Instant::now();
            // A Ping starts the client timeout (ASP.NET: StartClientTimeout on the first Ping).
            let mut sent = vec![0x02, 0x91, 0x06];
            sent.extend(bytes);
            ws.send(2, &sent);
            expect_msgpack_error_close(&mut ws);
            assert!(started.elapsed() < CLIENT_TIMEOUT * 3, "{what}: held too long");
            assert!(started.elapsed() >= CLIENT_TIMEOUT / 2, "{what}: ended before the timeout");
        }
        bystander.finish();
    }

    // ---- SignalR JSON ------------------------------------------------------------------------

    fn deeply_nested_json_closes_with_an_error_without_overflowing_the_stack(driver) {
        let Setup { server, bystander, .. } = setup(driver, "nested", |_| {});
        // 10,000 arrays deep, and 4,000 objects deep: both within the 32 KiB message limit, so
        // only the depth can refuse them (System.Text.Json's default MaxDepth is 64).
        for (open, close, depth) in [("[", "]", 10_000), ("{\"a\":", "}", 4_000)] {
            let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            let message = format!("{{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[{nested}]}}\u{1e}");
            assert!(message.len() < 32 * 1024);
            let mut ws = diagnostics_json(server.addr);
            ws.send_text(&message);
            expect_json_error_close(&mut ws);
        }
        // Moderate nesting is fine.
        let mut ws = diagnostics_json(server.addr);
        let nested = format!("{}1{}", "[".repeat(32), "]".repeat(32));
        invoke(&mut ws, "2", "Echo", &format!("[{nested}]"));
        let reply = next_record(&mut ws);
        assert_eq!(reply["result"], serde_json::from_str::<serde_json::Value>(&nested).unwrap());
        bystander.finish();
    }

    fn a_huge_string_is_echoed_within_the_limit_and_closes_the_connection_beyond_it(driver) {
        let Setup { server, bystander, .. } = setup(driver, "huge-json", |_| {});
        let mut ws = diagnostics_json(server.addr);
        let within = "x".repeat(30_000);
        invoke(&mut ws, "1", "Echo", &format!("[\"{within}\"]"));
        assert_eq!(next_record(&mut ws), json!({"type": 3, "invocationId": "1", "result": within}));
        let beyond = "x".repeat(40_000);
        invoke(&mut ws, "2", "Echo", &format!("[\"{beyond}\"]"));
        expect_json_error_close(&mut ws);
        bystander.finish();
    }

    fn a_message_without_its_record_separator_is_closed_at_the_limit(driver) {
        let Setup { server, bystander, .. } = setup(driver, "no-separator", |_| {});
        let mut ws = diagnostics_json(server.addr);
        ws.send_text("{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"");
        for _ in 0..4 {
            ws.send_text(&"y".repeat(10_000));
        }
        expect_json_error_close(&mut ws);
        bystander.finish();
    }

    fn wrong_argument_types_to_seed_hub_methods_complete_with_an_error_and_the_connection_survives(driver) {
        let Setup { server, keys, bystander } = setup(driver, "arguments", |_| {});
        let addr = server.addr;
        let key = &keys[0];
        // Group actions take a string, an integer, or an array of them (a name each, like
        // Conduit's `SubscribeToWebhooks(string[])`), so those are not wrong types here.
        let failed = |target: &str| format!("Failed to invoke '{target}' due to an error on the server.");
        let cases: [(&str, &str, &[&str]); 4] = [
            ("/hubs/image-generation", "SubscribeToTask", &["[{\"a\":1}]", "[[{}]]", "[null]", "[true]", "[1.5]", "[]", "[\"a\",\"b\"]"]),
            ("/hubs/video-generation", "UnsubscribeFromTask", &["[1.5]", "[]"]),
            ("/hubs/content-generation", "SubscribeToTask", &["[\"t\"]", "[\"t\",7]", "[7,\"image\"]"]),
            ("/hubs/health", "GetHealth", &["[\"extra\"]"]),
        ];
        for (path, target, argument_lists) in cases {
            let mut ws = hub_client(addr, &format!("{path}?access_token={key}"), "json");
            for (i, arguments) in argument_lists.iter().enumerate() {
                invoke(&mut ws, &i.to_string(), target, arguments);
                assert_eq!(
                    next_record(&mut ws),
                    json!({"type": 3, "invocationId": i.to_string(), "error": failed(target)}),
                    "{path} {target}{arguments}"
                );
            }
            // Still connected and served.
            invoke(&mut ws, "ok", "NoSuchMethod", "[]");
            assert_eq!(
                next_record(&mut ws),
                json!({"type": 3, "invocationId": "ok", "error": "Unknown hub method 'NoSuchMethod'"})
            );
        }
        bystander.finish();
    }

    // ---- invocation floods -------------------------------------------------------------------

    fn an_invocation_flood_over_the_rate_is_refused_per_call_and_spares_others(driver) {
        let Setup { server, bystander, .. } = setup(driver, "rate-flood", |c| {
            c.signalr.invocation_rate = 10;
            c.signalr.invocation_burst = 20;
        });
        let mut flooder = diagnostics_json(server.addr);
        let mut flood = Vec::new();
        for i in 0..500 {
            flood.extend(format!("{{\"type\":1,\"invocationId\":\"{i}\",\"target\":\"Echo\",\"arguments\":[{i}]}}\u{1e}").bytes());
        }
        flooder.send(1, &flood);
        let mut replies = Vec::new();
        while replies.len() < 500 {
            replies.extend(next_records(&mut flooder).into_iter().filter(|m| m["type"] == 3));
        }
        let limited = replies.iter().filter(|m| m["error"] == "Rate limit exceeded").count();
        let served = replies.iter().filter(|m| m.get("result").is_some()).count();
        assert_eq!(limited + served, 500);
        // The burst, plus whatever the rate refilled while the flood was read.
        assert!((20..=40).contains(&served), "{served} served");
        // Another client is not limited by the flooder's budget.
        let mut other = diagnostics_json(server.addr);
        for i in 0..20 {
            invoke(&mut other, &i.to_string(), "Echo", &format!("[{i}]"));
            assert_eq!(next_record(&mut other)["result"], i);
        }
        bystander.finish();
    }

    fn an_invocation_flood_behind_a_busy_slot_closes_only_the_flooder(driver) {
        let Setup { server, bystander, .. } = setup(driver, "parallel-flood", |c| {
            c.signalr.invocation_rate = 1_000_000;
            c.signalr.invocation_burst = 1_000_000;
        });
        let mut flooder = diagnostics_json(server.addr);
        // StreamingConcat holds the only invocation slot until its upload completes.
        let mut flood = b"{\"type\":1,\"invocationId\":\"0\",\"target\":\"StreamingConcat\",\"arguments\":[],\"streamIds\":[\"s\"]}\x1e".to_vec();
        for i in 1..=1100 {
            flood.extend(format!("{{\"type\":1,\"invocationId\":\"{i}\",\"target\":\"Echo\",\"arguments\":[{i}]}}\u{1e}").bytes());
        }
        flooder.send(1, &flood);
        expect_json_error_close(&mut flooder);
        bystander.finish();
    }

    // ---- tokens ------------------------------------------------------------------------------

    fn a_100_kb_token_is_refused_by_the_head_limits(driver) {
        let Setup { server, bystander, .. } = setup(driver, "long-token", |_| {});
        let token = "k".repeat(100 * 1024);
        let in_query = format!("POST /hubs/image-generation/negotiate?negotiateVersion=1&access_token={token} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(status_and_body(server.addr, in_query.as_bytes()).0, 414);
        let in_header = format!("POST /hubs/image-generation/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(status_and_body(server.addr, in_header.as_bytes()).0, 431);
        let upgrade = upgrade_request(&format!("/hubs/image-generation?access_token={token}"));
        assert_eq!(status_and_body(server.addr, upgrade.as_bytes()).0, 414);
        bystander.finish();
    }

    fn garbage_tokens_get_401(driver) {
        let Setup { server, bystander, .. } = setup(driver, "garbage-token", |_| {});
        for token in ["%ff%fe%fd", "%00", "%0d%0aX-Injected:%201", "%C0%AF", "%", "%zz", "a%20b", "%25ff"] {
            let upgrade = upgrade_request(&format!("/hubs/image-generation?access_token={token}"));
            let raw = raw_exchange(server.addr, upgrade.as_bytes());
            assert!(raw.starts_with("HTTP/1.1 401 ") || raw.starts_with("HTTP/1.1 400 "), "{token}: {raw}");
            assert!(!raw.to_ascii_lowercase().contains("\r\nx-injected"), "{raw}");
            let negotiate = format!("POST /hubs/image-generation/negotiate?negotiateVersion=1&access_token={token} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let (status, _) = status_and_body(server.addr, negotiate.as_bytes());
            assert!(status == 401 || status == 400, "{token}: {status}");
        }
        // Bytes that are not UTF-8 in the Authorization header: the key is simply not valid.
        let mut request = b"POST /hubs/image-generation/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer \xff\xfe\x80abc\r\nContent-Length: 0\r\n\r\n".to_vec();
        assert_eq!(status_and_body(server.addr, &request).0, 401);
        // Raw non-ASCII bytes in the request target are not a request.
        request = b"GET /hubs/image-generation?access_token=\xff\xfe HTTP/1.1\r\nHost: t\r\n\r\n".to_vec();
        assert_eq!(status_and_body(server.addr, &request).0, 400);
        bystander.finish();
    }

    // ---- the REST API ------------------------------------------------------------------------

    fn path_traversal_on_the_rest_api_reaches_nothing(driver) {
        let Setup { server, bystander, .. } = setup(driver, "traversal", |_| {});
        let addr = server.addr;
        let post = |path: &str| rest(addr, "POST", path, "{\"target\":\"Leak\",\"arguments\":[]}");
        for path in [
            "/api/v1/hubs/../../etc/passwd",
            "/api/hubs/../../etc/passwd",
            "/api/hubs/bystander/../../../etc/passwd",
            "/api/hubs/%2e%2e%2f%2e%2e%2fetc%2fpasswd/:send",
            "/api/hubs/%252e%252e%252fetc%252fpasswd/:send",
            "/api/hubs/..%2fbystander/:send",
            "/api/hubs/bystander/../bystander/:send",
            "/../api/hubs/bystander/:send",
            "/api/hubs/bystander%2f..%2fbystander/:send",
        ] {
            let response = post(path);
            assert!(
                matches!(response.status, 400 | 404 | 405),
                "{path}: {} {}",
                response.status,
                response.body_str()
            );
        }
        // Paths are not normalised (Kestrel would remove dot segments before routing; the API's
        // names may hold any character, `request.rs`): dots and slashes in a group name are part
        // of the name, so the message goes to a group nobody is in, never to the bystander's
        // group, which the bystander's check proves.
        for group in ["..", "%2e%2e", ".", "..%2fbystanders", "%2e%2e%2fbystanders", "bystanders%2f..", "bystanders%2f.", "..%2f..%2fbystanders"] {
            let response = post(&format!("/api/hubs/bystander/groups/{group}/:send"));
            assert_eq!((response.status, response.body_str()), (202, ""), "{group}");
        }
        for path in ["/health/../metrics", "/ws/echo/../health", "/hubs/diagnostics/../../health"] {
            let response = get(addr, path);
            assert_eq!(response.status, 404, "{path}");
        }
        bystander.finish();
    }

    fn header_injection_and_nul_in_rest_names_stay_data_and_overlong_names_are_refused(driver) {
        let Setup { server, bystander, .. } = setup(driver, "injection", |_| {});
        let addr = server.addr;
        let body = "{\"target\":\"Leak\",\"arguments\":[]}";
        // Names may hold any character once decoded (`request.rs`), control characters
        // included: a CR LF in a name is data, never a header, and reaches nobody else.
        for path in [
            "/api/hubs/bystander/groups/a%0d%0aX-Injected:%20yes/:send",
            "/api/hubs/bystander/groups/nobody/:send?excluded=a%0d%0aX-Injected:%20yes",
            "/api/hubs/bystander/groups/a%00b/:send",
            "/api/hubs/bystander/users/a%0d%0aX-Injected:%20yes/:send",
            "/api/hubs/bystander/connections/a%0aX-Injected:1/:send",
        ] {
            let response = rest(addr, "POST", path, body);
            assert!(response.header("x-injected").is_none(), "{path}: {response:?}");
            assert_eq!((response.status, response.body_str()), (202, ""), "{path}");
        }
        // In a hub name it names no hub; in a close reason it is only the Close's error text.
        for (method, path, status) in [
            ("POST", "/api/hubs/bystander%0d%0aX-Injected:%20yes/:send", 404),
            ("POST", "/api/hubs/bystander%00/:send", 404),
            ("DELETE", "/api/hubs/bystander/connections/nobody?reason=a%0d%0aX-Injected:%201", 404),
        ] {
            let response = rest(addr, method, path, if method == "POST" { body } else { "" });
            assert!(response.header("x-injected").is_none(), "{path}: {response:?}");
            assert_eq!(response.status, status, "{path}: {}", response.body_str());
        }
        // A raw CR or LF inside the request line ends it: the rest is no valid head.
        let raw = raw_exchange(
            addr,
            format!("POST /api/hubs/bystander/groups/a\rX-Injected: yes/:send HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\r\n", bystander::SERVER_KEY).as_bytes(),
        );
        assert!(raw.starts_with("HTTP/1.1 400 "), "{raw}");
        let long_group = "g".repeat(1025);
        let response = rest(addr, "POST", &format!("/api/hubs/bystander/groups/{long_group}/:send"), body);
        assert_eq!(response.status, 400);
        let response = rest(addr, "PUT", &format!("/api/hubs/bystander/groups/{long_group}/connections/x"), "");
        assert_eq!(response.status, 400);
        let long_hub = "h".repeat(4000);
        assert_eq!(rest(addr, "POST", &format!("/api/hubs/{long_hub}/:send"), body).status, 404);
        let long_connection = "c".repeat(1025);
        assert_eq!(rest(addr, "POST", &format!("/api/hubs/bystander/connections/{long_connection}/:send"), body).status, 400);
        let long_user = "u".repeat(1025);
        assert_eq!(rest(addr, "POST", &format!("/api/hubs/bystander/users/{long_user}/:send"), body).status, 400);
        bystander.finish();
    }

    // ---- cross-tenant ------------------------------------------------------------------------

    fn a_virtual_key_cannot_publish_to_another_tenants_group(driver) {
        let Setup { server, keys, bystander } = setup(driver, "tenant", |_| {});
        let addr = server.addr;
        let [mine, theirs] = &keys;
        // Tenant 2 listens on its key groups.
        let mut victim = hub_client(addr, &format!("/hubs/content-generation?access_token={theirs}"), "json");
        invoke(&mut victim, "1", "SubscribeToAllTasks", "[]");
        assert_eq!(next_record(&mut victim), json!({"type": 3, "invocationId": "1"}));
        invoke(&mut victim, "2", "SubscribeToTask", "[\"t2\",\"image\"]");
        assert_eq!(next_record(&mut victim), json!({"type": 3, "invocationId": "2"}));
        let mut victim_nav = hub_client(addr, &format!("/hubs/navigation-state?access_token={theirs}"), "json");
        // Tenant 1's key on the REST API: 403 for every target, by header; not a key at all in
        // the query.
        let body = "{\"target\":\"Spoof\",\"arguments\":[]}";
        for path in [
            "/api/hubs/content-generation/groups/vkey-2-content/:send",
            "/api/hubs/content-generation/groups/content-t2/:send",
            "/api/hubs/navigation-state/groups/vkey-2/:send",
            "/api/hubs/content-generation/users/2/:send",
            "/api/hubs/content-generation/:send",
        ] {
            let response = rest_as(addr, "POST", path, body, &format!("Authorization: Bearer {mine}\r\n"));
            assert_eq!(response.status, 403, "{path}");
            let response = rest_as(addr, "POST", &format!("{path}?access_token={mine}"), body, "");
            assert_eq!(response.status, 401, "{path}");
        }
        let response = rest_as(addr, "PUT", "/api/hubs/content-generation/users/1/groups/vkey-2-content", "", &format!("Authorization: Bearer {mine}\r\n"));
        assert_eq!(response.status, 403);
        // Tenant 1 tries every seed method with tenant 2's group names.
        let mut attacker = hub_client(addr, &format!("/hubs/content-generation?access_token={mine}"), "json");
        for (target, arguments) in [
            ("SubscribeToAllTasks", "[]"),
            ("SubscribeToTask", "[\"../vkey-2-content\",\"image\"]"),
            ("StreamResponse", "[\"vkey-2-content\"]"),
        ] {
            invoke(&mut attacker, "x", target, arguments);
            let _ = next_records(&mut attacker);
        }
        let mut attacker_nav = hub_client(addr, &format!("/hubs/navigation-state?access_token={mine}"), "json");
        invoke(&mut attacker_nav, "n", "UpdateNavigation", "[{\"group\":\"vkey-2\",\"page\":\"spoof\"}]");
        let _ = next_records(&mut attacker_nav);
        // Admin hubs refuse virtual keys.
        let upgrade = upgrade_request(&format!("/hubs/admin?access_token={mine}"));
        assert_eq!(status_and_body(addr, upgrade.as_bytes()).0, 403);
        assert_silent(&mut victim, Duration::from_millis(300));
        assert_silent(&mut victim_nav, Duration::from_millis(300));
        bystander.finish();
    }
}

/// A REST call with the bystander's server key.
fn rest(addr: SocketAddr, method: &str, path: &str, body: &str) -> HttpResponse {
    rest_as(
        addr,
        method,
        path,
        body,
        &format!("Authorization: Bearer {}\r\n", bystander::SERVER_KEY),
    )
}

fn rest_as(addr: SocketAddr, method: &str, path: &str, body: &str, auth: &str) -> HttpResponse {
    let mut stream = connect(addr);
    stream
        .write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    read_response(&mut stream)
}

/// The Conduit entity of a key in Redis, as `tests/redis_keys.rs` writes it.
fn redis_entity(hash: &str, enabled: bool) -> String {
    json!({
        "Id": 7, "KeyName": "tenant", "KeyHash": hash, "IsEnabled": enabled,
        "ExpiresAt": null, "Metadata": null, "VirtualKeyGroupId": 1,
    })
    .to_string()
}

fn negotiate_status(addr: SocketAddr, key: &str) -> (u16, String) {
    let response = http(
        addr,
        format!(
            "POST /hubs/image-generation/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: t\r\n\
             Authorization: Bearer {key}\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    (response.status, response.body_str().to_owned())
}

on_both_drivers! {
    fn a_key_disabled_in_redis_and_its_negotiated_tokens_are_refused_within_the_cache_ttl(driver) {
        let redis = support::redis::RedisServer::start();
        let url = redis.url();
        let ttl = Duration::from_secs(1);
        let Setup { server, bystander, .. } = setup(driver, "replay", move |c| {
            c.auth.store = ringhub::config::KeyStoreKind::Redis;
            c.auth.redis_url = url;
            c.auth.cache_ttl = ttl;
        });
        let addr = server.addr;
        for invalidate in [true, false] {
            let key = ringhub::auth::generate_virtual_key().unwrap();
            let hash = ringhub::auth::hash_key(&key);
            let vkey = format!("vkey:{hash}");
            redis.set(&vkey, &redis_entity(&hash, true));
            let (status, body) = negotiate_status(addr, &key);
            assert_eq!(status, 200, "{body}");
            let token: serde_json::Value = serde_json::from_str(&body).unwrap();
            let token = token["connectionToken"].as_str().unwrap().to_owned();
            let connected = hub_client(addr, &format!("/hubs/image-generation?access_token={key}"), "json");
            // Conduit disables the key, and announces it (or not).
            redis.set(&vkey, &redis_entity(&hash, false));
            let started = Instant::now();
            if invalidate {
                redis.publish("vkey_invalidated", &hash);
            }
            assert!(
                eventually(ttl * 3, || negotiate_status(addr, &key).0 == 401),
                "invalidate={invalidate}: the disabled key is still admitted"
            );
            assert!(started.elapsed() < ttl * 3);
            assert_eq!(
                negotiate_status(addr, &key),
                (401, "{\"error\":\"the API key is disabled\"}".to_owned())
            );
            // Replaying the token negotiated while the key was enabled does not help.
            let upgrade = upgrade_request(&format!("/hubs/image-generation?id={token}&access_token={key}"));
            assert_eq!(status_and_body(addr, upgrade.as_bytes()).0, 401, "invalidate={invalidate}");
            let upgrade = upgrade_request(&format!("/hubs/image-generation?id={token}"));
            assert_eq!(status_and_body(addr, upgrade.as_bytes()).0, 401, "invalidate={invalidate}");
            // A connection opened before the key was disabled is not cut (ASP.NET does not
            // re-check a connection's authentication either, unless
            // CloseOnAuthenticationExpiration applies to an expiring token); only new
            // negotiates and upgrades are refused.
            drop(connected);
        }
        bystander.finish();
    }
}
