//! `--local N`: N workers in this process, reached through the same gRPC
//! service as remote ones, over Unix sockets in a private directory (TCP
//! loopback where there are none). On loopback TCP the kernel's TCP/IP path
//! and the host's packet filter took more CPU than the messages' encoding;
//! the sockets keep everything else: separate connections a worker can lose,
//! the token check, the message limits.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct LocalWorkers {
    /// `unix:PATH` (or `HOST:PORT`), as `--workers` takes them.
    pub addrs: Vec<String>,
    /// The sockets' directory, removed on drop.
    dir: Option<SocketDir>,
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
        let dir = SocketDir::create();
        if let Err(e) = &dir {
            tracing::debug!("no private socket directory ({e:#}): local workers use loopback TCP");
        }
        let mut w = LocalWorkers {
            addrs: Vec::new(),
            dir: dir.ok(),
            token,
            threads,
            stops: Vec::new(),
            tasks: Vec::new(),
        };
        for i in 0..n {
            let listener = match &w.dir {
                Some(d) => Listener::bind_unix(&d.path.join(format!("worker-{i}.sock")))?,
                None => Listener::Tcp(tokio::net::TcpListener::bind("127.0.0.1:0").await?),
            };
            w.addrs.push(listener.addr()?);
            w.stops.push(None);
            w.tasks.push(None);
            w.spawn(i, listener);
        }
        Ok(w)
    }

    fn spawn(&mut self, i: usize, listener: Listener) {
        let (tx, rx) = oneshot::channel::<()>();
        let opts = als_worker::ServeOptions {
            token: Some(self.token.clone()),
            threads: self.threads,
            idle_timeout: Duration::from_secs(60),
            tls: None,
            memory_budget: als_worker::job::default_memory_budget(),
        };
        self.stops[i] = Some(tx);
        let stop = async {
            let _ = rx.await;
        };
        self.tasks[i] = Some(match listener {
            Listener::Tcp(l) => tokio::spawn(als_worker::serve(l, opts, stop)),
            #[cfg(unix)]
            Listener::Unix(l) => tokio::spawn(als_worker::serve_unix(l, opts, stop)),
        });
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
        let listener = match self.addrs[i].strip_prefix("unix:") {
            Some(path) => Listener::bind_unix(std::path::Path::new(path))?,
            None => Listener::Tcp(tokio::net::TcpListener::bind(&self.addrs[i]).await?),
        };
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

enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

impl Listener {
    #[cfg(unix)]
    fn bind_unix(path: &std::path::Path) -> anyhow::Result<Listener> {
        // A restarted worker binds where its predecessor's socket file still is.
        let _ = std::fs::remove_file(path);
        let l = tokio::net::UnixListener::bind(path).map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))?;
        Ok(Listener::Unix(l))
    }

    #[cfg(not(unix))]
    fn bind_unix(_: &std::path::Path) -> anyhow::Result<Listener> {
        anyhow::bail!("no Unix sockets on this platform")
    }

    fn addr(&self) -> anyhow::Result<String> {
        Ok(match self {
            Listener::Tcp(l) => l.local_addr()?.to_string(),
            #[cfg(unix)]
            Listener::Unix(l) => {
                let a = l.local_addr()?;
                let p = a.as_pathname().ok_or_else(|| anyhow::anyhow!("unnamed socket"))?;
                format!("unix:{}", p.display())
            }
        })
    }
}

/// A directory only this user can enter, for the workers' sockets.
struct SocketDir {
    path: PathBuf,
}

impl SocketDir {
    #[cfg(unix)]
    fn create() -> anyhow::Result<SocketDir> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!("ferrals-local-{}-{}", std::process::id(), &random_token()[..8]));
        // A socket path must fit sun_path (108 bytes, with room for the file name).
        anyhow::ensure!(path.as_os_str().len() < 80, "temporary directory path too long for sockets");
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(SocketDir { path })
    }

    #[cfg(not(unix))]
    fn create() -> anyhow::Result<SocketDir> {
        anyhow::bail!("no Unix sockets on this platform")
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
