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
//!
//! The products that move with every block (Gx, the predictions) run in
//! vectorized kernels, and each diagonal block of s·YᵀY is laid out for the
//! Cholesky once per call ([`BlockedGram`]), so a row's block Hessian starts
//! as a straight copy.

use multiversion::multiversion;

use super::{FixedSide, ImplicitWeights, RowScratch, RowsView, SolveError, SolveParams, GATHER_CHUNK};
use crate::linalg::syrk::{panel_width, syrk_lower_add};
use crate::linalg::vec::dot_f32_with_f64;
#[cfg(test)]
use crate::linalg::vec::{dot_f32_f64, dot_f64};
use crate::linalg::{normal_ld, NotPositiveDefinite};

/// The state of one task's rows while their blocks move, reused across a
/// thread's tasks. Observed items of row r are `offsets[r]..offsets[r+1]`.
#[derive(Default)]
pub(crate) struct SubspaceScratch {
    /// The rows' factors in f64 (rows × k) while they are being improved.
    x: Vec<f64>,
    /// The same rounded to f32, kept current, for the Gram product.
    x32: Vec<f32>,
    /// The current block's rows of s·(YᵀY)x (rows × b).
    gx: Vec<f64>,
    /// sᵢ = yᵢᵀx per observed item, kept current.
    pred: Vec<f64>,
    /// e and t per observed item.
    extra: Vec<f64>,
    target: Vec<f64>,
    offsets: Vec<usize>,
    lambda: Vec<f64>,
    failed: Vec<Option<NotPositiveDefinite>>,
}

/// s·YᵀY as the block steps read it: row-major (k×k) in f32 for the Gx products,
/// and each diagonal block copied into the Cholesky's column-major layout.
pub(crate) struct BlockedGram {
    /// s·YᵀY rounded to f32 (row-major), for the Gram product.
    gram32: Vec<f32>,
    k: usize,
    /// The block size, at most k.
    block: usize,
    /// The block at `start` (b coordinates): b columns of `normal_ld(b)`
    /// from `start·normal_ld(block)`; only the first b of a column are set.
    diag: Vec<f64>,
}

impl BlockedGram {
    pub(crate) fn new(gram: &[f64], k: usize, block: usize) -> Self {
        let block = block.clamp(1, k.max(1));
        let full_ld = normal_ld(block);
        let mut diag = vec![0.0; k * full_ld];
        for start in (0..k).step_by(block) {
            let b = block.min(k - start);
            let ld = normal_ld(b);
            let at = start * full_ld;
            for j in 0..b {
                for (i, v) in diag[at + j * ld..at + j * ld + b].iter_mut().enumerate() {
                    *v = gram[(start + i) * k + start + j];
                }
            }
        }
        BlockedGram {
            gram32: gram.iter().map(|&v| v as f32).collect(),
            k,
            block,
            diag,
        }
    }

    fn diag_block(&self, start: usize, b: usize) -> &[f64] {
        let at = start * normal_ld(self.block);
        &self.diag[at..at + b * normal_ld(b)]
    }
}

