//! RESP2 replies from Redis, split anywhere: frames, "need more" or a protocol error; never a
//! panic, and the reader always makes progress.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringhub::redis::ReplyReader;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(rest.len());
    let mut reader = ReplyReader::default();
    for part in [&rest[..split], &rest[split..]] {
        reader.buffer_mut().extend_from_slice(part);
        loop {
            let before = reader.buffer_mut().len();
            match reader.next_frame() {
                Ok(Some(reply)) => {
                    assert!(reader.buffer_mut().len() < before);
                    let _ = reply.into_result();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
