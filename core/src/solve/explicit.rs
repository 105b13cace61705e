//! Explicit ratings: one ridge regression per row, solved by Cholesky.

use multiversion::multiversion;

use super::{FixedSide, RowScratch, SolveParams, GATHER_CHUNK};
use crate::linalg::NotPositiveDefinite;

/// Row unknowns [pᵤ; bᵤ] against features [qᵢ; 1] and targets rᵤᵢ − μ − bᵢ
/// (without biases: pᵤ against qᵢ and rᵤᵢ). Normal equations in f64.
#[allow(clippy::too_many_arguments)]
pub(super) fn solve_row(
    p: &SolveParams,
    biased: bool,
    global_mean: f32,
    cols: &[u32],
    vals: &[f32],
    fixed: &FixedSide,
    s: &mut RowScratch,
    out: &mut [f32],
    out_bias: &mut f32,
) -> Result<(), NotPositiveDefinite> {
    let k = p.factors;
    let d = p.dim();
    s.a[..d * d].fill(0.0);
    s.b[..d].fill(0.0);
    for (cc, cv) in cols.chunks(GATHER_CHUNK).zip(vals.chunks(GATHER_CHUNK)) {
        let n = cc.len();
        gather(cc, cv, fixed, k, biased, global_mean, &mut s.x32[..n * d], &mut s.b[..d]);
        s.dense.gram_add_f32(&s.x32[..n * d], n, d, &mut s.g32, &mut s.a[..d * d]);
    }
    let lam = p.row_lambda(cols.len());
    for c in 0..d {
        s.a[c * d + c] += lam;
    }
    s.dense.cholesky_solve(&mut s.a[..d * d], &mut s.b[..d], d)?;
    for (o, v) in out.iter_mut().zip(&s.b[..k]) {
        *o = *v as f32;
    }
    *out_bias = if biased { s.b[k] as f32 } else { 0.0 };
    Ok(())
}

/// Fill the column-major feature block and add Xᵀt to `b`.
#[multiversion(targets("x86_64+avx+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn gather(cols: &[u32], vals: &[f32], fixed: &FixedSide, k: usize, biased: bool, mu: f32, x: &mut [f32], b: &mut [f64]) {
    let n = cols.len();
    for (j, (&c, &r)) in cols.iter().zip(vals).enumerate() {
        let row = &fixed.factors[c as usize * k..(c as usize + 1) * k];
        let t = if biased {
            r as f64 - mu as f64 - fixed.bias[c as usize] as f64
        } else {
            r as f64
        };
        for (f, &v) in row.iter().enumerate() {
            x[j + f * n] = v;
            b[f] += t * v as f64;
        }
        if biased {
            x[j + k * n] = 1.0;
            b[k] += t;
        }
    }
}
