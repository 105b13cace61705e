//! # als-bench
//!
//! Workloads shared by the criterion benches (`benches/kernels.rs`) and the
//! `kernel_gflops` binary, so both time exactly the same calls on the same
//! data and count the same floating-point operations.
//!
//! A [`Kernel`] owns its inputs and a closure that runs one call of the
//! kernel; [`Kernel::flops`] is the number of floating-point operations of
//! one call (multiply and add counted separately), from the formulas in
//! [`flops`]. GFLOP/s = flops / seconds per call / 1e9.

use std::hint::black_box;
use std::sync::Arc;

use als_core::linalg::{Backend, DenseScratch};
use als_core::rng::SplitMix64;
use als_core::solve::{
    block_gram, solve_rows, Confidence, Feedback, FixedSide, ImplicitLoss, RegScaling, RowsView, SolveParams, SolverKind,
};

/// Floating-point operation counts (one multiply-add = 2 flops).
pub mod flops {
    /// `DenseScratch::gram_add`: the full d×d product XᵀX of an n×d block
    /// (both triangles are computed, as the backends do).
    pub fn gram_add(n: usize, d: usize) -> f64 {
        2.0 * n as f64 * (d * d) as f64
    }

    /// `DenseScratch::cholesky_solve`: factorization d³/3 plus two triangular solves 2d².
    pub fn cholesky_solve(d: usize) -> f64 {
        let d = d as f64;
        d * d * d / 3.0 + 2.0 * d * d
    }

    /// One explicit row with `n` ratings and `d` unknowns (k factors + bias):
    /// the Gram block, the right-hand side Xᵀt, the solve.
    pub fn explicit_row(n: usize, d: usize) -> f64 {
        gram_add(n, d) + 2.0 * (n * d) as f64 + cholesky_solve(d)
    }

    /// One implicit row solved exactly: the weighted Gram block, the right-hand side, the solve.
    pub fn implicit_cholesky_row(n: usize, k: usize) -> f64 {
        gram_add(n, k) + 2.0 * (n * k) as f64 + cholesky_solve(k)
    }

    /// One implicit row by `steps` CG steps (warm start): the residual and
    /// each step cost one k×k symmetric product (2k²) plus, per observed
    /// item, a dot and an axpy (4k); each step adds about 10k of vector work.
    pub fn implicit_cg_row(n: usize, k: usize, steps: usize) -> f64 {
        let (n, k, s) = (n as f64, k as f64, steps as f64);
        (s + 1.0) * (2.0 * k * k + 4.0 * n * k) + 10.0 * s * k
    }

    /// One implicit row by `sweeps` iALS++ passes over blocks of `b`
    /// coordinates: per block, the weighted Gram of the block's columns
    /// (as `gram_add` counts it), its right-hand side and the predictions' update (4n·b), the
    /// solve, and the k×b update of YᵀY·x; plus the start's YᵀY·x and
    /// predictions (2k² + 2n·k).
    pub fn implicit_ialspp_row(n: usize, k: usize, b: usize, sweeps: usize) -> f64 {
        let (nf, kf) = (n as f64, k as f64);
        let mut sweep = 0.0;
        let mut start = 0;
        while start < k {
            let bb = b.min(k - start);
            let bf = bb as f64;
            sweep += gram_add(n, bb) + 4.0 * nf * bf + cholesky_solve(bb) + 2.0 * kf * bf;
            start += bb;
        }
        2.0 * kf * kf + 2.0 * nf * kf + sweeps as f64 * sweep
    }

    /// `block_gram`: YᵀY of a rows×k matrix (full product).
    pub fn block_gram(rows: usize, k: usize) -> f64 {
        gram_add(rows, k)
    }
}

/// A block of rows to solve, in the layout `solve_rows` takes, with the fixed side it references.
pub struct Block {
    pub k: usize,
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
    /// m×k row-major fixed factors.
    pub fixed: Vec<f32>,
    /// m fixed-side biases.
    pub bias: Vec<f32>,
}

