//! One core: a pinned thread, its monoio runtime, and all of its mutable state.
//!
//! A shard owns its listening socket, its connections and (later) its group tables; nothing
//! here is `Send`, and nothing is shared with other shards except the read-only
//! [`Config`]. [`run`] is the shard's main task: accept until told to stop, then drain.

pub mod claims;
pub mod connections;
pub mod groups;
pub mod inbox;
pub mod key_states;
pub mod sessions;
pub mod streams;
pub mod timers;

use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;
use thiserror::Error;
use tracing::{info, warn};

use crate::auth::KeyLookup;
use crate::backplane::Backplane;
use crate::config::Config;
use crate::hub::identity::TokenKeys;
use crate::hub::quota::ConnectionQuota;
use crate::hub::{HubDefinition, Hubs};
use crate::stats::{RateSample, Stats};
use crate::transport::connection;
use crate::transport::listener::accept_loop;
use crate::transport::per_ip::PerIpLimits;
use crate::transport::websocket::WebSocketLimits;
use claims::Claims;
use connections::{ConnectionRegistry, ConnectionSignal, Signal};
use groups::GroupTable;
use inbox::{Inbox, Peers, ShardMessage};
use sessions::Sessions;
use timers::Timers;

/// A shard's number, 0-based; the thread is named `shard-N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardId(pub u16);

/// The I/O driver a shard's runtime runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActiveDriver {
    /// io_uring (the default on Linux 5.6+).
    IoUring,
    /// epoll, monoio's legacy driver: the fallback where io_uring is unavailable.
    Legacy,
}

impl ActiveDriver {
    /// The name used in logs and `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IoUring => "io_uring",
            Self::Legacy => "legacy",
        }
    }
}

