//! The roofline of one ALS iteration on this machine: the measured f32 FMA
//! peak (a large GEMM on N threads), the minimal floating-point work of one
//! iteration on the given data, and how close our in-process training comes.
//!
//!     cargo run --release -p als-bench --bin roofline -- --data ratings.csv --factors 64 --threads 2
//!     cargo run --release -p als-bench --bin roofline -- --synthetic 6040,3706,800000 --implicit --solver cg
//!
//! The floor counts only what any exact ALS must do, per side and iteration,
//! with d = k (+1 with biases), n = ratings, r = rows solved, m = fixed rows:
//! the Gram blocks at n·d·(d+1) (the lower triangle), the right-hand sides
//! at 2·n·d, the factorizations at r·d³/3; implicit feedback adds the fixed
//! side's Gramian at m·k·(k+1). For CG the factorization is replaced by the
//! steps actually taken (`als_bench::flops::implicit_cg_row`).
//! Efficiency = (floor flops / peak) / measured seconds: 1 is the machine's limit.

use std::time::Instant;

use als_core::data::synth::{generate_raw, SynthSpec};
use als_core::data::{load_ratings, Dataset, DuplicatePolicy, LoadOptions};
use als_core::solve::{Confidence, RegScaling, SolverKind};
use als_core::train::{train, ImplicitConfig, Layouts, LocalExecutor, TrainConfig};
use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Peak f32 GFLOP/s, an ALS iteration's minimal work, and our efficiency against it")]
struct Args {
    /// Ratings file (any layout the trainer reads with its defaults).
    #[arg(long, conflicts_with = "synthetic")]
    data: Option<std::path::PathBuf>,
    /// Generated data instead: USERS,ITEMS,RATINGS.
    #[arg(long, value_name = "U,I,N")]
    synthetic: Option<String>,
    #[arg(long, default_value_t = 64)]
    factors: usize,
    #[arg(long, default_value_t = 3)]
    iterations: usize,
    /// Threads of the GEMM and of training [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Implicit feedback (Hu et al.; α 1, λ 0.05 plain unless given).
    #[arg(long)]
    implicit: bool,
    /// cholesky, cg or ialspp.
    #[arg(long, default_value = "cholesky")]
    solver: String,
    #[arg(long, default_value_t = 3)]
    cg_steps: usize,
    /// Block size and sweeps of --solver ialspp.
    #[arg(long, default_value_t = als_core::train::DEFAULT_BLOCK_SIZE)]
    block_size: usize,
    #[arg(long, default_value_t = als_core::train::DEFAULT_SWEEPS)]
    sweeps: usize,
    #[arg(long)]
    lambda: Option<f32>,
    #[arg(long, default_value_t = 1.0)]
    alpha: f32,
    /// Side of the square GEMM that measures the peak.
    #[arg(long, default_value_t = 2048)]
    gemm_size: usize,
}

