//! `worker --listen :50051`: serve ALS half-iterations to a coordinator.
//! `worker --health-check 127.0.0.1:50051`: probe a worker (exit 0 when serving, 1 otherwise).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use als_worker::{auth, probe, server};

#[derive(Parser, Debug)]
#[command(name = "worker", version, about = "ALS worker: solves the rows of its blocks for a coordinator")]
struct Args {
    /// Address to listen on: HOST:PORT, or :PORT for all interfaces.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: String,
    /// Cores to use for solving (default: all).
    #[arg(long)]
    threads: Option<usize>,
    /// File holding the cluster token (else the ALS_TOKEN environment variable).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Serve without a token on a non-loopback address (anyone who can reach the port can drive the worker).
    #[arg(long)]
    insecure: bool,
    /// Seconds without any call after which a job may be replaced by a new one.
    #[arg(long, default_value_t = 60)]
    job_idle_timeout: u64,
    /// PEM certificate of this worker: serve over TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA of coordinator certificates: require them (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Do not serve: ask the worker at ADDR (HOST:PORT or :PORT) whether it is serving, exit 0 if so, else 1.
    /// For container healthchecks, where there is no shell or curl.
    #[arg(long, value_name = "ADDR")]
    health_check: Option<String>,
    /// Seconds the --health-check probe waits for a connection and an answer.
    #[arg(long, default_value_t = 3, requires = "health_check")]
    health_timeout: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        // Plain text in container logs and files: colour codes only on a terminal.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    if let Some(addr) = &args.health_check {
        probe::check(addr, Duration::from_secs(args.health_timeout)).await?;
        println!("{addr}: serving");
        return Ok(());
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("cannot size the thread pool")?;
    let token = auth::resolve_token(args.token_file.as_deref())?;
    let addr = server::parse_listen(&args.listen)?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    if token.is_none() && !server::is_loopback(&local) && !args.insecure {
        anyhow::bail!(
            "refusing to listen on {local} without a cluster token: set --token-file or ALS_TOKEN, listen on 127.0.0.1, or pass --insecure"
        );
    }
    if token.is_none() {
        tracing::warn!("no cluster token configured: any local process can drive this worker");
    }
    // The bound address on stdout lets scripts and tests use port 0.
    println!("listening on {local}{}", if args.tls_cert.is_some() { " (tls)" } else { "" });
    tracing::info!(%local, threads, "worker ready");
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(server::server_tls(c, k, args.tls_ca.as_deref())?),
        _ => None,
    };
    let opts = server::ServeOptions {
        token,
        threads,
        idle_timeout: Duration::from_secs(args.job_idle_timeout),
        tls,
    };
    server::serve(listener, opts, als_worker::shutdown::shutdown_signal()).await?;
    tracing::info!("worker stopped");
    Ok(())
}
