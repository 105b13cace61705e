//! Implicit feedback (Hu, Koren & Volinsky 2008): confidence-weighted least
//! squares where every unobserved pair counts with confidence 1 and
//! preference 0. YᵀY covers the unobserved pairs for all rows at once; each
//! row adds (cᵤᵢ − 1)·yᵢyᵢᵀ for its observed items only.

use multiversion::multiversion;

use super::{Confidence, FixedSide, RowScratch, SolveParams, GATHER_CHUNK};
use crate::linalg::vec::{axpy_f32, dot_f32, symv_f32};
use crate::linalg::NotPositiveDefinite;

/// Exact solve: (YᵀY + Σ(c−1)yyᵀ + λI) x = Σ c·p·y.
#[allow(clippy::too_many_arguments)]
pub(super) fn solve_row_cholesky(
    p: &SolveParams,
    alpha: f32,
    conf: Confidence,
    cols: &[u32],
    vals: &[f32],
    fixed: &FixedSide,
    gram: &[f64],
    s: &mut RowScratch,
    out: &mut [f32],
) -> Result<(), NotPositiveDefinite> {
    let k = p.factors;
    s.a[..k * k].copy_from_slice(gram);
    s.b[..k].fill(0.0);
    for (cc, cv) in cols.chunks(GATHER_CHUNK).zip(vals.chunks(GATHER_CHUNK)) {
        let n = cc.len();
        gather_weighted(cc, cv, fixed, k, alpha, conf, &mut s.x32[..n * k], &mut s.b[..k]);
        s.dense.gram_add_f32(&s.x32[..n * k], n, k, &mut s.g32, &mut s.a[..k * k]);
    }
    let lam = p.row_lambda(cols.len());
    for c in 0..k {
        s.a[c * k + c] += lam;
    }
    s.dense.cholesky_solve(&mut s.a[..k * k], &mut s.b[..k], k)?;
    for (o, v) in out.iter_mut().zip(&s.b[..k]) {
        *o = *v as f32;
    }
    Ok(())
}

/// Rows √(c−1)·yᵢ into `x` (column-major) and Σ c·p·yᵢ into `b`.
#[multiversion(targets("x86_64+avx+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn gather_weighted(cols: &[u32], vals: &[f32], fixed: &FixedSide, k: usize, alpha: f32, conf: Confidence, x: &mut [f32], b: &mut [f64]) {
    let n = cols.len();
    for (j, (&c, &r)) in cols.iter().zip(vals).enumerate() {
        let row = &fixed.factors[c as usize * k..(c as usize + 1) * k];
        let excess = conf.excess(alpha, r) as f64;
        let w = excess.sqrt();
        let cp = if r > 0.0 { 1.0 + excess } else { 0.0 };
        for (f, &v) in row.iter().enumerate() {
            x[j + f * n] = (w * v as f64) as f32;
            b[f] += cp * v as f64;
        }
    }
}

/// A few conjugate-gradient steps from the current factors, as `implicit`
/// does: O(nᵤ·k + k²) per step instead of O(nᵤ·k² + k³).
#[allow(clippy::too_many_arguments)]
pub(super) fn solve_row_cg(
    p: &SolveParams,
    alpha: f32,
    conf: Confidence,
    steps: usize,
    cols: &[u32],
    vals: &[f32],
    fixed: &FixedSide,
    gram: &[f32],
    s: &mut RowScratch,
    x: &mut [f32],
) {
    let lam = p.row_lambda(cols.len()) as f32;
    cg_kernel(
        p.factors,
        alpha,
        conf,
        steps,
        lam,
        cols,
        vals,
        fixed.factors,
        gram,
        &mut s.r,
        &mut s.pv,
        &mut s.ap,
        x,
    );
}

#[multiversion(targets("x86_64+avx+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn cg_kernel(
    k: usize,
    alpha: f32,
    conf: Confidence,
    steps: usize,
    lam: f32,
    cols: &[u32],
    vals: &[f32],
    y: &[f32],
    gram: &[f32],
    r: &mut [f32],
    pv: &mut [f32],
    ap: &mut [f32],
    x: &mut [f32],
) {
    // r = b − A x, with A = YᵀY + λI + Σ(c−1)yyᵀ and b = Σ c·p·y.
    symv_f32(gram, x, r);
    for (ri, xi) in r.iter_mut().zip(x.iter()) {
        *ri = -*ri - lam * xi;
    }
    for (&c, &v) in cols.iter().zip(vals) {
        let yi = &y[c as usize * k..(c as usize + 1) * k];
        let excess = conf.excess(alpha, v);
        let cp = if v > 0.0 { 1.0 + excess } else { 0.0 };
        let coef = cp - excess * dot_f32(yi, x);
        axpy_f32(coef, yi, r);
    }
    pv.copy_from_slice(r);
    let mut rs_old = dot_f32(r, r);
    if rs_old < 1e-20 {
        return;
    }
    for _ in 0..steps {
        symv_f32(gram, pv, ap);
        for (a, pi) in ap.iter_mut().zip(pv.iter()) {
            *a += lam * pi;
        }
        for (&c, &v) in cols.iter().zip(vals) {
            let yi = &y[c as usize * k..(c as usize + 1) * k];
            let excess = conf.excess(alpha, v);
            axpy_f32(excess * dot_f32(yi, pv), yi, ap);
        }
        let pap = dot_f32(pv, ap);
        if pap <= 0.0 || !pap.is_finite() {
            return;
        }
        let step = rs_old / pap;
        axpy_f32(step, pv, x);
        axpy_f32(-step, ap, r);
        let rs_new = dot_f32(r, r);
        if rs_new < 1e-20 {
            return;
        }
        let beta = rs_new / rs_old;
        for (pi, ri) in pv.iter_mut().zip(r.iter()) {
            *pi = ri + beta * *pi;
        }
        rs_old = rs_new;
    }
}
