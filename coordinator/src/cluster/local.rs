//! `--local N`: N workers in this process, called through the same gRPC
//! services as remote ones (the token check, the message limits, the
//! encoding), minus HTTP/2 and the socket (see [`super::transport`]). Each
//! can be killed and restarted as a process can, for the fault tests.

use std::time::Duration;

use super::transport::{self, InProcess, KillSwitch};

pub struct LocalWorkers {
    /// `inproc:…` addresses, as [`super::client::connect`] takes them.
    pub addrs: Vec<String>,
    pub token: String,
    threads: usize,
    switches: Vec<Option<KillSwitch>>,
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
        // Unique per set, so two sessions in one process never share a worker.
        let prefix = format!("{}{}", transport::IN_PROCESS_SCHEME, &random_token()[..12]);
        let mut w = LocalWorkers {
            addrs: (0..n).map(|i| format!("{prefix}/worker-{i}")).collect(),
            token,
            threads,
            switches: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            w.spawn(i).await;
        }
        Ok(w)
    }

    async fn spawn(&mut self, i: usize) {
        let opts = als_worker::ServeOptions {
            token: Some(self.token.clone()),
            threads: self.threads,
            idle_timeout: Duration::from_secs(60),
            tls: None,
            memory_budget: als_worker::job::default_memory_budget(),
        };
        let (worker, switch) = InProcess::new(als_worker::routes(&opts).await);
        transport::register(&self.addrs[i], worker);
        self.switches[i] = Some(switch);
    }

    /// Drop worker `i` at once, calls in flight and all, as a crash would (for fault tests).
    pub fn kill(&mut self, i: usize) {
        if let Some(s) = self.switches[i].take() {
            s.kill();
        }
        transport::unregister(&self.addrs[i]);
    }

    /// Start worker `i` again on its old address, with no state (a restarted process).
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i).await;
        Ok(())
    }

    /// Stop every worker: their addresses answer no more, and their state
    /// goes with the last connection to them.
    pub fn shutdown(self) {}
}

impl Drop for LocalWorkers {
    fn drop(&mut self) {
        for a in &self.addrs {
            transport::unregister(a);
        }
    }
}
