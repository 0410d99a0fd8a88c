//! A bystander: an innocent SignalR connection on the same shard as an attack, with a publisher
//! that sends it a numbered message every few milliseconds. After the attack, [`Bystander::finish`]
//! asserts it received every number, in order, and is still connected and answering.
//!
//! # Configuring the server
//!
//! Call [`configure`] from the `TestServer::start` tweak (with one shard, the harness default):
//! it adds an anonymous hub [`HUB`] at `/hubs/bystander` with `JoinGroup` (`join-group`) and
//! `Echo` (`echo`) methods, and appends the hash of [`SERVER_KEY`] to
//! `auth.server_key_hashes` so the publisher can use the REST API. Nothing else is needed; other
//! hubs, keys and limits are untouched (a test may still tighten timeouts or limits: the
//! bystander pings the server four times a second, so small client timeouts do not end it, and
//! it makes only two invocations, so small invocation rates do not either).
//!
//! ```ignore
//! let server = TestServer::start(driver, |c| {
//!     bystander::configure(c);
//!     c.http.header_timeout = Duration::from_millis(500);
//! });
//! let bystander = Bystander::start(&server);
//! // ... the attack, and its expected outcome ...
//! bystander.finish();
//! ```
//!
//! Messages go through `POST /api/hubs/bystander/groups/bystanders/:send` on one keep-alive
//! connection (a fresh one only when the server closes it), so the REST API staying up during
//! the attack is part of what is checked.

// Test-harness code: panicking on a broken test setup is the right failure.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringhub::config::{Config, HubAuth, HubConfig};

use super::{TestServer, WsClient, client_frame};

/// The server key the publisher uses; [`configure`] allows it.
pub const SERVER_KEY: &str = "the-bystander-publishers-server-key";
/// The bystander hub's name (path `/hubs/bystander`).
pub const HUB: &str = "bystander";
/// The group the bystander joins and the publisher sends to.
pub const GROUP: &str = "bystanders";
/// The time between two published messages.
pub const INTERVAL: Duration = Duration::from_millis(10);

const RS: u8 = 0x1e;

/// Adds the bystander hub and the publisher's server key to `config`.
pub fn configure(config: &mut Config) {
    config.hubs.push(HubConfig {
        name: HUB.into(),
        path: format!("/hubs/{HUB}"),
        auth: HubAuth::Anonymous,
        max_message_size: None,
        methods: vec![
            ("JoinGroup".into(), "join-group".into()),
            ("Echo".into(), "echo".into()),
        ],
        protocols: vec!["json".into()],
        join_on_connect: Vec::new(),
        redis_name: None,
        events_url: None,
    });
    config
        .auth
        .server_key_hashes
        .push(ringhub::auth::keys::hash_key(SERVER_KEY));
}

/// What the bystander's reader saw, in order.
#[derive(Debug)]
enum Seen {
    /// A published message's sequence number.
    Sequence(u64),
    /// Any other hub message (completions, close), as JSON.
    Other(serde_json::Value),
    /// The connection ended (EOF, error or a WebSocket close), with what is known.
    Ended(String),
}

/// A running bystander; see the module documentation.
pub struct Bystander {
    writer: TcpStream,
    seen: mpsc::Receiver<Seen>,
    stop: Arc<AtomicBool>,
    /// How many messages the publisher has had accepted (202) so far.
    published: Arc<AtomicU64>,
    publisher: Option<JoinHandle<Result<u64, String>>>,
    reader: Option<JoinHandle<()>>,
    pinger: Option<JoinHandle<()>>,
    /// The next sequence number expected.
    next: u64,
}

impl Bystander {
    /// Connects the bystander to `server`, joins it to [`GROUP`] and starts publishing.
    pub fn start(server: &TestServer) -> Self {
        Self::start_at(server.addr)
    }

