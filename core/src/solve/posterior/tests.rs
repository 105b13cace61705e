//! A drawn row against its conditional written out: the mean from the
//! dense normal equations, and the draw minus the mean equal to L⁻ᵀz for
//! the row's own normals z.

use super::*;
use crate::linalg::Backend;
use crate::solve::{RegScaling, SolverKind};

fn params(k: usize, biased: bool, backend: Backend) -> SolveParams {
    SolveParams {
        factors: k,
        lambda: 0.0,
        reg_scaling: RegScaling::None,
        feedback: Feedback::Explicit {
            biased,
            global_mean: if biased { 3.5 } else { 0.0 },
        },
        solver: SolverKind::Cholesky,
        backend,
    }
}

/// Textbook Cholesky of a dense symmetric matrix (row-major Vec<Vec>).
fn cholesky(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let d = a.len();
    let mut l = vec![vec![0.0; d]; d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|t| l[i][t] * l[j][t]).sum();
            l[i][j] = if i == j { (a[i][i] - s).sqrt() } else { (a[i][j] - s) / l[j][j] };
        }
    }
    l
}

fn check(k: usize, biased: bool, backend: Backend, n_ratings: usize) {
    let d = k + usize::from(biased);
    let m = 40;
    let mut rng = SplitMix64::new(k as u64 * 31 + n_ratings as u64);
    let fixed: Vec<f32> = (0..m * k).map(|_| (rng.next_normal() * 0.3) as f32).collect();
    let fixed_bias: Vec<f32> = if biased {
        (0..m).map(|_| (rng.next_normal() * 0.2) as f32).collect()
    } else {
        Vec::new()
    };
    // Row 0 has n_ratings ratings, row 1 none (it draws from the prior alone).
    let cols: Vec<u32> = (0..n_ratings as u32)
        .map(|c| c * 3 % m as u32)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let vals: Vec<f32> = cols.iter().map(|_| 1.0 + (rng.next_f64() * 4.0) as f32).collect();
    let indptr = [0, cols.len(), cols.len()];
    // A random symmetric positive definite prior precision and prior mean.
    let g: Vec<f64> = (0..d * d).map(|_| rng.next_normal() * 0.3).collect();
    let mut precision = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            precision[i + j * d] = (0..d).map(|t| g[i + t * d] * g[j + t * d]).sum::<f64>() + if i == j { 1.5 } else { 0.0 };
        }
    }
    let prior_mean: Vec<f64> = (0..d).map(|_| rng.next_normal()).collect();
    let precision_mean: Vec<f64> = (0..d).map(|i| (0..d).map(|j| precision[i + j * d] * prior_mean[j]).sum()).collect();
    let prior = RowPrior {
        dim: d,
        precision: precision.clone(),
        precision_mean: precision_mean.clone(),
    };
    let alpha = 2.0;
    let (seed, first_row) = (99, 1000);
    let p = params(k, biased, backend);
    let mut out = vec![0f32; 2 * k];
    let mut out_bias = [0f32; 2];
    let rows = RowsView {
        indptr: &indptr,
        indices: &cols,
        values: &vals,
    };
    let side = FixedSide {
        factors: &fixed,
        bias: &fixed_bias,
        total_rows: m,
    };
    sample_rows(
        &p,
        &prior,
        alpha,
        rows,
        side,
        seed,
        first_row,
        &mut out,
        biased.then_some(&mut out_bias[..]),
    )
    .unwrap();

    for row in 0..2 {
        let (rc, rv): (&[u32], &[f32]) = if row == 0 { (&cols, &vals) } else { (&[], &[]) };
        // A = αZᵀZ + Λ and b = αZᵀt + Λμ, written out.
        let mut a: Vec<Vec<f64>> = (0..d).map(|i| (0..d).map(|j| precision[i + j * d]).collect()).collect();
        let mut b = precision_mean.clone();
        for (&c, &v) in rc.iter().zip(rv) {
            let mut z: Vec<f64> = fixed[c as usize * k..(c as usize + 1) * k].iter().map(|&x| x as f64).collect();
            let mut t = v as f64;
            if biased {
                z.push(1.0);
                t -= 3.5 + fixed_bias[c as usize] as f64;
            }
            for i in 0..d {
                b[i] += alpha * z[i] * t;
                for j in 0..d {
                    a[i][j] += alpha * z[i] * z[j];
                }
            }
        }
        let l = cholesky(&a);
        // mean = A⁻¹b by forward and back substitution through L.
        let mut y = b.clone();
        for i in 0..d {
            y[i] = (b[i] - (0..i).map(|t| l[i][t] * y[t]).sum::<f64>()) / l[i][i];
        }
        let mut mean = y.clone();
        for i in (0..d).rev() {
            mean[i] = (y[i] - (i + 1..d).map(|t| l[t][i] * mean[t]).sum::<f64>()) / l[i][i];
        }
        let mut drawn: Vec<f64> = out[row * k..(row + 1) * k].iter().map(|&x| x as f64).collect();
        if biased {
            drawn.push(out_bias[row] as f64);
        }
        // Lᵀ(x − mean) must be the row's own normals.
        let mut z = vec![0.0; d];
        row_normals(seed, first_row + row as u64, &mut z);
        for i in 0..d {
            let got: f64 = (i..d).map(|t| l[t][i] * (drawn[t] - mean[t])).sum();
            let scale = (i..d).map(|t| l[t][i].abs()).sum::<f64>() * 1e-6 * (1.0 + mean.iter().fold(0.0f64, |m, v| m.max(v.abs())));
            assert!(
                (got - z[i]).abs() < 1e-4 + scale,
                "k {k}, row {row}, coordinate {i}: Lᵀ(x − mean) {got} against z {}",
                z[i]
            );
        }
    }
}

