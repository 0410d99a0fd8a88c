//! The REST publish API over real sockets, with two shards: sends to everyone, a group, a user
//! and a connection reach their recipients on both shards (JSON and MessagePack clients alike)
//! and nobody else; group membership, closing and existence checks reach whichever shard owns
//! a connection; server-key auth and the error answers.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use ringhub::auth::keys::hash_key;
use ringhub::config::{DriverKind, HubAuth, HubConfig};
use ringhub::hub::identity::home_shard;
use ringhub::protocol::signalr::{Decoded, HubMessage, HubProtocol, Value};
use serde_json::json;
use support::*;

const SERVER_KEY: &str = "backend-server-key-for-tests";
const ADMIN_KEY: &str = "an-admin-key-for-tests-only";
const RS: u8 = 0x1e;
const SHARDS: usize = 2;

fn hub(name: &str, auth: HubAuth) -> HubConfig {
    HubConfig {
        name: name.into(),
        path: format!("/hubs/{name}"),
        auth,
        max_message_size: Some(4096),
        methods: vec![
            ("Echo".into(), "echo".into()),
            ("JoinGroup".into(), "join-group".into()),
        ],
        protocols: vec!["json".into(), "messagepack".into()],
        join_on_connect: Vec::new(),
        redis_name: None,
        events_url: None,
    }
}

struct Setup {
    server: TestServer,
    keys: [String; 2],
}

/// Two shards, hubs `chat` (anonymous) and `secure` (virtual keys), one server key.
fn setup(driver: DriverKind, name: &str) -> Setup {
    setup_with(driver, name, |_| {})
}

fn setup_with(
    driver: DriverKind,
    name: &str,
    tweak: impl FnOnce(&mut ringhub::config::Config),
) -> Setup {
    let (keys_path, keys) = two_tenant_keys("rest", &format!("{name}-{driver:?}"));
    let server = TestServer::start(driver, move |c| {
        c.workers = std::num::NonZeroUsize::new(SHARDS).unwrap();
        c.auth.key_file = keys_path;
        c.auth.admin_key_hashes = vec![hash_key(ADMIN_KEY)];
        c.auth.server_key_hashes = vec![hash_key(SERVER_KEY)];
        c.hubs.push(hub("chat", HubAuth::Anonymous));
        c.hubs.push(hub("secure", HubAuth::VirtualKey));
        c.signalr.keepalive_interval = Duration::from_secs(300);
        c.signalr.invocation_rate = 1_000_000;
        c.signalr.invocation_burst = 1_000_000;
        tweak(c);
    });
    Setup { server, keys }
}

/// A SignalR client after its handshake, with the shard that owns its connection.
struct Client {
    ws: WsClient,
    id: String,
    shard: usize,
    protocol: HubProtocol,
}

