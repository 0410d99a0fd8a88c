//! Configuration: owns the schema, its defaults, the layering of built-in defaults < TOML file
//! < `RINGHUB_*` environment < `--set KEY=VALUE` overrides, and validation into [`Config`].
//!
//! Layers are merged as [`toml::Table`]s with each key's origin remembered, so every error names
//! the full dotted key and where it came from. The set of known keys is derived from the raw
//! default struct, so the schema, the defaults and [`default_config_toml`] cannot drift apart.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use toml::{Table, Value};

/// Origin recorded for values nobody overrode.
const DEFAULT_ORIGIN: &str = "built-in default";
/// Prefix of the environment variables that configure the server.
const ENV_PREFIX: &str = "RINGHUB_";
/// Environment variables with the prefix that the binary reads itself; ignored here.
const RESERVED_ENV: [&str; 2] = ["RINGHUB_CONFIG", "RINGHUB_LOG"];

/// Everything that can go wrong while loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// A config file is not valid TOML.
    #[error("invalid TOML in {origin}: {message}")]
    Syntax {
        /// Where the text came from (usually the file path).
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key that is not part of the schema (usually a typo).
    #[error("unknown key '{key}' in {origin} (known here: {known})")]
    UnknownKey {
        /// Full dotted key, e.g. `http.header_timout`.
        key: String,
        /// File path, environment variable name or `--set KEY=VALUE`.
        origin: String,
        /// The keys that are valid at that level, comma separated.
        known: String,
    },
    /// A known key has a value of the wrong type or out of range.
    #[error("{key} = {value} (from {origin}): {reason}")]
    Invalid {
        /// Full dotted key.
        key: String,
        /// The offending value, rendered as TOML.
        value: String,
        /// File path, environment variable name, `--set KEY=VALUE` or the built-in default.
        origin: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A CLI override without `=`.
    #[error("invalid override '{text}': expected KEY=VALUE, e.g. http.header_timeout=5s")]
    BadOverride {
        /// The override as given.
        text: String,
    },
    /// A [`ByteSize`] string that does not parse.
    #[error("invalid size: {reason}")]
    InvalidSize {
        /// What is wrong with it.
        reason: String,
    },
}

/// A size in bytes, written with human units: `"32KiB"`, `"8 KiB"`, `"16MiB"`, `"1GiB"`, `"512B"`,
/// `"1024"` (plain bytes), or decimal `"KB"`/`"MB"`/`"GB"`/`"TB"` (powers of 1000).
/// Displays in the most compact exact binary unit (`"32KiB"`, `"1000B"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(
    /// Number of bytes.
    pub u64,
);

impl ByteSize {
    /// Units accepted after the number (case-insensitive), with their multipliers.
    const UNITS: [(&'static str, u64); 9] = [
        ("b", 1),
        ("kib", 1 << 10),
        ("mib", 1 << 20),
        ("gib", 1 << 30),
        ("tib", 1 << 40),
        ("kb", 1_000),
        ("mb", 1_000_000),
        ("gb", 1_000_000_000),
        ("tb", 1_000_000_000_000),
    ];

    /// The size in bytes.
    pub const fn as_u64(&self) -> u64 {
        self.0
    }

    /// The size in bytes as `usize`, saturating at `usize::MAX` on narrow targets.
    pub fn as_usize(&self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl FromStr for ByteSize {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, ConfigError> {
        let bad = |reason: String| ConfigError::InvalidSize { reason };
        let trimmed = text.trim();
        let digits_end = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(digits_end);
        if digits.is_empty() {
            return Err(bad(format!(
                "{text:?} must be a whole number of bytes with an optional unit, e.g. \"32KiB\""
            )));
        }
        let unit = unit.trim_start();
        let multiplier = if unit.is_empty() {
            1
        } else if unit.starts_with('.') {
            return Err(bad(format!("{text:?}: fractional sizes are not supported")));
        } else {
            let lower = unit.to_ascii_lowercase();
            let found = Self::UNITS.iter().find(|(name, _)| *name == lower);
            let Some((_, multiplier)) = found else {
                return Err(bad(format!(
                    "unknown unit {unit:?} in {text:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
                )));
            };
            *multiplier
        };
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .map(ByteSize)
            .ok_or_else(|| bad(format!("{text:?} is too large")))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            if self.0 != 0 && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// Which monoio I/O driver each shard runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring when the kernel allows it, otherwise the epoll-based legacy driver.
    Auto,
    /// io_uring only; startup fails if it is unavailable.
    IoUring,
    /// The epoll-based legacy driver only.
    Legacy,
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::IoUring => "io-uring",
            Self::Legacy => "legacy",
        })
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// The validated configuration of the whole server.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Listening address; default `127.0.0.1:8080` (loopback only: set `0.0.0.0:…` to serve others).
    pub listen: SocketAddr,
    /// Number of shards (one thread each); default `0` in files, resolved to the number of
    /// available cores. Fewer shards leave cores to other processes; more than cores only adds
    /// context switches.
    pub workers: NonZeroUsize,
    /// Per-shard runtime settings.
    pub runtime: RuntimeConfig,
    /// HTTP/1.1 request limits.
    pub http: HttpConfig,
    /// WebSocket session limits and timers.
    pub websocket: WebSocketConfig,
    /// Process-wide resource limits.
    pub limits: LimitsConfig,
    /// The raw RFC 6455 echo route used for conformance testing.
    pub echo: EchoConfig,
    /// `GET /metrics` in the Prometheus text format.
    pub metrics: MetricsConfig,
    /// The live status page at `/`.
    pub status_page: StatusPageConfig,
    /// SignalR hub connections (ASP.NET Core `HubOptions` equivalents).
    pub signalr: SignalRConfig,
    /// Cross-origin requests from browsers.
    pub cors: CorsConfig,
    /// The Diagnostics hub (operators and conformance tests).
    pub diagnostics: DiagnosticsConfig,
    /// The built-in hub set of the product document (Conduit's seed).
    pub seed: SeedConfig,
    /// Hubs declared in `[hubs.NAME]` tables, in name order.
    pub hubs: Vec<HubConfig>,
    /// Who may connect to hubs that require a key.
    pub auth: AuthConfig,
    /// The Health hub.
    pub health: HealthConfig,
    /// How shards (and instances) reach each other's connections.
    pub backplane: BackplaneConfig,
    /// What instances behind one load balancer share: the connection-token secret.
    pub cluster: ClusterConfig,
    /// The HTTP client of upstream methods and hub events.
    pub upstream: UpstreamConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Per-shard async runtime settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// I/O driver; default `auto` (io_uring when available, else epoll). Forcing `io-uring`
    /// fails fast on kernels or sandboxes without it; `legacy` trades throughput for portability.
    pub driver: DriverKind,
    /// Pin each shard thread to its own core; default `true`. Better cache locality, but pinned
    /// shards fight with other pinned workloads on a shared host.
    pub pin_cores: bool,
    /// io_uring submission queue entries per shard; default `4096`, a power of two in
    /// `64..=32768`. Larger queues batch more I/O per syscall but lock more kernel memory.
    pub uring_entries: u32,
    /// Let the kernel back the heap with 2 MiB transparent huge pages; default `false`. On:
    /// fewer TLB misses for very large heaps. Off: the heap grows in 4 KiB pages, so memory per
    /// idle connection stays small and there are no compaction stalls.
    pub transparent_huge_pages: bool,
}

/// HTTP/1.1 request limits (handshake and negotiate requests).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// No complete request head within this answers 408; default `10s`. Shorter sheds slowloris
    /// clients sooner but hurts clients on slow links.
    pub header_timeout: Duration,
    /// An idle keep-alive HTTP connection is closed after this; default `75s`. Longer saves
    /// reconnects at the cost of idle sockets.
    pub keepalive_timeout: Duration,
    /// Longest request line in bytes, else 414; default `8KiB`. Larger allows long query strings
    /// (access tokens) but lets each client pin more buffer.
    pub max_request_line: usize,
    /// Largest header block in bytes, else 431; default `32KiB`. Larger admits big cookies but
    /// raises the per-connection memory bound.
    pub max_header_block: usize,
    /// Most header fields per request, else 431; default `100`. Bounds parsing work per request.
    pub max_headers: usize,
    /// Largest request body in bytes, else 413; default `1MiB`; `0` rejects any body. Larger
    /// allows bigger negotiate/long-polling payloads but more memory per request.
    pub max_body_size: usize,
}

/// WebSocket session limits and timers.
#[derive(Debug, Clone, PartialEq)]
pub struct WebSocketConfig {
    /// Largest reassembled WebSocket message in bytes, else close 1009; default `1MiB`. A SignalR
    /// client batches many hub messages into one WebSocket message (each hub message is limited
    /// by `signalr.max_message_size`); larger raises the worst case memory per connection.
    pub max_message_size: usize,
    /// Nothing received for this long closes with 1001 (the echo route; hub connections end by
    /// `signalr.client_timeout`); default `60s`, must exceed `ping_interval`. Shorter frees dead
    /// peers sooner but risks dropping slow ones.
    pub idle_timeout: Duration,
    /// A silent peer is pinged after this; default `20s`. Shorter keeps NAT mappings alive and
    /// detects dead peers sooner at the cost of more traffic.
    pub ping_interval: Duration,
    /// How long to wait for the peer's close frame after ours; default `5s`. Longer is politer,
    /// shorter frees sockets faster.
    pub close_timeout: Duration,
    /// A single write to the peer taking longer than this ends the connection (slow consumer);
    /// default `10s`. Shorter frees memory queued for stalled peers sooner but drops clients on
    /// congested links. Not in the original schema: added for the transport's send bound.
    pub send_timeout: Duration,
}

/// Process-wide resource limits.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Maximum open connections per process, split evenly across shards; default `20000`.
    /// Higher needs more file descriptors and memory; excess connections are refused.
    pub max_connections: NonZeroUsize,
    /// SignalR connections per process (0 = only `max_connections` applies); negotiate and
    /// upgrade answer 429 beyond it.
    pub max_hub_connections: usize,
    /// SignalR connections per virtual key across the process (0 = no limit); 429 beyond it.
    pub max_connections_per_key: usize,
    /// Open TCP connections per client IP address across every shard (IPv6: per /64); default
    /// `1000`, `0` = no limit. Beyond it a new connection is answered 429 and closed. Counted
    /// in a fixed lock-free table ([`crate::transport::per_ip`]): a collision can only make an
    /// address look busier than it is. Set `0` behind a proxy that does not keep client
    /// addresses (every connection would share the proxy's).
    pub max_connections_per_ip: usize,
    /// Sustained negotiate requests per second per client IP address (token bucket); default
    /// `50`, `0` = no limit. Beyond it negotiate answers 429 with `Retry-After`.
    pub negotiate_rate_per_ip: u32,
    /// Negotiates one IP address may make at once above the rate; default `200` (a NAT'd
    /// office reconnecting after a restart).
    pub negotiate_burst_per_ip: u32,
}

/// The raw RFC 6455 echo route (for Autobahn conformance runs).
#[derive(Debug, Clone, PartialEq)]
pub struct EchoConfig {
    /// Serve the echo route; default `false`. It is an unauthenticated reflector: keep it off in
    /// production.
    pub enabled: bool,
    /// Path of the echo route; default `/ws/echo`; must start with `/`.
    pub path: String,
    /// Largest echoed message in bytes; default `16MiB` (Autobahn sends large messages). Only
    /// applies to the echo route.
    pub max_message_size: usize,
}

/// The Prometheus endpoint ([`crate::metrics`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Serve the metrics endpoint; default `true`.
    pub enabled: bool,
    /// Its path; default `/metrics`; must start with `/`.
    pub path: String,
    /// SHA-256 (lowercase hex) of the scrape key; when set, a scrape must send
    /// `Authorization: Bearer KEY` and is answered 401 otherwise. Default: none (open, as
    /// Prometheus targets usually are behind the load balancer).
    pub key_hash: Option<String>,
}

/// The live status page at `/` ([`crate::http::status_page`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPageConfig {
    /// Serve the status page at `/`; default `true`. It is a static document: what it shows
    /// comes from the Health hub, whose own auth applies (a key-protected Health hub keeps the
    /// numbers private); turn it off to answer 404 at `/`.
    pub enabled: bool,
}

/// SignalR hub connections; defaults are ASP.NET Core's except stateful reconnect (on here).
#[derive(Debug, Clone, PartialEq)]
pub struct SignalRConfig {
    /// Server Ping interval; default `15s` (`KeepAliveInterval`). Must stay below the client's
    /// 30 s server timeout.
    pub keepalive_interval: Duration,
    /// Close a client silent for this long after its first Ping; default `30s`
    /// (`ClientTimeoutInterval`).
    pub client_timeout: Duration,
    /// The handshake must arrive within this; default `15s` (`HandshakeTimeout`).
    pub handshake_timeout: Duration,
    /// Largest hub message accepted, framing included; default `32KiB`
    /// (`MaximumReceiveMessageSize`). Larger closes the connection with an error.
    pub max_message_size: usize,
    /// Hub methods a client may run at once; default `1` (`MaximumParallelInvocationsPerClient`).
    /// Further invocations wait for a free slot.
    pub max_parallel_invocations: NonZeroUsize,
    /// Items buffered per client-to-server stream; default `10` (`StreamBufferCapacity`).
    pub stream_buffer_capacity: NonZeroUsize,
    /// Send exception details to clients; default `false` (`EnableDetailedErrors`). Useful in
    /// development, a leak in production.
    pub detailed_errors: bool,
    /// Offer stateful reconnect to clients that ask; default `true` (ASP.NET: off).
    pub stateful_reconnect: bool,
    /// Unacknowledged bytes kept for resending per connection; default `100000`
    /// (`StatefulReconnectBufferSize`). When full, sending waits for Acks.
    pub stateful_reconnect_buffer: usize,
    /// How long a negotiated token can start a connection (its signed expiry), and how long a
    /// dropped stateful connection is kept; default `15s` (`DisconnectTimeout`).
    pub disconnect_timeout: Duration,
    /// Messages queued for one connection beyond this many bytes close it as a slow consumer
    /// (SignalR `Close` with an error); default `1MiB`. Nothing else waits for it.
    pub max_outbound: usize,
    /// Sustained hub invocations per second per connection (token bucket); default `10`. More
    /// get the Completion error `Rate limit exceeded`.
    pub invocation_rate: u32,
    /// Invocations a connection may make at once above the rate; default `20`.
    pub invocation_burst: u32,
    /// Groups one connection may be in at once; default `128` (Centrifugo's
    /// `ClientChannelLimit`), `0` = no limit. A join beyond it fails: a hub method with a
    /// Completion error, the REST API with 409. The groups a connection is put in when it
    /// connects (its key's `vkey-{id}`, the hub's `join_on_connect`) do not count.
    pub max_groups_per_connection: usize,
    /// Events conflated per connection and task (progress-like events; finals always pass).
    pub conflate_events: Vec<String>,
    /// Conflated events sent per second per connection and event key.
    pub conflate_rate: u32,
    /// How long each shard keeps a streamed response's chunks (`POST …/streams/{key}/:item`)
    /// for clients that subscribe late; default `30s`. Zero keeps nothing.
    pub stream_backlog_window: Duration,
    /// Chunks kept per stream key within the window; default `1024`. Beyond it the oldest are
    /// dropped, and a later subscriber is told items were lost.
    pub stream_backlog_items: NonZeroUsize,
    /// Bytes of chunks (their JSON size) kept per stream key within the window; default `1MiB`.
    pub stream_backlog_bytes: usize,
}

