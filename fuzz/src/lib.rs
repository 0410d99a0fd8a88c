//! What the fuzz targets share: the hub-message round trip both protocols' targets run.

use bytes::{Bytes, BytesMut};
use ringhub::protocol::signalr::{Decoded, HubProtocol};

/// Decodes every complete `protocol` message in `data` as a client sends them: each decodes (or
/// fails with a protocol error), uses 1..=len bytes, re-encodes, and decodes again to a message
/// of the same type. Panics when an invariant breaks.
pub fn hub_round_trip(protocol: HubProtocol, data: &[u8]) {
    let mut input = Bytes::copy_from_slice(data);
    while !input.is_empty() {
        match protocol.decode(&input, 32 * 1024) {
            Ok(Decoded::Message(message, used)) => {
                assert!(used > 0 && used <= input.len());
                input = input.slice(used..);
                let mut encoded = BytesMut::new();
                // An unknown message type is skipped, as ASP.NET does, and never sent: it
                // encodes to nothing.
                if protocol.encode(&message, &mut encoded).is_ok() && !encoded.is_empty() {
                    match protocol.decode(&encoded.freeze(), usize::MAX) {
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
}
