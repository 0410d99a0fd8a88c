//! The floor binary over real sockets: broadcast, echo, ping and close.

// Test helpers may panic: a failed read or write fails the test that called them.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

/// The floor process, killed when the test ends.
struct Floor {
    child: Child,
    addr: SocketAddr,
}

impl Floor {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringhub-floor"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the floor starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout is piped"))
            .read_line(&mut line)
            .expect("the floor prints a line");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Self { child, addr }
    }

    /// Waits for the counters the floor prints once its last connection is gone.
    fn counters_when_idle(&mut self) -> String {
        let stderr = self.child.stderr.take().expect("stderr is piped");
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains("no connections"))
            .expect("the floor reports when idle")
    }

    fn connect(&self, path: &str) -> TcpStream {
        self.connect_with_receive_buffer(path, None)
    }

    fn connect_with_receive_buffer(&self, path: &str, rcvbuf: Option<usize>) -> TcpStream {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).unwrap();
        }
        socket.connect(&self.addr.into()).expect("connects");
        let mut s = TcpStream::from(socket);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).expect("reads the response head");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        s
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1, 2, 3, 4];
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads one unmasked server frame: (opcode, payload).
fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0; 2];
    s.read_exact(&mut head).expect("reads a frame header");
    assert_eq!(head[0] & 0x80, 0x80, "frames from the floor are final");
    assert_eq!(head[1] & 0x80, 0, "frames from the floor are unmasked");
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0; 2];
            s.read_exact(&mut b).unwrap();
            usize::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0; 8];
            s.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b) as usize
        }
        len => usize::from(len),
    };
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).expect("reads the payload");
    (head[0] & 0x0F, payload)
}

#[test]
fn every_subscriber_gets_each_published_message_and_the_publisher_none() {
    let floor = Floor::start(&[]);
    let mut subscribers: Vec<_> = (0..20).map(|_| floor.connect("/ws/broadcast")).collect();
    let mut publisher = floor.connect("/ws/publish");
    let text = vec![b'a'; 1070];
    let binary: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    publisher.write_all(&client_frame(0x1, &text)).unwrap();
    publisher.write_all(&client_frame(0x2, &binary)).unwrap();
    for s in &mut subscribers {
        assert_eq!(read_frame(s), (0x1, text.clone()));
        assert_eq!(read_frame(s), (0x2, binary.clone()));
    }
    publisher
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut byte = [0];
    assert!(
        publisher.read(&mut byte).is_err(),
        "the publisher is not a subscriber"
    );
}

/// Publishes `count` messages of assorted sizes in one write, so the floor reads several per
/// receive, and checks that every subscriber gets all of them in order.
fn burst_reaches_every_subscriber_in_order(floor: &Floor, count: usize) {
    let mut subscribers: Vec<_> = (0..10).map(|_| floor.connect("/ws/broadcast")).collect();
    let mut publisher = floor.connect("/ws/publish");
    let messages: Vec<Vec<u8>> = (0..count)
        .map(|i| vec![b'0' + (i % 10) as u8; [1070, 5, 300, 40_000][i % 4]])
        .collect();
    let burst: Vec<u8> = messages.iter().flat_map(|m| client_frame(0x2, m)).collect();
    publisher.write_all(&burst).unwrap();
    for s in &mut subscribers {
        for (i, m) in messages.iter().enumerate() {
            assert_eq!(read_frame(s), (0x2, m.clone()), "message {i}");
        }
    }
}

#[test]
fn a_burst_of_messages_reaches_every_subscriber_in_order() {
    burst_reaches_every_subscriber_in_order(&Floor::start(&[]), 200);
}

#[test]
fn with_coalescing_a_burst_still_reaches_every_subscriber_in_order() {
    burst_reaches_every_subscriber_in_order(&Floor::start(&["--coalesce"]), 200);
}

/// A subscriber with a small receive buffer that reads only after the whole burst was published
/// makes the floor's sends come back short; it must still get every byte, in order.
fn late_reader_gets_every_byte_in_order(extra: &[&str]) {
    let mut floor = Floor::start(extra);
    let mut late = floor.connect_with_receive_buffer("/ws/broadcast", Some(4096));
    let mut publisher = floor.connect("/ws/publish");
    let messages: Vec<Vec<u8>> = (0..100u32)
        .map(|i| (0..40_000u32).map(|j| ((i * 7 + j) % 251) as u8).collect())
        .collect();
    let burst: Vec<u8> = messages.iter().flat_map(|m| client_frame(0x2, m)).collect();
    publisher.write_all(&burst).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(read_frame(&mut late), (0x2, m.clone()), "message {i}");
    }
    drop((late, publisher));
    let counters = floor.counters_when_idle();
    assert!(
        !counters.ends_with("short writes 0"),
        "the test must exercise short writes: {counters}"
    );
}

