//! Harness for end-to-end tests: find the built binaries, start workers as
//! real processes on ephemeral loopback ports, and clean them up.
//!
//! The binaries come from the same target directory as the tests
//! (`cargo build --bins` first; the README's test command does it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `coordinator generate` of `users × items` with `ratings` ratings into
/// `dir/ratings.csv` (its default seed, so the same file every time).
pub fn generate(dir: &Path, users: u32, items: u32, ratings: u32) -> PathBuf {
    let data = dir.join("ratings.csv");
    let mut cmd = Command::new(binary("coordinator"));
    cmd.args(["generate", "--quiet", "--out"]).arg(&data).args([
        "--users",
        &users.to_string(),
        "--items",
        &items.to_string(),
        "--ratings",
        &ratings.to_string(),
    ]);
    let (ok, _, err) = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(ok, "generate failed: {err}");
    data
}

/// `target/<profile>/<name>`, next to the test executable's `deps/` folder.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first (cargo build --bins)",
        p.display()
    );
    p
}

/// A worker process; killed on drop.
pub struct WorkerProc {
    pub child: Child,
    pub addr: String,
}

impl WorkerProc {
    /// Start `worker --listen 127.0.0.1:0` with `args` and wait for its address.
    pub fn start(token: Option<&str>, extra: &[&str]) -> WorkerProc {
        let mut cmd = Command::new(binary("worker"));
        cmd.args(["--listen", "127.0.0.1:0", "--threads", "1"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd.env_remove("ALS_TOKEN");
        if let Some(t) = token {
            cmd.env("ALS_TOKEN", t);
        }
        let mut child = cmd.spawn().expect("start worker");
        let out = child.stdout.take().expect("worker stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("listening on ") {
                    let _ = tx.send(a.split_whitespace().next().unwrap_or_default().to_owned());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(20)).expect("worker printed its address");
        WorkerProc { child, addr }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run a command to completion with a time limit; returns (status ok, stdout, stderr).
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> (bool, String, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            return (
                status.success(),
                String::from_utf8_lossy(&out.stdout).into(),
                String::from_utf8_lossy(&out.stderr).into(),
            );
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "command timed out after {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The shared MovieLens folder beside the project, if present.
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.parent()?;
    let p = root.join("shared/data").join(rel);
    p.exists().then_some(p)
}

/// A TCP proxy on loopback that forwards to `target` until told to drop
/// everything: then it keeps the connections open but passes no byte (a
/// worker cut off the network without dying).
pub struct BlackholeProxy {
    pub addr: String,
    dropping: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BlackholeProxy {
    pub fn start(target: &str) -> BlackholeProxy {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr").to_string();
        let dropping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let target = target.to_owned();
        let flag = dropping.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = TcpStream::connect(&target) else { continue };
                for (mut from, mut to) in [
                    (client.try_clone().expect("clone"), server.try_clone().expect("clone")),
                    (server, client),
                ] {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64 * 1024];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if !flag.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    });
                }
            }
        });
        BlackholeProxy { addr, dropping }
    }

    /// From now on, swallow every byte in both directions.
    pub fn drop_everything(&self) {
        self.dropping.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `s` without ANSI escape sequences (colours of logs written to a terminal).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
