//! The Gramian YᵀY of a factor matrix, with a summation order fixed by the
//! block layout alone, so every cluster shape reduces it to the same bits.

use crate::linalg::{Backend, DenseScratch};

/// Rows converted and multiplied per step (bounds scratch memory).
const GRAM_CHUNK_ROWS: usize = 512;

/// YᵀY (k×k, f64) of `factors` (rows×k, row-major), summed chunk by chunk in row order.
pub fn block_gram(factors: &[f32], k: usize, backend: Backend) -> Vec<f64> {
    let mut g = vec![0.0f64; k * k];
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
        dense.gram_add(&x[..n * k], n, k, &mut g);
        start += n;
    }
    g
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
