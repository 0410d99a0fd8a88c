//! One accepted TCP connection: HTTP/1.1 requests with keep-alive, until a request upgrades to
//! WebSocket or the connection closes.
//!
//! Deadlines follow nginx and Kestrel: a request head must arrive completely within
//! `http.header_timeout` (else 408), an idle keep-alive connection is closed silently after
//! `http.keepalive_timeout`, and a body must arrive within the header timeout too. Each failure
//! is answered with exactly one status and the connection is closed.
//!
//! Memory: the HTTP phase runs in its own heap allocation ([`serve`] boxes it), which is freed
//! when the connection upgrades, so a long-lived WebSocket task carries only the WebSocket
//! loop's state.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use quanta::Instant;
use tracing::debug;

use super::ConnectionEnd;
use super::deadline::within;
use super::read_buffer::ReadBuffer;
use super::websocket;
use crate::auth::Principal;
use crate::http::{self, Route};
use crate::hub::access::{Caller, admit, unix_now};
use crate::hub::endpoint::{HubEndpoint, end_session, join_user, pin_group};
use crate::hub::identity::{TokenError, home_shard, hub_tag, new_connection_id, unix_millis};
use crate::hub::quota::QuotaPermit;
use crate::hub::session::Session;
use crate::hub::{Action, HubDefinition};
use crate::protocol::http::{
    BodyKind, ChunkedDecoder, ChunkedStatus, HeadLimits, Method, RequestHead, Response, parse_head,
};
use crate::protocol::query::Query;
use crate::protocol::websocket::UpgradeRequest;
use crate::protocol::websocket::handshake::switching_protocols;
use crate::shard::ShardContext;
use crate::shard::ShardId;
use crate::shard::claims::{Admission, ClaimError};
use crate::shard::connections::{ConnectionHandle, Registration, Signal};
use crate::shard::inbox::{Handoff, ShardMessage};
use crate::shard::sessions::SessionKey;
use crate::transport::per_ip::IpPermit;

/// The `Server` header on every response.
const SERVER: &str = concat!("ringhub/", env!("CARGO_PKG_VERSION"));

/// How long a refusal may take to write before the connection is dropped anyway.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the HTTP phase of a connection ended.
#[derive(Debug)]
enum HttpEnd {
    /// The peer closed, or an idle keep-alive connection timed out.
    Closed,
    /// A request was refused with this status and the connection closed.
    Refused(u16),
    /// A request with `Connection: close` (or during shutdown) was answered.
    Done,
    /// The socket failed.
    Io,
    /// The connection was upgraded to the echo endpoint (101 sent); the bytes that followed
    /// the request are the start of the WebSocket stream.
    Upgraded(ReadBuffer),
    /// The connection was upgraded to a hub (101 sent). Boxed: it is moved into the
    /// connection's long-lived task, whose size every idle connection pays.
    UpgradedHub(Box<HubUpgrade>),
    /// The upgrade presented a token issued by another shard: move the socket there.
    Handoff {
        /// The token's home shard.
        home: ShardId,
        /// The upgrade request.
        head: RequestHead,
        /// Bytes that followed it.
        input: ReadBuffer,
    },
}

/// A SignalR connection between its 101 and its session.
#[derive(Debug)]
struct HubUpgrade {
    input: ReadBuffer,
    hub: Rc<HubDefinition>,
    session: SessionStart,
}

/// A verified connection token on its home shard, and what it does here.
#[derive(Debug)]
struct Presented {
    /// The connection id it carries.
    connection_id: String,
    /// Negotiate agreed to stateful reconnect.
    stateful: bool,
    /// The token's expiry on the shard's clock (how long its spent entry lasts).
    expires: Instant,
    /// A new connection, or a parked session to resume.
    admission: Admission,
}

/// Why a presented token is not connected.
#[derive(Debug, Clone, Copy)]
enum TokenRefusal {
    /// 404 `No Connection with that ID` (the reason labels the metric).
    NotFound(TokenError),
    /// 409: a WebSocket already uses it.
    InUse,
}

