//! The Redis backplane across ringhub instances, against a real `redis-server` started on a free
//! port: the official client suite over three instances of two shards each; envelopes PUBLISHed
//! byte for byte as an ASP.NET Core server with `IHubContext` would (JSON only, and JSON plus
//! MessagePack) reaching JSON and MessagePack clients; and Redis restarted, its subscriber
//! connections killed, clients paused (`CLIENT PAUSE`) and the process frozen: connections stay
//! up, readiness follows the backplane, sends during a freeze are dropped and counted without
//! stalling anyone, and delivery resumes.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringhub::auth::keys::{add_key, hash_key};
use ringhub::config::{BackplaneKind, Config, DriverKind, HubAuth, HubConfig};
use ringhub::protocol::signalr::{Decoded, HubMessage, HubProtocol, Value};
use support::redis::RedisServer;
use support::*;

const SERVER_KEY: &str = "backplane-server-key-for-tests";
const PREFIX: &str = "conduit_signalr:";
const CHAT: &str = "MyApp.Hubs.ChatHub";

/// An anonymous hub whose backplane name is a .NET hub class's.
fn chat_hub() -> HubConfig {
    HubConfig {
        name: "chat".into(),
        path: "/hubs/chat".into(),
        auth: HubAuth::Anonymous,
        max_message_size: None,
        methods: vec![
            ("Echo".into(), "echo".into()),
            ("JoinGroup".into(), "join-group".into()),
        ],
        protocols: vec!["json".into(), "messagepack".into()],
        join_on_connect: Vec::new(),
        redis_name: Some(CHAT.into()),
        events_url: None,
    }
}

/// An instance on `redis`, two shards, the chat hub, a server key, and `tweak`.
fn instance(
    driver: DriverKind,
    redis: &RedisServer,
    tweak: impl FnOnce(&mut Config),
) -> TestServer {
    let url = redis.url();
    TestServer::start(driver, |c| {
        c.workers = std::num::NonZeroUsize::new(2).unwrap();
        c.backplane.kind = BackplaneKind::Redis;
        c.backplane.redis_url = url;
        c.backplane.channel_prefix = PREFIX.into();
        c.auth.server_key_hashes = vec![hash_key(SERVER_KEY)];
        c.hubs.push(chat_hub());
        tweak(c);
    })
}

