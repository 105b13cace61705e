//! `worker --health-check ADDR`, the container healthcheck (the images have no
//! shell or curl): exit 0 against a serving worker, nonzero when nothing listens.

use std::process::Command;
use std::time::Duration;

use als_tests::{binary, run_with_timeout, WorkerProc};

fn probe(addr: &str) -> (bool, String, String) {
    run_with_timeout(
        Command::new(binary("worker")).args(["--health-check", addr, "--health-timeout", "2"]),
        Duration::from_secs(30),
    )
}

#[test]
fn probe_passes_on_a_serving_worker_and_fails_without_one() {
    // The health service needs no token, like Docker's and Kubernetes' probes.
    let mut w = WorkerProc::start(Some("probe-token"), &[]);
    let (ok, out, err) = probe(&w.addr);
    assert!(ok, "probe of a serving worker failed: {out} {err}");
    assert!(out.contains("serving"), "{out}");
    let port = w.addr.rsplit_once(':').unwrap().1.to_owned();
    let (ok, _, err) = probe(&format!(":{port}"));
    assert!(ok, ":PORT means loopback: {err}");

    w.kill();
    let (ok, _, err) = probe(&w.addr);
    assert!(!ok, "probe passed with nothing listening");
    assert!(err.contains("cannot connect"), "{err}");

    let (ok, _, err) = probe("no-port");
    assert!(!ok);
    assert!(err.contains("not a worker address"), "{err}");
}
