//! # ringhub
//!
//! A thread-per-core WebSocket edge server on io_uring that speaks the ASP.NET Core SignalR
//! protocol. This page is the architecture document: the glossary, the layers, and one line per
//! module. Every name below is a link, so renaming code without updating the map breaks the
//! docs build.
//!
//! ## Glossary
//! - **Shard**: one pinned thread, its monoio runtime and all its state ([`shard`]). Shards share
//!   nothing mutable; the only shared thing is the read-only [`config::Config`].
//! - **Connection**: one accepted TCP socket, owned by the shard that accepted it
//!   ([`transport::connection`]); its id is a [`shard::connections::ConnectionId`].
//! - **Frame** / **Message**: RFC 6455 units ([`protocol::websocket::frame`],
//!   [`protocol::websocket::reader::Message`]).
//! - **Outbox**: a connection's queue of encoded frames waiting for the socket
//!   ([`transport::outbox::Outbox`]), holding reference-counted bytes.
//! - **Read buffer**: a connection's unconsumed inbound bytes, allocated only while bytes are in
//!   flight ([`transport::read_buffer::ReadBuffer`]).
//! - **Hub**: a SignalR endpoint: a path and a table of methods bound to built-in actions
//!   ([`hub::HubDefinition`]).
//! - **Session**: one SignalR connection after the WebSocket upgrade ([`hub::session::Session`]).
//! - **Home shard**: the shard a connection lives on, named by its connection id's first
//!   byte ([`hub::identity`]); a WebSocket accepted elsewhere is handed to it through the
//!   **inbox** ([`shard::inbox`]).
//! - **Connection token**: stateless, signed with the cluster secret, carrying the connection
//!   id, hub and expiry ([`hub::identity::TokenKeys`]), so any instance accepts it (no sticky
//!   sessions); what a shard remembers of the tokens used on it is in [`shard::claims`].
//!
//! ## Layers
//! ```text
//! main.rs ─► server ─► shard::run   (per-core wiring: the only code that knows every layer)
//!                         │
//!            ┌────────────┴─────────────┐
//!        transport ──────────► http ──────► hub      (endpoints; SignalR semantics)
//!            │                   │           │
//!            └──────────────► protocol ◄─────┘         (sans-IO: no monoio, no Rc, no clock)
//!
//! leaves usable by all: config (read-only), shard::{ShardContext, connections}
//! ```
//!
//! ## Modules
//! - [`config`]: TOML file < `RINGHUB_…` environment < CLI flags, typed and validated.
//! - [`server`]: process lifecycle: driver choice, one `SO_REUSEPORT` socket and one pinned
//!   thread per shard, graceful stop.
//! - [`shard`]: one core's state ([`shard::ShardContext`]) and main task ([`shard::run`]).
//! - [`backplane`]: how sends reach other shards and instances: per-shard inboxes in
//!   process, or one ASP.NET-compatible Redis participant per shard ([`backplane::redis`], on
//!   the core-local client [`redis`] and the sans-IO codec [`protocol::backplane`]).
//! - [`stats`]: counters each shard writes alone and anyone sums without a lock (the Health
//!   hub's snapshot, `/health`, `/metrics`); code without a shard context counts through
//!   [`stats::local`].
//! - [`metrics`]: every exported series' name, and the Prometheus text rendering served by
//!   [`http::metrics`].
//! - [`transport`]: sockets: the accept loop ([`transport::listener`]), HTTP keep-alive and
//!   upgrade ([`transport::connection`]), the WebSocket loop ([`transport::websocket`]).
//! - [`http`]: routes and plain responses ([`http::health`], [`http::metrics`], [`http::negotiate`] with
//!   [`http::cors`], the REST publish API [`http::publish`], the conformance [`http::echo`]
//!   endpoint).
//! - [`hub`]: hub definitions, built-in actions ([`hub::actions`]), the per-connection
//!   [`hub::session::Session`], and streamed responses backends post to a stream key
//!   ([`hub::streams`], kept per shard in [`shard::streams`]).
//! - [`protocol`]: sans-IO codecs: HTTP/1.1 heads ([`protocol::http`]), the upstream client's
//!   requests and responses ([`protocol::http_client`]), query strings
//!   ([`protocol::query`]), RFC 6455 ([`protocol::websocket`]), SignalR
//!   ([`protocol::signalr`]) and the ASP.NET Core Redis backplane ([`protocol::backplane`]).
//! - [`auth`]: keys: where a request's key is read from ([`auth::token`]) and the virtual-key
//!   store ([`auth::keys`]).
//! - [`redis`]: a core-local Redis client (RESP2 over monoio): pipelined
//!   [`redis::CommandConnection`]s and [`redis::Subscriber`]s that reconnect with backoff.
//! - [`upstream`]: hub methods answered by HTTP backends and connect/disconnect events
//!   forwarded to them, through a per-shard HTTP/1.1 client with keep-alive
//!   ([`upstream::client`]).
//! - [`sys`]: the one module allowed `unsafe`.

pub mod auth;
pub mod backplane;
pub mod config;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod redis;
pub mod server;
pub mod shard;
pub mod stats;
pub mod sys;
pub mod transport;
pub mod upstream;

#[cfg(test)]
mod tests {
    use static_assertions::assert_not_impl_any;

    use crate::shard::ShardContext;
    use crate::shard::connections::ConnectionRegistry;

    // Per-core state must never cross threads.
    assert_not_impl_any!(ShardContext: Send, Sync);
    assert_not_impl_any!(ConnectionRegistry: Sync);
}
