//! The only module allowed `unsafe`: conversions the safe APIs of monoio and std do not offer.
//!
//! Each function wraps one operation with a `// SAFETY:` argument; everything above it is safe.

#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, IntoRawFd};

/// Turns a monoio socket into a std socket, e.g. to hand it to another shard's runtime.
///
/// The stream must have no I/O in flight (monoio panics otherwise; callers only hand over
/// sockets between requests).
pub fn into_std_stream(stream: monoio::net::TcpStream) -> std::net::TcpStream {
    let fd = stream.into_raw_fd();
    // SAFETY: `into_raw_fd` released monoio's ownership of `fd`, an open TCP socket, and nothing
    // else refers to it; the std stream becomes its sole owner and closes it on drop.
    unsafe { std::net::TcpStream::from_raw_fd(fd) }
}
