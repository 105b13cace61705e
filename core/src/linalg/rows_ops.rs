//! The observed-item terms of an implicit CG step, over a row's item rows:
//! `dᵢ = yᵢ·v` for every item, then `out += Σᵢ wᵢ·yᵢ`.
//!
//! Item by item (a dot product, then an axpy) these are latency-bound: each
//! dot ends in a horizontal sum and each axpy loads and stores all of `out`.
//! Here four items' dots run side by side, and the weighted sum keeps 64
//! output lanes in registers across all items, storing once. Summation
//! orders are fixed by k and the item count alone, so results are
//! deterministic.

use multiversion::multiversion;

/// Items whose dot products run side by side.
const DOT_GROUP: usize = 4;
/// Output lanes the weighted sum keeps in registers.
const SUM_LANES: usize = 64;

/// Sixteen lanes summed in a fixed tree.
#[inline(always)]
fn reduce16(a: &[f32; 16]) -> f32 {
    let mut h = [0f32; 8];
    for l in 0..8 {
        h[l] = a[l] + a[l + 8];
    }
    ((h[0] + h[4]) + (h[1] + h[5])) + ((h[2] + h[6]) + (h[3] + h[7]))
}

/// Rows ahead of the copy whose cache lines are requested: enough to cover a
/// miss to memory at a few nanoseconds per 256-byte row.
pub(crate) const GATHER_AHEAD: usize = 8;

/// Append rows `cols` of `y` (rows of `k` floats) to `dst`, in order.
///
/// The rows are scattered over `y`, so each copy waits on a cache miss;
/// asking for the lines of the row `GATHER_AHEAD` places ahead overlaps
/// those misses. A plain copy: the values are those of `y`, bit for bit.
#[inline]
pub fn gather_rows(y: &[f32], k: usize, cols: &[u32], dst: &mut Vec<f32>) {
    dst.reserve(cols.len() * k);
    for (j, &c) in cols.iter().enumerate() {
        if let Some(&ahead) = cols.get(j + GATHER_AHEAD) {
            prefetch_row(y, ahead as usize * k, k);
        }
        dst.extend_from_slice(&y[c as usize * k..(c as usize + 1) * k]);
    }
}

