//! Sockets and bytes in motion: the per-shard listener, the HTTP connection loop, the
//! WebSocket loop, and the buffers between them. Owns every `await` on a socket; decides no
//! protocol question itself (those are answered by [`crate::protocol`]).

pub mod connection;
pub mod deadline;
pub mod listener;
pub mod outbox;
pub mod per_ip;
pub mod read_buffer;
pub mod websocket;

use std::io;

use thiserror::Error;

use crate::protocol::websocket::{CloseCode, FrameError};

/// Why a WebSocket connection ended: the single answer logged once per connection.
#[derive(Debug, Error)]
pub enum ConnectionEnd {
    /// The peer started the close handshake (with this code, if it gave one).
    #[error("peer closed the WebSocket")]
    PeerClosed(Option<CloseCode>),
    /// The peer broke RFC 6455; we failed the connection.
    #[error("protocol error: {0}")]
    Protocol(FrameError),
    /// The endpoint closed the connection.
    #[error("endpoint closed the connection with {code}: {reason}")]
    App {
        /// The close code sent.
        code: CloseCode,
        /// The reason sent.
        reason: String,
    },
    /// The peer sent nothing, not even a pong, for the idle timeout.
    #[error("idle timeout")]
    IdleTimeout,
    /// The server is stopping.
    #[error("server shutting down")]
    Shutdown,
    /// The socket closed without a close frame.
    #[error("peer went away without a close frame")]
    PeerVanished,
    /// A flush took longer than the send timeout (a slow or stuck consumer).
    #[error("send timed out")]
    SendTimeout,
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl ConnectionEnd {
    /// The close code this end corresponds to (1005/1006 for the ones never sent on the wire).
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::PeerClosed(code) => code.unwrap_or(CloseCode::NO_STATUS),
            Self::Protocol(error) => error.close_code(),
            Self::App { code, .. } => *code,
            Self::IdleTimeout | Self::Shutdown => CloseCode::GOING_AWAY,
            Self::PeerVanished | Self::SendTimeout | Self::Io(_) => CloseCode::ABNORMAL,
        }
    }

    /// A short, stable label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::PeerClosed(_) => "peer closed",
            Self::Protocol(error) => error.reason(),
            Self::App { .. } => "endpoint closed",
            Self::IdleTimeout => "idle timeout",
            Self::Shutdown => "shutdown",
            Self::PeerVanished => "peer vanished",
            Self::SendTimeout => "send timeout",
            Self::Io(_) => "i/o error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_end_maps_to_one_close_code() {
        assert_eq!(
            ConnectionEnd::PeerClosed(None).close_code(),
            CloseCode(1005)
        );
        assert_eq!(
            ConnectionEnd::PeerClosed(Some(CloseCode(4000))).close_code(),
            CloseCode(4000)
        );
        assert_eq!(
            ConnectionEnd::Protocol(FrameError::InvalidUtf8).close_code(),
            CloseCode(1007)
        );
        assert_eq!(ConnectionEnd::Shutdown.close_code(), CloseCode(1001));
        assert_eq!(ConnectionEnd::IdleTimeout.close_code(), CloseCode(1001));
        assert_eq!(ConnectionEnd::PeerVanished.close_code(), CloseCode(1006));
    }
}