    /// [`Bystander::start`] for a server known only by its address.
    pub fn start_at(addr: SocketAddr) -> Self {
        let mut ws = WsClient::connect(addr, &format!("/hubs/{HUB}"));
        ws.send_text("{\"protocol\":\"json\",\"version\":1}\u{1e}");
        assert_eq!(
            ws.read_frame().payload,
            b"{}\x1e",
            "the bystander's handshake"
        );
        ws.stream.set_read_timeout(None).unwrap();
        let writer = ws.stream.try_clone().unwrap();
        let (sender, seen) = mpsc::channel();
        let reader = std::thread::spawn(move || read_loop(ws, &sender));
        let stop = Arc::new(AtomicBool::new(false));
        let published = Arc::new(AtomicU64::new(0));
        let mut bystander = Self {
            writer,
            seen,
            stop: Arc::clone(&stop),
            published: Arc::clone(&published),
            publisher: None,
            reader: Some(reader),
            pinger: None,
            next: 0,
        };
        bystander.send_invocation("join", "JoinGroup", &format!("\"{GROUP}\""));
        let joined = bystander.next_other("the JoinGroup completion");
        assert_eq!(
            joined,
            serde_json::json!({"type": 3, "invocationId": "join"}),
            "the bystander could not join its group"
        );
        let mut pings = bystander.writer.try_clone().unwrap();
        let pinger_stop = Arc::clone(&stop);
        bystander.pinger = Some(std::thread::spawn(move || {
            let ping = client_frame(true, 1, b"{\"type\":6}\x1e", true);
            while !pinger_stop.load(Ordering::Relaxed) {
                // A failed write shows up as the reader's Ended.
                if pings.write_all(&ping).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }));
        bystander.publisher = Some(std::thread::spawn(move || {
            publish_loop(addr, &stop, &published)
        }));
        // The first message proves the path before the attack starts.
        let deadline = Instant::now() + Duration::from_secs(10);
        bystander.expect_sequence(deadline);
        bystander
    }

    /// Waits until every message published so far has arrived, in order; publishing goes on.
    /// Panics (failing the test) if the publisher has stopped on an error.
    pub fn check(&mut self) {
        if self.publisher.as_ref().is_some_and(JoinHandle::is_finished) {
            let result = self.publisher.take().unwrap().join();
            panic!("the bystander's publisher stopped: {result:?}");
        }
        // Whatever was published before now arrives within a few intervals on a healthy server;
        // the wait is generous for a loaded test machine.
        let deadline = Instant::now() + Duration::from_secs(10);
        let target = self.published.load(Ordering::Relaxed);
        while self.next < target {
            self.expect_sequence(deadline);
        }
    }

    /// Stops publishing and asserts the bystander received every message, in order, and still
    /// answers an invocation.
    pub fn finish(mut self) {
        // A few messages published after the attack prove the path still works, however fast
        // the attack was.
        let after = self.published.load(Ordering::Relaxed) + 3;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.published.load(Ordering::Relaxed) < after
            && !self.publisher.as_ref().is_some_and(JoinHandle::is_finished)
        {
            assert!(
                Instant::now() < deadline,
                "the publisher stalled after the attack"
            );
            std::thread::sleep(INTERVAL);
        }
        self.stop.store(true, Ordering::Relaxed);
        let published = self
            .publisher
            .take()
            .unwrap()
            .join()
            .unwrap_or_else(|_| Err("it panicked".to_owned()))
            .unwrap_or_else(|e| panic!("the bystander's publisher failed: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.next < published {
            self.expect_sequence(deadline);
        }
        self.pinger.take().unwrap().join().unwrap();
        self.send_invocation("alive", "Echo", "\"still here\"");
        let reply = self.next_other("the Echo completion");
        assert_eq!(
            reply,
            serde_json::json!({"type": 3, "invocationId": "alive", "result": "still here"}),
            "the bystander's connection no longer answers"
        );
        // Leave: the reader thread ends when the server closes the socket.
        let _ = self
            .writer
            .write_all(&client_frame(true, 8, &1000u16.to_be_bytes(), true));
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
        let _ = self.reader.take().unwrap().join();
    }

    fn send_invocation(&mut self, id: &str, target: &str, arguments: &str) {
        let text = format!(
            "{{\"type\":1,\"invocationId\":\"{id}\",\"target\":\"{target}\",\"arguments\":[{arguments}]}}\u{1e}"
        );
        self.writer
            .write_all(&client_frame(true, 1, text.as_bytes(), true))
            .unwrap();
    }

    /// The next message that is not a sequence number; sequence numbers in between must be the
    /// expected ones.
    fn next_other(&mut self, what: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.recv(deadline, what) {
                Seen::Sequence(n) => self.accept(n),
                Seen::Other(value) => return value,
                Seen::Ended(why) => {
                    panic!("the bystander was disconnected ({why}) awaiting {what}")
                }
            }
        }
    }

    fn expect_sequence(&mut self, deadline: Instant) {
        match self.recv(deadline, "a published message") {
            Seen::Sequence(n) => self.accept(n),
            Seen::Other(value) => panic!("the bystander got an unexpected message: {value}"),
            Seen::Ended(why) => panic!(
                "the bystander was disconnected ({why}) after message {} of the publisher's",
                self.next
            ),
        }
    }

    fn accept(&mut self, n: u64) {
        assert_eq!(
            n, self.next,
            "the bystander missed or reordered a message: expected {}, got {n}",
            self.next
        );
        self.next += 1;
    }

    fn recv(&mut self, deadline: Instant, what: &str) -> Seen {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.seen.recv_timeout(left) {
            Ok(seen) => seen,
            Err(_) => panic!(
                "the bystander waited in vain for {what} (received up to {})",
                self.next
            ),
        }
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
    }
}

/// Reads the bystander's frames and reports what they hold until the connection ends.
fn read_loop(mut ws: WsClient, seen: &mpsc::Sender<Seen>) {
    let mut head = [0u8; 2];
    loop {
        // `read_frame` panics on EOF; read the header here so an end is reported instead.
        if let Err(e) = std::io::Read::read_exact(&mut ws.stream, &mut head) {
            let _ = seen.send(Seen::Ended(format!("reading a frame: {e}")));
            return;
        }
        let frame = match read_rest_of_frame(&mut ws.stream, head) {
            Ok(frame) => frame,
            Err(e) => {
                let _ = seen.send(Seen::Ended(format!("reading a frame: {e}")));
                return;
            }
        };
        if frame.opcode == 8 {
            let _ = seen.send(Seen::Ended(format!(
                "a WebSocket close, code {:?}",
                frame.close_code()
            )));
            return;
        }
        for record in frame.payload.split(|b| *b == RS).filter(|r| !r.is_empty()) {
            let value: serde_json::Value = match serde_json::from_slice(record) {
                Ok(value) => value,
                Err(e) => {
                    let _ = seen.send(Seen::Ended(format!("not JSON ({e}): {record:?}")));
                    return;
                }
            };
            let message = match value["type"].as_u64() {
                Some(6) => continue,
                Some(1) if value["target"] == "Seq" => match value["arguments"][0].as_u64() {
                    Some(n) => Seen::Sequence(n),
                    None => Seen::Other(value),
                },
                Some(7) => {
                    let _ = seen.send(Seen::Ended(format!("a SignalR close: {value}")));
                    return;
                }
                _ => Seen::Other(value),
            };
            if seen.send(message).is_err() {
                return;
            }
        }
    }
}

/// The rest of a server frame whose two header bytes are `head`.
fn read_rest_of_frame(stream: &mut TcpStream, head: [u8; 2]) -> std::io::Result<super::Frame> {
    use std::io::Read;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).unwrap()];
    stream.read_exact(&mut payload)?;
    Ok(super::Frame {
        fin: head[0] & 0x80 != 0,
        opcode: head[0] & 0x0f,
        payload,
    })
}