impl Block {
    /// `rows` rows with on average `mean_ratings` ratings each (uniform in
    /// [mean/2, 3·mean/2]), over `m` fixed rows with a skewed (popular-first)
    /// column distribution, ratings 1..=5, factors ~ N(0, 0.3²). Columns
    /// within a row are distinct and sorted, as in the training layout.
    pub fn synthetic(rows: usize, mean_ratings: usize, m: usize, k: usize, seed: u64) -> Block {
        let mut rng = SplitMix64::new(seed);
        let mut indptr = Vec::with_capacity(rows + 1);
        let mut indices = Vec::new();
        let mut values = Vec::new();
        indptr.push(0);
        let lo = (mean_ratings / 2).max(1);
        let span = mean_ratings.max(1);
        let mut cols: Vec<u32> = Vec::new();
        for _ in 0..rows {
            let n = (lo + (rng.next_u64() % span as u64) as usize).min(m);
            cols.clear();
            while cols.len() < n {
                while cols.len() < n {
                    // u² puts most mass on low ids: a popular head and a long tail.
                    let u = rng.next_f64();
                    cols.push(((u * u * m as f64) as usize).min(m - 1) as u32);
                }
                cols.sort_unstable();
                cols.dedup();
            }
            for &c in &cols {
                indices.push(c);
                values.push(1.0 + (rng.next_u64() % 5) as f32);
            }
            indptr.push(indices.len());
        }
        let fixed = (0..m * k).map(|_| (0.3 * rng.next_normal()) as f32).collect();
        let bias = (0..m).map(|_| (0.3 * rng.next_normal()) as f32).collect();
        Block {
            k,
            indptr,
            indices,
            values,
            fixed,
            bias,
        }
    }

    pub fn n_rows(&self) -> usize {
        self.indptr.len() - 1
    }

    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    pub fn view(&self) -> RowsView<'_> {
        RowsView {
            indptr: &self.indptr,
            indices: &self.indices,
            values: &self.values,
        }
    }

    pub fn fixed_side(&self, biased: bool) -> FixedSide<'_> {
        FixedSide {
            factors: &self.fixed,
            bias: if biased { &self.bias } else { &[] },
            total_rows: self.fixed.len() / self.k,
        }
    }

    /// Σ over rows of a per-row flop count given the row's rating count.
    pub fn sum_rows(&self, per_row: impl Fn(usize) -> f64) -> f64 {
        self.indptr.windows(2).map(|w| per_row(w[1] - w[0])).sum()
    }
}

/// One benchmarked call: a name, the backend it exercises, its flop count and the call itself.
pub struct Kernel {
    /// Kernel family, e.g. `gram_add`.
    pub group: &'static str,
    /// Size parameters, e.g. `n=64 d=65`.
    pub size: String,
    /// `faer`, `lapack`, or `vec` (the crate's own f32 SIMD loops, no backend).
    pub backend: &'static str,
    /// Floating-point operations of one call of `run`.
    pub flops: f64,
    pub run: Box<dyn FnMut()>,
}

impl Kernel {
    /// `group/backend/size`, with spaces and `=` made path-safe (a criterion id).
    pub fn id(&self) -> String {
        format!("{}/{}", self.backend, self.size.replace(' ', "_").replace('=', ""))
    }
}

/// Parameters of the realistic row-solve block.
#[derive(Debug, Clone, Copy)]
pub struct BlockShape {
    pub rows: usize,
    pub mean_ratings: usize,
    pub fixed_rows: usize,
    pub k: usize,
}

impl Default for BlockShape {
    /// 1000 rows × ~100 ratings over 20 000 fixed rows, 64 factors.
    fn default() -> Self {
        BlockShape {
            rows: 1000,
            mean_ratings: 100,
            fixed_rows: 20_000,
            k: 64,
        }
    }
}

/// Every kernel for every backend this build has (`faer`, plus `lapack`
/// with `--features lapack`). `threads` sizes the rayon pool the
/// `solve_rows` kernels run in (the dense kernels are single-threaded).
pub fn all_kernels(shape: BlockShape, threads: usize) -> Vec<Kernel> {
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("bench-{i}"))
            .build()
            .expect("rayon pool"),
    );
    let block = Arc::new(Block::synthetic(shape.rows, shape.mean_ratings, shape.fixed_rows, shape.k, 42));
    let mut out = Vec::new();
    for backend in Backend::available() {
        for n in [64usize, 256] {
            out.push(gram_add_kernel(backend, n, 65));
        }
        for d in [16usize, 64, 72, 128] {
            out.push(cholesky_kernel(backend, d));
        }
        out.push(explicit_rows_kernel(backend, block.clone(), pool.clone(), threads));
        out.push(implicit_cholesky_rows_kernel(backend, block.clone(), pool.clone(), threads));
        out.push(block_gram_kernel(backend, block.clone()));
    }
    // d = k: the solvers give the bias's row and column without the kernel.
    for (n, d) in [(64usize, 64usize), (256, 32), (256, 64), (256, 128)] {
        out.push(syrk_kernel(n, d));
    }
    for d in [16usize, 64, 72, 128] {
        out.push(cholesky_batch_kernel(d));
    }
    // CG runs on the crate's own f32 vector loops: the backend does not enter it.
    out.push(implicit_cg_rows_kernel(block, pool, threads, 3));
    out
}

fn random_f64(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.next_normal()).collect()
}

