//! TLS on the client and peer URLs (rustls with ring; no OpenSSL), configured by etcd's
//! flags: `--cert-file`, `--key-file`, `--client-cert-auth`, `--trusted-ca-file`,
//! `--auto-tls`, their `--peer-*` twins, and `--cipher-suites`.
//!
//! Loading reads files only through the `read` function its caller passes (the binary
//! passes `std::fs::read`; the simulator passes certificates it made in memory), so the node
//! itself does no file I/O here. Every failure is one line that names the file.
//!
//! - **Client side** (`https://` client URLs): a server config; with client-cert auth it
//!   refuses, in the handshake, any client without a certificate signed by the trusted CA,
//!   and the certificate's common name is then the v2 auth user (as in etcd).
//! - **Peer side** (`https://` peer URLs): a server config for the peer listener (with
//!   `--peer-client-cert-auth`, a peer without a certificate signed by the trusted CA never
//!   gets a Raft message in) and a client config for dialing peers, presenting the same
//!   certificate. Peers' server certificates are verified against `--peer-trusted-ca-file`
//!   or, without one, the system roots; with `--peer-auto-tls` they are not verified (etcd's
//!   behaviour: self-signed certificates cannot be).
//! - **Auto TLS** makes a self-signed certificate for the listen hosts at each start (kept
//!   in memory).

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::config::{Config, TlsConfig};

/// Reads a file named on the command line (certificates, keys, CAs).
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> io::Result<Vec<u8>>;

/// The TLS configuration of a member, ready to use.
#[derive(Clone, Default)]
pub struct Tls {
    /// For the client listeners (`https://` client URLs).
    pub client: Option<Arc<ServerConfig>>,
    /// Whether client certificates are required (their common name is the auth user).
    pub client_cert_auth: bool,
    /// For the peer listeners (`https://` peer URLs).
    pub peer_server: Option<Arc<ServerConfig>>,
    /// For dialing peers whose URLs are `https://`.
    pub peer_client: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("client", &self.client.is_some())
            .field("client_cert_auth", &self.client_cert_auth)
            .field("peer_server", &self.peer_server.is_some())
            .field("peer_client", &self.peer_client.is_some())
            .finish()
    }
}

/// Build the member's TLS from its configuration. Sides whose URLs are all `http://` get
/// none (the configuration check warns that their TLS flags are ignored).
pub fn load(cfg: &Config, read: ReadFile<'_>) -> Result<Tls, String> {
    let provider = Arc::new(provider(&cfg.cipher_suites)?);
    let client_https = cfg
        .listen_client_urls
        .iter()
        .chain(&cfg.advertise_client_urls)
        .any(|u| u.scheme() == "https");
    let peer_https = cfg
        .listen_peer_urls
        .iter()
        .chain(&cfg.initial_advertise_peer_urls)
        .chain(cfg.initial_cluster.iter().map(|(_, u)| u))
        .any(|u| u.scheme() == "https");
    let mut tls = Tls::default();
    if client_https {
        let hosts = hosts(
            cfg.listen_client_urls
                .iter()
                .chain(&cfg.advertise_client_urls),
        );
        let (certs, key) = identity("client", &cfg.client_tls, &hosts, read)?;
        tls.client = Some(server_config(
            "client",
            &cfg.client_tls,
            &provider,
            certs,
            key,
            read,
        )?);
        tls.client_cert_auth = cfg.client_tls.client_cert_auth;
    }
    if peer_https {
        let hosts = hosts(
            cfg.listen_peer_urls
                .iter()
                .chain(&cfg.initial_advertise_peer_urls),
        );
        let (certs, key) = identity("peer", &cfg.peer_tls, &hosts, read)?;
        tls.peer_server = Some(server_config(
            "peer",
            &cfg.peer_tls,
            &provider,
            certs.clone(),
            key.clone_key(),
            read,
        )?);
        tls.peer_client = Some(peer_client_config(
            &cfg.peer_tls,
            &provider,
            certs,
            key,
            read,
        )?);
    }
    Ok(tls)
}

/// ring's provider, its TLS 1.2 suites restricted to `--cipher-suites` (Go's names) when
/// given. As in Go, the list does not apply to TLS 1.3, whose suites are always on.
fn provider(names: &[String]) -> Result<CryptoProvider, String> {
    let mut p = rustls::crypto::ring::default_provider();
    if names.is_empty() {
        return Ok(p);
    }
    let known: Vec<String> = p
        .cipher_suites
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS12)
        .map(|s| format!("{:?}", s.suite()))
        .collect();
    let mut keep = Vec::new();
    for n in names {
        // Go spells the ChaCha suites without the hash.
        let want = if n.ends_with("CHACHA20_POLY1305") {
            format!("{n}_SHA256")
        } else {
            n.clone()
        };
        match p
            .cipher_suites
            .iter()
            .find(|s| format!("{:?}", s.suite()) == want)
        {
            Some(s) if s.version() == &rustls::version::TLS12 => keep.push(*s),
            _ => {
                return Err(format!(
                    "--cipher-suites: {n:?} is not supported (supported: {})",
                    known.join(", ")
                ))
            }
        }
    }
    p.cipher_suites
        .retain(|s| s.version() != &rustls::version::TLS12 || keep.contains(s));
    Ok(p)
}