/// Ask for the cache lines of `y[at..at + len]` (a hint: nothing is read).
#[inline(always)]
pub(crate) fn prefetch_row(y: &[f32], at: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if at + len <= y.len() {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // 16 floats per 64-byte line.
        for off in (0..len).step_by(16) {
            // SAFETY: prefetch never faults, and the address is inside `y`.
            #[allow(unused_unsafe)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(y.as_ptr().add(at + off) as *const i8)
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (y, at, len);
}

/// `out[i] = y[cols[i]] · v` (rows of `y` are `k` floats).
#[multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
pub fn dots(y: &[f32], cols: &[u32], k: usize, v: &[f32], out: &mut [f32]) {
    let v = &v[..k];
    let whole = k / 16 * 16;
    let row = |c: u32| &y[c as usize * k..(c as usize + 1) * k];
    let mut groups = cols.chunks_exact(DOT_GROUP);
    let mut at = 0;
    for g in groups.by_ref() {
        // Spelled out: `array::from_fn` stayed an out-of-line call here (7% of a CG run).
        let rows: [&[f32]; DOT_GROUP] = [row(g[0]), row(g[1]), row(g[2]), row(g[3])];
        let mut acc = [[0f32; 16]; DOT_GROUP];
        for c0 in (0..whole).step_by(16) {
            let vc: &[f32; 16] = v[c0..c0 + 16].try_into().expect("16 lanes");
            for j in 0..DOT_GROUP {
                let yc: &[f32; 16] = rows[j][c0..c0 + 16].try_into().expect("16 lanes");
                for l in 0..16 {
                    acc[j][l] = yc[l].mul_add(vc[l], acc[j][l]);
                }
            }
        }
        for j in 0..DOT_GROUP {
            let mut s = reduce16(&acc[j]);
            for c in whole..k {
                s = rows[j][c].mul_add(v[c], s);
            }
            out[at + j] = s;
        }
        at += DOT_GROUP;
    }
    for &c in groups.remainder() {
        let r = row(c);
        let mut acc = [0f32; 16];
        for c0 in (0..whole).step_by(16) {
            for l in 0..16 {
                acc[l] = r[c0 + l].mul_add(v[c0 + l], acc[l]);
            }
        }
        let mut s = reduce16(&acc);
        for c in whole..k {
            s = r[c].mul_add(v[c], s);
        }
        out[at] = s;
        at += 1;
    }
}

/// `out += Σᵢ w[i] · y[cols[i]]` (rows of `y` are `k` floats).
#[multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
pub fn add_weighted(y: &[f32], cols: &[u32], k: usize, w: &[f32], out: &mut [f32]) {
    let mut c0 = 0;
    while c0 + SUM_LANES <= k {
        let mut acc = [0f32; SUM_LANES];
        for (&c, &wi) in cols.iter().zip(w) {
            let yc: &[f32; SUM_LANES] = y[c as usize * k + c0..c as usize * k + c0 + SUM_LANES].try_into().expect("lanes");
            for l in 0..SUM_LANES {
                acc[l] = wi.mul_add(yc[l], acc[l]);
            }
        }
        for (o, a) in out[c0..c0 + SUM_LANES].iter_mut().zip(&acc) {
            *o += a;
        }
        c0 += SUM_LANES;
    }
    while c0 + 16 <= k {
        let mut acc = [0f32; 16];
        for (&c, &wi) in cols.iter().zip(w) {
            let yc: &[f32; 16] = y[c as usize * k + c0..c as usize * k + c0 + 16].try_into().expect("lanes");
            for l in 0..16 {
                acc[l] = wi.mul_add(yc[l], acc[l]);
            }
        }
        for (o, a) in out[c0..c0 + 16].iter_mut().zip(&acc) {
            *o += a;
        }
        c0 += 16;
    }
    for c in c0..k {
        let mut s = 0f32;
        for (&i, &wi) in cols.iter().zip(w) {
            s = wi.mul_add(y[i as usize * k + c], s);
        }
        out[c] += s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Against f64 loops, for k around the lane edges and item counts around the group size.
    #[test]
    fn dots_and_weighted_sums_match_f64_loops() {
        let mut rng = SplitMix64::new(12);
        for &(k, n) in &[(1usize, 1usize), (7, 3), (16, 4), (33, 9), (64, 5), (65, 8), (128, 13), (200, 2)] {
            let m = 50;
            let y: Vec<f32> = (0..m * k).map(|_| rng.next_normal() as f32).collect();
            let cols: Vec<u32> = (0..n).map(|_| (rng.next_u64() % m as u64) as u32).collect();
            let v: Vec<f32> = (0..k).map(|_| rng.next_normal() as f32).collect();
            let w: Vec<f32> = (0..n).map(|_| rng.next_normal() as f32).collect();
            let mut d = vec![0f32; n];
            dots(&y, &cols, k, &v, &mut d);
            let mut out: Vec<f32> = (0..k).map(|c| c as f32 * 0.01).collect();
            add_weighted(&y, &cols, k, &w, &mut out);
            for (i, &c) in cols.iter().enumerate() {
                let want: f64 = (0..k).map(|j| y[c as usize * k + j] as f64 * v[j] as f64).sum();
                assert!(
                    (d[i] as f64 - want).abs() <= 1e-5 * (k as f64).sqrt() * (1.0 + want.abs()),
                    "dot k={k} i={i}"
                );
            }
            for j in 0..k {
                let want: f64 = j as f64 * 0.01
                    + cols
                        .iter()
                        .zip(&w)
                        .map(|(&c, &wi)| wi as f64 * y[c as usize * k + j] as f64)
                        .sum::<f64>();
                assert!(
                    (out[j] as f64 - want).abs() <= 1e-5 * (n as f64).sqrt() * (1.0 + want.abs()),
                    "sum k={k} j={j}"
                );
            }
        }
    }
}
