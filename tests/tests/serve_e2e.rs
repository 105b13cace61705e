//! `coordinator serve` as a real process: ephemeral port printed, answers over
//! a socket, 400/404 with JSON messages, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use als_tests::{binary, run_with_timeout};

/// One HTTP/1.1 request; returns (status code, body).
fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    let status: u16 = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status line");
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn serve_answers_over_a_socket_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let model = small_model(tmp.path(), 80, 40, 800);
    let (mut child, addr) = start_serve(&model, &["--listen", "127.0.0.1:0"], &[]).unwrap();
    assert!(!addr.ends_with(":0"), "the actual port is printed: {addr}");

    let (code, body) = http(&addr, "GET", "/health", None);
    assert_eq!(code, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["users"], 80);
    let user = first_user(&model);
    let (code, body) = http(&addr, "GET", &format!("/v1/users/{user}/recommendations?n=3"), None);
    assert_eq!(code, 200, "{body}");
    let recs: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(recs.len(), 3);
    assert!(recs.iter().all(|r| r["item"].is_string() && r["score"].is_number()));
    let item = recs[0]["item"].as_str().unwrap().to_string();
    let (code, body) = http(
        &addr,
        "POST",
        "/v1/recommendations",
        Some(&format!(r#"{{"ratings": {{"{item}": 5}}, "n": 2}}"#)),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap().len(), 2);
    let (code, body) = http(&addr, "GET", "/v1/users/nobody/recommendations", None);
    assert_eq!((code, body.contains("not in the model")), (404, true), "{body}");
    let (code, body) = http(&addr, "POST", "/v1/recommendations", Some("{"));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"error\""), "{body}");

    // SIGTERM: graceful shutdown, exit status 0.
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("serve did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// Start `serve` with `args`; returns the child and its printed address (or its stderr when it exits).
fn start_serve(model: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Result<(std::process::Child, String), String> {
    let mut cmd = Command::new(binary("coordinator"));
    cmd.args(["serve", "--model"]).arg(model).args(args);
    cmd.env_remove("ALS_SERVE_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start serve");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("listening on http://") {
                let _ = tx.send(a.to_string());
            }
        }
    });
    // Drained all along, so a chatty server never blocks on a full pipe.
    let err = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    let drain = std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(a) => Ok((child, a)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let _ = drain.join();
            let text = log.lock().unwrap().clone();
            Err(text)
        }
    }
}

fn small_model(d: &std::path::Path, users: usize, items: usize, ratings: usize) -> std::path::PathBuf {
    let data = d.join("r.csv");
    let model = d.join("model");
    let gen = run_with_timeout(
        Command::new(binary("coordinator"))
            .args(["generate", "--quiet", "--users", &users.to_string(), "--items", &items.to_string()])
            .args(["--ratings", &ratings.to_string(), "--out"])
            .arg(&data),
        Duration::from_secs(60),
    );
    assert!(gen.0, "{}", gen.2);
    train_into(&data, &model, 4, false);
    model
}