/// `sweeps` passes over the coordinate blocks of rows `first..` of `rows`
/// (as many as `out` holds), from their factors in `out`; `gram` is s·YᵀY
/// (scaled by the loss) in blocks. The rows move through each block
/// together, so s·YᵀY's columns B are read once per group of rows for
/// (YᵀY x)_B; every row's arithmetic is still its own, in its own order, so
/// a row gets the same bits in any task (and alone, in fold-in). Returns the
/// lowest row that failed.
#[allow(clippy::too_many_arguments)]
pub(super) fn solve_rows_subspace(
    p: &SolveParams,
    weights: ImplicitWeights,
    sweeps: usize,
    rows: &RowsView,
    first: usize,
    fixed: &FixedSide,
    gram: &BlockedGram,
    s: &mut RowScratch,
    out: &mut [f32],
) -> Option<SolveError> {
    let k = p.factors;
    debug_assert_eq!(gram.k, k);
    let n_rows = out.len() / k;
    let mut sub = s.subspace.take().unwrap_or_default();
    sub.x.clear();
    sub.x.extend(out.iter().map(|&v| v as f64));
    sub.x32.clear();
    sub.x32.extend_from_slice(out);
    sub.gx.resize(n_rows * gram.block, 0.0);
    sub.extra.clear();
    sub.target.clear();
    sub.offsets.clear();
    sub.offsets.push(0);
    sub.lambda.clear();
    sub.failed.clear();
    sub.failed.resize(n_rows, None);
    for r in 0..n_rows {
        let (cols, vals) = rows.row(first + r);
        for &v in vals {
            let (e, t) = weights.observed_f64(v);
            sub.extra.push(e);
            sub.target.push(t);
        }
        sub.offsets.push(sub.extra.len());
        sub.lambda.push(p.row_lambda(cols.len(), fixed.total_rows));
    }
    sub.pred.clear();
    sub.pred.resize(sub.extra.len(), 0.0);
    for r in 0..n_rows {
        let (cols, _) = rows.row(first + r);
        let at = sub.offsets[r]..sub.offsets[r + 1];
        update_predictions(cols, fixed.factors, k, 0, &sub.x[r * k..(r + 1) * k], &mut sub.pred[at]);
    }
    for _ in 0..sweeps {
        for start in (0..k).step_by(gram.block) {
            let b = gram.block.min(k - start);
            let (ld, w) = (normal_ld(b), panel_width(b));
            // (s·YᵀY x)_B afresh for every block: b·k per row, the same as
            // keeping all of it current, without the k² to start it.
            gram_block_times(&gram.gram32, k, start, b, &sub.x32, &mut sub.gx[..n_rows * b]);
            let diag = gram.diag_block(start, b);
            for r in 0..n_rows {
                if sub.failed[r].is_some() {
                    continue;
                }
                let (cols, _) = rows.row(first + r);
                let (lam, x, gx) = (sub.lambda[r], &mut sub.x[r * k..(r + 1) * k], &sub.gx[r * b..(r + 1) * b]);
                // The block's Hessian (lower triangle, column-major) and minus its gradient.
                for j in 0..b {
                    s.a[j * ld..j * ld + b].copy_from_slice(&diag[j * ld..j * ld + b]);
                    s.a[j + j * ld] += lam;
                    s.b[j] = -(gx[j] + lam * x[start + j]);
                }
                let items = sub.offsets[r];
                for (chunk, at) in cols.chunks(GATHER_CHUNK).zip((items..).step_by(GATHER_CHUNK)) {
                    let n = chunk.len();
                    let at = at..at + n;
                    gather_block(
                        chunk,
                        fixed.factors,
                        k,
                        start..start + b,
                        (&sub.extra[at.clone()], &sub.target[at.clone()], &sub.pred[at]),
                        w,
                        &mut s.panel,
                        &mut s.b[..b],
                    );
                    syrk_lower_add(&s.panel[..n * w], n, w, b, &mut s.g32, &mut s.a[..b * ld], ld);
                }
                if let Err(cause) = s.dense.cholesky_solve(&mut s.a[..b * ld], ld, &mut s.b[..b], b) {
                    sub.failed[r] = Some(cause);
                    continue;
                }
                let delta = &s.b[..b];
                let x32 = &mut sub.x32[r * k + start..r * k + start + b];
                for ((xi, d), x32i) in x[start..start + b].iter_mut().zip(delta).zip(x32) {
                    *xi += d;
                    *x32i = *xi as f32;
                }
                let preds = &mut sub.pred[items..sub.offsets[r + 1]];
                update_predictions(cols, fixed.factors, k, start, delta, preds);
            }
        }
    }
    for (o, v) in out.iter_mut().zip(&sub.x) {
        *o = *v as f32;
    }
    let failure = sub
        .failed
        .iter()
        .enumerate()
        .find_map(|(r, f)| f.clone().map(|cause| SolveError::NotPositiveDefinite { row: first + r, cause }));
    s.subspace = Some(sub);
    failure
}

/// Terms of the Gram product summed in f32 before they are added to the f64
/// total: f32 FMAs run twice as many lanes as f64 ones, and a partial sum of
/// 64 terms keeps about seven digits.
const GRAM_PRODUCT_CHUNK: usize = 64;

