//! TLS with client-certificate auth on client and peer URLs, with certificates made at test
//! time (rcgen): a 3-member cluster whose every URL is https; curl with the client
//! certificate works (and etcdctl's v3 gRPC over the same port), curl without it is refused
//! at the handshake, a fourth process whose
//! peer certificate no trusted CA signed cannot join or disturb the cluster, and bad
//! certificate files stop a member at start with one line naming the file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A certificate for `cn` (SANs 127.0.0.1 and localhost) signed by `ca`, written as
/// `<dir>/<file>.pem` and `<dir>/<file>-key.pem`.
fn issue(dir: &Path, ca: &Ca, cn: &str, file: &str) -> (PathBuf, PathBuf) {
    let mut p =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (c, k) = (
        dir.join(format!("{file}.pem")),
        dir.join(format!("{file}-key.pem")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    stranger: (PathBuf, PathBuf),
    rogue: (PathBuf, PathBuf),
}

fn pki(dir: &Path) -> Pki {
    let the_ca = ca("detcd test CA");
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, the_ca.cert.pem()).unwrap();
    let other = ca("some other CA");
    Pki {
        server: issue(dir, &the_ca, "detcd member", "server"),
        client: issue(dir, &the_ca, "root", "client"),
        stranger: issue(dir, &the_ca, "stranger", "stranger"),
        rogue: issue(dir, &other, "detcd member", "rogue"),
        ca: ca_pem,
    }
}

/// Flags of a member whose client and peer URLs are https with client-cert auth on both.
fn tls_member(
    dir: &Path,
    name: &str,
    (client, peer): (u16, u16),
    cluster: &str,
    state: &str,
    ca: &Path,
    (cert, key): &(PathBuf, PathBuf),
) -> Member {
    let mut m = member(dir, name, client, peer, cluster, state);
    for a in m.args.iter_mut() {
        *a = a.replace("http://", "https://");
    }
    let s = |p: &Path| p.display().to_string();
    m.args.extend([
        "--cert-file".into(),
        s(cert),
        "--key-file".into(),
        s(key),
        "--client-cert-auth".into(),
        "--trusted-ca-file".into(),
        s(ca),
        "--peer-cert-file".into(),
        s(cert),
        "--peer-key-file".into(),
        s(key),
        "--peer-client-cert-auth".into(),
        "--peer-trusted-ca-file".into(),
        s(ca),
    ]);
    m
}

/// curl's exit status and output (body, then the status code on the last line).
fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        out.status.success(),
        // stderr first, so that the status code ends the text
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ),
    )
}

