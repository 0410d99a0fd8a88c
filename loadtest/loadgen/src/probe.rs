//! What the load generator reads about the server and the machine: `/proc/PID/stat`
//! utime+stime, VmRSS, `smaps_rollup` Pss and `/proc/PID/io`, `/proc/stat` softirq ticks,
//! `/proc/meminfo` Slab, and Redis `INFO commandstats`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::Serialize;

use crate::clock::now_ns;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks() -> f64 {
    crate::os::clock_ticks()
}

/// One process at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcSample {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// Pss from smaps_rollup, KiB.
    pub pss_kib: u64,
    /// Read syscalls so far (`/proc/PID/io` syscr).
    pub syscr: u64,
    /// Write syscalls so far (syscw).
    pub syscw: u64,
}

impl ProcSample {
    /// Reads `pid`'s figures; `None` if the process is gone.
    pub fn take(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may contain spaces) start at field 3.
        let after = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        Some(Self {
            cpu_ticks: utime + stime,
            rss_kib: field_kib(&status, "VmRSS:"),
            pss_kib: field_kib(&rollup, "Pss:"),
            syscr: field_kib(&io, "syscr:"),
            syscw: field_kib(&io, "syscw:"),
        })
    }
}

/// Machine-wide figures at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SystemSample {
    /// softirq ticks over all CPUs (`/proc/stat`).
    pub softirq_ticks: u64,
    /// Slab, KiB (`/proc/meminfo`).
    pub slab_kib: u64,
}

impl SystemSample {
    /// Reads the figures (zeros where unreadable).
    pub fn take() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let softirq_ticks = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .and_then(|l| l.split_whitespace().nth(7))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            softirq_ticks,
            slab_kib: field_kib(&meminfo, "Slab:"),
        }
    }
}

fn field_kib(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l[name.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Everything sampled at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// When (monotonic ns).
    pub at_ns: u64,
    /// The server under test.
    pub server: Option<ProcSample>,
    /// The publishing instance (S6), if given.
    pub publish_server: Option<ProcSample>,
    /// Machine-wide figures.
    pub system: SystemSample,
    /// Redis command calls by command (S6).
    pub redis: Option<BTreeMap<String, u64>>,
}

/// Reads `INFO commandstats` and returns `calls` per command.
pub fn redis_commandstats(addr: &str) -> std::io::Result<BTreeMap<String, u64>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"INFO commandstats\r\n")?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
        if let Some(body_len) = bulk_len(&reply)
            && reply.len() >= body_len
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(&reply);
    Ok(parse_commandstats(&text))
}

/// The total length of a complete RESP bulk reply, once its header is in.
fn bulk_len(reply: &[u8]) -> Option<usize> {
    let end = memchr::memmem::find(reply, b"\r\n")?;
    let len: usize = std::str::from_utf8(reply.get(1..end)?).ok()?.parse().ok()?;
    Some(end + 2 + len + 2)
}

/// `cmdstat_publish:calls=12,usec=…` lines → `{"publish": 12}`.
pub fn parse_commandstats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .trim()
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// How many file descriptors `pid` has open (entries of `/proc/PID/fd`); `None` if the
/// directory cannot be read.
pub fn count_fds(pid: u32) -> Option<u64> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(entries.count() as u64)
}

/// `GET path` from `addr` (HTTP/1.1, `Connection: close`, 2 s timeouts) and the sum of every
/// sample of the Prometheus gauge `name` in the answer; `None` on any failure.
pub fn scrape_gauge(addr: SocketAddr, path: &str, name: &str) -> Option<u64> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).ok()?;
    let text = String::from_utf8_lossy(&reply);
    let body = text.split_once("\r\n\r\n")?.1;
    gauge_sum(body, name)
}

/// The sum of every sample of `name` in a Prometheus text exposition; `None` if it has none.
pub fn gauge_sum(text: &str, name: &str) -> Option<u64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.as_bytes().first() {
            Some(b'{') => rest.rsplit_once('}').map(|(_, v)| v),
            Some(b' ') => Some(rest),
            _ => None, // another metric whose name starts with `name`
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            found = true;
            sum += v;
        }
    }
    found.then_some(sum.max(0.0) as u64)
}

/// Takes a snapshot of whatever is configured.
pub fn snapshot(server: Option<u32>, publish_server: Option<u32>, redis: Option<&str>) -> Snapshot {
    Snapshot {
        at_ns: now_ns(),
        server: server.and_then(ProcSample::take),
        publish_server: publish_server.and_then(ProcSample::take),
        system: SystemSample::take(),
        redis: redis.and_then(|addr| redis_commandstats(addr).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_sampled() {
        let sample = ProcSample::take(std::process::id()).expect("own /proc entry");
        assert!(sample.rss_kib > 0);
    }

    #[test]
    fn this_process_has_open_fds() {
        assert!(count_fds(std::process::id()).unwrap() >= 3);
    }

    #[test]
    fn a_gauge_is_summed_over_its_labels_and_other_metrics_are_ignored() {
        let text = "# HELP g_open Open.\n# TYPE g_open gauge\n\
                    g_open{hub=\"a\",shard=\"0\"} 3\ng_open{hub=\"b\",shard=\"1\"} 4\n\
                    g_opened_total{hub=\"a\"} 99\ng_open_bytes 5\n";
        assert_eq!(gauge_sum(text, "g_open"), Some(7));
        assert_eq!(gauge_sum("g_open 2\n", "g_open"), Some(2));
        assert_eq!(gauge_sum("other 2\n", "g_open"), None);
    }

    #[test]
    fn commandstats_lines_give_calls_per_command() {
        let text = "$120\r\n# Commandstats\r\ncmdstat_publish:calls=12,usec=40,usec_per_call=3.33\r\n\
                    cmdstat_subscribe:calls=3,usec=9\r\n\r\n";
        let stats = parse_commandstats(text);
        assert_eq!(stats.get("publish"), Some(&12));
        assert_eq!(stats.get("subscribe"), Some(&3));
        assert_eq!(stats.len(), 2);
    }
}
