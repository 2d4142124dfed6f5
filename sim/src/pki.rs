//! Certificates for scenarios with `tls = true`, made at the start of each run (rcgen; in
//! the simulation its randomness comes from madsim's seeded rng): one CA, one certificate
//! for every member (its client and peer URLs), and one client certificate with common name
//! `root` for the simulated clients. Members read them through [`detcd_node::tls::load`]
//! from memory, by the same flags an operator would pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The certificate files and the clients' TLS configuration.
#[derive(Clone)]
pub struct Pki {
    files: Arc<BTreeMap<PathBuf, Vec<u8>>>,
    /// What the simulated clients dial with.
    pub client: Arc<rustls::ClientConfig>,
}

/// Where the members' flags say the files are.
pub const CA: &str = "/certs/ca.pem";
/// The members' certificate (client and peer side).
pub const CERT: &str = "/certs/member.pem";
/// Its key.
pub const KEY: &str = "/certs/member-key.pem";

impl Pki {
    /// A CA and certificates for members at `ips`.
    pub fn new(ips: &[String]) -> Pki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "detcd-sim CA");
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issue = |sans: Vec<String>, cn: &str| {
            let mut p = CertificateParams::new(sans).expect("certificate params");
            p.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().expect("key");
            let cert = p.signed_by(&key, &ca_cert, &ca_key).expect("certificate");
            (cert, key)
        };
        let (member, member_key) = issue(ips.to_vec(), "detcd member");
        let (client, client_key) = issue(vec!["client".into()], "root");
        let mut files = BTreeMap::new();
        files.insert(PathBuf::from(CA), ca_cert.pem().into_bytes());
        files.insert(PathBuf::from(CERT), member.pem().into_bytes());
        files.insert(PathBuf::from(KEY), member_key.serialize_pem().into_bytes());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).expect("CA into roots");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from(client.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client_key.serialize_der())),
            )
            .expect("client certificate");
        Pki {
            files: Arc::new(files),
            client: Arc::new(client),
        }
    }

    /// Read one of the files (for [`detcd_node::tls::load`]).
    pub fn read(&self, p: &Path) -> std::io::Result<Vec<u8>> {
        self.files.get(p).cloned().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, p.display().to_string())
        })
    }

    /// The TLS flags of a member.
    pub fn member_flags() -> Vec<String> {
        [
            "--cert-file",
            CERT,
            "--key-file",
            KEY,
            "--client-cert-auth",
            "--trusted-ca-file",
            CA,
            "--peer-cert-file",
            CERT,
            "--peer-key-file",
            KEY,
            "--peer-client-cert-auth",
            "--peer-trusted-ca-file",
            CA,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}
