//! Serving the worker: token check, health service, graceful shutdown.

use std::future::Future;
use std::time::Duration;

use als_proto::http2;
use als_proto::pb::worker_server::WorkerServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::transport::Server;

use als_net::client::ClientOptions;

use crate::auth::TokenCheck;
use crate::peers::Peers;
use crate::service::WorkerService;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The cluster token; `None` only for loopback or with `--insecure`.
    pub token: Option<String>,
    pub threads: usize,
    pub idle_timeout: Duration,
    /// TLS (rustls); with a client CA, mutual TLS.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// Bytes the job may hold (see [`crate::job::default_memory_budget`]).
    pub memory_budget: u64,
    /// TLS towards peers (their CA, this worker's identity). A worker that
    /// serves TLS sends its solved rows to peers only with it.
    pub peer_tls: Option<tonic::transport::ClientTlsConfig>,
    /// Shared by the workers of one process (`--local`); `None` for a
    /// worker alone in its process.
    pub solve_turns: Option<SolveTurns>,
    /// Inputs the coordinator may have this worker read lie under this
    /// directory (`--input-root`); `None`: it reads none.
    pub input_root: Option<std::path::PathBuf>,
    /// Files the coordinator may have this worker write its rows into (a
    /// checkpoint) lie under this directory (`--output-root`); `None`: it writes none.
    pub output_root: Option<std::path::PathBuf>,
}

/// Workers of one process, which share its cores, solve one at a time:
/// each solve has every core and its fixed side hot in cache, while the
/// next worker's call, its fixed side and its thread get ready meanwhile.
pub type SolveTurns = std::sync::Arc<std::sync::Mutex<()>>;

impl ServeOptions {
    /// How this worker reaches its peers: with the cluster token, over TLS
    /// when it serves TLS; `None` when it serves TLS but has no peer CA.
    fn peer_options(&self) -> Option<ClientOptions> {
        if self.tls.is_some() && self.peer_tls.is_none() {
            return None;
        }
        Some(ClientOptions {
            token: self.token.clone(),
            tls: self.peer_tls.clone(),
            ..Default::default()
        })
    }
}

/// Serve on `listener` until `shutdown` resolves; in-flight calls finish first.
pub async fn serve(listener: TcpListener, opts: ServeOptions, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    // Small request/response exchanges each half-iteration: Nagle's delay would
    // stall them (the builder's tcp_nodelay does not reach a custom incoming stream).
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    });
    serve_incoming(incoming, opts, shutdown).await
}

/// The worker's services as one router: the health service (open to all)
/// and the worker behind the token check, with the generated server's
/// message limits. [`serve`] puts it behind HTTP/2; `--local` workers are
/// called through it in the coordinator's process.
pub async fn routes(opts: &ServeOptions) -> tonic::service::Routes {
    local_routes(opts).await.0
}

/// [`routes`], with what a worker of the same process may hand this one
/// directly, for [`als_net::transport::InProcess::with_direct`]: peers' rows,
/// checked as the `PeerRows` call checks them, without their encoding.
pub async fn local_routes(opts: &ServeOptions) -> (tonic::service::Routes, std::sync::Arc<dyn std::any::Any + Send + Sync>) {
    let (reporter, health) = tonic_health::server::health_reporter();
    let check = TokenCheck::new(opts.token.clone());
    let service = WorkerService::new(opts.threads, opts.idle_timeout, opts.memory_budget, Peers::new(opts.peer_options()))
        .with_solve_turns(opts.solve_turns.clone())
        .with_input_root(opts.input_root.clone())
        .with_output_root(opts.output_root.clone());
    let direct = service.mailbox_slot();
    let svc = WorkerServer::with_interceptor(service, move |req: tonic::Request<()>| {
        check.check(&req)?;
        Ok(req)
    });
    reporter.set_serving::<WorkerServer<WorkerService>>().await;
    (tonic::service::Routes::new(health).add_service(svc), direct)
}

async fn serve_incoming<IO>(
    incoming: impl tokio_stream::Stream<Item = std::io::Result<IO>> + Send + 'static,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
{
    let routes = routes(&opts).await;
    let mut builder = Server::builder();
    if let Some(tls) = opts.tls.clone() {
        builder = builder.tls_config(tls)?;
    }
    // Megabytes per half: the cluster's large windows and frames.
    builder
        .initial_stream_window_size(http2::STREAM_WINDOW)
        .initial_connection_window_size(http2::CONNECTION_WINDOW)
        .max_frame_size(http2::MAX_FRAME)
        .tcp_nodelay(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
