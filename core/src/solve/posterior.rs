//! Gibbs draws of explicit rows: each row from its Gaussian conditional
//! given the fixed side, a Gaussian prior and the noise precision
//! (Salakhutdinov & Mnih 2008, Bayesian PMF).
//!
//! The conditional of a row x with features Z (its fixed rows, plus the
//! constant 1 for the bias) and targets t is N(A⁻¹b, A⁻¹) with
//! A = α·ZᵀZ + Λ and b = α·Zᵀt + Λμ: the ridge normal equations of
//! [`super::explicit`] with the prior in place of λ·I. The draw is the
//! mean plus L⁻ᵀz for A = LLᵀ and z standard normal, so it costs one
//! triangular solve more than the ALS row.

use super::{explicit, run_row_tasks, CheckedFixed, Feedback, FixedSide, RowScratch, RowsView, SolveError, SolveParams, ROWS_PER_TASK};
use crate::linalg::{normal_ld, solve_lower_transposed};
use crate::rng::{splitmix64_nth, SplitMix64};

/// The Gaussian prior every row of one side shares in one half-iteration:
/// precision Λ (d×d, symmetric, column-major) and Λμ, with d = k (+1 for
/// the bias of biased models).
#[derive(Debug, Clone, PartialEq)]
pub struct RowPrior {
    pub dim: usize,
    pub precision: Vec<f64>,
    pub precision_mean: Vec<f64>,
}

/// The standard normals of row `row`'s draw under `seed`: a stream of its
/// own, so a row's draw does not depend on which task or thread draws it.
pub(crate) fn row_normals(seed: u64, row: u64, out: &mut [f64]) {
    let mut rng = SplitMix64::new(splitmix64_nth(seed, row));
    for z in out {
        *z = rng.next_normal();
    }
}

/// Draw every row of `rows` (explicit ratings) from its conditional given
/// `fixed`, `prior` and the noise precision α, into `out` (row r's factors at
/// `out[r*k..(r+1)*k]`) and, for biased models, `out_bias`. Row r of the
/// view draws with the normals of row `first_row + r` under `seed`.
#[allow(clippy::too_many_arguments)]
pub fn sample_rows(
    p: &SolveParams,
    prior: &RowPrior,
    noise_precision: f64,
    rows: RowsView,
    fixed: FixedSide,
    seed: u64,
    first_row: u64,
    out: &mut [f32],
    out_bias: Option<&mut [f32]>,
) -> Result<(), SolveError> {
    let Feedback::Explicit { biased, global_mean } = p.feedback else {
        return Err(SolveError::Invalid("Gibbs sampling applies to explicit ratings only".into()));
    };
    let k = p.factors;
    let d = p.dim();
    if prior.dim != d || prior.precision.len() != d * d || prior.precision_mean.len() != d {
        return Err(SolveError::Invalid(format!(
            "the row prior has dimension {}, the rows {d}",
            prior.dim
        )));
    }
    if !(noise_precision.is_finite() && noise_precision > 0.0) {
        return Err(SolveError::Invalid(format!("noise precision must be > 0, got {noise_precision}")));
    }
    let checked = CheckedFixed::new(p, fixed, None)?;
    super::validate_rows(p, &rows, &checked, out.len(), out_bias.as_ref().map(|b| b.len()))?;
    let ld = normal_ld(d);
    run_row_tasks(
        k,
        out,
        out_bias,
        || (RowScratch::new(p, d), vec![0f64; d]),
        |(s, z), task, out_rows, bias_rows| {
            let first = task * ROWS_PER_TASK;
            for (j, (x, b)) in out_rows.chunks_mut(k).zip(bias_rows.iter_mut()).enumerate() {
                let r = first + j;
                let (cols, vals) = rows.row(r);
                explicit::normal_equations(p, biased, global_mean, cols, vals, &fixed, s);
                for c in 0..d {
                    for i in c..d {
                        s.a[i + c * ld] = noise_precision * s.a[i + c * ld] + prior.precision[i + c * d];
                    }
                    s.b[c] = noise_precision * s.b[c] + prior.precision_mean[c];
                }
                if let Err(cause) = s.dense.cholesky_solve(&mut s.a[..d * ld], ld, &mut s.b[..d], d) {
                    return Some(SolveError::NotPositiveDefinite { row: r, cause });
                }
                // s.b is the mean and the lower triangle of s.a is L: add L⁻ᵀz.
                row_normals(seed, first_row + r as u64, z);
                solve_lower_transposed(&s.a[..d * ld], ld, z, d);
                for (o, (m, e)) in x.iter_mut().zip(s.b[..k].iter().zip(&z[..k])) {
                    *o = (m + e) as f32;
                }
                *b = if biased { (s.b[k] + z[k]) as f32 } else { 0.0 };
            }
            None
        },
    )
}

#[cfg(test)]
mod tests;
