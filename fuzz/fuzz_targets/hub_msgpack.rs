//! Hub messages in the MessagePack protocol, as a client sends them: every complete message decodes
//! (or fails with a protocol error), re-encodes, and decodes again to the same message type
//! ([`ringhub_fuzz::hub_round_trip`]).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringhub::protocol::signalr::HubProtocol;

fuzz_target!(|data: &[u8]| ringhub_fuzz::hub_round_trip(HubProtocol::MessagePack, data));