#[test]
fn a_drawn_row_is_its_conditional_mean_plus_the_cholesky_noise() {
    for backend in Backend::available() {
        check(5, true, backend, 12);
        check(6, false, backend, 7);
        // Past the small kernel's largest dimension: the blocked factorization's L.
        check(300, true, backend, 30);
    }
}

#[test]
fn a_prior_of_the_wrong_size_and_implicit_rows_are_refused() {
    let p = params(3, true, Backend::Faer);
    let prior = RowPrior {
        dim: 3,
        precision: vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        precision_mean: vec![0.0; 3],
    };
    let fixed = vec![0.5f32; 6];
    let bias = vec![0f32; 2];
    let (indptr, cols, vals) = ([0usize, 1], [1u32], [4.0f32]);
    let rows = RowsView {
        indptr: &indptr,
        indices: &cols,
        values: &vals,
    };
    let side = FixedSide {
        factors: &fixed,
        bias: &bias,
        total_rows: 2,
    };
    let (mut out, mut ob) = (vec![0f32; 3], vec![0f32; 1]);
    let e = sample_rows(&p, &prior, 2.0, rows, side, 1, 0, &mut out, Some(&mut ob)).unwrap_err();
    assert!(e.to_string().contains("the row prior has dimension 3, the rows 4"), "{e}");
    let e = sample_rows(&p, &prior, 0.0, rows, side, 1, 0, &mut out, Some(&mut ob)).unwrap_err();
    assert!(e.to_string().contains("prior has dimension"), "{e}");
    let bad_col = [7u32];
    let rows = RowsView { indices: &bad_col, ..rows };
    let ok_prior = RowPrior {
        dim: 4,
        precision: (0..16).map(|i| if i % 5 == 0 { 1.0 } else { 0.0 }).collect(),
        precision_mean: vec![0.0; 4],
    };
    let e = sample_rows(&p, &ok_prior, 2.0, rows, side, 1, 0, &mut out, Some(&mut ob)).unwrap_err();
    assert!(e.to_string().contains("column index 7 out of range"), "{e}");
}
