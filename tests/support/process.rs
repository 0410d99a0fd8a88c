//! The `ringhub` binary as a child process: started on a free port, its log collected, killed
//! on drop. For tests that need what only a separate process has: signals, exit codes, its own
//! open-file limit, its own RSS.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ringhub");

/// A running `ringhub` process whose log lines are collected.
pub struct ServerProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Log lines read so far (by [`ServerProcess::wait_for`] and [`ServerProcess::wait_exit`]).
    pub seen: Vec<String>,
    /// Where it listens (from its `listening` log line).
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// The binary with `--listen 127.0.0.1:0`, no core pinning and `info` logs; add arguments
    /// and environment, then [`ServerProcess::spawn`] it.
    pub fn command() -> Command {
        let mut command = Command::new(BIN);
        Self::defaults(&mut command);
        command
    }

    /// The same, run under `prlimit --nofile=N:N` (an open-file limit of its own).
    pub fn command_with_nofile(nofile: u32) -> Command {
        let mut command = Command::new("prlimit");
        command.arg(format!("--nofile={nofile}:{nofile}")).arg(BIN);
        Self::defaults(&mut command);
        command
    }

    fn defaults(command: &mut Command) {
        command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--set",
                "runtime.pin_cores=false",
            ])
            .env("RINGHUB_LOG", "info");
    }

    /// Spawns `command` and waits for its `listening` line. A config file's `listen` is
    /// overridden by the `--listen` flag [`ServerProcess::command`] adds.
    pub fn spawn(mut command: Command) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn ringhub");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        // Drains the log for as long as the process runs, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Self {
            child,
            lines,
            seen: Vec::new(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let line = process.wait_for("listening");
        // `addr=…` in text logs, `"addr":"…"` in JSON ones.
        process.addr = line
            .split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .or_else(|| {
                line.split("\"addr\":\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
            })
            .expect("addr in the listening line")
            .parse()
            .unwrap();
        process
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to 10 s for a log line containing `needle`.
    pub fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no log line with {needle:?}; saw {:#?}", self.seen));
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Sends a signal by name (`TERM`, `HUP`, …).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits up to 20 s for the exit and returns the exit code, collecting the rest of the log.
    pub fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "ringhub did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A `/proc/PID/status` field in bytes (`VmRSS`, `VmHWM`).
    pub fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
