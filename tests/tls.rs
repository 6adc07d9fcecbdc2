//! HTTPS on the S3 listener with certificates from a private CA (made with openssl): a chain
//! served leaf first, clients trusting only the root (aws-sdk-s3 with rustls, the aws CLI with
//! `--ca-bundle`), a client trusting another CA refused, and certificates replaced on disk
//! served without a restart (on a file change, on SIGHUP) while a broken file is ignored.

mod common;

use common::{Cluster, Opts};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs openssl, panicking with its output if it fails.
fn openssl(args: &[&str], cwd: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("openssl is needed to make test certificates");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A folder of PEM files for a test, removed at the end.
struct Pki {
    dir: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

const EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tls-{name}-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).unwrap()
    }

    /// A self-signed root CA `NAME.pem` / `NAME.key`.
    fn root(&self, name: &str) {
        let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
        args.extend(EC_KEY);
        let subj = format!("/CN={name}");
        args.extend(["-subj", &subj, "-keyout", &key, "-out", &cert]);
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(&args, &self.dir);
    }

    /// A certificate `NAME.pem` / `NAME.key` for CN `NAME` and serial `serial` (hex), signed by
    /// `issuer`: an intermediate CA if `ca`, else a server certificate for 127.0.0.1/localhost.
    fn issue(&self, name: &str, issuer: &str, serial: &str, ca: bool) {
        let (cert, key, csr) = (
            format!("{name}.pem"),
            format!("{name}.key"),
            format!("{name}.csr"),
        );
        let mut args = vec!["req", "-new", "-nodes"];
        args.extend(EC_KEY);
        let subj = format!("/CN={name}");
        args.extend(["-subj", &subj, "-keyout", &key, "-out", &csr]);
        openssl(&args, &self.dir);
        let ext = format!("{name}.ext");
        let extensions = if ca {
            "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
        } else {
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        };
        std::fs::write(
            self.path(&ext),
            format!("{extensions}subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"),
        )
        .unwrap();
        let (issuer_cert, issuer_key) = (format!("{issuer}.pem"), format!("{issuer}.key"));
        let serial = format!("0x{serial}");
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &issuer_cert,
                "-CAkey",
                &issuer_key,
                "-set_serial",
                &serial,
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
            &self.dir,
        );
    }

    /// Concatenates PEM files into `out` (a chain: leaf first).
    fn chain(&self, out: &str, parts: &[&str]) -> PathBuf {
        let text: Vec<u8> = parts.iter().flat_map(|p| self.read(p)).collect();
        std::fs::write(self.path(out), text).unwrap();
        self.path(out)
    }
}

/// Replaces `to` by `from` atomically (a renamed copy), as certificate tools do.
fn install(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// An aws-sdk-s3 client over HTTPS (rustls) trusting only the CA certificates in `ca_pem`.
fn https_client(endpoint: &str, ca_pem: Vec<u8>) -> aws_sdk_s3::Client {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore};
    let trust = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(ca_pem);
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .tls_context(
            TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .unwrap(),
        )
        .build_https();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            common::ACCESS_KEY,
            common::SECRET_KEY,
            None,
            None,
            "test",
        ))
        .http_client(http)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// The aws CLI (`TINYDFS_AWS`, set by scripts/test.sh).
fn aws_cli() -> PathBuf {
    let path = std::env::var_os("TINYDFS_AWS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "environment variable TINYDFS_AWS is not set: run the tests with scripts/test.sh \
                 (it installs the aws CLI and sets TINYDFS_AWS)"
            )
        });
    assert!(
        path.exists(),
        "TINYDFS_AWS={} does not exist",
        path.display()
    );
    path
}

