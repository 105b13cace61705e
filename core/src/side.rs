//! The two sides of the factorization and their factor matrices.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Users,
    Items,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Users => Side::Items,
            Side::Items => Side::Users,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::Users => "users",
            Side::Items => "items",
        }
    }

    /// Mixed into per-id seeds so a user and an item with the same id start differently.
    pub(crate) fn seed_tag(self) -> u64 {
        match self {
            Side::Users => 0x5553_4552_5355_0001,
            Side::Items => 0x4954_454D_5349_0002,
        }
    }
}

/// One side's factors (n×k, f32 as Spark stores them) and biases (empty in
/// unbiased models).
#[derive(Debug, Clone, PartialEq)]
pub struct Factors {
    pub matrix: Array2<f32>,
    pub bias: Vec<f32>,
}

impl Factors {
    /// `n` rows of `k` zeros, with zero biases when `biased`.
    pub fn zeros(n: usize, k: usize, biased: bool) -> Factors {
        Factors {
            matrix: Array2::zeros((n, k)),
            bias: if biased { vec![0.0; n] } else { Vec::new() },
        }
    }

    pub fn n_rows(&self) -> usize {
        self.matrix.nrows()
    }

    pub fn k(&self) -> usize {
        self.matrix.ncols()
    }

    /// The factor matrix as one row-major slice.
    pub fn flat(&self) -> &[f32] {
        self.matrix.as_slice().expect("factor matrices are standard layout")
    }

    pub fn flat_mut(&mut self) -> &mut [f32] {
        self.matrix.as_slice_mut().expect("factor matrices are standard layout")
    }

    /// [`Factors::flat_mut`] and the biases, both at once.
    pub fn parts_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        let rows = self.matrix.as_slice_mut().expect("factor matrices are standard layout");
        (rows, &mut self.bias)
    }

    #[inline]
    pub fn row(&self, r: usize) -> &[f32] {
        let k = self.k();
        &self.flat()[r * k..(r + 1) * k]
    }

    #[inline]
    pub fn bias_of(&self, r: usize) -> f32 {
        self.bias.get(r).copied().unwrap_or(0.0)
    }
}
