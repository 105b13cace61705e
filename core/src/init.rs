//! Initial factors, seeded per id.
//!
//! Each row's start vector comes from a stream seeded by (seed, side, id), so
//! it does not depend on how rows are split into blocks or workers, nor on
//! the order the data arrived in.

use ndarray::Array2;
use rayon::prelude::*;

use crate::rng::{fnv1a64, mix64, SplitMix64};
use crate::side::{Factors, Side};

/// Per id: a Gaussian vector normalized to unit length (Spark's choice), or
/// with `std`, entries drawn from N(0, std²/k) (Rendle et al.'s choice).
pub fn init_row(seed: u64, side: Side, id: &str, std: Option<f32>, out: &mut [f32]) {
    let mut rng = SplitMix64::new(mix64(seed ^ side.seed_tag()) ^ fnv1a64(id.as_bytes()));
    let mut norm = 0f64;
    let v: Vec<f64> = (0..out.len())
        .map(|_| {
            let x = rng.next_normal();
            norm += x * x;
            x
        })
        .collect();
    match std {
        Some(s) => {
            let scale = s as f64 / (out.len() as f64).sqrt();
            for (o, x) in out.iter_mut().zip(v) {
                *o = (x * scale) as f32;
            }
        }
        None => {
            let norm = norm.sqrt().max(1e-12);
            for (o, x) in out.iter_mut().zip(v) {
                *o = (x / norm) as f32;
            }
        }
    }
}

pub fn init_factors(ids: &[String], side: Side, seed: u64, k: usize, std: Option<f32>, biased: bool) -> Factors {
    let mut m = Array2::<f32>::zeros((ids.len(), k));
    if k > 0 {
        m.as_slice_mut()
            .expect("fresh array is contiguous")
            .par_chunks_mut(k)
            .zip(ids.par_iter())
            .for_each(|(row, id)| init_row(seed, side, id, std, row));
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
        let a = init_factors(&["x".into(), "y".into(), "z".into()], Side::Users, 7, 8, None, true);
        let b = init_factors(&["z".into(), "x".into()], Side::Users, 7, 8, None, true);
        assert_eq!(a.row(0), b.row(1));
        assert_eq!(a.row(2), b.row(0));
        let norm: f32 = a.row(1).iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        let items = init_factors(&["x".into()], Side::Items, 7, 8, None, false);
        assert_ne!(items.row(0), a.row(0));
        assert!(items.bias.is_empty());
        let reseeded = init_factors(&["x".into()], Side::Users, 8, 8, None, false);
        assert_ne!(reseeded.row(0), a.row(0));
    }

    #[test]
    fn gaussian_rows_have_the_asked_spread() {
        let k = 64;
        let ids: Vec<String> = (0..500).map(|i| i.to_string()).collect();
        let f = init_factors(&ids, Side::Items, 3, k, Some(0.5), false);
        let all: Vec<f64> = f.flat().iter().map(|&v| v as f64).collect();
        let n = all.len() as f64;
        let mean = all.iter().sum::<f64>() / n;
        let var = all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        // Entries ~ N(0, 0.5²/64): the sample std of 32,000 draws is within 2%.
        let want = 0.5 / (k as f64).sqrt();
        assert!((var.sqrt() / want - 1.0).abs() < 0.02, "std {} want {want}", var.sqrt());
        assert!(mean.abs() < 0.002, "mean {mean}");
        // The same stream as the unit-norm start: only the scale differs.
        let unit = init_factors(&ids, Side::Items, 3, k, None, false);
        let ratio = f.row(7)[0] / unit.row(7)[0];
        assert!(f
            .row(7)
            .iter()
            .zip(unit.row(7))
            .all(|(a, b)| (a / b - ratio).abs() < 1e-4 * ratio.abs()));
    }
}
