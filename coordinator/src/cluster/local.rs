//! `--local N`: N workers in this process on loopback ports, reached through
//! the same gRPC path as remote ones.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct LocalWorkers {
    pub addrs: Vec<String>,
    pub token: String,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

/// A fresh random token for in-process workers (they still check it).
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)).is_ok();
    if !ok {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        bytes = (t ^ ((std::process::id() as u128) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl LocalWorkers {
    pub async fn start(n: usize, threads: usize) -> anyhow::Result<LocalWorkers> {
        let token = random_token();
        let mut w = LocalWorkers { addrs: Vec::new(), token: token.clone(), stops: Vec::new(), tasks: Vec::new() };
        for _ in 0..n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            w.addrs.push(listener.local_addr()?.to_string());
            let (tx, rx) = oneshot::channel::<()>();
            let opts = als_worker::ServeOptions { token: Some(token.clone()), threads, idle_timeout: Duration::from_secs(60) };
            w.stops.push(tx);
            w.tasks.push(tokio::spawn(als_worker::serve(listener, opts, async {
                let _ = rx.await;
            })));
        }
        Ok(w)
    }

    /// Stop every worker and wait for them.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        for s in self.stops {
            let _ = s.send(());
        }
        for t in self.tasks {
            t.await??;
        }
        Ok(())
    }
}
