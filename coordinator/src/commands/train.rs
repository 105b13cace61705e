//! `coordinator [train flags]`: one training run (the default command).

use std::io::Write;

use anyhow::Context;

use crate::args::TrainArgs;
use crate::training;

/// Size the thread pool, then train, evaluate, save and report.
pub fn run(args: &TrainArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let job = args.job(cores)?;
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot size the thread pool")?;
    }
    training::run(job, out)?;
    Ok(())
}
