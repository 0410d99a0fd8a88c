//! Messages on the ASP.NET Core Redis backplane channels (MessagePack envelopes written by .NET
//! servers or other instances): each decoder returns a value or an error, never a panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringhub::protocol::backplane::{
    Ack, BackplaneInvocation, GroupCommand, KeyStateMessage, ReturnedCompletion, StreamChunkMessage,
};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let input = Bytes::copy_from_slice(rest);
    match which % 6 {
        0 => {
            if let Ok(invocation) = BackplaneInvocation::decode(&input) {
                let _ = invocation;
            }
        }
        1 => {
            let _ = GroupCommand::decode(&input);
        }
        2 => {
            let _ = Ack::decode(&input);
        }
        3 => {
            let _ = KeyStateMessage::decode(&input);
        }
        4 => {
            let _ = StreamChunkMessage::decode(&input);
        }
        _ => {
            let _ = ReturnedCompletion::decode(&input);
        }
    }
});
