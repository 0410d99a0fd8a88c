//! One accepted TCP connection: HTTP/1.1 requests with keep-alive, until a request upgrades to
//! WebSocket or the connection closes.
//!
//! Deadlines follow nginx and Kestrel: a request head must arrive completely within
//! `http.header_timeout` (else 408), an idle keep-alive connection is closed silently after
//! `http.keepalive_timeout`, and a body must arrive within the header timeout too. Each failure
//! is answered with exactly one status and the connection is closed.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use tracing::debug;

use super::read_buffer::ReadBuffer;
use super::websocket::{self, WebSocketLimits};
use crate::http::{self, Route};
use crate::protocol::http::{
    BodyKind, ChunkedDecoder, ChunkedStatus, HeadError, HeadLimits, RequestHead, Response,
    parse_head,
};
use crate::protocol::websocket::UpgradeRequest;
use crate::shard::ShardContext;
use crate::shard::connections::{ConnectionHandle, Registration};

/// The `Server` header on every response.
const SERVER: &str = concat!("ringhub/", env!("CARGO_PKG_VERSION"));

/// How the HTTP phase of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpEnd {
    /// The peer closed, or an idle keep-alive connection timed out.
    Closed,
    /// A request was refused with this status and the connection closed.
    Refused(u16),
    /// A request with `Connection: close` (or during shutdown) was answered.
    Done,
    /// The socket failed.
    Io,
}

/// Why waiting for bytes stopped.
enum WaitEnd {
    Data,
    Timeout,
    Shutdown,
    Failed,
}

/// Serves one connection to the end.
pub async fn serve(mut stream: TcpStream, peer: SocketAddr, ctx: Rc<ShardContext>) {
    let registration = Registration::new(Rc::clone(&ctx.connections));
    let connection = registration.handle();
    let end = serve_http(&mut stream, &ctx, connection).await;
    debug!(shard = ctx.id.0, conn = %connection.id, %peer, ?end, "http connection ended");
}

async fn serve_http(
    stream: &mut TcpStream,
    ctx: &ShardContext,
    connection: &ConnectionHandle,
) -> HttpEnd {
    let config = &ctx.config.http;
    let limits = HeadLimits {
        max_request_line: config.max_request_line,
        max_header_block: config.max_header_block,
        max_headers: config.max_headers,
    };
    let mut input = ReadBuffer::new();
    let mut first = true;
    loop {
        // An idle keep-alive connection waits for the next request's first byte.
        if !first && input.is_empty() {
            match wait_readable(stream, connection, config.keepalive_timeout).await {
                WaitEnd::Data => {}
                WaitEnd::Failed => return HttpEnd::Io,
                _ => return HttpEnd::Closed,
            }
        }
        first = false;
        let head_deadline = ctx.clock.now() + config.header_timeout;
        let (head, consumed) = loop {
            match parse_head(input.as_slice(), &limits) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) => {}
                Err(error) => return refuse(stream, error.status(), error.reason()).await,
            }
            let left = head_deadline.saturating_duration_since(ctx.clock.now());
            match wait_readable(stream, connection, left).await {
                WaitEnd::Data => {}
                WaitEnd::Timeout => {
                    return refuse(stream, 408, "request head not received in time").await;
                }
                WaitEnd::Shutdown => return HttpEnd::Closed,
                WaitEnd::Failed => return HttpEnd::Io,
            }
            match input.read_ready(stream, 0).await {
                Ok(0) => return HttpEnd::Closed,
                Ok(_) => {}
                Err(_) => return HttpEnd::Io,
            }
        };
        input.bytes_mut().advance(consumed);

        match http::route(&head, &ctx.config) {
            Route::Echo => return upgrade_to_echo(stream, input, &head, ctx, connection).await,
            route => {
                let body = match read_body(stream, &mut input, &head, ctx, connection).await {
                    Ok(body) => body,
                    Err(end) => return end,
                };
                let response = http::respond(route, &head, body, ctx).header("server", SERVER);
                let keep_alive = head.is_keep_alive() && !connection.signal.is_shutdown();
                let mut out = BytesMut::new();
                if head.method == crate::protocol::http::Method::Head {
                    response.encode_head(keep_alive, &mut out);
                } else {
                    response.encode(keep_alive, &mut out);
                }
                if write(stream, out.freeze(), ctx).await.is_err() {
                    return HttpEnd::Io;
                }
                if !keep_alive {
                    let _ = stream.shutdown().await;
                    return HttpEnd::Done;
                }
                input.release_if_empty();
            }
        }
    }
}