pub fn gram_add_kernel(backend: Backend, n: usize, d: usize) -> Kernel {
    let x = random_f64(n * d, 1);
    let mut a = vec![0.0f64; d * d];
    let mut s = DenseScratch::new(backend, d);
    Kernel {
        group: "gram_add",
        size: format!("n={n} d={d}"),
        backend: backend.name(),
        flops: flops::gram_add(n, d),
        run: Box::new(move || {
            s.gram_add(black_box(&x), n, d, &mut a);
            black_box(&mut a);
        }),
    }
}

/// The row solvers' f32 panel Gram (lower triangle, added into f64): the
/// same for every backend, so listed once.
pub fn syrk_kernel(n: usize, d: usize) -> Kernel {
    use als_core::linalg::normal_ld;
    use als_core::linalg::syrk::{panel_width, syrk_lower_add};
    let w = panel_width(d);
    let ld = normal_ld(d);
    let panel: Vec<f32> = random_f64(n * w, 4).into_iter().map(|v| v as f32).collect();
    let mut g = vec![0f32; w * w];
    let mut a = vec![0.0f64; ld * d];
    Kernel {
        group: "syrk_lower_add",
        size: format!("n={n} d={d}"),
        backend: "own",
        flops: flops::gram_add(n, d),
        run: Box::new(move || {
            syrk_lower_add(black_box(&panel), n, w, d, &mut g, &mut a, ld);
            black_box(&mut a);
        }),
    }
}

/// Eight systems per call through the batched kernel, each copied into its
/// lane first (as the row solvers do); flops are the eight solves'.
pub fn cholesky_batch_kernel(d: usize) -> Kernel {
    use als_core::linalg::batched_cholesky::{CholeskyBatch, LANES};
    let n = 2 * d;
    let x = random_f64(n * d, 2);
    let mut a = vec![0.0f64; d * d];
    DenseScratch::new(Backend::Faer, d).gram_add(&x, n, d, &mut a);
    for j in 0..d {
        a[j * d + j] += 0.1 * n as f64;
    }
    let b = random_f64(d, 3);
    let mut batch = CholeskyBatch::new(d);
    // Eight distinct systems in memory, as the row solvers hand over.
    let systems: Vec<(Vec<f64>, Vec<f64>)> = (0..LANES).map(|_| (a.clone(), b.clone())).collect();
    Kernel {
        group: "cholesky_batch",
        size: format!("d={d} x{LANES}"),
        backend: "own",
        flops: LANES as f64 * flops::cholesky_solve(d),
        run: Box::new(move || {
            batch.set_lanes(std::array::from_fn(|l| Some((black_box(&systems[l].0[..]), &systems[l].1[..]))), d);
            assert!(batch.solve().iter().all(Result::is_ok), "SPD");
            black_box(batch.solution(0).sum::<f64>());
        }),
    }
}

/// Each call copies the SPD matrix and the right-hand side (d² + d loads
/// and stores, not counted as flops) before the in-place solve. The matrix
/// has the solvers' padded columns (`normal_ld(d)` apart).
pub fn cholesky_kernel(backend: Backend, d: usize) -> Kernel {
    let n = 2 * d;
    let x = random_f64(n * d, 2);
    let mut dense = vec![0.0f64; d * d];
    let mut s = DenseScratch::new(backend, d);
    s.gram_add(&x, n, d, &mut dense);
    let ld = als_core::linalg::normal_ld(d);
    let mut a0 = vec![0.0f64; d * ld];
    for j in 0..d {
        a0[j * ld..j * ld + d].copy_from_slice(&dense[j * d..(j + 1) * d]);
        a0[j * ld + j] += 0.1 * n as f64;
    }
    let b0 = random_f64(d, 3);
    let (mut a, mut b) = (a0.clone(), b0.clone());
    Kernel {
        group: "cholesky_solve",
        size: format!("d={d}"),
        backend: backend.name(),
        flops: flops::cholesky_solve(d),
        run: Box::new(move || {
            a.copy_from_slice(&a0);
            b.copy_from_slice(&b0);
            s.cholesky_solve(black_box(&mut a), ld, black_box(&mut b), d).expect("SPD");
            black_box(&mut b);
        }),
    }
}

fn block_size(block: &Block, threads: usize) -> String {
    format!("rows={} nnz={} k={} threads={threads}", block.n_rows(), block.nnz(), block.k)
}

