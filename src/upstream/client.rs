//! A per-shard HTTP/1.1 client on monoio: `POST` a JSON body, read the response, keep the
//! connection for the next call to the same `host:port`.
//!
//! One [`UpstreamClient`] per shard (`!Send`, no locks). A connection goes back to the pool
//! only after a complete response that allows reuse, with nothing read past it; a call that
//! times out or fails drops its connection. A pooled connection the backend closed while it was
//! idle shows as an end of stream before any response byte: the call is then sent once more on
//! a fresh connection (the backend cannot have answered it).
//!
//! Host names are resolved with the system resolver, which blocks the shard briefly; prefer IP
//! addresses or names in `/etc/hosts` for backends.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use thiserror::Error;

use crate::config::UpstreamConfig;
use crate::protocol::http_client::{
    ClientResponse, HttpUrl, ResponseError, ResponseLimits, ResponseReader, encode_post,
};

/// Bytes reserved ahead of each socket read.
const READ_CHUNK: usize = 8 * 1024;

/// Why a call to a backend failed.
#[derive(Debug, Error)]
pub enum UpstreamError {
    /// The TCP connection could not be opened.
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        /// `host:port`.
        authority: String,
        /// The OS error.
        source: io::Error,
    },
    /// No complete response within the configured timeout.
    #[error("{authority} did not answer within {}", humantime::format_duration(*after))]
    Timeout {
        /// `host:port`.
        authority: String,
        /// The timeout.
        after: Duration,
    },
    /// Writing or reading failed, or the backend closed before the response was complete.
    #[error("connection to {authority} failed: {reason}")]
    Io {
        /// `host:port`.
        authority: String,
        /// What happened.
        reason: String,
    },
    /// The backend's answer is not a valid HTTP/1.x response within the limits.
    #[error("invalid response from {authority}: {source}")]
    Response {
        /// `host:port`.
        authority: String,
        /// What is wrong with it.
        source: ResponseError,
    },
}

impl UpstreamError {
    /// A text for the caller: what went wrong, without addresses or paths.
    pub fn client_text(&self) -> String {
        match self {
            Self::Connect { .. } => "upstream unavailable".to_owned(),
            Self::Timeout { after, .. } => format!(
                "upstream did not answer within {}",
                humantime::format_duration(*after)
            ),
            Self::Io { .. } => "upstream connection failed".to_owned(),
            Self::Response { source, .. } => {
                format!("upstream sent an invalid response ({source})")
            }
        }
    }
}

/// How one attempt on one connection ended.
enum Attempt {
    /// A response, and the connection if it may carry another request.
    Done(ClientResponse, Option<TcpStream>),
    /// A pooled connection was closed by the backend before anything came back: try anew.
    Stale,
    /// Failed for good.
    Failed(UpstreamError),
}

/// The shard's HTTP client and its idle connections.
#[derive(Debug)]
pub struct UpstreamClient {
    timeout: Duration,
    max_idle_per_host: usize,
    limits: ResponseLimits,
    /// Idle keep-alive connections by `host:port`, most recently used last.
    idle: RefCell<HashMap<String, Vec<TcpStream>>>,
}

impl UpstreamClient {
    /// A client with the `[upstream]` settings.
    pub fn new(config: &UpstreamConfig) -> Self {
        Self {
            timeout: config.timeout,
            max_idle_per_host: config.max_idle_per_host,
            limits: ResponseLimits {
                max_body: config.max_body,
                ..ResponseLimits::default()
            },
            idle: RefCell::new(HashMap::new()),
        }
    }

    /// Idle connections kept for `authority` now.
    pub fn idle_connections(&self, authority: &str) -> usize {
        self.idle.borrow().get(authority).map_or(0, Vec::len)
    }

