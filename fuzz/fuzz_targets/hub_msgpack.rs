//! Hub messages in the MessagePack protocol, as a client sends them: every complete message decodes
//! (or fails with a protocol error), re-encodes, and decodes again to the same message.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringhub::protocol::signalr::{Decoded, HubProtocol};

const PROTOCOL: HubProtocol = HubProtocol::MessagePack;

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes::copy_from_slice(data);
    while !input.is_empty() {
        match PROTOCOL.decode(&input, 32 * 1024) {
            Ok(Decoded::Message(message, used)) => {
                assert!(used > 0 && used <= input.len());
                input = input.slice(used..);
                let mut encoded = BytesMut::new();
                // An unknown message type is skipped, as ASP.NET does, and never sent: it
                // encodes to nothing.
                if PROTOCOL.encode(&message, &mut encoded).is_ok() && !encoded.is_empty() {
                    match PROTOCOL.decode(&encoded.freeze(), usize::MAX) {
                        Ok(Decoded::Message(again, _)) => {
                            assert_eq!(again.type_id(), message.type_id());
                        }
                        other => panic!("re-encoded {message:?} did not decode: {other:?}"),
                    }
                }
            }
            Ok(Decoded::NeedMore) | Err(_) => break,
        }
    }
});