/// The model's first user id.
fn first_user(model: &std::path::Path) -> String {
    let ids = std::fs::read_to_string(model.join("user_ids.txt")).unwrap();
    ids.lines().next().unwrap().to_string()
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Clients that never finish their headers are dropped and do not starve
/// others or delay SIGTERM; the default address is loopback, others need a
/// token; every error body is JSON.
#[test]
fn serve_bounds_what_slow_clients_hold_and_guards_the_network() {
    let tmp = tempfile::tempdir().unwrap();
    let model = small_model(tmp.path(), 50, 30, 500);
    let (mut child, addr) = start_serve(
        &model,
        &[
            "--listen",
            "127.0.0.1:0",
            "--header-timeout",
            "1",
            "--max-connections",
            "64",
            "--shutdown-grace",
            "2",
        ],
        &[],
    )
    .unwrap();
    // 100 half-open requests: more than --max-connections.
    let mut slow: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    // The server drops them after the header timeout; /health is answered meanwhile or soon after.
    let t0 = Instant::now();
    let (code, _) = http(&addr, "GET", "/health", None);
    assert_eq!(code, 200);
    assert!(t0.elapsed() < Duration::from_secs(8), "health waited {:?}", t0.elapsed());
    let first = &mut slow[0];
    first.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    let n = first.read(&mut buf).unwrap_or(0);
    assert!(
        n == 0 || String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
        "a slow client was not dropped"
    );
    // Error bodies are JSON, whatever produced them.
    let (code, body) = http(&addr, "DELETE", "/health", None);
    assert_eq!(code, 405);
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string(),
        "{body}"
    );
    let long = format!("/v1/items/{}/similar", "x".repeat(9000));
    let (code, body) = http(&addr, "GET", &long, None);
    assert_eq!(code, 414);
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string(),
        "{body}"
    );
    let (code, body) = http(&addr, "POST", "/v1/recommendations", Some(r#"{"items": ["1"], "n": 1e400}"#));
    assert_eq!(code, 400, "{body}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string(),
        "{body}"
    );
    // SIGTERM with a half-open request still there: stops within the grace period.
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(b"POST /v1/recommendations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = wait_exit(&mut child, Duration::from_secs(6));
    let _ = child.kill();
    assert!(
        status.is_some_and(|s| s.success()),
        "serve did not stop within its grace period: {status:?}"
    );
    drop(slow);

    // Beyond loopback: refused without a token; with one, requests must carry it.
    let Err(err) = start_serve(&model, &["--listen", "0.0.0.0:0"], &[]) else {
        panic!("served beyond loopback without a token");
    };
    assert!(err.contains("refusing to listen on") && err.contains("--token-file"), "{err}");
    let (mut child, addr) = start_serve(&model, &["--listen", "0.0.0.0:0"], &[("ALS_SERVE_TOKEN", "s3cret")]).unwrap();
    let port = addr.rsplit(':').next().unwrap();
    let local = format!("127.0.0.1:{port}");
    let (code, body) = http(&local, "GET", "/v1/items/1/similar", None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("bearer token"), "{body}");
    let mut s = TcpStream::connect(&local).unwrap();
    write!(s, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "/health needs no token: {resp}");
    let mut s = TcpStream::connect(&local).unwrap();
    let item = std::fs::read_to_string(model.join("item_ids.txt"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    write!(
        s,
        "GET /v1/items/{item}/similar?n=2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Train `data` into `model` with `factors` (`replace`: over an existing model).
fn train_into(data: &std::path::Path, model: &std::path::Path, factors: usize, replace: bool) {
    let mut train = Command::new(binary("coordinator"));
    train
        .arg("--data")
        .arg(data)
        .args([
            "--no-test",
            "--in-process",
            "--quiet",
            "--iterations",
            "2",
            "--factors",
            &factors.to_string(),
        ])
        .args(if replace { &["--overwrite"][..] } else { &[] })
        .arg("--out")
        .arg(model);
    let train = run_with_timeout(&mut train, Duration::from_secs(60));
    assert!(train.0, "{}", train.2);
}

/// Poll `path` until `want` holds for its body (at most 30 s).
fn wait_for(addr: &str, path: &str, what: &str, want: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        let (code, body) = http(addr, "GET", path, None);
        if code == 200 && want(&body) {
            return body;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no {what} after 30 s: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_picks_up_new_versions_without_dropping_requests_and_keeps_the_old_on_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let model = small_model(tmp.path(), 80, 40, 800);
    let (mut child, addr) = start_serve(&model, &["--listen", "127.0.0.1:0", "--reload-interval", "0.1"], &[]).unwrap();
    let user = first_user(&model);
    // A client asking all along, through the reload.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (addr, stop, path) = (addr.clone(), stop.clone(), format!("/v1/users/{user}/recommendations?n=3"));
        std::thread::spawn(move || {
            let mut answers = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && answers < 20_000 {
                let (code, body) = http(&addr, "GET", &path, None);
                assert_eq!(code, 200, "a request failed during the reload: {body}");
                answers += 1;
            }
            answers
        })
    };
    train_into(&tmp.path().join("r.csv"), &model, 6, true);
    wait_for(&addr, "/health", "new model", |b| b.contains("\"factors\":6"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = client.join().expect("the client saw only 200s");
    assert!(answers > 0);
    let (code, metrics) = http(&addr, "GET", "/metrics", None);
    assert_eq!(code, 200);
    assert!(metrics.contains("als_serve_model_reloads_total{result=\"ok\"} 1"), "{metrics}");
    assert!(metrics.contains("als_serve_model_factors 6"), "{metrics}");

    // A broken version, then SIGHUP: the error is counted and the old model keeps serving.
    std::fs::write(model.join("model.json"), "{ broken").unwrap();
    let hup = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    wait_for(&addr, "/metrics", "failed reload", |b| {
        b.contains("als_serve_model_reloads_total{result=\"failed\"} 1")
    });
    let (code, body) = http(&addr, "GET", "/health", None);
    assert_eq!(code, 200);
    assert!(body.contains("\"factors\":6"), "{body}");
    let (code, _) = http(&addr, "GET", &format!("/v1/users/{user}/recommendations?n=3"), None);
    assert_eq!(code, 200);
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    assert!(
        wait_exit(&mut child, Duration::from_secs(20)).is_some(),
        "serve did not stop on SIGTERM"
    );
}
