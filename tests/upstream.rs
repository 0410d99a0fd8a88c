//! Upstream invocations against a tiny HTTP backend on a std thread: results and errors as
//! Completions (JSON and MessagePack callers), timeouts, an unreachable backend, keep-alive
//! reuse, connect/disconnect events, and a bystander unaffected by a slow backend.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const RS: u8 = 0x1e;

/// How the backend answers a request: status, body, and a delay before answering.
type Answer = (u16, String, Duration);

/// A keep-alive HTTP/1.1 backend that records every request and answers per path.
struct Backend {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
    accepted: Arc<AtomicUsize>,
}

impl Backend {
    fn start(answer: fn(&str, &Value) -> Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (log, count) = (Arc::clone(&requests), Arc::clone(&accepted));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let log = Arc::clone(&log);
                std::thread::spawn(move || serve(stream, &log, answer));
            }
        });
        Self {
            addr,
            requests,
            accepted,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<(String, Value)> {
        self.requests.lock().unwrap().clone()
    }
}

/// Serves requests on one connection until the client closes it.
fn serve(stream: TcpStream, log: &Mutex<Vec<(String, Value)>>, answer: fn(&str, &Value) -> Answer) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_owned();
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        log.lock().unwrap().push((path.clone(), body.clone()));
        let (status, text, delay) = answer(&path, &body);
        std::thread::sleep(delay);
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// The backend of these tests: `/ask` answers `{"answer": <its arguments>}`, `/fail` a 400
/// with an `error` field, `/html` a 500 page, `/slow` after 3 s, `/events` 204.
fn answer(path: &str, body: &Value) -> Answer {
    let now = Duration::ZERO;
    match path {
        "/ask" => (200, json!({"answer": body["arguments"]}).to_string(), now),
        "/fail" => (400, r#"{"error":"Task not found"}"#.into(), now),
        "/html" => (500, "<html>oops</html>".into(), now),
        "/slow" => (200, "1".into(), Duration::from_secs(3)),
        _ => (204, String::new(), now),
    }
}

/// A closed port: connecting is refused.
fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A server with hub `/hubs/up` bound to `api`, posting events to `events` (if any).
fn server(
    driver: ringhub::config::DriverKind,
    api: &Backend,
    events: Option<&Backend>,
) -> TestServer {
    let events_url = events.map_or(String::new(), |e| {
        format!("events_url = \"{}\"\n", e.url("/events"))
    });
    let text = format!(
        "[upstream]\ntimeout = \"300ms\"\n\
         [hubs.up]\npath = \"/hubs/up\"\n{events_url}\
         [hubs.up.methods]\nEcho = \"echo\"\n\
         Ask = {{ action = \"upstream\", url = \"{ask}\" }}\n\
         Fail = {{ action = \"upstream\", url = \"{fail}\" }}\n\
         Html = {{ action = \"upstream\", url = \"{html}\" }}\n\
         Slow = {{ action = \"upstream\", url = \"{slow}\" }}\n\
         Down = {{ action = \"upstream\", url = \"http://{down}/x\" }}\n",
        ask = api.url("/ask"),
        fail = api.url("/fail"),
        html = api.url("/html"),
        slow = api.url("/slow"),
        down = closed_port(),
    );
    let parsed = ringhub::config::Config::from_toml_str(&text, "test").unwrap();
    TestServer::start(driver, move |c| {
        c.hubs = parsed.hubs;
        c.upstream = parsed.upstream;
    })
}

/// Opens `/hubs/up{query}` and completes a handshake in `protocol`.
fn open(addr: SocketAddr, query: &str, protocol: &str) -> WsClient {
    let mut ws = WsClient::connect(addr, &format!("/hubs/up{query}"));
    let mut handshake = format!(r#"{{"protocol":"{protocol}","version":1}}"#).into_bytes();
    handshake.push(RS);
    ws.send(1, &handshake);
    assert_eq!(ws.read_frame().payload, b"{}\x1e");
    ws
}

/// Invokes `target(arguments)` as invocation `id` over JSON.
fn invoke(ws: &mut WsClient, id: &str, target: &str, arguments: Value) {
    let mut message = json!({"type":1,"invocationId":id,"target":target,"arguments":arguments})
        .to_string()
        .into_bytes();
    message.push(RS);
    ws.send(1, &message);
}

/// The next JSON hub message.
fn next_message(ws: &mut WsClient) -> Value {
    let frame = ws.read_frame();
    let record = frame.payload.split(|b| *b == RS).next().unwrap();
    serde_json::from_slice(record).unwrap()
}

/// Invokes and returns the Completion.
fn call(ws: &mut WsClient, id: &str, target: &str, arguments: Value) -> Value {
    invoke(ws, id, target, arguments);
    next_message(ws)
}

on_both_drivers! {
    fn a_backend_answer_is_the_result_and_the_backend_sees_hub_method_arguments_and_caller(driver) {
        let api = Backend::start(answer);
        let server = server(driver, &api, None);
        let mut ws = open(server.addr, "", "json");
        let reply = call(&mut ws, "1", "ask", json!([{"task": 5}, "x"]));
        assert_eq!(
            reply,
            json!({"type":3,"invocationId":"1","result":{"answer":[{"task":5},"x"]}})
        );
        let (path, body) = api.requests().pop().unwrap();
        assert_eq!(path, "/ask");
        assert_eq!(
            (&body["hub"], &body["method"], &body["virtualKeyId"], &body["userId"]),
            (&json!("up"), &json!("Ask"), &Value::Null, &Value::Null)
        );
        assert!(body["connectionId"].as_str().is_some_and(|id| !id.is_empty()), "{body}");
    }

    fn a_messagepack_caller_gets_the_json_result_transcoded(driver) {
        let api = Backend::start(answer);
        let server = server(driver, &api, None);
        let mut ws = open(server.addr, "", "messagepack");
        // Invocation Ask("hi") with id "0": [1, {}, "0", "Ask", ["hi"]].
        let message = [0x95, 0x01, 0x80, 0xa1, b'0', 0xa3, b'A', b's', b'k', 0x91, 0xa2, b'h', b'i'];
        let mut frame = vec![message.len() as u8];
        frame.extend_from_slice(&message);
        ws.send(2, &frame);
        let reply = ws.read_frame();
        // Completion [3, {}, "0", 3, {"answer": ["hi"]}].
        let completion = [
            0x95, 0x03, 0x80, 0xa1, b'0', 0x03, 0x81, 0xa6, b'a', b'n', b's', b'w', b'e', b'r',
            0x91, 0xa2, b'h', b'i',
        ];
        let mut expected = vec![completion.len() as u8];
        expected.extend_from_slice(&completion);
        assert_eq!((reply.opcode, reply.payload), (2, expected));
        assert_eq!(api.requests()[0].1["arguments"], json!(["hi"]));
    }

    fn backend_errors_become_hub_exceptions_with_its_error_text_or_its_status(driver) {
        let api = Backend::start(answer);
        let server = server(driver, &api, None);
        let mut ws = open(server.addr, "", "json");
        assert_eq!(
            call(&mut ws, "1", "Fail", json!([1]))["error"],
            "An unexpected error occurred invoking 'Fail' on the server. HubException: Task not found"
        );
        assert_eq!(
            call(&mut ws, "2", "Html", json!([]))["error"],
            "An unexpected error occurred invoking 'Html' on the server. HubException: upstream answered 500"
        );
    }

    fn a_slow_backend_fails_the_call_within_the_timeout_and_spares_a_bystander(driver) {
        let api = Backend::start(answer);
        let server = server(driver, &api, None);
        let mut slow = open(server.addr, "", "json");
        let mut bystander = open(server.addr, "", "json");
        let started = Instant::now();
        invoke(&mut slow, "1", "Slow", json!([]));
        // While the backend hangs, another connection is answered at once.
        let echoed = call(&mut bystander, "7", "Echo", json!(["still here"]));
        assert_eq!(echoed["result"], "still here");
        assert!(started.elapsed() < Duration::from_millis(250), "{:?}", started.elapsed());
        let reply = next_message(&mut slow);
        let waited = started.elapsed();
        assert_eq!(
            reply["error"],
            "An unexpected error occurred invoking 'Slow' on the server. HubException: upstream did not answer within 300ms"
        );
        assert!(
            waited >= Duration::from_millis(290) && waited < Duration::from_millis(2000),
            "{waited:?}"
        );
        // The slot is free again: the same connection is answered.
        assert_eq!(call(&mut slow, "2", "Echo", json!([1]))["result"], 1);
    }

    fn an_unreachable_backend_fails_the_call_without_naming_it(driver) {
        let api = Backend::start(answer);
        let server = server(driver, &api, None);
        let mut ws = open(server.addr, "", "json");
        assert_eq!(
            call(&mut ws, "1", "Down", json!([]))["error"],
            "An unexpected error occurred invoking 'Down' on the server. HubException: upstream unavailable"
        );
    }

    fn consecutive_calls_reuse_one_backend_connection(driver) {
        let api = Backend::start(answer);
        let server = server(driver, &api, None);
        let mut first = open(server.addr, "", "json");
        let mut second = open(server.addr, "", "json");
        for i in 0..5 {
            let ws = if i % 2 == 0 { &mut first } else { &mut second };
            let reply = call(ws, &i.to_string(), "Ask", json!([i]));
            assert_eq!(reply["result"], json!({"answer": [i]}));
        }
        assert_eq!((api.requests().len(), api.accepted.load(Ordering::SeqCst)), (5, 1));
    }

    fn connect_and_disconnect_are_posted_with_the_connection_id(driver) {
        let api = Backend::start(answer);
        let events = Backend::start(answer);
        let server = server(driver, &api, Some(&events));
        let negotiated = http(
            server.addr,
            b"POST /hubs/up/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        );
        let body: Value = serde_json::from_slice(&negotiated.body).unwrap();
        let (id, token) = (
            body["connectionId"].as_str().unwrap().to_owned(),
            body["connectionToken"].as_str().unwrap().to_owned(),
        );
        let mut ws = open(server.addr, &format!("?id={token}"), "json");
        assert!(eventually(Duration::from_secs(5), || events.requests().len() == 1));
        ws.send(1, b"{\"type\":7}\x1e");
        assert_eq!(ws.read_close(), Some(1000));
        // Complete the close handshake so the session ends now, not after close_timeout.
        ws.send(8, &1000u16.to_be_bytes());
        drop(ws);
        assert!(eventually(Duration::from_secs(5), || events.requests().len() == 2));
        let posted = events.requests();
        for ((path, body), event) in posted.iter().zip(["connected", "disconnected"]) {
            assert_eq!(path, "/events");
            assert_eq!(
                body,
                &json!({"event": event, "hub": "up", "connectionId": id, "virtualKeyId": null})
            );
        }
        assert!(api.requests().is_empty());
    }
}
