//! `coordinator`: train (the default command), generate, recommend, similar,
//! tune, fold-in, serve.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use als_coordinator::cli::{self, Cli};

fn main() {
    let cli = Cli::parse();
    // On a terminal a newcomer sees the progress bar, one line per iteration
    // and the summary; logs sent elsewhere (files, CI, containers) keep every
    // info line. -v or RUST_LOG choose otherwise.
    let default_filter = if cli.verbose || !std::io::stderr().is_terminal() {
        "info"
    } else {
        "warn,als_coordinator::iterations=info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)))
        .with_writer(als_coordinator::make_log_writer)
        // No colour codes in logs redirected to a file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = cli::run(cli, &mut out).and_then(|()| out.flush().context("cannot write to stdout"));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
