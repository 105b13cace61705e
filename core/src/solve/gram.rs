//! The Gramian YᵀY of a factor matrix, with a summation order fixed by the
//! block layout alone, so every cluster shape reduces it to the same bits.

use crate::linalg::syrk::{panel_width, syrk_lower_add, syrk_lower_set};

/// Rows summed in f32 before their sums are added into the f64 Gramian:
/// the row solvers' chunk, so YᵀY has the precision of their Grams.
const GRAM_CHUNK_ROWS: usize = super::GATHER_CHUNK;

/// YᵀY (k×k, f64) of `factors` (rows×k, row-major), summed chunk by chunk in row order.
pub fn block_gram(factors: &[f32], k: usize) -> Vec<f64> {
    let mut g = vec![0.0f64; k * k];
    block_gram_into(factors, k, &mut g);
    g
}

/// [`block_gram`] into `g` (k×k; overwritten), the same bits: callers that
/// reduce many blocks reuse one buffer rather than touch fresh pages for
/// each (at k = 1024 a Gramian is 8 MB).
///
/// The row solvers' Gram kernel ([`syrk_lower_add`]) computes it: f32
/// products summed over each chunk of [`GRAM_CHUNK_ROWS`] rows, added into
/// f64, the lower triangle only. Against f64 products throughout that is
/// half the multiplies at twice the lanes (27 → 8.7 ms for 41,000 rows at
/// k = 128, one thread), for the f32 rounding of 256-term sums: about
/// 1e-7 relative, the order of the f32 copy of YᵀY the CG solver uses.
pub fn block_gram_into(factors: &[f32], k: usize, g: &mut [f64]) {
    assert!(g.len() >= k * k, "block_gram: output smaller than k×k");
    let rows = factors.len() / k.max(1);
    let w = panel_width(k);
    // Rows of k floats are already a panel where k is whole vectors;
    // otherwise each chunk is copied into rows padded to w.
    let mut padded = if w == k {
        Vec::new()
    } else {
        vec![0.0f32; GRAM_CHUNK_ROWS.min(rows) * w]
    };
    let mut scratch = vec![0.0f32; w * w];
    let mut start = 0;
    loop {
        let n = GRAM_CHUNK_ROWS.min(rows - start);
        let chunk = &factors[start * k..(start + n) * k];
        let panel = if w == k {
            chunk
        } else {
            for (dst, src) in padded.chunks_exact_mut(w).zip(chunk.chunks_exact(k)) {
                dst[..k].copy_from_slice(src);
            }
            &padded[..n * w]
        };
        if start == 0 {
            syrk_lower_set(panel, n, w, k, &mut scratch, g, k);
        } else {
            syrk_lower_add(panel, n, w, k, &mut scratch, g, k);
        }
        start += n;
        if start >= rows {
            break;
        }
    }
    mirror_lower(g, k);
}

/// Copy the lower triangle of `g` (k×k) into its upper, in square tiles so
/// both the reads and the strided writes stay in cache.
fn mirror_lower(g: &mut [f64], k: usize) {
    const TILE: usize = 64;
    for jb in (0..k).step_by(TILE) {
        for ib in (jb..k).step_by(TILE) {
            for j in jb..(jb + TILE).min(k) {
                for i in ib.max(j + 1)..(ib + TILE).min(k) {
                    g[j + i * k] = g[i + j * k];
                }
            }
        }
    }
}

/// Sum per-block Gramians in block order (the order is part of the result).
pub fn sum_grams<'a>(k: usize, partials: impl IntoIterator<Item = &'a [f64]>) -> Vec<f64> {
    sum_in_order(k * k, partials)
}

/// Sum arrays of `len` values in the order given, from zero, value by
/// value: [`sum_grams`] of whole matrices, or of their lower triangles
/// (the same sums, entry by entry).
pub fn sum_in_order<'a>(len: usize, partials: impl IntoIterator<Item = &'a [f64]>) -> Vec<f64> {
    let mut g = vec![0.0f64; len];
    for p in partials {
        for (a, b) in g.iter_mut().zip(p) {
            *a += b;
        }
    }
    g
}

