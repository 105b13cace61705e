//! The Normal-Wishart hyperprior of one side's rows and draws from its
//! posterior given the rows (Salakhutdinov & Mnih 2008, eq. 14).
//!
//! Hyperprior: μ₀ = 0, β₀ = 2, ν₀ = d, W₀ = I, the paper's choice. Given N
//! rows with mean x̄ and scatter S = Σ(x − x̄)(x − x̄)ᵀ, the posterior is
//! β* = β₀ + N, ν* = ν₀ + N, μ* = N·x̄/β*,
//! W*⁻¹ = W₀⁻¹ + S + (β₀N/β*)·x̄x̄ᵀ; then Λ ~ Wishart(W*, ν*) and
//! μ ~ N(μ*, (β*Λ)⁻¹). Everything here is f64, sequential and a fixed
//! function of its input and the generator, so every run draws the same
//! prior.

use rayon::prelude::*;

use crate::linalg::solve_lower_transposed;
use crate::rng::SplitMix64;
use crate::side::Factors;
use crate::solve::RowPrior;

/// β₀ of the hyperprior: the weight of its mean μ₀ = 0, in rows.
pub const BETA0: f64 = 2.0;

/// Rows per partial sum of [`RowMoments::of`]: the partial sums are added in
/// this fixed order, so the moments do not depend on the thread count.
const ROWS_PER_PARTIAL: usize = 1024;

/// Count, sum and sum of outer products of a side's rows x = [factors; bias].
#[derive(Debug, Clone, PartialEq)]
pub struct RowMoments {
    pub dim: usize,
    pub count: usize,
    pub sum: Vec<f64>,
    /// Σxxᵀ, d×d, column-major (symmetric).
    pub outer: Vec<f64>,
}

impl RowMoments {
    /// The moments of `f`'s rows, with the bias as the last coordinate
    /// when `f` has biases.
    pub fn of(f: &Factors) -> RowMoments {
        let k = f.k();
        let biased = !f.bias.is_empty();
        let d = k + usize::from(biased);
        let n = f.n_rows();
        let partials: Vec<(Vec<f64>, Vec<f64>)> = (0..n.div_ceil(ROWS_PER_PARTIAL))
            .into_par_iter()
            .map(|c| {
                let mut sum = vec![0f64; d];
                let mut outer = vec![0f64; d * d];
                let mut x = vec![0f64; d];
                for r in c * ROWS_PER_PARTIAL..((c + 1) * ROWS_PER_PARTIAL).min(n) {
                    for (xv, &v) in x.iter_mut().zip(f.row(r)) {
                        *xv = v as f64;
                    }
                    if biased {
                        x[k] = f.bias[r] as f64;
                    }
                    for (j, &xj) in x.iter().enumerate() {
                        sum[j] += xj;
                        for (o, &xi) in outer[j * d..(j + 1) * d].iter_mut().zip(&x) {
                            *o += xi * xj;
                        }
                    }
                }
                (sum, outer)
            })
            .collect();
        let mut m = RowMoments {
            dim: d,
            count: n,
            sum: vec![0f64; d],
            outer: vec![0f64; d * d],
        };
        for (sum, outer) in partials {
            m.sum.iter_mut().zip(&sum).for_each(|(a, b)| *a += b);
            m.outer.iter_mut().zip(&outer).for_each(|(a, b)| *a += b);
        }
        m
    }
}

/// The Normal-Wishart posterior of the rows' prior given their moments.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalWishart {
    /// μ*: the mean of the prior's mean.
    pub mean: Vec<f64>,
    /// β*: the precision of the prior's mean, in units of Λ.
    pub beta: f64,
    /// ν*: the Wishart's degrees of freedom.
    pub dof: f64,
    /// W*⁻¹, d×d, column-major.
    pub scale_inverse: Vec<f64>,
}

impl NormalWishart {
    /// The posterior given `m`, under the hyperprior μ₀ = 0, β₀, ν₀ = d, W₀ = I.
    pub fn posterior(m: &RowMoments) -> NormalWishart {
        let d = m.dim;
        let n = m.count as f64;
        let xbar: Vec<f64> = m.sum.iter().map(|s| if m.count > 0 { s / n } else { 0.0 }).collect();
        let beta = BETA0 + n;
        // W*⁻¹ = I + (Σxxᵀ − N·x̄x̄ᵀ) + (β₀N/β*)·x̄x̄ᵀ.
        let shrink = BETA0 * n / beta - n;
        let mut w_inv = m.outer.clone();
        for j in 0..d {
            for i in 0..d {
                w_inv[i + j * d] += shrink * xbar[i] * xbar[j];
            }
            w_inv[j + j * d] += 1.0;
        }
        NormalWishart {
            mean: xbar.iter().map(|x| n * x / beta).collect(),
            beta,
            dof: d as f64 + n,
            scale_inverse: w_inv,
        }
    }
}