/// Best-of-5 GFLOP/s of an n×n×n f32 GEMM (2n³ flops) with faer on `threads` threads.
fn gemm_peak(n: usize, threads: usize) -> f64 {
    use faer::{Accum, Mat, Par};
    let a = Mat::<f32>::from_fn(n, n, |i, j| ((i * 7 + j * 13) % 17) as f32 * 0.01);
    let b = Mat::<f32>::from_fn(n, n, |i, j| ((i * 5 + j * 3) % 11) as f32 * 0.01);
    let mut c = Mat::<f32>::zeros(n, n);
    let par = if threads > 1 { Par::rayon(threads) } else { Par::Seq };
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        faer::linalg::matmul::matmul(c.as_mut(), Accum::Replace, a.as_ref(), b.as_ref(), 1.0f32, par);
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&c);
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// Minimal flops of one iteration (both halves).
fn floor_flops(ds: &Dataset, cfg: &TrainConfig) -> f64 {
    let k = cfg.factors;
    let nnz = ds.by_user.nnz() as f64;
    let mut total = 0.0;
    for (rows, fixed) in [(ds.n_users(), ds.n_items()), (ds.n_items(), ds.n_users())] {
        let r = rows as f64;
        if !cfg.is_implicit() {
            let d = (k + usize::from(cfg.has_biases())) as f64;
            total += nnz * d * (d + 1.0) + 2.0 * nnz * d + r * d * d * d / 3.0;
            continue;
        }
        let kf = k as f64;
        total += fixed as f64 * kf * (kf + 1.0);
        total += match cfg.solver {
            SolverKind::Cholesky => nnz * kf * (kf + 1.0) + 2.0 * nnz * kf + r * kf * kf * kf / 3.0,
            SolverKind::Cg { steps } => {
                // Summed over rows, the per-row formula is linear in the row's ratings.
                let per_row_fixed = als_bench::flops::implicit_cg_row(0, k, steps);
                let per_rating = als_bench::flops::implicit_cg_row(1, k, steps) - per_row_fixed;
                r * per_row_fixed + nnz * per_rating
            }
            SolverKind::Ialspp { block, sweeps } => {
                let per_row_fixed = als_bench::flops::implicit_ialspp_row(0, k, block, sweeps);
                let per_rating = als_bench::flops::implicit_ialspp_row(1, k, block, sweeps) - per_row_fixed;
                r * per_row_fixed + nnz * per_rating
            }
        };
    }
    total
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
    let raw = match (&a.data, &a.synthetic) {
        (Some(p), _) => load_ratings(p, &LoadOptions::default()).with_context(|| format!("{}", p.display()))?,
        (None, Some(s)) => {
            let v: Vec<u64> = s
                .split(',')
                .map(|x| x.trim().parse())
                .collect::<Result<_, _>>()
                .context("--synthetic U,I,N")?;
            anyhow::ensure!(v.len() == 3, "--synthetic takes USERS,ITEMS,RATINGS");
            generate_raw(&SynthSpec {
                users: v[0] as usize,
                items: v[1] as usize,
                ratings: v[2],
                ..SynthSpec::default()
            })?
        }
        (None, None) => generate_raw(&SynthSpec::small_default())?,
    };
    let all: Vec<usize> = (0..raw.len()).collect();
    let policy = if a.implicit { DuplicatePolicy::Sum } else { DuplicatePolicy::Last };
    let ds = Dataset::build((&raw, &all), None, policy)?;
    drop(raw);
    let solver = match a.solver.as_str() {
        "cholesky" => SolverKind::Cholesky,
        "cg" => SolverKind::Cg { steps: a.cg_steps },
        "ialspp" => SolverKind::Ialspp {
            block: a.block_size,
            sweeps: a.sweeps,
        },
        s => anyhow::bail!("--solver cholesky|cg|ialspp, got {s}"),
    };
    let cfg = TrainConfig {
        factors: a.factors,
        iterations: a.iterations,
        eval_every: 0,
        solver,
        implicit: a.implicit.then_some(ImplicitConfig::hu(a.alpha, Confidence::Linear)),
        reg_scaling: if a.implicit { RegScaling::None } else { RegScaling::Count },
        lambda: a.lambda.unwrap_or(if a.implicit { 0.05 } else { 0.1 }),
        ..Default::default()
    };
    let peak = gemm_peak(a.gemm_size, threads);
    let floor = floor_flops(&ds, &cfg);
    let layouts = Layouts::for_dataset(&ds, cfg.blocks);
    let mut exec = LocalExecutor::new(&ds, layouts.clone());
    let wall = std::time::Instant::now();
    let res = train(&ds, &cfg, &mut exec, &layouts, None, &mut |_, _| Ok(()))?;
    let wall = wall.elapsed().as_secs_f64() / cfg.iterations.max(1) as f64;
    let mut secs: Vec<f64> = res.reports.iter().map(|r| r.seconds).collect();
    secs.sort_by(f64::total_cmp);
    let median = secs[secs.len() / 2];
    let floor_time = floor / (peak * 1e9);
    println!(
        "# roofline: {} users × {} items, {} ratings, k={}, {}{}, {threads} threads",
        ds.n_users(),
        ds.n_items(),
        ds.by_user.nnz(),
        cfg.factors,
        if cfg.is_implicit() { "implicit " } else { "explicit " },
        a.solver
    );
    println!("peak f32 GEMM ({0}×{0}, faer, {threads} threads): {peak:.1} GFLOP/s", a.gemm_size);
    println!("floor per iteration: {:.3} GFLOP = {:.4} s at the peak", floor / 1e9, floor_time);
    // An iteration's seconds are its two halves (the objective, computed after, is not in them).
    println!(
        "measured: {median:.4} s/iter (median of {}), {:.1} GFLOP/s achieved",
        secs.len(),
        floor / median / 1e9
    );
    println!("efficiency: {:.3} (floor time at the peak / measured time)", floor_time / median);
    println!("wall time per iteration, objective and final evaluation included: {wall:.4} s");
    Ok(())
}
