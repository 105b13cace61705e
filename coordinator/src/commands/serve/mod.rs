//! `coordinator serve`: answer over HTTP/JSON (axum) from a model directory
//! until SIGTERM or Ctrl-C, finishing in-flight requests; pick up each new
//! version of the model without dropping a request (on SIGHUP, and when the
//! directory's files change), keeping the old one if the new one fails to
//! load; `/metrics` for Prometheus.
//!
//! [`api`] holds the routes (callable without a socket, for tests), [`live`]
//! the swappable model, [`metrics`] the counters; this module binds the
//! listener and runs the server and the reload tasks.

pub mod api;
pub mod error;
pub mod http;
pub mod live;
pub mod metrics;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

pub use api::router;
pub use live::{LiveModel, Reload};

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("must be a number of seconds in (0, 86400], got {s}")),
    }
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v == 0.0 || (0.05..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("must be 0 (off) or a number of seconds in [0.05, 86400], got {s}")),
    }
}

/// Environment variable holding the serve token when no --token-file is given
/// (apart from the cluster's ALS_TOKEN: serving clients are not cluster peers).
pub const SERVE_TOKEN_ENV: &str = "ALS_SERVE_TOKEN";

/// `coordinator serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: crate::args::ModelDirArg,
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
    /// Seconds between checks of the model directory for a new version (0:
    /// only on SIGHUP). A version that fails to load is logged and the old
    /// one keeps serving.
    #[arg(long, default_value_t = 5.0, value_name = "SECS", value_parser = parse_interval)]
    pub reload_interval: f64,
}

/// Run the server; prints `listening on http://ADDR` to `out` once bound.
pub fn run(args: &ServeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    anyhow::ensure!(args.max_n >= 1, "--max-n must be at least 1");
    let live = Arc::new(LiveModel::open(&args.model.dir, args.max_n)?);
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
        let secure = format!("pass --token-file (or set {SERVE_TOKEN_ENV})");
        let listener = als_net::listen::bind_guarded(&args.listen, token.is_some(), args.insecure, &secure).await?;
        let local = listener.local_addr()?;
        let first = live.current();
        tracing::info!(
            address = %local,
            model = %args.model.dir.display(),
            version = first.model.version(),
            users = first.model.n_users(),
            items = first.model.n_items(),
            "serving"
        );
        drop(first);
        spawn_reloads(live.clone(), args.reload_interval)?;
        // Tests and scripts read the actual port (with :0) from this line.
        writeln!(out, "listening on http://{local}")?;
        out.flush()?;
        let app = api::with_metrics(http::harden(router(live.clone()), token, &limits), live.clone());
        http::serve(listener, app, &limits, als_net::shutdown::shutdown_signal())
            .await
            .context("server error")?;
        tracing::info!("server stopped");
        anyhow::Ok(())
    })
}

/// Reload on SIGHUP (always) and every `interval` seconds when the files
/// changed (0: never by polling). Loading runs off the request threads.
fn spawn_reloads(live: Arc<LiveModel>, interval: f64) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("cannot watch SIGHUP")?;
        let live = live.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the model");
                reload_once(live.clone(), true).await;
            }
        });
    }
    if interval > 0.0 {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(interval));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                reload_once(live.clone(), false).await;
            }
        });
    }
    Ok(())
}

async fn reload_once(live: Arc<LiveModel>, force: bool) {
    match tokio::task::spawn_blocking(move || live.reload(force)).await {
        Ok(Ok(Reload::Loaded { version })) => tracing::info!(version, "serving a new model version"),
        Ok(Ok(Reload::Unchanged)) => {}
        Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "the new model did not load; the old one keeps serving"),
        Err(e) => tracing::error!(error = %e, "the model reload task failed"),
    }
}
