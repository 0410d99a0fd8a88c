//! A core-local Redis client: RESP2 (the `redis-protocol` crate's codec) over monoio sockets.
//!
//! Each shard opens its own connections; nothing here is `Send`, nothing is locked. Two kinds:
//! - [`CommandConnection`]: commands pipelined on one link (everything queued before the link
//!   is written goes out in one write, replies are matched in order), a timeout per command,
//!   and reconnection with capped exponential backoff. While it is down, commands fail at once
//!   with [`RedisError::Down`] instead of waiting.
//! - [`Subscriber`]: `SUBSCRIBE`d channels whose messages go to a callback, channels added and
//!   removed at run time, and after a lost link a reconnect that subscribes everything again,
//!   announced with [`SubscriberEvent::Up`] so an owner can drop what it may have missed.
//!
//! Payloads are [`Bytes`]: binary-safe, and shared without copies with whatever fans them out
//! (the auth key cache today; the SignalR backplane later).
//!
//! The pieces: [`url`] parses `redis://` URLs, `resp` is the sans-IO codec and reply
//! matching, `link` opens and logs in a TCP link, [`command`] and [`subscriber`] are the two
//! connection kinds.

use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

pub mod command;
mod link;
mod resp;
pub mod subscriber;
pub mod url;

pub use command::{CommandConnection, LinkState};
pub use resp::{Reply, ReplyReader};
pub use subscriber::{Subscriber, SubscriberEvent};
pub use url::RedisUrl;

/// Why a Redis operation failed. No text contains a password.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RedisError {
    /// The URL is not `redis://[user:pass@]host[:port][/db]`; the text says which part.
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(&'static str),
    /// The connection is down and waiting to reconnect; the text is why it went down.
    #[error("the Redis connection is down ({0})")]
    Down(String),
    /// No answer within this long (connecting, or a command).
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The socket failed or Redis closed it.
    #[error("Redis connection failed: {0}")]
    Io(String),
    /// Redis answered with an error reply (`-ERR …`, `-WRONGPASS …`).
    #[error("Redis answered with an error: {0}")]
    Server(String),
    /// The bytes Redis sent are not RESP2, or a reply arrived that no command asked for.
    #[error("Redis sent something that is not a valid reply: {0}")]
    Protocol(String),
    /// A reply of an unexpected type (e.g. `GET` answered with an integer).
    #[error("Redis answered {command} with an unexpected reply")]
    UnexpectedReply {
        /// The command.
        command: &'static str,
    },
    /// The connection's owner dropped it.
    #[error("the Redis connection was closed")]
    Closed,
}

/// A reply value (an error reply at the top level is a [`RedisError::Server`] instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The null bulk string or null array (`GET` of a missing key).
    Nil,
    /// A simple string (`+OK`).
    Status(Bytes),
    /// An integer (`PUBLISH`'s receiver count).
    Int(i64),
    /// A bulk string, binary-safe.
    Data(Bytes),
    /// An array.
    Array(Vec<Self>),
    /// An error nested in an array (`EXEC`); top-level errors are [`RedisError::Server`].
    Error(String),
}

/// Timeouts and reconnect pacing, the same for both connection kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Connecting and logging in must finish within this. Default 2 s.
    pub connect_timeout: Duration,
    /// A command's reply must arrive within this, or the command fails with
    /// [`RedisError::Timeout`] and the link is replaced (a server that stopped answering is
    /// not waited on by every later command). Default 2 s.
    pub command_timeout: Duration,
    /// The first delay before reconnecting; it doubles after each failed attempt. Default
    /// 50 ms.
    pub backoff_min: Duration,
    /// The most the delay grows to. Default 5 s.
    pub backoff_max: Duration,
    /// A subscriber PINGs this often and gives its link up after three of these without a
    /// word from Redis (a link that died without a FIN or RST). Default 5 s.
    pub keepalive: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            keepalive: Duration::from_secs(5),
        }
    }
}