/// Whether the WebSocket starts a session or continues a parked one.
#[derive(Debug)]
enum SessionStart {
    /// A new session.
    New {
        connection_id: String,
        stateful: bool,
        request_headers: Vec<(String, String)>,
        caller: Caller,
        /// Its place in the connection quotas, held while the session lives.
        permit: QuotaPermit,
        /// When the token it was started with expires (`None`: no token).
        token_expires: Option<Instant>,
    },
    /// Stateful reconnect: the session that was waiting for this socket.
    Resume(SessionKey),
}

/// How long a reconnecting stateful client waits for its old socket to be noticed as dead.
const RECONNECT_GRACE: Duration = Duration::from_secs(1);

/// Why waiting for bytes stopped.
enum WaitEnd {
    Data,
    Timeout,
    Shutdown,
    Failed,
}

/// Serves one connection to the end; `ip` is its place in its address's count (given back
/// when the connection ends).
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    ip: Option<IpPermit>,
    ctx: Rc<ShardContext>,
) {
    let mut registration = Registration::new(Rc::clone(&ctx.connections));
    registration.hold_ip(ip.map(IpPermit::into_slot));
    let end = Box::pin(serve_http(&mut stream, peer, &ctx, registration.handle())).await;
    match end {
        HttpEnd::Handoff { home, head, input } => {
            // The home shard holds the address's place from now on.
            let ip = registration.take_ip();
            drop(registration);
            let handoff = Handoff {
                stream: crate::sys::into_std_stream(stream),
                peer,
                ip,
                head,
                input: input.into_inner(),
            };
            if ctx
                .peers
                .send(home, ShardMessage::Adopt(Box::new(handoff)))
                .is_err()
            {
                debug!(
                    shard = ctx.id.0,
                    home = home.0,
                    "home shard stopped; dropping connection"
                );
            }
        }
        end => finish(stream, registration, end, ctx, peer),
    }
}

/// Serves a connection another shard accepted, whose token was issued here.
pub async fn adopt(handoff: Box<Handoff>, ctx: Rc<ShardContext>) {
    let handoff = *handoff;
    let Ok(mut stream) = TcpStream::from_std(handoff.stream) else {
        return;
    };
    let mut registration = Registration::new(Rc::clone(&ctx.connections));
    registration.hold_ip(handoff.ip);
    let connection = registration.handle();
    let end = match http::route(&handoff.head, &ctx.config, &ctx.hubs) {
        Route::Hub(hub) => {
            let input = ReadBuffer::with_bytes(handoff.input);
            Box::pin(upgrade_hub(
                &mut stream,
                &handoff.head,
                input,
                hub,
                &ctx,
                connection,
            ))
            .await
        }
        _ => HttpEnd::Closed,
    };
    finish(stream, registration, end, ctx, handoff.peer);
}

/// Runs what the HTTP phase led to, and logs how the connection ended.
///
/// An upgraded connection continues in a task of its own, sized for its endpoint alone: the
/// HTTP task (and its state) is freed, so a long-lived WebSocket carries nothing of it.
fn finish(
    stream: TcpStream,
    registration: Registration,
    end: HttpEnd,
    ctx: Rc<ShardContext>,
    peer: SocketAddr,
) {
    match end {
        // The tasks are the async fns themselves, not blocks around them: a block would hold
        // its captures and the fn's arguments side by side for the connection's lifetime.
        HttpEnd::Upgraded(input) => {
            monoio::spawn(run_echo(stream, input, ctx, registration));
        }
        HttpEnd::UpgradedHub(upgrade) => {
            monoio::spawn(run_hub(stream, *upgrade, ctx, registration));
        }
        HttpEnd::Refused(status) => {
            let conn = registration.handle().id;
            debug!(shard = ctx.id.0, %conn, %peer, status, "request refused");
        }
        end => {
            let conn = registration.handle().id;
            debug!(shard = ctx.id.0, %conn, %peer, ?end, "http connection ended");
        }
    }
}

