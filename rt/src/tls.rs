//! TLS streams: plain TCP or TLS (rustls) on either end, for the client API, the peer
//! transport and clients. Configurations are built elsewhere (detcd's `tls` module from
//! etcd's flags; a client from its own settings).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The server name to verify when dialing `url`.
pub fn server_name(url: &str) -> io::Result<ServerName<'static>> {
    let u = url::Url::parse(url).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let host = u
        .host_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL without a host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    ServerName::try_from(host).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// The common name of the first certificate a TLS client presented, if any.
pub fn peer_common_name(certs: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let der = certs?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// A stream that is plain TCP or TLS on either end.
pub enum Stream<S> {
    /// No TLS.
    Plain(S),
    /// TLS, accepted.
    Server(Box<tokio_rustls::server::TlsStream<S>>),
    /// TLS, dialed.
    Client(Box<tokio_rustls::client::TlsStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accept TLS on `stream` if `cfg` is set.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    cfg: Option<&Arc<ServerConfig>>,
    stream: S,
) -> io::Result<Stream<S>> {
    match cfg {
        None => Ok(Stream::Plain(stream)),
        Some(c) => {
            let s = tokio_rustls::TlsAcceptor::from(Arc::clone(c))
                .accept(stream)
                .await?;
            Ok(Stream::Server(Box::new(s)))
        }
    }
}

/// Dial TLS over `stream` to `url` when the URL is `https://`.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    cfg: Option<&Arc<ClientConfig>>,
    url: &str,
    stream: S,
) -> io::Result<Stream<S>> {
    if !url.starts_with("https://") {
        return Ok(Stream::Plain(stream));
    }
    let Some(c) = cfg else {
        return Err(io::Error::other(format!(
            "peer URL {url} is https but this member has no peer TLS configured"
        )));
    };
    let s = tokio_rustls::TlsConnector::from(Arc::clone(c))
        .connect(server_name(url)?, stream)
        .await?;
    Ok(Stream::Client(Box::new(s)))
}

impl<S> Stream<S> {
    /// The client certificate's common name on an accepted TLS stream.
    pub fn client_common_name(&self) -> Option<String> {
        match self {
            Stream::Server(s) => peer_common_name(s.get_ref().1.peer_certificates()),
            _ => None,
        }
    }
}
