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

/// A readiness wait in progress (boxed: it is 104 bytes of monoio state that an idle
/// connection would otherwise carry in its task beside everything else it awaits).
type Readiness<'a> = std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + 'a>>;

/// A connection's stream with a read-readiness wait that may stay pending across writes.
///
/// An idle connection waits for bytes (a readiness poll, which pins no buffer; see
/// [`ReadBuffer`](crate::transport::read_buffer::ReadBuffer)) and for shard signals (a due
/// timer, queued messages) at once. Dropping the poll whenever a signal wins makes io_uring
/// cancel it, and the kernel finds the poll to cancel by walking a hash chain shared with every
/// other armed poll of the ring: at 19,000 idle connections that walk was the largest part of
/// the idle CPU. Here the pending poll is kept until it completes, including while the
/// connection writes what the signal produced (a ping, a message), which needs `&mut
/// TcpStream` while the poll future was made from `&TcpStream`.
pub struct ArmedStream<'a> {
    stream: &'a std::cell::UnsafeCell<monoio::net::TcpStream>,
    /// The readiness wait in progress; polled at least once since it was made.
    readable: Option<Readiness<'a>>,
}

impl std::fmt::Debug for ArmedStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmedStream")
            .field("armed", &self.readable.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> ArmedStream<'a> {
    /// Wraps `stream`; nothing is armed until [`Self::poll_readable`] is first called.
    pub fn new(stream: &'a mut monoio::net::TcpStream) -> Self {
        Self {
            stream: std::cell::UnsafeCell::from_mut(stream),
            readable: None,
        }
    }

    /// The stream, to read or write. A readiness wait in progress stays armed.
    pub fn stream(&mut self) -> &mut monoio::net::TcpStream {
        // SAFETY: an exclusive reference to the stream may coexist with a pending readiness
        // future made from a shared one, because that future touches the stream only while it
        // is first polled: monoio 0.2.4's `TcpStream::readable` clones the stream's fd handle
        // into a `PollAdd` op and from then on awaits only that op (`Cargo.toml` pins the
        // version: recheck this on an upgrade). `poll_readable` polls every future it makes right away, and `self` is
        // borrowed exclusively for as long as the returned reference lives, so no first poll
        // can happen meanwhile.
        unsafe { &mut *self.stream.get() }
    }

    /// Polls the readiness wait, arming one first if none is pending. Ready once the socket
    /// is readable (or failed); the next call arms a new wait.
    pub fn poll_readable(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let stream = self.stream;
        let readable = self.readable.get_or_insert_with(|| {
            // SAFETY: a shared reference for the new future's first poll, just below; no
            // exclusive reference from `stream()` is alive while `self` is borrowed here.
            let stream: &'a monoio::net::TcpStream = unsafe { &*stream.get() };
            Box::pin(stream.readable(false))
        });
        let result = readable.as_mut().poll(cx);
        if result.is_ready() {
            self.readable = None;
        }
        result
    }
}