/// Host names and addresses of URLs (for auto TLS certificates).
fn hosts<'a>(urls: impl Iterator<Item = &'a url::Url>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for u in urls {
        if let Some(h) = u.host_str() {
            let h = h.trim_start_matches('[').trim_end_matches(']').to_string();
            if !out.contains(&h) {
                out.push(h);
            }
        }
    }
    if out.is_empty() {
        out.push("localhost".into());
    }
    out
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The certificate chain and key a side presents: from its files, or made at start with
/// auto TLS.
fn identity(
    side: &str,
    t: &TlsConfig,
    hosts: &[String],
    read: ReadFile<'_>,
) -> Result<Identity, String> {
    let flag = if side == "peer" { "--peer-" } else { "--" };
    match (&t.cert_file, &t.key_file) {
        (Some(c), Some(k)) => {
            let certs = read_certs(c, read)?;
            let key = read_key(k, read)?;
            Ok((certs, key))
        }
        (Some(_), None) => Err(format!("{flag}cert-file is set but {flag}key-file is not")),
        (None, Some(_)) => Err(format!("{flag}key-file is set but {flag}cert-file is not")),
        (None, None) if t.auto_tls => {
            let ck = rcgen::generate_simple_self_signed(hosts.to_vec())
                .map_err(|e| format!("{flag}auto-tls: generating a certificate: {e}"))?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
            tracing::info!(side, hosts = ?hosts, "auto TLS: generated a self-signed certificate");
            Ok((vec![ck.cert.der().clone()], key))
        }
        (None, None) => Err(format!(
            "{side} URLs are https but neither {flag}cert-file/{flag}key-file nor {flag}auto-tls is set"
        )),
    }
}

fn read_file(path: &Path, read: ReadFile<'_>) -> Result<Vec<u8>, String> {
    read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_certs(path: &Path, read: ReadFile<'_>) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_file(path, read)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &bytes[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path, read: ReadFile<'_>) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read_file(path, read)?;
    rustls_pemfile::private_key(&mut &bytes[..])
        .map_err(|e| format!("{}: not a PEM key file: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no PEM private key in the file", path.display()))
}

fn roots(path: &Path, read: ReadFile<'_>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(path, read)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: bad CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

fn server_config(
    side: &str,
    t: &TlsConfig,
    provider: &Arc<CryptoProvider>,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    read: ReadFile<'_>,
) -> Result<Arc<ServerConfig>, String> {
    let flag = if side == "peer" { "--peer-" } else { "--" };
    let builder = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{side} TLS: {e}"))?;
    let builder = if t.client_cert_auth {
        let ca = t
            .trusted_ca_file
            .as_ref()
            .ok_or_else(|| format!("{flag}client-cert-auth needs {flag}trusted-ca-file"))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(ca, read)?),
            Arc::clone(provider),
        )
        .build()
        .map_err(|e| format!("{}: {e}", ca.display()))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut cfg = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "{}: the key does not match the certificate {}: {e}",
            t.key_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "auto-tls key".into()),
            t.cert_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )
    })?;
    // The client port speaks HTTP/2 (gRPC; Go's gRPC client insists on ALPN "h2" over TLS)
    // and HTTP/1.1 (the v2 API, the v3 gateway), as etcd's does.
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if side == "peer" {
        cfg.alpn_protocols.clear();
    }
    Ok(Arc::new(cfg))
}

fn peer_client_config(
    t: &TlsConfig,
    provider: &Arc<CryptoProvider>,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    read: ReadFile<'_>,
) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("peer TLS: {e}"))?;
    let builder = if let Some(ca) = &t.trusted_ca_file {
        builder.with_root_certificates(roots(ca, read)?)
    } else if t.auto_tls && t.cert_file.is_none() {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(Arc::clone(provider))))
    } else {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for c in native.certs {
            let _ = roots.add(c);
        }
        if roots.is_empty() {
            return Err(
                "peer TLS: --peer-trusted-ca-file is not set and no system CA certificates were found"
                    .into(),
            );
        }
        builder.with_root_certificates(roots)
    };
    let cfg = builder
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("peer TLS: the key does not match the certificate: {e}"))?;
    Ok(Arc::new(cfg))
}

/// Accepts any server certificate: used only for peers with `--peer-auto-tls`, whose
/// self-signed certificates no CA vouches for (etcd skips verification there too).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub use detcd_rt::tls::{accept, connect, peer_common_name, server_name, Stream};