/// Biased explicit rows (k factors + bias = k+1 unknowns), λ·n scaling, Cholesky.
pub fn explicit_rows_kernel(backend: Backend, block: Arc<Block>, pool: Arc<rayon::ThreadPool>, threads: usize) -> Kernel {
    let k = block.k;
    let p = SolveParams {
        factors: k,
        lambda: 0.05,
        reg_scaling: RegScaling::Count,
        feedback: Feedback::Explicit {
            biased: true,
            global_mean: 3.5,
        },
        solver: SolverKind::Cholesky,
        backend,
    };
    let mut out = vec![0.0f32; block.n_rows() * k];
    let mut out_bias = vec![0.0f32; block.n_rows()];
    Kernel {
        group: "solve_rows_explicit",
        size: block_size(&block, threads),
        backend: backend.name(),
        flops: block.sum_rows(|n| flops::explicit_row(n, k + 1)),
        run: Box::new(move || {
            pool.install(|| solve_rows(&p, block.view(), block.fixed_side(true), None, &mut out, Some(&mut out_bias)))
                .expect("explicit solve");
            black_box(&mut out);
        }),
    }
}

fn implicit_params(k: usize, solver: SolverKind, backend: Backend) -> SolveParams {
    SolveParams {
        factors: k,
        lambda: 0.05,
        reg_scaling: RegScaling::None,
        feedback: Feedback::Implicit {
            alpha: 1.0,
            confidence: Confidence::Linear,
            loss: ImplicitLoss::Hu,
        },
        solver,
        backend,
    }
}

/// Implicit rows solved exactly (α = 1, linear confidence, plain λ).
pub fn implicit_cholesky_rows_kernel(backend: Backend, block: Arc<Block>, pool: Arc<rayon::ThreadPool>, threads: usize) -> Kernel {
    let k = block.k;
    let p = implicit_params(k, SolverKind::Cholesky, backend);
    let gram = block_gram(&block.fixed, k);
    let mut out = vec![0.0f32; block.n_rows() * k];
    Kernel {
        group: "solve_rows_implicit_cholesky",
        size: block_size(&block, threads),
        backend: backend.name(),
        flops: block.sum_rows(|n| flops::implicit_cholesky_row(n, k)),
        run: Box::new(move || {
            pool.install(|| solve_rows(&p, block.view(), block.fixed_side(false), Some(&gram), &mut out, None))
                .expect("implicit solve");
            black_box(&mut out);
        }),
    }
}

/// Implicit rows by warm-started CG; every call restarts from the same
/// initial factors (a k×rows copy, not counted) so all calls do equal work.
pub fn implicit_cg_rows_kernel(block: Arc<Block>, pool: Arc<rayon::ThreadPool>, threads: usize, steps: usize) -> Kernel {
    let k = block.k;
    let p = implicit_params(k, SolverKind::Cg { steps }, Backend::Faer);
    let gram = block_gram(&block.fixed, k);
    let mut rng = SplitMix64::new(7);
    let x0: Vec<f32> = (0..block.n_rows() * k).map(|_| (0.1 * rng.next_normal()) as f32).collect();
    let mut out = x0.clone();
    Kernel {
        group: "solve_rows_implicit_cg",
        size: format!("{} steps={steps}", block_size(&block, threads)),
        backend: "vec",
        flops: block.sum_rows(|n| flops::implicit_cg_row(n, k, steps)),
        run: Box::new(move || {
            out.copy_from_slice(&x0);
            pool.install(|| solve_rows(&p, block.view(), block.fixed_side(false), Some(&gram), &mut out, None))
                .expect("cg solve");
            black_box(&mut out);
        }),
    }
}

/// YᵀY of the block's whole fixed side (20 000 × 64 by default).
pub fn block_gram_kernel(backend: Backend, block: Arc<Block>) -> Kernel {
    let k = block.k;
    let rows = block.fixed.len() / k;
    Kernel {
        group: "block_gram",
        size: format!("rows={rows} k={k}"),
        backend: backend.name(),
        flops: flops::block_gram(rows, k),
        run: Box::new(move || {
            black_box(block_gram(black_box(&block.fixed), k));
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_block_is_well_formed() {
        let b = Block::synthetic(50, 20, 300, 8, 1);
        assert_eq!(b.n_rows(), 50);
        for w in b.indptr.windows(2) {
            let cols = &b.indices[w[0]..w[1]];
            assert!(cols.windows(2).all(|c| c[0] < c[1]), "sorted, distinct");
            assert!((10..30).contains(&cols.len()));
        }
        assert!(b.indices.iter().all(|&c| c < 300));
    }

    #[test]
    fn every_kernel_runs() {
        let shape = BlockShape {
            rows: 40,
            mean_ratings: 10,
            fixed_rows: 200,
            k: 8,
        };
        for mut kern in all_kernels(shape, 1) {
            (kern.run)();
            assert!(kern.flops > 0.0, "{}", kern.group);
        }
    }
}
