//! Cholesky factorization and solve for the small dense systems of the row
//! solvers (d ≈ 10–300), in f64.
//!
//! A general blocked factorization (faer's, LAPACK's) spends much of its time
//! in set-up and dispatch at these sizes. This one is right-looking over
//! panels of four pivot columns, updating four trailing columns at a time
//! in whole vectors (the compiler vectorizes the fixed-size loops, AVX-512
//! where the CPU has it), with the right-hand side carried as an extra row
//! so the forward substitution costs nothing extra. There are no
//! reassociated reductions except the fixed-order dot products of the back
//! substitution, so every vector width gives the same bits. Only the lower
//! triangle of `a` is read; it is overwritten by L.

use multiversion::multiversion;

use super::vec::dot_f64;
use super::NotPositiveDefinite;

/// Largest d this kernel is used for: past it faer's blocked code wins.
pub const MAX_DIM: usize = 256;

/// Pivot columns per trailing update.
const PANEL: usize = 4;

/// Trailing columns updated together (PANEL×COLS multiply-adds per row vector).
const COLS: usize = 4;

/// `b ← a⁻¹b` for symmetric positive definite `a`: d×d, column-major with
/// leading dimension `ld > d`, lower triangle read. Row d of `a` is scratch:
/// the right-hand side rides there through the factorization, which so does
/// the forward substitution as it goes. Rows past d are scratch too.
pub fn cholesky_solve(a: &mut [f64], ld: usize, b: &mut [f64], d: usize) -> Result<(), NotPositiveDefinite> {
    assert!(ld > d && a.len() >= d * ld && b.len() >= d, "cholesky: matrix or rhs too small");
    for (j, &v) in b[..d].iter().enumerate() {
        a[d + j * ld] = v;
    }
    factor(&mut a[..d * ld], ld, d)?;
    back_substitute(&a[..d * ld], ld, b, d);
    Ok(())
}

#[multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
fn factor(a: &mut [f64], ld: usize, d: usize) -> Result<(), NotPositiveDefinite> {
    let mut jb = 0;
    while jb < d {
        let je = (jb + PANEL).min(d);
        // Factor the panel's columns left to right (updates within the panel).
        for j in jb..je {
            let pivot = a[j + j * ld];
            if pivot.is_nan() || pivot <= 0.0 {
                return Err(NotPositiveDefinite { pivot: j });
            }
            let l = pivot.sqrt();
            a[j + j * ld] = l;
            let inv = 1.0 / l;
            for v in &mut a[j + 1 + j * ld..(j + 1) * ld] {
                *v *= inv;
            }
            for c in j + 1..je {
                let (left, right) = a.split_at_mut(c * ld);
                let lj = &left[j * ld..(j + 1) * ld];
                let f = lj[c];
                for (x, &y) in right[c..ld].iter_mut().zip(&lj[c..ld]) {
                    *x = (-f).mul_add(y, *x);
                }
            }
        }
        // Trailing columns: subtract the panel's outer products. Each
        // column's rows start at a multiple of 8 at or above the diagonal, so
        // (with ld a multiple of 8, as the solvers pad it) every pass is whole
        // vectors; a row only ever mixes with itself and rows above the
        // column, so the rows above the diagonal (never read) take the junk.
        let (done, rest) = a.split_at_mut(je * ld);
        let panel = &done[jb * ld..je * ld];
        let mut c = je;
        while c < d {
            if je - jb == PANEL && c + COLS <= d {
                let block = &mut rest[(c - je) * ld..(c - je + COLS) * ld];
                trailing_block(panel, ld, c, block);
                c += COLS;
                continue;
            }
            let col = &mut rest[(c - je) * ld..(c - je + 1) * ld];
            for t in 0..je - jb {
                trailing_one(&panel[t * ld..(t + 1) * ld], c, col);
            }
            c += 1;
        }
        jb = je;
    }
    Ok(())
}

/// `col[i] −= pt[c]·pt[i]` for rows i from c rounded down to a multiple of 8.
#[inline(always)]
fn trailing_one(pt: &[f64], c: usize, col: &mut [f64]) {
    let start = c / 8 * 8;
    let f = -pt[c];
    for (x, &y) in col[start..].iter_mut().zip(&pt[start..]) {
        *x = f.mul_add(y, *x);
    }
}

