//! Per-shard listening sockets and the accept loop.
//!
//! Every shard owns its own `SO_REUSEPORT` socket bound to the same address, so the kernel
//! spreads new connections across shards and accept shares nothing. [`bind_listeners`] creates
//! them all up front, in the process's main thread, so a bind error is reported before any
//! shard starts and port 0 is resolved once for all of them.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use monoio::io::AsyncWriteRentExt;
use monoio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tracing::{debug, warn};

use super::connection;
use crate::protocol::http::Response;
use crate::shard::ShardContext;
use crate::stats::RefusalReason;

/// Pending-connection queue length per shard socket (the kernel caps it at `somaxconn`).
const BACKLOG: i32 = 4096;

/// Creates `count` listening sockets on `addr` with `SO_REUSEPORT`; port 0 becomes one concrete
/// port shared by all.
///
/// # Errors
/// The first socket error (address in use, permission, …).
pub fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let socket = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        // Accepted sockets inherit these on Linux: no Nagle delay (the outbox coalesces frames
        // already) and TCP keepalive, so a peer that vanished without FIN is noticed.
        socket.set_tcp_nodelay(true)?;
        socket.set_tcp_keepalive(
            &TcpKeepalive::new()
                .with_time(Duration::from_secs(60))
                .with_interval(Duration::from_secs(10))
                .with_retries(3),
        )?;
        socket.bind(&bound.into())?;
        socket.listen(BACKLOG)?;
        let listener: std::net::TcpListener = socket.into();
        bound = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Accepts connections until the shard's acceptor signal is raised, spawning one task each.