/// Cross-origin resource sharing for the negotiate endpoint (the REST API is for backends and sends no CORS headers).
#[derive(Debug, Clone, PartialEq)]
pub struct CorsConfig {
    /// Origins allowed to call with credentials, e.g. `https://app.example.com`; default none.
    /// `"*"` echoes any origin back (credentials need an exact origin, never `*`).
    pub allowed_origins: Vec<String>,
}

/// The Diagnostics hub: `Echo`, streams, errors, headers; for operators and conformance tests.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagnosticsConfig {
    /// Serve the hub; default `false`.
    pub enabled: bool,
    /// Its path; default `/hubs/diagnostics`.
    pub path: String,
}

/// The built-in seed hub set.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedConfig {
    /// Serve the seed's hubs; default `true`. A `[hubs.NAME]` table with the same path replaces
    /// the built-in definition of that hub.
    pub enabled: bool,
}

/// A hub declared in configuration: `[hubs.NAME]` with a path, an auth mode, an optional message
/// limit and a table of methods, each bound to a built-in action by name.
#[derive(Debug, Clone, PartialEq)]
pub struct HubConfig {
    /// The table's name (used in logs and metrics).
    pub name: String,
    /// The URL path clients connect to; must start with `/`.
    pub path: String,
    /// Who may connect.
    pub auth: HubAuth,
    /// Overrides `signalr.max_message_size` for this hub.
    pub max_message_size: Option<usize>,
    /// Method name → what it does, in the order written. Written either as a string
    /// `"action[:group-template]"` or as a table (see [`MethodConfig`]).
    pub methods: Vec<(String, MethodConfig)>,
    /// Hub protocols the hub accepts in the handshake (`"json"`, `"messagepack"`); both by
    /// default, as ASP.NET's `SupportedProtocols` when both are registered.
    pub protocols: Vec<String>,
    /// Groups every connection joins when it connects (e.g. `["admin"]`); none by default.
    pub join_on_connect: Vec<String>,
    /// The hub's name on the Redis backplane (ASP.NET uses the hub class's full name, e.g.
    /// `ConduitLLM.Http.Hubs.ImageGenerationHub`); the table name when unset.
    pub redis_name: Option<String>,
    /// `http://` URL that connect and disconnect events are POSTed to; none by default.
    pub events_url: Option<String>,
}

/// One hub method of a `[hubs.NAME]` table: a built-in action plus optional modifiers. The
/// string form `"join-group:image-{0}"` is the action with a group template and no modifiers;
/// the table form spells each part out:
///
/// ```toml
/// [hubs.usage-analytics.methods.SubscribeToAnalytics]
/// action = "join-group"
/// group = "analytics-{0}-{vkey}"
/// allowed = ["usage", "cost", "performance", "errors"]
/// reply = "SubscribedToAnalytics"
/// admin = false
/// ```
///
/// Only the shape is checked here; which modifiers and placeholders an action accepts is
/// checked when the hub is built ([`crate::hub::definitions`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MethodConfig {
    /// The built-in action's name, e.g. `join-group`.
    pub action: String,
    /// For the group actions: the group name, with placeholders `{0}` (the first argument,
    /// optionally transformed: `{0|lower}`, `{0|url}`) and `{vkey}` (the caller's virtual key).
    pub group: Option<String>,
    /// The first argument must be one of these (compared case-insensitively); empty = any.
    pub allowed: Vec<String>,
    /// After success, this event is sent to the caller with the method's arguments.
    pub reply: Option<String>,
    /// Only admin principals (admin keys, virtual keys marked admin) may call the method.
    pub admin: bool,
    /// For `action = "upstream"`: the `http://` URL the invocation is POSTed to.
    pub url: Option<String>,
}

impl From<&str> for MethodConfig {
    /// The string form: `action` or `action:group-template`.
    fn from(text: &str) -> Self {
        let (action, group) = match text.split_once(':') {
            Some((action, group)) => (action, Some(group.to_owned())),
            None => (text, None),
        };
        Self {
            action: action.to_owned(),
            group,
            ..Self::default()
        }
    }
}

impl From<String> for MethodConfig {
    fn from(text: String) -> Self {
        Self::from(text.as_str())
    }
}

/// The keys a method table (`[hubs.NAME.methods.METHOD]`) may have.
const METHOD_KEYS: [&str; 6] = ["action", "group", "allowed", "reply", "admin", "url"];

/// Who may connect to a hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubAuth {
    /// Anyone (`auth = "anonymous"`, the default).
    Anonymous,
    /// A virtual key (or an admin key) (`auth = "virtual-key"`).
    VirtualKey,
    /// An admin key only (`auth = "admin"`).
    Admin,
}

/// Keys for hubs that require one.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// The file store of hashed virtual keys; default `ringhub-keys.json` (relative to the
    /// working directory). `ringhub keys add` creates it; a missing file means no keys.
    pub key_file: PathBuf,
    /// SHA-256 (lowercase hex) of admin keys; default none. Admin keys are accepted wherever a
    /// virtual key is, and are the only keys the admin hubs accept.
    pub admin_key_hashes: Vec<String>,
    /// SHA-256 (lowercase hex) of server keys: backends publishing through the REST API.
    pub server_key_hashes: Vec<String>,
    /// Where virtual keys are looked up.
    pub store: KeyStoreKind,
    /// The Redis server of the `redis` key store (`redis://[user:pass@]host[:port][/db]`).
    pub redis_url: String,
    /// How long a key read from Redis is trusted before it is read again.
    pub cache_ttl: Duration,
}

/// Where virtual keys are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStoreKind {
    /// The JSON file `auth.key_file` (the embedded default).
    File,
    /// Conduit's Redis entries `vkey:<sha256>`, cached per shard and invalidated by
    /// `vkey_invalidated` messages.
    Redis,
}

/// Which backplane carries messages between shards and instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackplaneKind {
    /// Per-shard inboxes inside one process (one instance).
    InProcess,
    /// The ASP.NET Core Redis backplane: every shard is a participant with its own
    /// connections; .NET SignalR servers on the same Redis and prefix share it.
    Redis,
}

/// The `[backplane]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackplaneConfig {
    /// Which backplane.
    pub kind: BackplaneKind,
    /// The Redis server (`redis://[user:pass@]host[:port][/db]`).
    pub redis_url: String,
    /// Prepended to every channel name with no separator (ASP.NET's `ChannelPrefix`, e.g.
    /// Conduit's `conduit_signalr:`).
    pub channel_prefix: String,
    /// Publishes a shard may have waiting for Redis; beyond it (Redis slow or down) messages
    /// are dropped and counted, so client traffic never waits for Redis.
    pub publish_queue: usize,
    /// A group command for a connection on another server waits this long for its ack.
    pub ack_timeout: Duration,
}

/// The `[cluster]` section: what every instance behind one load balancer must share so a
/// client's WebSocket may land on any of them (no sticky sessions).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterConfig {
    /// Signs connection tokens (`cluster.secret`, or read from `cluster.secret_file`); default
    /// none: a random secret per process, so only the instance that negotiated accepts its
    /// tokens. Every instance of a cluster must be given the same one.
    pub secret: Option<ClusterSecret>,
    /// Secrets that still verify tokens but no longer sign them, for rotation; default none.
    pub previous_secrets: Vec<ClusterSecret>,
}

impl ClusterConfig {
    /// The token keys these secrets make (a random secret when none is set).
    ///
    /// # Errors
    /// [`crate::hub::identity::RandomUnavailable`] when a random secret is needed and the OS
    /// cannot give one.
    pub fn token_keys(
        &self,
    ) -> Result<crate::hub::identity::TokenKeys, crate::hub::identity::RandomUnavailable> {
        let previous: Vec<&[u8]> = self.previous_secrets.iter().map(|s| s.expose()).collect();
        crate::hub::identity::TokenKeys::new(self.secret.as_ref().map(|s| s.expose()), &previous)
    }
}

/// A cluster secret. Its `Debug` form never shows it, and config errors about it never
/// repeat it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Box<[u8]>);

impl ClusterSecret {
    /// The shortest secret accepted, in bytes (`openssl rand -base64 32` gives 44).
    pub const MIN_LEN: usize = 32;

    /// A secret from its bytes (callers check [`Self::MIN_LEN`]).
    pub fn new(bytes: impl Into<Box<[u8]>>) -> Self {
        Self(bytes.into())
    }

    /// The key material, for the token keys only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(redacted)")
    }
}

/// Keys whose values are secrets: never repeated in an error.
const SECRET_KEYS: [&str; 2] = ["cluster.secret", "cluster.previous_secrets"];

/// The Health hub's periodic snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// How often `HealthStatus` is pushed to every connection of a hub with a `health` method.
    pub push_interval: Duration,
}

/// The HTTP client that calls backends: methods bound to `upstream` and hubs' `events_url`.
/// Each shard has its own client and connection pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// A call (connect, request and whole response) taking longer than this fails; default
    /// `10s`. Shorter frees invocation slots sooner; longer tolerates slow backends.
    pub timeout: Duration,
    /// Idle keep-alive connections kept per backend `host:port` and shard; default `8`; `0`
    /// closes every connection after its response. More saves connects under bursts at the
    /// cost of idle sockets on the backend.
    pub max_idle_per_host: usize,
    /// Largest response body accepted; default `1MiB`. A larger answer fails the call.
    pub max_body: usize,
}

/// Graceful shutdown.
#[derive(Debug, Clone, PartialEq)]
pub struct ShutdownConfig {
    /// Graceful stop must finish within this, then connections are dropped; default `10s`.
    /// Longer lets clients reconnect elsewhere cleanly but delays restarts.
    pub deadline: Duration,
    /// After SIGTERM, how long the server stays up but not ready (`/health/ready` 503
    /// "draining") before it stops accepting and closes connections; default `0s`. Set it to
    /// the load balancer's health-check interval times its unhealthy threshold so it stops
    /// sending new clients first.
    pub drain_delay: Duration,
}

/// Logging.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `tracing` EnvFilter directives; default `info`, e.g. `info,ringhub::transport=debug`.
    /// More verbose levels cost throughput on hot paths.
    pub level: String,
    /// Output format; default `text`. `json` is for log shippers and less readable by humans.
    pub format: LogFormat,
}

/// Where a configuration comes from, in increasing priority after the built-in defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigSources {
    /// TOML file given with `--config`; `None` means defaults only.
    pub file: Option<PathBuf>,
    /// The process environment as pairs; only `RINGHUB_*` names are used, except the reserved
    /// `RINGHUB_CONFIG` and `RINGHUB_LOG`. `RINGHUB_HTTP__HEADER_TIMEOUT` sets `http.header_timeout`.
    pub env: Vec<(String, String)>,
    /// CLI `KEY=VALUE` overrides with dotted keys, e.g. `http.header_timeout=5s`; later wins.
    pub overrides: Vec<String>,
}

/// The serde form of the schema with human-unit strings; only used for the defaults.
#[derive(Serialize)]
struct RawConfig {
    listen: &'static str,
    workers: u64,
    runtime: RawRuntime,
    http: RawHttp,
    websocket: RawWebSocket,
    limits: RawLimits,
    echo: RawEcho,
    metrics: RawMetrics,
    status_page: RawStatusPage,
    signalr: RawSignalR,
    auth: RawAuth,
    health: RawHealth,
    backplane: RawBackplane,
    cluster: RawCluster,
    upstream: RawUpstream,
    cors: RawCors,
    diagnostics: RawDiagnostics,
    seed: RawSeed,
    shutdown: RawShutdown,
    log: RawLog,
}

#[derive(Serialize)]
struct RawSignalR {
    keepalive_interval: &'static str,
    client_timeout: &'static str,
    handshake_timeout: &'static str,
    max_message_size: &'static str,
    max_parallel_invocations: u64,
    stream_buffer_capacity: u64,
    detailed_errors: bool,
    stateful_reconnect: bool,
    stateful_reconnect_buffer: u64,
    disconnect_timeout: &'static str,
    max_outbound: &'static str,
    invocation_rate: u32,
    invocation_burst: u32,
    max_groups_per_connection: u64,
    conflate_events: Vec<&'static str>,
    conflate_rate: u32,
    stream_backlog_window: &'static str,
    stream_backlog_items: u64,
    stream_backlog_bytes: &'static str,
}

#[derive(Serialize)]
struct RawAuth {
    store: &'static str,
    key_file: &'static str,
    redis_url: &'static str,
    cache_ttl: &'static str,
    admin_key_hashes: Vec<&'static str>,
    server_key_hashes: Vec<&'static str>,
}

#[derive(Serialize)]
struct RawCluster {
    secret: &'static str,
    secret_file: &'static str,
    previous_secrets: Vec<&'static str>,
}

