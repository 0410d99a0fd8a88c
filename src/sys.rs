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

/// One send of a [`SendRing`] batch: `bytes` to the socket `fd`, and what happened.
#[derive(Debug)]
pub struct RingSend {
    /// An open, connected stream socket.
    pub fd: std::os::fd::RawFd,
    /// What to write.
    pub bytes: bytes::Bytes,
    /// Bytes written, or a negated errno (`-EAGAIN`: the socket's buffer was full); set by
    /// [`SendRing::send_all`].
    pub result: i32,
}

/// A shard's private io_uring for write-through sends: a broadcast writes one frame to each
/// idle subscriber with one `Send` SQE per socket, a whole batch in one `io_uring_enter`, as the
/// floor program does, instead of waking each connection's task to write it.
///
/// Every send is non-blocking (`MSG_DONTWAIT`), so the kernel finishes it while the batch is
/// submitted: it writes what the socket's buffer takes and never waits for room. The batch is
/// therefore synchronous, and no buffer or socket is in the kernel's hands once
/// [`Self::send_all`] returns.
pub struct SendRing {
    ring: io_uring::IoUring,
    /// An `io_uring_enter` failed for good: entries may be stuck in the queue, so the ring is
    /// never entered again (every later send reports `-EIO`, and the caller falls back).
    broken: bool,
}

impl std::fmt::Debug for SendRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendRing")
            .field("entries", &self.ring.params().sq_entries())
            .finish()
    }
}

impl SendRing {
    /// A ring that submits up to `entries` sends per `io_uring_enter`.
    ///
    /// # Errors
    /// io_uring is unavailable (old kernel, seccomp) or the ring cannot be set up.
    pub fn new(entries: u32) -> std::io::Result<Self> {
        Ok(Self {
            ring: io_uring::IoUring::new(entries)?,
            broken: false,
        })
    }

    /// Writes each send's bytes to its socket without waiting for room, a submission queue's
    /// worth per system call, and records each result. A send that could not be submitted (the
    /// ring failed) reports `-EIO`.
    ///
    /// Every socket must stay open for the call (a descriptor closed and reused meanwhile
    /// would receive the bytes).
    pub fn send_all(&mut self, sends: &mut [RingSend]) {
        let capacity = self.ring.params().sq_entries() as usize;
        for batch in sends.chunks_mut(capacity.max(1)) {
            self.send_batch(batch);
        }
    }

    fn send_batch(&mut self, batch: &mut [RingSend]) {
        if self.broken {
            for send in batch.iter_mut() {
                send.result = -libc::EIO;
            }
            return;
        }
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        let mut pushed = 0;
        {
            let mut sq = self.ring.submission();
            for (index, send) in batch.iter_mut().enumerate() {
                send.result = -libc::EIO;
                let len = u32::try_from(send.bytes.len()).unwrap_or(u32::MAX);
                let entry = io_uring::opcode::Send::new(
                    io_uring::types::Fd(send.fd),
                    send.bytes.as_ptr(),
                    len,
                )
                .flags(flags)
                .build()
                .user_data(index as u64);
                // SAFETY: the entry points into `send.bytes`, which `batch` keeps alive until
                // its completion is reaped below: the loop below returns only once every pushed
                // entry has completed or, if the ring fails first, after leaking a reference to
                // every buffer that may still be in the kernel's hands, so none is freed under
                // it. The socket is the caller's to keep open (a send to a closed descriptor
                // fails with EBADF; the kernel holds its own reference to the file while the
                // send runs).
                if unsafe { sq.push(&entry) }.is_err() {
                    break;
                }
                pushed += 1;
            }
        }
        let mut completed = 0;
        while completed < pushed {
            // Submits what is queued (all of it, normally) and waits for a completion if none
            // is there yet; a non-blocking send completes during its submission.
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(error) if is_retryable(&error) => {}
                Err(_) => {
                    self.broken = true;
                    for send in batch.iter().filter(|send| send.result == -libc::EIO) {
                        std::mem::forget(send.bytes.clone());
                    }
                    return;
                }
            }
            for cqe in self.ring.completion() {
                if let Some(send) = usize::try_from(cqe.user_data())
                    .ok()
                    .and_then(|index| batch.get_mut(index))
                {
                    send.result = cqe.result();
                    completed += 1;
                }
            }
        }
    }
}

/// Whether an `io_uring_enter` failure is transient (interrupted, or the kernel is short of
/// room for completions).
fn is_retryable(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_batch_writes_each_socket_what_it_takes_and_never_waits_for_a_full_one() {
        let Ok(mut ring) = SendRing::new(8) else {
            return; // no io_uring here: the shard falls back to waking connections
        };
        let (full, mut full_peer) = UnixStream::pair().unwrap();
        let (open, mut open_peer) = UnixStream::pair().unwrap();
        let chunk = bytes::Bytes::from(vec![7u8; 64 * 1024]);
        let mut sends: Vec<RingSend> = (0..20)
            .map(|_| RingSend {
                fd: full.as_raw_fd(),
                bytes: chunk.clone(),
                result: 0,
            })
            .chain(std::iter::once(RingSend {
                fd: open.as_raw_fd(),
                bytes: bytes::Bytes::from_static(b"hello"),
                result: 0,
            }))
            .collect();
        ring.send_all(&mut sends);
        let (last, to_full) = sends.split_last().unwrap();
        assert_eq!(last.result, 5);
        let mut got = [0u8; 5];
        open_peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        assert!(to_full.iter().any(|send| send.result == -libc::EAGAIN));
        let written: usize = to_full
            .iter()
            .map(|send| usize::try_from(send.result).unwrap_or(0))
            .sum();
        full_peer.set_nonblocking(true).unwrap();
        let mut drained = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = full_peer.read(&mut buf) {
            if n == 0 {
                break;
            }
            drained += n;
        }
        assert_eq!(drained, written);
    }
}
