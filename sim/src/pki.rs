//! Certificates for scenarios with `tls = true`, made at the start of each run (rcgen; in
//! the simulation its randomness comes from madsim's seeded rng). Three CAs, as an operator
//! who keeps the two sides apart would have:
//!
//! - the **peer CA** signs each member's peer certificate (its peer URL's server
//!   certificate and the one it presents when it dials a peer); members trust only it on
//!   the peer port (`--peer-trusted-ca-file`, `--peer-client-cert-auth`);
//! - the **client CA** signs each member's client-URL server certificate and the simulated
//!   clients' certificate (common name `root`); members trust only it on the client port
//!   (`--trusted-ca-file`, `--client-cert-auth`);
//! - an **unknown CA** no member trusts signs the certificates intruders try
//!   ([`crate::intruders`]).
//!
//! Members read the files through [`detcd_node::tls::load`] from memory, by the same flags
//! an operator would pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate with its key, as DER.
#[derive(Clone)]
pub struct Identity {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

/// The certificate files and the TLS configurations dialers use.
#[derive(Clone)]
pub struct Pki {
    files: Arc<BTreeMap<PathBuf, Vec<u8>>>,
    /// What the simulated clients dial with: a client-CA certificate, trusting the client CA.
    pub client: Arc<rustls::ClientConfig>,
    /// The peer CA.
    pub peer_ca: CertificateDer<'static>,
    /// The client CA.
    pub client_ca: CertificateDer<'static>,
    /// The simulated clients' certificate (client CA, common name `root`).
    pub client_cert: Identity,
    /// A certificate from the CA nobody trusts (common name `root`, the members' addresses).
    pub stranger: Identity,
}

/// Where the members' flags say the files are: the peer side's CA...
pub const PEER_CA: &str = "/certs/peer-ca.pem";
/// ...the members' peer certificate...
pub const PEER_CERT: &str = "/certs/peer.pem";
/// ...and its key.
pub const PEER_KEY: &str = "/certs/peer-key.pem";
/// The client side's CA...
pub const CLIENT_CA: &str = "/certs/client-ca.pem";
/// ...the members' client-URL server certificate...
pub const SERVER_CERT: &str = "/certs/server.pem";
/// ...and its key.
pub const SERVER_KEY: &str = "/certs/server-key.pem";

fn ca(name: &str) -> (Certificate, KeyPair) {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("CA key");
    let cert = p.self_signed(&key).expect("CA certificate");
    (cert, key)
}

fn issue(by: &(Certificate, KeyPair), sans: Vec<String>, cn: &str) -> (Certificate, KeyPair) {
    let mut p = CertificateParams::new(sans).expect("certificate params");
    p.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &by.0, &by.1).expect("certificate");
    (cert, key)
}

fn identity(c: &(Certificate, KeyPair)) -> Identity {
    Identity {
        cert: c.0.der().clone(),
        key: c.1.serialize_der(),
    }
}

impl Pki {
    /// The three CAs and the certificates for members at `ips`.
    pub fn new(ips: &[String]) -> Pki {
        let peer_ca = ca("detcd-sim peer CA");
        let client_ca = ca("detcd-sim client CA");
        let unknown_ca = ca("intruder CA");
        let peer = issue(&peer_ca, ips.to_vec(), "detcd member");
        let server = issue(&client_ca, ips.to_vec(), "detcd member");
        let client = issue(&client_ca, vec!["client".into()], "root");
        let stranger = issue(&unknown_ca, ips.to_vec(), "root");
        let mut files = BTreeMap::new();
        let mut put = |path: &str, bytes: String| {
            files.insert(PathBuf::from(path), bytes.into_bytes());
        };
        put(PEER_CA, peer_ca.0.pem());
        put(PEER_CERT, peer.0.pem());
        put(PEER_KEY, peer.1.serialize_pem());
        put(CLIENT_CA, client_ca.0.pem());
        put(SERVER_CERT, server.0.pem());
        put(SERVER_KEY, server.1.serialize_pem());
        let client_cert = identity(&client);
        Pki {
            files: Arc::new(files),
            client: dialer(client_ca.0.der(), Some(&client_cert)),
            peer_ca: peer_ca.0.der().clone(),
            client_ca: client_ca.0.der().clone(),
            client_cert,
            stranger: identity(&stranger),
        }
    }

    /// Read one of the files (for [`detcd_node::tls::load`]).
    pub fn read(&self, p: &Path) -> std::io::Result<Vec<u8>> {
        self.files.get(p).cloned().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, p.display().to_string())
        })
    }

    /// The TLS flags of a member: each side its own certificate and CA; client-certificate
    /// auth on each side unless the scenario turns it off (only tests of the `intruders`
    /// check do).
    pub fn member_flags(client_cert_auth: bool, peer_client_cert_auth: bool) -> Vec<String> {
        let mut f = vec![
            "--cert-file",
            SERVER_CERT,
            "--key-file",
            SERVER_KEY,
            "--trusted-ca-file",
            CLIENT_CA,
            "--peer-cert-file",
            PEER_CERT,
            "--peer-key-file",
            PEER_KEY,
            "--peer-trusted-ca-file",
            PEER_CA,
        ];
        if client_cert_auth {
            f.push("--client-cert-auth");
        }
        if peer_client_cert_auth {
            f.push("--peer-client-cert-auth");
        }
        f.into_iter().map(String::from).collect()
    }
}

/// A TLS configuration that trusts `ca` as the server's and presents `cert` (or none).
pub fn dialer(ca: &CertificateDer<'static>, cert: Option<&Identity>) -> Arc<rustls::ClientConfig> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots(ca));
    Arc::new(match cert {
        None => b.with_no_client_auth(),
        Some(id) => b
            .with_client_auth_cert(
                vec![id.cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.clone())),
            )
            .expect("client certificate"),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateDer<'static>) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("CA into roots");
    roots
}
