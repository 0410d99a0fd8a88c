//! Readiness-then-read buffering: an idle connection holds no read buffer.
//!
//! With io_uring a pending `recv` pins its buffer in the kernel for as long as the peer is
//! silent, so 100k idle WebSockets would pin 100k buffers. [`ReadBuffer::readable`] first waits for
//! the socket to become readable (a poll, which pins nothing), then [`ReadBuffer::read_ready`] allocates and reads; when
//! everything read has been consumed, [`ReadBuffer::release_if_empty`] lets go of the
//! allocation. Only a partial frame or request head is ever kept per connection. Consumed bytes
//! are split off as `Bytes` and keep only their own allocation alive.

use std::io;

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;

/// The smallest read: big enough for a typical SignalR message burst, small enough that
/// allocating it per wake-up is cheap (mimalloc serves it from a thread-local page).
pub const MIN_READ: usize = 8 * 1024;

/// The most reserved ahead for one frame; larger frames grow the buffer as bytes arrive, so a
/// peer announcing a huge frame cannot make us allocate it before sending it.
pub const MAX_RESERVE_AHEAD: usize = 1024 * 1024;

/// A connection's inbound bytes not yet consumed.
#[derive(Debug, Default)]
pub struct ReadBuffer {
    buf: BytesMut,
}

impl ReadBuffer {
    /// An empty buffer with no allocation.
    pub fn new() -> Self {
        Self::default()
    }

    /// A buffer that starts with bytes already read (e.g. what followed an HTTP head).
    pub fn with_bytes(buf: BytesMut) -> Self {
        Self { buf }
    }

    /// The unconsumed bytes.
    pub fn bytes_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Gives up the buffer (e.g. to hand a connection to another shard).
    pub fn into_inner(self) -> BytesMut {
        self.buf
    }

    /// The unconsumed bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// How many bytes are buffered.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Gives the allocation back when nothing is buffered, so an idle connection pins none.
    pub fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// Waits until the socket is readable. Cancel-safe: nothing is lost if the future is dropped.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn readable(stream: &TcpStream) -> io::Result<()> {
        stream.readable(false).await
    }

    /// Reads once into the buffer, after [`Self::readable`] said data is there. `want` is the
    /// total number of bytes the parser needs (0 when unknown). Returns the bytes read; 0 is EOF.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn read_ready(&mut self, stream: &mut TcpStream, want: usize) -> io::Result<usize> {
        let missing = want.saturating_sub(self.buf.len());
        let reserve = missing.clamp(MIN_READ, MAX_RESERVE_AHEAD);
        if self.buf.capacity() - self.buf.len() < reserve / 2 || self.buf.capacity() == 0 {
            self.buf.reserve(reserve);
        }
        // monoio reads into an owned buffer from its start; a `SliceMut` over the spare
        // capacity appends after the bytes already buffered instead.
        let len = self.buf.len();
        let spare = std::mem::take(&mut self.buf).slice_mut(len..);
        let (result, spare) = stream.read(spare).await;
        self.buf = spare.into_inner();
        result
    }
}