/// `out[r·b + i] = Σⱼ x[r·k + j]·g[j·k + start + i]` for every row r of x
/// and i < b: rows B of the symmetric G times each row, read as columns B
/// (contiguous in each row of G). G and x are f32 copies; each run of
/// [`GRAM_PRODUCT_CHUNK`] terms sums in f32 and the runs add up in f64.
/// Eight rows share each load of G. Every entry sums over j in order from
/// zero, whatever tile holds it, so the bits depend neither on the vector
/// width nor on the rows beside it.
#[multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
fn gram_block_times(g: &[f32], k: usize, start: usize, b: usize, x: &[f32], out: &mut [f64]) {
    let n = x.len() / k;
    assert!(start + b <= k && g.len() >= k * k && out.len() >= n * b, "gram_block_times: sizes");
    let mut r = 0;
    while r + 8 <= n {
        let (x8, out8) = (&x[r * k..(r + 8) * k], &mut out[r * b..(r + 8) * b]);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") {
            let mut c = 0;
            while c + 16 <= b {
                // SAFETY: the feature was detected; columns start + c .. + 16 are
                // inside G's k (start + b <= k), x8 holds 8 rows of k and out8 8 of b.
                unsafe { avx512::tile_8x16(g.as_ptr(), k, start + c, x8.as_ptr(), out8.as_mut_ptr(), b, c) };
                c += 16;
            }
            gram_row_group_from::<8>(g, k, start, b, c, x8, out8);
            r += 8;
            continue;
        }
        gram_row_group::<8>(g, k, start, b, x8, out8);
        r += 8;
    }
    while r < n {
        gram_row_group::<1>(g, k, start, b, &x[r * k..(r + 1) * k], &mut out[r * b..(r + 1) * b]);
        r += 1;
    }
}

/// R rows of [`gram_block_times`], in column tiles of 16, 8 and 1.
#[inline(always)]
fn gram_row_group<const R: usize>(g: &[f32], k: usize, start: usize, b: usize, x: &[f32], out: &mut [f64]) {
    gram_row_group_from::<R>(g, k, start, b, 0, x, out);
}

/// [`gram_row_group`] from column tile `c` on.
#[inline(always)]
fn gram_row_group_from<const R: usize>(g: &[f32], k: usize, start: usize, b: usize, mut c: usize, x: &[f32], out: &mut [f64]) {
    while c + 16 <= b {
        gram_tile::<R, 16>(g, k, start, b, c, x, out);
        c += 16;
    }
    while c + 8 <= b {
        gram_tile::<R, 8>(g, k, start, b, c, x, out);
        c += 8;
    }
    while c < b {
        gram_tile::<R, 1>(g, k, start, b, c, x, out);
        c += 1;
    }
}

/// One register tile: R rows × T columns from column `start + c`.
#[inline(always)]
fn gram_tile<const R: usize, const T: usize>(g: &[f32], k: usize, start: usize, b: usize, c: usize, x: &[f32], out: &mut [f64]) {
    let mut total = [[0f64; T]; R];
    let col = start + c;
    let mut j0 = 0;
    while j0 < k {
        let j1 = (j0 + GRAM_PRODUCT_CHUNK).min(k);
        let mut acc = [[0f32; T]; R];
        for j in j0..j1 {
            let row: &[f32; T] = g[j * k + col..j * k + col + T].try_into().expect("tile");
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let a = x[r * k + j];
                for l in 0..T {
                    acc_r[l] = a.mul_add(row[l], acc_r[l]);
                }
            }
        }
        for (t, a) in total.iter_mut().zip(&acc) {
            for l in 0..T {
                t[l] += a[l] as f64;
            }
        }
        j0 = j1;
    }
    for (r, t) in total.iter().enumerate() {
        out[r * b + c..r * b + c + T].copy_from_slice(t);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::GRAM_PRODUCT_CHUNK;

    /// [`super::gram_tile`] for 8 rows × 16 columns, written with intrinsics
    /// so the 24 accumulators stay in registers: lane by lane the same FMAs,
    /// conversions and additions in the same order, so the same bits.
    ///
    /// # Safety
    /// AVX-512F must be available; `g` holds k rows of k with `col + 16 <= k`,
    /// `x` 8 rows of k, and `out` 8 rows of `b` with `c + 16 <= b`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_8x16(g: *const f32, k: usize, col: usize, x: *const f32, out: *mut f64, b: usize, c: usize) {
        let mut lo = [_mm512_setzero_pd(); 8];
        let mut hi = [_mm512_setzero_pd(); 8];
        let mut j0 = 0;
        while j0 < k {
            let j1 = (j0 + GRAM_PRODUCT_CHUNK).min(k);
            let mut acc = [_mm512_setzero_ps(); 8];
            for j in j0..j1 {
                // SAFETY: j < k and col + 16 <= k; rows r < 8 of x.
                unsafe {
                    let row = _mm512_loadu_ps(g.add(j * k + col));
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(*x.add(r * k + j)), row, *a);
                    }
                }
            }
            for r in 0..8 {
                let low = _mm512_castps512_ps256(acc[r]);
                let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[r])));
                lo[r] = _mm512_add_pd(lo[r], _mm512_cvtps_pd(low));
                hi[r] = _mm512_add_pd(hi[r], _mm512_cvtps_pd(high));
            }
            j0 = j1;
        }
        for r in 0..8 {
            // SAFETY: r < 8 and c + 16 <= b.
            unsafe {
                _mm512_storeu_pd(out.add(r * b + c), lo[r]);
                _mm512_storeu_pd(out.add(r * b + c + 8), hi[r]);
            }
        }
    }
}