/// Why a shard could not run.
#[derive(Debug, Error)]
pub enum ShardError {
    /// The runtime could not be built (io_uring setup, memlock, …).
    #[error("shard {shard}: cannot build the {driver} runtime: {source}")]
    Runtime {
        /// The shard.
        shard: u16,
        /// The driver that was tried.
        driver: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The backplane participant could not be set up.
    #[error("shard {shard}: cannot set up the Redis backplane: {reason}")]
    Backplane {
        /// The shard.
        shard: u16,
        /// Why.
        reason: String,
    },
    /// The listening socket could not be handed to the runtime.
    #[error("shard {shard}: cannot register the listener: {source}")]
    Listener {
        /// The shard.
        shard: u16,
        /// The OS error.
        source: io::Error,
    },
}

/// Everything a shard's tasks share. `!Send`: it lives and dies on its core.
#[derive(Debug)]
pub struct ShardContext {
    /// This shard.
    pub id: ShardId,
    /// The process configuration (read-only, shared by all shards).
    pub config: Arc<Config>,
    /// Live connections on this shard.
    pub connections: Rc<ConnectionRegistry>,
    /// Connections this shard accepts at most (`limits.max_connections` split across shards).
    pub max_connections: usize,
    /// The hot-path clock (TSC-based, no syscall) and the shard's one deadline queue.
    pub timers: Timers,
    /// When the shard started (for uptime).
    pub started: std::time::Instant,
    /// The I/O driver in use.
    pub driver: ActiveDriver,
    /// Raised to stop the accept loop.
    pub acceptor: ConnectionSignal,
    /// The hubs served.
    pub hubs: Hubs,
    /// Tokens used on this shard and parked stateful sessions, by connection id.
    pub claims: Claims,
    /// Signs and verifies connection tokens (the cluster secret), shared by every shard.
    pub tokens: Arc<TokenKeys>,
    /// SignalR sessions living on this shard.
    pub sessions: Sessions,
    /// Where virtual keys are looked up.
    pub keys: KeyLookup,
    /// How sends reach other shards and instances.
    pub backplane: Backplane,
    /// Their group memberships.
    pub groups: GroupTable,
    /// Sessions by user (a virtual key id in decimal), per hub: the same shape as a group table.
    pub users: GroupTable,
    /// The hubs by name, for the REST publish API.
    pub hub_names: crate::http::publish::HubNames,
    /// The other shards' inboxes.
    pub peers: Peers,
    /// Per-key hub state (NavigationState), replicated from every shard.
    pub key_states: key_states::KeyStates,
    /// SignalR connections per process and per key, shared by every shard.
    pub quota: Arc<ConnectionQuota>,
    /// Connections and negotiates per client address, shared by every shard.
    pub per_ip: Arc<PerIpLimits>,
    /// The process's counters (this shard writes its own row).
    pub stats: Arc<Stats>,
    /// Messages per second as the Health hub last sampled them on this shard.
    pub message_rate: std::cell::Cell<RateSample>,
    /// Stream keys: their subscribers here and recent chunks ([`crate::hub::streams`]).
    pub streams: streams::StreamTable,
    /// The HTTP client of upstream methods and hub events, with its connection pool.
    pub upstream: Rc<crate::upstream::UpstreamClient>,
    /// The WebSocket limits of hub connections, and of the echo route (computed once, so a
    /// connection task holds a reference instead of its own copy).
    pub websocket_limits: WebSocketRouteLimits,
    /// The read buffer every connection of this shard reads small amounts into
    /// ([`crate::transport::read_buffer`]).
    pub read_scratch: crate::transport::read_buffer::ReadScratch,
    /// Where a broadcast writes its frame to idle subscribers itself, a batch per system call
    /// (io_uring only; `None` on the legacy driver or where the ring cannot be set up).
    pub send_ring: std::cell::RefCell<Option<crate::sys::SendRing>>,
}

/// Sends a write-through batch submits per `io_uring_enter`.
const SEND_RING_ENTRIES: u32 = 1024;

/// The WebSocket limits of each kind of route.
#[derive(Debug, Clone, Copy)]
pub struct WebSocketRouteLimits {
    /// Hub connections: SignalR has its own keep-alive and client timeout, so the WebSocket
    /// layer only pings and never closes an idle peer itself.
    pub hub: WebSocketLimits,
    /// The echo route.
    pub echo: WebSocketLimits,
}

impl WebSocketRouteLimits {
    /// The limits `config` sets.
    pub fn from_config(config: &Config) -> Self {
        let websocket = &config.websocket;
        Self {
            hub: WebSocketLimits {
                max_message_size: websocket.max_message_size,
                idle_timeout: None,
                ping_interval: websocket.ping_interval,
                close_timeout: websocket.close_timeout,
                send_timeout: websocket.send_timeout,
            },
            echo: WebSocketLimits::from_config(websocket, config.echo.max_message_size),
        }
    }
}

/// What the process hands every shard: read-only or lock-free things shared by all of them.
#[derive(Debug, Clone)]
pub struct SharedParts {
    /// The configuration.
    pub config: Arc<Config>,
    /// Every shard's inbox.
    pub peers: Peers,
    /// The validated hub definitions.
    pub hubs: Arc<[HubDefinition]>,
    /// The counters.
    pub stats: Arc<Stats>,
    /// The connection quotas.
    pub quota: Arc<ConnectionQuota>,
    /// The connection-token keys (one per process: every shard must accept every token).
    pub tokens: Arc<TokenKeys>,
    /// Connections and negotiates per client address.
    pub per_ip: Arc<PerIpLimits>,
}

impl ShardContext {
    /// A fresh context for shard `id`.
    pub fn new(
        id: ShardId,
        driver: ActiveDriver,
        parts: SharedParts,
        keys: KeyLookup,
        backplane: Backplane,
    ) -> Self {
        let SharedParts {
            config,
            peers,
            hubs,
            stats,
            quota,
            tokens,
            per_ip,
        } = parts;
        let max_connections = config.shard_max_connections();
        let totals = stats.totals();
        let hubs_by_path = Hubs::new(&hubs);
        let send_ring = match driver {
            ActiveDriver::IoUring => crate::sys::SendRing::new(SEND_RING_ENTRIES)
                .inspect_err(|error| {
                    tracing::debug!(shard = id.0, %error, "no write-through ring; broadcasts wake each connection");
                })
                .ok(),
            ActiveDriver::Legacy => None,
        };
        Self {
            send_ring: std::cell::RefCell::new(send_ring),
            websocket_limits: WebSocketRouteLimits::from_config(&config),
            read_scratch: crate::transport::read_buffer::ReadScratch::new(),
            streams: streams::StreamTable::new(streams::BacklogLimits::from_config(
                &config.signalr,
            )),
            upstream: Rc::new(crate::upstream::UpstreamClient::new(&config.upstream)),
            key_states: key_states::KeyStates::default(),
            message_rate: std::cell::Cell::new(RateSample::new(
                totals.messages_in.wrapping_add(totals.deliveries),
            )),
            stats,
            quota,
            hub_names: crate::http::publish::HubNames::new(&hubs, &hubs_by_path),
            users: GroupTable::default(),
            hubs: hubs_by_path,
            claims: Claims::default(),
            tokens,
            sessions: Sessions::default(),
            keys,
            backplane,
            groups: GroupTable::default(),
            peers,
            id,
            config,
            connections: Rc::new(ConnectionRegistry::new(Arc::clone(&per_ip))),
            per_ip,
            max_connections,
            timers: Timers::new(),
            started: std::time::Instant::now(),
            driver,
            acceptor: ConnectionSignal::default(),
        }
    }
}

/// The shard's main task: serve `listener` until `stop` fires (or its sender is dropped), then
/// stop accepting, ask every connection to close, and wait for them up to the shutdown deadline.
///
/// # Errors
/// [`ShardError::Listener`] when the socket cannot be registered with the runtime.
pub async fn run(
    ctx: Rc<ShardContext>,
    listener: std::net::TcpListener,
    inbox: Inbox,
    stop: oneshot::Receiver<()>,
) -> Result<(), ShardError> {
    let shard = ctx.id.0;
    let listener = monoio::net::TcpListener::from_std(listener)
        .map_err(|source| ShardError::Listener { shard, source })?;
    let acceptor = monoio::spawn(accept_loop(listener, Rc::clone(&ctx)));
    let counters = ctx.stats.shard(usize::from(shard));
    counters.set_accepting(true);
    // Dropped with the runtime when this function returns.
    let _ticker = monoio::spawn(run_timers(Rc::clone(&ctx)));
    let _inbox = monoio::spawn(run_inbox(Rc::clone(&ctx), inbox));
    let _sweeper = monoio::spawn(sweep_claims(Rc::clone(&ctx)));
    let _health = monoio::spawn(push_health(Rc::clone(&ctx)));
    let _backplane = ctx.backplane.redis().map(|redis| {
        let events = redis.start();
        monoio::spawn(run_backplane(Rc::clone(&ctx), events))
    });
    let _streams = monoio::spawn(sweep_streams(Rc::clone(&ctx)));
    let _ = stop.await;

    ctx.acceptor.raise(Signal::Shutdown);
    // The accept loop drops the listening socket when it returns: new connections are refused
    // at once instead of waiting in the backlog.
    acceptor.await;
    counters.set_accepting(false);
    let open = ctx.connections.len();
    info!(shard, open, "stopped accepting; closing connections");
    ctx.connections.raise_all(Signal::Shutdown);
    let deadline = std::time::Instant::now() + ctx.config.shutdown.deadline;
    while !ctx.connections.is_empty() && std::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if !ctx.connections.is_empty() {
        warn!(
            shard,
            open = ctx.connections.len(),
            "shutdown deadline reached; dropping remaining connections"
        );
    }
    Ok(())
}

/// The shard's ticker: fires due connection deadlines, then sleeps until the next one.
async fn run_timers(ctx: Rc<ShardContext>) {
    loop {
        let now = ctx.timers.now();
        ctx.timers.fire_due(now, |id, serial| {
            ctx.connections.fire_timer(id, serial, now)
        });
        ctx.timers
            .sleep_until_next(ctx.timers.next_deadline())
            .await;
    }
}

/// Serves what other shards send: connections whose token was issued here.
async fn run_inbox(ctx: Rc<ShardContext>, mut inbox: Inbox) {
    use futures_core::Stream;
    loop {
        let next =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut inbox.receiver).poll_next(cx)).await;
        match next {
            Some(ShardMessage::Adopt(handoff)) => {
                monoio::spawn(connection::adopt(handoff, Rc::clone(&ctx)));
            }
            Some(ShardMessage::Publish(envelope)) => {
                crate::hub::endpoint::deliver_local(&ctx, &envelope);
            }
            Some(ShardMessage::FanOut(envelope)) => {
                crate::hub::endpoint::fan_out(&ctx, &envelope);
            }
            Some(ShardMessage::StreamFanOut(chunk)) => {
                crate::hub::streams::fan_out(&ctx, &chunk);
            }
            Some(ShardMessage::StreamChunk(chunk)) => {
                crate::hub::streams::deliver_local(&ctx, &chunk);
            }
            Some(ShardMessage::Reload(reload)) => {
                ctx.hubs.replace(&reload.hubs);
                ctx.hub_names.replace(&reload.hubs, &ctx.hubs);
                ctx.keys.reload(reload.keys.as_ref());
                info!(
                    shard = ctx.id.0,
                    hubs = reload.hubs.len(),
                    "reloaded hub definitions and keys"
                );
            }
            Some(ShardMessage::KeyState(update)) => {
                crate::hub::endpoint::apply_key_state(&ctx, &update);
            }
            Some(ShardMessage::Manage(request)) => {
                let mut pending = Vec::new();
                let found = crate::hub::endpoint::manage_local(
                    &ctx,
                    &request.hub,
                    &request.op,
                    &mut pending,
                );
                if pending.is_empty() {
                    let _ = request.reply.send(found);
                } else {
                    // Answered once the joins' Redis subscriptions are confirmed.
                    let ctx = Rc::clone(&ctx);
                    monoio::spawn(async move {
                        crate::hub::endpoint::await_subscriptions(&ctx, pending).await;
                        let _ = request.reply.send(found);
                    });
                }
            }
            None => return,
        }
    }
}

