//! Dense kernels of the row solvers, behind one small backend switch.
//!
//! Every row solve needs two dense operations: the Gram matrix of the
//! gathered fixed-side rows (XᵀX, in f64 as Spark does) and a Cholesky
//! solve. The default backend is faer (pure Rust, no system library); the
//! `lapack` feature adds ndarray-linalg over the system LAPACK. Both give
//! the same factors up to rounding (tested).

pub mod batched_cholesky;
mod faer_backend;
#[cfg(feature = "lapack")]
mod lapack_backend;
pub(crate) mod rows_ops;
pub(crate) mod simd_path;
mod small_cholesky;
pub(crate) mod sym_rows;
pub mod syrk;
pub(crate) mod vec;

use serde::{Deserialize, Serialize};

/// Which implementation runs the dense kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Faer,
    /// ndarray-linalg over LAPACK (needs the `lapack` cargo feature).
    Lapack,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "faer" => Ok(Self::Faer),
            "lapack" if cfg!(feature = "lapack") => Ok(Self::Lapack),
            "lapack" => Err("backend 'lapack' needs a build with `--features lapack`".into()),
            _ => Err(format!("unknown backend '{s}' (faer, lapack)")),
        }
    }
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Faer => "faer",
            Backend::Lapack => "lapack",
        }
    }

    /// The backend this build runs for `self`: a model or a message may name
    /// a backend another build was compiled with (it is a training-time speed
    /// choice, not part of the model), so a missing one falls back to faer.
    pub fn effective(self) -> Backend {
        match self {
            Backend::Lapack if !cfg!(feature = "lapack") => {
                tracing::debug!("backend 'lapack' is not in this build; using faer");
                Backend::Faer
            }
            b => b,
        }
    }

    /// Backends this build can run.
    pub fn available() -> Vec<Backend> {
        if cfg!(feature = "lapack") {
            vec![Backend::Faer, Backend::Lapack]
        } else {
            vec![Backend::Faer]
        }
    }
}

/// The normal matrix was not positive definite (λ = 0 with too few ratings, or non-finite input).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error(
    "normal equations are not positive definite (pivot {pivot}): the regularization lambda is 0 or too small for a row with few ratings"
)]
pub struct NotPositiveDefinite {
    pub pivot: usize,
}

/// The kernels this build has: a [`Backend`] resolved by [`Backend::effective`],
/// so no value read from a file or a message can name a missing one.
#[derive(Debug, Clone, Copy)]
enum Kernels {
    Faer,
    #[cfg(feature = "lapack")]
    Lapack,
}

impl From<Backend> for Kernels {
    fn from(b: Backend) -> Self {
        match b.effective() {
            #[cfg(feature = "lapack")]
            Backend::Lapack => Kernels::Lapack,
            _ => Kernels::Faer,
        }
    }
}

/// The leading dimension the row solvers give a d×d normal matrix: room
/// for the right-hand side as row d (see [`DenseScratch::cholesky_solve`]),
/// in whole f64 vectors so the Cholesky kernel needs no remainder loops.
pub fn normal_ld(d: usize) -> usize {
    (d + 1).div_ceil(8) * 8
}

/// `z ← L⁻ᵀz` for L lower triangular (d×d, column-major with leading
/// dimension `ld`; the upper triangle is not read): the back substitution
/// that turns standard normals z into a draw with covariance (LLᵀ)⁻¹.
pub(crate) fn solve_lower_transposed(l: &[f64], ld: usize, z: &mut [f64], d: usize) {
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|t| l[t + i * ld] * z[t]).sum();
        z[i] = (z[i] - s) / l[i + i * ld];
    }
}

/// Per-thread scratch space of the dense kernels, allocated once and reused for every row.
pub struct DenseScratch {
    kernels: Kernels,
    faer: faer_backend::Scratch,
}

impl DenseScratch {
    pub fn new(backend: Backend, max_dim: usize) -> Self {
        Self {
            kernels: backend.into(),
            faer: faer_backend::Scratch::new(max_dim),
        }
    }

    /// The lower triangle of `a (d×d, column-major) += xᵀx` for `x` (n×d,
    /// column-major); the upper triangle may or may not be updated.
    pub fn gram_add(&mut self, x: &[f64], n: usize, d: usize, a: &mut [f64]) {
        match self.kernels {
            Kernels::Faer => faer_backend::gram_add(x, n, d, a),
            #[cfg(feature = "lapack")]
            Kernels::Lapack => lapack_backend::gram_add(x, n, d, a),
        }
    }

    /// Whether d×d systems go to the batched kernel ([`batched_cholesky`]):
    /// on the default backend, up to its size limit, where the CPU has
    /// hardware FMA ([`batched_cholesky::is_fast`]; without it the batch is
    /// slower than one system at a time, and the bits differ from FMA CPUs'
    /// in the last place). The `lapack` backend keeps its one-system LAPACK
    /// solve.
    pub fn batches(&self, d: usize) -> bool {
        matches!(self.kernels, Kernels::Faer) && d <= batched_cholesky::MAX_DIM && batched_cholesky::is_fast()
    }

    /// `b ← a⁻¹b` for symmetric positive definite `a` (d×d, column-major
    /// with leading dimension `ld ≥ d`; only the lower triangle is read).
    /// Every backend leaves the Cholesky factor L (A = LLᵀ) in the lower
    /// triangle of `a`, which the Gibbs sampler draws with; the rest of `a`
    /// is overwritten. With `ld > d` (as [`normal_ld`] gives), rows d and
    /// below of `a` are scratch the fast kernel uses.
    pub fn cholesky_solve(&mut self, a: &mut [f64], ld: usize, b: &mut [f64], d: usize) -> Result<(), NotPositiveDefinite> {
        assert!(
            ld >= d && a.len() >= d * ld && b.len() >= d,
            "cholesky_solve: matrix or rhs too small"
        );
        match self.kernels {
            Kernels::Faer => self.faer.cholesky_solve(a, ld, b, d),
            #[cfg(feature = "lapack")]
            Kernels::Lapack => lapack_backend::cholesky_solve(a, ld, b, d),
        }
    }
}