///
/// Refusals are answered here, before a connection task exists: over the shard's share of
/// `limits.max_connections` 503, over `limits.max_connections_per_ip` 429. Out of file
/// descriptors, the shard gives up the one it keeps in reserve to accept the waiting
/// connection, answers it 503 and closes it, so a client is told to come back instead of
/// waiting in the backlog until it times out.
pub async fn accept_loop(listener: TcpListener, ctx: Rc<ShardContext>) {
    let counters = ctx.stats.shard(usize::from(ctx.id.0));
    let mut reserve = open_reserve();
    let mut exhausted = RateLimitedWarning::default();
    loop {
        let accepted = monoio::select! {
            accepted = listener.accept() => accepted,
            _ = ctx.acceptor.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                if ctx.connections.len() >= ctx.max_connections {
                    debug!(shard = ctx.id.0, %peer, "connection limit reached; answering 503");
                    counters.refused(RefusalReason::Connections);
                    monoio::spawn(refuse(
                        stream,
                        503,
                        "server at connection limit".into(),
                        "1",
                    ));
                    continue;
                }
                let ip = match ctx.per_ip.admit(peer.ip()) {
                    Ok(ip) => ip,
                    Err(refusal) => {
                        debug!(shard = ctx.id.0, %peer, %refusal, "answering 429");
                        counters.refused(RefusalReason::ConnectionsPerIp);
                        monoio::spawn(refuse(stream, 429, refusal.to_string(), "5"));
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                monoio::spawn(connection::serve(stream, peer, ip, Rc::clone(&ctx)));
            }
            Err(error) if is_out_of_fds(&error) => {
                let shed = shed_one(&listener, &mut reserve, &ctx).await;
                if shed {
                    counters.refused(RefusalReason::FileDescriptors);
                }
                if let Some(suppressed) = exhausted.due() {
                    warn!(
                        shard = ctx.id.0,
                        %error,
                        suppressed,
                        reserve = reserve.is_some(),
                        "out of file descriptors: new connections are answered 503 until some close"
                    );
                }
                if !shed {
                    // No reserve to trade (another shard may hold the last descriptor): back
                    // off instead of spinning; the backlog keeps waiting.
                    monoio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Err(error) => {
                // ENOBUFS/ENOMEM and the like: back off instead of spinning.
                warn!(shard = ctx.id.0, %error, "accept failed; pausing accepts for 100ms");
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// `EMFILE` (the process's limit) or `ENFILE` (the system's).
fn is_out_of_fds(error: &io::Error) -> bool {
    use nix::errno::Errno;
    let code = error.raw_os_error();
    code == Some(Errno::EMFILE as i32) || code == Some(Errno::ENFILE as i32)
}

/// The descriptor a shard keeps so it can still accept (and refuse) one connection when the
/// process is out of them.
fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Out of descriptors: closes the reserve, accepts the connection waiting in the backlog,
/// answers it 503 and closes it, then takes the reserve again. `true` when a connection was
/// refused. Without a reserve (it could not be reopened: the descriptor went elsewhere),
/// tries to reopen it and refuses nothing.
async fn shed_one(
    listener: &TcpListener,
    reserve: &mut Option<std::fs::File>,
    ctx: &ShardContext,
) -> bool {
    if reserve.take().is_none() {
        *reserve = open_reserve();
        return false;
    }
    let accepted = monoio::select! {
        accepted = listener.accept() => accepted.ok(),
        _ = monoio::time::sleep(Duration::from_millis(50)) => None,
        _ = ctx.acceptor.wait() => None,
    };
    let refused = accepted.is_some();
    if let Some((stream, peer)) = accepted {
        debug!(shard = ctx.id.0, %peer, "out of file descriptors; answering 503");
        refuse_now(stream, 503, "server out of file descriptors", "1");
    }
    *reserve = open_reserve();
    refused
}

/// Answers a refused connection and closes it at once, without waiting on the runtime (so
/// the descriptor is free again when this returns). A fresh socket's send buffer takes the
/// short response whole.
fn refuse_now(stream: TcpStream, status: u16, text: &str, retry_after: &str) {
    use std::io::{Read, Write};
    let mut out = BytesMut::new();
    Response::text(status, text)
        .header("retry-after", retry_after)
        .encode(false, &mut out);
    let mut stream = crate::sys::into_std_stream(stream);
    if stream.set_nonblocking(true).is_ok() {
        let _ = stream.write_all(&out);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        // Read what the client already sent: closing with unread bytes would reset the
        // connection, and a reset can reach the client before it reads the answer.
        let mut scratch = [0u8; 2048];
        let _ = stream.read(&mut scratch);
    }
}

/// Answers a connection refused before it got a task (`status`, a text body and
/// `Retry-After`) and closes it.
async fn refuse(mut stream: TcpStream, status: u16, text: String, retry_after: &'static str) {
    let mut out = BytesMut::new();
    Response::text(status, &text)
        .header("retry-after", retry_after)
        .encode(false, &mut out);
    let _ = monoio::time::timeout(Duration::from_secs(1), stream.write_all(out.freeze())).await;
}

/// A warning logged at most once per [`Self::INTERVAL`], with how many were held back.
#[derive(Debug, Default)]
struct RateLimitedWarning {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimitedWarning {
    const INTERVAL: Duration = Duration::from_secs(10);

    /// `Some(held back since the last one)` when a warning may be logged now.
    fn due(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Self::INTERVAL)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_out_of_fds_warning_is_logged_once_per_interval_with_the_count_held_back() {
        let mut warning = RateLimitedWarning::default();
        assert_eq!(warning.due(), Some(0));
        assert_eq!(warning.due(), None);
        assert_eq!(warning.due(), None);
        warning.last = Some(std::time::Instant::now() - RateLimitedWarning::INTERVAL);
        assert_eq!(warning.due(), Some(2));
    }

    #[test]
    fn emfile_and_enfile_are_out_of_fds_and_others_are_not() {
        assert!(is_out_of_fds(&io::Error::from_raw_os_error(24)));
        assert!(is_out_of_fds(&io::Error::from_raw_os_error(23)));
        assert!(!is_out_of_fds(&io::Error::from_raw_os_error(105)));
    }
}
