//! iALS++ (Rendle, Krichene, Zhang & Koren 2021, "iALS++: Speeding up
//! Matrix Factorization with Subspace Optimization"): a row is improved one
//! block of b coordinates at a time, each block solved exactly with the
//! others held, from the row's current factors.
//!
//! A row's loss under either implicit loss is
//! L(x) = Σ_observed (e·sᵢ² − 2t·sᵢ) + s·xᵀ(YᵀY)x + λ‖x‖², sᵢ = yᵢᵀx
//! (the (e, t) and s of [`ImplicitWeights`]). Over a block B it is a
//! quadratic whose exact minimizer is x_B + δ with
//! (s·G_BB + λI + Σ e·yᵢ_B yᵢ_Bᵀ) δ = −(s·(Gx)_B + λx_B + Σ (e·sᵢ − t)·yᵢ_B).
//! Keeping every sᵢ and Gx current, a block costs n·b² + b³/3 + (n + k)·b
//! instead of the full solve's n·k² + k³/3, so a sweep over all k/b blocks
//! costs n·k·b + k·b²: linear in k for a fixed b. Each block step is an exact
//! minimization, so the loss never increases, and repeated sweeps converge
//! to the Cholesky solution.

use super::{FixedSide, ImplicitWeights, RowScratch, SolveParams, GATHER_CHUNK};
use crate::linalg::syrk::{panel_width, syrk_lower_add};
use crate::linalg::vec::{dot_f32_f64, dot_f64};
use crate::linalg::{normal_ld, NotPositiveDefinite};

/// Per-row state of the block updates, reused across a thread's rows.
#[derive(Default)]
pub(crate) struct SubspaceScratch {
    /// The row's factors in f64 while it is being improved.
    x: Vec<f64>,
    /// s·(YᵀY)x, kept current as blocks move.
    gx: Vec<f64>,
    /// sᵢ = yᵢᵀx per observed item, kept current.
    pred: Vec<f64>,
    /// e and t per observed item.
    extra: Vec<f64>,
    target: Vec<f64>,
}

/// `sweeps` passes over the coordinate blocks of one row, from its factors
/// in `out`; `gram` is s·YᵀY (k×k, scaled by the loss).
#[allow(clippy::too_many_arguments)]
pub(super) fn solve_row_subspace(
    p: &SolveParams,
    weights: ImplicitWeights,
    block: usize,
    sweeps: usize,
    cols: &[u32],
    vals: &[f32],
    fixed: &FixedSide,
    gram: &[f64],
    s: &mut RowScratch,
    out: &mut [f32],
) -> Result<(), NotPositiveDefinite> {
    let k = p.factors;
    let lam = p.row_lambda(cols.len(), fixed.total_rows);
    let y = |c: u32| &fixed.factors[c as usize * k..(c as usize + 1) * k];
    let sub = s.subspace.get_or_insert_with(SubspaceScratch::default);
    sub.x.clear();
    sub.x.extend(out.iter().map(|&v| v as f64));
    sub.gx.clear();
    sub.gx.extend(gram.chunks_exact(k).map(|row| dot_f64(row, &sub.x)));
    sub.extra.clear();
    sub.target.clear();
    sub.pred.clear();
    for (&c, &r) in cols.iter().zip(vals) {
        let (e, t) = weights.observed_f64(r);
        sub.extra.push(e);
        sub.target.push(t);
        sub.pred.push(dot_f32_f64(y(c), out));
    }
    for _ in 0..sweeps {
        for start in (0..k).step_by(block) {
            let b = block.min(k - start);
            let (ld, w) = (normal_ld(b), panel_width(b));
            let end = start + b;
            // The block's Hessian (lower triangle, column-major) and minus its gradient.
            for j in 0..b {
                for i in j..b {
                    s.a[i + j * ld] = gram[(start + i) * k + start + j];
                }
                s.a[j + j * ld] += lam;
                s.b[j] = -(sub.gx[start + j] + lam * sub.x[start + j]);
            }
            for (chunk, first) in cols.chunks(GATHER_CHUNK).zip((0..).step_by(GATHER_CHUNK)) {
                let n = chunk.len();
                for (j, (&c, dst)) in chunk.iter().zip(s.panel.chunks_exact_mut(w)).enumerate() {
                    let at = first + j;
                    let (e, coef) = (sub.extra[at], sub.target[at] - sub.extra[at] * sub.pred[at]);
                    let wt = e.sqrt();
                    for ((d, bf), &v) in dst[..b].iter_mut().zip(&mut s.b[..b]).zip(&y(c)[start..end]) {
                        *d = (wt * v as f64) as f32;
                        *bf += coef * v as f64;
                    }
                }
                syrk_lower_add(&s.panel[..n * w], n, w, b, &mut s.g32, &mut s.a[..b * ld], ld);
            }
            s.dense.cholesky_solve(&mut s.a[..b * ld], ld, &mut s.b[..b], b)?;
            let delta = &s.b[..b];
            for (xi, d) in sub.x[start..end].iter_mut().zip(delta) {
                *xi += d;
            }
            for (pi, &c) in sub.pred.iter_mut().zip(cols) {
                *pi += y(c)[start..end].iter().zip(delta).map(|(&v, d)| v as f64 * d).sum::<f64>();
            }
            // Gx += s·G[:, B] δ (G is symmetric: row a's entries B).
            for (gxa, row) in sub.gx.iter_mut().zip(gram.chunks_exact(k)) {
                *gxa += dot_f64(&row[start..end], delta);
            }
        }
    }
    for (o, v) in out.iter_mut().zip(&sub.x) {
        *o = *v as f32;
    }
    Ok(())
}
