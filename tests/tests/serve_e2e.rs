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
    let d = tmp.path();
    let data = d.join("r.csv");
    let model = d.join("model");
    let gen = run_with_timeout(
        Command::new(binary("coordinator"))
            .args(["generate", "--users", "80", "--items", "40", "--ratings", "800", "--quiet", "--out"])
            .arg(&data),
        Duration::from_secs(60),
    );
    assert!(gen.0, "{}", gen.2);
    let train = run_with_timeout(
        Command::new(binary("coordinator"))
            .arg("--data")
            .arg(&data)
            .args([
                "--no-test",
                "--in-process",
                "--quiet",
                "--iterations",
                "2",
                "--factors",
                "4",
                "--out",
            ])
            .arg(&model),
        Duration::from_secs(60),
    );
    assert!(train.0, "{}", train.2);

    let mut child = Command::new(binary("coordinator"))
        .args(["serve", "--listen", "127.0.0.1:0", "--model"])
        .arg(&model)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("listening on http://") {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("serve printed its address");
    assert!(!addr.ends_with(":0"), "the actual port is printed: {addr}");

    let (code, body) = http(&addr, "GET", "/health", None);
    assert_eq!(code, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["users"], 80);
    let user = std::fs::read_to_string(model.join("user_ids.txt"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
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
