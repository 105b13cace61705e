//! The row Gram kernel: `a += Σᵣ xᵣxᵣᵀ` over a gathered panel of rows.
//!
//! This is where explicit ALS and exact implicit ALS spend most of their
//! flops (nnz·d(d+1) per side), so it has its own register-tiled AVX-512
//! kernel. It computes only the blocks on and below the diagonal, keeps the
//! sums of one panel in f32 registers (sixteen lanes per FMA) and adds them
//! into the f64 normal matrix once per panel. An AVX2+FMA twin does the same
//! with eight lanes and smaller tiles, and the same bits: each entry is one
//! chain of f32 FMAs over the panel's rows in order, either way. Without
//! either it falls back to faer's f32 GEMM on the same panel (other bits).
//! Whichever path, the lower triangle of
//! `a` (all the Cholesky reads) is exact up to f32 rounding within a panel;
//! the strict upper triangle holds partial values and must not be read.

use faer::{Accum, MatMut, MatRef, Par};

use super::simd_path::Path;

/// Lanes of one f32 vector; panel rows are padded to a multiple of it.
pub const LANES: usize = 16;

/// Floats per panel row for `d` features: `d` rounded up to whole vectors.
pub fn panel_width(d: usize) -> usize {
    d.div_ceil(LANES) * LANES
}

/// The lower triangle of `a` (d×d of a column-major f64 matrix with leading
/// dimension `ld ≥ d`) `+= Σᵣ xᵣxᵣᵀ`, where row r of the panel is
/// `panel[r*w .. r*w+d]` (`w`: a multiple of [`LANES`], at least d; entries
/// past `d` are ignored). `g` is `w×w` scratch for the portable path.
pub fn syrk_lower_add(panel: &[f32], n: usize, w: usize, d: usize, g: &mut [f32], a: &mut [f64], ld: usize) {
    checked_run(panel, n, w, d, g, a, ld, true);
}

/// [`syrk_lower_add`] into a lower triangle whose old values are dropped:
/// the same bits as adding into zeros, without zeroing the matrix first
/// (at k=64 that is 37 KB per row, most of a short row's time).
pub fn syrk_lower_set(panel: &[f32], n: usize, w: usize, d: usize, g: &mut [f32], a: &mut [f64], ld: usize) {
    checked_run(panel, n, w, d, g, a, ld, false);
}

#[allow(clippy::too_many_arguments)]
fn checked_run(panel: &[f32], n: usize, w: usize, d: usize, g: &mut [f32], a: &mut [f64], ld: usize, add: bool) {
    assert!(
        w.is_multiple_of(LANES) && w >= d,
        "syrk: panel width {w} is not whole vectors of at least {d}"
    );
    assert!(
        ld >= d && panel.len() >= n * w && a.len() >= (d.max(1) - 1) * ld + d,
        "syrk: panel or output too small"
    );
    if d == 0 {
        return;
    }
    if n == 0 {
        if !add {
            for j in 0..d {
                a[j * ld + j..j * ld + d].fill(0.0);
            }
        }
        return;
    }
    run(Path::detect(), panel, n, w, d, g, a, ld, add);
}

/// [`syrk_lower_add`] (or, `add` false, [`syrk_lower_set`]) on `path`,
/// whose instructions the CPU must have; the sizes are checked, n ≥ 1.
#[allow(clippy::too_many_arguments)]
fn run(path: Path, panel: &[f32], n: usize, w: usize, d: usize, g: &mut [f32], a: &mut [f64], ld: usize, add: bool) {
    match path {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx512` is only chosen where detected; the sizes were checked by the caller.
        Path::Avx512 => unsafe { avx512::syrk_lower_add(panel.as_ptr(), n, w, d, a.as_mut_ptr(), ld, add) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Avx2` is only chosen where AVX2 and FMA were detected; sizes as above.
        Path::Avx2 => unsafe { avx2::syrk_lower_add(panel.as_ptr(), n, w, d, a.as_mut_ptr(), ld, add) },
        Path::Portable => portable(panel, n, w, d, g, a, ld, add),
    }
}