/// Publishes 0, 1, 2, ... every [`INTERVAL`] until `stop`; returns how many were accepted.
fn publish_loop(addr: SocketAddr, stop: &AtomicBool, published: &AtomicU64) -> Result<u64, String> {
    let mut stream: Option<TcpStream> = None;
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let body = format!("{{\"target\":\"Seq\",\"arguments\":[{sent}]}}");
        let request = format!(
            "POST /api/hubs/{HUB}/groups/{GROUP}/:send HTTP/1.1\r\nHost: t\r\n\
             Authorization: Bearer {SERVER_KEY}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let status = match publish_once(&mut stream, addr, &request) {
            Ok(status) => status,
            // The server may close an idle or long-lived keep-alive connection: retry once on a
            // fresh one; a second failure is the REST API failing under the attack.
            Err(_) => {
                stream = None;
                publish_once(&mut stream, addr, &request)
                    .map_err(|e| format!("publishing message {sent}: {e}"))?
            }
        };
        if status != 202 {
            return Err(format!("publishing message {sent} was answered {status}"));
        }
        sent += 1;
        published.store(sent, Ordering::Relaxed);
        std::thread::sleep(INTERVAL);
    }
    Ok(sent)
}

fn publish_once(
    stream: &mut Option<TcpStream>,
    addr: SocketAddr,
    request: &str,
) -> std::io::Result<u16> {
    let connection = match stream {
        Some(connection) => connection,
        None => {
            let fresh = TcpStream::connect(addr)?;
            fresh.set_read_timeout(Some(Duration::from_secs(10)))?;
            fresh.set_nodelay(true)?;
            stream.insert(fresh)
        }
    };
    connection.write_all(request.as_bytes())?;
    let (status, close) = read_status(connection)?;
    if close {
        *stream = None;
    }
    Ok(status)
}

/// Reads one response and returns its status and whether the server will close; unlike the
/// harness's `read_response` it reports a closed connection as an error instead of panicking.
fn read_status(stream: &mut TcpStream) -> std::io::Result<(u16, bool)> {
    use std::io::Read;
    let broken = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).map_err(|_| broken("a response head that is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| broken("no status"))?;
    let mut length = 0usize;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .trim()
                .parse()
                .map_err(|_| broken("a bad content-length"))?;
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.trim().eq_ignore_ascii_case("close");
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok((status, close))
}
