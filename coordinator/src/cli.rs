//! The command line of `coordinator`: the list of commands and the dispatch.
//!
//! `coordinator` with no subcommand trains; the train flags live at the top
//! level, so `coordinator --data r.csv --factors 32` works as is. Each
//! command owns its flags and its `run` in [`crate::commands`].

use std::io::Write;

use clap::{Parser, Subcommand};

use crate::args::TrainArgs;
use crate::commands::{fold_in, generate, recommend, serve, similar, train, tune};

/// The command line of `coordinator`.
#[derive(Parser, Debug)]
#[command(
    name = "coordinator",
    version,
    about = "ALS matrix factorization: train on ratings or implicit feedback, then recommend",
    long_about = "ALS matrix factorization: train on ratings or implicit feedback, then recommend.\n\n\
                  With no subcommand it trains (on --data, or on an embedded synthetic dataset).",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Every info log line on a terminal too (handshakes, block moves, timings); RUST_LOG overrides.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub train: TrainArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a synthetic low-rank ratings file (CSV `user,item,rating`).
    Generate(generate::GenerateArgs),
    /// Top-N items for a user (or for every user with --all) from a saved model.
    Recommend(recommend::RecommendArgs),
    /// Items (or users) most similar to one, by cosine over the factors.
    Similar(similar::SimilarArgs),
    /// k-fold cross-validation over a grid of --lambda, --factors (and --alpha): a table, the best marked.
    Tune(Box<tune::TuneArgs>),
    /// Add users to a saved model from a ratings file (fold-in), as a new model version.
    FoldIn(fold_in::FoldInArgs),
    /// Answer recommendations over HTTP/JSON from a saved model.
    Serve(serve::ServeArgs),
}

/// Run the command the line names; its report goes to `out` (stdout in the binary).
pub fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    match cli.command {
        None => train::run(&cli.train, out),
        Some(Command::Generate(a)) => generate::run(&a, out),
        Some(Command::Recommend(a)) => recommend::run(&a, out),
        Some(Command::Similar(a)) => similar::run(&a, out),
        Some(Command::FoldIn(a)) => fold_in::run(&a, out),
        Some(Command::Serve(a)) => serve::run(&a, out),
        Some(Command::Tune(a)) => tune::run(&a, out).map(drop),
    }
}
