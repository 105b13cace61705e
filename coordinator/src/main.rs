//! `coordinator`: train (the default command), generate, recommend, similar.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use als_coordinator::cli::{Cli, Command};
use als_coordinator::{fold_in_cmd, generate_cmd, progress, recommend_cmd, serve, similar_cmd, train_cmd, tune_cmd};

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
        .with_writer(progress::make_log_writer)
        // No colour codes in logs redirected to a file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match cli.command {
        None => {
            if let Some(n) = cli.train.threads {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build_global()
                    .context("cannot size the thread pool")?;
            }
            train_cmd::run(&cli.train, &mut out)?;
        }
        Some(Command::Generate(a)) => generate_cmd::run(&a, &mut out)?,
        Some(Command::Recommend(a)) => recommend_cmd::run(&a, &mut out)?,
        Some(Command::Similar(a)) => similar_cmd::run(&a, &mut out)?,
        Some(Command::FoldIn(a)) => fold_in_cmd::run(&a, &mut out)?,
        Some(Command::Serve(a)) => serve::run(&a, &mut out)?,
        Some(Command::Tune(a)) => {
            tune_cmd::run(&a, &mut out)?;
        }
    }
    out.flush().context("cannot write to stdout")?;
    Ok(())
}
