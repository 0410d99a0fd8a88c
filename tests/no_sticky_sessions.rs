//! No sticky sessions: two instances in this process share a cluster secret and a Redis
//! backplane (a `redis-server` started on a free port). A connection negotiated on one instance
//! connects on the other; forged, tampered, foreign, wrong-hub and expired tokens are refused
//! there with ASP.NET's 404; and a stateful-reconnect resume that lands on the instance that
//! does not hold the session gets that same 404, so the client starts a fresh connection.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringhub::auth::keys::hash_key;
use ringhub::config::{BackplaneKind, ClusterSecret, Config, DriverKind, HubAuth, HubConfig};
use ringhub::hub::identity::{
    TokenClaims, TokenKeys, hub_tag, new_connection_id_bytes, unix_millis,
};
use ringhub::shard::ShardId;
use support::redis::RedisServer;
use support::*;

const SECRET: &str = "test cluster secret, 32 bytes or more";
const SERVER_KEY: &str = "no-sticky-sessions-server-key";
const RS: char = '\u{1e}';

/// An anonymous hub with an echo and a who-am-I method.
fn chat_hub(name: &str, path: &str) -> HubConfig {
    HubConfig {
        name: name.into(),
        path: path.into(),
        auth: HubAuth::Anonymous,
        max_message_size: None,
        methods: vec![
            ("Echo".into(), "echo".into()),
            ("WhoAmI".into(), "caller-connection-id".into()),
        ],
        protocols: vec!["json".into(), "messagepack".into()],
        join_on_connect: Vec::new(),
        redis_name: None,
        events_url: None,
    }
}

/// An instance on `redis` with `shards` shards, the shared secret, the chat hubs, and `tweak`.
fn instance(
    driver: DriverKind,
    redis: &RedisServer,
    shards: usize,
    tweak: impl FnOnce(&mut Config),
) -> TestServer {
    let url = redis.url();
    TestServer::start(driver, |c| {
        c.workers = std::num::NonZeroUsize::new(shards).unwrap();
        c.backplane.kind = BackplaneKind::Redis;
        c.backplane.redis_url = url;
        c.auth.server_key_hashes = vec![hash_key(SERVER_KEY)];
        c.cluster.secret = Some(ClusterSecret::new(SECRET.as_bytes()));
        c.hubs.push(chat_hub("chat", "/hubs/chat"));
        c.hubs.push(chat_hub("other", "/hubs/other"));
        tweak(c);
    })
}

/// Polls `/health/ready` until the backplane is up (or fails after 10 s).
fn wait_ready(addr: SocketAddr) {
    assert!(
        eventually(Duration::from_secs(10), || get(addr, "/health/ready")
            .status
            == 200),
        "{addr} never became ready"
    );
}

/// POSTs negotiate (version 1, optionally stateful) and returns (connectionId, token).
fn negotiate(addr: SocketAddr, hub: &str, stateful: bool) -> (String, String) {
    let extra = if stateful {
        "&useStatefulReconnect=true"
    } else {
        ""
    };
    let request = format!(
        "POST {hub}/negotiate?negotiateVersion=1{extra} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
    );
    let response = http(addr, request.as_bytes());
    assert_eq!(response.status, 200, "{}", response.body_str());
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(
        body["useStatefulReconnect"].as_bool().unwrap_or(false),
        stateful
    );
    (
        body["connectionId"].as_str().unwrap().to_owned(),
        body["connectionToken"].as_str().unwrap().to_owned(),
    )
}

