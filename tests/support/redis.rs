//! A throwaway `redis-server` on a free port, and a blocking RESP client to drive it from
//! tests (`SET`, `PUBLISH`, `CLIENT KILL`, …) independently of the client under test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A reply as this test client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Self>),
}

impl Reply {
    pub fn int(&self) -> i64 {
        match self {
            Self::Int(n) => *n,
            other => panic!("expected an integer, got {other:?}"),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Self::Status(s) | Self::Error(s) => s.clone(),
            Self::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// A connection subscribed to one channel.
pub struct RedisSubscription {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl RedisSubscription {
    /// The next message's payload, or `None` when none arrives within `within`.
    pub fn next(&mut self, within: Duration) -> Option<Vec<u8>> {
        self.stream.set_read_timeout(Some(within)).unwrap();
        match read_reply(&mut self.reader).ok()? {
            Reply::Array(items) => match items.into_iter().nth(2) {
                Some(Reply::Bulk(payload)) => payload,
                _ => None,
            },
            _ => None,
        }
    }
}

/// A `redis-server` child process (from PATH), killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    password: Option<String>,
}

impl RedisServer {
    /// Starts a server without a password.
    pub fn start() -> Self {
        Self::start_with_password(None)
    }

    /// Starts a server with `requirepass` when `password` is given.
    pub fn start_with_password(password: Option<&str>) -> Self {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self {
                child: None,
                port,
                password: password.map(str::to_owned),
            };
            match server.launch() {
                Ok(()) => return server,
                Err(error) => last_error = error,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// `redis://[:password@]127.0.0.1:port`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Kills the server (every connection to it breaks).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        let started = Instant::now();
        // The port may linger for a moment after the kill.
        while let Err(error) = self.launch() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "redis-server did not restart: {error}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn launch(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot run redis-server (is it installed?): {error}"))?;
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("redis-server exited with {status}"));
            }
            if self
                .try_command(0, &["PING"])
                .is_ok_and(|reply| reply == Reply::Status("PONG".into()))
            {
                self.child = Some(child);
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                let _ = child.wait();
                return Err("redis-server did not answer PING within 5 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs one command in database 0 and returns its reply.
    pub fn command(&self, args: &[&str]) -> Reply {
        self.command_in(0, args)
    }

    /// Runs one command in database `db`.
    pub fn command_in(&self, db: u32, args: &[&str]) -> Reply {
        self.try_command(db, args)
            .unwrap_or_else(|error| panic!("redis {args:?}: {error}"))
    }

    fn try_command(&self, db: u32, args: &[&str]) -> std::io::Result<Reply> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        if let Some(password) = &self.password {
            send(&mut stream, &["AUTH", password])?;
            read_reply(&mut reader)?;
        }
        if db != 0 {
            send(&mut stream, &["SELECT", &db.to_string()])?;
            read_reply(&mut reader)?;
        }
        send(&mut stream, args)?;
        read_reply(&mut reader)
    }

    /// `SET key value`.
    pub fn set(&self, key: &str, value: &str) {
        assert_eq!(
            self.command(&["SET", key, value]),
            Reply::Status("OK".into())
        );
    }

    /// `PUBLISH channel message`: how many subscribers got it.
    pub fn publish(&self, channel: &str, message: &str) -> i64 {
        self.command(&["PUBLISH", channel, message]).int()
    }

    /// `PUBLISH channel payload` with a binary payload: how many subscribers got it.
    pub fn publish_bytes(&self, channel: &str, payload: &[u8]) -> i64 {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        if let Some(password) = &self.password {
            send(&mut stream, &["AUTH", password]).unwrap();
            read_reply(&mut reader).unwrap();
        }
        send_bytes(&mut stream, &[b"PUBLISH", channel.as_bytes(), payload]).unwrap();
        read_reply(&mut reader).unwrap().int()
    }

    /// Subscribes to `channel` on a connection of its own; the subscription is confirmed when
    /// this returns.
    pub fn subscribe(&self, channel: &str) -> RedisSubscription {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        if let Some(password) = &self.password {
            send(&mut stream, &["AUTH", password]).unwrap();
            read_reply(&mut reader).unwrap();
        }
        send(&mut stream, &["SUBSCRIBE", channel]).unwrap();
        read_reply(&mut reader).unwrap();
        RedisSubscription { stream, reader }
    }

    /// Freezes the server process (`SIGSTOP`): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws it (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// The ids of the connected pub/sub clients.
    pub fn pubsub_client_ids(&self) -> Vec<String> {
        self.command(&["CLIENT", "LIST", "TYPE", "pubsub"])
            .text()
            .lines()
            .filter_map(|line| {
                line.split(' ')
                    .find_map(|field| field.strip_prefix("id="))
                    .map(str::to_owned)
            })
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

fn send(stream: &mut TcpStream, args: &[&str]) -> std::io::Result<()> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    send_bytes(stream, &args)
}

fn send_bytes(stream: &mut TcpStream, args: &[&[u8]]) -> std::io::Result<()> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    stream.write_all(&out)
}

fn read_reply(reader: &mut BufReader<TcpStream>) -> std::io::Result<Reply> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "redis closed the connection",
        ));
    }
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1);
    let number = || {
        rest.parse::<i64>()
            .map_err(|_| std::io::Error::other(format!("bad RESP line {line:?}")))
    };
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(number()?),
        "$" => match number()? {
            -1 => Reply::Bulk(None),
            len => {
                let mut data = vec![0; len as usize + 2];
                reader.read_exact(&mut data)?;
                data.truncate(len as usize);
                Reply::Bulk(Some(data))
            }
        },
        "*" => {
            let count = number()?;
            let mut items = Vec::new();
            for _ in 0..count.max(0) {
                items.push(read_reply(reader)?);
            }
            Reply::Array(items)
        }
        _ => return Err(std::io::Error::other(format!("bad RESP line {line:?}"))),
    })
}