async fn serve_http(
    stream: &mut TcpStream,
    peer: SocketAddr,
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
            let idle_until = ctx.timers.now() + config.keepalive_timeout;
            match wait_readable(stream, ctx, connection, idle_until).await {
                WaitEnd::Data => {}
                WaitEnd::Failed => return HttpEnd::Io,
                WaitEnd::Timeout | WaitEnd::Shutdown => return HttpEnd::Closed,
            }
        }
        first = false;
        let head_deadline = ctx.timers.now() + config.header_timeout;
        let (head, consumed) = loop {
            match parse_head(input.as_slice(), &limits) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) => {}
                Err(error) => {
                    return refuse(stream, ctx, connection, error.status(), error.reason()).await;
                }
            }
            match wait_readable(stream, ctx, connection, head_deadline).await {
                WaitEnd::Data => {}
                WaitEnd::Timeout => {
                    let reason = "request head not received in time";
                    return refuse(stream, ctx, connection, 408, reason).await;
                }
                WaitEnd::Shutdown => return HttpEnd::Closed,
                WaitEnd::Failed => return HttpEnd::Io,
            }
            match input.read_ready(stream, 0, &ctx.read_scratch).await {
                Ok(0) => return HttpEnd::Closed,
                Ok(_) => {}
                Err(_) => return HttpEnd::Io,
            }
        };
        input.bytes_mut().advance(consumed);

        let route = http::route(&head, &ctx.config, &ctx.hubs);
        if let Route::Hub(hub) = &route {
            if let Some(home) = foreign_home(&head, ctx) {
                return HttpEnd::Handoff { home, head, input };
            }
            return upgrade_hub(stream, &head, input, Rc::clone(hub), ctx, connection).await;
        }
        if route == Route::Echo {
            return match UpgradeRequest::from_head(&head) {
                Ok(request) => {
                    let mut out = BytesMut::new();
                    switching_protocols(&request, None)
                        .header("server", SERVER)
                        .encode(true, &mut out);
                    let deadline = ctx.timers.now() + ctx.config.websocket.send_timeout;
                    match write(stream, out.freeze(), ctx, connection, deadline).await {
                        Ok(()) => HttpEnd::Upgraded(input),
                        Err(_) => HttpEnd::Io,
                    }
                }
                Err(error) => {
                    let response = error.response();
                    send_and_close(stream, ctx, connection, response).await;
                    HttpEnd::Refused(error.status())
                }
            };
        }
        let body = match read_body(stream, &mut input, &head, ctx, connection).await {
            Ok(body) => body,
            Err(end) => return end,
        };
        let response = http::respond(&route, &head, body, peer, ctx)
            .await
            .header("server", SERVER);
        let keep_alive = head.is_keep_alive() && !connection.signal.is_shutdown();
        let mut out = BytesMut::new();
        if head.method == Method::Head {
            response.encode_head(keep_alive, &mut out);
        } else {
            response.encode(keep_alive, &mut out);
        }
        let deadline = ctx.timers.now() + ctx.config.websocket.send_timeout;
        if write(stream, out.freeze(), ctx, connection, deadline)
            .await
            .is_err()
        {
            return HttpEnd::Io;
        }
        if !keep_alive {
            let _ = stream.shutdown().await;
            return HttpEnd::Done;
        }
        input.release_if_empty();
    }
}

/// The shard that issued the `?id=` token, when it is not this one.
fn foreign_home(head: &RequestHead, ctx: &ShardContext) -> Option<ShardId> {
    let query = Query::new(head.query());
    let token = query.get("id")?;
    home_shard(&token, ctx.config.workers.get()).filter(|home| *home != ctx.id)
}

