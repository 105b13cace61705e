//! GFLOP/s of each row kernel, one plain line per kernel.
//!
//!     cargo run --release -p als-bench --bin kernel_gflops [-- --seconds 1 --threads 1 --filter gram]
//!     OPENBLAS_NUM_THREADS=1 cargo run --release -p als-bench --features lapack --bin kernel_gflops
//!
//! (the second one times faer and lapack; without OPENBLAS_NUM_THREADS=1,
//! OpenBLAS runs one `gram_add` on all cores and the figures are not per core.)
//!
//! Each kernel is warmed up, then called repeatedly for `--seconds`; the
//! line gives the median and the best time of one call and the GFLOP/s at
//! the median (flops per call from `als_bench::flops`).

use std::time::{Duration, Instant};

use als_bench::{all_kernels, BlockShape};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Time each ALS row kernel for a fixed time and print GFLOP/s")]
struct Args {
    /// Seconds of timed calls per kernel (after a warm-up).
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Threads of the rayon pool the solve_rows kernels run in.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Only kernels whose `group/backend/size` contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Rows of the solve_rows block.
    #[arg(long, default_value_t = 1000)]
    rows: usize,
    /// Mean ratings per row of the block.
    #[arg(long, default_value_t = 100)]
    ratings: usize,
    /// Rows of the fixed side the block references.
    #[arg(long, default_value_t = 20_000)]
    fixed_rows: usize,
    /// Factors k of the solve_rows and block_gram kernels.
    #[arg(long, default_value_t = 64)]
    factors: usize,
}

fn fmt_time(s: f64) -> String {
    if s < 1e-6 {
        format!("{:.1} ns", s * 1e9)
    } else if s < 1e-3 {
        format!("{:.2} µs", s * 1e6)
    } else {
        format!("{:.2} ms", s * 1e3)
    }
}

fn main() {
    let a = Args::parse();
    let shape = BlockShape {
        rows: a.rows,
        mean_ratings: a.ratings,
        fixed_rows: a.fixed_rows,
        k: a.factors,
    };
    let budget = Duration::from_secs_f64(a.seconds.max(0.01));
    println!(
        "# kernel GFLOP/s: {}s per kernel, solve_rows threads={}, {} logical CPUs; GFLOP/s at the median call",
        a.seconds,
        a.threads,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!(
        "{:<30} {:<7} {:<40} {:>12} {:>7} {:>11} {:>11} {:>9}",
        "kernel", "backend", "size", "flops/call", "calls", "median", "best", "GFLOP/s"
    );
    for mut k in all_kernels(shape, a.threads) {
        let id = format!("{}/{}", k.group, k.id());
        if a.filter.as_deref().is_some_and(|f| !id.contains(f)) {
            continue;
        }
        // Warm-up: at least 3 calls and ~10% of the budget.
        let t0 = Instant::now();
        let mut warm = 0;
        while warm < 3 || t0.elapsed() < budget / 10 {
            (k.run)();
            warm += 1;
        }
        let mut times = Vec::new();
        let start = Instant::now();
        while times.len() < 3 || start.elapsed() < budget {
            let t = Instant::now();
            (k.run)();
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(|x, y| x.total_cmp(y));
        let median = times[times.len() / 2];
        let best = times[0];
        println!(
            "{:<30} {:<7} {:<40} {:>12.4e} {:>7} {:>11} {:>11} {:>9.2}",
            k.group,
            k.backend,
            k.size,
            k.flops,
            times.len(),
            fmt_time(median),
            fmt_time(best),
            k.flops / median / 1e9
        );
    }
}
