//! RFC 6455 behaviour over real sockets, on both monoio drivers.

mod support;

use std::time::Duration;

use support::*;

on_both_drivers! {
    fn echo_route_returns_text_as_text_and_binary_as_binary(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        ws.send_text("κόσμε");
        assert_eq!(ws.read_frame(), Frame { fin: true, opcode: 1, payload: "κόσμε".as_bytes().to_vec() });
        ws.send(2, &[0, 1, 2, 255]);
        assert_eq!(ws.read_frame(), Frame { fin: true, opcode: 2, payload: vec![0, 1, 2, 255] });
        let big = vec![b'x'; 300_000];
        ws.send(2, &big);
        assert_eq!(ws.read_frame().payload, big);
    }

    fn echo_route_is_not_served_unless_enabled(driver) {
        let server = TestServer::start(driver, |c| c.echo.enabled = false);
        assert_eq!(get(server.addr, "/ws/echo").status, 404);
    }

    fn upgrade_with_wrong_version_is_426_naming_version_13(driver) {
        let server = TestServer::start(driver, |_| {});
        let response = http(
            server.addr,
            b"GET /ws/echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        );
        assert_eq!(response.status, 426);
        assert_eq!(response.header("sec-websocket-version"), Some("13"));
    }

    fn upgrade_without_key_is_400(driver) {
        let server = TestServer::start(driver, |_| {});
        let response = http(
            server.addr,
            b"GET /ws/echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        );
        assert_eq!(response.status, 400);
    }

    fn frames_sent_with_the_upgrade_request_are_processed(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut stream = connect(server.addr);
        let mut request = b"GET /ws/echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec();
        request.extend(client_frame(true, 1, b"early", true));
        std::io::Write::write_all(&mut stream, &request).unwrap();
        assert_eq!(read_response(&mut stream).status, 101);
        let mut ws = WsClient { stream };
        assert_eq!(ws.read_frame().payload, b"early");
    }

    fn unmasked_client_frame_is_closed_with_1002(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        ws.send_raw(&client_frame(true, 1, b"hi", false));
        assert_eq!(ws.read_close(), Some(1002));
        ws.expect_tcp_close();
    }

    fn reserved_bits_are_closed_with_1002(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        let mut frame = client_frame(true, 1, b"hi", true);
        frame[0] |= 0x40;
        ws.send_raw(&frame);
        assert_eq!(ws.read_close(), Some(1002));
        ws.expect_tcp_close();
    }

    fn reserved_opcode_is_closed_with_1002(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        ws.send_raw(&client_frame(true, 3, b"", true));
        assert_eq!(ws.read_close(), Some(1002));
    }

    fn fragmented_ping_is_closed_with_1002(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        ws.send_raw(&client_frame(false, 9, b"x", true));
        assert_eq!(ws.read_close(), Some(1002));
    }

    fn ping_longer_than_125_bytes_is_closed_with_1002(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        ws.send_raw(&client_frame(true, 9, &[0u8; 126], true));
        assert_eq!(ws.read_close(), Some(1002));
    }

    fn payload_length_with_top_bit_set_is_closed_with_1002(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        ws.send_raw(&[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(ws.read_close(), Some(1002));
    }

    fn message_over_the_limit_is_closed_with_1009_from_its_header(driver) {
        let server = TestServer::start(driver, |c| c.echo.max_message_size = 1024);
        let mut ws = WsClient::echo(server.addr);
        // 2^63 - 1 bytes announced; nothing of it sent.
        ws.send_raw(&[0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
        assert_eq!(ws.read_close(), Some(1009));
        ws.expect_tcp_close();
    }

    fn fragments_over_the_limit_are_closed_with_1009(driver) {
        let server = TestServer::start(driver, |c| c.echo.max_message_size = 1000);
        let mut ws = WsClient::echo(server.addr);
        ws.send_raw(&client_frame(false, 2, &[1; 600], true));
        ws.send_raw(&client_frame(true, 0, &[1; 600], true));
        assert_eq!(ws.read_close(), Some(1009));
    }

    fn invalid_utf8_text_is_closed_with_1007(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        ws.send(1, &[0xce, 0xba, 0xed, 0xa0, 0x80]);
        assert_eq!(ws.read_close(), Some(1007));
        ws.expect_tcp_close();
    }

    fn invalid_utf8_fails_fast_before_the_frame_is_complete(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        let mut payload = vec![0xf4, 0x90, 0x80, 0x80];
        payload.extend(vec![b'a'; 10_000]);
        let frame = client_frame(true, 1, &payload, true);
        ws.send_raw(&frame[..64]);
        assert_eq!(ws.read_close(), Some(1007));
    }

    fn fragmented_text_across_a_character_is_reassembled(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        let text = "κόσμε".as_bytes();
        ws.send_raw(&client_frame(false, 1, &text[..3], true));
        ws.send_raw(&client_frame(true, 9, b"mid", true));
        ws.send_raw(&client_frame(false, 0, &text[3..7], true));
        ws.send_raw(&client_frame(true, 0, &text[7..], true));
        assert_eq!(ws.read_frame(), Frame { fin: true, opcode: 10, payload: b"mid".to_vec() });
        assert_eq!(ws.read_frame(), Frame { fin: true, opcode: 1, payload: text.to_vec() });
    }

    fn continuation_without_a_message_is_closed_with_1002(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        ws.send_raw(&client_frame(true, 0, b"x", true));
        assert_eq!(ws.read_close(), Some(1002));
    }

    fn ping_is_answered_with_a_pong_carrying_its_payload(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        ws.send(9, b"are you there");
        assert_eq!(ws.read_frame(), Frame { fin: true, opcode: 10, payload: b"are you there".to_vec() });
    }

    fn close_is_answered_with_the_same_code_and_the_socket_closed(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        ws.send(8, &[0x0f, 0xa0, b'b', b'y', b'e']); // 4000 "bye"
        assert_eq!(ws.read_close(), Some(4000));
        ws.expect_tcp_close();
    }

    fn empty_close_is_answered_with_an_empty_close(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        ws.send(8, &[]);
        let frame = ws.read_frame();
        assert_eq!((frame.opcode, frame.payload.len()), (8, 0));
        ws.expect_tcp_close();
    }

    fn close_with_an_invalid_code_is_answered_with_1002(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        ws.send(8, &1005u16.to_be_bytes());
        assert_eq!(ws.read_close(), Some(1002));
        let mut ws = WsClient::echo(server.addr);
        ws.send(8, &[0x03]);
        assert_eq!(ws.read_close(), Some(1002));
    }

    fn a_silent_peer_is_pinged_and_then_closed_with_1001(driver) {
        let server = TestServer::start(driver, |c| {
            c.websocket.ping_interval = Duration::from_millis(200);
            c.websocket.idle_timeout = Duration::from_millis(700);
            c.websocket.close_timeout = Duration::from_millis(300);
        });
        let mut ws = WsClient::echo(server.addr);
        assert_eq!(ws.read_frame().opcode, 9, "ping expected");
        assert_eq!(ws.read_close(), Some(1001));
        ws.expect_tcp_close();
    }

    fn a_peer_that_answers_pings_stays_connected(driver) {
        let server = TestServer::start(driver, |c| {
            c.websocket.ping_interval = Duration::from_millis(100);
            c.websocket.idle_timeout = Duration::from_millis(400);
        });
        let mut ws = WsClient::echo(server.addr);
        for _ in 0..6 {
            let ping = ws.read_frame();
            assert_eq!(ping.opcode, 9);
            ws.send(10, &ping.payload);
        }
        ws.send_text("still here");
        loop {
            let frame = ws.read_frame();
            if frame.opcode == 1 {
                assert_eq!(frame.payload, b"still here");
                break;
            }
            assert_eq!(frame.opcode, 9);
            ws.send(10, &frame.payload);
        }
    }

    fn a_peer_that_vanishes_is_cleaned_up(driver) {
        let server = TestServer::start(driver, |_| {});
        let ws = WsClient::echo(server.addr);
        let mut half = WsClient::echo(server.addr);
        half.send_raw(&client_frame(true, 2, &[0; 100], true)[..20]);
        assert!(eventually(Duration::from_secs(5), || shard_connections(server.addr) == 2));
        drop(ws);
        drop(half);
        assert!(eventually(Duration::from_secs(5), || shard_connections(server.addr) == 0));
    }

    fn a_broken_client_does_not_disturb_a_bystander(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut bystander = WsClient::echo(server.addr);
        for (i, bad) in [
            client_frame(true, 1, b"x", false),
            vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
            client_frame(true, 1, &[0xff], true),
            client_frame(true, 0, b"x", true),
        ]
        .iter()
        .enumerate()
        {
            let mut attacker = WsClient::echo(server.addr);
            attacker.send_raw(bad);
            assert!(attacker.read_close().is_some());
            let text = format!("message {i}");
            bystander.send_text(&text);
            assert_eq!(bystander.read_frame().payload, text.as_bytes());
        }
    }

    fn graceful_stop_closes_websockets_with_1001(driver) {
        let mut server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        ws.send_text("hello");
        assert_eq!(ws.read_frame().payload, b"hello");
        server.shutdown();
        let frame = ws.read_frame();
        assert_eq!(frame.close_code(), Some(1001));
        ws.send(8, &1001u16.to_be_bytes());
        ws.expect_tcp_close();
        server.stop();
    }
}
