//! ringhub's load generator, as a library so its codecs can be tested on their own.
//!
//! Codecs without I/O: [`ws`] (client WebSocket frames), [`msgpack`] and [`signalr`] (the
//! hub protocol in JSON and MessagePack), [`http`] (negotiate and response heads),
//! [`payload`] (timestamped payloads); plus the shared [`clock`] and the [`recorder`] that
//! merges measurements across threads and processes.

pub mod clock;
pub mod http;
pub mod msgpack;
pub mod os;
pub mod payload;
pub mod recorder;
pub mod signalr;
pub mod ws;
