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

pub fn cholesky_solve(a: &mut [f64], ld: usize, b: &mut [f64], d: usize) -> Result<(), NotPositiveDefinite> {
    if ld == d {
        return factor_and_solve(&mut a[..d * d], b, d);
    }
    // A contiguous copy when the columns are padded (this backend is the
    // reference, not the fast path); L is copied back, as the other
    // backends leave it in `a` (the Gibbs sampler draws with it).
    let mut packed = vec![0.0; d * d];
    for j in 0..d {
        packed[j * d..(j + 1) * d].copy_from_slice(&a[j * ld..j * ld + d]);
    }
    factor_and_solve(&mut packed, b, d)?;
    for j in 0..d {
        a[j * ld..j * ld + d].copy_from_slice(&packed[j * d..(j + 1) * d]);
    }
    Ok(())
}

/// potrf then potrs on a contiguous d×d matrix, L left in its lower triangle.
fn factor_and_solve(a: &mut [f64], b: &mut [f64], d: usize) -> Result<(), NotPositiveDefinite> {
    let mut am = ArrayViewMut2::from_shape((d, d).f(), a).expect("solve matrix shape");
    let mut bm = ArrayViewMut1::from_shape(d, &mut b[..d]).expect("solve rhs shape");
    // A failed factorization means a non-positive pivot.
    let factor = am
        .view_mut()
        .factorizec_into(UPLO::Lower)
        .map_err(|_| NotPositiveDefinite { pivot: 0 })?;
    factor.solvec_inplace(&mut bm).map_err(|_| NotPositiveDefinite { pivot: 0 })?;
    Ok(())
}
