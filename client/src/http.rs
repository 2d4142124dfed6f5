//! HTTP/1.1 over the runtime seam: keep-alive connections per endpoint, TLS for `https://`.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use percent_encoding::{AsciiSet, CONTROLS};
use tokio::net::TcpStream;

use detcd_rt::{FlushFilter, HyperExec};

use crate::{Config, Error, EtcdError, Member, Response};

/// Characters escaped in a key's path segment.
pub const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Idle connections kept per endpoint.
const IDLE_MAX: usize = 16;

/// A parsed endpoint.
pub struct Endpoint {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// `host:port`.
    pub addr: String,
}

impl Endpoint {
    /// Parse a client URL.
    pub fn parse(url: &str) -> Result<Endpoint, Error> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| Error::Config(format!("endpoint {url:?}: expected http://host:port")))?;
        if scheme != "http" && scheme != "https" {
            return Err(Error::Config(format!(
                "endpoint {url:?}: scheme must be http or https"
            )));
        }
        let hostport = rest.split('/').next().unwrap_or("");
        if hostport.is_empty() {
            return Err(Error::Config(format!("endpoint {url:?}: no host")));
        }
        let addr = if hostport
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            hostport.to_string()
        } else if scheme == "https" {
            format!("{hostport}:443")
        } else {
            format!("{hostport}:80")
        };
        Ok(Endpoint {
            url: format!("{scheme}://{hostport}"),
            addr,
        })
    }
}

/// A request body.
#[derive(Clone)]
pub enum Body {
    /// `application/x-www-form-urlencoded`.
    Form(String),
    /// `application/json`.
    Json(String),
}

/// Why a request failed at the transport.
pub enum Failure {
    /// Not sent: safe to send elsewhere.
    NotSent(String),
    /// Sent, no (whole) answer: outcome unknown.
    Lost(String),
}

/// An answer as received.
pub struct Raw {
    status: u16,
    etcd_index: u64,
    body: Bytes,
}

impl Raw {
    fn error(&self) -> Error {
        if let Ok(e) = serde_json::from_slice::<EtcdError>(&self.body) {
            if e.error_code != 0 {
                return Error::Etcd(e);
            }
        }
        Error::Http {
            status: self.status,
            body: String::from_utf8_lossy(&self.body).into_owned(),
        }
    }

    /// A keys answer or etcd's error.
    pub fn into_response(self) -> Result<Response, Error> {
        if !(200..300).contains(&self.status) {
            return Err(self.error());
        }
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Response {
                etcd_index: self.etcd_index,
                ..Response::default()
            });
        }
        let mut r: Response = serde_json::from_slice(&self.body)
            .map_err(|e| Error::Decode(format!("{e}: {}", String::from_utf8_lossy(&self.body))))?;
        r.etcd_index = self.etcd_index;
        Ok(r)
    }

    /// One member.
    pub fn into_member(self) -> Result<Member, Error> {
        if self.status != 200 {
            return Err(self.error());
        }
        serde_json::from_slice::<Member>(&self.body).map_err(|e| Error::Decode(e.to_string()))
    }

    /// The member a `POST /v2/members` created.
    pub fn into_member_created(self) -> Result<Member, Error> {
        if self.status != 201 {
            return Err(self.error());
        }
        serde_json::from_slice::<Member>(&self.body).map_err(|e| Error::Decode(e.to_string()))
    }

    /// A `204 No Content` answer.
    pub fn into_no_content(self) -> Result<(), Error> {
        if (200..300).contains(&self.status) {
            Ok(())
        } else {
            Err(self.error())
        }
    }

    /// A role's read and write patterns (`{"role":..,"permissions":{"kv":{"read":..,"write":..}}}`;
    /// null lists are empty).
    pub fn into_role(self) -> Result<(Vec<String>, Vec<String>), Error> {
        if !(200..300).contains(&self.status) {
            return Err(self.error());
        }
        let v: serde_json::Value =
            serde_json::from_slice(&self.body).map_err(|e| Error::Decode(e.to_string()))?;
        let list = |k: &str| -> Vec<String> {
            v["permissions"]["kv"][k]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok((list("read"), list("write")))
    }

    /// `{"enabled": bool}`.
    pub fn into_enabled(self) -> Result<bool, Error> {
        if self.status != 200 {
            return Err(self.error());
        }
        let v: serde_json::Value =
            serde_json::from_slice(&self.body).map_err(|e| Error::Decode(e.to_string()))?;
        v["enabled"]
            .as_bool()
            .ok_or_else(|| Error::Decode(format!("no \"enabled\" in {v}")))
    }

    /// A members list.
    pub fn into_members(self) -> Result<Vec<Member>, Error> {
        if self.status != 200 {
            return Err(self.error());
        }
        #[derive(serde::Deserialize)]
        struct List {
            members: Vec<Member>,
        }
        serde_json::from_slice::<List>(&self.body)
            .map(|l| l.members)
            .map_err(|e| Error::Decode(e.to_string()))
    }
}