/// The lower triangle of the symmetric k×k `g`, row by row (k(k+1)/2
/// values): how a block's Gramian travels, half the bytes of the full matrix.
pub fn lower_triangle(g: &[f64], k: usize) -> Vec<f64> {
    (0..k).flat_map(|i| g[i * k..i * k + i + 1].iter().copied()).collect()
}

/// The symmetric k×k matrix whose lower triangle is `t` (as [`lower_triangle`]
/// lays it out); `None` when `t` has the wrong length.
pub fn from_lower_triangle(t: &[f64], k: usize) -> Option<Vec<f64>> {
    if t.len() != k * (k + 1) / 2 {
        return None;
    }
    let mut g = vec![0.0; k * k];
    let mut at = 0;
    for i in 0..k {
        for j in 0..=i {
            g[i * k + j] = t[at];
            g[j * k + i] = t[at];
            at += 1;
        }
    }
    Some(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn a_gramian_travels_as_its_lower_triangle() {
        let k = 5;
        let mut g = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..=i {
                let v = (i * 10 + j) as f64 + 0.5;
                g[i * k + j] = v;
                g[j * k + i] = v;
            }
        }
        let t = lower_triangle(&g, k);
        assert_eq!(t.len(), 15);
        assert_eq!(&t[..4], &[0.5, 10.5, 11.5, 20.5]);
        assert_eq!(from_lower_triangle(&t, k), Some(g));
        assert_eq!(from_lower_triangle(&t[1..], k), None);
        assert_eq!(from_lower_triangle(&[], 0), Some(vec![]));
    }

    /// The coordinator sums blocks' lower triangles and makes the sum whole:
    /// the bits of summing the whole matrices, as the single-process path does.
    #[test]
    fn summed_lower_triangles_are_the_summed_gramians() {
        let (rows, k) = (40, 9);
        let mut rng = SplitMix64::new(11);
        let blocks: Vec<Vec<f64>> = (0..5)
            .map(|_| {
                let y: Vec<f32> = (0..rows * k).map(|_| (rng.next_normal() * 1e3) as f32).collect();
                block_gram(&y, k)
            })
            .collect();
        let whole = sum_grams(k, blocks.iter().map(Vec::as_slice));
        let lowers: Vec<Vec<f64>> = blocks.iter().map(|g| lower_triangle(g, k)).collect();
        let summed = sum_in_order(k * (k + 1) / 2, lowers.iter().map(Vec::as_slice));
        let got = from_lower_triangle(&summed, k).unwrap();
        assert!(got.iter().zip(&whole).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    /// Over several chunks and mirror tiles, for k of whole vectors and not:
    /// the full YᵀY of the rows within the f32 rounding of a chunk's sums,
    /// exactly symmetric; no rows give zeros.
    #[test]
    fn block_gram_is_the_full_symmetric_product() {
        let mut rng = SplitMix64::new(4);
        for (rows, k) in [(2 * GRAM_CHUNK_ROWS + 37, 70), (GRAM_CHUNK_ROWS + 1, 32), (3, 5), (0, 16)] {
            let y: Vec<f32> = (0..rows * k).map(|_| rng.next_normal() as f32).collect();
            let mut g = vec![f64::NAN; k * k];
            block_gram_into(&y, k, &mut g);
            for i in 0..k {
                for j in 0..k {
                    let want: f64 = (0..rows).map(|r| y[r * k + i] as f64 * y[r * k + j] as f64).sum();
                    let tol = 1e-5 * (rows.max(1) as f64).sqrt() * (1.0 + want.abs());
                    assert!(
                        (g[i + j * k] - want).abs() < tol,
                        "rows={rows} k={k} ({i}, {j}): {} vs {want}",
                        g[i + j * k]
                    );
                    assert_eq!(g[i + j * k].to_bits(), g[j + i * k].to_bits(), "rows={rows} k={k}: symmetric");
                }
            }
        }
    }
}
