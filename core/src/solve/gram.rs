//! The Gramian YᵀY of a factor matrix, with a summation order fixed by the
//! block layout alone, so every cluster shape reduces it to the same bits.

use crate::linalg::{Backend, DenseScratch};

/// Rows converted and multiplied per step (bounds scratch memory).
const GRAM_CHUNK_ROWS: usize = 512;

/// YᵀY (k×k, f64) of `factors` (rows×k, row-major), summed chunk by chunk in row order.
pub fn block_gram(factors: &[f32], k: usize, backend: Backend) -> Vec<f64> {
    let mut g = vec![0.0f64; k * k];
    block_gram_into(factors, k, backend, &mut g);
    g
}

/// [`block_gram`] into `g` (k×k; overwritten), the same bits: callers that
/// reduce many blocks reuse one buffer rather than touch fresh pages for
/// each (at k = 1024 a Gramian is 8 MB).
pub fn block_gram_into(factors: &[f32], k: usize, backend: Backend, g: &mut [f64]) {
    g.fill(0.0);
    let rows = factors.len() / k.max(1);
    let mut x = vec![0.0f64; GRAM_CHUNK_ROWS.min(rows.max(1)) * k];
    let mut dense = DenseScratch::new(backend, k);
    let mut start = 0;
    while start < rows {
        let n = GRAM_CHUNK_ROWS.min(rows - start);
        for j in 0..n {
            let row = &factors[(start + j) * k..(start + j + 1) * k];
            for (f, &v) in row.iter().enumerate() {
                x[j + f * n] = v as f64;
            }
        }
        dense.gram_add(&x[..n * k], n, k, g);
        start += n;
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
    let mut g = vec![0.0f64; k * k];
    for p in partials {
        for (a, b) in g.iter_mut().zip(p) {
            *a += b;
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Over several chunks and mirror tiles: the full YᵀY of the rows,
    /// exactly symmetric, for every backend.
    #[test]
    fn block_gram_is_the_full_symmetric_product() {
        let (rows, k) = (2 * GRAM_CHUNK_ROWS + 37, 70);
        let mut rng = SplitMix64::new(4);
        let y: Vec<f32> = (0..rows * k).map(|_| rng.next_normal() as f32).collect();
        for backend in Backend::available() {
            let g = block_gram(&y, k, backend);
            for i in 0..k {
                for j in 0..k {
                    let want: f64 = (0..rows).map(|r| y[r * k + i] as f64 * y[r * k + j] as f64).sum();
                    assert!((g[i + j * k] - want).abs() < 1e-9 * (1.0 + want.abs()), "{backend:?} ({i}, {j})");
                    assert_eq!(g[i + j * k], g[j + i * k], "{backend:?} symmetric");
                }
            }
        }
    }
}
