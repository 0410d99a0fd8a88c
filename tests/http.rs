//! The HTTP/1.1 front door over real sockets: limits, timeouts, keep-alive, health.

mod support;

use std::io::Write;
use std::time::Duration;

use support::*;

on_both_drivers! {
    fn health_answers_json_status_ok(driver) {
        let server = TestServer::start(driver, |_| {});
        let response = get(server.addr, "/health");
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("application/json"));
        let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(json["status"], "ok");
        let expected = match driver {
            ringhub::config::DriverKind::Legacy => "legacy",
            _ => "io_uring",
        };
        assert_eq!(json["driver"], expected);
    }

    fn head_health_has_no_body(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut stream = connect(server.addr);
        stream.write_all(b"HEAD /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let bytes = read_to_close(&mut stream);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "HEAD must not carry a body: {text}");
    }

    fn unknown_path_is_404(driver) {
        let server = TestServer::start(driver, |_| {});
        assert_eq!(get(server.addr, "/nope").status, 404);
    }

    fn wrong_method_on_health_is_405_with_allow(driver) {
        let server = TestServer::start(driver, |_| {});
        let response = http(server.addr, b"DELETE /health HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(response.status, 405);
        assert_eq!(response.header("allow"), Some("GET, HEAD"));
    }

    fn request_line_over_8_kib_is_414(driver) {
        let server = TestServer::start(driver, |_| {});
        let long = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000));
        assert_eq!(http(server.addr, long.as_bytes()).status, 414);
        // Answered before the line ends: a request line that never ends gets 414 too.
        let mut stream = connect(server.addr);
        stream.write_all(format!("GET /{}", "a".repeat(9000)).as_bytes()).unwrap();
        assert_eq!(read_response(&mut stream).status, 414);
    }

    fn request_line_just_under_the_limit_is_served(driver) {
        let server = TestServer::start(driver, |_| {});
        let path = format!("/{}", "a".repeat(8192 - "GET  HTTP/1.1".len() - 1));
        let line = format!("GET {path} HTTP/1.1");
        assert_eq!(line.len(), 8192);
        assert_eq!(http(server.addr, format!("{line}\r\nHost: t\r\n\r\n").as_bytes()).status, 404);
    }

    fn header_block_over_32_kib_is_431(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut request = String::from("GET /health HTTP/1.1\r\nHost: t\r\n");
        for i in 0..40 {
            request.push_str(&format!("x-filler-{i}: {}\r\n", "v".repeat(1000)));
        }
        request.push_str("\r\n");
        assert_eq!(http(server.addr, request.as_bytes()).status, 431);
    }

    fn more_than_100_headers_is_431(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut request = String::from("GET /health HTTP/1.1\r\nHost: t\r\n");
        for i in 0..100 {
            request.push_str(&format!("x-h{i}: v\r\n"));
        }
        request.push_str("\r\n");
        assert_eq!(http(server.addr, request.as_bytes()).status, 431);
    }

    fn malformed_request_is_400(driver) {
        let server = TestServer::start(driver, |_| {});
        for bad in [
            &b"GET /health HTTP/9.9\r\n\r\n"[..],
            b"GE\x00T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            assert_eq!(http(server.addr, bad).status, 400, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn incomplete_head_is_answered_408_after_the_header_timeout(driver) {
        let server = TestServer::start(driver, |c| c.http.header_timeout = Duration::from_millis(300));
        let mut stream = connect(server.addr);
        stream.write_all(b"GET /health HTTP/1.1\r\nHost:").unwrap();
        let response = read_response(&mut stream);
        assert_eq!(response.status, 408);
        assert!(closes_within(&mut stream, Duration::from_secs(5)));
    }

    fn slowloris_drip_does_not_extend_the_header_timeout(driver) {
        let server = TestServer::start(driver, |c| c.http.header_timeout = Duration::from_millis(500));
        let mut stream = connect(server.addr);
        let started = std::time::Instant::now();
        let mut refused = false;
        for byte in b"GET /health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if stream.write_all(&[*byte]).is_err() {
                refused = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            if started.elapsed() > Duration::from_millis(900) {
                break;
            }
        }
        let _ = refused;
        let response = read_response(&mut stream);
        assert_eq!(response.status, 408);
    }

    fn connection_without_any_request_gets_408(driver) {
        let server = TestServer::start(driver, |c| c.http.header_timeout = Duration::from_millis(200));
        let mut stream = connect(server.addr);
        assert_eq!(read_response(&mut stream).status, 408);
    }

    fn keep_alive_serves_several_requests_and_pipelining(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut stream = connect(server.addr);
        for _ in 0..3 {
            stream.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            assert_eq!(read_response(&mut stream).status, 200);
        }
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut stream).status, 200);
        assert_eq!(read_response(&mut stream).status, 404);
    }

    fn connection_close_is_honoured(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut stream = connect(server.addr);
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let response = read_response(&mut stream);
        assert_eq!(response.header("connection"), Some("close"));
        assert!(closes_within(&mut stream, Duration::from_secs(5)));
    }

    fn http_1_0_closes_after_the_response(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut stream = connect(server.addr);
        stream.write_all(b"GET /health HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut stream).status, 200);
        assert!(closes_within(&mut stream, Duration::from_secs(5)));
    }

    fn idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(driver) {
        let server = TestServer::start(driver, |c| c.http.keepalive_timeout = Duration::from_millis(200));
        let mut stream = connect(server.addr);
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut stream).status, 200);
        assert!(closes_within(&mut stream, Duration::from_secs(5)));
    }

    fn body_over_the_limit_is_413(driver) {
        let server = TestServer::start(driver, |c| c.http.max_body_size = 1024);
        let response = http(server.addr, b"POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n");
        assert_eq!(response.status, 413);
    }

    fn request_bodies_are_consumed_so_keep_alive_continues(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut stream = connect(server.addr);
        stream.write_all(b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!(read_response(&mut stream).status, 404);
        stream
            .write_all(b"POST /nope HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut stream).status, 404);
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut stream).status, 200);
    }

    fn expect_continue_gets_100_before_the_body(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut stream = connect(server.addr);
        stream
            .write_all(b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut stream).status, 100);
        stream.write_all(b"hi").unwrap();
        assert_eq!(read_response(&mut stream).status, 404);
    }

    fn connections_over_the_limit_get_503(driver) {
        let server = TestServer::start(driver, |c| {
            c.limits.max_connections = std::num::NonZeroUsize::new(2).unwrap();
        });
        let _a = WsClient::echo(server.addr);
        let _b = WsClient::echo(server.addr);
        let mut third = connect(server.addr);
        third.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut third).status, 503);
    }

    fn a_bad_request_does_not_disturb_a_websocket_bystander(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut bystander = WsClient::echo(server.addr);
        for bad in [&b"\x16\x03\x01\x02\x00"[..], b"GET / HTTP/1.1\r\n\x00\r\n\r\n", &[b'A'; 20000]] {
            let mut s = connect(server.addr);
            let _ = s.write_all(bad);
            let _ = read_to_close(&mut s);
            bystander.send_text("ok");
            assert_eq!(bystander.read_frame().payload, b"ok");
        }
    }
}