/// Runs `aws <args> --endpoint-url <endpoint> --ca-bundle <ca>`; (success, stdout + stderr).
fn aws(endpoint: &str, ca: &Path, scratch: &Path, args: &[&str]) -> (bool, String) {
    let config = scratch.join("aws-config");
    std::fs::write(
        &config,
        "[default]\nregion = us-east-1\nretry_mode = standard\nmax_attempts = 1\n\
         s3 =\n    addressing_style = path\n",
    )
    .unwrap();
    let mut cmd = Command::new(aws_cli());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .env("AWS_CONFIG_FILE", &config)
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            scratch.join("no-credentials"),
        )
        .env("AWS_ACCESS_KEY_ID", common::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", common::SECRET_KEY)
        .env("AWS_PAGER", "")
        .args(["--endpoint-url", endpoint, "--ca-bundle"])
        .arg(ca)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The serial number (`serial=...`) of the certificate a new TLS connection to `addr` gets.
fn served_serial(addr: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    x509.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let got = x509.wait_with_output().unwrap();
    String::from_utf8_lossy(&got.stdout).trim().to_string()
}

/// Waits until new connections to `addr` are served the certificate of serial `serial`.
fn wait_served(addr: &str, serial: &str) -> Duration {
    let started = Instant::now();
    let want = format!("serial={}", serial.to_uppercase());
    loop {
        let got = served_serial(addr);
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still served {got:?}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A PUT, GET and LIST through `c` work and return the bytes put.
async fn roundtrip(c: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &[u8]) {
    common::put(c, bucket, key, body.to_vec()).await.unwrap();
    assert_eq!(common::get(c, bucket, key).await.unwrap(), body);
    let list = c.list_objects_v2().bucket(bucket).send().await.unwrap();
    assert!(
        list.contents().iter().any(|o| o.key() == Some(key)),
        "{key} is not listed"
    );
}

#[test]
fn ca_chain_with_sdk_and_cli() {
    let pki = Pki::new("chain");
    pki.root("root-ca");
    pki.issue("intermediate-ca", "root-ca", "1001", true);
    pki.issue("leaf", "intermediate-ca", "2002", false);
    pki.root("other-ca");
    // Leaf first, then the intermediate; the client holds the root only.
    let chain = pki.chain("chain.pem", &["leaf.pem", "intermediate-ca.pem"]);
    let cluster = Cluster::start(Opts {
        tls_files: Some((chain, pki.path("leaf.key"))),
        chunkservers: 2,
        ..Opts::default()
    });
    assert!(cluster.endpoint.starts_with("https://"));
    let rt = common::rt();

    let sdk = https_client(&cluster.endpoint, pki.read("root-ca.pem"));
    let body = common::data(300 * 1024 + 7, 1);
    rt.block_on(async {
        sdk.create_bucket().bucket("tls").send().await.unwrap();
        roundtrip(&sdk, "tls", "sdk.bin", &body).await;
    });

    // A client that trusts another CA does not get through the handshake.
    let stranger = https_client(&cluster.endpoint, pki.read("other-ca.pem"));
    let err = rt
        .block_on(stranger.list_buckets().send())
        .expect_err("a client trusting another CA was served");
    let text = format!("{err:?}");
    assert!(text.contains("UnknownIssuer"), "unexpected error: {text}");

    // The aws CLI (Python's OpenSSL) with --ca-bundle holding the root only.
    let root = pki.path("root-ca.pem");
    let up = pki.path("up.bin");
    std::fs::write(&up, &body).unwrap();
    let down = pki.path("down.bin");
    let run = |ca: &Path, args: &[&str]| aws(&cluster.endpoint, ca, &pki.dir, args);
    let (ok, out) = run(
        &root,
        &["s3", "cp", up.to_str().unwrap(), "s3://tls/cli.bin"],
    );
    assert!(ok, "aws s3 cp up: {out}");
    let (ok, out) = run(
        &root,
        &["s3", "cp", "s3://tls/cli.bin", down.to_str().unwrap()],
    );
    assert!(ok, "aws s3 cp down: {out}");
    assert_eq!(std::fs::read(&down).unwrap(), body, "aws s3 cp round trip");
    let (ok, out) = run(&root, &["s3", "ls", "s3://tls/"]);
    assert!(
        ok && out.contains("cli.bin") && out.contains("sdk.bin"),
        "aws s3 ls: {out}"
    );
    let (ok, out) = run(&pki.path("other-ca.pem"), &["s3", "ls", "s3://tls/"]);
    assert!(!ok, "the aws CLI trusting another CA was served: {out}");
    assert!(out.contains("SSL") || out.contains("certificate"), "{out}");
}

#[test]
fn certificate_reloads_when_files_change() {
    let pki = Pki::new("reload");
    pki.root("ca");
    pki.issue("leaf-a", "ca", "a1a1", false);
    pki.issue("leaf-b", "ca", "b2b2", false);
    // Leaf then CA in the served file (the CA is sent too, and ignored by clients).
    pki.chain("a.pem", &["leaf-a.pem", "ca.pem"]);
    pki.chain("b.pem", &["leaf-b.pem", "ca.pem"]);
    let (cert, key) = (pki.path("served.pem"), pki.path("served.key"));
    install(&pki.path("a.pem"), &cert);
    install(&pki.path("leaf-a.key"), &key);
    let cluster = Cluster::start(Opts {
        tls_files: Some((cert.clone(), key.clone())),
        chunkservers: 1,
        extra: vec!["--gateway-arg=--tls-reload-secs=1".into()],
        ..Opts::default()
    });
    let addr = cluster.s3_addr.clone();
    let gateway = cluster.pid("gateway-1");
    let rt = common::rt();
    assert_eq!(served_serial(&addr), "serial=A1A1");
    let sdk = https_client(&cluster.endpoint, pki.read("ca.pem"));
    rt.block_on(async {
        sdk.create_bucket().bucket("reload").send().await.unwrap();
        roundtrip(&sdk, "reload", "a", b"served with A").await;
    });

    // The key first, then the certificate: in between the pair does not match (logged, A kept).
    install(&pki.path("leaf-b.key"), &key);
    install(&pki.path("b.pem"), &cert);
    let took = wait_served(&addr, "b2b2");
    eprintln!("certificate B served {took:?} after the files changed");
    let sdk = https_client(&cluster.endpoint, pki.read("ca.pem"));
    rt.block_on(roundtrip(&sdk, "reload", "b", b"served with B"));

    // A broken file: logged, B still served, the gateway still up and serving.
    std::fs::write(&cert, b"-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let log = cluster.dir.join("logs/gateway-1.log");
    common::wait_until("the gateway to report the broken certificate", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("does not load")
    });
    assert_eq!(served_serial(&addr), "serial=B2B2");
    let sdk = https_client(&cluster.endpoint, pki.read("ca.pem"));
    rt.block_on(roundtrip(&sdk, "reload", "c", b"still served with B"));
    assert_eq!(cluster.pid("gateway-1"), gateway);
    assert!(
        Path::new(&format!("/proc/{gateway}")).exists(),
        "the gateway died"
    );
}

#[test]
fn certificate_reloads_on_sighup() {
    let pki = Pki::new("sighup");
    pki.root("ca");
    pki.issue("leaf-a", "ca", "a1a1", false);
    pki.issue("leaf-b", "ca", "b2b2", false);
    let (cert, key) = (pki.path("served.pem"), pki.path("served.key"));
    install(&pki.path("leaf-a.pem"), &cert);
    install(&pki.path("leaf-a.key"), &key);
    // No polling: only the signal reloads.
    let cluster = Cluster::start(Opts {
        tls_files: Some((cert.clone(), key.clone())),
        chunkservers: 1,
        extra: vec!["--gateway-arg=--tls-reload-secs=0".into()],
        ..Opts::default()
    });
    let addr = cluster.s3_addr.clone();
    assert_eq!(served_serial(&addr), "serial=A1A1");
    install(&pki.path("leaf-b.key"), &key);
    install(&pki.path("leaf-b.pem"), &cert);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        served_serial(&addr),
        "serial=A1A1",
        "reloaded without a signal"
    );
    let gateway = cluster.pid("gateway-1");
    let ok = Command::new("kill")
        .args(["-HUP", &gateway.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    wait_served(&addr, "b2b2");
    let sdk = https_client(&cluster.endpoint, pki.read("ca.pem"));
    common::rt().block_on(async {
        sdk.create_bucket().bucket("hup").send().await.unwrap();
        roundtrip(&sdk, "hup", "b", b"served with B").await;
    });
}

#[test]
fn internal_tls_cluster() {
    // Plain S3 outside; HTTPS (and the cluster secret) between masters, chunkservers and the
    // gateway, with a CA and node certificate made by `tinydfs server --internal-tls`.
    let cluster = Cluster::start(Opts {
        extra: vec!["--internal-tls".into()],
        ..Opts::default()
    });
    let ca = cluster.dir.join("internal-tls/ca.pem");
    assert!(ca.exists(), "no internal CA in the data folder");
    let rt = common::rt();
    let c = cluster.client();
    // Several chunks, each through a pipeline of three chunkservers (chunkserver to chunkserver).
    let body = common::data(3 * common::TEST_CHUNK as usize + 11, 7);
    rt.block_on(async {
        c.create_bucket().bucket("inside").send().await.unwrap();
        roundtrip(&c, "inside", "obj", &body).await;
    });
    // `admin status` reaches the masters over HTTPS (the CA is recorded in cluster.json).
    cluster.wait_for("three live chunkservers", |s| {
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["role"] == "chunkserver" && n["state"] == "alive")
            .count()
            == 3
    });

    let master = cluster.masters()[0].clone();
    let chunkserver = cluster.addr("chunkserver-1");
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let https = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    rt.block_on(async {
        for addr in [&master, &chunkserver] {
            // Plain HTTP to an internal listener gets no answer.
            let r = plain.get(format!("http://{addr}/health")).send().await;
            assert!(r.is_err(), "plain HTTP to {addr} was answered: {r:?}");
            let r = https
                .get(format!("https://{addr}/health"))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{addr}: {}", r.status());
        }
        // HTTPS does not replace the cluster secret.
        let r = https
            .get(format!("https://{master}/internal/v1/status"))
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == 401 || r.status() == 403,
            "internal API without the secret answered {}",
            r.status()
        );
    });
    // `tinydfs health` with the CA.
    let ok = Command::new(common::bin())
        .args(["health", &master, "--internal-ca"])
        .arg(&ca)
        .status()
        .unwrap();
    assert!(ok.success(), "tinydfs health --internal-ca failed");
}
