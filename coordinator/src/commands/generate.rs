//! `coordinator generate`: a synthetic low-rank ratings file.

use std::io::Write;
use std::time::Instant;

use als_core::data::synth::{write_csv, SynthSpec};
use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;

use crate::args::parse;
use crate::progress;

/// `coordinator generate`.
#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Output CSV file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Number of users.
    #[arg(long, value_name = "N", default_value_t = SynthSpec::small_default().users, value_parser = parse::positive_usize)]
    pub users: usize,
    /// Number of items.
    #[arg(long, value_name = "N", default_value_t = SynthSpec::small_default().items, value_parser = parse::positive_usize)]
    pub items: usize,
    /// Number of ratings (distinct user-item pairs; at most half of users × items).
    #[arg(long, value_name = "N", default_value_t = SynthSpec::small_default().ratings)]
    pub ratings: u64,
    /// Rank of the ground truth.
    #[arg(long, default_value_t = SynthSpec::small_default().rank, value_name = "R", value_parser = parse::positive_usize)]
    pub rank: usize,
    /// Standard deviation of the Gaussian noise added to each rating.
    #[arg(long, default_value_t = SynthSpec::small_default().noise_std as f32, value_name = "S", value_parser = parse::non_negative_f32)]
    pub noise: f32,
    /// Seed of the ground truth, the observed pairs and the noise.
    #[arg(long, default_value_t = SynthSpec::small_default().seed)]
    pub seed: u64,
    /// Continuous ratings (default: rounded to the 1..5 star scale).
    #[arg(long)]
    pub continuous: bool,
    /// Replace an existing output file.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub progress: crate::args::ProgressArgs,
}

/// The generator settings of the flags (the rest are the core defaults).
pub fn synth_spec(args: &GenerateArgs) -> SynthSpec {
    SynthSpec {
        users: args.users,
        items: args.items,
        ratings: args.ratings,
        rank: args.rank,
        noise_std: args.noise as f64,
        seed: args.seed,
        stars: !args.continuous,
        ..SynthSpec::default()
    }
}

/// Run the command; the one-line summary goes to `out` (stdout in the binary).
pub fn run(args: &GenerateArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let path = &args.out;
    if path.exists() && !args.overwrite {
        bail!("{} already exists; pass --overwrite to replace it", path.display());
    }
    if path.is_dir() {
        bail!("{} is a directory", path.display());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create the directory {}", parent.display()))?;
    }
    let spec = synth_spec(args);
    let t0 = Instant::now();
    let bar = progress::bar(
        spec.ratings,
        args.progress.quiet,
        "{spinner} generating [{elapsed_precise}] [{bar:30}] {human_pos}/{human_len} rows ({per_sec}, eta {eta})",
    );
    let written = write_csv(&spec, path, |rows| bar.set_position(rows));
    progress::finish(&bar);
    let rows = written.with_context(|| format!("cannot generate {}", path.display()))?;
    let secs = t0.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    writeln!(
        out,
        "wrote {rows} ratings ({} users, {} items, rank {}, noise {}, seed {}) to {} in {secs:.1} s ({:.1} MB)",
        spec.users,
        spec.items,
        spec.rank,
        spec.noise_std,
        spec.seed,
        path.display(),
        bytes as f64 / 1e6
    )?;
    Ok(())
}
