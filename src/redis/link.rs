//! What both connection kinds share: opening a logged-in TCP link, reading replies off it, the
//! capped exponential backoff between attempts, and the one-waiter wake-up their driver tasks
//! sleep on.

use std::cell::Cell;
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::resp::{ReplyReader, encode_command};
use super::{ClientOptions, RedisError, RedisUrl};

/// Bytes reserved ahead of each socket read.
const READ_CHUNK: usize = 16 * 1024;

/// Connects to `url`, sends `AUTH` when it has a password and, when `select_db`, `SELECT` for a
/// database other than 0. Returns the stream and any bytes read past the handshake's replies.
///
/// # Errors
/// [`RedisError::Io`] or [`RedisError::Timeout`] when the server cannot be reached within
/// `options.connect_timeout`; [`RedisError::Server`] when it refuses the login or database.
pub(crate) async fn open(
    url: &RedisUrl,
    options: &ClientOptions,
    select_db: bool,
) -> Result<(TcpStream, ReplyReader), RedisError> {
    let address = url.address();
    let handshake = async {
        let stream = TcpStream::connect(address.as_str())
            .await
            .map_err(|error| RedisError::Io(format!("cannot connect to {address}: {error}")))?;
        // Commands are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let mut stream = stream;
        let mut reader = ReplyReader::default();
        if let Some(password) = &url.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &url.username {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            round_trip(&mut stream, &mut reader, &args).await?;
        }
        if select_db && url.db != 0 {
            let db = url.db.to_string();
            round_trip(&mut stream, &mut reader, &[b"SELECT", db.as_bytes()]).await?;
        }
        Ok((stream, reader))
    };
    monoio::time::timeout(options.connect_timeout, handshake)
        .await
        .map_err(|_| RedisError::Timeout(options.connect_timeout))?
}

/// Sends one command and reads its reply (the handshake, before pipelining starts).
async fn round_trip(
    stream: &mut TcpStream,
    reader: &mut ReplyReader,
    args: &[&[u8]],
) -> Result<(), RedisError> {
    let mut out = BytesMut::new();
    encode_command(&mut out, args)?;
    write_all(stream, out.freeze()).await?;
    loop {
        if let Some(reply) = reader.next_frame()? {
            return reply.into_result().map(drop);
        }
        read_more(stream, reader).await?;
    }
}

/// Writes all of `bytes`.
pub(crate) async fn write_all<W: AsyncWriteRentExt>(
    stream: &mut W,
    bytes: Bytes,
) -> Result<(), RedisError> {
    let (result, _) = stream.write_all(bytes).await;
    result
        .map(drop)
        .map_err(|error| RedisError::Io(format!("write failed: {error}")))
}

/// Reads whatever the socket has into `reader`'s buffer.
///
/// # Errors
/// [`RedisError::Io`] on a socket error or when Redis closed the connection.
pub(crate) async fn read_more<R: AsyncReadRent>(
    stream: &mut R,
    reader: &mut ReplyReader,
) -> Result<(), RedisError> {
    let mut buffer = reader.take_buffer();
    if buffer.capacity() - buffer.len() < READ_CHUNK / 2 {
        buffer.reserve(READ_CHUNK);
    }
    let len = buffer.len();
    let (result, spare) = stream.read(buffer.slice_mut(len..)).await;
    reader.restore(spare.into_inner());
    match result {
        Ok(0) => Err(RedisError::Io("Redis closed the connection".into())),
        Ok(_) => Ok(()),
        Err(error) => Err(RedisError::Io(format!("read failed: {error}"))),
    }
}

/// Delays between reconnect attempts: `min`, doubling after each failure up to `max`, back to
/// `min` once a connection works.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt; doubles the one after it.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max).max(self.min);
        delay
    }

    /// A connection worked: the next failure waits `min` again.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// A wake-up for one task: rings are remembered until the task waits, and many rings before
/// it does are one.
#[derive(Default)]
pub(crate) struct Doorbell {
    rung: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doorbell")
            .field("rung", &self.rung.get())
            .finish_non_exhaustive()
    }
}

impl Doorbell {
    pub(crate) fn ring(&self) {
        self.rung.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Resolves once the bell has rung since the last wait. Cancel-safe: a ring is only
    /// consumed when this resolves.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.rung.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
    }
}

/// Waits out a reconnect delay; woken early only to notice the owner dropped the connection.
/// Returns `false` when it was (the connection's task then ends).
pub(super) async fn back_off(
    delay: std::time::Duration,
    doorbell: &Doorbell,
    closed: &std::cell::Cell<bool>,
) -> bool {
    let sleep = monoio::time::sleep(delay);
    let mut sleep = std::pin::pin!(sleep);
    loop {
        monoio::select! {
            () = &mut sleep => return true,
            () = doorbell.wait() => if closed.get() { return false },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let delays: Vec<u128> = (0..9).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(50));
    }
}
