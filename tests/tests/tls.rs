//! TLS between coordinator and workers (rustls): plaintext clients are
//! refused, mutual TLS rejects a coordinator without a certificate, and a
//! job trains over TLS to the same model.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use als_proto::pb::worker_client::WorkerClient;
use als_proto::pb::HandshakeRequest;
use als_tests::{binary, generate, run_with_timeout, WorkerProc};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (sc, sk) = leaf(vec!["localhost".into()]);
    let (cc, ck) = leaf(vec!["coordinator".into()]);
    let w = |n: &str, t: &str| {
        let p = dir.join(n);
        std::fs::write(&p, t).unwrap();
        p
    };
    Pki {
        ca: w("ca.pem", &ca.pem()),
        server_cert: w("server.pem", &sc),
        server_key: w("server.key", &sk),
        client_cert: w("client.pem", &cc),
        client_key: w("client.key", &ck),
    }
}

impl Pki {
    /// A worker serving mutual TLS: its certificate, and the CA of its callers'.
    fn worker_args(&self) -> Vec<String> {
        let s = |x: &PathBuf| x.to_string_lossy().into_owned();
        let args = [
            ("--tls-cert", &self.server_cert),
            ("--tls-key", &self.server_key),
            ("--tls-ca", &self.ca),
        ];
        args.iter().flat_map(|(flag, path)| [flag.to_string(), s(path)]).collect()
    }
}

#[test]
fn mutual_tls_cluster_and_plaintext_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(tmp.path());
    let s = |x: &PathBuf| x.to_string_lossy().into_owned();
    let tls_args = p.worker_args();
    let tls_args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    let worker = WorkerProc::start(Some("tok"), &tls_args);

    // A plaintext client gets no answer from a TLS worker.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let plaintext = rt.block_on(async {
        let mut c = WorkerClient::connect(format!("http://{}", worker.addr)).await?;
        let mut req = tonic::Request::new(HandshakeRequest {
            protocol_version: als_proto::PROTOCOL_VERSION,
            ..Default::default()
        });
        req.metadata_mut().insert("authorization", "Bearer tok".parse().unwrap());
        c.handshake(req).await.map_err(anyhow::Error::from).map(|_| ())
    });
    assert!(plaintext.is_err(), "a plaintext client was served");

    let data = generate(tmp.path(), 200, 100, 4000);
    let addr = worker.addr.replace("127.0.0.1", "localhost");
    let train = |extra: &[String]| {
        let mut cmd = Command::new(binary("coordinator"));
        cmd.arg("--data")
            .arg(&data)
            .args(["--factors", "4", "--iterations", "3", "--quiet", "--workers", &addr])
            .args(extra)
            .env("ALS_TOKEN", "tok");
        run_with_timeout(&mut cmd, Duration::from_secs(60))
    };
    // Server-authenticated TLS only: the worker demands a client certificate.
    let (ok, _, err) = train(&["--tls-ca".into(), s(&p.ca)]);
    assert!(!ok, "a coordinator without a client certificate was served");
    assert!(err.contains(&addr), "{err}");
    // Mutual TLS: trains.
    let (ok, _, err) = train(&[
        "--tls-ca".into(),
        s(&p.ca),
        "--tls-cert".into(),
        s(&p.client_cert),
        "--tls-key".into(),
        s(&p.client_key),
    ]);
    assert!(ok, "{err}");

    // The health probe speaks TLS too (compose and Kubernetes health checks of a TLS worker).
    let probe = |extra: &[String]| {
        let mut cmd = Command::new(binary("worker"));
        cmd.args(["--health-check", &addr, "--health-timeout", "5"]).args(extra);
        run_with_timeout(&mut cmd, Duration::from_secs(30))
    };
    let (ok, _, _) = probe(&[]);
    assert!(!ok, "a plaintext probe passed against a TLS worker");
    let (ok, out, err) = probe(&[
        "--health-tls-ca".into(),
        s(&p.ca),
        "--health-tls-cert".into(),
        s(&p.client_cert),
        "--health-tls-key".into(),
        s(&p.client_key),
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("serving"), "{out}");
}

/// A worker with a key it cannot use fails at start, before it says it listens.
#[test]
fn a_bad_tls_key_fails_before_listening() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(tmp.path());
    let bad = tmp.path().join("bad.key");
    std::fs::write(&bad, "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n").unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "tok\n").unwrap();
    let mut cmd = Command::new(binary("worker"));
    cmd.args(["--listen", "127.0.0.1:0", "--token-file"])
        .arg(&token)
        .arg("--tls-cert")
        .arg(&p.server_cert)
        .arg("--tls-key")
        .arg(&bad);
    let (ok, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(30));
    assert!(!ok);
    assert!(!out.contains("listening on"), "{out}");
    assert!(err.contains("TLS"), "{err}");
}

/// Workers that serve TLS send each other their solved rows over TLS when
/// given their peers' CA (`--peer-tls-ca`), presenting their own certificate;
/// without it the coordinator carries the rows. The model is the same.
#[test]
fn peers_exchange_rows_over_mutual_tls_or_leave_it_to_the_coordinator() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pki(tmp.path());
    let s = |x: &PathBuf| x.to_string_lossy().into_owned();
    let data = generate(tmp.path(), 300, 120, 6000);
    let mut models = Vec::new();
    for peer_ca in [true, false] {
        let mut args = p.worker_args();
        if peer_ca {
            args.extend(["--peer-tls-ca".to_string(), s(&p.ca)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let workers: Vec<WorkerProc> = (0..2).map(|_| WorkerProc::start(Some("tok"), &args)).collect();
        let addrs: Vec<String> = workers.iter().map(|w| w.addr.replace("127.0.0.1", "localhost")).collect();
        let out = tmp.path().join(format!("m-{peer_ca}"));
        let metrics = tmp.path().join(format!("metrics-{peer_ca}.json"));
        let mut cmd = Command::new(binary("coordinator"));
        cmd.arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .arg("--metrics-json")
            .arg(&metrics)
            .args(["--factors", "4", "--iterations", "3", "--quiet", "--workers", &addrs.join(",")])
            .args([
                "--tls-ca",
                &s(&p.ca),
                "--tls-cert",
                &s(&p.client_cert),
                "--tls-key",
                &s(&p.client_key),
            ])
            .env("ALS_TOKEN", "tok");
        let (ok, _, err) = run_with_timeout(&mut cmd, Duration::from_secs(60));
        assert!(ok, "{err}");
        // The workers have no --input-root: the coordinator reads the input and ships the blocks, saying so.
        assert!(
            err.contains("reads no input") && err.contains("loading the input here and shipping the blocks instead"),
            "{err}"
        );
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&metrics).unwrap()).unwrap();
        let peer: u64 = m["iterations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|it| it["bytes_peer"].as_u64().unwrap())
            .sum();
        assert_eq!(peer > 0, peer_ca, "peer bytes {peer} with --peer-tls-ca: {peer_ca}");
        models.push(std::fs::read(out.join("user_factors.npy")).unwrap());
    }
    assert!(models[0] == models[1], "the exchange changed the model");
}
