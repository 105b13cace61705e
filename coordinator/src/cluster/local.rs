//! `--local N`: N workers in this process on loopback ports, reached through
//! the same gRPC path as remote ones.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct LocalWorkers {
    pub addrs: Vec<String>,
    pub token: String,
    threads: usize,
    stops: Vec<Option<oneshot::Sender<()>>>,
    tasks: Vec<Option<JoinHandle<anyhow::Result<()>>>>,
}

/// A fresh random token for in-process workers (they still check it).
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (t ^ ((std::process::id() as u128) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl LocalWorkers {
    pub async fn start(n: usize, threads: usize) -> anyhow::Result<LocalWorkers> {
        let token = random_token();
        let mut w = LocalWorkers {
            addrs: Vec::new(),
            token,
            threads,
            stops: Vec::new(),
            tasks: Vec::new(),
        };
        for _ in 0..n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            w.addrs.push(listener.local_addr()?.to_string());
            w.stops.push(None);
            w.tasks.push(None);
            w.spawn(w.addrs.len() - 1, listener);
        }
        Ok(w)
    }

    fn spawn(&mut self, i: usize, listener: tokio::net::TcpListener) {
        let (tx, rx) = oneshot::channel::<()>();
        let opts = als_worker::ServeOptions {
            token: Some(self.token.clone()),
            threads: self.threads,
            idle_timeout: Duration::from_secs(60),
            tls: None,
            memory_budget: als_worker::job::default_memory_budget(),
        };
        self.stops[i] = Some(tx);
        self.tasks[i] = Some(tokio::spawn(als_worker::serve(listener, opts, async {
            let _ = rx.await;
        })));
    }

    /// Drop worker `i` at once, connections and all, as a crash would (for fault tests).
    pub fn kill(&mut self, i: usize) {
        if let Some(t) = self.tasks[i].take() {
            t.abort();
        }
        self.stops[i] = None;
    }

    /// Start worker `i` again on its old address, with no state (a restarted process).
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(&self.addrs[i]).await?;
        self.spawn(i, listener);
        Ok(())
    }

    /// Stop every worker and wait for them.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        for s in self.stops.into_iter().flatten() {
            let _ = s.send(());
        }
        for t in self.tasks.into_iter().flatten() {
            t.await??;
        }
        Ok(())
    }
}
