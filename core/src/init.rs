//! Initial factors, seeded per id.
//!
//! Each row's start vector comes from a stream seeded by (seed, side, id), so
//! it does not depend on how rows are split into blocks or workers, nor on
//! the order the data arrived in.

use ndarray::Array2;
use rayon::prelude::*;

use crate::rng::{fnv1a64, mix64, SplitMix64};
use crate::side::{Factors, Side};

/// Gaussian vector normalized to unit length (Spark's choice), per id.
pub fn init_row(seed: u64, side: Side, id: &str, out: &mut [f32]) {
    let mut rng = SplitMix64::new(mix64(seed ^ side.seed_tag()) ^ fnv1a64(id.as_bytes()));
    let mut norm = 0f64;
    let v: Vec<f64> = (0..out.len())
        .map(|_| {
            let x = rng.next_normal();
            norm += x * x;
            x
        })
        .collect();
    let norm = norm.sqrt().max(1e-12);
    for (o, x) in out.iter_mut().zip(v) {
        *o = (x / norm) as f32;
    }
}

pub fn init_factors(ids: &[String], side: Side, seed: u64, k: usize, biased: bool) -> Factors {
    let mut m = Array2::<f32>::zeros((ids.len(), k));
    if k > 0 {
        m.as_slice_mut()
            .expect("fresh array is contiguous")
            .par_chunks_mut(k)
            .zip(ids.par_iter())
            .for_each(|(row, id)| init_row(seed, side, id, row));
    }
    Factors {
        matrix: m,
        bias: if biased { vec![0.0; ids.len()] } else { Vec::new() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_depend_on_id_not_position() {
        let a = init_factors(&["x".into(), "y".into(), "z".into()], Side::Users, 7, 8, true);
        let b = init_factors(&["z".into(), "x".into()], Side::Users, 7, 8, true);
        assert_eq!(a.row(0), b.row(1));
        assert_eq!(a.row(2), b.row(0));
        let norm: f32 = a.row(1).iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        let items = init_factors(&["x".into()], Side::Items, 7, 8, false);
        assert_ne!(items.row(0), a.row(0));
        assert!(items.bias.is_empty());
        let reseeded = init_factors(&["x".into()], Side::Users, 8, 8, false);
        assert_ne!(reseeded.row(0), a.row(0));
    }
}
