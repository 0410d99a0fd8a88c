//! RFC 6455 WebSocket, server side and sans-IO: handshake validation, frame headers, masking,
//! close codes, UTF-8 checking, and the message reader that ties them together.
//!
//! Nothing here touches a socket or a clock; [`crate::transport::websocket`] feeds bytes in and
//! writes the frames produced here out.

pub mod close;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod reader;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use frame::{Decoded, FrameError, FrameHeader, OpCode};
pub use handshake::{HandshakeError, UpgradeRequest};
pub use reader::{Message, MessageReader, ReadEvent};
