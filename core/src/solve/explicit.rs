//! Explicit ratings: one ridge regression per row, solved by Cholesky.

use multiversion::multiversion;

use super::{FixedSide, RowScratch, SolveParams, GATHER_CHUNK};
use crate::linalg::normal_ld;
use crate::linalg::rows_ops::{prefetch_row, GATHER_AHEAD};
use crate::linalg::syrk::{panel_width, syrk_lower_add, syrk_lower_set};

/// Row unknowns [pᵤ; bᵤ] against features [qᵢ; 1] and targets rᵤᵢ − μ − bᵢ
/// (without biases: pᵤ against qᵢ and rᵤᵢ): the row's ridge system, λ on
/// the diagonal, in `s.a` and `s.b`. Returns d, or `None` for a row without
/// ratings, whose answer is 0: every λ > 0 gives 0, and count scaling would
/// leave the system without any term at all (λ·0). Only matrices handed
/// over whole (Python's CSR) have such rows; loaded files never do.
#[allow(clippy::too_many_arguments)]
pub(super) fn ridge_system(
    p: &SolveParams,
    biased: bool,
    global_mean: f32,
    cols: &[u32],
    vals: &[f32],
    fixed: &FixedSide,
    s: &mut RowScratch,
) -> Option<usize> {
    if cols.is_empty() {
        return None;
    }
    let d = normal_equations(p, biased, global_mean, cols, vals, fixed, s);
    s.add_ridge(d, p.row_lambda(cols.len(), fixed.total_rows));
    Some(d)
}

/// The row's normal equations without λ: the lower triangle of ZᵀZ in `s.a`
/// (column-major, leading dimension `normal_ld(d)`) and Zᵀt in `s.b`, for
/// features Z = [qᵢ; 1] (biased) or qᵢ and targets t as [`solve_row`] says.
/// Returns d. The Gibbs sampler adds its prior to these same equations.
pub(crate) fn normal_equations(
    p: &SolveParams,
    biased: bool,
    global_mean: f32,
    cols: &[u32],
    vals: &[f32],
    fixed: &FixedSide,
    s: &mut RowScratch,
) -> usize {
    let k = p.factors;
    let d = p.dim();
    let w = panel_width(k);
    let ld = normal_ld(d);
    // The lower triangle is all the solve reads: the first panel sets it
    // (the matrix is never zeroed whole), the later ones add to it.
    if cols.is_empty() {
        syrk_lower_set(&[], 0, w, k, &mut s.g32, &mut s.a[..d * ld], ld);
    }
    s.b[..d].fill(0.0);
    s.colsum[..k].fill(0.0);
    for (chunk, (cc, cv)) in cols.chunks(GATHER_CHUNK).zip(vals.chunks(GATHER_CHUNK)).enumerate() {
        let n = cc.len();
        gather(
            cc,
            cv,
            fixed,
            k,
            biased,
            global_mean,
            w,
            &mut s.panel[..n * w],
            &mut s.b[..d],
            &mut s.colsum[..k],
        );
        match chunk {
            0 => syrk_lower_set(&s.panel[..n * w], n, w, k, &mut s.g32, &mut s.a[..d * ld], ld),
            _ => syrk_lower_add(&s.panel[..n * w], n, w, k, &mut s.g32, &mut s.a[..d * ld], ld),
        }
    }
    if biased {
        // The bias feature is the constant 1: its Gram row is the column
        // sums and the count, which the gather has (no multiplies needed).
        for (j, &v) in s.colsum[..k].iter().enumerate() {
            s.a[k + j * ld] = v;
        }
        s.a[k + k * ld] = cols.len() as f64;
    }
    d
}

/// Fill the row-major panel (row j: qᵢ, `w` floats apart), add Xᵀt to `b`
/// (its entry k: Σt, for the bias) and, for biased models, Σqᵢ to `colsum`.
#[multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn gather(
    cols: &[u32],
    vals: &[f32],
    fixed: &FixedSide,
    k: usize,
    biased: bool,
    mu: f32,
    w: usize,
    x: &mut [f32],
    b: &mut [f64],
    colsum: &mut [f64],
) {
    for (j, ((&c, &r), dst)) in cols.iter().zip(vals).zip(x.chunks_exact_mut(w)).enumerate() {
        // The rows are scattered over the fixed side (at 10M ratings, tens
        // of MB): ask for a later row's lines while this one is copied.
        if let Some(&ahead) = cols.get(j + GATHER_AHEAD) {
            prefetch_row(fixed.factors, ahead as usize * k, k);
        }
        let row = &fixed.factors[c as usize * k..(c as usize + 1) * k];
        let t = if biased {
            r as f64 - mu as f64 - fixed.bias[c as usize] as f64
        } else {
            r as f64
        };
        // Copied in the loop that reads it anyway. `v + 0.0` is not a plain
        // copy to the compiler (it turns -0 into +0), so the store is not
        // split off into a memcpy call per row, which cost 13% at 100M
        // ratings; the Gram is the same (its f32 sums start at +0, which a
        // zero of either sign leaves alone).
        for ((bf, xf), &v) in b.iter_mut().zip(&mut dst[..k]).zip(row) {
            *xf = v + 0.0;
            *bf += t * v as f64;
        }
        if biased {
            for (sf, &v) in colsum.iter_mut().zip(row) {
                *sf += v as f64;
            }
            b[k] += t;
        }
    }
}