/// Validates a hub upgrade, claims its token (or creates a connection for skipNegotiation)
/// and answers 101.
async fn upgrade_hub(
    stream: &mut TcpStream,
    head: &RequestHead,
    input: ReadBuffer,
    hub: Rc<HubDefinition>,
    ctx: &ShardContext,
    connection: &ConnectionHandle,
) -> HttpEnd {
    let caller = match admit(
        hub.auth,
        head,
        &ctx.keys,
        &ctx.config.auth.admin_key_hashes,
        unix_now(),
    )
    .await
    {
        Ok(caller) => caller,
        Err(error) => {
            let reason = error.to_string();
            return refuse(stream, ctx, connection, error.status(), &reason).await;
        }
    };
    let query = Query::new(head.query());
    // As ASP.NET: the connection is looked up before the transport request is examined.
    let presented = match query.get("id") {
        None => None,
        Some(token) => match check_token(&token, &hub, ctx).await {
            Ok(presented) => Some(presented),
            Err(refusal) => return refuse_token(stream, ctx, connection, refusal).await,
        },
    };
    let request = match UpgradeRequest::from_head(head) {
        Ok(request) => request,
        Err(error) => {
            send_and_close(stream, ctx, connection, error.response()).await;
            return HttpEnd::Refused(error.status());
        }
    };
    // Kept per connection only when a method can read them.
    let request_headers = if hub.uses(Action::RequestHeader) {
        head.headers
            .iter()
            .map(|h| {
                (
                    h.name.clone(),
                    String::from_utf8_lossy(&h.value).into_owned(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let key_id = match &caller {
        Caller::Key(Principal::VirtualKey { id, .. }) => Some(*id),
        _ => None,
    };
    let (session, claimed) = match presented {
        None => {
            let permit = match ctx.quota.acquire(key_id) {
                Ok(permit) => permit,
                Err(error) => {
                    ctx.stats
                        .shard(usize::from(ctx.id.0))
                        .refused(error.refusal());
                    return refuse(stream, ctx, connection, error.status(), &error.to_string())
                        .await;
                }
            };
            match new_connection_id(ctx.id, ctx.config.workers.get()) {
                Ok(connection_id) => (
                    SessionStart::New {
                        connection_id,
                        stateful: false,
                        request_headers,
                        caller,
                        permit,
                        token_expires: None,
                    },
                    None,
                ),
                Err(_) => return refuse(stream, ctx, connection, 500, "no connection id").await,
            }
        }
        Some(presented) => {
            let session = match presented.admission {
                Admission::New => match ctx.quota.acquire(key_id) {
                    Ok(permit) => SessionStart::New {
                        connection_id: presented.connection_id.clone(),
                        stateful: presented.stateful,
                        request_headers,
                        caller,
                        permit,
                        token_expires: Some(presented.expires),
                    },
                    Err(error) => {
                        ctx.stats
                            .shard(usize::from(ctx.id.0))
                            .refused(error.refusal());
                        return refuse(stream, ctx, connection, error.status(), &error.to_string())
                            .await;
                    }
                },
                Admission::Resume(key) => SessionStart::Resume(key),
            };
            // Nothing awaited since the check: the token is still what it was. The claim
            // covers the time until the session is attached (see `run_hub`).
            ctx.claims
                .claim(presented.connection_id.as_str().into(), presented.expires);
            (session, Some(presented.connection_id))
        }
    };
    let mut out = BytesMut::new();
    switching_protocols(&request, None)
        .header("server", SERVER)
        .encode(true, &mut out);
    let deadline = ctx.timers.now() + ctx.config.websocket.send_timeout;
    if write(stream, out.freeze(), ctx, connection, deadline)
        .await
        .is_err()
    {
        if let (Some(connection_id), SessionStart::New { .. }) = (&claimed, &session) {
            ctx.claims.release(connection_id);
        }
        return HttpEnd::Io;
    }
    HttpEnd::UpgradedHub(Box::new(HubUpgrade {
        input,
        hub,
        session,
    }))
}

/// Verifies a presented token (the hub included) and decides, on its home shard, what it does
/// here: a new connection, a resume, or a refusal. Nothing is claimed yet.
///
/// An instance that never saw the negotiate accepts a valid, unexpired token as a new
/// connection, except a stateful one whose connection another server still holds (its
/// subscriber on the connection's Redis channel says so): that is a stateful-reconnect resume
/// that landed on the wrong instance, answered 404 as ASP.NET answers an unknown connection,
/// so the client falls back to a fresh connection.
async fn check_token(
    token: &str,
    hub: &HubDefinition,
    ctx: &ShardContext,
) -> Result<Presented, TokenRefusal> {
    let claims = ctx.tokens.verify(token).map_err(TokenRefusal::NotFound)?;
    if claims.hub != hub_tag(&hub.path) {
        return Err(TokenRefusal::NotFound(TokenError::WrongHub));
    }
    let connection_id = claims.connection_id(token);
    // A stateful client reconnecting right after its socket dropped can beat the server to
    // noticing the drop; give the old socket a moment to be parked.
    let give_up = ctx.timers.now() + RECONNECT_GRACE;
    let resumable_running = || {
        ctx.sessions
            .find(&connection_id)
            .is_some_and(|s| s.is_attached() && s.session.borrow().is_resumable())
    };
    while resumable_running() && ctx.timers.now() < give_up {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    let check = |now_ms: u64| {
        let expired = claims.is_expired(now_ms);
        ctx.claims
            .check(&connection_id, expired, &ctx.sessions, ctx.timers.now())
            .map_err(|error| match error {
                ClaimError::AlreadyConnected => TokenRefusal::InUse,
                ClaimError::NotFound if expired => TokenRefusal::NotFound(TokenError::Expired),
                ClaimError::NotFound => TokenRefusal::NotFound(TokenError::Unknown),
            })
    };
    let mut admission = check(unix_millis())?;
    if admission == Admission::New
        && claims.stateful
        && let Some(redis) = ctx.backplane.redis()
    {
        let held_elsewhere = monoio::time::timeout(
            RECONNECT_GRACE,
            redis.has_subscribers(&hub.name, |c| c.connection(&connection_id)),
        )
        .await
        .unwrap_or(false);
        if held_elsewhere {
            return Err(TokenRefusal::NotFound(TokenError::Unknown));
        }
        // The table may have changed while Redis answered.
        admission = check(unix_millis())?;
    }
    let now_ms = unix_millis();
    let left = Duration::from_millis(claims.expires_unix_ms.saturating_sub(now_ms));
    Ok(Presented {
        connection_id,
        stateful: claims.stateful,
        expires: ctx.timers.now() + left,
        admission,
    })
}

/// Answers a refused token: 404 `No Connection with that ID` (counted by reason) or 409.
async fn refuse_token(
    stream: &mut TcpStream,
    ctx: &ShardContext,
    connection: &ConnectionHandle,
    refusal: TokenRefusal,
) -> HttpEnd {
    match refusal {
        TokenRefusal::NotFound(reason) => {
            ctx.stats
                .shard(usize::from(ctx.id.0))
                .token_refused(reason.reason_index());
            refuse(stream, ctx, connection, 404, "No Connection with that ID").await
        }
        TokenRefusal::InUse => {
            refuse(stream, ctx, connection, 409, "Connection already active").await
        }
    }
}

/// Creates the session a new hub connection starts (registering it with the shard's tables,
/// its groups, the backplane and the counters), or finds the parked one it resumes (`None`:
/// it expired meanwhile). Kept out of [`run_hub`] so none of this lives in the connection's
/// future.
fn start_session(
    ctx: &ShardContext,
    hub: &Rc<HubDefinition>,
    start: SessionStart,
) -> Option<Rc<crate::shard::sessions::SessionSlot>> {
    let now = ctx.timers.now();
    Some(match start {
        SessionStart::New {
            connection_id,
            stateful,
            request_headers,
            caller,
            permit,
            token_expires,
        } => {
            let mut session = Session::new(
                Rc::clone(hub),
                connection_id,
                request_headers,
                stateful,
                now,
            );
            if let Caller::Key(Principal::VirtualKey { id, .. }) = &caller {
                session.set_key_id(Some(*id));
            }
            // With Redis, a join is done once its group channel is subscribed.
            session.set_await_subscriptions(ctx.backplane.is_redis());
            if let Caller::Key(principal) = &caller {
                session.set_admin(principal.is_admin());
            }
            let slot = ctx.sessions.insert(Rc::clone(hub), Box::new(session));
            slot.hold(permit);
            slot.set_token_expiry(token_expires);
            // With Redis, sends to this connection from other servers arrive on its channel.
            ctx.backplane
                .connection_opened(&hub.name, &slot.connection_id);
            ctx.stats
                .shard(usize::from(ctx.id.0))
                .connection_opened(hub.index);
            // Every virtual-key connection is in its key's group (Conduit's `vkey-{id}`).
            if let Caller::Key(Principal::VirtualKey { id, .. }) = caller {
                pin_group(ctx, &slot, format!("vkey-{id}"));
                // Its key id is its user (REST `users/{user}`).
                join_user(ctx, &slot, id.to_string());
                // A hub that keeps per-key state sends the current one right after the
                // handshake (queued now, written when the handshake completes).
                if hub.key_state_event().is_some()
                    && let Some(state) = ctx.key_states.get(&hub.name, id)
                {
                    slot.deliver(&state.message, now);
                }
            }
            for group in &hub.join_on_connect {
                pin_group(ctx, &slot, group.clone());
            }
            crate::upstream::post_event(ctx, &slot, "connected");
            slot
        }
        SessionStart::Resume(key) => match ctx.sessions.get(key) {
            Some(slot) => {
                slot.session.borrow_mut().resume(now);
                slot
            }
            // Expired between the claim and now: nothing to resume.
            None => return None,
        },
    })
}

/// Runs a SignalR session until the WebSocket ends: the task of an upgraded hub connection.
///
/// Every idle connection pays for this future, so the session is started before it is built
/// (the upgrade and its box are gone by then), it is an async block rather than an async fn
/// (which would keep a moved-from copy of each argument), and it borrows its limits from the
/// shard.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would store its arguments twice in every connection's future"
)]
fn run_hub(
    mut stream: TcpStream,
    upgrade: HubUpgrade,
    ctx: Rc<ShardContext>,
    registration: Registration,
) -> impl std::future::Future<Output = ()> {
    let HubUpgrade {
        mut input,
        hub,
        session,
    } = upgrade;
    let slot = start_session(&ctx, &hub, session);
    async move {
        let Some(slot) = slot else {
            return;
        };
        slot.attach(registration.shared());
        // While it runs, the attached session answers a second connect with its token (409),
        // so its spent claim is not kept per connection: `end_session` spends the token again
        // when the session ends, until the token expires.
        ctx.claims.release(&slot.connection_id);
        // The slot (and through it the hub) lives in the endpoint while the connection runs.
        let mut endpoint = HubEndpoint { slot, ctx: &ctx };
        let end = websocket::serve(
            &mut stream,
            &mut input,
            &mut endpoint,
            registration.handle(),
            &ctx.websocket_limits.hub,
            &ctx.timers,
            &ctx.read_scratch,
        )
        .await;
        let slot = endpoint.slot;
        let ctx = &*ctx;
        let connection = registration.handle();
        slot.detach();
        let dropped = matches!(
            end,
            ConnectionEnd::PeerVanished | ConnectionEnd::Io(_) | ConnectionEnd::SendTimeout
        );
        // Only negotiated stateful sessions are resumable (skipNegotiation has no token).
        if dropped && slot.session.borrow().is_resumable() {
            let expires = ctx.timers.now() + ctx.config.signalr.disconnect_timeout;
            ctx.claims
                .park(Rc::clone(&slot.connection_id), slot.key, expires);
        } else {
            // A token it was started with stays spent until it expires.
            end_session(ctx, &slot);
        }
        debug!(
            shard = ctx.id.0,
            conn = %connection.id,
            hub = %slot.hub.name,
            connection_id = %slot.connection_id,
            code = end.close_code().0,
            reason = end.reason(),
            detail = %end,
            "hub connection ended"
        );
    }
}

/// Runs the echo endpoint on an upgraded connection until the WebSocket ends.
///
/// The task of an upgraded echo connection; like [`run_hub`], it owns its arguments.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would store its arguments twice in every connection's future"
)]
fn run_echo(
    mut stream: TcpStream,
    mut input: ReadBuffer,
    ctx: Rc<ShardContext>,
    registration: Registration,
) -> impl std::future::Future<Output = ()> {
    // An async block, not an async fn: an async fn moves its arguments into locals and
    // keeps both copies in the future for the connection's lifetime.
    async move {
        let connection = registration.handle();
        let mut app = http::echo::EchoApp;
        let limits = &ctx.websocket_limits.echo;
        let end = websocket::serve(
            &mut stream,
            &mut input,
            &mut app,
            connection,
            limits,
            &ctx.timers,
            &ctx.read_scratch,
        )
        .await;
        debug!(
            shard = ctx.id.0,
            conn = %connection.id,
            code = end.close_code().0,
            reason = end.reason(),
            detail = %end,
            "websocket ended"
        );
    }
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
        Err(error) => {
            return Err(refuse(stream, ctx, connection, error.status(), error.reason()).await);
        }
    };
    if kind == BodyKind::Empty {
        return Ok(Bytes::new());
    }
    if let BodyKind::Length(len) = kind
        && len > max as u64
    {
        return Err(refuse(stream, ctx, connection, 413, "request body too large").await);
    }
    let deadline = ctx.timers.now() + ctx.config.http.header_timeout;
    if head.expects_continue() {
        let continue_line = Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n");
        if write(stream, continue_line, ctx, connection, deadline)
            .await
            .is_err()
        {
            return Err(HttpEnd::Io);
        }
    }
    let mut chunked = ChunkedDecoder::new(max);
    let mut decoded = BytesMut::new();
    loop {
        let want = match kind {
            BodyKind::Length(len) => {
                // invariant: len <= max_body_size, a usize (checked above).
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if input.len() >= len {
                    return Ok(input.bytes_mut().split_to(len).freeze());
                }
                len
            }
            BodyKind::Chunked => match chunked.decode(input.bytes_mut(), &mut decoded) {
                Ok(ChunkedStatus::Done) => return Ok(decoded.freeze()),
                Ok(ChunkedStatus::NeedMore) => 0,
                Err(error) => {
                    let status = error.status();
                    return Err(
                        refuse(stream, ctx, connection, status, "invalid chunked body").await,
                    );
                }
            },
            BodyKind::Empty => return Ok(Bytes::new()),
        };
        match wait_readable(stream, ctx, connection, deadline).await {
            WaitEnd::Data => {}
            WaitEnd::Timeout => {
                let reason = "request body not received in time";
                return Err(refuse(stream, ctx, connection, 408, reason).await);
            }
            WaitEnd::Shutdown => return Err(HttpEnd::Closed),
            WaitEnd::Failed => return Err(HttpEnd::Io),
        }
        match input.read_ready(stream, want, &ctx.read_scratch).await {
            Ok(0) => return Err(HttpEnd::Closed),
            Ok(_) => {}
            Err(_) => return Err(HttpEnd::Io),
        }
    }
}

/// Waits until the socket is readable, `deadline` passes, or the shard stops.
async fn wait_readable(
    stream: &TcpStream,
    ctx: &ShardContext,
    connection: &ConnectionHandle,
    deadline: Instant,
) -> WaitEnd {
    // One readiness poll for the whole wait: a signal that does not end the wait leaves it
    // armed instead of cancelling it (an io_uring cancel walks a hash chain shared by every
    // armed poll of the ring).
    let mut ready = std::pin::pin!(ReadBuffer::readable(stream));
    loop {
        if connection.signal.is_shutdown() {
            return WaitEnd::Shutdown;
        }
        if ctx.timers.now() >= deadline {
            return WaitEnd::Timeout;
        }
        connection.arm(deadline, &ctx.timers);
        let signal = monoio::select! {
            ready = &mut ready => {
                return if ready.is_ok() { WaitEnd::Data } else { WaitEnd::Failed };
            },
            signal = connection.signal.wait() => signal,
        };
        match signal {
            Signal::Shutdown | Signal::Timer | Signal::Outbound => {}
        }
    }
}

/// Answers `status` with a short text body and closes.
async fn refuse(
    stream: &mut TcpStream,
    ctx: &ShardContext,
    connection: &ConnectionHandle,
    status: u16,
    reason: &str,
) -> HttpEnd {
    send_and_close(stream, ctx, connection, Response::text(status, reason)).await;
    HttpEnd::Refused(status)
}

/// Writes a final response (briefly bounded) and closes the write side.
async fn send_and_close(
    stream: &mut TcpStream,
    ctx: &ShardContext,
    connection: &ConnectionHandle,
    response: Response,
) {
    let mut out = BytesMut::new();
    response.header("server", SERVER).encode(false, &mut out);
    let deadline = ctx.timers.now() + REFUSAL_WRITE_TIMEOUT;
    let _ = write(stream, out.freeze(), ctx, connection, deadline).await;
    let _ = stream.shutdown().await;
}

/// Writes `bytes` unless `deadline` passes first.
async fn write(
    stream: &mut TcpStream,
    bytes: Bytes,
    ctx: &ShardContext,
    connection: &ConnectionHandle,
    deadline: Instant,
) -> std::io::Result<()> {
    // Boxed for the same reason as the WebSocket flush: keep transient write state out of the
    // long-lived connection task.
    let written = Box::pin(within(
        stream.write_all(bytes),
        deadline,
        connection,
        &ctx.timers,
    ));
    match written.await {
        Ok((result, _)) => result.map(|_| ()),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;
    use std::sync::Arc;

    use super::*;
    use crate::config::Config;
    use crate::shard::{ActiveDriver, ShardId};

    /// An idle WebSocket costs its task (the future plus monoio's task header) plus a few
    /// small allocations; this keeps the tasks from silently growing back (perf/idle_memory.py
    /// measures the whole cost). monoio adds 48 bytes of task header and trailer, and mimalloc
    /// rounds an allocation up to its size class (…, 640, 768, 896, …): 720 bytes of future
    /// make a 768-byte task; 728 would make an 896-byte one.
    #[test]
    fn an_idle_connection_task_stays_small() {
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let config = Config {
                workers: NonZeroUsize::new(1).unwrap(),
                ..Config::default()
            };
            let ctx = Rc::new(ShardContext::new(
                ShardId(0),
                ActiveDriver::Legacy,
                crate::shard::SharedParts {
                    config: Arc::new(config),
                    peers: crate::shard::inbox::Peers::create(1).0,
                    hubs: Vec::new().into(),
                    stats: crate::stats::Stats::new(Vec::new(), 1),
                    quota: crate::hub::quota::ConnectionQuota::new(0, 0),
                    per_ip: crate::transport::per_ip::PerIpLimits::new(0, 0, 1),
                    tokens: Arc::new(crate::hub::identity::TokenKeys::new(None, &[]).unwrap()),
                },
                crate::auth::KeyLookup::file(Arc::new(crate::auth::keys::KeyStore::empty())),
                crate::backplane::Backplane::InProcess,
            ));
            let stream = TcpStream::connect(addr).await.unwrap();
            let registration = Registration::new(Rc::clone(&ctx.connections));
            let echo = run_echo(stream, ReadBuffer::new(), Rc::clone(&ctx), registration);
            let echo_size = std::mem::size_of_val(&echo);
            drop(echo);

            let stream = TcpStream::connect(addr).await.unwrap();
            let registration = Registration::new(Rc::clone(&ctx.connections));
            let upgrade = HubUpgrade {
                input: ReadBuffer::new(),
                hub: Rc::new(HubDefinition::diagnostics("/hubs/diagnostics")),
                session: SessionStart::Resume(SessionKey { slot: 0, serial: 0 }),
            };
            let hub = run_hub(stream, upgrade, Rc::clone(&ctx), registration);
            let hub_size = std::mem::size_of_val(&hub);
            drop(hub);

            let stream = TcpStream::connect(addr).await.unwrap();
            let whole = std::mem::size_of_val(&serve(stream, addr, None, ctx));
            assert!(echo_size <= 720, "echo connection task: {echo_size} bytes");
            assert!(hub_size <= 720, "hub connection task: {hub_size} bytes");
            assert!(whole <= 512, "HTTP connection task: {whole} bytes");
        });
    }
}