/// Validates the upgrade, answers 101 and runs the echo endpoint.
async fn upgrade_to_echo(
    stream: &mut TcpStream,
    input: ReadBuffer,
    head: &RequestHead,
    ctx: &ShardContext,
    connection: &ConnectionHandle,
) -> HttpEnd {
    let request = match UpgradeRequest::from_head(head) {
        Ok(request) => request,
        Err(error) => {
            let mut out = BytesMut::new();
            error
                .response()
                .header("server", SERVER)
                .encode(false, &mut out);
            let _ = write(stream, out.freeze(), ctx).await;
            let _ = stream.shutdown().await;
            return HttpEnd::Refused(error.status());
        }
    };
    let mut out = BytesMut::new();
    crate::protocol::websocket::handshake::switching_protocols(&request, None)
        .header("server", SERVER)
        .encode(true, &mut out);
    if write(stream, out.freeze(), ctx).await.is_err() {
        return HttpEnd::Io;
    }
    let limits =
        WebSocketLimits::from_config(&ctx.config.websocket, ctx.config.echo.max_message_size);
    let mut app = http::echo::EchoApp;
    let end = websocket::serve(stream, input, &mut app, connection, &limits, &ctx.clock).await;
    debug!(
        shard = ctx.id.0,
        conn = %connection.id,
        code = end.close_code().0,
        reason = end.reason(),
        detail = %end,
        "websocket ended"
    );
    HttpEnd::Done
}

/// Reads the request body the head announces, within `http.max_body_size`.
async fn read_body(
    stream: &mut TcpStream,
    input: &mut ReadBuffer,
    head: &RequestHead,
    ctx: &ShardContext,
    connection: &ConnectionHandle,
) -> Result<Bytes, HttpEnd> {
    let max = ctx.config.http.max_body_size;
    let kind = match head.body_kind() {
        Ok(kind) => kind,
        Err(error) => return Err(refuse_error(stream, &error).await),
    };
    if kind == BodyKind::Empty {
        return Ok(Bytes::new());
    }
    if let BodyKind::Length(len) = kind
        && len > max as u64
    {
        return Err(refuse(stream, 413, "request body too large").await);
    }
    if head.expects_continue() {
        let continue_line = Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n");
        if write(stream, continue_line, ctx).await.is_err() {
            return Err(HttpEnd::Io);
        }
    }
    let deadline = ctx.clock.now() + ctx.config.http.header_timeout;
    let mut chunked = ChunkedDecoder::new(max);
    let mut decoded = BytesMut::new();
    loop {
        match kind {
            BodyKind::Length(len) => {
                // invariant: len <= max_body_size, a usize.
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if input.len() >= len {
                    return Ok(input.bytes_mut().split_to(len).freeze());
                }
            }
            BodyKind::Chunked => match chunked.decode(input.bytes_mut(), &mut decoded) {
                Ok(ChunkedStatus::Done) => return Ok(decoded.freeze()),
                Ok(ChunkedStatus::NeedMore) => {}
                Err(error) => {
                    return Err(refuse(stream, error.status(), "invalid chunked body").await);
                }
            },
            BodyKind::Empty => return Ok(Bytes::new()),
        }
        let left = deadline.saturating_duration_since(ctx.clock.now());
        match wait_readable(stream, connection, left).await {
            WaitEnd::Data => {}
            WaitEnd::Timeout => {
                return Err(refuse(stream, 408, "request body not received in time").await);
            }
            WaitEnd::Shutdown => return Err(HttpEnd::Closed),
            WaitEnd::Failed => return Err(HttpEnd::Io),
        }
        let want = match kind {
            BodyKind::Length(len) => usize::try_from(len).unwrap_or(usize::MAX),
            _ => 0,
        };
        match input.read_ready(stream, want).await {
            Ok(0) => return Err(HttpEnd::Closed),
            Ok(_) => {}
            Err(_) => return Err(HttpEnd::Io),
        }
    }
}

/// Waits until the socket is readable, the deadline passes, or the shard stops.
async fn wait_readable(
    stream: &TcpStream,
    connection: &ConnectionHandle,
    within: Duration,
) -> WaitEnd {
    if within.is_zero() {
        return WaitEnd::Timeout;
    }
    monoio::select! {
        ready = ReadBuffer::readable(stream) => match ready {
            Ok(()) => WaitEnd::Data,
            Err(_) => WaitEnd::Failed,
        },
        _ = connection.signal.wait() => WaitEnd::Shutdown,
        _ = monoio::time::sleep(within) => WaitEnd::Timeout,
    }
}

/// Answers `status` with a short text body and closes.
async fn refuse(stream: &mut TcpStream, status: u16, reason: &str) -> HttpEnd {
    let mut out = BytesMut::new();
    Response::text(status, reason)
        .header("server", SERVER)
        .encode(false, &mut out);
    let _ = monoio::time::timeout(Duration::from_secs(5), stream.write_all(out.freeze())).await;
    let _ = stream.shutdown().await;
    HttpEnd::Refused(status)
}

async fn refuse_error(stream: &mut TcpStream, error: &HeadError) -> HttpEnd {
    refuse(stream, error.status(), error.reason()).await
}

/// Writes `bytes`, bounded by the WebSocket send timeout.
async fn write(stream: &mut TcpStream, bytes: Bytes, ctx: &ShardContext) -> std::io::Result<()> {
    match monoio::time::timeout(ctx.config.websocket.send_timeout, stream.write_all(bytes)).await {
        Ok((result, _)) => result.map(|_| ()),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}