/// Rows √e·yᵢ_B into the panel (`w` floats apart) and Σ (t − e·sᵢ)·yᵢ_B into `rhs`.
#[multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn gather_block(
    cols: &[u32],
    factors: &[f32],
    k: usize,
    coords: std::ops::Range<usize>,
    (extra, target, pred): (&[f64], &[f64], &[f64]),
    w: usize,
    panel: &mut [f32],
    rhs: &mut [f64],
) {
    for ((((&c, dst), &e), &t), &sp) in cols.iter().zip(panel.chunks_exact_mut(w)).zip(extra).zip(target).zip(pred) {
        let y = &factors[c as usize * k + coords.start..c as usize * k + coords.end];
        let (wt, coef) = (e.sqrt(), t - e * sp);
        for ((d, bf), &v) in dst.iter_mut().zip(rhs.iter_mut()).zip(y) {
            *d = (wt * v as f64) as f32;
            *bf = coef.mul_add(v as f64, *bf);
        }
    }
}

/// sᵢ += yᵢ_B·δ for every observed item (B = `start..start + δ.len()`).
#[multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
fn update_predictions(cols: &[u32], factors: &[f32], k: usize, start: usize, delta: &[f64], pred: &mut [f64]) {
    for (sp, &c) in pred.iter_mut().zip(cols) {
        let at = c as usize * k + start;
        *sp += dot_f32_with_f64(&factors[at..at + delta.len()], delta);
    }
}

/// The plain row-at-a-time form the fast solver replaced, kept as its
/// reference: the same block steps, with the Hessian read from the Gramian
/// entry by entry and every product a dot product.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(super) fn reference_row_subspace(
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

#[cfg(test)]
mod kernel_tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// The Gram product, whatever tile or path computes an entry (the
    /// AVX-512 8×16 tile, the portable 16-, 8- and 1-column tiles, groups of
    /// eight rows or single rows), equals the entry written out one row and
    /// one column at a time in the documented order, bit for bit.
    #[test]
    fn gram_product_tiles_equal_the_entry_written_out() {
        let mut rng = SplitMix64::new(8);
        for (k, start, b) in [(40usize, 0usize, 16usize), (150, 64, 37), (200, 7, 24), (70, 69, 1)] {
            let g: Vec<f32> = (0..k * k).map(|_| rng.next_normal() as f32).collect();
            let n = 11;
            let x: Vec<f32> = (0..n * k).map(|_| rng.next_normal() as f32).collect();
            let mut out = vec![0f64; n * b];
            gram_block_times(&g, k, start, b, &x, &mut out);
            for r in 0..n {
                for i in 0..b {
                    let mut total = 0f64;
                    for chunk in (0..k).collect::<Vec<_>>().chunks(GRAM_PRODUCT_CHUNK) {
                        let mut acc = 0f32;
                        for &j in chunk {
                            acc = x[r * k + j].mul_add(g[j * k + start + i], acc);
                        }
                        total += acc as f64;
                    }
                    assert_eq!(
                        out[r * b + i].to_bits(),
                        total.to_bits(),
                        "k {k}, block {start}+{b}, row {r}, column {i}"
                    );
                }
            }
        }
    }
}
