use super::*;
use ndarray::Array2;

fn spd3() -> Vec<f64> {
    // Column-major [[2, 0.5, 0.2], [0.5, 1, 0.3], [0.2, 0.3, 1.5]].
    vec![2.0, 0.5, 0.2, 0.5, 1.0, 0.3, 0.2, 0.3, 1.5]
}

fn inverse(a: &[f64], d: usize) -> Vec<f64> {
    // Gauss-Jordan, written apart from the Cholesky under test.
    let mut m: Vec<Vec<f64>> = (0..d)
        .map(|i| {
            (0..2 * d)
                .map(|j| {
                    if j < d {
                        a[i + j * d]
                    } else if j - d == i {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    for c in 0..d {
        let p = (c..d).max_by(|&x, &y| m[x][c].abs().total_cmp(&m[y][c].abs())).unwrap();
        m.swap(c, p);
        let piv = m[c][c];
        m[c].iter_mut().for_each(|v| *v /= piv);
        for r in 0..d {
            if r != c {
                let f = m[r][c];
                let row_c = m[c].clone();
                m[r].iter_mut().zip(&row_c).for_each(|(v, w)| *v -= f * w);
            }
        }
    }
    let mut inv = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            inv[i + j * d] = m[i][d + j];
        }
    }
    inv
}

#[test]
fn gamma_draws_have_the_gamma_moments() {
    let mut rng = SplitMix64::new(3);
    for shape in [0.5, 1.0, 3.0, 50.0] {
        let n = 40_000;
        let xs: Vec<f64> = (0..n).map(|_| sample_gamma(shape, &mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - shape).abs() < 0.03 * shape.max(1.0), "shape {shape}: mean {mean}");
        assert!((var - shape).abs() < 0.06 * shape.max(1.0), "shape {shape}: variance {var}");
        assert!(xs.iter().all(|&x| x > 0.0));
    }
}

/// The mean of Wishart(W, ν) is νW.
#[test]
fn wishart_draws_average_to_dof_times_scale() {
    let w = spd3();
    let w_inv = inverse(&w, 3);
    let dof = 7.0;
    let mut rng = SplitMix64::new(11);
    let n = 20_000;
    let mut acc = [0.0; 9];
    for _ in 0..n {
        let s = sample_wishart(&w_inv, dof, 3, &mut rng);
        for (a, v) in acc.iter_mut().zip(&s) {
            *a += v / n as f64;
        }
        assert_eq!(s[1], s[3], "symmetric");
    }
    for (a, v) in acc.iter().zip(&w) {
        assert!((a - dof * v).abs() < 0.05 * dof * 2.0, "{acc:?} against {}·{w:?}", dof);
    }
}

/// With many rows from N(m, Σ), the posterior concentrates: the drawn
/// prior's precision is close to Σ⁻¹ and its mean close to m.
#[test]
fn the_drawn_prior_concentrates_on_the_rows_distribution() {
    let sigma = spd3();
    let l = cholesky_lower(&sigma, 3);
    let m = [0.5, -1.0, 2.0];
    let n = 30_000;
    let mut rng = SplitMix64::new(5);
    let mut rows = Array2::<f32>::zeros((n, 2));
    let mut bias = vec![0f32; n];
    for r in 0..n {
        let z: Vec<f64> = (0..3).map(|_| rng.next_normal()).collect();
        let x: Vec<f64> = (0..3).map(|i| m[i] + (0..=i).map(|t| l[i + t * 3] * z[t]).sum::<f64>()).collect();
        rows[[r, 0]] = x[0] as f32;
        rows[[r, 1]] = x[1] as f32;
        bias[r] = x[2] as f32;
    }
    let f = Factors { matrix: rows, bias };
    let moments = RowMoments::of(&f);
    assert_eq!((moments.dim, moments.count), (3, n));
    let prior = sample_row_prior(&moments, &mut SplitMix64::new(9));
    let want = inverse(&sigma, 3);
    for (got, w) in prior.precision.iter().zip(&want) {
        assert!((got - w).abs() < 0.05, "precision {:?} against {want:?}", prior.precision);
    }
    let mean = {
        let cov = inverse(&prior.precision, 3);
        (0..3)
            .map(|i| (0..3).map(|j| cov[i + j * 3] * prior.precision_mean[j]).sum::<f64>())
            .collect::<Vec<_>>()
    };
    for (got, w) in mean.iter().zip(&m) {
        assert!((got - w).abs() < 0.03, "mean {mean:?} against {m:?}");
    }
}

/// Rows 1 and 3 in one dimension: N = 2, x̄ = 2, scatter 2, so β* = 4,
/// ν* = 3, μ* = 2·2/4 = 1 and W*⁻¹ = 1 + 2 + (2·2/4)·2² = 7.
#[test]
fn the_posterior_of_two_rows_is_the_one_worked_by_hand() {
    let f = Factors {
        matrix: Array2::from_shape_vec((2, 1), vec![1.0, 3.0]).unwrap(),
        bias: Vec::new(),
    };
    let post = NormalWishart::posterior(&RowMoments::of(&f));
    assert_eq!(
        post,
        NormalWishart {
            mean: vec![1.0],
            beta: 4.0,
            dof: 3.0,
            scale_inverse: vec![7.0],
        }
    );
}

/// The moments are plain sums, whatever the partial sums' boundaries.
#[test]
fn row_moments_are_the_sums_written_out() {
    let n = 2 * ROWS_PER_PARTIAL + 17;
    let mut rng = SplitMix64::new(1);
    let matrix = Array2::from_shape_fn((n, 2), |_| rng.next_normal() as f32);
    let f = Factors { matrix, bias: Vec::new() };
    let m = RowMoments::of(&f);
    assert_eq!(m.dim, 2);
    for i in 0..2 {
        let s: f64 = (0..n).map(|r| f.row(r)[i] as f64).sum();
        assert!((m.sum[i] - s).abs() < 1e-9);
        for j in 0..2 {
            let o: f64 = (0..n).map(|r| f.row(r)[i] as f64 * f.row(r)[j] as f64).sum();
            assert!((m.outer[i + j * 2] - o).abs() < 1e-9);
        }
    }
}
