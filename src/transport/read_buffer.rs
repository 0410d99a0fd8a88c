//! Readiness-then-read buffering: an idle connection holds no read buffer.
//!
//! With io_uring a pending `recv` pins its buffer in the kernel for as long as the peer is
//! silent, so 100k idle WebSockets would pin 100k buffers. A connection first waits for its
//! socket to become readable ([`ReadBuffer::readable`], a poll, which pins nothing), then reads.
//!
//! **Where the bytes land.** [`ReadBuffer::read_now`] reads with one non-blocking `recv` into
//! the shard's [`ReadScratch`], a buffer that every connection of the shard shares (one per
//! core, reused, never freed), and copies what arrived into the connection's buffer: an
//! allocation of exactly that size when nothing was buffered, an append to the partial frame
//! otherwise. So a 17-byte client ping costs a 17-byte allocation instead of faulting in a fresh
//! 8 KiB buffer each time. Only when the parser has said that many more bytes of one frame are
//! coming (at least [`DIRECT_READ`]) does the read go straight into the connection's buffer,
//! sized for the rest of that frame ([`ReadBuffer::read_direct`]), so a large frame is copied
//! out of the scratch for at most its first [`SCRATCH_READ`] bytes.
//!
//! When everything read has been consumed, [`ReadBuffer::release_if_empty`] lets go of the
//! allocation; only a partial frame or request head is ever kept per connection. Consumed bytes
//! are split off as `Bytes` and keep only their own allocation alive.

use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv};

/// Size of the shard's shared read buffer: the most one read into it takes. Small, because a
/// large frame's first read is copied out of it (a 32,000-byte frame then copies at most this
/// much beyond what it costs anyway) and bursts of small messages fit many to a read.
pub const SCRATCH_READ: usize = 4 * 1024;

/// A frame missing at least this many bytes is read straight into the connection's buffer.
pub const DIRECT_READ: usize = 2 * 1024;

/// The smallest direct read (when readiness turned out stale and the read must wait).
pub const MIN_DIRECT_READ: usize = 1024;

/// The most reserved ahead for one frame; larger frames grow the buffer as bytes arrive, so a
/// peer announcing a huge frame cannot make us allocate it before sending it.
pub const MAX_RESERVE_AHEAD: usize = 1024 * 1024;

/// The shard's read buffer, shared by all its connections: every small read lands here first.
///
/// Borrowed only inside [`ReadBuffer::read_now`], which never awaits, so no borrow can be
/// held while another task of the shard runs.
#[derive(Debug)]
pub struct ReadScratch {
    buf: RefCell<Box<[u8]>>,
}

