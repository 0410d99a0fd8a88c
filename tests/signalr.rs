//! SignalR server behaviour over raw sockets, where the official client cannot show it:

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]
//! handshake errors and timeouts, token rules, keep-alive, client timeout, graceful stop, and
//! connections handed between shards.

mod support;

use std::io::Write;
use std::time::Duration;

use support::*;

const RS: u8 = 0x1e;

fn diagnostics(
    driver: ringhub::config::DriverKind,
    tweak: impl FnOnce(&mut ringhub::config::Config),
) -> TestServer {
    TestServer::start(driver, |c| {
        c.diagnostics.enabled = true;
        // The suites burst hundreds of calls; the rate limit has its own test.
        c.signalr.invocation_rate = 1_000_000;
        c.signalr.invocation_burst = 1_000_000;
        tweak(c);
    })
}

/// POSTs negotiate and returns (connectionId, connectionToken).
fn negotiate(addr: std::net::SocketAddr) -> (String, String) {
    let response = http(
        addr,
        b"POST /hubs/diagnostics/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(response.status, 200);
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    (
        body["connectionId"].as_str().unwrap().to_owned(),
        body["connectionToken"].as_str().unwrap().to_owned(),
    )
}

fn connect(addr: std::net::SocketAddr, query: &str) -> WsClient {
    WsClient::connect(addr, &format!("/hubs/diagnostics{query}"))
}

/// Sends a JSON handshake and returns the server's first frame.
fn handshake(ws: &mut WsClient, body: &str) -> Frame {
    let mut bytes = body.as_bytes().to_vec();
    bytes.push(RS);
    ws.send(1, &bytes);
    ws.read_frame()
}

fn records(frame: &Frame) -> Vec<serde_json::Value> {
    frame
        .payload
        .split(|b| *b == RS)
        .filter(|r| !r.is_empty())
        .map(|r| serde_json::from_slice(r).unwrap())
        .collect()
}

on_both_drivers! {
    fn json_handshake_succeeds_and_echo_answers(driver) {
        let server = diagnostics(driver, |_| {});
        let mut ws = connect(server.addr, "");
        let ok = handshake(&mut ws, r#"{"protocol":"json","version":1}"#);
        assert_eq!(ok.payload, b"{}\x1e");
        ws.send(1, b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"echo\",\"arguments\":[\"hi\"]}\x1e");
        let reply = records(&ws.read_frame());
        assert_eq!(reply[0], serde_json::json!({"type":3,"invocationId":"1","result":"hi"}));
    }

    fn messagepack_handshake_answers_in_a_binary_frame(driver) {
        let server = diagnostics(driver, |_| {});
        let mut ws = connect(server.addr, "");
        let ok = handshake(&mut ws, r#"{"protocol":"messagepack","version":1}"#);
        assert_eq!((ok.opcode, ok.payload.as_slice()), (2, &b"{}\x1e"[..]));
        // Ping then Invocation Echo("hi") id "0", 5 elements as the JS client writes it.
        ws.send(2, &[0x02, 0x91, 0x06, 0x0e, 0x95, 0x01, 0x80, 0xa1, 0x30, 0xa4, b'E', b'c', b'h', b'o', 0x91, 0xa2, b'h', b'i']);
        let reply = ws.read_frame();
        assert_eq!(reply.opcode, 2);
        assert_eq!(reply.payload, [0x09, 0x95, 0x03, 0x80, 0xa1, 0x30, 0x03, 0xa2, b'h', b'i']);
    }

    fn unknown_protocol_gets_the_aspnet_error_then_close_1000(driver) {
        let server = diagnostics(driver, |_| {});
        let mut ws = connect(server.addr, "");
        let reply = handshake(&mut ws, r#"{"protocol":"foo","version":1}"#);
        assert_eq!(reply.payload, b"{\"error\":\"The protocol 'foo' is not supported.\"}\x1e");
        assert_eq!(ws.read_close(), Some(1000));
    }

    fn version_3_is_refused_and_malformed_handshakes_get_the_generic_text(driver) {
        let server = diagnostics(driver, |_| {});
        let mut ws = connect(server.addr, "");
        let reply = handshake(&mut ws, r#"{"protocol":"json","version":3}"#);
        assert_eq!(reply.payload, b"{\"error\":\"The server does not support version 3 of the 'json' protocol.\"}\x1e");
        let mut ws = connect(server.addr, "");
        let reply = handshake(&mut ws, r#"{"protocol":"json"}"#);
        assert_eq!(reply.payload, b"{\"error\":\"An unexpected error occurred during connection handshake.\"}\x1e");
        assert_eq!(ws.read_close(), Some(1000));
    }

    fn a_missing_handshake_is_canceled_after_the_timeout(driver) {
        let server = diagnostics(driver, |c| c.signalr.handshake_timeout = Duration::from_millis(200));
        let mut ws = connect(server.addr, "");
        let reply = ws.read_frame();
        assert_eq!(reply.payload, b"{\"error\":\"Handshake was canceled.\"}\x1e");
        assert_eq!(ws.read_close(), Some(1000));
    }

    fn an_unknown_token_is_404_and_a_token_in_use_is_409(driver) {
        let server = diagnostics(driver, |_| {});
        let response = get(server.addr, "/hubs/diagnostics?id=AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!((response.status, response.body_str()), (404, "No Connection with that ID"));
        let (_, token) = negotiate(server.addr);
        let mut first = connect(server.addr, &format!("?id={token}"));
        assert_eq!(handshake(&mut first, r#"{"protocol":"json","version":1}"#).payload, b"{}\x1e");
        let mut stream = support::connect(server.addr);
        stream.write_all(format!(
            "GET /hubs/diagnostics?id={token} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").as_bytes()).unwrap();
        assert_eq!(read_response(&mut stream).status, 409);
    }

    fn a_token_whose_connection_ended_cannot_start_another_before_it_expires(driver) {
        let server = diagnostics(driver, |_| {});
        let (_, token) = negotiate(server.addr);
        let mut first = connect(server.addr, &format!("?id={token}"));
        assert_eq!(handshake(&mut first, r#"{"protocol":"json","version":1}"#).payload, b"{}\x1e");
        let upgrade = || {
            let mut stream = support::connect(server.addr);
            stream.write_all(format!(
                "GET /hubs/diagnostics?id={token} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").as_bytes()).unwrap();
            read_response(&mut stream).status
        };
        assert_eq!(upgrade(), 409, "while it runs");
        first.send(8, &1000u16.to_be_bytes());
        assert_eq!(first.read_close(), Some(1000));
        let mut status = 409;
        assert!(eventually(Duration::from_secs(5), || {
            status = upgrade();
            status != 409
        }));
        assert_eq!(status, 404, "after it ended");
    }

    fn tokens_work_whichever_shard_accepts_the_websocket(driver) {
        let server = diagnostics(driver, |c| c.workers = std::num::NonZeroUsize::new(2).unwrap());
        for _ in 0..16 {
            let (id, token) = negotiate(server.addr);
            let mut ws = connect(server.addr, &format!("?id={token}"));
            assert_eq!(handshake(&mut ws, r#"{"protocol":"json","version":1}"#).payload, b"{}\x1e");
            ws.send(1, b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"GetCallerConnectionId\",\"arguments\":[]}\x1e");
            let reply = records(&ws.read_frame());
            assert_eq!(reply[0]["result"], serde_json::Value::String(id));
        }
    }

    fn every_idle_connection_of_a_health_hub_gets_each_health_push_whole(driver) {
        let server = diagnostics(driver, |c| {
            c.health.push_interval = Duration::from_millis(100);
            c.signalr.keepalive_interval = Duration::from_secs(60);
        });
        let mut clients: Vec<WsClient> = (0..3)
            .map(|_| {
                let mut ws = WsClient::connect(server.addr, "/hubs/health");
                assert_eq!(handshake(&mut ws, r#"{"protocol":"json","version":1}"#).payload, b"{}\x1e");
                ws
            })
            .collect();
        for ws in &mut clients {
            let mut uptimes = Vec::new();
            while uptimes.len() < 2 {
                for record in records(&ws.read_frame()) {
                    assert_eq!(record["type"], 1, "{record}");
                    assert_eq!(record["target"], "HealthStatus", "{record}");
                    assert_eq!(record["arguments"][0]["status"], "Healthy", "{record}");
                    uptimes.push(record["arguments"][0]["uptimeSeconds"].as_f64().unwrap());
                }
            }
            assert!(uptimes[1] >= uptimes[0], "{uptimes:?}");
        }
    }

    fn the_server_pings_every_keepalive_interval(driver) {
        let server = diagnostics(driver, |c| c.signalr.keepalive_interval = Duration::from_millis(100));
        let mut ws = connect(server.addr, "");
        handshake(&mut ws, r#"{"protocol":"json","version":1}"#);
        for _ in 0..3 {
            assert_eq!(ws.read_frame().payload, b"{\"type\":6}\x1e");
        }
    }

    fn a_client_silent_through_many_server_pings_is_still_read(driver) {
        // Each ping is a timer wake-up and a write while the connection waits for bytes; the
        // wait stays armed through them, and the invocation sent afterwards is still read.
        let server = diagnostics(driver, |c| c.signalr.keepalive_interval = Duration::from_millis(30));
        let mut ws = connect(server.addr, "");
        handshake(&mut ws, r#"{"protocol":"json","version":1}"#);
        for _ in 0..5 {
            assert_eq!(ws.read_frame().payload, b"{\"type\":6}\x1e");
        }
        ws.send(1, b"{\"type\":1,\"invocationId\":\"7\",\"target\":\"echo\",\"arguments\":[\"late\"]}\x1e");
        loop {
            let frame = ws.read_frame();
            if frame.payload != b"{\"type\":6}\x1e" {
                let reply = records(&frame);
                assert_eq!(reply[0], serde_json::json!({"type":3,"invocationId":"7","result":"late"}));
                break;
            }
        }
    }

    fn a_client_silent_after_its_first_ping_is_closed_with_an_error(driver) {
        let server = diagnostics(driver, |c| {
            c.signalr.client_timeout = Duration::from_millis(300);
            c.signalr.keepalive_interval = Duration::from_secs(60);
        });
        let mut ws = connect(server.addr, "");
        handshake(&mut ws, r#"{"protocol":"json","version":1}"#);
        ws.send(1, b"{\"type\":6}\x1e");
        let close = records(&ws.read_frame());
        assert_eq!(close[0], serde_json::json!({"type":7,"error":"Connection closed with an error.","allowReconnect":true}));
        assert_eq!(ws.read_close(), Some(1000));
    }

    fn a_client_close_is_answered_with_close_without_reconnect(driver) {
        let server = diagnostics(driver, |_| {});
        let mut ws = connect(server.addr, "");
        handshake(&mut ws, r#"{"protocol":"json","version":1}"#);
        ws.send(1, b"{\"type\":7}\x1e");
        assert_eq!(records(&ws.read_frame())[0], serde_json::json!({"type":7}));
        assert_eq!(ws.read_close(), Some(1000));
    }

    fn malformed_hub_messages_close_with_an_error_and_spare_a_bystander(driver) {
        let server = diagnostics(driver, |_| {});
        let mut bystander = connect(server.addr, "");
        handshake(&mut bystander, r#"{"protocol":"json","version":1}"#);
        for bad in [&b"{\"type\":1,\"target\":\"Echo\"}\x1e"[..], b"not json\x1e", b"[1,2]\x1e"] {
            let mut ws = connect(server.addr, "");
            handshake(&mut ws, r#"{"protocol":"json","version":1}"#);
            ws.send(1, bad);
            let close = records(&ws.read_frame());
            assert_eq!(close[0]["type"], 7);
            assert_eq!(close[0]["error"], "Connection closed with an error.");
            bystander.send(1, b"{\"type\":1,\"invocationId\":\"9\",\"target\":\"Echo\",\"arguments\":[1]}\x1e");
            assert_eq!(records(&bystander.read_frame())[0]["result"], 1);
        }
    }

    fn unknown_message_types_are_ignored(driver) {
        let server = diagnostics(driver, |_| {});
        let mut ws = connect(server.addr, "");
        handshake(&mut ws, r#"{"protocol":"json","version":1}"#);
        ws.send(1, b"{\"type\":99,\"x\":1}\x1e{\"type\":1,\"invocationId\":\"2\",\"target\":\"Echo\",\"arguments\":[2]}\x1e");
        assert_eq!(records(&ws.read_frame())[0]["result"], 2);
    }

    fn graceful_stop_sends_close_allowing_reconnect_then_1001(driver) {
        let mut server = diagnostics(driver, |_| {});
        let mut ws = connect(server.addr, "");
        handshake(&mut ws, r#"{"protocol":"json","version":1}"#);
        server.shutdown();
        assert_eq!(records(&ws.read_frame())[0], serde_json::json!({"type":7,"allowReconnect":true}));
        assert_eq!(ws.read_close(), Some(1001));
    }

    fn detailed_errors_append_the_reason(driver) {
        let server = diagnostics(driver, |c| c.signalr.detailed_errors = true);
        let mut ws = connect(server.addr, "");
        handshake(&mut ws, r#"{"protocol":"json","version":1}"#);
        ws.send(1, b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[]}\x1e");
        assert_eq!(
            records(&ws.read_frame())[0]["error"],
            "Failed to invoke 'Echo' due to an error on the server. InvalidDataException: Invocation provides 0 argument(s) but target expects 1."
        );
    }

    fn a_negotiated_token_that_is_never_connected_expires(driver) {
        let server = diagnostics(driver, |c| c.signalr.disconnect_timeout = Duration::from_millis(200));
        let (_, token) = negotiate(server.addr);
        std::thread::sleep(Duration::from_millis(1300));
        let response = get(server.addr, &format!("/hubs/diagnostics?id={token}"));
        assert_eq!((response.status, response.body_str()), (404, "No Connection with that ID"));
    }

    fn an_oversized_message_in_detailed_mode_names_the_limit(driver) {
        let server = diagnostics(driver, |c| {
            c.signalr.detailed_errors = true;
            c.signalr.max_message_size = 1024;
        });
        let mut ws = connect(server.addr, "");
        handshake(&mut ws, r#"{"protocol":"json","version":1}"#);
        let big = format!("{{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"{}\"]}}\u{1e}", "x".repeat(2000));
        ws.send(1, big.as_bytes());
        let close = records(&ws.read_frame());
        assert_eq!(
            close[0],
            serde_json::json!({
                "type": 7,
                "error": "Connection closed with an error. InvalidDataException: The maximum message size of 1024B was exceeded. The message size can be configured in AddHubOptions.",
                "allowReconnect": true
            })
        );
        assert_eq!(ws.read_close(), Some(1000));
    }

    fn a_sequence_ahead_of_what_was_sent_is_fatal(driver) {
        let server = diagnostics(driver, |_| {});
        let response = http(
            server.addr,
            b"POST /hubs/diagnostics/negotiate?negotiateVersion=1&useStatefulReconnect=true HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        );
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["useStatefulReconnect"], true);
        let token = body["connectionToken"].as_str().unwrap();
        let mut ws = connect(server.addr, &format!("?id={token}"));
        assert_eq!(handshake(&mut ws, r#"{"protocol":"json","version":2}"#).payload, b"{}\x1e");
        ws.send(1, b"{\"type\":9,\"sequenceId\":5}\x1e");
        let close = records(&ws.read_frame());
        assert_eq!(close[0]["type"], 7);
        assert_eq!(close[0]["error"], "Connection closed with an error.");
    }

    fn the_server_acks_trackable_messages_when_stateful(driver) {
        let server = diagnostics(driver, |_| {});
        let response = http(
            server.addr,
            b"POST /hubs/diagnostics/negotiate?negotiateVersion=1&useStatefulReconnect=true HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        );
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        let token = body["connectionToken"].as_str().unwrap();
        let mut ws = connect(server.addr, &format!("?id={token}"));
        handshake(&mut ws, r#"{"protocol":"json","version":2}"#);
        ws.send(1, b"{\"type\":1,\"target\":\"Echo\",\"arguments\":[1]}\x1e{\"type\":1,\"target\":\"Echo\",\"arguments\":[2]}\x1e");
        // Two non-blocking invocations: no completions, then an Ack for both within about a second.
        let ack = loop {
            let frame = records(&ws.read_frame());
            if let Some(ack) = frame.iter().find(|m| m["type"] == 8) {
                break ack.clone();
            }
        };
        assert_eq!(ack, serde_json::json!({"type": 8, "sequenceId": 2}));
    }

    fn cors_preflight_and_negotiate_echo_only_allowed_origins(driver) {
        let server = diagnostics(driver, |c| c.cors.allowed_origins = vec!["https://app.example".into()]);
        let preflight = http(
            server.addr,
            b"OPTIONS /hubs/diagnostics/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\n\
              Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: x-requested-with, x-signalr-user-agent\r\n\r\n",
        );
        assert_eq!(preflight.status, 204);
        assert_eq!(preflight.header("access-control-allow-origin"), Some("https://app.example"));
        assert_eq!(preflight.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(preflight.header("access-control-allow-headers"), Some("x-requested-with, x-signalr-user-agent"));
        let negotiate = http(
            server.addr,
            b"POST /hubs/diagnostics/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(negotiate.header("access-control-allow-origin"), Some("https://app.example"));
        let foreign = http(
            server.addr,
            b"POST /hubs/diagnostics/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(foreign.status, 200);
        assert_eq!(foreign.header("access-control-allow-origin"), None);
    }

    fn negotiate_accepts_only_post(driver) {
        let server = diagnostics(driver, |_| {});
        let response = get(server.addr, "/hubs/diagnostics/negotiate");
        assert_eq!((response.status, response.header("allow")), (405, Some("POST")));
    }

    fn messages_after_the_handshake_in_the_same_frame_are_processed(driver) {
        let server = diagnostics(driver, |_| {});
        let mut ws = connect(server.addr, "");
        ws.send(1, b"{\"protocol\":\"json\",\"version\":1}\x1e{\"type\":1,\"invocationId\":\"7\",\"target\":\"Echo\",\"arguments\":[\"early\"]}\x1e");
        let frame = ws.read_frame();
        assert!(frame.payload.starts_with(b"{}\x1e"), "{:?}", String::from_utf8_lossy(&frame.payload));
        let rest = Frame { payload: frame.payload[3..].to_vec(), ..frame };
        assert_eq!(records(&rest)[0], serde_json::json!({"type":3,"invocationId":"7","result":"early"}));
    }

    fn malformed_messagepack_closes_with_an_error(driver) {
        let server = diagnostics(driver, |_| {});
        let mut ws = connect(server.addr, "");
        handshake(&mut ws, r#"{"protocol":"messagepack","version":1}"#);
        // A 2 GB+ length prefix, then a body that is not an array.
        for bad in [&[0xff, 0xff, 0xff, 0xff, 0x0f][..], &[0x02, 0xa1, 0x41]] {
            let mut ws = connect(server.addr, "");
            handshake(&mut ws, r#"{"protocol":"messagepack","version":1}"#);
            ws.send(2, bad);
            // [7, "Connection closed with an error.", true]
            let close = ws.read_frame().payload;
            assert_eq!(&close[1..4], &[0x93, 0x07, 0xd9]);
            assert_eq!(*close.last().unwrap(), 0xc3);
            assert_eq!(ws.read_close(), Some(1000));
        }
        ws.send(2, &[0x02, 0x91, 0x06]);
    }

    fn an_invocation_flood_behind_a_busy_slot_closes_only_that_connection(driver) {
        let server = diagnostics(driver, |_| {});
        let mut bystander = connect(server.addr, "");
        handshake(&mut bystander, r#"{"protocol":"json","version":1}"#);
        let mut ws = connect(server.addr, "");
        handshake(&mut ws, r#"{"protocol":"json","version":1}"#);
        // StreamingConcat holds the only invocation slot until its upload completes.
        let mut flood = b"{\"type\":1,\"invocationId\":\"0\",\"target\":\"StreamingConcat\",\"arguments\":[],\"streamIds\":[\"s\"]}\x1e".to_vec();
        for i in 1..=1100 {
            flood.extend(format!("{{\"type\":1,\"invocationId\":\"{i}\",\"target\":\"Echo\",\"arguments\":[{i}]}}\u{1e}").bytes());
        }
        ws.send(1, &flood);
        let close = records(&ws.read_frame());
        assert_eq!(close[0]["type"], 7);
        assert_eq!(close[0]["error"], "Connection closed with an error.");
        bystander.send(1, b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[\"still here\"]}\x1e");
        assert_eq!(records(&bystander.read_frame())[0]["result"], "still here");
    }

    fn after_a_stateful_reconnect_resent_duplicates_are_skipped_and_unacked_replies_resent(driver) {
        let server = diagnostics(driver, |_| {});
        let response = http(
            server.addr,
            b"POST /hubs/diagnostics/negotiate?negotiateVersion=1&useStatefulReconnect=true HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        );
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        let token = body["connectionToken"].as_str().unwrap().to_owned();
        let calls = b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"InvokeWithString\",\"arguments\":[\"a\"]}\x1e\
                      {\"type\":1,\"invocationId\":\"2\",\"target\":\"InvokeWithString\",\"arguments\":[\"b\"]}\x1e";
        let mut first = connect(server.addr, &format!("?id={token}"));
        handshake(&mut first, r#"{"protocol":"json","version":2}"#);
        first.send(1, calls);
        let mut seen = Vec::new();
        while seen.len() < 4 {
            seen.extend(records(&first.read_frame()).into_iter().filter(|m| m["type"] != 6));
        }
        // Drop the socket without a close frame; the session waits for us.
        drop(first);
        let mut second = connect(server.addr, &format!("?id={token}"));
        // The server starts with Sequence and every message we never acknowledged.
        let mut resent = Vec::new();
        while resent.len() < 5 {
            resent.extend(records(&second.read_frame()).into_iter().filter(|m| m["type"] != 6 && m["type"] != 8));
        }
        assert_eq!(resent[0], serde_json::json!({"type": 9, "sequenceId": 1}));
        assert_eq!(&resent[1..], &seen[..]);
        // We resend our two invocations (already handled: skipped), then a new one.
        let mut again = b"{\"type\":9,\"sequenceId\":1}\x1e".to_vec();
        again.extend_from_slice(calls);
        again.extend_from_slice(b"{\"type\":1,\"invocationId\":\"3\",\"target\":\"Echo\",\"arguments\":[3]}\x1e");
        second.send(1, &again);
        let next = loop {
            let frame = records(&second.read_frame());
            if let Some(m) = frame.into_iter().find(|m| m["type"] == 1 || m["type"] == 3) {
                break m;
            }
        };
        assert_eq!(next, serde_json::json!({"type": 3, "invocationId": "3", "result": 3}));
    }

    fn invocations_over_the_rate_get_rate_limit_exceeded(driver) {
        let server = diagnostics(driver, |c| {
            c.signalr.invocation_rate = 1;
            c.signalr.invocation_burst = 3;
        });
        let mut ws = connect(server.addr, "");
        handshake(&mut ws, r#"{"protocol":"json","version":1}"#);
        let mut calls = Vec::new();
        for i in 0..5 {
            calls.extend(format!("{{\"type\":1,\"invocationId\":\"{i}\",\"target\":\"Echo\",\"arguments\":[{i}]}}\u{1e}").bytes());
        }
        ws.send(1, &calls);
        let mut replies = Vec::new();
        while replies.len() < 5 {
            replies.extend(records(&ws.read_frame()).into_iter().filter(|m| m["type"] == 3));
        }
        let limited: Vec<_> = replies.iter().filter(|m| m["error"] == "Rate limit exceeded").collect();
        assert_eq!(limited.len(), 2, "{replies:?}");
        assert_eq!(replies.iter().filter(|m| m.get("result").is_some()).count(), 3);
    }

    fn a_subscriber_that_stops_reading_gets_every_broadcast_whole_and_in_order_later(driver) {
        // Broadcasts are written straight to idle subscribers' sockets; once this one's socket
        // is full, a frame is written in part and its rest waits for the connection's task.
        let server = diagnostics(driver, |c| c.signalr.max_outbound = 64 * 1024 * 1024);
        let mut paused = connect(server.addr, "");
        handshake(&mut paused, r#"{"protocol":"json","version":1}"#);
        paused.send(1, b"{\"type\":1,\"invocationId\":\"j\",\"target\":\"JoinGroup\",\"arguments\":[\"paused\"]}\x1e");
        paused.read_frame();
        let mut sender = connect(server.addr, "");
        handshake(&mut sender, r#"{"protocol":"json","version":1}"#);
        let text = "y".repeat(3000);
        let total = 1000;
        for batch in 0..(total / 10) {
            let mut calls = Vec::new();
            for i in 0..10 {
                let n = batch * 10 + i;
                calls.extend(
                    format!("{{\"type\":1,\"target\":\"SendToGroup\",\"arguments\":[\"paused\",\"{n}-{text}\"]}}\u{1e}").bytes(),
                );
            }
            sender.send(1, &calls);
        }
        // Everything is queued or written in part before the subscriber reads again.
        sender.send(1, b"{\"type\":1,\"invocationId\":\"e\",\"target\":\"echo\",\"arguments\":[\"done\"]}\x1e");
        assert_eq!(records(&sender.read_frame())[0]["result"], "done");
        let mut next = 0;
        while next < total {
            let frame = paused.read_frame();
            assert_eq!(frame.opcode, 1, "after {next} messages");
            for record in records(&frame) {
                if record["target"] == "Send" {
                    let argument = record["arguments"][0].as_str().unwrap();
                    assert_eq!(argument, format!("{next}-{text}"));
                    next += 1;
                }
            }
        }
    }

    fn a_slow_consumer_is_closed_while_a_fast_member_of_its_group_gets_everything(driver) {
        let server = diagnostics(driver, |c| {
            c.signalr.max_outbound = 256 * 1024;
            c.websocket.send_timeout = Duration::from_secs(2);
        });
        let mut slow = connect(server.addr, "");
        handshake(&mut slow, r#"{"protocol":"json","version":1}"#);
        let mut fast = connect(server.addr, "");
        handshake(&mut fast, r#"{"protocol":"json","version":1}"#);
        let join = b"{\"type\":1,\"invocationId\":\"j\",\"target\":\"JoinGroup\",\"arguments\":[\"wide\"]}\x1e";
        slow.send(1, join);
        slow.read_frame();
        fast.send(1, join);
        fast.read_frame();
        // The fast member reads everything on its own thread; the slow one reads nothing.
        let total = 1200;
        let reader = std::thread::spawn(move || {
            let mut got = 0;
            while got < total {
                let frame = fast.read_frame();
                assert_ne!(frame.opcode, 8, "the fast member was closed after {got} messages");
                if frame.opcode == 1 {
                    got += records(&frame).iter().filter(|m| m["target"] == "Send").count();
                }
            }
            got
        });
        let mut sender = connect(server.addr, "");
        handshake(&mut sender, r#"{"protocol":"json","version":1}"#);
        let text = "x".repeat(4000);
        for batch in 0..60 {
            let mut calls = Vec::new();
            for i in 0..20 {
                calls.extend(
                    format!("{{\"type\":1,\"target\":\"SendToGroup\",\"arguments\":[\"wide\",\"{batch}-{i}-{text}\"]}}\u{1e}").bytes(),
                );
            }
            sender.send(1, &calls);
            // A pace a reading peer keeps up with (about 16 MB/s); the slow one reads nothing.
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(reader.join().unwrap(), total);
        // The slow member was given up on (queue bound or stalled write), without a read from us.
        std::thread::sleep(Duration::from_secs(3));
        assert!(closes_within(&mut slow.stream, Duration::from_secs(15)));
    }
}
