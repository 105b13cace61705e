//! `coordinator serve`: load a model once and answer over HTTP/JSON (axum)
//! until SIGTERM or Ctrl-C, finishing in-flight requests.
//!
//! [`api`] holds the routes (callable without a socket, for tests);
//! this module binds the listener and runs the server.

pub mod api;
pub mod error;
pub mod http;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

pub use api::{router, ScoredItem, ServeState};

use crate::recommend_cmd::open_model;

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("must be a number of seconds in (0, 86400], got {s}")),
    }
}

/// Environment variable holding the serve token when no --token-file is given
/// (apart from the cluster's ALS_TOKEN: serving clients are not cluster peers).
pub const SERVE_TOKEN_ENV: &str = "ALS_SERVE_TOKEN";

/// `coordinator serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Model directory written by training with --out (or fold-in).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Address to listen on: HOST:PORT, or :PORT for all interfaces (port 0: any free port,
    /// printed). Beyond loopback it needs --token-file (or ALS_SERVE_TOKEN) or --insecure.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: String,
    /// File holding the bearer token every request but /health must present
    /// (`Authorization: Bearer <token>`); else the ALS_SERVE_TOKEN environment variable.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve without a token on a non-loopback address (put it behind your gateway).
    #[arg(long)]
    pub insecure: bool,
    /// Most connections open at once (more wait in the listen backlog).
    #[arg(long, default_value_t = http::Limits::default().max_connections, value_name = "N")]
    pub max_connections: usize,
    /// Seconds a connection may take to send its request headers.
    #[arg(long, default_value_t = 10.0, value_name = "SECS", value_parser = parse_seconds)]
    pub header_timeout: f64,
    /// Seconds a request may take before it is answered 503.
    #[arg(long, default_value_t = 30.0, value_name = "SECS", value_parser = parse_seconds)]
    pub request_timeout: f64,
    /// Seconds open connections get to finish after SIGTERM.
    #[arg(long, default_value_t = 10.0, value_name = "SECS", value_parser = parse_seconds)]
    pub shutdown_grace: f64,
    /// Largest n answered (larger requests are capped to it).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_n: usize,
    /// Threads answering requests [default: all cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// Run the server; prints `listening on http://ADDR` to `out` once bound.
pub fn run(args: &ServeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    anyhow::ensure!(args.max_n >= 1, "--max-n must be at least 1");
    let model = open_model(&args.model)?;
    let state = ServeState::new(model, args.max_n).with_context(|| format!("cannot serve {}", args.model.display()))?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        anyhow::ensure!(t >= 1, "--threads must be at least 1");
        rt.worker_threads(t);
    }
    let rt = rt.enable_all().build().context("cannot start the async runtime")?;
    let token = als_proto::token::resolve_token(args.token_file.as_deref(), std::env::var(SERVE_TOKEN_ENV).ok())?;
    let limits = http::Limits {
        max_connections: args.max_connections.max(1),
        header_read_timeout: Duration::from_secs_f64(args.header_timeout),
        request_timeout: Duration::from_secs_f64(args.request_timeout),
        shutdown_grace: Duration::from_secs_f64(args.shutdown_grace),
        ..Default::default()
    };
    rt.block_on(async {
        let addr = als_worker::server::parse_listen(&args.listen)?;
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        if token.is_none() && !local.ip().is_loopback() && !args.insecure {
            anyhow::bail!(
                "refusing to serve on {local} without a token: pass --token-file (or set {SERVE_TOKEN_ENV}), \
                 listen on 127.0.0.1, or pass --insecure"
            );
        }
        tracing::info!(
            address = %local,
            model = %args.model.display(),
            version = state.model.version,
            users = state.model.n_users(),
            items = state.model.n_items(),
            "serving"
        );
        // Tests and scripts read the actual port (with :0) from this line.
        writeln!(out, "listening on http://{local}")?;
        out.flush()?;
        let app = http::harden(router(Arc::new(state)), token, &limits);
        http::serve(listener, app, &limits, als_worker::shutdown::shutdown_signal())
            .await
            .context("server error")?;
        tracing::info!("server stopped");
        anyhow::Ok(())
    })
}
