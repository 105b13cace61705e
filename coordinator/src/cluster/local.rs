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
    /// They share this process's cores: they solve in turn.
    turns: als_worker::SolveTurns,
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
            turns: Default::default(),
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
            peer_tls: None,
            solve_turns: Some(self.turns.clone()),
            // In the coordinator's process: it reads what the coordinator could.
            input_root: Some("/".into()),
            // And writes where it could (checkpoints).
            output_root: Some("/".into()),
        };
        // Its peers in this process hand it their rows without encoding them.
        let (routes, direct) = als_worker::local_routes(&opts).await;
        let (worker, switch) = InProcess::new(routes);
        transport::register(&self.addrs[i], worker.with_direct(direct));
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

#[cfg(test)]
mod tests {
    use als_proto::fault::{fault_of, Fault};
    use als_proto::pb::HandshakeRequest;
    use als_proto::PROTOCOL_VERSION;

    use als_net::client::{connect, ClientOptions};

    use super::LocalWorkers;

    fn hello() -> HandshakeRequest {
        HandshakeRequest {
            protocol_version: PROTOCOL_VERSION,
            coordinator: "test".into(),
            required_capabilities: vec![],
        }
    }

    #[tokio::test]
    async fn an_in_process_worker_checks_the_token() {
        let local = LocalWorkers::start(1, 1).await.unwrap();
        let wrong = ClientOptions {
            token: Some("not-the-token".into()),
            ..Default::default()
        };
        let err = connect(&local.addrs[0], &wrong).await.err().expect("a wrong token is refused");
        assert!(format!("{err:#}").contains("refused"), "{err:#}");
        let right = ClientOptions {
            token: Some(local.token.clone()),
            ..Default::default()
        };
        connect(&local.addrs[0], &right).await.expect("the right token is let in");
    }

    #[tokio::test]
    async fn a_killed_in_process_worker_fails_as_a_lost_connection() {
        let mut local = LocalWorkers::start(2, 1).await.unwrap();
        let opts = ClientOptions {
            token: Some(local.token.clone()),
            ..Default::default()
        };
        let mut w0 = connect(&local.addrs[0], &opts).await.unwrap();
        let mut w1 = connect(&local.addrs[1], &opts).await.unwrap();
        local.kill(0);
        let s = w0.client.handshake(hello()).await.expect_err("a killed worker answers nothing");
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(fault_of(&s), Fault::Lost);
        // The other one is untouched; a reconnect to the dead one fails as a refused connection.
        w1.client.handshake(hello()).await.expect("the other worker still answers");
        assert!(connect(&local.addrs[0], &opts).await.is_err());
        // Restarted, it answers at its old address, empty.
        local.restart(0).await.unwrap();
        w0 = connect(&local.addrs[0], &opts).await.unwrap();
        assert!(w0.info.active_job_id.is_empty());
    }
}
