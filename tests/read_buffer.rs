//! Reads through the shard's shared buffer (`transport::read_buffer`), over real sockets on both
//! monoio drivers: frames that arrive in pieces, many connections reading in turns, large
//! frames read straight into their connection's buffer, and a peer that stops mid-frame.

mod support;

use std::io::Write;
use std::time::Duration;

use support::*;

on_both_drivers! {
    fn a_frame_arriving_a_byte_at_a_time_is_echoed_whole(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        let frame = client_frame(true, 1, b"one byte per read", true);
        for byte in &frame {
            ws.send_raw(std::slice::from_ref(byte));
            ws.stream.flush().unwrap();
        }
        assert_eq!(ws.read_frame().payload, b"one byte per read");
        // The connection is still in step after the partial frame was completed.
        ws.send_text("next");
        assert_eq!(ws.read_frame().payload, b"next");
    }

    fn connections_reading_in_turns_each_keep_their_own_partial_frame(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut clients: Vec<WsClient> = (0..20).map(|_| WsClient::echo(server.addr)).collect();
        let frames: Vec<Vec<u8>> = (0..clients.len())
            .map(|i| client_frame(true, 2, &vec![i as u8; 100 + i * 37], true))
            .collect();
        // Every connection gets the first part of its frame, then the rest, in reverse order,
        // so each read of the shared buffer belongs to a different connection than the last.
        for (ws, frame) in clients.iter_mut().zip(&frames) {
            ws.send_raw(&frame[..frame.len() / 2]);
        }
        for (ws, frame) in clients.iter_mut().zip(&frames).rev() {
            ws.send_raw(&frame[frame.len() / 2..]);
        }
        for (i, ws) in clients.iter_mut().enumerate() {
            assert_eq!(ws.read_frame().payload, vec![i as u8; 100 + i * 37]);
        }
    }

    fn several_frames_in_one_write_are_all_echoed_in_order(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        let mut burst = Vec::new();
        for i in 0..200u32 {
            burst.extend(client_frame(true, 1, format!("message {i}").as_bytes(), true));
        }
        ws.send_raw(&burst);
        for i in 0..200u32 {
            assert_eq!(ws.read_frame().payload, format!("message {i}").as_bytes());
        }
    }

    fn a_large_frame_behind_small_ones_arrives_in_pieces_and_is_echoed_whole(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        let large: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut bytes = client_frame(true, 1, b"before", true);
        bytes.extend(client_frame(true, 2, &large, true));
        bytes.extend(client_frame(true, 1, b"after", true));
        for piece in bytes.chunks(7_001) {
            ws.send_raw(piece);
            ws.stream.flush().unwrap();
        }
        assert_eq!(ws.read_frame().payload, b"before");
        assert_eq!(ws.read_frame().payload, large);
        assert_eq!(ws.read_frame().payload, b"after");
    }

    fn a_peer_that_stops_in_the_middle_of_a_frame_is_let_go(driver) {
        let server = TestServer::start(driver, |_| {});
        let mut ws = WsClient::echo(server.addr);
        let small = client_frame(true, 1, b"cut short", true);
        let large = client_frame(true, 2, &vec![7; 50_000], true);
        ws.send_raw(&small[..5]);
        let mut other = WsClient::echo(server.addr);
        other.send_raw(&large[..9_000]);
        ws.stream.shutdown(std::net::Shutdown::Write).unwrap();
        other.stream.shutdown(std::net::Shutdown::Write).unwrap();
        ws.expect_tcp_close();
        other.expect_tcp_close();
        assert!(eventually(Duration::from_secs(10), || shard_connections(server.addr) == 0));
    }
}