/// XᵀX + ridge·I (d×d, column-major, both triangles) for an n×d X of
/// standard normals drawn from `rng`: a random SPD matrix for the tests.
#[cfg(test)]
pub(crate) fn random_spd(rng: &mut crate::rng::SplitMix64, n: usize, d: usize, ridge: f64) -> Vec<f64> {
    let x: Vec<f64> = (0..n * d).map(|_| rng.next_normal()).collect();
    let mut a = vec![0.0; d * d];
    for j in 0..d {
        for i in 0..d {
            a[i + j * d] = (0..n).map(|r| x[r + i * n] * x[r + j * n]).sum::<f64>() + if i == j { ridge } else { 0.0 };
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Textbook Cholesky–Banachiewicz, written independently of both backends.
    fn reference_solve(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
        let mut l = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..=i {
                let mut s = a[i + j * d];
                for k in 0..j {
                    s -= l[i * d + k] * l[j * d + k];
                }
                l[i * d + j] = if i == j { s.sqrt() } else { s / l[j * d + j] };
            }
        }
        let mut y = vec![0.0; d];
        for i in 0..d {
            let s: f64 = (0..i).map(|k| l[i * d + k] * y[k]).sum();
            y[i] = (b[i] - s) / l[i * d + i];
        }
        let mut x = vec![0.0; d];
        for i in (0..d).rev() {
            let s: f64 = (i + 1..d).map(|k| l[k * d + i] * x[k]).sum();
            x[i] = (y[i] - s) / l[i * d + i];
        }
        x
    }

    #[test]
    fn gram_and_solve_match_reference() {
        let mut rng = SplitMix64::new(3);
        for &(n, d) in &[(1usize, 1usize), (5, 3), (40, 17), (200, 65)] {
            let x: Vec<f64> = (0..n * d).map(|_| rng.next_normal()).collect();
            let b: Vec<f64> = (0..d).map(|_| rng.next_normal()).collect();
            for backend in Backend::available() {
                let mut s = DenseScratch::new(backend, d);
                let mut a = vec![0.0; d * d];
                for i in 0..d {
                    a[i + i * d] = 0.5;
                }
                s.gram_add(&x, n, d, &mut a);
                for j in 0..d {
                    for i in j..d {
                        let want: f64 = (0..n).map(|r| x[r + i * n] * x[r + j * n]).sum::<f64>() + if i == j { 0.5 } else { 0.0 };
                        assert!((a[i + j * d] - want).abs() < 1e-9 * (1.0 + want.abs()), "{backend:?} gram");
                    }
                }
                // The solve reads the lower triangle; the reference reads all of it.
                for j in 0..d {
                    for i in j + 1..d {
                        a[j + i * d] = a[i + j * d];
                    }
                }
                let want = reference_solve(&a, &b, d);
                let mut got = b.clone();
                s.cholesky_solve(&mut a.clone(), d, &mut got, d).unwrap();
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() < 1e-8 * (1.0 + w.abs()), "{backend:?}: {g} vs {w}");
                }
            }
        }
    }

    /// Every backend leaves L with LLᵀ = A in the lower triangle, padded or
    /// not, on the small kernel's sizes and past them.
    #[test]
    fn the_solve_leaves_the_cholesky_factor() {
        let mut rng = SplitMix64::new(12);
        for d in [3usize, 17, 300] {
            let full = random_spd(&mut rng, d + 5, d, 1.0);
            for backend in Backend::available() {
                for ld in [d, normal_ld(d)] {
                    let mut a = vec![0.0; d * ld];
                    for j in 0..d {
                        a[j * ld..j * ld + d].copy_from_slice(&full[j * d..(j + 1) * d]);
                    }
                    let mut b = vec![1.0; d];
                    DenseScratch::new(backend, d).cholesky_solve(&mut a, ld, &mut b, d).unwrap();
                    for j in 0..d {
                        for i in j..d {
                            let llt: f64 = (0..=j).map(|t| a[i + t * ld] * a[j + t * ld]).sum();
                            let want = full[i + j * d];
                            assert!(
                                (llt - want).abs() < 1e-9 * (1.0 + want.abs()),
                                "{backend:?} d {d} ld {ld} ({i}, {j})"
                            );
                        }
                    }
                }
            }
        }
    }

    /// A backend named by a file this build lacks runs on faer instead of panicking.
    #[test]
    fn every_backend_name_runs_in_every_build() {
        for backend in [Backend::Faer, Backend::Lapack] {
            assert!(Backend::available().contains(&backend.effective()));
            let mut s = DenseScratch::new(backend, 2);
            let mut a = vec![0.0; 4];
            s.gram_add(&[1.0, 0.0, 0.0, 1.0], 2, 2, &mut a);
            assert_eq!(a, vec![1.0, 0.0, 0.0, 1.0]);
            let mut b = vec![2.0, 3.0];
            s.cholesky_solve(&mut a, 2, &mut b, 2).unwrap();
            assert_eq!(b, vec![2.0, 3.0]);
        }
    }

    #[test]
    fn indefinite_matrix_is_reported() {
        for backend in Backend::available() {
            let mut s = DenseScratch::new(backend, 2);
            let mut a = vec![1.0, 2.0, 2.0, 1.0];
            let mut b = vec![1.0, 1.0];
            assert!(s.cholesky_solve(&mut a, 2, &mut b, 2).is_err(), "{backend:?}");
        }
    }
}
