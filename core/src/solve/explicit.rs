//! Explicit ratings: one ridge regression per row, solved by Cholesky.

use multiversion::multiversion;

use super::{FixedSide, RowScratch, SolveParams, GATHER_CHUNK};
use crate::linalg::normal_ld;
use crate::linalg::rows_ops::{prefetch_row, GATHER_AHEAD};
#[cfg(target_arch = "x86_64")]
use crate::linalg::simd_path::Path;
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
        gather_any(
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

/// [`gather`], through the AVX-512 kernel that keeps the sums in registers
/// where the CPU and k allow: the same bits either way.
#[allow(clippy::too_many_arguments)]
fn gather_any(
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
    #[cfg(target_arch = "x86_64")]
    if k.is_multiple_of(16) && (16..=128).contains(&k) && Path::detect() == Path::Avx512 {
        // SAFETY: AVX-512F was detected; k = 16·NV.
        unsafe {
            match k / 16 {
                1 => avx512_gather::gather::<1>(cols, vals, fixed, biased, mu, w, x, b, colsum),
                2 => avx512_gather::gather::<2>(cols, vals, fixed, biased, mu, w, x, b, colsum),
                3 => avx512_gather::gather::<3>(cols, vals, fixed, biased, mu, w, x, b, colsum),
                4 => avx512_gather::gather::<4>(cols, vals, fixed, biased, mu, w, x, b, colsum),
                5 => avx512_gather::gather::<5>(cols, vals, fixed, biased, mu, w, x, b, colsum),
                6 => avx512_gather::gather::<6>(cols, vals, fixed, biased, mu, w, x, b, colsum),
                7 => avx512_gather::gather::<7>(cols, vals, fixed, biased, mu, w, x, b, colsum),
                _ => avx512_gather::gather::<8>(cols, vals, fixed, biased, mu, w, x, b, colsum),
            }
        }
        return;
    }
    gather(cols, vals, fixed, k, biased, mu, w, x, b, colsum)
}

/// [`gather`] for k = 16·NV with Xᵀt and Σqᵢ held in registers across the
/// rows rather than loaded and stored for each one: at k = 64 the plain loop
/// spent 32 of its memory operations per rating on them. Each sum still
/// takes its rows in order with the same f64 multiply and add, so the bits
/// are [`gather`]'s.
#[cfg(target_arch = "x86_64")]
mod avx512_gather {
    use std::arch::x86_64::*;

    use super::FixedSide;
    use crate::linalg::rows_ops::{prefetch_row, GATHER_AHEAD};

    /// Vectors of 16 floats whose sums one pass keeps in registers: 4·GROUP
    /// of the 32 (two f64 halves each, for Xᵀt and for Σqᵢ).
    const GROUP: usize = 6;

    /// The gather for k = 16·NV: one pass where k fits in registers; past
    /// that, a first pass over the fixed rows for the first vectors (copying
    /// whole rows into the panel), then passes over the panel, now in cache,
    /// for the rest. Each sum still adds its rows in order.
    ///
    /// # Safety
    /// AVX-512F must be available (every slice access is checked).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gather<const NV: usize>(
        cols: &[u32],
        vals: &[f32],
        fixed: &FixedSide,
        biased: bool,
        mu: f32,
        w: usize,
        x: &mut [f32],
        b: &mut [f64],
        colsum: &mut [f64],
    ) {
        let k = 16 * NV;
        assert!(b.len() >= k && x.len() >= cols.len() * w && w >= k && vals.len() >= cols.len());
        assert!(!biased || (colsum.len() >= k && b.len() > k));
        let from_fixed = Pass {
            cols,
            vals,
            fixed,
            biased,
            mu,
            w,
            k,
            from_panel: false,
        };
        let from_panel = Pass {
            from_panel: true,
            ..from_fixed
        };
        // SAFETY (each pass): AVX-512F, as this function's caller promised.
        unsafe {
            if NV <= GROUP {
                pass::<NV>(&from_fixed, 0, x, b, colsum);
            } else {
                pass::<4>(&from_fixed, 0, x, b, colsum);
                match NV - 4 {
                    1 => pass::<1>(&from_panel, 4, x, b, colsum),
                    2 => pass::<2>(&from_panel, 4, x, b, colsum),
                    3 => pass::<3>(&from_panel, 4, x, b, colsum),
                    _ => pass::<4>(&from_panel, 4, x, b, colsum),
                }
            }
        }
    }

    #[derive(Clone, Copy)]
    struct Pass<'a> {
        cols: &'a [u32],
        vals: &'a [f32],
        fixed: &'a FixedSide<'a>,
        biased: bool,
        mu: f32,
        w: usize,
        k: usize,
        /// Read the rows from the panel an earlier pass filled.
        from_panel: bool,
    }

    /// Rating r of column c's target, as [`super::gather`] computes it.
    #[inline(always)]
    fn target(p: &Pass, c: u32, r: f32) -> f64 {
        if p.biased {
            r as f64 - p.mu as f64 - p.fixed.bias[c as usize] as f64
        } else {
            r as f64
        }
    }

    /// The sums of vectors `v0..v0 + GV` over every row; the first pass
    /// (from the fixed side) also copies each whole row into the panel and,
    /// biased, sums the targets into `b[k]`.
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)] // explicit indices keep the sums in registers
    unsafe fn pass<const GV: usize>(p: &Pass, v0: usize, x: &mut [f32], b: &mut [f64], colsum: &mut [f64]) {
        let (k, w) = (p.k, p.w);
        let at = |v: usize, h: usize| 16 * (v0 + v) + 8 * h;
        // Each vector of 16 floats widens into two of 8 doubles.
        let mut bs = [[_mm512_setzero_pd(); 2]; GV];
        let mut cs = [[_mm512_setzero_pd(); 2]; GV];
        for v in 0..GV {
            for h in 0..2 {
                bs[v][h] = _mm512_loadu_pd(b[at(v, h)..at(v, h) + 8].as_ptr());
                if p.biased {
                    cs[v][h] = _mm512_loadu_pd(colsum[at(v, h)..at(v, h) + 8].as_ptr());
                }
            }
        }
        let sums_targets = p.biased && !p.from_panel;
        let mut target_sum = if sums_targets { b[k] } else { 0.0 };
        for (j, (&c, &r)) in p.cols.iter().zip(p.vals).enumerate() {
            let dst = &mut x[j * w..j * w + k];
            if !p.from_panel {
                if let Some(&ahead) = p.cols.get(j + GATHER_AHEAD) {
                    prefetch_row(p.fixed.factors, ahead as usize * k, k);
                }
                let row = &p.fixed.factors[c as usize * k..(c as usize + 1) * k];
                for (d16, r16) in dst.chunks_exact_mut(16).zip(row.chunks_exact(16)) {
                    // SAFETY: both chunks hold 16 floats. + 0.0 as the plain
                    // loop: a -0 is stored as +0 (the sums cannot tell: they
                    // start at +0 and never become -0).
                    unsafe {
                        let q = _mm512_loadu_ps(r16.as_ptr());
                        _mm512_storeu_ps(d16.as_mut_ptr(), _mm512_add_ps(q, _mm512_setzero_ps()));
                    }
                }
            }
            let t = target(p, c, r);
            target_sum += t;
            let tv = _mm512_set1_pd(t);
            for v in 0..GV {
                let q = &dst[16 * (v0 + v)..16 * (v0 + v + 1)];
                // SAFETY: `q` holds 16 floats.
                let q = unsafe { _mm512_loadu_ps(q.as_ptr()) };
                let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(q));
                let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(q))));
                for (h, half) in [lo, hi].into_iter().enumerate() {
                    bs[v][h] = _mm512_add_pd(bs[v][h], _mm512_mul_pd(tv, half));
                    if p.biased {
                        cs[v][h] = _mm512_add_pd(cs[v][h], half);
                    }
                }
            }
        }
        for v in 0..GV {
            for h in 0..2 {
                // SAFETY: the slices hold 8 doubles.
                unsafe {
                    _mm512_storeu_pd(b[at(v, h)..at(v, h) + 8].as_mut_ptr(), bs[v][h]);
                    if p.biased {
                        _mm512_storeu_pd(colsum[at(v, h)..at(v, h) + 8].as_mut_ptr(), cs[v][h]);
                    }
                }
            }
        }
        if sums_targets {
            b[k] = target_sum;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// The register kernel against the plain loop, bit for bit: every k it
    /// takes, with and without biases, sums that start where an earlier
    /// chunk left them, and a -0 among the factors.
    #[test]
    fn the_register_gather_gives_the_plain_gathers_bits() {
        #[cfg(target_arch = "x86_64")]
        let has_kernel = Path::detect() == Path::Avx512;
        #[cfg(not(target_arch = "x86_64"))]
        let has_kernel = false;
        if !has_kernel {
            eprintln!("SKIPPED: this CPU has no AVX-512, so there is no register kernel to compare");
            return;
        }
        let mut rng = SplitMix64::new(5);
        for k in (16..=128).step_by(16).chain([8, 24, 144]) {
            let rows = 50;
            let mut factors: Vec<f32> = (0..rows * k).map(|_| rng.next_normal() as f32).collect();
            factors[3 * k + 1] = -0.0;
            let bias: Vec<f32> = (0..rows).map(|_| rng.next_normal() as f32).collect();
            let fixed = FixedSide {
                factors: &factors,
                bias: &bias,
                total_rows: rows,
            };
            let cols: Vec<u32> = (0..70).map(|_| (rng.next_u64() % rows as u64) as u32).chain([3]).collect();
            let vals: Vec<f32> = cols.iter().map(|_| 1.0 + (rng.next_u64() % 5) as f32).collect();
            let w = panel_width(k);
            for biased in [false, true] {
                let d = k + usize::from(biased);
                let start_b: Vec<f64> = (0..d).map(|_| rng.next_normal()).collect();
                let start_c: Vec<f64> = (0..k).map(|_| rng.next_normal()).collect();
                let run = |plain: bool| {
                    let (mut x, mut b, mut c) = (vec![f32::NAN; cols.len() * w], start_b.clone(), start_c.clone());
                    let args = (&cols[..], &vals[..], &fixed, k, biased, 3.5f32, w);
                    if plain {
                        gather(args.0, args.1, args.2, args.3, args.4, args.5, args.6, &mut x, &mut b, &mut c);
                    } else {
                        gather_any(args.0, args.1, args.2, args.3, args.4, args.5, args.6, &mut x, &mut b, &mut c);
                    }
                    let panel: Vec<u32> = x.chunks(w).flat_map(|r| r[..k].iter().map(|v| v.to_bits())).collect();
                    let bits = |v: &[f64]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    (panel, bits(&b), if biased { bits(&c) } else { Vec::new() })
                };
                let (plain, fast) = (run(true), run(false));
                assert_eq!(plain.0, fast.0, "k={k} biased={biased}: the panels differ");
                assert_eq!(plain.1, fast.1, "k={k} biased={biased}: Xᵀt differs");
                assert_eq!(plain.2, fast.2, "k={k} biased={biased}: the column sums differ");
                assert!(fast.0.iter().all(|&v| v != (-0.0f32).to_bits()), "a -0 was copied as -0");
            }
        }
    }
}