/// Pushes the health snapshot to the Health hubs' connections on this shard, every
/// `health.push_interval` (nothing runs when no hub has a `health` method).
async fn push_health(ctx: Rc<ShardContext>) {
    let hubs = ctx.hubs.using(crate::hub::Action::Health);
    if hubs.is_empty() {
        return;
    }
    loop {
        monoio::time::sleep(ctx.config.health.push_interval).await;
        crate::hub::endpoint::push_health(&ctx, &hubs);
    }
}

/// Serves what this shard's Redis participant receives: sends for local connections, group
/// commands for connections that may be ours, and the link going down and up.
async fn run_backplane(
    ctx: Rc<ShardContext>,
    mut events: futures_channel::mpsc::UnboundedReceiver<crate::redis::SubscriberEvent>,
) {
    use crate::backplane::redis::Incoming;
    use crate::redis::SubscriberEvent;
    use futures_core::Stream;
    let Some(redis) = ctx.backplane.redis().cloned() else {
        return;
    };
    let stats = ctx.stats.shard(usize::from(ctx.id.0));
    stats.set_backplane_up(false);
    loop {
        let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut events).poll_next(cx)).await;
        match next {
            Some(SubscriberEvent::Message { channel, payload }) => {
                match redis.incoming(&channel, &payload, &ctx.config.signalr.conflate_events) {
                    Some(Incoming::Deliver(envelope, client_result)) => {
                        if let (Some(route), crate::hub::actions::Target::Connection(id)) =
                            (client_result, &envelope.target)
                            && let Some(slot) = ctx.sessions.find(id)
                        {
                            slot.session
                                .borrow_mut()
                                .expect_remote_result(route.invocation_id, route.return_channel);
                        }
                        crate::hub::endpoint::deliver_local(&ctx, &envelope);
                    }
                    Some(Incoming::Stream { hub, chunk }) => {
                        crate::hub::streams::from_backplane(&ctx, &hub, chunk);
                    }
                    Some(Incoming::KeyState { hub, update }) => {
                        crate::hub::endpoint::key_state_from_backplane(&ctx, &hub, update);
                    }
                    Some(Incoming::GroupCommand { hub, command }) => {
                        match crate::hub::endpoint::apply_group_command(&ctx, &hub, &command) {
                            None => {}
                            Some(None) => redis.ack(&hub, &command),
                            Some(Some(pending)) => {
                                let redis = Rc::clone(&redis);
                                let limit = ctx.config.backplane.ack_timeout;
                                monoio::spawn(async move {
                                    let _ = monoio::time::timeout(limit, pending).await;
                                    redis.ack(&hub, &command);
                                });
                            }
                        }
                    }
                    None => {}
                }
            }
            Some(SubscriberEvent::Up) => {
                info!(
                    shard = ctx.id.0,
                    server = redis.server_name(),
                    "backplane up"
                );
                stats.set_backplane_up(true);
            }
            Some(SubscriberEvent::Down) => {
                warn!(
                    shard = ctx.id.0,
                    "backplane down: sends are dropped until Redis is back"
                );
                stats.set_backplane_up(false);
            }
            None => return,
        }
    }
}

/// Drops expired stream backlogs and cancelled subscriptions once a second (nothing runs when
/// no hub has a `stream-key` method).
async fn sweep_streams(ctx: Rc<ShardContext>) {
    if ctx.hubs.using(crate::hub::Action::StreamKey).is_empty() {
        return;
    }
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        crate::hub::streams::sweep(&ctx);
    }
}

/// Drops expired spent tokens and ends parked sessions whose reconnect window closed, once a
/// second (as ASP.NET scans).
async fn sweep_claims(ctx: Rc<ShardContext>) {
    loop {
        monoio::time::sleep(Duration::from_secs(1)).await;
        for key in ctx.claims.sweep(ctx.timers.now()) {
            if let Some(slot) = ctx.sessions.get(key) {
                crate::hub::endpoint::end_session(&ctx, &slot);
            }
        }
    }
}