fn curl_cert<'a>(pki: &'a Pki, extra: &[&'a str]) -> (bool, String) {
    let mut args = vec![
        "--cacert",
        pki.ca.to_str().unwrap(),
        "--cert",
        pki.client.0.to_str().unwrap(),
        "--key",
        pki.client.1.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    curl(&args)
}

#[test]
fn tls_cluster_with_client_certificates() {
    if !require_bin("curl", "Debian package curl")
        || !require_bin("etcdctl", "Debian package etcd-client")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let ports: Vec<(u16, u16)> = (0..3).map(|_| ports()).collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("infra{i}=https://127.0.0.1:{p}"))
        .collect();
    let mut members: Vec<Member> = ports
        .iter()
        .enumerate()
        .map(|(i, pp)| {
            tls_member(
                dir.path(),
                &format!("infra{i}"),
                *pp,
                &initial.join(","),
                "new",
                &pki.ca,
                &pki.server,
            )
        })
        .collect();
    for m in members.iter_mut() {
        m.start();
    }
    let url = |i: usize, path: &str| format!("https://127.0.0.1:{}{path}", ports[i].0);

    // The tutorial's first write, over TLS with the client certificate, read on another member.
    let (ok, out) = eventually(Duration::from_secs(30), "a TLS write to succeed", || {
        let (ok, out) = curl_cert(
            &pki,
            &[
                &url(0, "/v2/keys/message"),
                "-XPUT",
                "-d",
                "value=Hello world",
            ],
        );
        (ok && out.ends_with("201")).then_some((ok, out))
    });
    assert!(ok && out.contains("\"value\":\"Hello world\""), "{out}");
    eventually(Duration::from_secs(10), "the write on member 2", || {
        let (ok, out) = curl_cert(&pki, &[&url(2, "/v2/keys/message")]);
        (ok && out.contains("Hello world") && out.ends_with("200")).then_some(())
    });
    let (ok, out) = curl_cert(&pki, &[&url(1, "/v2/members")]);
    assert!(
        ok && out.matches("https://127.0.0.1:").count() >= 6,
        "{out}"
    );

    // v3 over the same port: gRPC needs HTTP/2 negotiated by ALPN over TLS (Go's client
    // insists on it), and the client certificate is checked as for v2.
    let etcdctl = |i: usize, cert: Option<&(PathBuf, PathBuf)>, args: &[&str]| {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &url(i, ""),
                "--cacert",
                pki.ca.to_str().unwrap(),
            ])
            .args(["--command-timeout", "5s", "--dial-timeout", "3s"]);
        if let Some((cert, key)) = cert {
            c.args([
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ]);
        }
        let o = c.args(args).output().expect("etcdctl runs");
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let (ok, out) = etcdctl(0, Some(&pki.client), &["put", "v3-over-tls", "yes"]);
    assert!(ok && out.trim() == "OK", "{out}");
    let (ok, out) = etcdctl(
        2,
        Some(&pki.client),
        &["get", "v3-over-tls", "--print-value-only"],
    );
    assert!(ok && out.trim() == "yes", "{out}");
    let (ok, out) = etcdctl(1, None, &["get", "v3-over-tls"]);
    assert!(
        !ok,
        "a v3 client without a certificate got an answer: {out}"
    );
    // With v3 auth on and no token, the certificate's common name is the user (etcd's
    // AuthInfoFromTLS): the client certificate's CN is root, the stranger's has no user.
    for args in [
        &["user", "add", "root:pw"][..],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
    ] {
        let (ok, out) = etcdctl(0, Some(&pki.client), args);
        assert!(ok, "etcdctl {args:?}: {out}");
    }
    let (ok, out) = etcdctl(1, Some(&pki.client), &["put", "v3-cn", "root"]);
    assert!(ok && out.trim() == "OK", "{out}");
    let (ok, out) = etcdctl(2, Some(&pki.stranger), &["get", "v3-cn"]);
    assert!(
        !ok && out.contains("etcdserver: permission denied"),
        "{out}"
    );
    let (ok, out) = etcdctl(2, Some(&pki.client), &["auth", "disable"]);
    assert!(ok, "{out}");

    // Without a client certificate the handshake fails: no HTTP answer at all.
    let (ok, out) = curl(&[
        "--cacert",
        pki.ca.to_str().unwrap(),
        &url(0, "/v2/keys/message"),
    ]);
    assert!(!ok, "a client without a certificate got in: {out}");
    assert!(out.ends_with("000"), "{out}");
    // Nor with a certificate from another CA.
    let (ok, out) = curl(&[
        "--cacert",
        pki.ca.to_str().unwrap(),
        "--cert",
        pki.rogue.0.to_str().unwrap(),
        "--key",
        pki.rogue.1.to_str().unwrap(),
        &url(0, "/v2/keys/message"),
    ]);
    assert!(
        !ok && out.ends_with("000"),
        "an untrusted certificate got in: {out}"
    );
    // Plain HTTP on a TLS port gets no answer either.
    let plain = get(&format!("127.0.0.1:{}", ports[0].0), "/v2/keys/message");
    assert!(plain.map(|r| r.status == 0).unwrap_or(true));

    // A fourth process with a peer certificate from another CA cannot join or disturb the
    // cluster, even though the cluster added its peer URL: its handshakes are refused.
    let rogue_ports = common::ports();
    let rogue_peer = format!("https://127.0.0.1:{}", rogue_ports.1);
    let body = format!("{{\"peerURLs\":[\"{rogue_peer}\"]}}");
    eventually(Duration::from_secs(30), "the member add", || {
        let (ok, out) = curl_cert(
            &pki,
            &[
                &url(0, "/v2/members"),
                "-XPOST",
                "-H",
                "Content-Type: application/json",
                "-d",
                &body,
            ],
        );
        (ok && out.ends_with("201")).then_some(())
    });
    let cluster = format!("{},rogue={rogue_peer}", initial.join(","));
    let mut rogue = tls_member(
        dir.path(),
        "rogue",
        rogue_ports,
        &cluster,
        "existing",
        &pki.ca,
        &pki.rogue,
    );
    rogue.start();
    let status = eventually(
        Duration::from_secs(90),
        "the rogue member to give up",
        || rogue.child.as_mut().unwrap().try_wait().unwrap(),
    );
    assert!(!status.success());
    println!("rogue: {}", rogue.logs().lines().last().unwrap_or(""));
    assert!(
        members
            .iter()
            .any(|m| m.logs().contains("TLS handshake refused")),
        "no member logged a refused peer handshake"
    );
    let (ok, out) = curl_cert(
        &pki,
        &[&url(1, "/v2/keys/after"), "-XPUT", "-d", "value=still"],
    );
    assert!(ok && out.ends_with("201"), "{out}");
    let (ok, out) = curl_cert(&pki, &[&url(0, "/v2/members")]);
    assert!(
        ok && !out.contains("\"name\":\"rogue\""),
        "the rogue published itself: {out}"
    );

    // etcdctl (v2) with the same certificates, when Debian's etcd-client is installed.
    if require_bin(
        "etcdctl",
        "Debian package etcd-client; the rest of this test runs",
    ) {
        let etcdctl = |args: &[&str]| {
            Command::new("etcdctl")
                .env("ETCDCTL_API", "2")
                .args([
                    "--endpoints",
                    &url(0, ""),
                    "--cert-file",
                    pki.client.0.to_str().unwrap(),
                    "--key-file",
                    pki.client.1.to_str().unwrap(),
                    "--ca-file",
                    pki.ca.to_str().unwrap(),
                ])
                .args(args)
                .output()
                .unwrap()
        };
        let o = etcdctl(&["set", "/ctl", "over-tls"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let o = etcdctl(&["get", "/ctl"]);
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "over-tls");
        let o = etcdctl(&["member", "list"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("isLeader=true"));
    }

    // v2 auth with client-cert auth: the certificate's common name is the user.
    let (ok, out) = curl_cert(
        &pki,
        &[
            &url(0, "/v2/auth/users/root"),
            "-XPUT",
            "-d",
            r#"{"user":"root","password":"pw"}"#,
        ],
    );
    assert!(ok && out.ends_with("201"), "{out}");
    let (ok, out) = curl_cert(&pki, &[&url(0, "/v2/auth/enable"), "-XPUT"]);
    assert!(ok && out.ends_with("200"), "{out}");
    // CN=root, no password: root access on any member.
    eventually(Duration::from_secs(10), "auth on member 1", || {
        let (ok, out) = curl_cert(&pki, &[&url(1, "/v2/auth/enable")]);
        (ok && out.contains("true")).then_some(())
    });
    let (ok, out) = curl_cert(&pki, &[&url(1, "/v2/auth/users")]);
    assert!(
        ok && out.ends_with("200") && out.contains("\"root\""),
        "{out}"
    );
    // CN=stranger (a trusted certificate, but no such user): no root access.
    let stranger = |path: &str| {
        curl(&[
            "--cacert",
            pki.ca.to_str().unwrap(),
            "--cert",
            pki.stranger.0.to_str().unwrap(),
            "--key",
            pki.stranger.1.to_str().unwrap(),
            &url(2, path),
        ])
    };
    let (ok, out) = stranger("/v2/auth/users");
    assert!(ok && out.ends_with("401"), "{out}");
    // ... yet the guest role (full access until revoked) still reads keys.
    let (ok, out) = stranger("/v2/keys/message");
    assert!(ok && out.ends_with("200"), "{out}");
    drop(members.drain(..));
}

#[test]
fn bad_certificate_files_stop_the_member_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let missing = dir.path().join("nope.pem");
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![
                "--cert-file".into(),
                missing.display().to_string(),
                "--key-file".into(),
                pki.server.1.display().to_string(),
            ],
            missing.display().to_string(),
        ),
        (
            // the client certificate's key with the server certificate
            vec![
                "--cert-file".into(),
                pki.server.0.display().to_string(),
                "--key-file".into(),
                pki.client.1.display().to_string(),
            ],
            pki.client.1.display().to_string(),
        ),
        (
            vec![
                "--cert-file".into(),
                pki.ca.display().to_string(),
                "--key-file".into(),
                pki.ca.display().to_string(),
            ],
            pki.ca.display().to_string(),
        ),
        (
            vec![
                "--auto-tls".into(),
                "--client-cert-auth".into(),
                "--trusted-ca-file".into(),
                pki.server.1.display().to_string(),
            ],
            pki.server.1.display().to_string(),
        ),
    ];
    for (extra, named) in cases {
        let (c, p) = ports();
        let mut args = member_args(
            "solo",
            &dir.path().join("solo"),
            c,
            p,
            &format!("solo=http://127.0.0.1:{p}"),
            "new",
        );
        for a in args.iter_mut() {
            if a.contains(&format!(":{c}")) {
                *a = a.replace("http://", "https://");
            }
        }
        args.extend(extra.clone());
        let out = Command::new(env!("CARGO_BIN_EXE_detcd"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().find(|l| l.starts_with("detcd: ")).unwrap_or("");
        assert!(!out.status.success(), "{extra:?} started");
        assert!(line.contains(&named), "{extra:?}: {err}");
    }
}

#[test]
fn auto_tls_serves_https() {
    if !require_bin("curl", "Debian package curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (c, p) = ports();
    let mut m = member(
        dir.path(),
        "auto",
        c,
        p,
        &format!("auto=https://127.0.0.1:{p}"),
        "new",
    );
    for a in m.args.iter_mut() {
        *a = a.replace("http://", "https://");
    }
    m.args
        .extend(["--auto-tls".into(), "--peer-auto-tls".into()]);
    m.start();
    let url = format!("https://127.0.0.1:{c}/v2/keys/a");
    eventually(Duration::from_secs(20), "an auto-TLS write", || {
        let (ok, out) = curl(&["-k", &url, "-XPUT", "-d", "value=1"]);
        (ok && out.ends_with("201")).then_some(())
    });
    // Its certificate is self-signed: verification against the system roots fails.
    let (ok, _) = curl(&[&url]);
    assert!(!ok);
}