#[derive(Serialize)]
struct RawBackplane {
    kind: &'static str,
    redis_url: &'static str,
    channel_prefix: &'static str,
    publish_queue: u64,
    ack_timeout: &'static str,
}

#[derive(Serialize)]
struct RawHealth {
    push_interval: &'static str,
}

#[derive(Serialize)]
struct RawUpstream {
    timeout: &'static str,
    max_idle_per_host: u64,
    max_body: &'static str,
}

#[derive(Serialize)]
struct RawCors {
    allowed_origins: Vec<&'static str>,
}

#[derive(Serialize)]
struct RawSeed {
    enabled: bool,
}

#[derive(Serialize)]
struct RawDiagnostics {
    enabled: bool,
    path: &'static str,
}

#[derive(Serialize)]
struct RawRuntime {
    driver: &'static str,
    pin_cores: bool,
    uring_entries: u32,
    transparent_huge_pages: bool,
}

#[derive(Serialize)]
struct RawHttp {
    header_timeout: &'static str,
    keepalive_timeout: &'static str,
    max_request_line: &'static str,
    max_header_block: &'static str,
    max_headers: u64,
    max_body_size: &'static str,
}

#[derive(Serialize)]
struct RawWebSocket {
    max_message_size: &'static str,
    idle_timeout: &'static str,
    ping_interval: &'static str,
    close_timeout: &'static str,
    send_timeout: &'static str,
}

#[derive(Serialize)]
struct RawLimits {
    max_connections: u64,
    max_hub_connections: u64,
    max_connections_per_key: u64,
    max_connections_per_ip: u64,
    negotiate_rate_per_ip: u32,
    negotiate_burst_per_ip: u32,
}

#[derive(Serialize)]
struct RawEcho {
    enabled: bool,
    path: &'static str,
    max_message_size: &'static str,
}

#[derive(Serialize)]
struct RawMetrics {
    enabled: bool,
    path: &'static str,
    key_hash: &'static str,
}

#[derive(Serialize)]
struct RawStatusPage {
    enabled: bool,
}

#[derive(Serialize)]
struct RawShutdown {
    deadline: &'static str,
    drain_delay: &'static str,
}

#[derive(Serialize)]
struct RawLog {
    level: &'static str,
    format: &'static str,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080",
            workers: 0,
            runtime: RawRuntime {
                driver: "auto",
                pin_cores: true,
                uring_entries: 4096,
                transparent_huge_pages: false,
            },
            http: RawHttp {
                header_timeout: "10s",
                keepalive_timeout: "75s",
                max_request_line: "8KiB",
                max_header_block: "32KiB",
                max_headers: 100,
                max_body_size: "1MiB",
            },
            websocket: RawWebSocket {
                max_message_size: "1MiB",
                idle_timeout: "60s",
                ping_interval: "20s",
                close_timeout: "5s",
                send_timeout: "10s",
            },
            limits: RawLimits {
                max_connections: 20_000,
                max_hub_connections: 19_000,
                max_connections_per_key: 100,
                max_connections_per_ip: 1000,
                negotiate_rate_per_ip: 50,
                negotiate_burst_per_ip: 200,
            },
            echo: RawEcho {
                enabled: false,
                path: "/ws/echo",
                max_message_size: "16MiB",
            },
            metrics: RawMetrics {
                enabled: true,
                path: "/metrics",
                key_hash: "",
            },
            status_page: RawStatusPage { enabled: true },
            signalr: RawSignalR {
                keepalive_interval: "15s",
                client_timeout: "30s",
                handshake_timeout: "15s",
                max_message_size: "32KiB",
                max_parallel_invocations: 1,
                stream_buffer_capacity: 10,
                detailed_errors: false,
                stateful_reconnect: true,
                stateful_reconnect_buffer: 100_000,
                disconnect_timeout: "15s",
                max_outbound: "1MiB",
                invocation_rate: 10,
                invocation_burst: 20,
                max_groups_per_connection: 128,
                conflate_events: vec![
                    "ImageProgress",
                    "VideoStatus",
                    "VideoProgress",
                    "ImageGenerationProgress",
                    "VideoGenerationProgress",
                    "ContentGenerationProgress",
                ],
                conflate_rate: 10,
                stream_backlog_window: "30s",
                stream_backlog_items: 1024,
                stream_backlog_bytes: "1MiB",
            },
            auth: RawAuth {
                store: "file",
                key_file: "ringhub-keys.json",
                redis_url: "redis://127.0.0.1:6379",
                cache_ttl: "30s",
                admin_key_hashes: Vec::new(),
                server_key_hashes: Vec::new(),
            },
            health: RawHealth {
                push_interval: "5s",
            },
            backplane: RawBackplane {
                kind: "in-process",
                redis_url: "redis://127.0.0.1:6379",
                channel_prefix: "",
                publish_queue: 10_000,
                ack_timeout: "5s",
            },
            cluster: RawCluster {
                secret: "",
                secret_file: "",
                previous_secrets: Vec::new(),
            },
            upstream: RawUpstream {
                timeout: "10s",
                max_idle_per_host: 8,
                max_body: "1MiB",
            },
            cors: RawCors {
                allowed_origins: Vec::new(),
            },
            diagnostics: RawDiagnostics {
                enabled: false,
                path: "/hubs/diagnostics",
            },
            seed: RawSeed { enabled: true },
            shutdown: RawShutdown {
                deadline: "10s",
                drain_delay: "0s",
            },
            log: RawLog {
                level: "info",
                format: "text",
            },
        }
    }
}