/// Idle keep-alive connections.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<(String, SendRequest<Full<Bytes>>)>>,
}

impl Pool {
    fn take(&self, url: &str) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().expect("pool lock");
        idle.retain(|(_, s)| !s.is_closed());
        let i = idle.iter().position(|(u, _)| u == url)?;
        Some(idle.swap_remove(i).1)
    }

    fn put(&self, url: &str, s: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.iter().filter(|(u, _)| u == url).count() < IDLE_MAX {
            idle.push((url.to_string(), s));
        }
    }

    async fn dial(
        &self,
        ep: &Endpoint,
        cfg: &Config,
        timeout: Duration,
    ) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let fut = async {
            let tcp = TcpStream::connect(&ep.addr)
                .await
                .map_err(|e| Failure::NotSent(e.to_string()))?;
            detcd_rt::tune_stream(&tcp);
            let stream = detcd_rt::tls::connect(cfg.tls.as_ref(), &ep.url, FlushFilter::new(tcp))
                .await
                .map_err(|e| Failure::NotSent(e.to_string()))?;
            let (send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| Failure::NotSent(e.to_string()))?;
            hyper::rt::Executor::execute(&HyperExec, async move {
                let _ = conn.await;
            });
            Ok(send)
        };
        detcd_rt::timeout(timeout, fut)
            .await
            .map_err(|_| Failure::NotSent(format!("connecting to {} timed out", ep.addr)))?
    }

    /// One request on a pooled or new connection.
    pub async fn request(
        &self,
        ep: &Endpoint,
        cfg: &Config,
        method: &str,
        path: &str,
        form: Option<Body>,
        timeout: Duration,
    ) -> Result<Raw, Failure> {
        let mut send = match self.take(&ep.url) {
            Some(s) => s,
            None => self.dial(ep, cfg, cfg.timeout.min(timeout)).await?,
        };
        if detcd_rt::timeout(cfg.timeout.min(timeout), send.ready())
            .await
            .map(|r| r.is_err())
            .unwrap_or(true)
        {
            return Err(Failure::NotSent(format!(
                "{}: connection not ready",
                ep.addr
            )));
        }
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("Host", ep.addr.as_str());
        if let Some((u, p)) = &cfg.basic_auth {
            let tok = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            b = b.header("Authorization", format!("Basic {tok}"));
        }
        let body = match form {
            Some(Body::Form(f)) => {
                b = b.header("Content-Type", "application/x-www-form-urlencoded");
                Full::new(Bytes::from(f))
            }
            Some(Body::Json(j)) => {
                b = b.header("Content-Type", "application/json");
                Full::new(Bytes::from(j))
            }
            None => Full::new(Bytes::new()),
        };
        let req = b
            .body(body)
            .map_err(|e| Failure::NotSent(format!("bad request: {e}")))?;
        let exchange = async {
            let resp = send
                .send_request(req)
                .await
                .map_err(|e| Failure::Lost(e.to_string()))?;
            let status = resp.status().as_u16();
            let etcd_index = resp
                .headers()
                .get("X-Etcd-Index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| Failure::Lost(e.to_string()))?
                .to_bytes();
            Ok(Raw {
                status,
                etcd_index,
                body,
            })
        };
        let raw = detcd_rt::timeout(timeout, exchange)
            .await
            .map_err(|_| Failure::Lost(format!("{}: no answer within {timeout:?}", ep.addr)))??;
        self.put(&ep.url, send);
        Ok(raw)
    }
}
