//! Writes the seed corpora (`fuzz/seeds/<target>/`) from the test vectors, encoded by ringhub's
//! own encoders where it has them, so every target starts from valid input of its format:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus`.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use ringhub::protocol::backplane::{
    Ack, BackplaneInvocation, GroupAction, GroupCommand, Serialization,
};
use ringhub::protocol::signalr::{Decoded, HubProtocol};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

/// A client frame: FIN, `opcode`, masked with a fixed key.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

const RECORDS: &[&str] = &[
    r#"{"type":1,"invocationId":"1","target":"Echo","arguments":["hi"]}"#,
    r#"{"type":1,"target":"SubscribeToTask","arguments":["task-1"],"headers":{"a":"b"}}"#,
    r#"{"type":4,"invocationId":"2","target":"Stream","arguments":[3],"streamIds":[]}"#,
    r#"{"type":1,"invocationId":"3","target":"Upload","arguments":[],"streamIds":["s1"]}"#,
    r#"{"type":2,"invocationId":"s1","item":{"n":1.5e3,"ok":true,"list":[null,"\u00e9\ud83d\ude00"]}}"#,
    r#"{"type":3,"invocationId":"s1"}"#,
    r#"{"type":3,"invocationId":"7","result":{"deep":[[[1]]]}}"#,
    r#"{"type":3,"invocationId":"8","error":"boom"}"#,
    r#"{"type":5,"invocationId":"2"}"#,
    r#"{"type":6}"#,
    r#"{"type":7,"error":"bye","allowReconnect":true}"#,
    r#"{"type":8,"sequenceId":3}"#,
    r#"{"type":9,"sequenceId":1}"#,
    r#"{"type":42,"future":"field"}"#,
];

fn main() {
    // HTTP heads: a WebSocket upgrade, a negotiate, a chunked REST publish.
    write("http_head", "upgrade", b"GET /hubs/chat?id=abc&access_token=condt_x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://app.example.com\r\n\r\n");
    write("http_head", "negotiate", b"POST /hubs/chat/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nAuthorization: Bearer k\r\n\r\n");
    write("http_head", "chunked", b"POST /api/hubs/chat/:send HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nTrailer: x\r\n\r\n");
    write("http_head", "options", b"OPTIONS /hubs/chat/negotiate HTTP/1.1\r\nHost: h\r\nAccess-Control-Request-Method: POST\r\n\r\n");

    // WebSocket frames (first byte: where the input is split into two reads).
    let hello = frame(true, 1, b"Hello");
    let mut fragmented = frame(false, 1, b"Hel");
    fragmented.extend(frame(true, 9, b"ping"));
    fragmented.extend(frame(true, 0, b"lo"));
    let mut close = frame(true, 8, &1000u16.to_be_bytes());
    close.extend_from_slice(b"");
    let binary = frame(true, 2, &[0u8; 300]);
    for (name, bytes) in [
        ("text", hello),
        ("fragmented", fragmented),
        ("close", close),
        ("binary", binary),
    ] {
        let mut seed = vec![3u8];
        seed.extend(bytes);
        write("websocket_frames", name, &seed);
    }

    // SignalR handshakes.
    write(
        "signalr_handshake",
        "json",
        b"{\"protocol\":\"json\",\"version\":1}\x1e",
    );
    write(
        "signalr_handshake",
        "messagepack",
        b"{\"protocol\":\"messagepack\",\"version\":2}\x1e",
    );
    write("signalr_handshake", "bad", b"{\"protocol\":\"json\"}\x1e");

    // Hub messages: JSON records, and the same messages encoded as MessagePack by ringhub.
    let mut all_json = Vec::new();
    let mut all_msgpack = BytesMut::new();
    for (i, record) in RECORDS.iter().enumerate() {
        let mut json = record.as_bytes().to_vec();
        json.push(0x1e);
        write("hub_json", &format!("record-{i}"), &json);
        all_json.extend_from_slice(&json);
        if let Ok(Decoded::Message(message, _)) =
            HubProtocol::Json.decode(&Bytes::from(json), 32 * 1024)
        {
            let mut msgpack = BytesMut::new();
            if HubProtocol::MessagePack
                .encode(&message, &mut msgpack)
                .is_ok()
            {
                write("hub_msgpack", &format!("message-{i}"), &msgpack);
                all_msgpack.extend_from_slice(&msgpack);
            }
        }
    }
    write("hub_json", "all", &all_json);
    write("hub_msgpack", "all", &all_msgpack);

    // Redis RESP2 replies (first byte: the split).
    for (name, reply) in [
        ("publish", &b"\x05:1\r\n+OK\r\n"[..]),
        (
            "message",
            b"\x10*3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n$5\r\nhello\r\n",
        ),
        ("error", b"\x02-ERR unknown command\r\n$-1\r\n*-1\r\n"),
        ("nested", b"\x07*2\r\n*1\r\n:5\r\n$0\r\n\r\n"),
    ] {
        write("redis_resp", name, reply);
    }

    // Backplane envelopes (first byte picks the decoder: 0 invocation, 1 group, 2 ack).
    let mut invocation = BytesMut::new();
    BackplaneInvocation::new(vec![
        Serialization::new(
            HubProtocol::Json,
            Bytes::from_static(b"{\"type\":1,\"target\":\"Send\",\"arguments\":[\"x\"]}\x1e"),
        ),
        Serialization::new(
            HubProtocol::MessagePack,
            Bytes::from_static(&[
                0x96, 0x01, 0x80, 0xc0, 0xa4, b'S', b'e', b'n', b'd', 0x91, 0xa1, b'x', 0x90,
            ]),
        ),
    ])
    .encode(&mut invocation);
    let mut seed = vec![0u8];
    seed.extend_from_slice(&invocation);
    write("backplane_envelope", "invocation", &seed);
    let mut group = BytesMut::new();
    GroupCommand {
        id: 7,
        server_name: "server-1".into(),
        action: GroupAction::Add,
        group: "room".into(),
        connection_id: "abc".into(),
    }
    .encode(&mut group);
    let mut seed = vec![1u8];
    seed.extend_from_slice(&group);
    write("backplane_envelope", "group", &seed);
    let mut ack = BytesMut::new();
    Ack(7).encode(&mut ack);
    let mut seed = vec![2u8];
    seed.extend_from_slice(&ack);
    write("backplane_envelope", "ack", &seed);

    // Negotiate and connect query strings.
    write(
        "negotiate_query",
        "connect",
        b"id=abc-DEF_123&access_token=condt_abc%2Bdef&negotiateVersion=1",
    );
    write(
        "negotiate_query",
        "escaped",
        b"a=%zz&b=%F0%9F%98%80&&=&c=+x+",
    );

    // Config files: the printed defaults and the Conduit profile.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if let Ok(profile) = std::fs::read(root.join("profiles/conduit.toml")) {
        write("config_toml", "conduit", &profile);
    }
    if let Ok(production) = std::fs::read(root.join("deploy/ringhub.production.toml")) {
        write("config_toml", "production", &production);
    }
    write("config_toml", "hubs", b"[hubs.chat]\npath = \"/hubs/chat\"\nmethods = { Say = \"echo\", Join = \"join-group:room-{0}\" }\n[signalr]\nkeepalive_interval = \"5s\"\n");
}
