//! HTTP/1.1 request heads and chunked bodies: any bytes give a head, "need more" or an error
//! with a status; never a panic, and a parsed head never claims more bytes than it was given.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringhub::protocol::http::{ChunkedDecoder, HeadLimits, parse_head};

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits {
        max_request_line: 8192,
        max_header_block: 32 * 1024,
        max_headers: 100,
    };
    match parse_head(data, &limits) {
        Ok(Some((head, used))) => {
            assert!(used <= data.len());
            let _ = (head.path(), head.query(), head.is_keep_alive());
            // Whatever follows the head, read as a chunked body.
            let mut input = BytesMut::from(&data[used..]);
            let mut out = BytesMut::new();
            let mut decoder = ChunkedDecoder::new(64 * 1024);
            for _ in 0..4 {
                if decoder.decode(&mut input, &mut out).is_err() {
                    break;
                }
            }
            assert!(out.len() <= 64 * 1024);
        }
        Ok(None) => {}
        Err(error) => {
            assert!((400..500).contains(&error.status()));
        }
    }
});