/// The COLS columns `c..c+COLS` (held in `block`) minus the panel's outer
/// products, pivots in order (the same bits as PANEL calls of
/// [`trailing_one`] per column); each panel row vector is loaded once for all.
#[inline(always)]
fn trailing_block(panel: &[f64], ld: usize, c: usize, block: &mut [f64]) {
    let start = c / 8 * 8;
    let mut f = [[0.0; PANEL]; COLS];
    for (j, fj) in f.iter_mut().enumerate() {
        for (t, ft) in fj.iter_mut().enumerate() {
            *ft = -panel[t * ld + c + j];
        }
    }
    let whole = start + (ld - start) / 8 * 8;
    let mut i = start;
    while i < whole {
        let mut p = [[0.0; 8]; PANEL];
        for (t, pt) in p.iter_mut().enumerate() {
            pt.copy_from_slice(&panel[t * ld + i..t * ld + i + 8]);
        }
        for (j, fj) in f.iter().enumerate() {
            let xs = &mut block[j * ld + i..j * ld + i + 8];
            let mut v = [0.0; 8];
            v.copy_from_slice(xs);
            for t in 0..PANEL {
                for l in 0..8 {
                    v[l] = fj[t].mul_add(p[t][l], v[l]);
                }
            }
            xs.copy_from_slice(&v);
        }
        i += 8;
    }
    for (j, fj) in f.iter().enumerate() {
        for i in whole..ld {
            for t in 0..PANEL {
                block[j * ld + i] = fj[t].mul_add(panel[t * ld + i], block[j * ld + i]);
            }
        }
    }
}

/// Lᵀx = z, with z in row d of `a` (left there by [`factor`]):
/// x[i] = (z[i] − L[i+1..d, i]·x[i+1..d]) / L[i, i].
#[multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
fn back_substitute(a: &[f64], ld: usize, b: &mut [f64], d: usize) {
    for i in (0..d).rev() {
        let col = &a[i * ld..i * ld + d];
        let s = dot_f64(&col[i + 1..], &b[i + 1..d]);
        b[i] = (a[d + i * ld] - s) / col[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Against a closed-form case and against faer's blocked factorization.
    #[test]
    fn solves_match_closed_form_and_faer() {
        // [[4, 2], [2, 3]] x = [2, 1] ⇒ x = [0.5, 0].
        let mut a = vec![4.0, 2.0, 0.0, 2.0, 3.0, 0.0];
        let mut b = vec![2.0, 1.0];
        cholesky_solve(&mut a, 3, &mut b, 2).unwrap();
        assert!((b[0] - 0.5).abs() < 1e-15 && b[1].abs() < 1e-15, "{b:?}");

        let mut rng = SplitMix64::new(5);
        for d in [1usize, 3, 4, 5, 8, 9, 17, 64, 65, 129] {
            let a = super::super::random_spd(&mut rng, d + 7, d, 0.1);
            let b: Vec<f64> = (0..d).map(|_| rng.next_normal()).collect();
            let mut want = b.clone();
            let mut s = super::super::faer_backend::Scratch::new(d);
            s.faer_cholesky_solve(&mut a.clone(), d, &mut want, d).unwrap();
            // The strict upper triangle and the rows past d must not be read.
            let ld = (d + 1).div_ceil(8) * 8;
            let mut lower = vec![f64::NAN; ld * d];
            for j in 0..d {
                for i in j..d {
                    lower[i + j * ld] = a[i + j * d];
                }
            }
            let mut got = b.clone();
            cholesky_solve(&mut lower, ld, &mut got, d).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-9 * (1.0 + w.abs()), "d={d}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn names_the_failing_pivot() {
        let mut a = vec![1.0, 2.0, 0.0, 2.0, 1.0, 0.0];
        assert_eq!(cholesky_solve(&mut a, 3, &mut [1.0, 1.0], 2), Err(NotPositiveDefinite { pivot: 1 }));
        let mut a = vec![f64::NAN, 0.0, 0.0, 0.0, 1.0, 0.0];
        assert_eq!(cholesky_solve(&mut a, 3, &mut [1.0, 1.0], 2), Err(NotPositiveDefinite { pivot: 0 }));
    }
}
