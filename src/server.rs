//! The process: choose the I/O driver, bind one `SO_REUSEPORT` socket per shard, start one
//! pinned thread per shard, and stop them all on request.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use futures_channel::oneshot;
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::auth::keys::KeyStore;
use crate::auth::{KeyLookup, RedisKeyStore};
use crate::backplane::Backplane;
use crate::backplane::redis::RedisBackplane;
use crate::config::{BackplaneKind, Config, DriverKind, KeyStoreKind};
use crate::hub::HubDefinition;
use crate::hub::quota::ConnectionQuota;
use crate::redis::{RedisError, RedisUrl};
use crate::shard::SharedParts;
use crate::shard::inbox::{Inbox, Peers, Reload, ShardMessage};
use crate::shard::{self, ActiveDriver, ShardContext, ShardError, ShardId};
use crate::stats::Stats;
use crate::transport::listener::bind_listeners;
use crate::transport::per_ip::PerIpLimits;

/// Why the server could not start or did not stop cleanly.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// `runtime.driver = "io-uring"` was forced but io_uring is not available.
    #[error("runtime.driver is \"io-uring\" but io_uring is unavailable on this kernel: {0}")]
    IoUringUnavailable(io::Error),
    /// A shard thread could not be spawned.
    #[error("cannot spawn thread {name}: {source}")]
    Spawn {
        /// The thread name.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// A shard failed.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The key store could not be read.
    #[error("{0}")]
    Keys(#[from] crate::auth::AuthError),
    /// `auth.redis_url` is not a usable `redis://` URL.
    #[error("auth.redis_url: {0}")]
    RedisUrl(RedisError),
    /// A configured hub is invalid.
    #[error(transparent)]
    Hubs(#[from] crate::hub::HubConfigError),
    /// A shard thread panicked.
    #[error("shard thread {0} panicked")]
    Panicked(String),
    /// No `cluster.secret` is set and the OS gave no random one to use instead.
    #[error("cannot draw a random cluster secret: {0}")]
    ClusterSecret(#[from] crate::hub::identity::RandomUnavailable),
}

/// Why a reload (SIGHUP) was refused; the server keeps what it had.
#[derive(Debug, Error)]
pub enum ReloadError {
    /// A hub in the new configuration is invalid.
    #[error(transparent)]
    Hubs(#[from] crate::hub::HubConfigError),
    /// Hubs were added, removed or renamed.
    #[error(transparent)]
    HubSet(#[from] crate::hub::HubSetChanged),
    /// The key file could not be read.
    #[error("{0}")]
    Keys(#[from] crate::auth::AuthError),
    /// `auth.store` changed between file and Redis.
    #[error("auth.store changed; switching key stores needs a restart")]
    KeyStoreKind,
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    driver: ActiveDriver,
    stats: Arc<Stats>,
    /// Every shard's inbox (a reload is sent through them).
    peers: Peers,
    /// The hub definitions being served.
    hubs: Arc<[HubDefinition]>,
    /// The key store kind the shards were built with.
    key_store: KeyStoreKind,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<thread::JoinHandle<Result<(), ShardError>>>,
}

impl ServerHandle {
    /// The address the shards listen on (with port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The I/O driver every shard runs on.
    pub fn driver(&self) -> ActiveDriver {
        self.driver
    }

    /// Turns the server not-ready (`/health/ready` answers 503 "draining") while it keeps
    /// serving, so load balancers stop sending it new clients; [`Self::shutdown`] follows.
    pub fn drain(&self) {
        self.stats.set_draining();
    }

    /// Applies `config`'s hub definitions and reloads the key store (SIGHUP) without touching
    /// open connections: new connections use the new definitions, open ones keep theirs. Only
    /// the hubs' methods, auth, limits and options may change; other settings take effect at
    /// the next start.
    ///
    /// # Errors
    /// [`ReloadError`]; nothing changed then.
    pub fn reload(&mut self, config: &Config) -> Result<(), ReloadError> {
        let mut hubs = crate::hub::definitions(config)?;
        crate::hub::reconcile(&self.hubs, &mut hubs)?;
        if config.auth.store != self.key_store {
            return Err(ReloadError::KeyStoreKind);
        }
        let keys = match config.auth.store {
            KeyStoreKind::File => Some(Arc::new(KeyStore::load(&config.auth.key_file)?)),
            KeyStoreKind::Redis => None,
        };
        let hubs: Arc<[HubDefinition]> = hubs.into();
        let reload = Arc::new(Reload {
            hubs: Arc::clone(&hubs),
            keys,
        });
        for shard in 0..self.stops.len().max(1) {
            // invariant: shard counts are bounded far below u16::MAX by config validation.
            let id = ShardId(u16::try_from(shard).unwrap_or(u16::MAX));
            // A stopped shard (shutting down) needs no reload.
            let _ = self
                .peers
                .send(id, ShardMessage::Reload(Arc::clone(&reload)));
        }
        self.hubs = hubs;
        Ok(())
    }

    /// The process's counters and readiness facts.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Starts a graceful stop: the server turns not-ready, shards stop accepting (closing their
    /// listening sockets), tell every SignalR client `Close` with `allowReconnect: true`, flush
    /// and close their connections (WebSockets with 1001) within `shutdown.deadline`.
    pub fn shutdown(&mut self) {
        self.stats.set_draining();
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }

    /// Waits for every shard to finish.
    ///
    /// # Errors
    /// The first shard failure.
    pub fn join(mut self) -> Result<(), ServerError> {
        let mut first_error = None;
        for handle in self.threads.drain(..) {
            let name = handle.thread().name().unwrap_or("shard").to_owned();
            let result = match handle.join() {
                Ok(result) => result.map_err(ServerError::from),
                Err(_) => Err(ServerError::Panicked(name)),
            };
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Starts the server described by `config` and returns once every shard runs.
///
/// # Errors
/// See [`ServerError`]: bind failures, a forced io_uring that is unavailable, thread or runtime
/// failures.
pub fn start(config: Arc<Config>) -> Result<ServerHandle, ServerError> {
    if !config.runtime.transparent_huge_pages {
        // Applies to every later page fault of the process, including the allocator's arenas.
        if let Err(error) = nix::sys::prctl::set_thp_disable(true) {
            warn!(%error, "could not disable transparent huge pages");
        }
    }
    let hubs: Arc<[HubDefinition]> = crate::hub::definitions(&config)?.into();
    let keys = match config.auth.store {
        KeyStoreKind::File => SharedKeys::File(Arc::new(KeyStore::load(&config.auth.key_file)?)),
        KeyStoreKind::Redis => SharedKeys::Redis(
            RedisUrl::parse(&config.auth.redis_url).map_err(ServerError::RedisUrl)?,
        ),
    };
    let driver = choose_driver(&config)?;
    let workers = config.workers.get();
    let listeners = bind_listeners(config.listen, workers).map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let local_addr = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(config.listen);
    let cores = if config.runtime.pin_cores {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };

    let (peers, inboxes) = Peers::create(workers);
    let stats = Stats::with_backplane(
        hubs.iter().map(|h| h.name.clone()).collect(),
        workers,
        match config.backplane.kind {
            BackplaneKind::InProcess => "in-process",
            BackplaneKind::Redis => "redis",
        },
    );
    let quota = ConnectionQuota::new(
        config.limits.max_hub_connections,
        config.limits.max_connections_per_key,
    );
    let per_ip = PerIpLimits::new(
        config.limits.max_connections_per_ip,
        config.limits.negotiate_rate_per_ip,
        config.limits.negotiate_burst_per_ip,
    );
    let tokens = Arc::new(config.cluster.token_keys()?);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), ShardError>>();
    let (handle_peers, handle_hubs, key_store) =
        (peers.clone(), Arc::clone(&hubs), config.auth.store);
    let mut stops = Vec::with_capacity(workers);
    let mut threads = Vec::with_capacity(workers);
    for (index, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
        let peers = peers.clone();
        let hubs = Arc::clone(&hubs);
        let keys = keys.clone();
        let shard_stats = Arc::clone(&stats);
        let quota = Arc::clone(&quota);
        let per_ip = Arc::clone(&per_ip);
        let tokens = Arc::clone(&tokens);
        let name = format!("shard-{index}");
        let (stop_tx, stop_rx) = oneshot::channel();
        let config = Arc::clone(&config);
        let ready = ready_tx.clone();
        let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
        // invariant: workers is bounded far below u16::MAX by config validation.
        let id = ShardId(u16::try_from(index).unwrap_or(u16::MAX));
        let spawned = thread::Builder::new().name(name.clone()).spawn(move || {
            if let Some(core) = core {
                if core_affinity::set_for_current(core) {
                    debug!(shard = id.0, core = core.id, "pinned");
                } else {
                    warn!(shard = id.0, core = core.id, "could not pin to core");
                }
            }
            run_shard(
                id,
                driver,
                (listener, inbox),
                SharedParts {
                    config: Arc::clone(&config),
                    peers,
                    hubs,
                    stats: shard_stats,
                    quota,
                    tokens,
                    per_ip,
                },
                keys,
                stop_rx,
                ready,
            )
        });
        match spawned {
            Ok(handle) => {
                stops.push(stop_tx);
                threads.push(handle);
            }
            Err(source) => {
                let mut partial = ServerHandle {
                    local_addr,
                    driver,
                    stats: Arc::clone(&stats),
                    peers: handle_peers.clone(),
                    hubs: Arc::clone(&handle_hubs),
                    key_store,
                    stops,
                    threads,
                };
                partial.shutdown();
                return Err(ServerError::Spawn { name, source });
            }
        }
    }
    drop(ready_tx);
    let mut handle = ServerHandle {
        local_addr,
        driver,
        stats: Arc::clone(&stats),
        peers: handle_peers,
        hubs: handle_hubs,
        key_store,
        stops,
        threads,
    };
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                handle.shutdown();
                return Err(error.into());
            }
            Err(_) => {
                handle.shutdown();
                return Err(ServerError::Panicked("shard".to_owned()));
            }
        }
    }
    info!(addr = %local_addr, shards = workers, driver = driver.as_str(), "listening");
    Ok(handle)
}

/// The key store as the process holds it; each shard makes its [`KeyLookup`] from it.
#[derive(Debug, Clone)]
enum SharedKeys {
    /// The file store, loaded once and shared read-only.
    File(Arc<KeyStore>),
    /// The Redis store: each shard opens its own connections to this URL.
    Redis(RedisUrl),
}

impl SharedKeys {
    /// This shard's lookup (built on the shard's thread: a Redis store is `!Send`).
    fn for_shard(self, config: &Config) -> KeyLookup {
        match self {
            Self::File(store) => KeyLookup::file(store),
            Self::Redis(url) => {
                KeyLookup::Redis(Rc::new(RedisKeyStore::new(url, config.auth.cache_ttl)))
            }
        }
    }
}

/// Picks the driver once for all shards; `auto` falls back to epoll with one log line.
fn choose_driver(config: &Config) -> Result<ActiveDriver, ServerError> {
    let probe = || {
        RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(config.runtime.uring_entries)
            .build()
            .map(drop)
    };
    match config.runtime.driver {
        DriverKind::Legacy => Ok(ActiveDriver::Legacy),
        DriverKind::IoUring => match probe() {
            Ok(()) => Ok(ActiveDriver::IoUring),
            Err(error) => Err(ServerError::IoUringUnavailable(error)),
        },
        DriverKind::Auto => {
            if !monoio::utils::detect_uring() {
                warn!(
                    "io_uring is unavailable (kernel, seccomp or MONOIO_FORCE_LEGACY_DRIVER); falling back to the legacy epoll driver"
                );
                return Ok(ActiveDriver::Legacy);
            }
            match probe() {
                Ok(()) => Ok(ActiveDriver::IoUring),
                Err(error) => {
                    warn!(%error, "io_uring setup failed; falling back to the legacy epoll driver");
                    Ok(ActiveDriver::Legacy)
                }
            }
        }
    }
}

/// The body of a shard thread.
fn run_shard(
    id: ShardId,
    driver: ActiveDriver,
    (listener, inbox): (std::net::TcpListener, Inbox),
    parts: SharedParts,
    keys: SharedKeys,
    stop: oneshot::Receiver<()>,
    ready: mpsc::Sender<Result<(), ShardError>>,
) -> Result<(), ShardError> {
    let runtime_error = |source| ShardError::Runtime {
        shard: id.0,
        driver: driver.as_str(),
        source,
    };
    let config = Arc::clone(&parts.config);
    // Sessions, outboxes and the Redis client count into this shard's counters from here on.
    let _counting = parts.stats.enter(usize::from(id.0));
    let keys = keys.for_shard(&config);
    let backplane = match config.backplane.kind {
        BackplaneKind::InProcess => Backplane::InProcess,
        BackplaneKind::Redis => {
            let hubs: Vec<(String, String)> = parts
                .hubs
                .iter()
                .map(|h| (h.name.clone(), h.redis_name.clone()))
                .collect();
            match RedisBackplane::new(&config.backplane, &hubs) {
                Ok(redis) => Backplane::Redis(Rc::new(redis)),
                Err(reason) => {
                    let _ = ready.send(Err(ShardError::Backplane {
                        shard: id.0,
                        reason,
                    }));
                    return Ok(());
                }
            }
        }
    };
    let ctx = Rc::new(ShardContext::new(id, driver, parts, keys, backplane));
    // The two drivers give runtimes of different types; the steps are the same.
    macro_rules! run_on {
        ($builder:expr) => {
            match $builder.enable_timer().build() {
                Ok(mut runtime) => {
                    let _ = ready.send(Ok(()));
                    runtime.block_on(async {
                        // Connects now, so the first request finds the subscriber up.
                        if let KeyLookup::Redis(store) = &ctx.keys {
                            store.start();
                        }
                        shard::run(ctx, listener, inbox, stop).await
                    })
                }
                Err(source) => {
                    let _ = ready.send(Err(runtime_error(source)));
                    Ok(())
                }
            }
        };
    }
    match driver {
        ActiveDriver::IoUring => run_on!(
            RuntimeBuilder::<IoUringDriver>::new().with_entries(config.runtime.uring_entries)
        ),
        ActiveDriver::Legacy => run_on!(RuntimeBuilder::<LegacyDriver>::new()),
    }
}
