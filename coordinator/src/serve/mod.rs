//! `coordinator serve`: load a model once and answer over HTTP/JSON (axum)
//! until SIGTERM or Ctrl-C, finishing in-flight requests.
//!
//! [`api`] holds the routes (callable without a socket, for tests);
//! this module binds the listener and runs the server.

pub mod api;
pub mod error;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

pub use api::{router, ScoredItem, ServeState};

use crate::recommend_cmd::open_model;

/// `coordinator serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Model directory written by training with --out (or fold-in).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Address to listen on: HOST:PORT, or :PORT for all interfaces (port 0: any free port, printed).
    #[arg(long, default_value = ":8080", value_name = "ADDR")]
    pub listen: String,
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
    rt.block_on(async {
        let addr = als_worker::server::parse_listen(&args.listen)?;
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
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
        axum::serve(listener, router(Arc::new(state)))
            .with_graceful_shutdown(als_worker::shutdown::shutdown_signal())
            .await
            .context("server error")?;
        tracing::info!("server stopped");
        anyhow::Ok(())
    })
}
