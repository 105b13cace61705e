//! Criterion benches of the dense row kernels and the per-block row solvers.
//!
//!     cargo bench -p als-bench --bench kernels                      # faer
//!     OPENBLAS_NUM_THREADS=1 cargo bench -p als-bench --bench kernels --features lapack  # + lapack
//!     cargo bench -p als-bench --bench kernels -- cholesky          # one group
//!
//! Throughput is declared as `Throughput::Elements(flops per call)`, so the
//! "thrpt" criterion prints in "elem/s" is FLOP/s: read "Gelem/s" as
//! GFLOP/s. (Here "elements" = floating-point operations, counted by the
//! formulas of `als_bench::flops`.) The `kernel_gflops` binary prints the
//! same kernels as one plain line each.
//!
//! The `solve_rows_*` kernels run in a rayon pool of `ALS_BENCH_THREADS`
//! threads (default 1, i.e. per-core figures, which are stable on a shared
//! machine); the dense kernels are single-threaded.

use std::time::Duration;

use als_bench::{all_kernels, BlockShape};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};

fn kernels(c: &mut Criterion) {
    let threads = std::env::var("ALS_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut groups: Vec<(&'static str, Vec<als_bench::Kernel>)> = Vec::new();
    for k in all_kernels(BlockShape::default(), threads) {
        match groups.iter_mut().find(|(g, _)| *g == k.group) {
            Some((_, v)) => v.push(k),
            None => groups.push((k.group, vec![k])),
        }
    }
    for (name, ks) in groups {
        let mut g = c.benchmark_group(name);
        // Block solves take tens of milliseconds: flat sampling and few samples
        // keep the run short on 2 cores.
        if name.starts_with("solve_rows") || name == "block_gram" {
            g.sampling_mode(SamplingMode::Flat)
                .sample_size(10)
                .measurement_time(Duration::from_secs(3));
        } else {
            g.measurement_time(Duration::from_secs(2));
        }
        g.warm_up_time(Duration::from_millis(500));
        for mut k in ks {
            // "elements" = floating-point operations of one call.
            g.throughput(Throughput::Elements(k.flops.round() as u64));
            let id = k.id();
            g.bench_function(id, |b| b.iter(|| (k.run)()));
        }
        g.finish();
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