impl Default for ReadScratch {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadScratch {
    /// A shard's buffer (allocated once).
    pub fn new() -> Self {
        Self {
            buf: RefCell::new(vec![0; SCRATCH_READ].into_boxed_slice()),
        }
    }
}

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
    ///
    /// Checked by length, not capacity: a buffer read to exactly its size and then split off
    /// whole is empty with no spare capacity, yet it still refers to (and keeps alive) the
    /// allocation the split-off bytes came from.
    pub fn release_if_empty(&mut self) {
        if self.buf.is_empty() {
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

    /// Reads once, after [`Self::readable`] said data is there: [`Self::read_now`], or when it
    /// declines, [`Self::read_direct`]. `want` is the total number of bytes the parser needs (0
    /// when unknown). Returns the bytes read; 0 is EOF.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn read_ready(
        &mut self,
        stream: &mut TcpStream,
        want: usize,
        scratch: &ReadScratch,
    ) -> io::Result<usize> {
        match self.read_now(stream, want, scratch) {
            Some(read) => read,
            None => self.read_direct(stream, want).await,
        }
    }

    /// Reads what the socket holds into the shard's `scratch` with one non-blocking `recv` and
    /// copies it here, without awaiting. `None` when this read should go straight into the
    /// connection's buffer instead ([`Self::read_direct`]): the frame being read is missing at
    /// least [`DIRECT_READ`] bytes, or the socket had nothing after all.
    ///
    /// Returns the bytes read; 0 is EOF.
    ///
    /// # Errors
    /// The socket's error.
    pub fn read_now(
        &mut self,
        stream: &TcpStream,
        want: usize,
        scratch: &ReadScratch,
    ) -> Option<io::Result<usize>> {
        if !self.buf.is_empty() && want.saturating_sub(self.buf.len()) >= DIRECT_READ {
            return None;
        }
        let mut scratch = scratch.buf.borrow_mut();
        let read = loop {
            match recv(stream.as_raw_fd(), &mut scratch, MsgFlags::MSG_DONTWAIT) {
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return None,
                other => break other,
            }
        };
        Some(match read {
            Ok(n) => {
                let got = &scratch[..n];
                if self.buf.is_empty() {
                    // Exactly what arrived: messages split off it keep only this alive.
                    self.buf = BytesMut::from(got);
                } else {
                    self.buf.extend_from_slice(got);
                }
                Ok(n)
            }
            Err(errno) => Err(errno.into()),
        })
    }

    /// Reads once straight into this connection's buffer, reserving room for the rest of the
    /// frame being read (`want` bytes in all; up to [`MAX_RESERVE_AHEAD`] ahead). Waits for data
    /// if there is none yet. Returns the bytes read; 0 is EOF.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn read_direct(&mut self, stream: &mut TcpStream, want: usize) -> io::Result<usize> {
        let missing = want.saturating_sub(self.buf.len());
        let reserve = missing.clamp(MIN_DIRECT_READ, MAX_RESERVE_AHEAD);
        if self.buf.capacity() - self.buf.len() < reserve {
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Runs `test` with a connected pair: a blocking std client and a monoio server stream.
    fn with_pair(test: impl AsyncFnOnce(std::net::TcpStream, TcpStream)) {
        let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, _) = listener.accept().await.unwrap();
            test(client, server).await;
        });
    }

    #[test]
    fn a_small_read_is_copied_into_an_allocation_of_exactly_its_size() {
        with_pair(async |mut client, mut server| {
            let scratch = ReadScratch::new();
            let mut input = ReadBuffer::new();
            client.write_all(&[1; 17]).unwrap();
            ReadBuffer::readable(&server).await.unwrap();
            let read = input.read_ready(&mut server, 0, &scratch).await.unwrap();
            assert_eq!(read, 17);
            assert_eq!(input.as_slice(), &[1; 17]);
            assert_eq!(input.bytes_mut().capacity(), 17);
        });
    }

    #[test]
    fn a_buffer_consumed_to_its_last_byte_lets_go_of_its_allocation() {
        with_pair(async |mut client, mut server| {
            let scratch = ReadScratch::new();
            let mut input = ReadBuffer::new();
            client.write_all(&[1; 17]).unwrap();
            ReadBuffer::readable(&server).await.unwrap();
            input.read_ready(&mut server, 0, &scratch).await.unwrap();
            // A message split off whole, as the parser does.
            let message = input.bytes_mut().split_to(17).freeze();
            assert_eq!(input.bytes_mut().capacity(), 0);
            assert!(
                !message.is_unique(),
                "the empty buffer still shares the allocation"
            );
            input.release_if_empty();
            assert!(message.is_unique());
        });
    }

    #[test]
    fn a_partial_frame_is_appended_to_and_the_shared_buffer_is_not_kept() {
        with_pair(async |mut client, mut server| {
            let scratch = ReadScratch::new();
            let mut input = ReadBuffer::new();
            client.write_all(b"first ").unwrap();
            ReadBuffer::readable(&server).await.unwrap();
            input.read_ready(&mut server, 0, &scratch).await.unwrap();
            client.write_all(b"second").unwrap();
            ReadBuffer::readable(&server).await.unwrap();
            input.read_ready(&mut server, 100, &scratch).await.unwrap();
            assert_eq!(input.as_slice(), b"first second");
            // Nothing read refers to the shard's buffer: it is free for the next connection.
            assert!(scratch.buf.try_borrow_mut().is_ok());
        });
    }

    #[test]
    fn the_rest_of_a_large_frame_is_read_straight_into_a_buffer_sized_for_it() {
        with_pair(async |mut client, mut server| {
            let scratch = ReadScratch::new();
            let mut input = ReadBuffer::with_bytes(BytesMut::from(&[0u8; 100][..]));
            client.write_all(&[2; 30_000]).unwrap();
            ReadBuffer::readable(&server).await.unwrap();
            assert!(input.read_now(&server, 40_100, &scratch).is_none());
            let mut total = 0;
            while total < 30_000 {
                ReadBuffer::readable(&server).await.unwrap();
                total += input
                    .read_ready(&mut server, 40_100, &scratch)
                    .await
                    .unwrap();
            }
            assert_eq!(input.len(), 30_100);
            assert!(input.bytes_mut().capacity() >= 40_100);
        });
    }

    #[test]
    fn end_of_stream_in_the_middle_of_a_frame_reads_zero_and_keeps_the_partial_frame() {
        with_pair(async |mut client, mut server| {
            let scratch = ReadScratch::new();
            let mut input = ReadBuffer::new();
            client.write_all(&[3; 10]).unwrap();
            client.shutdown(std::net::Shutdown::Write).unwrap();
            let mut reads = Vec::new();
            loop {
                ReadBuffer::readable(&server).await.unwrap();
                let read = input.read_ready(&mut server, 50, &scratch).await.unwrap();
                reads.push(read);
                if read == 0 {
                    break;
                }
            }
            assert_eq!(reads.iter().sum::<usize>(), 10);
            assert_eq!(input.as_slice(), &[3; 10]);
        });
    }
}
