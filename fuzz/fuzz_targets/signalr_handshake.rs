//! The SignalR handshake request (`{"protocol":"json","version":1}\x1e`): parsed, refused with
//! the ASP.NET text, or "need more"; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringhub::protocol::signalr::HubProtocol;
use ringhub::protocol::signalr::handshake::{HandshakeParse, parse_request, select_protocol};

fuzz_target!(|data: &[u8]| {
    match parse_request(data, 32 * 1024) {
        Ok(HandshakeParse::Request(request, used)) => {
            assert!(used <= data.len());
            let _ = select_protocol(&request, &[HubProtocol::Json, HubProtocol::MessagePack]);
        }
        Ok(HandshakeParse::NeedMore) => {}
        Err(error) => {
            let _ = error.response_text(true);
        }
    }
});
