//! A small HTTP/1.1 client for the simulated clients: hyper over madsim's TCP, one
//! keep-alive connection per client, re-dialled after any failure. (reqwest needs the real
//! tokio runtime, so it cannot run inside the simulation.)

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;

use detcd_node::rt::{FlushFilter, HyperExec};

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `X-Etcd-Index`, if present.
    pub etcd_index: Option<u64>,
    /// The body.
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made: the request was certainly not sent.
    NotSent,
    /// Sent (or maybe sent) but no answer came: it may or may not have taken effect.
    Lost,
}

thread_local! {
    /// The TLS configuration of this run's clients (`tls = true` scenarios). Each run has
    /// its own thread (madsim runs a simulation on the thread that starts it), so this is
    /// per run, not shared between runs.
    static CLIENT_TLS: RefCell<Option<Arc<rustls::ClientConfig>>> = const { RefCell::new(None) };
}

/// Set how this run's clients dial: over TLS with this configuration, or plain.
pub fn set_client_tls(cfg: Option<Arc<rustls::ClientConfig>>) {
    CLIENT_TLS.with(|c| *c.borrow_mut() = cfg);
}

/// One client's connection to one member.
pub struct HttpClient {
    addr: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl HttpClient {
    /// A client for `host:port`; it connects on first use (over TLS in a TLS run).
    pub fn new(addr: String) -> HttpClient {
        HttpClient {
            addr,
            tls: CLIENT_TLS.with(|c| c.borrow().clone()),
            sender: None,
        }
    }

    /// The member it talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn connect(&mut self, timeout: Duration) -> Result<(), Failure> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(&self.addr)).await {
            Ok(Ok(s)) => s,
            _ => return Err(Failure::NotSent),
        };
        let url = match self.tls {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        };
        let stream = match tokio::time::timeout(
            timeout,
            detcd_node::tls::connect(self.tls.as_ref(), &url, FlushFilter::new(stream)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            _ => return Err(Failure::NotSent),
        };
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|_| Failure::NotSent)?;
        hyper::rt::Executor::execute(&HyperExec, async move {
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// Send a request and wait up to `timeout` for the whole answer.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        form: Option<String>,
        timeout: Duration,
    ) -> Result<Reply, Failure> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect(timeout).await?;
        }
        let sender = self.sender.as_mut().expect("connected");
        if tokio::time::timeout(timeout, sender.ready())
            .await
            .map(|r| r.is_err())
            .unwrap_or(true)
        {
            self.sender = None;
            return Err(Failure::NotSent);
        }
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("Host", self.addr.as_str());
        let body = match form {
            Some(f) => {
                b = b.header("Content-Type", "application/x-www-form-urlencoded");
                Full::new(Bytes::from(f))
            }
            None => Full::new(Bytes::new()),
        };
        let req = b.body(body).expect("valid request");
        let fut = async {
            let resp = sender.send_request(req).await.map_err(|_| Failure::Lost)?;
            let status = resp.status().as_u16();
            let etcd_index = resp
                .headers()
                .get("X-Etcd-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|_| Failure::Lost)?
                .to_bytes();
            Ok(Reply {
                status,
                etcd_index,
                body,
            })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(f)) => {
                self.sender = None;
                Err(f)
            }
            Err(_) => {
                self.sender = None;
                Err(Failure::Lost)
            }
        }
    }
}

/// Form-encode key/value pairs.
pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}