/// Draw the rows' prior (Λ, μ) from the Normal-Wishart posterior given
/// `m`, returned as the [`RowPrior`] the row sampler takes (Λ and Λμ).
pub fn sample_row_prior(m: &RowMoments, rng: &mut SplitMix64) -> RowPrior {
    let d = m.dim;
    let post = NormalWishart::posterior(m);
    let precision = sample_wishart(&post.scale_inverse, post.dof, d, rng);
    // μ = μ* + (β*Λ)^(-1/2)·ξ, through Λ = LLᵀ: μ* + L⁻ᵀξ/√β*.
    let l = cholesky_lower(&precision, d);
    let mut xi: Vec<f64> = (0..d).map(|_| rng.next_normal()).collect();
    solve_lower_transposed(&l, d, &mut xi, d);
    let mean: Vec<f64> = (0..d).map(|i| post.mean[i] + xi[i] / post.beta.sqrt()).collect();
    let precision_mean = (0..d).map(|i| (0..d).map(|j| precision[i + j * d] * mean[j]).sum()).collect();
    RowPrior {
        dim: d,
        precision,
        precision_mean,
    }
}

/// A draw of Wishart(W, ν) given W⁻¹ (d×d, column-major), by Bartlett's
/// decomposition: with W⁻¹ = UUᵀ, W = CCᵀ for C = U⁻ᵀ, and the draw is
/// CAAᵀCᵀ for A lower triangular with Aᵢᵢ² ~ χ²(ν − i) and Aᵢⱼ ~ N(0, 1).
fn sample_wishart(w_inv: &[f64], dof: f64, d: usize, rng: &mut SplitMix64) -> Vec<f64> {
    let u = cholesky_lower(w_inv, d);
    let mut a = vec![0f64; d * d];
    for i in 0..d {
        a[i + i * d] = (2.0 * sample_gamma((dof - i as f64) / 2.0, rng)).sqrt();
        for j in 0..i {
            a[i + j * d] = rng.next_normal();
        }
    }
    // B = U⁻ᵀA, column by column; the draw is BBᵀ.
    for j in 0..d {
        solve_lower_transposed(&u, d, &mut a[j * d..(j + 1) * d], d);
    }
    let mut w = vec![0f64; d * d];
    for j in 0..d {
        for i in j..d {
            let v: f64 = (0..d).map(|t| a[i + t * d] * a[j + t * d]).sum();
            w[i + j * d] = v;
            w[j + i * d] = v;
        }
    }
    w
}

/// Rejections after which [`sample_gamma`] gives up and returns the mean.
/// Marsaglia and Tsang's method accepts over 95% of its proposals, so this
/// bound is never reached in practice; it only keeps the loop finite.
const MAX_GAMMA_PROPOSALS: usize = 1000;

/// A draw of Gamma(shape, 1) (Marsaglia & Tsang 2000; shape < 1 through
/// Gamma(shape + 1)·U^(1/shape)).
pub(crate) fn sample_gamma(shape: f64, rng: &mut SplitMix64) -> f64 {
    if shape < 1.0 {
        let u = 1.0 - rng.next_f64(); // (0, 1]
        return sample_gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let dd = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * dd).sqrt();
    for _ in 0..MAX_GAMMA_PROPOSALS {
        let x = rng.next_normal();
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = 1.0 - rng.next_f64();
        if u.ln() < 0.5 * x * x + dd - dd * v + dd * v.ln() {
            return dd * v;
        }
    }
    shape
}

/// The lower Cholesky factor of symmetric positive definite `a` (d×d,
/// column-major). The matrices here are the hyperprior's (d ≤ k + 1, one
/// per half-iteration), so a plain loop serves. A pivot that is not
/// positive is clamped to a tiny one: W*⁻¹ is I plus a scatter matrix and
/// Λ a Wishart draw, positive definite unless rounding says otherwise.
fn cholesky_lower(a: &[f64], d: usize) -> Vec<f64> {
    let mut l = vec![0f64; d * d];
    for j in 0..d {
        let s: f64 = (0..j).map(|t| l[j + t * d] * l[j + t * d]).sum();
        let pivot = (a[j + j * d] - s).max(f64::MIN_POSITIVE.sqrt()).sqrt();
        l[j + j * d] = pivot;
        for i in j + 1..d {
            let s: f64 = (0..j).map(|t| l[i + t * d] * l[j + t * d]).sum();
            l[i + j * d] = (a[i + j * d] - s) / pivot;
        }
    }
    l
}

#[cfg(test)]
mod tests;
