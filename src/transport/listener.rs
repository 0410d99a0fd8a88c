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
pub async fn accept_loop(listener: TcpListener, ctx: Rc<ShardContext>) {
    loop {
        let accepted = monoio::select! {
            accepted = listener.accept() => accepted,
            _ = ctx.acceptor.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                if ctx.connections.len() >= ctx.max_connections {
                    debug!(shard = ctx.id.0, %peer, "connection limit reached; answering 503");
                    monoio::spawn(refuse(stream));
                    continue;
                }
                let _ = stream.set_nodelay(true);
                monoio::spawn(connection::serve(stream, peer, Rc::clone(&ctx)));
            }
            Err(error) => {
                // EMFILE/ENFILE/ENOBUFS: back off instead of spinning; the queue keeps waiting.
                warn!(shard = ctx.id.0, %error, "accept failed; pausing accepts for 100ms");
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers a connection over the limit with 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    let mut out = BytesMut::new();
    Response::text(503, "server at connection limit")
        .header("retry-after", "1")
        .encode(false, &mut out);
    let _ = monoio::time::timeout(Duration::from_secs(1), stream.write_all(out.freeze())).await;
}
