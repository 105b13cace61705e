//! The default dense kernels: faer (pure Rust, runtime SIMD dispatch).

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, MatMut, MatRef, Par};

use super::NotPositiveDefinite;

pub struct Scratch {
    buf: MemBuffer,
}

impl Scratch {
    pub fn new(max_dim: usize) -> Self {
        let req = llt::factor::cholesky_in_place_scratch::<f64>(max_dim.max(1), Par::Seq, Default::default());
        Self { buf: MemBuffer::new(req) }
    }

    /// Small systems (every row solve at usual ranks) by our own kernel,
    /// larger ones by faer's blocked factorization.
    pub fn cholesky_solve(&mut self, a: &mut [f64], ld: usize, b: &mut [f64], d: usize) -> Result<(), NotPositiveDefinite> {
        if d <= super::small_cholesky::MAX_DIM && ld > d {
            return super::small_cholesky::cholesky_solve(a, ld, b, d);
        }
        self.faer_cholesky_solve(a, ld, b, d)
    }

    pub fn faer_cholesky_solve(&mut self, a: &mut [f64], ld: usize, b: &mut [f64], d: usize) -> Result<(), NotPositiveDefinite> {
        let mut am = MatMut::from_column_major_slice_with_stride_mut(&mut a[..(d.max(1) - 1) * ld + d], d, d, ld);
        let stack = MemStack::new(&mut self.buf);
        llt::factor::cholesky_in_place(am.as_mut(), Default::default(), Par::Seq, stack, Default::default()).map_err(|e| match e {
            llt::factor::LltError::NonPositivePivot { index } => NotPositiveDefinite { pivot: index },
        })?;
        let bm = MatMut::from_column_major_slice_mut(b, d, 1);
        llt::solve::solve_in_place(am.as_ref(), bm, Par::Seq, MemStack::new(&mut self.buf));
        Ok(())
    }
}

/// The lower triangle of `a += xᵀx`, by faer's triangular product (half a
/// general product's work); the upper triangle is left as it was.
pub fn gram_add(x: &[f64], n: usize, d: usize, a: &mut [f64]) {
    if n == 0 {
        return;
    }
    let xm = MatRef::from_column_major_slice(x, n, d);
    let am = MatMut::from_column_major_slice_mut(&mut a[..d * d], d, d);
    triangular::matmul(
        am,
        BlockStructure::TriangularLower,
        Accum::Add,
        xm.transpose(),
        BlockStructure::Rectangular,
        xm,
        BlockStructure::Rectangular,
        1.0,
        Par::Seq,
    );
}
