//! Dense kernels through ndarray-linalg over the system LAPACK (`lapack` feature).

use ndarray::{ArrayViewMut1, ArrayViewMut2, ShapeBuilder};
use ndarray_linalg::cholesky::{FactorizeCInto, SolveC};
use ndarray_linalg::UPLO;

use super::NotPositiveDefinite;

pub fn gram_add(x: &[f64], n: usize, d: usize, a: &mut [f64]) {
    if n == 0 {
        return;
    }
    let xm = ndarray::ArrayView2::from_shape((n, d).f(), x).expect("gram input shape");
    let mut am = ArrayViewMut2::from_shape((d, d).f(), a).expect("gram output shape");
    ndarray::linalg::general_mat_mul(1.0, &xm.t(), &xm, 1.0, &mut am);
}

pub fn cholesky_solve(a: &mut [f64], b: &mut [f64], d: usize) -> Result<(), NotPositiveDefinite> {
    let mut am = ArrayViewMut2::from_shape((d, d).f(), a).expect("solve matrix shape");
    let mut bm = ArrayViewMut1::from_shape(d, b).expect("solve rhs shape");
    // potrf then potrs; a failed factorization means a non-positive pivot.
    let factor = am
        .view_mut()
        .factorizec_into(UPLO::Lower)
        .map_err(|_| NotPositiveDefinite { pivot: 0 })?;
    factor.solvec_inplace(&mut bm).map_err(|_| NotPositiveDefinite { pivot: 0 })?;
    Ok(())
}
