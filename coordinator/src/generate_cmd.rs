//! `coordinator generate`: a synthetic low-rank ratings file.

use std::io::Write;
use std::time::Instant;

use als_core::data::synth::{write_csv, SynthSpec};
use anyhow::{bail, Context};

use crate::cli::GenerateArgs;
use crate::progress;

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
        args.quiet,
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