/// The status and body a WebSocket upgrade with `?id=token` gets (the socket then closes).
fn upgrade_status(addr: SocketAddr, hub: &str, token: &str) -> (u16, String) {
    let mut stream = support::connect(addr);
    stream
        .write_all(
            format!(
                "GET {hub}?id={token} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let response = read_response(&mut stream);
    (response.status, response.body_str().to_owned())
}

/// A JSON SignalR client after its handshake (`version` 2 for stateful reconnect).
fn connect(addr: SocketAddr, hub: &str, token: &str, version: u8) -> WsClient {
    let mut ws = WsClient::connect(addr, &format!("{hub}?id={token}"));
    ws.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    ws.send_text(&format!(
        "{{\"protocol\":\"json\",\"version\":{version}}}{RS}"
    ));
    assert_eq!(ws.read_frame().payload, b"{}\x1e");
    ws
}

/// The next hub messages that are not Pings or Acks.
fn next_messages(ws: &mut WsClient) -> Vec<serde_json::Value> {
    loop {
        let frame = ws.read_frame();
        let messages: Vec<serde_json::Value> = frame
            .payload
            .split(|b| *b == 0x1e)
            .filter(|r| !r.is_empty())
            .map(|r| serde_json::from_slice(r).unwrap())
            .filter(|m: &serde_json::Value| m["type"] != 6 && m["type"] != 8)
            .collect();
        if !messages.is_empty() {
            return messages;
        }
    }
}

/// The value of the metric sample `name{labels}` on `addr`'s `/metrics`.
fn metric(addr: SocketAddr, sample: &str) -> u64 {
    let body = get(addr, "/metrics").body_str().to_owned();
    body.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{sample} not in /metrics"))
}

/// A token signed with `secret` for the chat hub, expiring at `expires_unix_ms`.
fn mint(secret: &str, hub: &str, expires_unix_ms: u64) -> String {
    let keys = TokenKeys::new(Some(secret.as_bytes()), &[]).unwrap();
    keys.issue(&TokenClaims {
        id: new_connection_id_bytes(ShardId(0), 1).unwrap(),
        hub: hub_tag(hub),
        stateful: false,
        v0: false,
        expires_unix_ms,
    })
}

/// A TCP proxy standing in for a load balancer without sticky sessions: every connection goes
/// to `first` until its control port is told `POST /switch`, then to `second`; `POST /cut`
/// (and `/switch`) drops every connection proxied so far. Returns (proxy, control) addresses.
fn balancer(first: SocketAddr, second: SocketAddr) -> (SocketAddr, SocketAddr) {
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let control = TcpListener::bind("127.0.0.1:0").unwrap();
    let addrs = (proxy.local_addr().unwrap(), control.local_addr().unwrap());
    let switched = Arc::new(AtomicBool::new(false));
    let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let (to_second, sockets) = (Arc::clone(&switched), Arc::clone(&live));
    std::thread::spawn(move || {
        for client in proxy.incoming().flatten() {
            let target = if to_second.load(Ordering::SeqCst) {
                second
            } else {
                first
            };
            let Ok(upstream) = TcpStream::connect(target) else {
                continue;
            };
            let mut kept = sockets.lock().unwrap();
            kept.push(client.try_clone().unwrap());
            kept.push(upstream.try_clone().unwrap());
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                (upstream, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    std::thread::spawn(move || {
        for mut request in control.incoming().flatten() {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && request.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            if head.starts_with(b"POST /switch") {
                switched.store(true, Ordering::SeqCst);
            }
            for socket in live.lock().unwrap().drain(..) {
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
            let _ = request
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    addrs
}

/// Runs the official-client suite through a switching balancer in front of two instances,
/// with or without the Redis backplane, and returns the second instance's `unknown` token
/// refusals and malformed handshakes.
fn official_client_behind_a_balancer(redis: Option<&RedisServer>) -> (u64, u64) {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/@microsoft/signalr").is_dir(),
        "npm packages missing: run `npm ci --prefix tests/js` (tests/run-all.sh does)"
    );
    let start = || match redis {
        Some(redis) => {
            let server = instance(DriverKind::IoUring, redis, 2, |_| {});
            wait_ready(server.addr);
            server
        }
        None => TestServer::start(DriverKind::IoUring, |c| {
            c.workers = std::num::NonZeroUsize::new(2).unwrap();
            c.cluster.secret = Some(ClusterSecret::new(SECRET.as_bytes()));
            c.hubs.push(chat_hub("chat", "/hubs/chat"));
        }),
    };
    let (a, b) = (start(), start());
    let (proxy, control) = balancer(a.addr, b.addr);
    run_js_suite(
        &js,
        "no-sticky.test.mjs",
        &a,
        &[
            ("PROXY_URL", &format!("http://{proxy}")),
            ("PROXY_CONTROL_URL", &format!("http://{control}")),
        ],
        2,
    );
    (
        metric(
            b.addr,
            "ringhub_signalr_token_refusals_total{reason=\"unknown\"}",
        ),
        metric(
            b.addr,
            "ringhub_signalr_handshake_failures_total{reason=\"malformed\"}",
        ),
    )
}

#[test]
fn the_official_client_resumes_on_its_instance_and_starts_fresh_when_the_balancer_moves_it() {
    let redis = RedisServer::start();
    // The resume that reached B was answered 404 at once (A holds the connection): B never
    // took it as a new connection.
    let (refused, failed_handshakes) = official_client_behind_a_balancer(Some(&redis));
    assert!(
        refused >= 1 && failed_handshakes == 0,
        "{refused} {failed_handshakes}"
    );
}

#[test]
fn without_a_backplane_a_moved_resume_also_ends_in_a_fresh_connection() {
    // B cannot know A holds the session: it takes the resume as a new connection, whose
    // handshake fails (the client sends Sequence); the client gives that connection up (after
    // a 404 on a retry of the same URL, or at once on the error), and the suite checks that
    // automatic reconnect then starts a fresh one.
    let (_, failed_handshakes) = official_client_behind_a_balancer(None);
    assert!(failed_handshakes >= 1);
}

on_both_drivers! {
    fn a_connection_negotiated_on_one_instance_connects_invokes_and_receives_on_the_other(driver) {
        let redis = RedisServer::start();
        // Different shard counts: the token's connection id names a home shard on each.
        let a = instance(driver, &redis, 2, |_| {});
        let b = instance(driver, &redis, 3, |_| {});
        wait_ready(a.addr);
        wait_ready(b.addr);
        for _ in 0..6 {
            let (id, token) = negotiate(a.addr, "/hubs/chat", false);
            let mut ws = connect(b.addr, "/hubs/chat", &token, 1);
            ws.send_text(&format!("{{\"type\":1,\"invocationId\":\"1\",\"target\":\"WhoAmI\",\"arguments\":[]}}{RS}"));
            assert_eq!(next_messages(&mut ws)[0]["result"], serde_json::Value::String(id.clone()));
            ws.send_text(&format!("{{\"type\":1,\"invocationId\":\"2\",\"target\":\"Echo\",\"arguments\":[\"hi\"]}}{RS}"));
            assert_eq!(next_messages(&mut ws)[0], serde_json::json!({"type":3,"invocationId":"2","result":"hi"}));
            // A send to the connection through the instance that negotiated it reaches it on
            // the other one (the connection's backplane channel is B's).
            let body = r#"{"target":"Notice","arguments":["x"]}"#;
            let send = format!(
                "POST /api/hubs/chat/connections/{id}/:send HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {SERVER_KEY}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            assert_eq!(http(a.addr, send.as_bytes()).status, 202);
            assert_eq!(
                next_messages(&mut ws)[0],
                serde_json::json!({"type":1,"target":"Notice","arguments":["x"]})
            );
            // Single use on the instance that took it: 409 while it runs, 404 once it ended.
            assert_eq!(upgrade_status(b.addr, "/hubs/chat", &token).0, 409);
            ws.send_text(&format!("{{\"type\":7}}{RS}"));
            assert_eq!(ws.read_close(), Some(1000));
            ws.send(8, &1000u16.to_be_bytes());
            let ended = eventually(Duration::from_secs(5), || {
                upgrade_status(b.addr, "/hubs/chat", &token).0 == 404
            });
            assert!(ended, "a used token connected again after its connection ended");
        }
    }

    fn forged_tampered_foreign_wrong_hub_and_expired_tokens_are_refused_with_404(driver) {
        let redis = RedisServer::start();
        let a = instance(driver, &redis, 1, |_| {});
        let b = instance(driver, &redis, 2, |_| {});
        let (_, token) = negotiate(a.addr, "/hubs/chat", false);
        let not_found = (404, "No Connection with that ID".to_owned());
        // Tampered: one character of the signed part changed.
        let mut tampered = token.clone().into_bytes();
        tampered[20] = if tampered[20] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(upgrade_status(b.addr, "/hubs/chat", &tampered), not_found);
        // Forged: well formed, signed with a secret the cluster does not have.
        let later = unix_millis() + 60_000;
        let forged = mint("a secret that is not the cluster's one", "/hubs/chat", later);
        assert_eq!(upgrade_status(b.addr, "/hubs/chat", &forged), not_found);
        // Malformed: an ASP.NET-style random token.
        assert_eq!(upgrade_status(b.addr, "/hubs/chat", "AAAAAAAAAAAAAAAAAAAAAA"), not_found);
        // Negotiated for another hub.
        assert_eq!(upgrade_status(b.addr, "/hubs/other", &token), not_found);
        // Signed with the cluster's secret but expired.
        let expired = mint(SECRET, "/hubs/chat", unix_millis() - 1);
        assert_eq!(upgrade_status(b.addr, "/hubs/chat", &expired), not_found);
        // An instance with its own (random) secret refuses the cluster's tokens.
        let loner = TestServer::start(driver, |c| c.hubs.push(chat_hub("chat", "/hubs/chat")));
        assert_eq!(upgrade_status(loner.addr, "/hubs/chat", &token), not_found);
        // The genuine token still works on B, and each refusal was counted by reason.
        connect(b.addr, "/hubs/chat", &token, 1);
        for (reason, count) in [
            ("malformed", 1),
            ("bad_signature", 2),
            ("wrong_hub", 1),
            ("expired", 1),
        ] {
            let sample = format!("ringhub_signalr_token_refusals_total{{reason=\"{reason}\"}}");
            assert_eq!(metric(b.addr, &sample), count, "{reason}");
        }
    }

    fn a_stateful_resume_on_the_other_instance_gets_404_and_the_client_starts_fresh(driver) {
        let redis = RedisServer::start();
        let a = instance(driver, &redis, 2, |_| {});
        let b = instance(driver, &redis, 2, |_| {});
        wait_ready(a.addr);
        wait_ready(b.addr);
        let (id, token) = negotiate(a.addr, "/hubs/chat", true);
        let mut ws = connect(a.addr, "/hubs/chat", &token, 2);
        ws.send_text(&format!("{{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[1]}}{RS}"));
        assert_eq!(next_messages(&mut ws)[0]["result"], 1);
        // The socket drops without a close: A parks the session for a resume.
        ws.stream.shutdown(std::net::Shutdown::Both).unwrap();
        drop(ws);
        // The client reconnects with the same URL, and the load balancer sends it to B, which
        // does not hold the session: ASP.NET's answer for an unknown connection.
        let resumed_on_b = upgrade_status(b.addr, "/hubs/chat", &token);
        assert_eq!(resumed_on_b, (404, "No Connection with that ID".to_owned()));
        let sample = "ringhub_signalr_token_refusals_total{reason=\"unknown\"}";
        assert_eq!(metric(b.addr, sample), 1);
        // The client falls back to a fresh connection (automatic reconnect: a new negotiate),
        // which works wherever it lands.
        let (fresh_id, fresh) = negotiate(b.addr, "/hubs/chat", true);
        assert_ne!(fresh_id, id);
        let mut ws = connect(b.addr, "/hubs/chat", &fresh, 2);
        ws.send_text(&format!("{{\"type\":1,\"invocationId\":\"1\",\"target\":\"WhoAmI\",\"arguments\":[]}}{RS}"));
        assert_eq!(next_messages(&mut ws)[0]["result"], serde_json::Value::String(fresh_id));
        // Had it landed on A, the session would have resumed: Sequence, then the unacked reply.
        let mut resumed = WsClient::connect(a.addr, &format!("/hubs/chat?id={token}"));
        resumed
            .stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        resumed.send_text(&format!("{{\"type\":9,\"sequenceId\":2}}{RS}"));
        let replay = next_messages(&mut resumed);
        assert_eq!(replay[0]["type"], 9, "{replay:?}");
    }
}
