//! `worker --listen :50051`: serve ALS half-iterations to a coordinator.
//! `worker --health-check 127.0.0.1:50051`: probe a worker (exit 0 when serving, 1 otherwise).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use als_worker::{probe, resolve_token, serve, ServeOptions};

/// Most solver threads one worker takes (a typo guard, far above any core count).
const MAX_THREADS: i64 = 4096;

#[derive(Parser, Debug)]
#[command(name = "worker", version, about = "ALS worker: solves the rows of its blocks for a coordinator")]
struct Args {
    /// Address to listen on: HOST:PORT, or :PORT for all interfaces.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: String,
    /// Cores to use for solving (default: all; with several workers on one host, split the cores among them).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_THREADS))]
    threads: Option<u32>,
    /// Most memory one job may make this worker hold, e.g. 4G or 512M [default: 3/4 of this machine's].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_memory: Option<u64>,
    /// File holding the cluster token (else the ALS_TOKEN environment variable).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Serve without a token on a non-loopback address (anyone who can reach the port can drive the worker).
    #[arg(long)]
    insecure: bool,
    /// Directory under which the coordinator may have this worker read its
    /// share of the input (a shared volume); without it the worker reads no input.
    #[arg(long, value_name = "DIR")]
    input_root: Option<PathBuf>,
    /// Directory under which the coordinator may have this worker write the
    /// rows of its blocks into checkpoints (a shared volume, reached at the
    /// coordinator's --checkpoint-dir path); without it the coordinator
    /// fetches the rows and writes them itself.
    #[arg(long, value_name = "DIR")]
    output_root: Option<PathBuf>,
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
    /// PEM CA of the other workers' certificates: send solved rows straight to
    /// them over TLS, presenting --tls-cert. Without it a TLS worker leaves
    /// the exchange to the coordinator.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    peer_tls_ca: Option<PathBuf>,
    /// The name the other workers' certificates are for [default: each peer's host].
    #[arg(long, value_name = "NAME", requires = "peer_tls_ca")]
    peer_tls_domain: Option<String>,
    /// Do not serve: ask the worker at ADDR (HOST:PORT or :PORT) whether it is serving, exit 0 if so, else 1.
    /// For container healthchecks, where there is no shell or curl.
    #[arg(long, value_name = "ADDR")]
    health_check: Option<String>,
    /// Seconds the --health-check probe waits for a connection and an answer.
    #[arg(long, default_value_t = 3, requires = "health_check")]
    health_timeout: u64,
    /// --health-check of a TLS worker: the PEM CA that signed its certificate.
    #[arg(long, value_name = "FILE", requires = "health_check")]
    health_tls_ca: Option<PathBuf>,
    /// --health-check of a TLS worker: the name its certificate is for [default: the address's host].
    #[arg(long, value_name = "NAME", requires = "health_tls_ca")]
    health_tls_domain: Option<String>,
    /// --health-check of a mutual-TLS worker: the probe's PEM certificate (with --health-tls-key).
    #[arg(long, value_name = "FILE", requires_all = ["health_tls_ca", "health_tls_key"])]
    health_tls_cert: Option<PathBuf>,
    /// PEM private key of --health-tls-cert.
    #[arg(long, value_name = "FILE", requires = "health_tls_cert")]
    health_tls_key: Option<PathBuf>,
}

/// `4G`, `512M`, `64K` or plain bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * (mult as f64) < 1e18 => Ok((v * mult as f64) as u64),
        _ => Err(format!("'{s}' is not a size (e.g. 4G, 512M, 1048576)")),
    }
}

fn main() {
    // Errors as one line (`error: ...` with its causes), like the coordinator's; never a backtrace dump.
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        // Plain text in container logs and files: colour codes only on a terminal.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    if let Some(addr) = &args.health_check {
        let tls = match &args.health_tls_ca {
            Some(ca) => Some(probe::ProbeTls {
                ca: ca.clone(),
                domain: args.health_tls_domain.clone(),
                identity: args.health_tls_cert.clone().zip(args.health_tls_key.clone()),
            }),
            None => None,
        };
        probe::check(addr, Duration::from_secs(args.health_timeout), tls.as_ref()).await?;
        println!("{addr}: serving");
        return Ok(());
    }
    let threads = args
        .threads
        .map(|t| t as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("cannot size the thread pool")?;
    let token = resolve_token(args.token_file.as_deref())?;
    // Keys and certificates are read and checked before the worker says it listens.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => {
            let cfg = als_net::tls::server_tls(c, k, args.tls_ca.as_deref())?;
            tonic::transport::Server::builder()
                .tls_config(cfg.clone())
                .with_context(|| format!("invalid TLS certificate or key ({}, {})", c.display(), k.display()))?;
            Some(cfg)
        }
        _ => None,
    };
    let peer_tls = match (&args.peer_tls_ca, &args.tls_cert, &args.tls_key) {
        (Some(ca), Some(c), Some(k)) => Some(als_net::tls::client_tls(
            ca,
            Some((c.as_path(), k.as_path())),
            args.peer_tls_domain.as_deref(),
        )?),
        _ => None,
    };
    if tls.is_some() && peer_tls.is_none() {
        tracing::info!("no --peer-tls-ca: solved rows go to peers through the coordinator");
    }
    let secure = "set --token-file or ALS_TOKEN";
    let listener = als_net::listen::bind_guarded(&args.listen, token.is_some(), args.insecure, secure).await?;
    let local = listener.local_addr()?;
    if token.is_none() {
        tracing::warn!("no cluster token configured: any local process can drive this worker");
    }
    // The bound address on stdout lets scripts and tests use port 0.
    println!("listening on {local}{}", if args.tls_cert.is_some() { " (tls)" } else { "" });
    tracing::info!(%local, threads, "worker ready");
    let opts = ServeOptions {
        token,
        threads,
        idle_timeout: Duration::from_secs(args.job_idle_timeout),
        tls,
        memory_budget: args.max_memory.unwrap_or_else(als_worker::job::default_memory_budget),
        peer_tls,
        solve_turns: None,
        input_root: args.input_root,
        output_root: args.output_root,
    };
    serve(listener, opts, als_net::shutdown::shutdown_signal()).await?;
    tracing::info!("worker stopped");
    Ok(())
}