#[test]
fn a_late_reader_gets_every_byte_in_order_across_short_writes() {
    late_reader_gets_every_byte_in_order(&[]);
}

#[test]
fn with_coalescing_a_late_reader_gets_every_byte_in_order_across_short_writes() {
    late_reader_gets_every_byte_in_order(&["--coalesce"]);
}

#[test]
fn echo_returns_messages_answers_pings_and_echoes_the_close_code() {
    let floor = Floor::start(&[]);
    let mut s = floor.connect("/ws/echo");
    s.write_all(&client_frame(0x1, b"hello")).unwrap();
    assert_eq!(read_frame(&mut s), (0x1, b"hello".to_vec()));
    s.write_all(&client_frame(0x9, b"are you there")).unwrap();
    assert_eq!(read_frame(&mut s), (0xA, b"are you there".to_vec()));
    s.write_all(&client_frame(0x8, &4001u16.to_be_bytes()))
        .unwrap();
    assert_eq!(read_frame(&mut s), (0x8, 4001u16.to_be_bytes().to_vec()));
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("the floor closes the TCP connection");
    assert!(rest.is_empty());
}

#[test]
fn an_unmasked_client_frame_is_closed_with_a_protocol_error() {
    let floor = Floor::start(&[]);
    let mut s = floor.connect("/ws/echo");
    s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(read_frame(&mut s), (0x8, 1002u16.to_be_bytes().to_vec()));
}

#[test]
fn a_group_message_reaches_every_member_of_the_senders_first_group_and_no_one_else() {
    let floor = Floor::start(&[]);
    let mut a: Vec<_> = (0..3).map(|_| floor.connect("/ws/group/a")).collect();
    // Member of b and a: sends to b, receives what either group gets.
    let mut both = floor.connect("/ws/group/b,a");
    let mut only_b = floor.connect("/ws/group/b");
    let leaver = floor.connect("/ws/group/a,b");
    drop(leaver);
    a[0].write_all(&client_frame(0x1, b"to a")).unwrap();
    both.write_all(&client_frame(0x2, b"to b")).unwrap();
    for member in &mut a {
        assert_eq!(read_frame(member), (0x1, b"to a".to_vec()));
    }
    // A frame to a arrives before the frame to b, or after it: both come.
    let mut got = [read_frame(&mut both), read_frame(&mut both)];
    got.sort();
    assert_eq!(got, [(0x1, b"to a".to_vec()), (0x2, b"to b".to_vec())]);
    // The first frame b's other member reads is b's: a's message never came to it.
    assert_eq!(read_frame(&mut only_b), (0x2, b"to b".to_vec()));
}

#[test]
fn in_idle_mode_a_held_connection_gets_keepalives_and_its_messages_are_dropped() {
    let floor = Floor::start(&["--idle", "--keepalive-ms", "100"]);
    let mut s = floor.connect("/ws/idle");
    // A client keepalive (the bytes of a JSON hub Ping), split across two writes so the floor
    // keeps a partial frame between its reads of the shared buffer.
    let ping = client_frame(0x1, b"{\"type\":6}\x1e");
    s.write_all(&ping[..5]).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    s.write_all(&ping[5..]).unwrap();
    // Nothing answers it: what arrives are the server's keepalives.
    for _ in 0..3 {
        assert_eq!(read_frame(&mut s), (0x1, b"{\"type\":6}\x1e".to_vec()));
    }
    // The connection still follows the protocol: a ping gets its pong (after any keepalive).
    s.write_all(&client_frame(0x9, b"still there")).unwrap();
    loop {
        match read_frame(&mut s) {
            (0xA, payload) => {
                assert_eq!(payload, b"still there");
                break;
            }
            frame => assert_eq!(frame, (0x1, b"{\"type\":6}\x1e".to_vec())),
        }
    }
}

#[test]
fn in_idle_mode_many_connections_each_get_their_own_keepalives_and_echo() {
    let floor = Floor::start(&["--idle", "--keepalive-ms", "100"]);
    let mut idle: Vec<_> = (0..20).map(|_| floor.connect("/ws/idle")).collect();
    let mut echo = floor.connect("/ws/echo");
    echo.write_all(&client_frame(0x2, &[7; 300])).unwrap();
    assert_eq!(read_frame(&mut echo), (0x2, vec![7; 300]));
    for s in &mut idle {
        assert_eq!(read_frame(s), (0x1, b"{\"type\":6}\x1e".to_vec()));
    }
}
