//! RFC 6455 frames from a client: the reader yields messages, asks for more bytes, or fails
//! with a close code; never a panic, never a message over the limit, and always progress.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringhub::protocol::websocket::reader::{MessageReader, ReadEvent};

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input in two reads, as the network might.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(rest.len());
    let mut reader = MessageReader::new(MAX);
    let mut buf = BytesMut::from(&rest[..split]);
    let mut fed_all = false;
    loop {
        let before = buf.len();
        match reader.poll(&mut buf) {
            Ok(ReadEvent::Message(message)) => {
                assert!(
                    buf.len() < before || before == 0,
                    "a message must consume bytes"
                );
                let _ = message;
            }
            Ok(ReadEvent::NeedAtLeast(n)) => {
                assert!(
                    n > buf.len() || n == 0,
                    "asked for {n} with {} buffered",
                    buf.len()
                );
                if fed_all {
                    break;
                }
                buf.extend_from_slice(&rest[split..]);
                fed_all = true;
            }
            Err(error) => {
                let _ = error.close_code();
                break;
            }
        }
    }
});
