//! Query strings of negotiate and connect requests (`?id=…&access_token=…&negotiateVersion=1`):
//! percent-decoding and lookups never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringhub::protocol::query::{Query, decode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let query = Query::new(Some(text));
    for name in [
        "id",
        "access_token",
        "api_key",
        "negotiateVersion",
        "useStatefulReconnect",
        "",
    ] {
        let _ = query.get(name);
    }
    let _ = decode(text);
});
