//! HTTP/2 (gRPC) on the runtime seam: hyper's HTTP/2 server and client set up to run the same
//! way on tokio and inside madsim.
//!
//! hyper's HTTP/2 needs an executor (its server spawns a task per stream, its client one per
//! request body) and a timer (keep-alive pings, header timeouts); hyper-util's `TokioExecutor`
//! and `TokioTimer` would reach for the real tokio runtime, which the simulator does not have.
//! These use [`HyperExec`] and [`HyperTimer`] instead, and a connection's bytes go through a
//! [`FlushFilter`]: h2 flushes after every batch of frames it writes, and madsim turns each
//! flush into one network message (see the crate docs).
//!
//! * [`server`]: hyper-util's auto builder (HTTP/1.1 and HTTP/2 told apart by the HTTP/2
//!   connection preface, as etcd 3.4's one client port does) with the seam's executor and timer.
//! * [`H2Channel`]: a client connection as a `tower` service, what tonic-generated clients
//!   call (`KvClient::new(channel)`), without `tonic::transport`, whose channel brings its own
//!   timer and spawns.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper::http::uri::{Authority, Scheme, Uri};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{FlushFilter, HyperExec, HyperTimer};

/// The streams one HTTP/2 client may have open at once: etcd 3.4's default for
/// `--max-concurrent-streams` (`math.MaxUint32`); hyper's own default is 200.
pub const MAX_CONCURRENT_STREAMS: u32 = u32::MAX;

/// A connection builder that serves HTTP/1.1 and HTTP/2 on one connection, whichever the
/// client speaks, with the seam's executor and timers and etcd's limit on streams at once.
/// Build one per connection (a connection borrows its builder).
pub fn server() -> auto::Builder<HyperExec> {
    let mut b = auto::Builder::new(HyperExec);
    b.http1().timer(HyperTimer);
    b.http2()
        .timer(HyperTimer)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    b
}

/// One HTTP/2 client connection as a `tower` service: every call is a new stream on it.
/// Cloning shares the connection. Requests without a scheme and authority (tonic's clients
/// send only the path) get `http` and the connection's authority.
pub struct H2Channel<B> {
    send: SendRequest<B>,
    authority: Authority,
}

impl<B> Clone for H2Channel<B> {
    fn clone(&self) -> Self {
        H2Channel {
            send: self.send.clone(),
            authority: self.authority.clone(),
        }
    }
}

impl<B> std::fmt::Debug for H2Channel<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Channel")
            .field("authority", &self.authority)
            .finish()
    }
}

impl<B> H2Channel<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    /// Open a TCP connection to `addr` (simulated under madsim), flush-filtered, and do the
    /// HTTP/2 handshake on it.
    pub async fn connect(addr: SocketAddr) -> io::Result<H2Channel<B>> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        crate::tune_stream(&stream);
        let authority = Authority::try_from(addr.to_string().as_str())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Self::handshake(FlushFilter::coalescing(stream), authority)
            .await
            .map_err(io::Error::other)
    }

    /// Do the HTTP/2 handshake on an open stream (plain or TLS; wrap a socket in a
    /// [`FlushFilter`] first) and drive the connection in a task of its own, which ends when
    /// the connection does; calls made after that fail.
    pub async fn handshake<T>(io: T, authority: Authority) -> Result<H2Channel<B>, hyper::Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = hyper::client::conn::http2::Builder::new(HyperExec)
            .timer(HyperTimer)
            .handshake(TokioIo::new(io))
            .await?;
        hyper::rt::Executor::execute(&HyperExec, async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP/2 client connection ended");
            }
        });
        Ok(H2Channel { send, authority })
    }

    /// Whether the connection is gone (calls would fail).
    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }
}

impl<B> tower_service::Service<Request<B>> for H2Channel<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Response = Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let uri = req.uri();
        if uri.scheme().is_none() || uri.authority().is_none() {
            let mut parts = uri.clone().into_parts();
            parts.scheme.get_or_insert(Scheme::HTTP);
            parts
                .authority
                .get_or_insert_with(|| self.authority.clone());
            if let Ok(full) = Uri::from_parts(parts) {
                *req.uri_mut() = full;
            }
        }
        Box::pin(self.send.send_request(req))
    }
}
