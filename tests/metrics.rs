//! `GET /metrics`: the exposition parses with the reference Prometheus parser
//! (`prometheus_client.parser`, run from the venv `tests/run-all.sh` creates) and its values move
//! as SignalR traffic flows; a configured scrape key is required.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const RS: u8 = 0x1e;

/// Every sample of one scrape: (name, sorted labels) → value.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Scrapes `/metrics` and parses it with `prometheus_client`; panics if it does not parse.
fn scrape(addr: std::net::SocketAddr) -> Samples {
    let response = get(addr, "/metrics");
    assert_eq!(response.status, 200, "{}", response.body_str());
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse(&response.body)
}

fn parse(text: &[u8]) -> Samples {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/pysignalr-venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: tests/run-all.sh creates it from tests/python/requirements.txt",
        python.display()
    );
    let mut child = Command::new(&python)
        .arg(root.join("tests/python/parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser rejected the exposition: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(text)
    );
    let mut samples = Samples::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let (name, labels, value): (String, BTreeMap<String, String>, f64) =
            serde_json::from_str(line).unwrap();
        samples.insert((name, labels.into_iter().collect()), value);
    }
    assert!(
        samples
            .get(&("#families".to_owned(), Vec::new()))
            .is_some_and(|n| *n >= 20.0),
        "too few families parsed"
    );
    samples
}

/// The value of `name` with exactly `labels` (0 when absent).
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut key: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    key.sort();
    samples.get(&(name.to_owned(), key)).copied().unwrap_or(0.0)
}

fn diagnostics_server(driver: ringhub::config::DriverKind) -> TestServer {
    TestServer::start(driver, |c| {
        c.diagnostics.enabled = true;
    })
}

on_both_drivers! {
    fn metrics_parse_and_count_connections_handshakes_messages_and_bytes(driver) {
        let server = diagnostics_server(driver);
        let before = scrape(server.addr);
        let diagnostics = [("hub", "diagnostics"), ("shard", "0")];
        assert_eq!(value(&before, "ringhub_hub_connections_open", &diagnostics), 0.0);
        assert_eq!(value(&before, "ringhub_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
        assert!(value(&before, "ringhub_process_open_fds", &[]) > 0.0);
        assert!(value(&before, "ringhub_process_resident_memory_bytes", &[]) > 0.0);

        // A negotiate, a connection, a handshake, an invocation and its completion.
        let negotiated = http(
            server.addr,
            b"POST /hubs/diagnostics/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(negotiated.status, 200);
        let mut ws = WsClient::connect(server.addr, "/hubs/diagnostics");
        ws.send(1, b"{\"protocol\":\"json\",\"version\":1}\x1e");
        assert_eq!(ws.read_frame().payload, b"{}\x1e");
        ws.send(1, b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"echo\",\"arguments\":[\"hi\"]}\x1e");
        let reply = ws.read_frame();
        assert!(reply.payload.starts_with(b"{\"type\":3"), "{:?}", reply.payload);
        assert_eq!(reply.payload.last(), Some(&RS));

        let during = scrape(server.addr);
        assert_eq!(value(&during, "ringhub_hub_connections_open", &diagnostics), 1.0);
        assert_eq!(value(&during, "ringhub_hub_connections_opened_total", &diagnostics), 1.0);
        let hub = [("hub", "diagnostics")];
        assert_eq!(value(&during, "ringhub_signalr_handshakes_total", &hub), 1.0);
        assert_eq!(value(&during, "ringhub_signalr_handshake_duration_seconds_count", &[]), 1.0);
        assert_eq!(value(&during, "ringhub_http_negotiate_duration_seconds_count", &[]), 1.0);
        assert_eq!(
            value(&during, "ringhub_hub_messages_received_total", &[("hub", "diagnostics"), ("type", "invocation")]),
            1.0
        );
        assert_eq!(
            value(&during, "ringhub_hub_messages_sent_total", &[("hub", "diagnostics"), ("type", "completion")]),
            1.0
        );
        assert_eq!(value(&during, "ringhub_hub_invocation_duration_seconds_count", &hub), 1.0);
        assert_eq!(
            value(&during, "ringhub_hub_invocation_duration_seconds_bucket", &[("hub", "diagnostics"), ("le", "+Inf")]),
            1.0
        );
        let shard = [("shard", "0")];
        assert!(
            value(&during, "ringhub_transport_received_bytes_total", &shard)
                >= value(&before, "ringhub_transport_received_bytes_total", &shard) + 60.0
        );
        assert!(
            value(&during, "ringhub_transport_sent_bytes_total", &shard)
                >= value(&before, "ringhub_transport_sent_bytes_total", &shard) + 30.0
        );
        assert_eq!(value(&during, "ringhub_transport_outbox_bytes", &shard), 0.0);
        assert_eq!(
            value(&during, "ringhub_backplane_up", &[("kind", "in-process"), ("shard", "0")]),
            1.0
        );

        // The connection ends: the gauge goes back down, the total stays.
        ws.send(8, &1000u16.to_be_bytes());
        ws.read_close();
        assert!(eventually(Duration::from_secs(5), || {
            value(&scrape(server.addr), "ringhub_hub_connections_open", &diagnostics) == 0.0
        }));
        let after = scrape(server.addr);
        assert_eq!(value(&after, "ringhub_hub_connections_opened_total", &diagnostics), 1.0);
    }

    fn refused_keys_and_handshakes_are_counted_by_reason(driver) {
        let server = diagnostics_server(driver);
        // The seed's notifications hub needs a virtual key.
        let refused = http(
            server.addr,
            b"POST /hubs/notifications/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(refused.status, 401);
        let mut ws = WsClient::connect(server.addr, "/hubs/diagnostics");
        ws.send(1, b"{\"protocol\":\"carrier-pigeon\",\"version\":1}\x1e");
        let answer = ws.read_frame();
        assert!(answer.payload.starts_with(b"{\"error\":"), "{:?}", answer.payload);
        let samples = scrape(server.addr);
        assert_eq!(value(&samples, "ringhub_auth_failures_total", &[("reason", "missing_token")]), 1.0);
        assert_eq!(
            value(&samples, "ringhub_signalr_handshake_failures_total", &[("reason", "unsupported_protocol")]),
            1.0
        );
        assert_eq!(value(&samples, "ringhub_signalr_handshakes_total", &[("hub", "diagnostics")]), 0.0);
    }

    fn a_configured_scrape_key_is_required(driver) {
        let server = TestServer::start(driver, |c| {
            c.metrics.key_hash = Some(ringhub::auth::keys::hash_key("scrape-secret"));
        });
        let anonymous = get(server.addr, "/metrics");
        assert_eq!(anonymous.status, 401);
        let wrong = http(
            server.addr,
            b"GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer nope\r\n\r\n",
        );
        assert_eq!(wrong.status, 401);
        let right = http(
            server.addr,
            b"GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer scrape-secret\r\n\r\n",
        );
        assert_eq!(right.status, 200);
        parse(&right.body);
    }
}