/// Polls `/health/ready` until it answers `status` (or fails after 10 s).
fn wait_ready(addr: SocketAddr, status: u16) {
    let started = Instant::now();
    loop {
        let answer = get(addr, "/health/ready").status;
        if answer == status {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "/health/ready stayed {answer}, expected {status}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A raw SignalR client on the chat hub (skipNegotiation) after its handshake.
fn client(addr: SocketAddr, protocol: HubProtocol) -> WsClient {
    let mut ws = WsClient::connect(addr, "/hubs/chat");
    ws.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    ws.send_text(&format!(
        "{{\"protocol\":\"{}\",\"version\":1}}\u{1e}",
        protocol.name()
    ));
    assert_eq!(ws.read_frame().payload, b"{}\x1e");
    ws
}

/// Sends an invocation in `protocol`.
fn invoke(ws: &mut WsClient, protocol: HubProtocol, id: &str, target: &str, args: Vec<Value>) {
    let message = HubMessage::Invocation(ringhub::protocol::signalr::Invocation {
        headers: Default::default(),
        invocation_id: Some(id.into()),
        target: target.into(),
        arguments: args
            .into_iter()
            .map(ringhub::protocol::signalr::Payload::from_value)
            .collect(),
        stream_ids: Vec::new(),
    });
    let mut out = bytes::BytesMut::new();
    protocol.encode(&message, &mut out).unwrap();
    let opcode = if protocol == HubProtocol::Json { 1 } else { 2 };
    ws.send(opcode, &out);
}

/// Reads messages until one that is not a Ping.
fn next_message(ws: &mut WsClient, protocol: HubProtocol) -> (HubMessage, Vec<u8>) {
    loop {
        let frame = ws.read_frame();
        let bytes = Bytes::from(frame.payload.clone());
        match protocol.decode(&bytes, usize::MAX).unwrap() {
            Decoded::Message(HubMessage::Ping, _) => continue,
            Decoded::Message(message, _) => return (message, frame.payload),
            Decoded::NeedMore => panic!("a partial message in one frame"),
        }
    }
}

/// The target and first argument of an invocation.
fn event(message: &HubMessage) -> (String, Value) {
    match message {
        HubMessage::Invocation(invocation) => (
            invocation.target.clone(),
            invocation.arguments[0].to_value().unwrap(),
        ),
        other => panic!("expected an invocation, got {other:?}"),
    }
}

/// Joins `ws` to `group` and waits for the Completion.
fn join(ws: &mut WsClient, protocol: HubProtocol, group: &str) {
    invoke(
        ws,
        protocol,
        "j",
        "JoinGroup",
        vec![Value::Str(group.into())],
    );
    let (message, _) = next_message(ws, protocol);
    assert!(matches!(message, HubMessage::Completion(_)), "{message:?}");
}

/// POSTs a send through the REST API of `addr`.
fn rest_send(addr: SocketAddr, path: &str, target: &str, argument: &str) -> u16 {
    let body = format!("{{\"target\":\"{target}\",\"arguments\":[{argument}]}}");
    let request = format!(
        "POST /api/hubs/chat/{path}:send HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {SERVER_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http(addr, request.as_bytes()).status
}

/// Sends to `group` through `from` until `ws` receives that send (after a fault, sends may be
/// dropped until the backplane is back, and sends queued before may arrive first).
fn send_until_received(from: SocketAddr, ws: &mut WsClient, group: &str, text: &str) -> Value {
    let started = Instant::now();
    loop {
        assert_eq!(
            rest_send(
                from,
                &format!("groups/{group}/"),
                "News",
                &format!("\"{text}\"")
            ),
            202
        );
        let round = Instant::now();
        while round.elapsed() < Duration::from_millis(300) {
            ws.stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut head = [0u8; 1];
            if ws.stream.peek(&mut head).is_err() {
                break;
            }
            ws.stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let (message, _) = next_message(ws, HubProtocol::Json);
            let value = event(&message).1;
            if value == Value::Str(text.into()) {
                return value;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no delivery through the backplane"
        );
    }
}

#[test]
fn the_official_client_suite_passes_across_three_instances() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/@microsoft/signalr").is_dir(),
        "npm packages missing: run `npm ci --prefix tests/js` (tests/run-all.sh does)"
    );
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("ringhub-backplane-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("keys.json");
    let (key, record) = add_key(&key_file, "tenant", false, None).unwrap();
    let servers: Vec<TestServer> = (0..3)
        .map(|_| {
            instance(DriverKind::IoUring, &redis, |c| {
                c.auth.key_file = key_file.clone();
                c.diagnostics.enabled = true;
            })
        })
        .collect();
    for server in &servers {
        wait_ready(server.addr, 200);
    }
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("http://{}", s.addr))
        .collect();
    run_js_suite(
        &js,
        "backplane.test.mjs",
        &servers[0],
        &[
            ("HUB_URLS", &urls.join(",")),
            ("HUB_VIRTUAL_KEY", &key),
            ("HUB_KEY_ID", &record.id.to_string()),
            ("HUB_SERVER_KEY", SERVER_KEY),
        ],
        9,
    );
}

#[test]
fn draining_an_instance_moves_official_clients_through_a_balancer_to_another() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/@microsoft/signalr").is_dir(),
        "npm packages missing: run `npm ci --prefix tests/js` (tests/run-all.sh does)"
    );
    let redis = RedisServer::start();
    let b = instance(DriverKind::IoUring, &redis, |_| {});
    wait_ready(b.addr, 200);
    // Instance A is a process, so the drain is the real SIGTERM path.
    let dir = std::env::temp_dir().join(format!("ringhub-drain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("a.toml");
    std::fs::write(
        &config,
        format!(
            "workers = 2\n[shutdown]\ndrain_delay = \"1s\"\n\
             [backplane]\nkind = \"redis\"\nredis_url = \"{}\"\nchannel_prefix = \"{PREFIX}\"\n\
             [hubs.chat]\npath = \"/hubs/chat\"\nredis_name = \"{CHAT}\"\n\
             methods = {{ Echo = \"echo\", JoinGroup = \"join-group\" }}\n",
            redis.url()
        ),
    )
    .unwrap();
    let mut command = support::process::ServerProcess::command();
    command.arg("--config").arg(&config);
    let mut a = support::process::ServerProcess::spawn(command);
    let a_addr = a.addr;
    wait_ready(a_addr, 200);
    let a_url = format!("http://{a_addr}");
    let b_url = format!("http://{}", b.addr);
    let pid = a.pid().to_string();
    run_js_suite(
        &js,
        "drain.test.mjs",
        &b,
        &[
            ("HUB_A", &a_url),
            ("HUB_A_PID", &pid),
            ("HUB_B", &b_url),
            ("HUB_SERVER_KEY", SERVER_KEY),
        ],
        1,
    );
    let status = a.wait_exit();
    assert_eq!(status, 0, "A's drain exit; log: {:#?}", a.seen);
    let _ = std::fs::remove_dir_all(&dir);
}

on_both_drivers! {
    fn envelopes_published_as_aspnet_core_does_reach_json_and_messagepack_clients(driver) {
        let redis = RedisServer::start();
        let server = instance(driver, &redis, |_| {});
        wait_ready(server.addr, 200);
        let mut json = client(server.addr, HubProtocol::Json);
        let mut msgpack = client(server.addr, HubProtocol::MessagePack);
        let channel = format!("{PREFIX}{CHAT}:all");
        // signalr-protocol.md §7.2: Clients.All.SendAsync("ReceiveMessage", "hi") from a server
        // with both protocols registered (105 bytes)...
        let both: Vec<u8> = [
            &[0x92, 0x90, 0x82, 0xa4][..], b"json", &[0xc4, 0x38],
            b"{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"hi\"]}\x1e",
            &[0xab], b"messagepack", &[0xc4, 0x19, 0x18, 0x96, 0x01, 0x80, 0xc0, 0xae],
            b"ReceiveMessage", &[0x91, 0xa2, 0x68, 0x69, 0x90],
        ]
        .concat();
        assert_eq!(both.len(), 105);
        // ...and from a JSON-only server (Conduit's), which a MessagePack client still gets.
        let json_only: Vec<u8> = [
            &[0x92, 0x90, 0x81, 0xa4][..], b"json", &[0xc4, 0x38],
            b"{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"hi\"]}\x1e",
        ]
        .concat();
        for payload in [&both, &json_only] {
            // Both shards subscribe to :all.
            assert_eq!(redis.publish_bytes(&channel, payload), 2);
            let (message, bytes) = next_message(&mut json, HubProtocol::Json);
            assert_eq!(event(&message), ("ReceiveMessage".into(), Value::Str("hi".into())));
            assert_eq!(bytes, b"{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"hi\"]}\x1e");
            let (message, _) = next_message(&mut msgpack, HubProtocol::MessagePack);
            assert_eq!(event(&message), ("ReceiveMessage".into(), Value::Str("hi".into())));
        }
        // AllExcept: the excluded connection id is skipped (here: nobody's).
        let excluded: Vec<u8> = [&[0x92, 0x91, 0xa5][..], b"connA", &both[2..]].concat();
        assert_eq!(redis.publish_bytes(&channel, &excluded), 2);
        let (message, _) = next_message(&mut json, HubProtocol::Json);
        assert_eq!(event(&message).0, "ReceiveMessage");
        // A group send: ringhub subscribed to the group's channel when the client joined.
        join(&mut json, HubProtocol::Json, "room1");
        let group: Vec<u8> = [&[0x92, 0x90, 0x81, 0xa4][..], b"json", &[0xc4, 0x38],
            b"{\"type\":1,\"target\":\"ReceiveMessage\",\"arguments\":[\"gr\"]}\x1e"].concat();
        assert_eq!(redis.publish_bytes(&format!("{PREFIX}{CHAT}:group:room1"), &group), 1);
        let (message, _) = next_message(&mut json, HubProtocol::Json);
        assert_eq!(event(&message).1, Value::Str("gr".into()));
        // Garbage on a channel is ignored; the connection carries on.
        assert_eq!(redis.publish_bytes(&channel, b"\xc1not msgpack"), 2);
        invoke(&mut json, HubProtocol::Json, "e", "Echo", vec![Value::Str("still here".into())]);
        let (message, _) = next_message(&mut json, HubProtocol::Json);
        assert!(matches!(message, HubMessage::Completion(_)), "{message:?}");
    }

    fn a_client_result_asked_by_another_server_goes_back_on_its_return_channel(driver) {
        let redis = RedisServer::start();
        let server = instance(driver, &redis, |_| {});
        wait_ready(server.addr, 200);
        // A negotiated connection, so the test knows its connection id.
        let negotiated = http(
            server.addr,
            b"POST /hubs/chat/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        );
        let body: serde_json::Value = serde_json::from_slice(&negotiated.body).unwrap();
        let id = body["connectionId"].as_str().unwrap().to_owned();
        let token = body["connectionToken"].as_str().unwrap().to_owned();
        let mut ws = WsClient::connect(server.addr, &format!("/hubs/chat?id={token}"));
        ws.stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        ws.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}");
        assert_eq!(ws.read_frame().payload, b"{}\x1e");
        // As a .NET server's InvokeConnectionAsync: a 4-item invocation on the connection's
        // channel, whose return address leaves out the app prefix (signalr-protocol.md §7.3).
        let server_name = "dotnet_0123456789abcdef0123456789abcdef";
        let mut returns = redis.subscribe(&format!("{PREFIX}{CHAT}:internal:return:{server_name}"));
        let json = b"{\"type\":1,\"invocationId\":\"inv-1\",\"target\":\"GetMessage\",\"arguments\":[]}\x1e";
        let return_address = format!("{CHAT}:internal:return:{server_name}");
        let mut payload = vec![0x94, 0x90, 0x81, 0xa4];
        payload.extend_from_slice(b"json");
        payload.extend_from_slice(&[0xc4, u8::try_from(json.len()).unwrap()]);
        payload.extend_from_slice(json);
        payload.extend_from_slice(&[0xa5]);
        payload.extend_from_slice(b"inv-1");
        payload.extend_from_slice(&[0xd9, u8::try_from(return_address.len()).unwrap()]);
        payload.extend_from_slice(return_address.as_bytes());
        let channel = format!("{PREFIX}{CHAT}:connection:{id}");
        assert_eq!(redis.publish_bytes(&channel, &payload), 1);
        let (message, _) = next_message(&mut ws, HubProtocol::Json);
        match message {
            HubMessage::Invocation(invocation) => {
                assert_eq!((invocation.invocation_id.as_deref(), invocation.target.as_str()), (Some("inv-1"), "GetMessage"));
            }
            other => panic!("expected the invocation, got {other:?}"),
        }
        // The client answers; the answer goes back to the asking server, in JSON.
        ws.send_text("{\"type\":3,\"invocationId\":\"inv-1\",\"result\":\"from the client\"}\u{1e}");
        let returned = returns.next(Duration::from_secs(5)).expect("a returned completion");
        let returned = ringhub::protocol::backplane::ReturnedCompletion::decode(&Bytes::from(returned)).unwrap();
        assert_eq!(returned.protocol.as_str(), "json");
        assert_eq!(
            &returned.completion[..],
            b"{\"type\":3,\"invocationId\":\"inv-1\",\"result\":\"from the client\"}\x1e"
        );
        // A second request the client leaves unanswered is answered for it when it goes away.
        assert_eq!(redis.publish_bytes(&channel, &payload), 1);
        let (message, _) = next_message(&mut ws, HubProtocol::Json);
        assert!(matches!(message, HubMessage::Invocation(_)), "{message:?}");
        drop(ws);
        let returned = returns.next(Duration::from_secs(10)).expect("an error completion");
        let returned = ringhub::protocol::backplane::ReturnedCompletion::decode(&Bytes::from(returned)).unwrap();
        let text = String::from_utf8_lossy(&returned.completion).into_owned();
        assert!(text.contains("Connection disconnected."), "{text}");
    }

    fn a_redis_restart_leaves_connections_up_and_delivery_resumes(driver) {
        let mut redis = RedisServer::start();
        let a = instance(driver, &redis, |_| {});
        let b = instance(driver, &redis, |_| {});
        wait_ready(a.addr, 200);
        wait_ready(b.addr, 200);
        let mut member = client(b.addr, HubProtocol::Json);
        join(&mut member, HubProtocol::Json, "room");
        assert_eq!(send_until_received(a.addr, &mut member, "room", "before"), Value::Str("before".into()));
        redis.stop();
        wait_ready(a.addr, 503);
        wait_ready(b.addr, 503);
        // Sends while Redis is gone are dropped and counted, not queued forever.
        assert_eq!(rest_send(a.addr, "groups/room/", "News", "\"lost\""), 202);
        let health: serde_json::Value = serde_json::from_slice(&get(a.addr, "/health").body).unwrap();
        assert_eq!(health["backplane"]["state"], "down");
        redis.restart();
        wait_ready(a.addr, 200);
        wait_ready(b.addr, 200);
        assert_eq!(send_until_received(a.addr, &mut member, "room", "after"), Value::Str("after".into()));
        // The same WebSocket carried both: the client was never disconnected.
    }

    fn killed_subscriber_connections_are_reestablished_with_every_subscription(driver) {
        let redis = RedisServer::start();
        let a = instance(driver, &redis, |_| {});
        let b = instance(driver, &redis, |_| {});
        wait_ready(a.addr, 200);
        wait_ready(b.addr, 200);
        let mut member = client(b.addr, HubProtocol::Json);
        join(&mut member, HubProtocol::Json, "room");
        assert_eq!(send_until_received(a.addr, &mut member, "room", "one"), Value::Str("one".into()));
        redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        assert_eq!(send_until_received(a.addr, &mut member, "room", "two"), Value::Str("two".into()));
    }

    fn client_pause_on_redis_delays_nothing_on_the_edge_and_delivery_resumes(driver) {
        let redis = RedisServer::start();
        let a = instance(driver, &redis, |_| {});
        let b = instance(driver, &redis, |_| {});
        wait_ready(a.addr, 200);
        wait_ready(b.addr, 200);
        let mut member = client(b.addr, HubProtocol::Json);
        join(&mut member, HubProtocol::Json, "room");
        assert_eq!(send_until_received(a.addr, &mut member, "room", "before"), Value::Str("before".into()));
        let mut bystander = client(a.addr, HubProtocol::Json);
        redis.command(&["CLIENT", "PAUSE", "1500", "ALL"]);
        let started = Instant::now();
        for i in 0..20 {
            assert_eq!(rest_send(a.addr, "groups/room/", "News", &i.to_string()), 202);
        }
        invoke(&mut bystander, HubProtocol::Json, "e", "Echo", vec![Value::Str("ok".into())]);
        let (message, _) = next_message(&mut bystander, HubProtocol::Json);
        assert!(matches!(message, HubMessage::Completion(_)), "{message:?}");
        assert!(started.elapsed() < Duration::from_millis(1000), "the edge waited for Redis");
        // The pause ends: what was published meanwhile arrives, and so does what follows.
        assert_eq!(send_until_received(a.addr, &mut member, "room", "after"), Value::Str("after".into()));
    }

    fn a_frozen_redis_never_stalls_clients_and_its_drops_are_counted(driver) {
        let redis = RedisServer::start();
        let a = instance(driver, &redis, |c| c.backplane.publish_queue = 20);
        let b = instance(driver, &redis, |_| {});
        wait_ready(a.addr, 200);
        wait_ready(b.addr, 200);
        let mut member = client(b.addr, HubProtocol::Json);
        join(&mut member, HubProtocol::Json, "room");
        assert_eq!(send_until_received(a.addr, &mut member, "room", "warm"), Value::Str("warm".into()));
        let mut bystander = client(a.addr, HubProtocol::Json);
        redis.pause();
        for i in 0..100 {
            assert_eq!(rest_send(a.addr, "groups/room/", "News", &i.to_string()), 202);
        }
        // A client of the same instance is answered at once while Redis is frozen.
        let started = Instant::now();
        invoke(&mut bystander, HubProtocol::Json, "e", "Echo", vec![Value::Str("ok".into())]);
        let (message, _) = next_message(&mut bystander, HubProtocol::Json);
        assert!(matches!(message, HubMessage::Completion(_)), "{message:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "a client waited for Redis");
        let health: serde_json::Value = serde_json::from_slice(&get(a.addr, "/health").body).unwrap();
        assert!(health["backplane"]["dropped"].as_u64().unwrap() >= 50, "{health}");
        redis.resume();
        assert_eq!(send_until_received(a.addr, &mut member, "room", "thawed"), Value::Str("thawed".into()));
    }
}