    /// POSTs `body` as `application/json` to `url` and reads the whole response, all within
    /// the configured timeout.
    ///
    /// # Errors
    /// [`UpstreamError`]: connect, I/O, timeout or a malformed response. A non-2xx status is
    /// not an error here.
    pub async fn post_json(
        &self,
        url: &HttpUrl,
        body: &[u8],
    ) -> Result<ClientResponse, UpstreamError> {
        let authority = url.authority();
        let mut request = BytesMut::new();
        encode_post(url, "application/json", body, &mut request);
        let request = request.freeze();
        let call = self.exchange(&authority, request);
        match monoio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout {
                authority,
                after: self.timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        authority: &str,
        request: Bytes,
    ) -> Result<ClientResponse, UpstreamError> {
        let pooled = self.idle.borrow_mut().get_mut(authority).and_then(Vec::pop);
        if let Some(stream) = pooled {
            match self.attempt(stream, authority, request.clone(), true).await {
                Attempt::Done(response, stream) => {
                    return Ok(self.keep(authority, response, stream));
                }
                Attempt::Failed(error) => return Err(error),
                Attempt::Stale => {}
            }
        }
        let stream =
            TcpStream::connect(authority)
                .await
                .map_err(|source| UpstreamError::Connect {
                    authority: authority.to_owned(),
                    source,
                })?;
        // Requests are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        match self.attempt(stream, authority, request, false).await {
            Attempt::Done(response, stream) => Ok(self.keep(authority, response, stream)),
            Attempt::Failed(error) => Err(error),
            Attempt::Stale => Err(UpstreamError::Io {
                authority: authority.to_owned(),
                reason: "closed without answering".to_owned(),
            }),
        }
    }

    /// Returns a reusable connection to the pool (if it has room) and hands back the response.
    fn keep(
        &self,
        authority: &str,
        response: ClientResponse,
        stream: Option<TcpStream>,
    ) -> ClientResponse {
        if let Some(stream) = stream
            && self.max_idle_per_host > 0
        {
            let mut idle = self.idle.borrow_mut();
            let streams = idle.entry(authority.to_owned()).or_default();
            if streams.len() < self.max_idle_per_host {
                streams.push(stream);
            }
        }
        response
    }

    /// Sends the request on `stream` and reads the response.
    async fn attempt(
        &self,
        mut stream: TcpStream,
        authority: &str,
        request: Bytes,
        reused: bool,
    ) -> Attempt {
        let io = |reason: String| {
            Attempt::Failed(UpstreamError::Io {
                authority: authority.to_owned(),
                reason,
            })
        };
        let (written, _) = stream.write_all(request).await;
        if let Err(error) = written {
            return if reused {
                Attempt::Stale
            } else {
                io(format!("write failed: {error}"))
            };
        }
        let mut reader = ResponseReader::new(self.limits);
        let mut buffer = BytesMut::with_capacity(READ_CHUNK);
        let mut received = 0usize;
        loop {
            if buffer.capacity() - buffer.len() < READ_CHUNK / 2 {
                buffer.reserve(READ_CHUNK);
            }
            let len = buffer.len();
            let (result, spare) = stream.read(buffer.slice_mut(len..)).await;
            buffer = spare.into_inner();
            let read = match result {
                Ok(read) => read,
                Err(_) if reused && received == 0 => return Attempt::Stale,
                Err(error) => return io(format!("read failed: {error}")),
            };
            if read == 0 {
                if reused && received == 0 {
                    return Attempt::Stale;
                }
                return match reader.finish() {
                    Ok(response) => Attempt::Done(response, None),
                    Err(ResponseError::Truncated) if received == 0 => {
                        io("closed without answering".to_owned())
                    }
                    Err(source) => Attempt::Failed(UpstreamError::Response {
                        authority: authority.to_owned(),
                        source,
                    }),
                };
            }
            received += read;
            match reader.feed(&mut buffer) {
                Ok(None) => {}
                Ok(Some(response)) => {
                    // Bytes past the response mean the connection's framing is off.
                    let reusable = response.keep_alive && buffer.is_empty();
                    return Attempt::Done(response, reusable.then_some(stream));
                }
                Err(source) => {
                    return Attempt::Failed(UpstreamError::Response {
                        authority: authority.to_owned(),
                        source,
                    });
                }
            }
        }
    }
}