/// One line per section and key of [`default_config_toml`], in the order printed:
/// `key|what it does` or `key|what it does|its trade-off`. The configuration reference
/// ([`reference_markdown`]) is generated from the same lines.
const DOCS: &str = "\
listen|Address to listen on, e.g. \"0.0.0.0:8080\" or \"[::]:8080\".
workers|Shards (one thread each); 0 = one per available core.|Fewer shards leave cores to other processes; more shards than cores only add context switches.
runtime|Per-shard async runtime.
runtime.driver|I/O driver: \"auto\" (io_uring, else epoll), \"io-uring\" or \"legacy\".|Forcing io-uring fails fast on kernels or sandboxes without it; legacy trades throughput for portability.
runtime.pin_cores|Pin each shard thread to its own CPU core (turn off on busy shared hosts).|Pinned shards keep their caches warm but fight with other pinned workloads on a shared host.
runtime.uring_entries|io_uring queue entries per shard: a power of two from 64 to 32768.|Larger queues batch more I/O per system call but lock more kernel memory.
runtime.transparent_huge_pages|Back the heap with 2 MiB transparent huge pages (more RSS per idle connection).|On: fewer TLB misses for very large heaps. Off: the heap grows in 4 KiB pages, so an idle connection costs less memory and there are no compaction stalls.
http|HTTP/1.1 request limits (WebSocket handshake and negotiate requests).
http.header_timeout|No complete request head within this -> 408. Durations: 500ms, 30s, 1m.|Shorter sheds slowloris clients sooner but hurts clients on slow links.
http.keepalive_timeout|An idle keep-alive HTTP connection is closed after this.|Longer saves reconnects at the cost of idle sockets.
http.max_request_line|Longest request line -> 414. Sizes: 512B, 8KiB, 1MiB, 1GiB (or KB, MB, GB).|Larger allows long query strings (access tokens) but lets each client pin more buffer.
http.max_header_block|Largest header block -> 431.|Larger admits big cookies but raises the per-connection memory bound.
http.max_headers|Most header fields in one request -> 431.|Bounds the parsing work per request.
http.max_body_size|Largest request body -> 413 (0 rejects any body).|Larger admits bigger request bodies (REST publish) at more memory per request.
websocket|WebSocket sessions.
websocket.max_message_size|Largest reassembled message -> close 1009.|A SignalR client batches many hub messages into one WebSocket message (each bounded by signalr.max_message_size); larger raises the worst-case memory per connection.
websocket.idle_timeout|Nothing received for this long -> close 1001 (echo route; hub connections end by signalr.client_timeout); must exceed ping_interval.|Shorter frees dead peers sooner but risks dropping slow ones.
websocket.ping_interval|Ping a peer that has been silent for this long.|Shorter keeps NAT mappings alive and finds dead peers sooner, at the cost of more traffic.
websocket.close_timeout|Wait this long for the peer's close frame after sending ours.|Longer is politer; shorter frees sockets faster.
websocket.send_timeout|A write to the peer stalled this long ends the connection (slow consumer).|Shorter frees memory queued for stalled peers sooner but drops clients on congested links.
limits|Process-wide limits.
limits.max_connections|Open connections per process, split evenly across shards.|Higher needs more file descriptors (ulimit -n) and memory; excess connections are refused with 503.
limits.max_hub_connections|SignalR connections per process; negotiate answers 429 beyond it (0 = no limit).
limits.max_connections_per_key|SignalR connections per virtual key; negotiate answers 429 beyond it (0 = no limit).
limits.max_connections_per_ip|Open connections per client IP (IPv6: per /64) across shards; 429 beyond it (0 = no limit; use 0 behind a proxy that hides client addresses).|Counted in a fixed lock-free table: a collision can only make an address look busier than it is.
limits.negotiate_rate_per_ip|Negotiate requests per second per client IP; 429 with Retry-After beyond it (0 = no limit).
limits.negotiate_burst_per_ip|Negotiates one client IP may make at once above the rate.|Room for a NAT'd office reconnecting after a restart.
echo|Raw RFC 6455 echo route for conformance tests (Autobahn).
echo.enabled|Serve the echo route; keep it off in production.|It is an unauthenticated reflector.
echo.path|Path of the echo route; must start with '/'.
echo.max_message_size|Largest message the echo route accepts.|Autobahn sends large messages; applies to the echo route only.
metrics|Prometheus metrics (text format 0.0.4).
metrics.enabled|Serve the metrics endpoint.
metrics.path|Path of the metrics endpoint; must start with '/'.
metrics.key_hash|SHA-256 (lowercase hex) of a scrape key, e.g. from: printf %s KEY | sha256sum; scrapes then need 'Authorization: Bearer KEY'. Empty: no key.|Open by default, as Prometheus targets usually are, behind the load balancer.
status_page|The live status page at '/' (connections, messages/s, backplane), fed by the Health hub.
status_page.enabled|Serve the status page at '/'; its numbers need the Health hub (and its key, if it has one).
signalr|SignalR hub connections (ASP.NET Core HubOptions equivalents).
signalr.keepalive_interval|Server Ping interval (clients time out after 30s without one).
signalr.client_timeout|Close a client silent this long after its first Ping.
signalr.handshake_timeout|The SignalR handshake must arrive within this.
signalr.max_message_size|Largest hub message accepted, framing included; larger closes with an error.
signalr.max_parallel_invocations|Hub methods one client may run at once; more wait.
signalr.stream_buffer_capacity|Items buffered per client-to-server stream.
signalr.detailed_errors|Send exception details to clients (development only).|Useful in development, a leak in production.
signalr.stateful_reconnect|Offer stateful reconnect (resend after a dropped socket) to clients that ask.|On here; ASP.NET Core's default is off.
signalr.stateful_reconnect_buffer|Unacknowledged bytes kept per connection for resending, in bytes.|When it is full, sending waits for the client's Acks; nothing is dropped.
signalr.disconnect_timeout|Negotiated tokens expire this long after negotiate; dropped stateful connections are kept this long.
signalr.max_outbound|Bytes queued for one slow connection before it is closed (nobody else waits).|Larger rides out longer bursts to a slow reader at more memory per connection.
signalr.invocation_rate|Hub invocations per second per connection; more get a Rate limit exceeded error.
signalr.invocation_burst|Invocations allowed at once above the rate.
signalr.max_groups_per_connection|Groups one connection may be in (its key's and join_on_connect groups not counted); joins beyond it fail (0 = no limit).
signalr.conflate_events|Progress events conflated per connection and task: newest wins, finals (completed/failed) always pass.
signalr.conflate_rate|Conflated events sent per second per connection and task.|Higher sends fresher progress at more messages per connection.
signalr.stream_backlog_window|Keep streamed-response chunks this long for clients that subscribe late (0s: none).|Longer serves later subscribers at more memory per stream key.
signalr.stream_backlog_items|Chunks kept per stream key; beyond it the oldest are dropped and late subscribers get an error.
signalr.stream_backlog_bytes|Bytes of chunks (JSON size) kept per stream key; beyond it the oldest are dropped.
auth|Keys for hubs that require one (auth = virtual-key or admin).
auth.store|Where virtual keys are looked up: \"file\" (auth.key_file) or \"redis\" (Conduit's vkey:<sha256> entries).
auth.key_file|File store of hashed virtual keys; `ringhub keys add --name NAME` creates keys in it.
auth.redis_url|Redis of the redis key store: redis://[user:pass@]host[:port][/db].
auth.cache_ttl|A key read from Redis is trusted this long; vkey_invalidated messages end it sooner.
auth.admin_key_hashes|SHA-256 (lowercase hex) of admin keys, e.g. from: printf %s KEY | sha256sum
auth.server_key_hashes|SHA-256 (lowercase hex) of server keys, which backends present to the REST publish API.
health|The Health hub.
health.push_interval|HealthStatus is pushed to Health hub connections this often.
backplane|How shards and instances reach each other's connections.
backplane.kind|\"in-process\" (one instance) or \"redis\" (ASP.NET Core's Redis backplane; shared with .NET servers).
backplane.redis_url|Redis of the backplane: redis://[user:pass@]host[:port][/db].
backplane.channel_prefix|Prepended to every channel name, e.g. \"conduit_signalr:\" (ASP.NET's ChannelPrefix).
backplane.publish_queue|Publishes a shard may have waiting for Redis; more are dropped and counted.|Client traffic never waits for Redis; a larger queue rides out longer Redis stalls at more memory.
backplane.ack_timeout|A group change for a connection on another server waits this long for its ack.
cluster|Instances behind one load balancer: set the same secret on every one, and a WebSocket may land on any (no sticky sessions).
cluster.secret|Signs connection tokens; at least 32 bytes, e.g. from: openssl rand -base64 32. Empty: a random one per process (single instance). Prefer RINGHUB_CLUSTER__SECRET or secret_file to a file others can read.
cluster.secret_file|File holding the secret (surrounding white space ignored); instead of cluster.secret.
cluster.previous_secrets|Secrets that still verify tokens but no longer sign them, while a new secret rolls out.
upstream|The HTTP client of upstream methods (action = \"upstream\") and hub events_url (http:// only).
upstream.timeout|A backend call (connect, request, whole response) failing after this -> Completion error.|Shorter frees invocation slots sooner; longer tolerates slow backends.
upstream.max_idle_per_host|Idle keep-alive connections kept per backend host:port and shard (0 = no reuse).|More saves connects under bursts at the cost of idle sockets on the backend.
upstream.max_body|Largest backend response body; larger fails the call.
cors|Cross-origin requests from browsers (negotiate; the REST API is for backends and sends no CORS headers).
cors.allowed_origins|Origins allowed with credentials, e.g. [\"https://app.example.com\"]; \"*\" echoes any.
diagnostics|The Diagnostics hub (Echo, streams, errors) for operators and conformance tests.
diagnostics.enabled|Serve the Diagnostics hub.
diagnostics.path|Path of the Diagnostics hub.
seed|The built-in hub set of the product document (see the README).
seed.enabled|Serve the seed hubs; a [hubs.NAME] table with the same path replaces one.
shutdown|Graceful shutdown.
shutdown.deadline|A graceful stop must finish within this; then connections are dropped.|Longer lets clients reconnect elsewhere cleanly but delays restarts.
shutdown.drain_delay|After SIGTERM, stay up but not ready (/health/ready 503) this long before closing; match the load balancer's health checks.|Set it to the load balancer's health-check interval times its unhealthy threshold.
log|Logging.
log.level|tracing EnvFilter directives, e.g. \"info,ringhub::transport=debug\".|More verbose levels cost throughput on hot paths.
log.format|\"text\" or \"json\".|json is for log shippers and is harder for humans to read.
";

/// `(position, comment)` of a section or dotted key in [`DOCS`]; unknown keys sort last.
fn doc_for(key: &str) -> (usize, &'static str) {
    let (position, comment, _) = doc_entry(key);
    (position, comment)
}

/// `(position, comment, trade-off)` of a section or dotted key in [`DOCS`].
fn doc_entry(key: &str) -> (usize, &'static str, Option<&'static str>) {
    DOCS.lines()
        .enumerate()
        .find_map(|(i, line)| {
            let doc = line.strip_prefix(key)?.strip_prefix('|')?;
            Some(match doc.split_once('|') {
                Some((comment, trade_off)) => (i, comment, Some(trade_off)),
                None => (i, doc, None),
            })
        })
        .unwrap_or((usize::MAX, "(undocumented)", None))
}

/// The defaults as a TOML table: the schema every layer is checked against.
fn default_table() -> Table {
    // invariant: RawConfig holds only strings, integers, booleans and nested structs, all of
    // which serialize to a TOML table; every test that loads a config exercises this.
    Table::try_from(RawConfig::default()).expect("RawConfig serializes to a TOML table")
}

/// The entries of `table` in [`DOCS`] order, scalars before sub-tables.
fn doc_ordered<'a>(table: &'a Table, prefix: &str) -> Vec<(String, &'a Value)> {
    let mut entries: Vec<_> = table.iter().map(|(k, v)| (join(prefix, k), v)).collect();
    entries.sort_by_key(|(key, value)| (value.is_table(), doc_for(key).0));
    entries
}

/// The annotated default configuration file printed by `ringhub --print-default-config`.
pub fn default_config_toml() -> String {
    let mut out = String::from(
        "# ringhub configuration; every key is optional and shown with its default.\n\
         # Precedence: defaults < this file < RINGHUB_SECTION__KEY env vars < --set section.key=value.\n",
    );
    for (key, value) in doc_ordered(&default_table(), "") {
        out.push('\n');
        out.push_str(&toml_comment(&key));
        let Value::Table(section) = value else {
            out.push_str(&format!("{key} = {value}\n"));
            continue;
        };
        out.push_str(&format!("[{key}]\n"));
        for (full, leaf) in doc_ordered(section, &key) {
            let name = full.rsplit('.').next().unwrap_or(&full);
            out.push_str(&toml_comment(&full));
            out.push_str(&format!("{name} = {leaf}\n"));
        }
    }
    out.push_str(HUBS_EXAMPLE);
    out
}

/// The comment lines printed above `key` in [`default_config_toml`].
fn toml_comment(key: &str) -> String {
    match doc_entry(key) {
        (_, comment, Some(trade_off)) => format!("# {comment}\n#   Trade-off: {trade_off}\n"),
        (_, comment, None) => format!("# {comment}\n"),
    }
}

/// The command that prints [`reference_markdown`], as its header names it.
pub const REFERENCE_COMMAND: &str = "ringhub docs config";

/// The configuration reference (`docs/configuration.md`, printed by `ringhub docs config`):
/// the precedence rules, value forms and units, then one table per section with every key,
/// its default, its environment variable and what it does and trades off. Generated from
/// the key comments (`DOCS`) and the defaults, as [`default_config_toml`] is, so the two
/// cannot disagree.
pub fn reference_markdown() -> String {
    let mut out = format!(
        "<!-- Generated by `{REFERENCE_COMMAND}` from src/config.rs; do not edit. Regenerate: \
         cargo run -q -- docs config > docs/configuration.md -->\n\n"
    );
    out.push_str(REFERENCE_INTRO);
    let defaults = default_table();
    let entries = doc_ordered(&defaults, "");
    let top: Vec<_> = entries.iter().filter(|(_, v)| !v.is_table()).collect();
    out.push_str("\n## Top level\n\n");
    out.push_str(REFERENCE_TABLE_HEAD);
    for (key, value) in top {
        out.push_str(&reference_row(key, value));
    }
    for (key, value) in &entries {
        let Value::Table(section) = value else {
            continue;
        };
        out.push_str(&format!(
            "\n## [{key}]\n\n{}\n\n",
            markdown_text(doc_for(key).1)
        ));
        out.push_str(REFERENCE_TABLE_HEAD);
        for (full, leaf) in doc_ordered(section, key) {
            out.push_str(&reference_row(&full, leaf));
        }
    }
    out.push_str(&format!(
        "\n## [hubs.NAME]\n\nKeys of a hub table: {}. Keys of a method table: {}.\n\n",
        HUB_KEYS.map(|k| format!("`{k}`")).join(", "),
        METHOD_KEYS.map(|k| format!("`{k}`")).join(", ")
    ));
    let (prose, example): (Vec<&str>, Vec<&str>) = {
        let lines: Vec<&str> = HUBS_EXAMPLE.trim().lines().collect();
        let split = lines
            .iter()
            .position(|l| l.starts_with("# [hubs."))
            .unwrap_or(lines.len());
        (lines[..split].to_vec(), lines[split..].to_vec())
    };
    let prose: Vec<&str> = prose
        .iter()
        .map(|l| l.trim_start_matches('#').trim())
        .collect();
    out.push_str(&markdown_text(&prose.join(" ")));
    out.push_str("\n\n```toml\n");
    for line in example {
        out.push_str(line.strip_prefix("# ").unwrap_or(line));
        out.push('\n');
    }
    out.push_str("```\n");
    out
}

/// How the layers combine and how values are written; the top of [`reference_markdown`].
const REFERENCE_INTRO: &str = "# Configuration reference

Every key is optional; a key not set anywhere has the default shown. `ringhub \
--print-default-config` prints the same keys, defaults and comments as a TOML file, and \
`ringhub --check-config` validates a configuration without serving.

## Where settings come from

Later sources win, key by key:

1. The built-in defaults (the tables below).
2. A TOML file: `ringhub --config FILE` (or `-c FILE`, or the `RINGHUB_CONFIG=FILE` \
environment variable).
3. Environment variables: `RINGHUB_` followed by the dotted key in capitals, with `__` (two \
underscores) between section and key: `RINGHUB_HTTP__HEADER_TIMEOUT=5s` sets \
`http.header_timeout`. `RINGHUB_CONFIG` and `RINGHUB_LOG` are read by the binary itself \
(`RINGHUB_LOG` holds log filter directives and beats `log.level`).
4. Flags: `--listen ADDR` (sets `listen`), `--workers N` (sets `workers`), and \
`--set KEY=VALUE` for any dotted key (`-s`, repeatable, later wins): \
`--set websocket.idle_timeout=90s`.

A value given in the environment or with `--set` is read as a TOML value when it parses as \
one (`5`, `true`, `\"x\"`, `[\"a\", \"b\"]`) and as a plain string otherwise (`5s`, \
`0.0.0.0:8080`). An unknown key, a value of the wrong type or out of range stops the server \
with an error naming the key and where it came from (the file, the variable or the flag); \
nothing is silently ignored.

**SIGHUP** reloads hub definitions and the key store from the same sources; every other \
setting takes effect at the next start.

## Units

- Durations are strings: `\"500ms\"`, `\"30s\"`, `\"1m\"`, `\"2h\"`, `\"30d\"` (humantime). \
Timeouts must be at least `1ms`; `shutdown.drain_delay` and \
`signalr.stream_backlog_window` may be `\"0s\"` (off).
- Sizes are strings or plain integers (bytes): `\"512B\"`, `\"32KiB\"`, `\"16MiB\"`, \
`\"1GiB\"` (powers of 1024) or `\"KB\"`, `\"MB\"`, `\"GB\"`, `\"TB\"` (powers of 1000), \
case-insensitive; fractions are refused.
- Counts and rates are integers; `0` means \"no limit\" where the text says so.
";

/// The header of every section's table in [`reference_markdown`].
const REFERENCE_TABLE_HEAD: &str =
    "| key | default | environment variable | what it does; trade-off |\n|---|---|---|---|\n";

/// One table row of [`reference_markdown`].
fn reference_row(key: &str, value: &Value) -> String {
    let (_, comment, trade_off) = doc_entry(key);
    let env = format!("{ENV_PREFIX}{}", key.to_uppercase().replace('.', "__"));
    let mut text = markdown_text(comment);
    if let Some(trade_off) = trade_off {
        text.push_str(&format!(" *Trade-off:* {}", markdown_text(trade_off)));
    }
    format!(
        "| `{key}` | `{}` | `{env}` | {text} |\n",
        value.to_string().replace('|', "\\|")
    )
}

/// `text` made safe for a Markdown table cell: arrows drawn, pipes and angle brackets escaped.
fn markdown_text(text: &str) -> String {
    text.replace("->", "→")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// How to declare hubs; none are declared by default.
const HUBS_EXAMPLE: &str = "
# Hubs: one [hubs.NAME] table each (none by default besides the built-in ones). Keys: path
# (required), auth (\"anonymous\", \"virtual-key\" or \"admin\"), max_message_size (overrides signalr.max_message_size),
# protocols (default [\"json\", \"messagepack\"]), join_on_connect (groups every connection
# joins, e.g. [\"admin\"]) and
# methods, a table binding each method name (case-insensitive) to a built-in action: echo,
# caller-connection-id, send-message-to-caller, count-to, never-ending, throw, concat-upload,
# request-header, invoke-caller, join-group, leave-group, send-to-group, send-to-all,
# subscribe-content, join-key-group, reply-event. Group actions may name a template for the
# group after ':' (join-group:image-{0}). Placeholders: {0} = the first argument (a string or
# an integer; an array joins/leaves one group per element), {0|lower} lowercased, {0|url} an
# absolute URL as host-with-dashes-path-with-dashes (Conduit's webhook groups), {vkey} = the
# caller's virtual key id. join-group with no {0} (\"join-group:threat-level\") takes no argument.
# A method may also be a table: action, group (the template), allowed (the first argument must
# be one of these, ignoring case), reply (an event sent to the caller with the method's
# arguments after success; reply-event does nothing else) and admin (only admin keys and admin
# virtual keys may call it). An upstream method is a table with action = \"upstream\" and
# url = \"http://host:port/path\": the invocation is POSTed there as JSON ({hub, method,
# arguments, connectionId, virtualKeyId, userId}) and the response body is its result. A hub's
# events_url = \"http://...\" receives {event: \"connected\"|\"disconnected\", hub,
# connectionId, virtualKeyId}. https is not supported (use a local TLS-terminating proxy).
# [hubs.chat]
# path = \"/hubs/chat\"
# auth = \"anonymous\"
# [hubs.chat.methods]
# Echo = \"echo\"
# Join = \"join-group:room-{0}\"
# [hubs.chat.methods.Subscribe]
# action = \"join-group\"
# group = \"feed-{0}-{vkey}\"
# allowed = [\"news\", \"sport\"]
# reply = \"Subscribed\"
# admin = false
# [hubs.chat.methods.Ask]
# action = \"upstream\"
# url = \"http://127.0.0.1:9000/chat/ask\"
";

/// `prefix.key`, or `key` at the top level.
fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A value rendered for an error message: always one line.
fn render(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Table(_) => "a table".to_owned(),
        other => other.to_string(),
    }
}

/// A CLI or environment value: TOML if it parses as a TOML value (`5`, `true`, `"x"`), otherwise
/// the text itself with surrounding whitespace trimmed.
fn parse_loose(text: &str) -> Value {
    let text = text.trim();
    text.parse::<Value>()
        .unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// A single-key layer `{a = {b = value}}` for the dotted path `a.b`.
fn nested(path: &[String], value: Value) -> Table {
    let mut table = Table::new();
    match path {
        [] => {}
        [last] => {
            table.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            table.insert(first.clone(), Value::Table(nested(rest, value)));
        }
    }
    table
}

/// Rejects keys of `layer` that `schema` lacks, and tables where values belong or vice versa.
fn check_keys(
    layer: &Table,
    schema: &Table,
    prefix: &str,
    origin: &str,
) -> Result<(), ConfigError> {
    for (name, value) in layer {
        let key = join(prefix, name);
        if prefix.is_empty() && name == "hubs" {
            check_hub_keys(value, origin)?;
            continue;
        }
        match (schema.get(name), value) {
            (None, _) => {
                let known = schema
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ConfigError::UnknownKey {
                    key,
                    origin: origin.to_owned(),
                    known,
                });
            }
            (Some(Value::Table(inner)), Value::Table(sub)) => check_keys(sub, inner, &key, origin)?,
            (Some(want), _) if want.is_table() != value.is_table() => {
                let reason = expected(&format!("a {}", want.type_str()), value);
                let (value, origin) = (render(value), origin.to_owned());
                return Err(ConfigError::Invalid {
                    key,
                    value,
                    origin,
                    reason,
                });
            }
            (Some(_), _) => {}
        }
    }
    Ok(())
}

/// The merged layers, the origin of every leaf a layer set, and the schema they are checked on.
struct Merged {
    table: Table,
    origins: BTreeMap<String, String>,
    schema: Table,
}

impl Merged {
    /// Just the built-in defaults.
    fn defaults() -> Self {
        let schema = default_table();
        let (table, origins) = (schema.clone(), BTreeMap::new());
        Self {
            table,
            origins,
            schema,
        }
    }

    /// Checks `layer` against the schema's keys, then lays it over what is already merged.
    fn apply(&mut self, layer: Table, origin: &str) -> Result<(), ConfigError> {
        check_keys(&layer, &self.schema, "", origin)?;
        merge_into(&mut self.table, layer, "", origin, &mut self.origins);
        Ok(())
    }

    /// Parses a whole TOML document from `origin` and applies it.
    fn apply_document(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let layer = text.parse::<Table>().map_err(|e| {
            let at = e.span().map(|span| {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("line {line}, column {column}: ")
            });
            let message = e.message().trim().replace('\n', "; ");
            let message = format!("{}{message}", at.unwrap_or_default());
            ConfigError::Syntax {
                origin: origin.to_owned(),
                message,
            }
        })?;
        self.apply(layer, origin)
    }

    /// The leaf at dotted `key`, if the schema has it.
    fn lookup(&self, key: &str) -> Option<&Value> {
        let mut parts = key.split('.');
        let first = parts.next().and_then(|p| self.table.get(p));
        parts.fold(first, |v, p| {
            v.and_then(Value::as_table).and_then(|t| t.get(p))
        })
    }

    /// Converts the leaf at dotted `key` with `convert`, naming key, value and origin on error.
    fn get<T>(
        &self,
        key: &str,
        convert: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.lookup(key) {
            Some(value) => convert(value).map_err(|reason| self.reject(key, reason)),
            None => Err(self.reject(key, "missing from the schema".to_owned())),
        }
    }

    /// The `[hubs.NAME]` tables, validated (their shape was checked when each layer applied).
    fn hubs(&self) -> Result<Vec<HubConfig>, ConfigError> {
        let Some(Value::Table(hubs)) = self.table.get("hubs") else {
            return Ok(Vec::new());
        };
        let mut out: Vec<HubConfig> = Vec::new();
        for (name, hub) in hubs {
            let key = join("hubs", name);
            let fields = hub.as_table().cloned().unwrap_or_default();
            let path = match fields.get("path") {
                None => return Err(self.reject(&join(&key, "path"), "is required".to_owned())),
                Some(_) => self.get(&join(&key, "path"), |v| {
                    let path = string(v)?;
                    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                        return Err("must start with '/' and contain no '?', '#' or spaces".into());
                    }
                    let path = path.trim_end_matches('/');
                    if path.is_empty() {
                        return Err("must name a path below '/' (the status page)".into());
                    }
                    Ok(path.to_owned())
                })?,
            };
            if let Some(other) = out.iter().find(|h| h.path == path) {
                let reason = format!("hub '{}' already uses this path", other.name);
                return Err(self.reject(&join(&key, "path"), reason));
            }
            let auth = match fields.get("auth") {
                None => HubAuth::Anonymous,
                Some(_) => self.get(&join(&key, "auth"), |v| match string(v)?.as_str() {
                    "anonymous" => Ok(HubAuth::Anonymous),
                    "virtual-key" => Ok(HubAuth::VirtualKey),
                    "admin" => Ok(HubAuth::Admin),
                    _ => Err("expected \"anonymous\", \"virtual-key\" or \"admin\"".to_owned()),
                })?,
            };
            let max_message_size = match fields.get("max_message_size") {
                None => None,
                Some(_) => Some(self.get(&join(&key, "max_message_size"), nonzero_size)?),
            };
            let methods_key = join(&key, "methods");
            let Some(Value::Table(table)) = fields.get("methods") else {
                return Err(self.reject(
                    &methods_key,
                    "is required: a table of Method = \"action\"".into(),
                ));
            };
            let mut methods: Vec<(String, MethodConfig)> = Vec::new();
            for (method, value) in table {
                let method_key = join(&methods_key, method);
                let spec = match value {
                    Value::Table(fields) => self.method_table(&method_key, fields)?,
                    _ => MethodConfig::from(self.get(&method_key, string)?),
                };
                if methods.iter().any(|(m, _)| m.eq_ignore_ascii_case(method)) {
                    let reason = "method names are case-insensitive; this one is declared twice";
                    return Err(self.reject(&method_key, reason.to_owned()));
                }
                methods.push((method.clone(), spec));
            }
            let protocols = match fields.get("protocols") {
                None => vec!["json".to_owned(), "messagepack".to_owned()],
                Some(_) => self.get(&join(&key, "protocols"), |v| {
                    let names = string_list(v, "an array of strings")?;
                    if names.is_empty() || names.iter().any(|n| n != "json" && n != "messagepack") {
                        return Err(
                            "expected a non-empty list of \"json\" and \"messagepack\"".into()
                        );
                    }
                    Ok(names)
                })?,
            };
            let events_url = match fields.get("events_url") {
                None => None,
                Some(_) => Some(self.get(&join(&key, "events_url"), http_url)?),
            };
            let join_on_connect = match fields.get("join_on_connect") {
                None => Vec::new(),
                Some(_) => self.get(&join(&key, "join_on_connect"), |v| {
                    let names = string_list(v, "an array of group names")?;
                    if names.iter().any(|n| n.is_empty()) {
                        return Err("group names must not be empty".into());
                    }
                    Ok(names)
                })?,
            };
            let redis_name = match fields.get("redis_name") {
                None => None,
                Some(_) => Some(self.get(&join(&key, "redis_name"), |v| {
                    let name = non_empty_string(v)?;
                    if name.contains([':', ' ']) {
                        return Err(
                            "must not contain ':' or spaces (it is part of channel names)".into(),
                        );
                    }
                    Ok(name)
                })?),
            };
            out.push(HubConfig {
                name: name.clone(),
                path,
                auth,
                max_message_size,
                methods,
                protocols,
                join_on_connect,
                redis_name,
                events_url,
            });
        }
        Ok(out)
    }

    /// The table form of a method (its keys were checked when its layer applied).
    fn method_table(&self, key: &str, fields: &Table) -> Result<MethodConfig, ConfigError> {
        let field = |name: &str| join(key, name);
        if !fields.contains_key("action") {
            return Err(self.reject(&field("action"), "is required, e.g. \"join-group\"".into()));
        }
        let action = self.get(&field("action"), |v| {
            let action = non_empty_string(v)?;
            if action.contains(':') {
                return Err("the table form names the group in `group`, not after ':'".into());
            }
            Ok(action)
        })?;
        let group = match fields.get("group") {
            None => None,
            Some(_) => Some(self.get(&field("group"), non_empty_string)?),
        };
        let allowed = match fields.get("allowed") {
            None => Vec::new(),
            Some(_) => self.get(&field("allowed"), |v| {
                let values = string_list(v, "an array of strings")?;
                if values.is_empty() || values.iter().any(|a| a.trim().is_empty()) {
                    return Err("expected a non-empty list of non-empty strings".into());
                }
                Ok(values)
            })?,
        };
        let reply = match fields.get("reply") {
            None => None,
            Some(_) => Some(self.get(&field("reply"), non_empty_string)?),
        };
        let admin = match fields.get("admin") {
            None => false,
            Some(_) => self.get(&field("admin"), boolean)?,
        };
        let url = match fields.get("url") {
            None => None,
            Some(_) => Some(self.get(&field("url"), http_url)?),
        };
        Ok(MethodConfig {
            action,
            group,
            allowed,
            reply,
            admin,
            url,
        })
    }

    /// A [`ConfigError::Invalid`] for `key` with its current value and recorded origin.
    fn reject(&self, key: &str, reason: String) -> ConfigError {
        // A table set whole (e.g. `[hubs.chat]` from a file) records its origin on the table.
        let origin = std::iter::successors(Some(key), |k| k.rsplit_once('.').map(|(a, _)| a))
            .find_map(|k| self.origins.get(k))
            .map_or(DEFAULT_ORIGIN, String::as_str)
            .to_owned();
        let secret = SECRET_KEYS.contains(&key);
        // `--set KEY=VALUE` names itself with the value: not for a secret.
        let origin = match origin.split_once('=') {
            Some((flag, _)) if secret && flag.starts_with("--set") => format!("{flag}=(redacted)"),
            _ => origin,
        };
        let value = if secret {
            "(redacted)".to_owned()
        } else {
            self.lookup(key)
                .map_or_else(|| "nothing".to_owned(), render)
        };
        ConfigError::Invalid {
            key: key.to_owned(),
            value,
            origin,
            reason,
        }
    }
}

/// The keys a `[hubs.NAME]` table may have.
const HUB_KEYS: [&str; 8] = [
    "path",
    "auth",
    "max_message_size",
    "methods",
    "protocols",
    "join_on_connect",
    "redis_name",
    "events_url",
];

/// Checks the shape of the free-form `hubs` table: tables of [`HUB_KEYS`], `methods` a table.
fn check_hub_keys(value: &Value, origin: &str) -> Result<(), ConfigError> {
    let invalid = |key: String, value: &Value, reason: String| ConfigError::Invalid {
        key,
        value: render(value),
        origin: origin.to_owned(),
        reason,
    };
    let Value::Table(hubs) = value else {
        return Err(invalid(
            "hubs".into(),
            value,
            expected("a table of hub tables", value),
        ));
    };
    for (name, hub) in hubs {
        let key = join("hubs", name);
        let Value::Table(fields) = hub else {
            return Err(invalid(key, hub, expected("a table", hub)));
        };
        for (field, inner) in fields {
            let field_key = join(&key, field);
            if !HUB_KEYS.contains(&field.as_str()) {
                return Err(ConfigError::UnknownKey {
                    key: field_key,
                    origin: origin.to_owned(),
                    known: HUB_KEYS.join(", "),
                });
            }
            if field == "methods" {
                let Value::Table(methods) = inner else {
                    return Err(invalid(field_key, inner, expected("a table", inner)));
                };
                for (method, spec) in methods {
                    let method_key = join(&field_key, method);
                    match spec {
                        Value::String(_) => {}
                        Value::Table(keys) => {
                            if let Some(unknown) =
                                keys.keys().find(|k| !METHOD_KEYS.contains(&k.as_str()))
                            {
                                return Err(ConfigError::UnknownKey {
                                    key: join(&method_key, unknown),
                                    origin: origin.to_owned(),
                                    known: METHOD_KEYS.join(", "),
                                });
                            }
                        }
                        other => {
                            let what = "an action string or a method table";
                            return Err(invalid(method_key, other, expected(what, other)));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Recursively lays `layer` over `into`, recording `origin` for every leaf it sets.
fn merge_into(
    into: &mut Table,
    layer: Table,
    prefix: &str,
    origin: &str,
    origins: &mut BTreeMap<String, String>,
) {
    for (name, value) in layer {
        let key = join(prefix, &name);
        match (into.get_mut(&name), value) {
            (Some(Value::Table(dst)), Value::Table(src)) => {
                merge_into(dst, src, &key, origin, origins)
            }
            (_, value) => {
                origins.insert(key, origin.to_owned());
                into.insert(name, value);
            }
        }
    }
}

/// `expected WHAT, found a TYPE`, for a value of the wrong TOML type.
fn expected(what: &str, value: &Value) -> String {
    let found = value.type_str();
    let article = if found.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("expected {what}, found {article} {found}")
}

fn string(value: &Value) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| expected("a string", value))
}

/// The `[cluster]` section: the secret from `secret` or `secret_file` (not both), and the
/// previous secrets.
fn cluster_config(m: &Merged) -> Result<ClusterConfig, ConfigError> {
    let secret = m.get("cluster.secret", |v| cluster_secret(&string(v)?))?;
    let from_file = m.get("cluster.secret_file", |v| {
        let path = string(v)?;
        if path.is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read it: {e}"))?;
        cluster_secret(text.trim())
            .map_err(|reason| format!("its content {reason}"))?
            .map(Some)
            .ok_or_else(|| "the file is empty".to_owned())
    })?;
    let secret = match (secret, from_file) {
        (Some(_), Some(_)) => {
            let reason = "set cluster.secret or cluster.secret_file, not both".to_owned();
            return Err(m.reject("cluster.secret_file", reason));
        }
        (secret, from_file) => secret.or(from_file),
    };
    let previous_secrets = m.get("cluster.previous_secrets", |v| {
        string_list(v, "an array of strings")?
            .iter()
            .map(|text| {
                cluster_secret(text)?.ok_or_else(|| "an entry must not be empty".to_owned())
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    Ok(ClusterConfig {
        secret,
        previous_secrets,
    })
}

/// A cluster secret: empty for none, else at least [`ClusterSecret::MIN_LEN`] bytes.
fn cluster_secret(text: &str) -> Result<Option<ClusterSecret>, String> {
    if text.is_empty() {
        Ok(None)
    } else if text.len() < ClusterSecret::MIN_LEN {
        Err(format!(
            "must be at least {} bytes (e.g. from: openssl rand -base64 32)",
            ClusterSecret::MIN_LEN
        ))
    } else {
        Ok(Some(ClusterSecret::new(text.as_bytes())))
    }
}

/// A string with something other than white space in it.
fn non_empty_string(value: &Value) -> Result<String, String> {
    let text = string(value)?;
    if text.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(text)
    }
}

/// An array of strings; `what` names it in the error for another type.
fn string_list(value: &Value, what: &str) -> Result<Vec<String>, String> {
    value
        .as_array()
        .ok_or_else(|| expected(what, value))?
        .iter()
        .map(string)
        .collect()
}

/// A `redis://` URL (parsed fully when the server starts).
fn redis_url(value: &Value) -> Result<String, String> {
    let url = non_empty_string(value)?;
    if url.starts_with("redis://") {
        Ok(url)
    } else {
        Err("expected a redis:// URL".to_owned())
    }
}

/// An array of SHA-256 digests in hex (stored lowercase).
fn hash_list(value: &Value) -> Result<Vec<String>, String> {
    string_list(value, "an array of SHA-256 hex strings")?
        .into_iter()
        .map(|hash| {
            let hash = hash.to_ascii_lowercase();
            if hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()) {
                Ok(hash)
            } else {
                Err("each entry must be 64 hex digits (a SHA-256)".to_owned())
            }
        })
        .collect()
}

/// An `http://host[:port][/path]` URL (kept as written; parsed again where it is used).
fn http_url(value: &Value) -> Result<String, String> {
    let text = string(value)?;
    crate::protocol::http_client::HttpUrl::parse(&text).map_err(|e| e.to_string())?;
    Ok(text)
}

/// A route's path: starts with `/`, no whitespace, query or fragment.
fn route_path(value: &Value) -> Result<String, String> {
    let path = string(value)?;
    if !path.starts_with('/') {
        Err("must start with '/'".to_owned())
    } else if path.contains(|c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#') {
        Err("must not contain whitespace, '?' or '#'".to_owned())
    } else {
        Ok(path)
    }
}

fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| expected("true or false", value))
}

fn integer<T: TryFrom<i64>>(value: &Value) -> Result<T, String> {
    let n = value
        .as_integer()
        .ok_or_else(|| expected("an integer", value))?;
    T::try_from(n).map_err(|_| format!("{n} is out of range"))
}

fn positive_u32(value: &Value) -> Result<u32, String> {
    match integer::<u32>(value)? {
        0 => Err("must be greater than 0".to_owned()),
        n => Ok(n),
    }
}

fn positive(value: &Value) -> Result<NonZeroUsize, String> {
    NonZeroUsize::new(integer(value)?).ok_or_else(|| "must be greater than 0".to_owned())
}

fn size(value: &Value) -> Result<usize, String> {
    let bytes = match value {
        Value::Integer(n) => {
            u64::try_from(*n).map_err(|_| "invalid size: must not be negative".to_owned())?
        }
        Value::String(s) => s.parse::<ByteSize>().map_err(|e| e.to_string())?.as_u64(),
        other => return Err(expected("a size such as \"32KiB\"", other)),
    };
    usize::try_from(bytes).map_err(|_| "invalid size: too large for this platform".to_owned())
}

fn nonzero_size(value: &Value) -> Result<usize, String> {
    size(value).and_then(|n| {
        if n == 0 {
            Err("must be greater than 0 bytes".to_owned())
        } else {
            Ok(n)
        }
    })
}

/// A duration that may be zero (`"0s"`: off).
fn duration_or_zero(value: &Value) -> Result<Duration, String> {
    let text = string(value)?;
    humantime::parse_duration(&text).map_err(|e| format!("invalid duration: {e}"))
}

fn duration(value: &Value) -> Result<Duration, String> {
    let text = value
        .as_str()
        .ok_or_else(|| expected("a duration such as \"30s\"", value))?;
    let parsed = humantime::parse_duration(text).map_err(|e| format!("invalid duration: {e}"))?;
    if parsed < Duration::from_millis(1) {
        return Err("must be at least 1ms".to_owned());
    }
    Ok(parsed)
}

impl Default for Config {
    /// The built-in defaults, with `workers` resolved to the number of available cores.
    fn default() -> Self {
        // invariant: the built-in defaults are valid; `defaults_match_the_documented_schema`
        // and the template round-trip test prove it.
        Self::validate(&Merged::defaults()).expect("built-in defaults are valid")
    }
}

impl Config {
    /// Loads defaults, then `sources.file`, then the `RINGHUB_*` environment, then overrides.
    pub fn load(sources: &ConfigSources) -> Result<Self, ConfigError> {
        let mut merged = Merged::defaults();
        if let Some(path) = &sources.file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            merged.apply_document(&text, &path.display().to_string())?;
        }
        for (name, value) in &sources.env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if !RESERVED_ENV.contains(&name.as_str()) {
                let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
                merged.apply(nested(&path, parse_loose(value)), name)?;
            }
        }
        for text in &sources.overrides {
            match text.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    let path: Vec<String> = key.trim().split('.').map(str::to_owned).collect();
                    merged.apply(nested(&path, parse_loose(value)), &format!("--set {text}"))?;
                }
                _ => return Err(ConfigError::BadOverride { text: text.clone() }),
            }
        }
        Self::validate(&merged)
    }

    /// Parses `text` as a config file layered over the defaults; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut merged = Merged::defaults();
        merged.apply_document(text, origin)?;
        Self::validate(&merged)
    }

    /// Connections each shard may hold: `max_connections / workers`, rounded up.
    pub fn shard_max_connections(&self) -> usize {
        self.limits
            .max_connections
            .get()
            .div_ceil(self.workers.get())
    }

    /// Converts and checks every leaf of the merged layers.
    fn validate(m: &Merged) -> Result<Self, ConfigError> {
        let workers: usize = m.get("workers", integer)?;
        let workers = NonZeroUsize::new(workers)
            .unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN));
        let websocket = WebSocketConfig {
            max_message_size: m.get("websocket.max_message_size", nonzero_size)?,
            idle_timeout: m.get("websocket.idle_timeout", duration)?,
            ping_interval: m.get("websocket.ping_interval", duration)?,
            close_timeout: m.get("websocket.close_timeout", duration)?,
            send_timeout: m.get("websocket.send_timeout", duration)?,
        };
        if websocket.idle_timeout <= websocket.ping_interval {
            let reason = format!(
                "must be greater than websocket.ping_interval ({})",
                humantime::format_duration(websocket.ping_interval)
            );
            return Err(m.reject("websocket.idle_timeout", reason));
        }
        if m.get("status_page.enabled", boolean)? {
            for route in ["metrics", "echo"] {
                let at_root = m.get(&join(route, "enabled"), boolean)?
                    && m.get(&join(route, "path"), string)? == "/";
                if at_root {
                    let reason = "'/' is the status page; choose another path or set \
                                  status_page.enabled = false";
                    return Err(m.reject(&join(route, "path"), reason.to_owned()));
                }
            }
        }
        Ok(Self {
            listen: m.get("listen", |v| {
                string(v)?
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("not a socket address ({e}); use e.g. \"0.0.0.0:8080\""))
            })?,
            workers,
            runtime: RuntimeConfig {
                driver: m.get("runtime.driver", |v| match string(v)?.as_str() {
                    "auto" => Ok(DriverKind::Auto),
                    "io-uring" => Ok(DriverKind::IoUring),
                    "legacy" => Ok(DriverKind::Legacy),
                    _ => Err("expected \"auto\", \"io-uring\" or \"legacy\"".to_owned()),
                })?,
                pin_cores: m.get("runtime.pin_cores", boolean)?,
                uring_entries: m.get("runtime.uring_entries", |v| {
                    let n: u32 = integer(v)?;
                    if n.is_power_of_two() && (64..=32768).contains(&n) {
                        Ok(n)
                    } else {
                        Err("must be a power of two between 64 and 32768".to_owned())
                    }
                })?,
                transparent_huge_pages: m.get("runtime.transparent_huge_pages", boolean)?,
            },
            http: HttpConfig {
                header_timeout: m.get("http.header_timeout", duration)?,
                keepalive_timeout: m.get("http.keepalive_timeout", duration)?,
                max_request_line: m.get("http.max_request_line", nonzero_size)?,
                max_header_block: m.get("http.max_header_block", nonzero_size)?,
                max_headers: m.get("http.max_headers", positive)?.get(),
                max_body_size: m.get("http.max_body_size", size)?,
            },
            websocket,
            limits: LimitsConfig {
                max_connections: m.get("limits.max_connections", positive)?,
                max_hub_connections: m.get("limits.max_hub_connections", integer)?,
                max_connections_per_key: m.get("limits.max_connections_per_key", integer)?,
                max_connections_per_ip: m.get("limits.max_connections_per_ip", integer)?,
                negotiate_rate_per_ip: m.get("limits.negotiate_rate_per_ip", integer)?,
                negotiate_burst_per_ip: m.get("limits.negotiate_burst_per_ip", positive_u32)?,
            },
            echo: EchoConfig {
                enabled: m.get("echo.enabled", boolean)?,
                path: m.get("echo.path", route_path)?,
                max_message_size: m.get("echo.max_message_size", nonzero_size)?,
            },
            metrics: MetricsConfig {
                enabled: m.get("metrics.enabled", boolean)?,
                path: m.get("metrics.path", route_path)?,
                key_hash: m.get("metrics.key_hash", |v| {
                    let hash = string(v)?.to_ascii_lowercase();
                    if hash.is_empty() {
                        Ok(None)
                    } else if hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()) {
                        Ok(Some(hash))
                    } else {
                        Err("must be empty or 64 hex digits (a SHA-256)".to_owned())
                    }
                })?,
            },
            status_page: StatusPageConfig {
                enabled: m.get("status_page.enabled", boolean)?,
            },
            signalr: SignalRConfig {
                keepalive_interval: m.get("signalr.keepalive_interval", duration)?,
                client_timeout: m.get("signalr.client_timeout", duration)?,
                handshake_timeout: m.get("signalr.handshake_timeout", duration)?,
                max_message_size: m.get("signalr.max_message_size", nonzero_size)?,
                max_parallel_invocations: m.get("signalr.max_parallel_invocations", positive)?,
                stream_buffer_capacity: m.get("signalr.stream_buffer_capacity", positive)?,
                detailed_errors: m.get("signalr.detailed_errors", boolean)?,
                stateful_reconnect: m.get("signalr.stateful_reconnect", boolean)?,
                stateful_reconnect_buffer: m
                    .get("signalr.stateful_reconnect_buffer", nonzero_size)?,
                disconnect_timeout: m.get("signalr.disconnect_timeout", duration)?,
                max_outbound: m.get("signalr.max_outbound", nonzero_size)?,
                invocation_rate: m.get("signalr.invocation_rate", positive_u32)?,
                invocation_burst: m.get("signalr.invocation_burst", positive_u32)?,
                max_groups_per_connection: m.get("signalr.max_groups_per_connection", integer)?,
                conflate_events: m.get("signalr.conflate_events", |v| {
                    let names = string_list(v, "an array of event names")?;
                    if names.iter().any(|n| n.is_empty()) {
                        return Err("event names must not be empty".into());
                    }
                    Ok(names)
                })?,
                conflate_rate: m.get("signalr.conflate_rate", positive_u32)?,
                stream_backlog_window: m.get("signalr.stream_backlog_window", duration_or_zero)?,
                stream_backlog_items: m.get("signalr.stream_backlog_items", positive)?,
                stream_backlog_bytes: m.get("signalr.stream_backlog_bytes", nonzero_size)?,
            },
            auth: AuthConfig {
                key_file: m.get("auth.key_file", |v| non_empty_string(v).map(PathBuf::from))?,
                admin_key_hashes: m.get("auth.admin_key_hashes", hash_list)?,
                server_key_hashes: m.get("auth.server_key_hashes", hash_list)?,
                store: m.get("auth.store", |v| match string(v)?.as_str() {
                    "file" => Ok(KeyStoreKind::File),
                    "redis" => Ok(KeyStoreKind::Redis),
                    _ => Err("expected \"file\" or \"redis\"".to_owned()),
                })?,
                redis_url: m.get("auth.redis_url", redis_url)?,
                cache_ttl: m.get("auth.cache_ttl", duration)?,
            },
            health: HealthConfig {
                push_interval: m.get("health.push_interval", duration)?,
            },
            cluster: cluster_config(m)?,
            backplane: BackplaneConfig {
                kind: m.get("backplane.kind", |v| match string(v)?.as_str() {
                    "in-process" => Ok(BackplaneKind::InProcess),
                    "redis" => Ok(BackplaneKind::Redis),
                    _ => Err("expected \"in-process\" or \"redis\"".to_owned()),
                })?,
                redis_url: m.get("backplane.redis_url", redis_url)?,
                channel_prefix: m.get("backplane.channel_prefix", string)?,
                publish_queue: m.get("backplane.publish_queue", positive)?.get(),
                ack_timeout: m.get("backplane.ack_timeout", duration)?,
            },
            upstream: UpstreamConfig {
                timeout: m.get("upstream.timeout", duration)?,
                max_idle_per_host: m.get("upstream.max_idle_per_host", integer)?,
                max_body: m.get("upstream.max_body", nonzero_size)?,
            },
            cors: CorsConfig {
                allowed_origins: m.get("cors.allowed_origins", |v| {
                    string_list(v, "an array of strings")
                })?,
            },
            diagnostics: DiagnosticsConfig {
                enabled: m.get("diagnostics.enabled", boolean)?,
                path: m.get("diagnostics.path", |v| {
                    let path = string(v)?;
                    if path.starts_with('/') && !path.contains(['?', '#', ' ']) {
                        Ok(path.trim_end_matches('/').to_owned())
                    } else {
                        Err("must start with '/' and contain no '?', '#' or spaces".to_owned())
                    }
                })?,
            },
            seed: SeedConfig {
                enabled: m.get("seed.enabled", boolean)?,
            },
            hubs: m.hubs()?,
            shutdown: ShutdownConfig {
                deadline: m.get("shutdown.deadline", duration)?,
                drain_delay: m.get("shutdown.drain_delay", duration_or_zero)?,
            },
            log: LogConfig {
                level: m.get("log.level", non_empty_string)?,
                format: m.get("log.format", |v| match string(v)?.as_str() {
                    "text" => Ok(LogFormat::Text),
                    "json" => Ok(LogFormat::Json),
                    _ => Err("expected \"text\" or \"json\"".to_owned()),
                })?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::Duration;

    use toml::{Table, Value};

    use super::*;

    /// Every leaf key of the schema, derived from the serialized raw defaults.
    fn known_keys() -> Vec<String> {
        fn walk(table: &Table, prefix: &str, out: &mut Vec<String>) {
            for (name, value) in table {
                match value {
                    Value::Table(inner) => walk(inner, &join(prefix, name), out),
                    _ => out.push(join(prefix, name)),
                }
            }
        }
        let mut out = Vec::new();
        walk(&default_table(), "", &mut out);
        out
    }

    fn sources(env: &[(&str, &str)], overrides: &[&str]) -> ConfigSources {
        ConfigSources {
            file: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            overrides: overrides.iter().map(|o| o.to_string()).collect(),
        }
    }

    /// Asserts that loading from `env` and `overrides` fails with a message starting `prefix`.
    fn assert_load_fails(env: &[(&str, &str)], overrides: &[&str], prefix: &str) {
        let shown = Config::load(&sources(env, overrides))
            .unwrap_err()
            .to_string();
        assert!(
            shown.starts_with(prefix) && !shown.contains('\n'),
            "{shown}"
        );
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("ringhub-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The `(key, origin, reason)` of an `Invalid` error from the file text `test.toml`.
    fn invalid(text: &str) -> (String, String, String) {
        match Config::from_toml_str(text, "test.toml") {
            Err(ConfigError::Invalid {
                key,
                origin,
                reason,
                ..
            }) => (key, origin, reason),
            other => panic!("expected Invalid for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_documented_schema() {
        let c = Config::default();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.workers, std::thread::available_parallelism().unwrap());
        assert_eq!(
            (
                c.runtime.driver,
                c.runtime.pin_cores,
                c.runtime.uring_entries
            ),
            (DriverKind::Auto, true, 4096)
        );
        assert_eq!(c.http.header_timeout, Duration::from_secs(10));
        assert_eq!(c.http.keepalive_timeout, Duration::from_secs(75));
        assert_eq!(
            (c.http.max_request_line, c.http.max_header_block),
            (8 << 10, 32 << 10)
        );
        assert_eq!((c.http.max_headers, c.http.max_body_size), (100, 1 << 20));
        assert_eq!(c.websocket.max_message_size, 1 << 20);
        let ws = &c.websocket;
        assert_eq!(
            [
                ws.idle_timeout,
                ws.ping_interval,
                ws.close_timeout,
                ws.send_timeout
            ]
            .map(|d| d.as_secs()),
            [60, 20, 5, 10]
        );
        assert_eq!(c.limits.max_connections.get(), 20_000);
        assert_eq!(
            c.echo,
            EchoConfig {
                enabled: false,
                path: "/ws/echo".into(),
                max_message_size: 16 << 20
            }
        );
        assert_eq!(c.shutdown.deadline, Duration::from_secs(10));
        assert_eq!(
            c.log,
            LogConfig {
                level: "info".into(),
                format: LogFormat::Text
            }
        );
    }

    #[test]
    fn toml_string_sets_only_the_keys_it_names() {
        let text = "listen = \"[::1]:9000\"\nworkers = 3\n[runtime]\ndriver = \"io-uring\"\n\
                    [http]\nmax_body_size = \"2 MiB\"\n[echo]\nenabled = true\n[log]\nformat = \"json\"\n";
        let c = Config::from_toml_str(text, "t.toml").unwrap();
        assert_eq!(c.listen, "[::1]:9000".parse().unwrap());
        assert_eq!(
            (c.workers.get(), c.runtime.driver),
            (3, DriverKind::IoUring)
        );
        assert_eq!(
            (c.http.max_body_size, c.echo.enabled, c.log.format),
            (2 << 20, true, LogFormat::Json)
        );
        assert_eq!(c.http.header_timeout, Config::default().http.header_timeout);
    }

    #[test]
    fn byte_size_parses_binary_decimal_and_plain_units() {
        let cases = [
            ("32KiB", 32 << 10),
            ("8 KiB", 8 << 10),
            ("16MiB", 16 << 20),
            ("1GiB", 1 << 30),
            ("2TiB", 2 << 40),
            ("512B", 512),
            ("1024", 1024),
            ("0", 0),
            ("1KB", 1_000),
            ("3MB", 3_000_000),
            ("2GB", 2_000_000_000),
            ("1TB", 1_000_000_000_000),
            ("4kib", 4096),
            (" 7 mb ", 7_000_000),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<ByteSize>().unwrap().as_u64(), bytes, "{text}");
        }
        assert_eq!(ByteSize(5).as_usize(), 5);
    }

    #[test]
    fn byte_size_rejects_malformed_and_overflowing_sizes() {
        for bad in [
            "",
            "KiB",
            "12 parsecs",
            "-1",
            "1.5MiB",
            "1 K",
            "0x10",
            "99999999999TiB",
            "1e3",
        ] {
            let err = bad.parse::<ByteSize>().unwrap_err().to_string();
            assert!(err.starts_with("invalid size: "), "{bad:?} -> {err}");
        }
    }

    #[test]
    fn byte_size_displays_the_most_compact_exact_binary_unit() {
        let cases = [
            (32 << 10, "32KiB"),
            (1 << 20, "1MiB"),
            (3 << 30, "3GiB"),
            (1 << 40, "1TiB"),
        ];
        for (bytes, text) in
            cases
                .into_iter()
                .chain([(1536 << 10, "1536KiB"), (1000, "1000B"), (0, "0B")])
        {
            assert_eq!(ByteSize(bytes).to_string(), text);
            assert_eq!(text.parse::<ByteSize>().unwrap(), ByteSize(bytes));
        }
    }

    #[test]
    fn durations_accept_human_units_and_reject_unitless_or_sub_millisecond_values() {
        let c = Config::from_toml_str(
            "[http]\nheader_timeout = \"500ms\"\nkeepalive_timeout = \"1m 30s\"\n[shutdown]\ndeadline = \"1ms\"",
            "t",
        )
        .unwrap();
        assert_eq!(c.http.header_timeout, Duration::from_millis(500));
        assert_eq!(c.http.keepalive_timeout, Duration::from_secs(90));
        assert_eq!(c.shutdown.deadline, Duration::from_millis(1));
        for (text, why) in [
            ("0s", "at least 1ms"),
            ("999us", "at least 1ms"),
            ("30", "time unit needed"),
            ("soon", "invalid duration"),
        ] {
            let (key, _, reason) = invalid(&format!("[shutdown]\ndeadline = \"{text}\""));
            assert_eq!(key, "shutdown.deadline");
            assert!(reason.contains(why), "{text}: {reason}");
        }
    }

    #[test]
    fn sizes_may_be_plain_integers_of_bytes_in_files_and_env() {
        let c = Config::from_toml_str("[http]\nmax_body_size = 2048", "t").unwrap();
        assert_eq!(c.http.max_body_size, 2048);
        let c = Config::load(&sources(
            &[("RINGHUB_WEBSOCKET__MAX_MESSAGE_SIZE", "4096")],
            &[],
        ))
        .unwrap();
        assert_eq!(c.websocket.max_message_size, 4096);
        assert!(invalid("[http]\nmax_body_size = -1").2.contains("negative"));
    }

    #[test]
    fn env_beats_file_and_override_beats_env() {
        let path = temp_file(
            "layers.toml",
            "[http]\nheader_timeout = \"1s\"\nkeepalive_timeout = \"2s\"\nmax_headers = 7\n",
        );
        let mut s = sources(
            &[
                ("RINGHUB_HTTP__HEADER_TIMEOUT", "3s"),
                ("RINGHUB_HTTP__KEEPALIVE_TIMEOUT", "4s"),
            ],
            &["http.keepalive_timeout=5s"],
        );
        s.file = Some(path.clone());
        let c = Config::load(&s).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(c.http.max_headers, 7);
        assert_eq!(c.http.header_timeout, Duration::from_secs(3));
        assert_eq!(c.http.keepalive_timeout, Duration::from_secs(5));
    }

    #[test]
    fn env_names_map_double_underscores_to_sections_and_reserved_names_are_ignored() {
        let env = [
            ("RINGHUB_CONFIG", "/does/not/exist.toml"),
            ("RINGHUB_LOG", "trace"),
            ("PATH", "/bin"),
            ("RINGHUB_LISTEN", "0.0.0.0:0"),
            ("RINGHUB_WORKERS", "2"),
            ("RINGHUB_ECHO__ENABLED", "true"),
            ("RINGHUB_ECHO__PATH", "/echo"),
            ("RINGHUB_LOG__LEVEL", "info,ringhub::transport=debug"),
        ];
        let overrides = [
            "listen=127.0.0.1:0",
            "echo.max_message_size=\"1 MiB\"",
            "log.format = json",
        ];
        let c = Config::load(&sources(&env, &overrides)).unwrap();
        assert_eq!(c.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(
            (c.workers.get(), c.echo.enabled, c.echo.path.as_str()),
            (2, true, "/echo")
        );
        assert_eq!(
            (c.echo.max_message_size, c.log.format),
            (1 << 20, LogFormat::Json)
        );
        assert_eq!(c.log.level, "info,ringhub::transport=debug");
    }

    #[test]
    fn unknown_key_in_file_is_rejected_with_its_name_and_file() {
        let path = temp_file("typo.toml", "[http]\nheader_timout = \"5s\"\n");
        let err = Config::load(&ConfigSources {
            file: Some(path.clone()),
            ..Default::default()
        })
        .unwrap_err();
        std::fs::remove_file(&path).unwrap();
        let ConfigError::UnknownKey { key, origin, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (key.as_str(), origin.as_str()),
            ("http.header_timout", path.to_str().unwrap())
        );
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!(
                "unknown key 'http.header_timout' in {}",
                path.display()
            )),
            "{shown}"
        );
        assert!(
            shown.contains("header_timeout") && !shown.contains('\n'),
            "{shown}"
        );
    }

    #[test]
    fn unknown_key_in_env_is_rejected_with_the_variable_name() {
        let env = [("RINGHUB_WEBSOCKET__PING", "1s")];
        assert_load_fails(
            &env,
            &[],
            "unknown key 'websocket.ping' in RINGHUB_WEBSOCKET__PING",
        );
        assert_load_fails(
            &[("RINGHUB_NOPE", "1")],
            &[],
            "unknown key 'nope' in RINGHUB_NOPE",
        );
    }

    #[test]
    fn unknown_key_in_override_is_rejected_with_the_override() {
        let expected = "unknown key 'limits.max_conns' in --set limits.max_conns=5";
        assert_load_fails(&[], &["limits.max_conns=5"], expected);
        assert_load_fails(
            &[],
            &["tls.cert=x"],
            "unknown key 'tls' in --set tls.cert=x",
        );
    }

    #[test]
    fn invalid_size_from_env_names_key_value_variable_and_reason() {
        let env = [("RINGHUB_HTTP__MAX_BODY_SIZE", "12 parsecs")];
        let expected = "http.max_body_size = \"12 parsecs\" (from RINGHUB_HTTP__MAX_BODY_SIZE): invalid size: ";
        assert_load_fails(&env, &[], expected);
    }

    #[test]
    fn listen_that_is_not_a_socket_address_is_rejected() {
        let (key, origin, reason) = invalid("listen = \"localhost\"");
        assert_eq!((key.as_str(), origin.as_str()), ("listen", "test.toml"));
        assert!(reason.contains("not a socket address"), "{reason}");
    }

    #[test]
    fn unknown_driver_is_rejected_with_the_choices() {
        let (key, _, reason) = invalid("[runtime]\ndriver = \"kqueue\"");
        assert_eq!(key, "runtime.driver");
        assert!(reason.contains("\"io-uring\""), "{reason}");
    }

    #[test]
    fn uring_entries_must_be_a_power_of_two_from_64_to_32768() {
        for bad in [100, 32, 65536, 0, -64] {
            let (key, _, _) = invalid(&format!("[runtime]\nuring_entries = {bad}"));
            assert_eq!(key, "runtime.uring_entries");
        }
        for good in [64, 32768] {
            let c =
                Config::from_toml_str(&format!("[runtime]\nuring_entries = {good}"), "t").unwrap();
            assert_eq!(c.runtime.uring_entries, good);
        }
    }

    #[test]
    fn the_status_page_owns_the_root_path_while_it_is_enabled() {
        assert!(Config::default().status_page.enabled);
        for (route, text) in [
            ("metrics.path", "[metrics]\npath = \"/\""),
            ("echo.path", "[echo]\nenabled = true\npath = \"/\""),
            ("hubs.root.path", "[hubs.root]\npath = \"/\"\nmethods = {}"),
        ] {
            let (key, _, reason) = invalid(text);
            assert_eq!(key, route);
            assert!(reason.contains("status page"), "{reason}");
        }
        let off = "[status_page]\nenabled = false\n[metrics]\npath = \"/\"";
        let config = Config::from_toml_str(off, "t").unwrap();
        assert!(!config.status_page.enabled);
        assert_eq!(config.metrics.path, "/");
    }

    #[test]
    fn idle_timeout_must_exceed_ping_interval() {
        let (key, origin, reason) = invalid("[websocket]\nidle_timeout = \"20s\"");
        assert_eq!(
            (key.as_str(), origin.as_str()),
            ("websocket.idle_timeout", "test.toml")
        );
        assert!(
            reason.contains("greater than websocket.ping_interval (20s)"),
            "{reason}"
        );
        let expected = "websocket.idle_timeout = \"60s\" (from built-in default): must be greater";
        assert_load_fails(&[], &["websocket.ping_interval=2m"], expected);
    }

    #[test]
    fn echo_path_without_leading_slash_is_rejected() {
        let (key, _, reason) = invalid("[echo]\npath = \"ws/echo\"");
        assert_eq!(
            (key.as_str(), reason.as_str()),
            ("echo.path", "must start with '/'")
        );
        assert_eq!(invalid("[echo]\npath = \"/a b\"").0, "echo.path");
    }

    #[test]
    fn zero_max_connections_is_rejected() {
        let (key, _, reason) = invalid("[limits]\nmax_connections = 0");
        assert_eq!(
            (key.as_str(), reason.as_str()),
            ("limits.max_connections", "must be greater than 0")
        );
    }

    #[test]
    fn wrong_types_name_the_key_and_the_expected_type() {
        assert_eq!(
            invalid("[http]\nheader_timeout = 5").2,
            "expected a duration such as \"30s\", found an integer"
        );
        assert_eq!(
            invalid("[runtime]\npin_cores = \"yes\"").2,
            "expected true or false, found a string"
        );
        assert_eq!(invalid("http = 5").2, "expected a table, found an integer");
        let expected = "runtime = 1 (from RINGHUB_RUNTIME): expected a table, found an integer";
        assert_load_fails(&[("RINGHUB_RUNTIME", "1")], &[], expected);
        let expected =
            "listen = a table (from --set listen.port=1): expected a string, found a table";
        assert_load_fails(&[], &["listen.port=1"], expected);
    }

    #[test]
    fn every_known_key_is_read_and_checked_by_validation() {
        for key in known_keys() {
            let err = Config::load(&sources(&[], &[&format!("{key}=[1]")])).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, .. } if *k == key),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn override_without_equals_sign_is_a_bad_override() {
        for text in ["echo.enabled", "=5"] {
            let err = Config::load(&sources(&[], &[text])).unwrap_err();
            assert!(
                matches!(&err, ConfigError::BadOverride { text: t } if t == text),
                "{err}"
            );
        }
    }

    #[test]
    fn toml_syntax_error_names_origin_and_line_on_one_line() {
        let err = Config::from_toml_str("listen = \"x\"\n[http\n", "bad.toml").unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with("invalid TOML in bad.toml: line 2, column"),
            "{shown}"
        );
        assert!(!shown.contains('\n'), "{shown}");
    }

    #[test]
    fn a_zero_stream_backlog_window_is_accepted_as_documented() {
        let config = Config::load(&sources(&[], &["signalr.stream_backlog_window=0s"])).unwrap();
        assert_eq!(config.signalr.stream_backlog_window, Duration::ZERO);
    }

    #[test]
    fn the_reference_has_a_row_with_default_and_variable_for_every_known_key() {
        let reference = reference_markdown();
        for key in known_keys() {
            let env = format!("RINGHUB_{}", key.to_uppercase().replace('.', "__"));
            let row = reference
                .lines()
                .find(|l| l.starts_with(&format!("| `{key}` |")))
                .unwrap_or_else(|| panic!("{key} has no row"));
            assert!(row.contains(&format!("`{env}`")), "{row}");
            assert!(!row.contains("(undocumented)"), "{row}");
        }
        assert!(reference.contains("| `http.header_timeout` | `\"10s\"` |"));
        assert!(reference.contains("*Trade-off:* Shorter sheds slowloris"));
    }

    #[test]
    fn default_template_parses_back_to_the_defaults() {
        let template = default_config_toml();
        assert_eq!(
            Config::from_toml_str(&template, "template").unwrap(),
            Config::default()
        );
        assert!(template.contains("\nworkers = 0\n"));
    }

    #[test]
    fn default_template_covers_every_known_key_with_a_comment_above_it() {
        let template = default_config_toml();
        let mut comment_above = BTreeMap::new();
        let (mut section, mut previous) = (String::new(), "");
        for line in template.lines() {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                assert!(
                    previous.starts_with("# ") && !previous.contains("(undocumented)"),
                    "[{name}]"
                );
            } else if let Some((name, _)) = line.split_once(" = ") {
                comment_above.insert(join(&section, name), previous);
            }
            previous = line;
        }
        let keys = known_keys();
        assert_eq!(keys.len(), 75);
        for key in keys {
            let comment = comment_above
                .get(&key)
                .unwrap_or_else(|| panic!("{key} missing from template"));
            assert!(
                comment.starts_with("# ") && !comment.contains("(undocumented)"),
                "{key}: {comment}"
            );
        }
    }

    #[test]
    fn missing_config_file_is_a_read_error_naming_the_path() {
        let path =
            std::env::temp_dir().join(format!("ringhub-{}-missing.toml", std::process::id()));
        let err = Config::load(&ConfigSources {
            file: Some(path.clone()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Read { path: p, .. } if *p == path),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read config file {}: ", path.display()))
        );
    }

    #[test]
    fn shard_max_connections_is_rounded_up_and_zero_workers_means_all_cores() {
        let c = Config::from_toml_str("workers = 3\n[limits]\nmax_connections = 10", "t").unwrap();
        assert_eq!(c.shard_max_connections(), 4);
        let c = Config::from_toml_str("workers = 0", "t").unwrap();
        assert_eq!(c.workers, std::thread::available_parallelism().unwrap());
        assert_eq!(invalid("workers = -1").0, "workers");
    }

    #[test]
    fn hubs_are_declared_in_named_tables_with_methods_bound_to_actions() {
        let c = Config::from_toml_str(
            "[hubs.chat]\npath = \"/hubs/chat/\"\nmax_message_size = \"4KiB\"\n[hubs.chat.methods]\nSend = \"echo\"\nWho = \"caller-connection-id\"\n",
            "test.toml",
        )
        .unwrap();
        assert_eq!(
            c.hubs,
            vec![HubConfig {
                name: "chat".into(),
                path: "/hubs/chat".into(),
                auth: HubAuth::Anonymous,
                max_message_size: Some(4096),
                methods: vec![
                    ("Send".into(), "echo".into()),
                    ("Who".into(), "caller-connection-id".into())
                ],
                protocols: vec!["json".into(), "messagepack".into()],
                join_on_connect: Vec::new(),
                redis_name: None,
                events_url: None,
            }]
        );
        assert!(Config::default().hubs.is_empty());
    }

    #[test]
    fn a_misspelt_hub_key_is_rejected_with_its_full_name() {
        let err = Config::from_toml_str("[hubs.chat]\npth = \"/x\"\nmethods = {}\n", "test.toml")
            .unwrap_err();
        let ConfigError::UnknownKey { key, origin, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (key.as_str(), origin.as_str()),
            ("hubs.chat.pth", "test.toml")
        );
    }

    #[test]
    fn hub_tables_need_a_path_methods_and_a_known_auth_mode() {
        let (key, origin, reason) = invalid("[hubs.chat]\nmethods = { A = \"echo\" }\n");
        assert_eq!(
            (key.as_str(), origin.as_str(), reason.as_str()),
            ("hubs.chat.path", "test.toml", "is required")
        );
        let (key, _, _) = invalid("[hubs.chat]\npath = \"/c\"\n");
        assert_eq!(key, "hubs.chat.methods");
        let (key, _, reason) =
            invalid("[hubs.chat]\npath = \"/c\"\nauth = \"root\"\nmethods = {}\n");
        assert_eq!(key, "hubs.chat.auth");
        assert!(reason.contains("virtual-key"), "{reason}");
        let (key, _, reason) = invalid(
            "[hubs.a]\npath = \"/c\"\nmethods = {}\n[hubs.b]\npath = \"/c\"\nmethods = {}\n",
        );
        assert_eq!(
            (key.as_str(), reason.as_str()),
            ("hubs.b.path", "hub 'a' already uses this path")
        );
        let (key, _, _) =
            invalid("[hubs.a]\npath = \"/c\"\nmethods = { Go = \"echo\", GO = \"echo\" }\n");
        assert!(key.starts_with("hubs.a.methods."), "{key}");
    }

    #[test]
    fn invocation_rate_and_burst_must_be_positive() {
        for key in ["invocation_rate", "invocation_burst"] {
            let (name, _, reason) = invalid(&format!("[signalr]\n{key} = 0\n"));
            assert_eq!(
                (name, reason.as_str()),
                (format!("signalr.{key}"), "must be greater than 0")
            );
        }
        let c = Config::from_toml_str(
            "[signalr]\ninvocation_rate = 100\ninvocation_burst = 5\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            (c.signalr.invocation_rate, c.signalr.invocation_burst),
            (100, 5)
        );
    }

    #[test]
    fn a_method_is_an_action_string_or_a_table_of_known_keys() {
        let c = Config::from_toml_str(
            "[hubs.a]\npath = \"/a\"\n[hubs.a.methods]\nJoin = \"join-group:image-{0}\"\n\
             [hubs.a.methods.Sub]\naction = \"join-group\"\ngroup = \"analytics-{0}\"\n\
             allowed = [\"cost\"]\nreply = \"Subscribed\"\nadmin = true\n",
            "test.toml",
        )
        .unwrap();
        assert_eq!(
            c.hubs[0].methods,
            vec![
                (
                    "Join".to_owned(),
                    MethodConfig {
                        action: "join-group".into(),
                        group: Some("image-{0}".into()),
                        ..MethodConfig::default()
                    }
                ),
                (
                    "Sub".to_owned(),
                    MethodConfig {
                        action: "join-group".into(),
                        group: Some("analytics-{0}".into()),
                        allowed: vec!["cost".into()],
                        reply: Some("Subscribed".into()),
                        admin: true,
                        url: None,
                    }
                ),
            ]
        );
        let err = Config::from_toml_str(
            "[hubs.a]\npath = \"/a\"\nmethods.M = { action = \"echo\", replies = \"X\" }\n",
            "test.toml",
        )
        .unwrap_err();
        let ConfigError::UnknownKey { key, origin, known } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (key.as_str(), origin.as_str(), known.as_str()),
            (
                "hubs.a.methods.M.replies",
                "test.toml",
                "action, group, allowed, reply, admin, url"
            )
        );
    }

    #[test]
    fn method_tables_are_checked_key_by_key() {
        for (method, key, says) in [
            (
                "M = 5",
                "hubs.a.methods.M",
                "expected an action string or a method table",
            ),
            (
                "M = { group = \"g\" }",
                "hubs.a.methods.M.action",
                "is required",
            ),
            (
                "M = { action = \"join-group:x-{0}\" }",
                "hubs.a.methods.M.action",
                "the table form names the group in `group`",
            ),
            (
                "M = { action = \"echo\", admin = \"yes\" }",
                "hubs.a.methods.M.admin",
                "expected true or false",
            ),
            (
                "M = { action = \"echo\", allowed = [] }",
                "hubs.a.methods.M.allowed",
                "non-empty",
            ),
            (
                "M = { action = \"echo\", reply = \" \" }",
                "hubs.a.methods.M.reply",
                "must not be empty",
            ),
        ] {
            let (name, origin, reason) = invalid(&format!(
                "[hubs.a]\npath = \"/a\"\n[hubs.a.methods]\n{method}\n"
            ));
            assert_eq!(
                (name.as_str(), origin.as_str()),
                (key, "test.toml"),
                "{method}"
            );
            assert!(reason.contains(says), "{method}: {reason}");
        }
    }

    #[test]
    fn upstream_urls_must_be_plain_http_with_a_host() {
        let c = Config::from_toml_str(
            "[upstream]\ntimeout = \"250ms\"\nmax_idle_per_host = 0\nmax_body = \"4KiB\"\n\
             [hubs.a]\npath = \"/a\"\nevents_url = \"http://127.0.0.1:9/events\"\n\
             [hubs.a.methods]\nAsk = { action = \"upstream\", url = \"http://backend:8080/ask\" }\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.upstream,
            UpstreamConfig {
                timeout: Duration::from_millis(250),
                max_idle_per_host: 0,
                max_body: 4096,
            }
        );
        assert_eq!(
            c.hubs[0].events_url.as_deref(),
            Some("http://127.0.0.1:9/events")
        );
        assert_eq!(
            c.hubs[0].methods[0].1.url.as_deref(),
            Some("http://backend:8080/ask")
        );
        for (text, key, says) in [
            (
                "[hubs.a.methods]\nM = { action = \"upstream\", url = \"https://b/x\" }",
                "hubs.a.methods.M.url",
                "https is not supported",
            ),
            (
                "[hubs.a.methods]\nM = { action = \"upstream\", url = \"http://b:99999/\" }",
                "hubs.a.methods.M.url",
                "port",
            ),
            (
                "events_url = \"backend:80\"\n[hubs.a.methods]\nM = \"echo\"",
                "hubs.a.events_url",
                "expected an http:// URL",
            ),
        ] {
            let (name, _, reason) = invalid(&format!("[hubs.a]\npath = \"/a\"\n{text}\n"));
            assert_eq!(name, key, "{text}");
            assert!(reason.contains(says), "{text}: {reason}");
        }
        let (name, _, _) = invalid("[upstream]\nmax_body = 0\n");
        assert_eq!(name, "upstream.max_body");
    }

    #[test]
    fn the_cluster_secret_comes_from_the_key_the_environment_or_a_file_and_is_never_shown() {
        let secret = "0123456789abcdef0123456789abcdef-secret";
        assert_eq!(Config::default().cluster, ClusterConfig::default());
        let c = Config::load(&sources(&[("RINGHUB_CLUSTER__SECRET", secret)], &[])).unwrap();
        assert_eq!(
            c.cluster.secret,
            Some(ClusterSecret::new(secret.as_bytes()))
        );
        assert!(!format!("{c:?}").contains(secret));
        let path = temp_file("cluster-secret", &format!("{secret}\n"));
        let file = format!("cluster.secret_file={}", path.display());
        let c = Config::load(&sources(&[], &[&file])).unwrap();
        assert_eq!(
            c.cluster.secret,
            Some(ClusterSecret::new(secret.as_bytes()))
        );
        let old = format!("cluster.previous_secrets=[\"{secret}-old\"]");
        let c = Config::load(&sources(&[], &[&old])).unwrap();
        assert_eq!(c.cluster.previous_secrets.len(), 1);
        assert!(c.cluster.token_keys().is_ok());

        let both = format!("cluster.secret={secret}");
        let err = Config::load(&sources(&[], &[&both, &file])).unwrap_err();
        assert!(matches!(&err, ConfigError::Invalid { key, .. } if key == "cluster.secret_file"));
        std::fs::remove_file(&path).unwrap();
        let short = "cluster.secret=too-short-to-sign";
        let shown = Config::load(&sources(&[], &[short]))
            .unwrap_err()
            .to_string();
        assert!(shown.starts_with("cluster.secret = (redacted)"), "{shown}");
        assert!(
            shown.contains("at least 32 bytes") && !shown.contains("too-short"),
            "{shown}"
        );
    }
}
