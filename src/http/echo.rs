//! The raw WebSocket echo endpoint: every text message comes back as text, every binary message
//! as binary. It exists so Autobahn|Testsuite can drive the same frame codec the SignalR hubs
//! use; it is off unless `echo.enabled` is set.

use bytes::Bytes;
use quanta::Instant;

use crate::protocol::websocket::OpCode;
use crate::transport::outbox::Outbox;
use crate::transport::websocket::{AppClose, DataMessage, WebSocketApp};

/// Echoes each message back unchanged (zero-copy: the received `Bytes` is queued as is).
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoApp;

impl WebSocketApp for EchoApp {
    fn on_message(
        &mut self,
        message: DataMessage,
        outbox: &mut Outbox,
        _now: Instant,
    ) -> Result<(), AppClose> {
        let (opcode, payload): (OpCode, Bytes) = match message {
            DataMessage::Text(text) => (OpCode::Text, text),
            DataMessage::Binary(data) => (OpCode::Binary, data),
        };
        outbox.push_frame(opcode, payload);
        Ok(())
    }
}
