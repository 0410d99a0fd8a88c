//! Sans-IO protocol codecs: bytes in, typed values out. Nothing here imports monoio, holds an
//! `Rc` or reads a clock, so every rule can be tested with byte literals and fuzzed.

pub mod backplane;
pub mod http;
pub mod http_client;
pub mod query;
pub mod signalr;
pub mod websocket;