/// Negotiates on `hub` (with `key`, if any) and returns (connectionId, token, home shard).
fn negotiate(addr: SocketAddr, hub: &str, key: Option<&str>) -> (String, String, usize) {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let response = http(
        addr,
        format!(
            "POST /hubs/{hub}/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(response.status, 200, "{}", response.body_str());
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    let token = body["connectionToken"].as_str().unwrap().to_owned();
    let shard = usize::from(home_shard(&token, SHARDS).unwrap().0);
    (
        body["connectionId"].as_str().unwrap().to_owned(),
        token,
        shard,
    )
}

/// Connects a negotiated connection and completes the handshake.
fn open(
    addr: SocketAddr,
    hub: &str,
    key: Option<&str>,
    negotiated: (String, String, usize),
    protocol: HubProtocol,
) -> Client {
    let (id, token, shard) = negotiated;
    let access = key.map_or(String::new(), |k| format!("&access_token={k}"));
    let mut ws = WsClient::connect(addr, &format!("/hubs/{hub}?id={token}{access}"));
    let name = match protocol {
        HubProtocol::Json => "json",
        HubProtocol::MessagePack => "messagepack",
    };
    ws.send_text(&format!("{{\"protocol\":\"{name}\",\"version\":1}}\u{1e}"));
    assert_eq!(ws.read_frame().payload, b"{}\x1e");
    Client {
        ws,
        id,
        shard,
        protocol,
    }
}

/// `per_shard` clients of `hub` on each shard, speaking `protocol`.
fn clients(
    addr: SocketAddr,
    hub: &str,
    key: Option<&str>,
    protocol: HubProtocol,
    per_shard: usize,
) -> Vec<Client> {
    let mut out: Vec<Client> = Vec::new();
    for _ in 0..400 {
        if out.len() == per_shard * SHARDS {
            break;
        }
        let negotiated = negotiate(addr, hub, key);
        // A token of a shard that has enough simply expires unused.
        if out.iter().filter(|c| c.shard == negotiated.2).count() < per_shard {
            out.push(open(addr, hub, key, negotiated, protocol));
        }
    }
    assert_eq!(
        out.len(),
        per_shard * SHARDS,
        "could not place clients on every shard"
    );
    out
}

/// A REST call with the server key.
fn rest(addr: SocketAddr, method: &str, path: &str, body: &str) -> HttpResponse {
    rest_as(
        addr,
        method,
        path,
        body,
        &format!("Authorization: Bearer {SERVER_KEY}\r\n"),
    )
}

fn rest_as(addr: SocketAddr, method: &str, path: &str, body: &str, auth: &str) -> HttpResponse {
    let mut stream = connect(addr);
    std::io::Write::write_all(
        &mut stream,
        format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    if method == "HEAD" {
        // A HEAD answer has a content-length but no body.
        let mut response = read_head_only(&mut stream);
        response.body.clear();
        return response;
    }
    read_response(&mut stream)
}

/// Reads a response head and returns it with an empty body.
fn read_head_only(stream: &mut std::net::TcpStream) -> HttpResponse {
    let raw = read_to_close(stream);
    let text = String::from_utf8(raw).unwrap();
    assert!(
        text.ends_with("\r\n\r\n"),
        "a HEAD answer has no body: {text:?}"
    );
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    HttpResponse {
        status,
        headers,
        body: Vec::new(),
    }
}

/// The next message a client receives, as JSON (MessagePack is decoded and converted).
fn receive(client: &mut Client) -> serde_json::Value {
    let frame = client.ws.read_frame();
    match client.protocol {
        HubProtocol::Json => {
            assert_eq!(frame.opcode, 1);
            let records: Vec<_> = frame
                .payload
                .split(|b| *b == RS)
                .filter(|r| !r.is_empty())
                .collect();
            assert_eq!(records.len(), 1, "one message per frame");
            serde_json::from_slice(records[0]).unwrap()
        }
        HubProtocol::MessagePack => {
            assert_eq!(frame.opcode, 2);
            let Ok(Decoded::Message(message, _)) =
                HubProtocol::MessagePack.decode(&Bytes::from(frame.payload), 1 << 20)
            else {
                panic!("not a MessagePack message");
            };
            match message {
                HubMessage::Invocation(invocation) => json!({
                    "type": 1,
                    "target": invocation.target,
                    "arguments": invocation.arguments.iter()
                        .map(|a| to_json(&a.to_value().unwrap()))
                        .collect::<Vec<_>>(),
                }),
                HubMessage::Close(close) => json!({"type": 7, "error": close.error}),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::UInt(u) => json!(u),
        Value::Float(f) => json!(f),
        Value::Str(s) => json!(s),
        Value::Array(items) => items.iter().map(to_json).collect(),
        Value::Map(entries) => serde_json::Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.as_str().unwrap().to_owned(), to_json(v)))
                .collect(),
        ),
        other => panic!("unexpected value {other:?}"),
    }
}

/// Asserts the client gets nothing for a moment.
fn assert_silent(client: &mut Client) {
    let until = std::time::Instant::now() + Duration::from_millis(300);
    let mut byte = [0u8; 1];
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        client.ws.stream.set_read_timeout(Some(left)).unwrap();
        match std::io::Read::read(&mut client.ws.stream, &mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            got => panic!(
                "connection {} on shard {} received something: {got:?}",
                client.id, client.shard
            ),
        }
    }
    client
        .ws
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
}

fn notify(arguments: serde_json::Value) -> serde_json::Value {
    json!({"type": 1, "target": "Notify", "arguments": arguments})
}

fn send_body(arguments: &serde_json::Value) -> String {
    json!({"target": "Notify", "arguments": arguments}).to_string()
}

fn error_text(response: &HttpResponse) -> String {
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    body["error"].as_str().unwrap().to_owned()
}

on_both_drivers! {
    fn a_group_send_reaches_members_on_both_shards_in_both_protocols_and_no_one_else(driver) {
        let Setup { server, .. } = setup(driver, "group");
        let addr = server.addr;
        let mut members = clients(addr, "chat", None, HubProtocol::Json, 2);
        members.extend(clients(addr, "chat", None, HubProtocol::MessagePack, 1));
        let mut others = clients(addr, "chat", None, HubProtocol::Json, 1);
        for (i, member) in members.iter_mut().enumerate() {
            if member.protocol == HubProtocol::Json && i % 2 == 0 {
                // Joined by the hub method...
                member.ws.send_text("{\"type\":1,\"invocationId\":\"1\",\"target\":\"JoinGroup\",\"arguments\":[\"team\"]}\u{1e}");
                assert_eq!(receive(member), json!({"type": 3, "invocationId": "1"}));
            } else {
                // ...or by the REST API, whichever shard owns the connection.
                let path = format!("/api/hubs/chat/groups/team/connections/{}", member.id);
                assert_eq!(rest(addr, "PUT", &path, "").status, 200);
            }
        }
        let arguments = json!(["hi", {"n": 1, "nested": [1.5, null, true]}, -7]);
        let response = rest(addr, "POST", "/api/hubs/chat/groups/team/:send", &send_body(&arguments));
        assert_eq!((response.status, response.body_str()), (202, ""));
        for member in &mut members {
            assert_eq!(receive(member), notify(arguments.clone()), "member on shard {}", member.shard);
        }
        for other in &mut others {
            assert_silent(other);
        }
    }

    fn a_broadcast_reaches_every_connection_of_the_hub_except_the_excluded(driver) {
        let Setup { server, keys } = setup(driver, "all");
        let addr = server.addr;
        let mut everyone = clients(addr, "chat", None, HubProtocol::Json, 2);
        let mut elsewhere = clients(addr, "secure", Some(&keys[0]), HubProtocol::Json, 1);
        let excluded: Vec<String> = [0, 1]
            .iter()
            .map(|shard| everyone.iter().find(|c| c.shard == *shard).unwrap().id.clone())
            .collect();
        let path = format!(
            "/api/hubs/chat/:send?api-version=2022-06-01&excluded={}&excluded={}",
            excluded[0], excluded[1]
        );
        assert_eq!(rest(addr, "POST", &path, r#"{"target":"Notify","arguments":["all"]}"#).status, 202);
        for client in &mut everyone {
            if excluded.contains(&client.id) {
                assert_silent(client);
            } else {
                assert_eq!(receive(client), notify(json!(["all"])));
            }
        }
        for client in &mut elsewhere {
            assert_silent(client);
        }
        // Without arguments, and by the hub's name in any case.
        assert_eq!(rest(addr, "POST", "/api/hubs/CHAT/:send", r#"{"target":"Ping"}"#).status, 202);
        for client in &mut everyone {
            assert_eq!(receive(client), json!({"type": 1, "target": "Ping", "arguments": []}));
        }
    }

    fn a_connection_send_reaches_that_connection_on_whichever_shard_it_lives(driver) {
        let Setup { server, .. } = setup(driver, "conn");
        let addr = server.addr;
        let mut all = clients(addr, "chat", None, HubProtocol::Json, 1);
        all.extend(clients(addr, "chat", None, HubProtocol::MessagePack, 1));
        for target in 0..all.len() {
            let path = format!("/api/hubs/chat/connections/{}/:send", all[target].id);
            let arguments = json!([target, "just you"]);
            assert_eq!(rest(addr, "POST", &path, &send_body(&arguments)).status, 202);
            assert_eq!(receive(&mut all[target]), notify(arguments));
            for (i, other) in all.iter_mut().enumerate() {
                if i != target {
                    assert_silent(other);
                }
            }
        }
        // An excluded connection gets nothing even when it is the target.
        let path = format!("/api/hubs/chat/connections/{0}/:send?excluded={0}", all[0].id);
        assert_eq!(rest(addr, "POST", &path, r#"{"target":"T","arguments":[]}"#).status, 202);
        assert_silent(&mut all[0]);
    }

    fn user_sends_and_user_groups_cover_every_connection_of_a_virtual_key(driver) {
        let Setup { server, keys } = setup(driver, "user");
        let addr = server.addr;
        let mut mine = clients(addr, "secure", Some(&keys[0]), HubProtocol::Json, 1);
        mine.extend(clients(addr, "secure", Some(&keys[0]), HubProtocol::MessagePack, 1));
        let mut theirs = clients(addr, "secure", Some(&keys[1]), HubProtocol::Json, 1);
        assert_eq!(rest(addr, "POST", "/api/hubs/secure/users/1/:send", &send_body(&json!(["yours"]))).status, 202);
        for client in &mut mine {
            assert_eq!(receive(client), notify(json!(["yours"])));
        }
        for client in &mut theirs {
            assert_silent(client);
        }
        assert_eq!(rest(addr, "HEAD", "/api/hubs/secure/users/1", "").status, 200);
        assert_eq!(rest(addr, "HEAD", "/api/hubs/secure/users/2", "").status, 200);
        assert_eq!(rest(addr, "HEAD", "/api/hubs/secure/users/99", "").status, 404);
        // The user table is per hub.
        assert_eq!(rest(addr, "HEAD", "/api/hubs/chat/users/1", "").status, 404);

        assert_eq!(rest(addr, "PUT", "/api/hubs/secure/users/1/groups/crew", "").status, 200);
        assert_eq!(rest(addr, "HEAD", "/api/hubs/secure/groups/crew", "").status, 200);
        assert_eq!(rest(addr, "POST", "/api/hubs/secure/groups/crew/:send", &send_body(&json!(["crew"]))).status, 202);
        for client in &mut mine {
            assert_eq!(receive(client), notify(json!(["crew"])));
        }
        for client in &mut theirs {
            assert_silent(client);
        }
        assert_eq!(rest(addr, "DELETE", "/api/hubs/secure/users/1/groups/crew", "").status, 204);
        assert_eq!(rest(addr, "HEAD", "/api/hubs/secure/groups/crew", "").status, 404);

        // A user whose connections are gone is gone.
        drop(theirs);
        assert!(eventually(Duration::from_secs(5), || {
            rest(addr, "HEAD", "/api/hubs/secure/users/2", "").status == 404
        }));
    }

    fn put_and_delete_move_a_connection_in_and_out_of_a_group(driver) {
        let Setup { server, .. } = setup(driver, "membership");
        let addr = server.addr;
        let mut all = clients(addr, "chat", None, HubProtocol::Json, 1);
        let group_path = "/api/hubs/chat/groups/g%2F1";
        assert_eq!(rest(addr, "HEAD", group_path, "").status, 404);
        for client in &all {
            let path = format!("{group_path}/connections/{}", client.id);
            assert_eq!(rest(addr, "PUT", &path, "").status, 200);
            // Adding twice is harmless.
            assert_eq!(rest(addr, "PUT", &path, "").status, 200);
        }
        assert_eq!(rest(addr, "HEAD", group_path, "").status, 200);
        let send = format!("{group_path}/:send");
        assert_eq!(rest(addr, "POST", &send, &send_body(&json!([1]))).status, 202);
        for client in &mut all {
            assert_eq!(receive(client), notify(json!([1])));
        }
        let path = format!("{group_path}/connections/{}", all[0].id);
        assert_eq!(rest(addr, "DELETE", &path, "").status, 200);
        assert_eq!(rest(addr, "POST", &send, &send_body(&json!([2]))).status, 202);
        assert_silent(&mut all[0]);
        assert_eq!(receive(&mut all[1]), notify(json!([2])));
        let path = format!("{group_path}/connections/{}", all[1].id);
        assert_eq!(rest(addr, "DELETE", &path, "").status, 200);
        assert_eq!(rest(addr, "HEAD", group_path, "").status, 404);

        let unknown = rest(addr, "PUT", &format!("{group_path}/connections/nope"), "");
        assert_eq!((unknown.status, error_text(&unknown).as_str()), (404, "no such connection"));
        assert_eq!(rest(addr, "DELETE", &format!("{group_path}/connections/nope"), "").status, 404);
    }

    fn head_checks_find_connections_on_every_shard(driver) {
        let Setup { server, .. } = setup(driver, "head");
        let addr = server.addr;
        let all = clients(addr, "chat", None, HubProtocol::Json, 1);
        for client in &all {
            let found = rest(addr, "HEAD", &format!("/api/hubs/chat/connections/{}", client.id), "");
            assert_eq!(found.status, 200, "shard {}", client.shard);
            // Connection ids are per hub.
            assert_eq!(rest(addr, "HEAD", &format!("/api/hubs/secure/connections/{}", client.id), "").status, 404);
        }
        let missing = rest(addr, "HEAD", "/api/hubs/chat/connections/nope", "");
        assert_eq!(missing.status, 404);
        assert_eq!(missing.header("content-type"), Some("application/json"));
    }

    fn delete_closes_a_connection_with_the_reason_as_its_error(driver) {
        let Setup { server, .. } = setup(driver, "close");
        let addr = server.addr;
        let mut all = clients(addr, "chat", None, HubProtocol::Json, 1);
        all.extend(clients(addr, "chat", None, HubProtocol::MessagePack, 1));
        for client in &mut all {
            let path = format!("/api/hubs/chat/connections/{}?reason=kicked+by+backend", client.id);
            assert_eq!(rest(addr, "DELETE", &path, "").status, 200);
            let close = receive(client);
            assert_eq!(close["type"], json!(7));
            assert_eq!(close["error"], json!("kicked by backend"));
            assert_eq!(client.ws.read_close(), Some(1000));
            // Answering the close ends the connection now; unanswered, it would end when the
            // server's close timeout (5 s, possibly a little later as deadlines are coalesced)
            // runs out, which races the 5 s wait below.
            client.ws.send(8, &1000u16.to_be_bytes());
            let head = format!("/api/hubs/chat/connections/{}", client.id);
            assert!(eventually(Duration::from_secs(5), || rest(addr, "HEAD", &head, "").status == 404));
            assert_eq!(rest(addr, "DELETE", &head, "").status, 404);
        }
    }

    fn only_server_keys_may_call_the_api(driver) {
        let Setup { server, keys } = setup(driver, "auth");
        let addr = server.addr;
        let path = "/api/hubs/chat/:send";
        let body = r#"{"target":"T","arguments":[]}"#;
        let none = rest_as(addr, "POST", path, body, "");
        assert_eq!(none.status, 401);
        assert_eq!(none.header("www-authenticate"), Some("Bearer"));
        assert_eq!(error_text(&none), "a server key is required: Authorization: Bearer <key>");
        let wrong = rest_as(addr, "POST", path, body, "Authorization: Bearer not-the-key\r\n");
        assert_eq!((wrong.status, error_text(&wrong).as_str()), (401, "the server key is not valid"));
        let basic = rest_as(addr, "POST", path, body, &format!("Authorization: Basic {SERVER_KEY}\r\n"));
        assert_eq!(basic.status, 401);
        // A key in the query is not a server key.
        assert_eq!(rest_as(addr, "POST", &format!("{path}?access_token={SERVER_KEY}"), body, "").status, 401);
        for key in [keys[0].as_str(), ADMIN_KEY] {
            let forbidden = rest_as(addr, "POST", path, body, &format!("Authorization: Bearer {key}\r\n"));
            assert_eq!((forbidden.status, error_text(&forbidden).as_str()), (403, "only server keys may use the REST API"));
        }
        // Auth comes first: nothing about hubs is revealed without a key.
        assert_eq!(rest_as(addr, "POST", "/api/hubs/nope/:send", body, "").status, 401);
        let scheme = rest_as(addr, "POST", path, body, &format!("authorization: bearer   {SERVER_KEY}  \r\n"));
        assert_eq!(scheme.status, 202);
    }

    fn without_server_keys_the_api_is_disabled(driver) {
        let Setup { server, .. } = setup_with(driver, "disabled", |c| c.auth.server_key_hashes.clear());
        let response = rest(server.addr, "POST", "/api/hubs/chat/:send", r#"{"target":"T"}"#);
        assert_eq!(response.status, 401);
        assert_eq!(error_text(&response), "the REST API is disabled until auth.server_key_hashes is set");
    }

    fn bad_requests_get_one_status_and_a_json_error(driver) {
        let Setup { server, .. } = setup_with(driver, "bad", |c| c.http.max_body_size = 8192);
        let addr = server.addr;
        let send = "/api/hubs/chat/:send";
        let cases = [
            ("{nope", 400, "the body is not valid JSON"),
            ("", 400, "the body must be a JSON object"),
            ("[1]", 400, "the body must be a JSON object"),
            (r#"{"arguments":[]}"#, 400, "'target' must be a non-empty string"),
            (r#"{"target":"","arguments":[]}"#, 400, "'target' must be a non-empty string"),
            (r#"{"target":7}"#, 400, "'target' must be a non-empty string"),
            (r#"{"target":"T","arguments":{"a":1}}"#, 400, "'arguments' must be an array"),
        ];
        for (body, status, text) in cases {
            let response = rest(addr, "POST", send, body);
            assert_eq!(response.status, status, "{body}");
            assert_eq!(response.header("content-type"), Some("application/json"));
            assert!(error_text(&response).starts_with(text), "{body}: {}", response.body_str());
        }
        let long = "g".repeat(1025);
        let response = rest(addr, "POST", &format!("/api/hubs/chat/groups/{long}/:send"), r#"{"target":"T"}"#);
        assert_eq!((response.status, error_text(&response).as_str()), (400, "a group name must be 1 to 1024 characters"));
        let response = rest(addr, "POST", "/api/hubs/chat/groups/%zz/:send", r#"{"target":"T"}"#);
        assert_eq!(response.status, 400);

        let unknown = rest(addr, "POST", "/api/hubs/nope/:send", r#"{"target":"T"}"#);
        assert_eq!((unknown.status, error_text(&unknown).as_str()), (404, "no hub is named 'nope'"));
        assert_eq!(rest(addr, "POST", "/api/hubs/chat/whatever", "").status, 404);

        let wrong = rest(addr, "GET", send, "");
        assert_eq!((wrong.status, wrong.header("allow")), (405, Some("POST")));
        let wrong = rest(addr, "POST", "/api/hubs/chat/groups/g", "");
        assert_eq!((wrong.status, wrong.header("allow")), (405, Some("HEAD")));

        // The hub's max_message_size is 4 KiB; http.max_body_size is 8 KiB.
        let big = send_body(&json!(["x".repeat(5000)]));
        let response = rest(addr, "POST", send, &big);
        assert_eq!(response.status, 413);
        assert!(error_text(&response).contains("4096"), "{}", response.body_str());
        // Beyond http.max_body_size the body is refused before it is read.
        let huge = http(
            addr,
            format!("POST {send} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {SERVER_KEY}\r\nContent-Length: 10000\r\n\r\n").as_bytes(),
        );
        assert_eq!(huge.status, 413);
    }
}

#[test]
fn the_publish_command_sends_through_the_api_with_a_minted_server_key() {
    let minted = std::process::Command::new(env!("CARGO_BIN_EXE_ringhub"))
        .args(["keys", "add-server"])
        .output()
        .unwrap();
    assert!(minted.status.success());
    let stdout = String::from_utf8(minted.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let [key, hash] = lines[..] else {
        panic!("key and hash expected: {stdout}")
    };
    assert_eq!(hash, hash_key(key));

    let key_hash = hash.to_owned();
    let Setup { server, .. } = setup_with(DriverKind::Legacy, "cli", move |c| {
        c.auth.server_key_hashes = vec![key_hash];
    });
    let addr = server.addr;
    let mut all = clients(addr, "chat", None, HubProtocol::Json, 1);
    let group = "cli group/1";
    for client in &all {
        let path = format!(
            "/api/hubs/chat/groups/cli%20group%2F1/connections/{}",
            client.id
        );
        let put = rest_as(
            addr,
            "PUT",
            &path,
            "",
            &format!("Authorization: Bearer {key}\r\n"),
        );
        assert_eq!(put.status, 200);
    }
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ringhub"))
            .args([
                "publish",
                "--url",
                &format!("http://{addr}"),
                "--hub",
                "chat",
            ])
            .args([
                "--target",
                "Notify",
                "--arguments",
                r#"["from the cli",{"n":2}]"#,
            ])
            .args(extra)
            .env("HUB_SERVER_KEY", key)
            .output()
            .unwrap()
    };
    let sent = run(&["--group", group, "--excluded", &all[1].id]);
    // A connection id is base64url: one that starts with `-` is still a value, not a flag.
    let dashed = run(&["--connection", "-Gabc", "--excluded", "-Gdef"]);
    assert!(dashed.status.success(), "{dashed:?}");
    assert_eq!(String::from_utf8_lossy(&dashed.stdout).trim(), "202");
    assert!(sent.status.success(), "{sent:?}");
    assert_eq!(String::from_utf8_lossy(&sent.stdout).trim(), "202");
    assert_eq!(
        receive(&mut all[0]),
        notify(json!(["from the cli", {"n": 2}]))
    );
    assert_silent(&mut all[1]);
    let refused = run(&["--connection", "nope", "--server-key", "wrong"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).starts_with("401 "));
}

/// [`setup`] plus hub `streamer`, whose `StreamResponse(id)` streams key `response-{id}`.
fn setup_streams(driver: DriverKind, name: &str) -> Setup {
    setup_with(driver, name, |c| {
        let mut streamer = hub("streamer", HubAuth::Anonymous);
        streamer
            .methods
            .push(("StreamResponse".into(), "stream-key:response-{0}".into()));
        c.hubs.push(streamer);
    })
}

on_both_drivers! {
    fn stream_posts_reach_the_streaming_client_with_its_invocation_id(driver) {
        let Setup { server, .. } = setup_streams(driver, "streams");
        let addr = server.addr;
        let mut client = open(addr, "streamer", None, negotiate(addr, "streamer", None), HubProtocol::Json);
        // Posted before the client subscribes: kept in the backlog.
        let stream = "/api/hubs/streamer/streams/response-42";
        assert_eq!(rest(addr, "POST", &format!("{stream}/:item"), r#"{"item":{"delta":"Hel"}}"#).status, 202);
        client.ws.send_text("{\"type\":4,\"invocationId\":\"s1\",\"target\":\"StreamResponse\",\"arguments\":[\"42\"]}\u{1e}");
        assert_eq!(receive(&mut client), json!({"type": 2, "invocationId": "s1", "item": {"delta": "Hel"}}));
        assert_eq!(rest(addr, "POST", &format!("{stream}/:item"), r#"{"item":"lo"}"#).status, 202);
        assert_eq!(receive(&mut client), json!({"type": 2, "invocationId": "s1", "item": "lo"}));
        assert_eq!(rest(addr, "POST", &format!("{stream}/:complete"), "").status, 202);
        assert_eq!(receive(&mut client), json!({"type": 3, "invocationId": "s1"}));
        // Another request id is another key; an error ends its stream with the text.
        client.ws.send_text("{\"type\":4,\"invocationId\":\"s2\",\"target\":\"StreamResponse\",\"arguments\":[7]}\u{1e}");
        let response = rest(addr, "POST", "/api/hubs/streamer/streams/response-7/:error", r#"{"error":"overloaded"}"#);
        assert_eq!(response.status, 202);
        assert_eq!(receive(&mut client), json!({"type": 3, "invocationId": "s2", "error": "overloaded"}));
        // Invoked without `stream`, a streaming method is refused as ASP.NET does.
        client.ws.send_text("{\"type\":1,\"invocationId\":\"i\",\"target\":\"StreamResponse\",\"arguments\":[\"1\"]}\u{1e}");
        assert!(receive(&mut client)["error"].as_str().unwrap().contains("non-streaming invocation"));
    }

    fn stream_posts_are_validated(driver) {
        let Setup { server, .. } = setup_streams(driver, "stream-errors");
        let addr = server.addr;
        let item = "/api/hubs/streamer/streams/response-1/:item";
        let cases = [
            (item, r#"{"value":1}"#, 400, r#"the body must be {"item": <any JSON>}"#),
            (item, "", 400, r#"the body must be {"item": <any JSON>}"#),
            (item, "{nope", 400, "the body is not valid JSON"),
            ("/api/hubs/streamer/streams/response-1/:error", r#"{"error":""}"#, 400, r#"the body must be {"error": "<text>"}"#),
            ("/api/hubs/streamer/streams/response-1/:complete", "[1]", 400, "the body must be empty or a JSON object"),
            ("/api/hubs/streamer/streams//:item", r#"{"item":1}"#, 400, "a stream key must be 1 to 1024 characters"),
            ("/api/hubs/chat/streams/response-1/:item", r#"{"item":1}"#, 404, "hub 'chat' has no stream-key method"),
            ("/api/hubs/nope/streams/response-1/:item", r#"{"item":1}"#, 404, "no hub is named 'nope'"),
            ("/api/hubs/streamer/streams/response-1/:append", r#"{"item":1}"#, 404, "no such REST API resource"),
        ];
        for (path, body, status, text) in cases {
            let response = rest(addr, "POST", path, body);
            assert_eq!(response.status, status, "{path} {body}");
            assert!(error_text(&response).starts_with(text), "{path} {body}: {}", response.body_str());
        }
        let wrong = rest(addr, "PUT", item, r#"{"item":1}"#);
        assert_eq!((wrong.status, wrong.header("allow")), (405, Some("POST")));
        // The hub's max_message_size is 4 KiB.
        let big = json!({"item": "x".repeat(5000)}).to_string();
        let response = rest(addr, "POST", item, &big);
        assert_eq!(response.status, 413);
        assert!(error_text(&response).contains("4096"), "{}", response.body_str());
        let anonymous = rest_as(addr, "POST", item, r#"{"item":1}"#, "");
        assert_eq!(anonymous.status, 401);
    }
}