/// faer's f32 GEMM on the panel (a w×n column-major matrix M): M·Mᵀ, added in f64.
#[allow(clippy::too_many_arguments)]
fn portable(panel: &[f32], n: usize, w: usize, d: usize, g: &mut [f32], a: &mut [f64], ld: usize, add: bool) {
    let m = MatRef::from_column_major_slice(&panel[..n * w], w, n);
    let gm = MatMut::from_column_major_slice_mut(&mut g[..w * w], w, w);
    faer::linalg::matmul::matmul(gm, Accum::Replace, m, m.transpose(), 1.0f32, Par::Seq);
    for j in 0..d {
        for i in j..d {
            // 0 + x, not x: the bits of adding into zeros, -0 included.
            let base = if add { a[i + j * ld] } else { 0.0 };
            a[i + j * ld] = base + g[i + j * w] as f64;
        }
    }
}

/// The sweep both SIMD kernels make over the lower triangle, in bands of
/// two vectors of `$lanes` rows (one where only one holds rows below d).
/// Left of a band's diagonal block, tiles are both vectors tall by up to
/// `$nc` columns: the most FMAs per load. The diagonal block goes one
/// vector of rows at a time, each only as far right as its own last row, so
/// the half of the block above the diagonal is mostly not computed (at
/// d = 64: 160 FMAs a panel row, against 192 with two-vector tiles
/// throughout). Each tile goes to the calling module's `tile::<V, C>`
/// (`$c`: every column count from `$nc` down to 1). Every entry is still one
/// chain of FMAs over the panel's rows, so the tiling never changes a bit.
#[cfg(target_arch = "x86_64")]
macro_rules! sweep_lower_tiles {
    ($lanes:expr, $nc:expr, [$($c:literal),+], $panel:ident, $n:ident, $w:ident, $d:ident, $a:ident, $ld:ident, $add:ident) => {{
        let mut ib = 0;
        while ib < $d {
            let two = ib + $lanes < $d;
            let i_end = (ib + if two { 2 * $lanes } else { $lanes }).min($d);
            let mut jb = 0;
            while jb < ib {
                // SAFETY: forwarded; tiles stay inside the panel's w columns and a's d×d.
                unsafe {
                    match (two, (ib - jb).min($nc)) {
                        $((true, $c) => tile::<2, $c>($panel, $n, $w, ib, jb, $d, $a, $ld, $add),)+
                        $((false, $c) => tile::<1, $c>($panel, $n, $w, ib, jb, $d, $a, $ld, $add),)+
                        _ => unreachable!("a tile has 1..={} columns", $nc),
                    }
                }
                jb += $nc;
            }
            let mut sub = ib;
            while sub < i_end {
                let sub_end = (sub + $lanes).min($d);
                let mut jb = ib;
                while jb < sub_end {
                    // SAFETY: as above.
                    unsafe {
                        match (sub_end - jb).min($nc) {
                            $($c => tile::<1, $c>($panel, $n, $w, sub, jb, $d, $a, $ld, $add),)+
                            _ => unreachable!("a tile has 1..={} columns", $nc),
                        }
                    }
                    jb += $nc;
                }
                sub = sub_end;
            }
            ib = i_end;
        }
    }};
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::LANES;

    /// Columns per register tile: with two row vectors, 16 accumulators.
    const NC: usize = 8;

    /// # Safety
    /// AVX-512F must be available; `panel` holds `n*w` floats and `a` d columns of `ld`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn syrk_lower_add(panel: *const f32, n: usize, w: usize, d: usize, a: *mut f64, ld: usize, add: bool) {
        sweep_lower_tiles!(LANES, NC, [8, 7, 6, 5, 4, 3, 2, 1], panel, n, w, d, a, ld, add)
    }

    /// Rows `ib..ib+16V` by columns `jb..jb+C` of the Gram, summed over the
    /// panel's n rows in registers, then added into `a` (masked at row d).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::needless_range_loop)] // explicit indices keep the tile in registers
    unsafe fn tile<const V: usize, const C: usize>(
        p: *const f32,
        n: usize,
        w: usize,
        ib: usize,
        jb: usize,
        d: usize,
        a: *mut f64,
        ld: usize,
        add: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; V];
        for r in 0..n {
            // SAFETY: r < n, ib + 16V <= w and jb + C <= d <= w.
            unsafe {
                let row = p.add(r * w);
                let mut x = [_mm512_setzero_ps(); V];
                for (v, xv) in x.iter_mut().enumerate() {
                    *xv = _mm512_loadu_ps(row.add(ib + LANES * v));
                }
                for c in 0..C {
                    let s = _mm512_set1_ps(*row.add(jb + c));
                    for v in 0..V {
                        acc[v][c] = _mm512_fmadd_ps(x[v], s, acc[v][c]);
                    }
                }
            }
        }
        for c in 0..C {
            let j = jb + c;
            for (v, accv) in acc.iter().enumerate() {
                let i0 = ib + LANES * v;
                let lo = _mm512_castps512_ps256(accv[c]);
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(accv[c])));
                for (half, part) in [lo, hi].into_iter().enumerate() {
                    let i = i0 + 8 * half;
                    if i >= d {
                        break;
                    }
                    let rem = d - i;
                    let mask: __mmask8 = if rem >= 8 { 0xff } else { (1u8 << rem) - 1 };
                    // SAFETY: the mask keeps rows below d, so i + lane < d and j < d.
                    unsafe {
                        let dst = a.add(i + j * ld);
                        let cur = if add {
                            _mm512_maskz_loadu_pd(mask, dst)
                        } else {
                            _mm512_setzero_pd()
                        };
                        _mm512_mask_storeu_pd(dst, mask, _mm512_add_pd(cur, _mm512_cvtps_pd(part)));
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// f32 lanes of one AVX register.
    const L: usize = 8;
    /// Columns per register tile: with two row vectors, 12 of the 16
    /// registers accumulate.
    const NC: usize = 6;

    /// # Safety
    /// AVX2 and FMA must be available; `panel` holds `n*w` floats (`w` a
    /// multiple of 16, at least d) and `a` d columns of `ld`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn syrk_lower_add(panel: *const f32, n: usize, w: usize, d: usize, a: *mut f64, ld: usize, add: bool) {
        sweep_lower_tiles!(L, NC, [6, 5, 4, 3, 2, 1], panel, n, w, d, a, ld, add)
    }

    /// Rows `ib..ib+8V` by columns `jb..jb+C` of the Gram, summed over the
    /// panel's n rows in registers, then added into `a` (rows below d only).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::needless_range_loop)] // explicit indices keep the tile in registers
    unsafe fn tile<const V: usize, const C: usize>(
        p: *const f32,
        n: usize,
        w: usize,
        ib: usize,
        jb: usize,
        d: usize,
        a: *mut f64,
        ld: usize,
        add: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); C]; V];
        for r in 0..n {
            // SAFETY: r < n, ib + 8V <= w and jb + C <= d <= w.
            unsafe {
                let row = p.add(r * w);
                let mut x = [_mm256_setzero_ps(); V];
                for (v, xv) in x.iter_mut().enumerate() {
                    *xv = _mm256_loadu_ps(row.add(ib + L * v));
                }
                for c in 0..C {
                    let s = _mm256_set1_ps(*row.add(jb + c));
                    for v in 0..V {
                        acc[v][c] = _mm256_fmadd_ps(x[v], s, acc[v][c]);
                    }
                }
            }
        }
        for c in 0..C {
            let j = jb + c;
            for (v, accv) in acc.iter().enumerate() {
                let i = ib + L * v;
                if i >= d {
                    break;
                }
                // SAFETY: rows i..i+8 below d are inside a's column j (j < d).
                unsafe {
                    let dst = a.add(i + j * ld);
                    if d - i >= L {
                        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(accv[c]));
                        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(accv[c]));
                        let (cur_lo, cur_hi) = match add {
                            true => (_mm256_loadu_pd(dst), _mm256_loadu_pd(dst.add(4))),
                            false => (_mm256_setzero_pd(), _mm256_setzero_pd()),
                        };
                        _mm256_storeu_pd(dst, _mm256_add_pd(cur_lo, lo));
                        _mm256_storeu_pd(dst.add(4), _mm256_add_pd(cur_hi, hi));
                    } else {
                        let mut vals = [0f32; L];
                        _mm256_storeu_ps(vals.as_mut_ptr(), accv[c]);
                        for (l, &x) in vals.iter().enumerate().take(d - i) {
                            let base = if add { *dst.add(l) } else { 0.0 };
                            *dst.add(l) = base + x as f64;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// With no rows, setting zeroes the lower triangle and adding leaves it.
    #[test]
    fn an_empty_panel_sets_zeros() {
        let (d, ld) = (5, crate::linalg::normal_ld(5));
        let mut a = vec![f64::NAN; ld * ld];
        let mut g = Vec::new();
        syrk_lower_set(&[], 0, panel_width(d), d, &mut g, &mut a, ld);
        assert!((0..d).all(|j| (j..d).all(|i| a[i + j * ld] == 0.0)));
        let mut b = vec![2.0; ld * ld];
        syrk_lower_add(&[], 0, panel_width(d), d, &mut g, &mut b, ld);
        assert!(b.iter().all(|&v| v == 2.0));
    }

    /// Both paths against an f64 loop over the lower triangle, for widths
    /// around the vector and tile edges.
    #[test]
    fn lower_triangle_matches_the_f64_reference() {
        let mut rng = SplitMix64::new(21);
        for &(n, d) in &[
            (1usize, 1usize),
            (3, 7),
            (40, 16),
            (17, 17),
            (256, 64),
            (100, 65),
            (9, 33),
            (50, 129),
            (5, 200),
        ] {
            let w = panel_width(d);
            let mut panel = vec![f32::NAN; n * w];
            for r in 0..n {
                for c in 0..d {
                    panel[r * w + c] = rng.next_normal() as f32;
                }
            }
            let mut want = vec![0.5f64; d * d];
            for j in 0..d {
                for i in j..d {
                    want[i + j * d] += (0..n).map(|r| panel[r * w + i] as f64 * panel[r * w + j] as f64).sum::<f64>();
                }
            }
            let ld = crate::linalg::normal_ld(d);
            let mut g = vec![0f32; w * w];
            // Padding is NaN: the SIMD paths must not read it; the portable
            // path gets zeros there, as the solvers give it.
            let padded: Vec<f32> = panel.iter().map(|v| if v.is_nan() { 0.0 } else { *v }).collect();
            let mut lower_bits = Vec::new();
            for path in Path::available() {
                let mut got = vec![0.5f64; ld * ld];
                let input = if path == Path::Portable { &padded } else { &panel };
                run(path, input, n, w, d, &mut g, &mut got, ld, true);
                // Setting drops what was there (NaN here) and gives the bits
                // of adding into zeros, in every entry of the lower triangle.
                let (mut zeros, mut stale) = (vec![0.0f64; ld * ld], vec![f64::NAN; ld * ld]);
                run(path, input, n, w, d, &mut g, &mut zeros, ld, true);
                run(path, input, n, w, d, &mut g, &mut stale, ld, false);
                for j in 0..d {
                    for i in j..d {
                        let (z, s) = (zeros[i + j * ld], stale[i + j * ld]);
                        assert_eq!(z.to_bits(), s.to_bits(), "{path:?} n={n} d={d} ({i},{j}): set {s} vs add {z}");
                    }
                }
                let mut bits = Vec::new();
                for j in 0..d {
                    for i in j..d {
                        let (x, y) = (want[i + j * d], got[i + j * ld]);
                        let tol = 1e-5 * (n as f64).sqrt() * (1.0 + x.abs());
                        assert!((x - y).abs() <= tol, "{path:?} n={n} d={d} ({i},{j}): {y} vs {x}");
                        bits.push(y.to_bits());
                    }
                }
                // Rows past d of the padded columns are left alone.
                for j in 0..d {
                    for i in d..ld {
                        assert_eq!(got[i + j * ld], 0.5, "{path:?} n={n} d={d} wrote row {i} of column {j}");
                    }
                }
                if path != Path::Portable {
                    lower_bits.push((path, bits));
                }
            }
            // The SIMD paths sum each entry in the same order: the same bits.
            for (path, bits) in lower_bits.iter().skip(1) {
                assert!(bits == &lower_bits[0].1, "n={n} d={d}: {path:?} differs from {:?}", lower_bits[0].0);
            }
        }
    }
}
