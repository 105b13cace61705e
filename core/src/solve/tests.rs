//! Row solves against closed-form solutions built independently here.

use super::*;
use crate::data::Csr;
use crate::linalg::Backend;
use crate::rng::SplitMix64;

/// Gaussian elimination with partial pivoting (independent of both backends).
fn gauss_solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs())).unwrap();
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            let pivot_row = a[c].clone();
            for (x, p) in a[r][c..].iter_mut().zip(&pivot_row[c..]) {
                *x -= f * p;
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|j| a[i][j] * x[j]).sum();
        x[i] = (b[i] - s) / a[i][i];
    }
    x
}

fn random_case(seed: u64, rows: usize, m: usize, k: usize, density: f64, implicit: bool) -> (Csr, Vec<f32>, Vec<f32>) {
    let mut rng = SplitMix64::new(seed);
    let (mut ru, mut ri, mut rv) = (vec![], vec![], vec![]);
    for u in 0..rows {
        let mut any = false;
        for i in 0..m {
            if rng.next_f64() < density || (!any && i == m - 1) {
                any = true;
                ru.push(u as u32);
                ri.push(i as u32);
                rv.push(if implicit {
                    (1 + rng.next_u64() % 5) as f32
                } else {
                    (1.0 + 4.0 * rng.next_f64()) as f32
                });
            }
        }
    }
    let csr = Csr::from_triples(rows, m, &ru, &ri, &rv);
    let fixed: Vec<f32> = (0..m * k).map(|_| (rng.next_normal() * 0.5) as f32).collect();
    let bias: Vec<f32> = (0..m).map(|_| (rng.next_normal() * 0.3) as f32).collect();
    (csr, fixed, bias)
}

fn params(k: usize, feedback: Feedback, solver: SolverKind, scaling: RegScaling, backend: Backend) -> SolveParams {
    SolveParams {
        factors: k,
        lambda: 0.1,
        reg_scaling: scaling,
        feedback,
        solver,
        backend,
    }
}

#[test]
fn explicit_rows_equal_closed_form() {
    let (k, m) = (4, 12);
    let (csr, fixed, bias) = random_case(1, 7, m, k, 0.5, false);
    for backend in Backend::available() {
        for biased in [true, false] {
            for scaling in [RegScaling::Count, RegScaling::None] {
                let mu = 3.1f32;
                let p = params(
                    k,
                    Feedback::Explicit { biased, global_mean: mu },
                    SolverKind::Cholesky,
                    scaling,
                    backend,
                );
                let mut out = vec![0f32; csr.n_rows() * k];
                let mut ob = vec![0f32; csr.n_rows()];
                solve_rows(
                    &p,
                    RowsView::of_csr(&csr, 0, csr.n_rows()),
                    FixedSide {
                        factors: &fixed,
                        bias: &bias,
                        total_rows: fixed.len() / k,
                    },
                    None,
                    &mut out,
                    Some(&mut ob),
                )
                .unwrap();
                let d = if biased { k + 1 } else { k };
                for u in 0..csr.n_rows() {
                    let (cols, vals) = csr.row(u);
                    let lam = if scaling == RegScaling::Count {
                        0.1 * cols.len() as f64
                    } else {
                        0.1
                    };
                    let mut a = vec![vec![0.0; d]; d];
                    let mut b = vec![0.0; d];
                    for (&c, &r) in cols.iter().zip(vals) {
                        let mut x: Vec<f64> = fixed[c as usize * k..(c as usize + 1) * k].iter().map(|&v| v as f64).collect();
                        let mut t = r as f64;
                        if biased {
                            x.push(1.0);
                            t -= mu as f64 + bias[c as usize] as f64;
                        }
                        for i in 0..d {
                            b[i] += t * x[i];
                            for j in 0..d {
                                a[i][j] += x[i] * x[j];
                            }
                        }
                    }
                    for (i, row) in a.iter_mut().enumerate() {
                        row[i] += lam;
                    }
                    let want = gauss_solve(a, b);
                    for f in 0..k {
                        let got = out[u * k + f] as f64;
                        assert!(
                            (got - want[f]).abs() < 1e-5 * (1.0 + want[f].abs()),
                            "{backend:?} row {u}: {got} vs {}",
                            want[f]
                        );
                    }
                    if biased {
                        assert!((ob[u] as f64 - want[k]).abs() < 1e-5 * (1.0 + want[k].abs()));
                    }
                }
            }
        }
    }
}

/// Dense weighted least squares over ALL m items: item i has weight qᵢ and
/// weight × target rᵢ from `pair(i)`, so (Σ qᵢ yᵢyᵢᵀ + λI) x = Σ rᵢ yᵢ.
fn dense_weighted_solve(fixed: &[f32], m: usize, k: usize, lam: f64, pair: impl Fn(usize) -> (f64, f64)) -> Vec<f64> {
    let mut a = vec![vec![0.0; k]; k];
    let mut b = vec![0.0; k];
    for i in 0..m {
        let y: Vec<f64> = fixed[i * k..(i + 1) * k].iter().map(|&v| v as f64).collect();
        let (q, r) = pair(i);
        for f in 0..k {
            b[f] += r * y[f];
            for g in 0..k {
                a[f][g] += q * y[f] * y[g];
            }
        }
    }
    for (f, row) in a.iter_mut().enumerate() {
        row[f] += lam;
    }
    gauss_solve(a, b)
}

/// Dense Hu et al. normal equations over ALL items (unobserved: c = 1, p = 0).
fn implicit_closed_form(cols: &[u32], vals: &[f32], fixed: &[f32], m: usize, k: usize, alpha: f64, lam: f64) -> Vec<f64> {
    dense_weighted_solve(fixed, m, k, lam, |i| match cols.iter().position(|&c| c as usize == i) {
        Some(pos) => {
            let c = 1.0 + alpha * vals[pos] as f64;
            (c, c)
        }
        None => (1.0, 0.0),
    })
}

#[test]
fn implicit_cholesky_and_cg_equal_closed_form() {
    let (k, m) = (6, 15);
    let (csr, fixed, _) = random_case(2, 9, m, k, 0.3, true);
    let alpha = 2.0f32;
    for backend in Backend::available() {
        let gram = block_gram(&fixed, k);
        let fb = Feedback::Implicit {
            alpha,
            confidence: Confidence::Linear,
            loss: ImplicitLoss::Hu,
        };
        for (solver, tol) in [(SolverKind::Cholesky, 1e-5), (SolverKind::Cg { steps: k }, 1e-4)] {
            let p = params(k, fb, solver, RegScaling::None, backend);
            let mut out = vec![0f32; csr.n_rows() * k];
            solve_rows(
                &p,
                RowsView::of_csr(&csr, 0, csr.n_rows()),
                FixedSide {
                    factors: &fixed,
                    bias: &[],
                    total_rows: fixed.len() / k,
                },
                Some(&gram),
                &mut out,
                None,
            )
            .unwrap();
            for u in 0..csr.n_rows() {
                let (cols, vals) = csr.row(u);
                let want = implicit_closed_form(cols, vals, &fixed, m, k, alpha as f64, 0.1);
                for f in 0..k {
                    let got = out[u * k + f] as f64;
                    assert!(
                        (got - want[f]).abs() < tol * (1.0 + want[f].abs()),
                        "{solver:?} {backend:?} row {u}: {got} vs {}",
                        want[f]
                    );
                }
            }
        }
    }
}

/// Dense iALS normal equations over ALL items (Rendle et al.): every item
/// weight α₀ towards 0, observed items also weight w towards 1, and
/// λ·(n + α₀·N)^ν with N the fixed side's total rows.
#[allow(clippy::too_many_arguments)]
fn ials_closed_form(
    cols: &[u32],
    vals: &[f32],
    fixed: &[f32],
    m: usize,
    total: usize,
    k: usize,
    a0: f64,
    nu: f64,
    weight: impl Fn(f32) -> f64,
) -> Vec<f64> {
    let lam = 0.1 * (cols.len() as f64 + a0 * total as f64).powf(nu);
    dense_weighted_solve(fixed, m, k, lam, |i| {
        let w = cols.iter().position(|&c| c as usize == i).map_or(0.0, |pos| weight(vals[pos]));
        (a0 + w, w)
    })
}

#[test]
fn ials_cholesky_and_cg_equal_closed_form() {
    let (k, m) = (6, 15);
    let (csr, fixed, _) = random_case(12, 9, m, k, 0.3, true);
    let gram = block_gram(&fixed, k);
    let alpha = 2.0f32;
    // A worker holds only the rows its blocks reference: λ still counts them all.
    for total in [m, m + 40] {
        for (nu, confidence_weights) in [(1.0f32, false), (0.5, true), (0.0, false)] {
            let fb = Feedback::Implicit {
                alpha,
                confidence: Confidence::Linear,
                loss: ImplicitLoss::Ials {
                    unobserved_weight: 0.3,
                    reg_exponent: nu,
                    confidence_weights,
                },
            };
            // f32 CG needs more than k steps on these less well-conditioned systems.
            for (solver, tol) in [(SolverKind::Cholesky, 1e-5), (SolverKind::Cg { steps: 3 * k }, 1e-4)] {
                // The loss sets λ's scaling; reg_scaling is not read.
                let p = params(k, fb, solver, RegScaling::Count, Backend::Faer);
                let mut out = vec![0f32; csr.n_rows() * k];
                let fx = FixedSide {
                    factors: &fixed,
                    bias: &[],
                    total_rows: total,
                };
                solve_rows(&p, RowsView::of_csr(&csr, 0, csr.n_rows()), fx, Some(&gram), &mut out, None).unwrap();
                let weight = |r: f32| if confidence_weights { 1.0 + alpha as f64 * r as f64 } else { 1.0 };
                for u in 0..csr.n_rows() {
                    let (cols, vals) = csr.row(u);
                    let want = ials_closed_form(cols, vals, &fixed, m, total, k, 0.3, nu as f64, weight);
                    for f in 0..k {
                        let got = out[u * k + f] as f64;
                        assert!(
                            (got - want[f]).abs() < tol * (1.0 + want[f].abs()),
                            "{solver:?} total {total} ν {nu} row {u}: {got} vs {}",
                            want[f]
                        );
                    }
                }
            }
        }
    }
}

/// iALS++ from a warm start: one sweep with one block of all k coordinates
/// is the exact solve; smaller blocks (b = 1, one that does not divide k)
/// converge to it over sweeps, under both losses.
#[test]
fn ialspp_sweeps_converge_to_the_exact_solve() {
    let (k, m) = (6, 15);
    let (csr, fixed, _) = random_case(21, 9, m, k, 0.3, true);
    let gram = block_gram(&fixed, k);
    let ials = ImplicitLoss::Ials {
        unobserved_weight: 0.3,
        reg_exponent: 1.0,
        confidence_weights: false,
    };
    for loss in [ImplicitLoss::Hu, ials] {
        let fb = Feedback::Implicit {
            alpha: 2.0,
            confidence: Confidence::Linear,
            loss,
        };
        let fx = FixedSide {
            factors: &fixed,
            bias: &[],
            total_rows: m,
        };
        let rows = RowsView::of_csr(&csr, 0, csr.n_rows());
        let warm: Vec<f32> = (0..csr.n_rows() * k).map(|i| ((i % 5) as f32 - 2.0) * 0.1).collect();
        let solve = |solver| {
            let mut out = warm.clone();
            solve_rows(
                &params(k, fb, solver, RegScaling::Count, Backend::Faer),
                rows,
                fx,
                Some(&gram),
                &mut out,
                None,
            )
            .unwrap();
            out
        };
        let exact = solve(SolverKind::Cholesky);
        let dist = |a: &[f32]| a.iter().zip(&exact).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(dist(&solve(SolverKind::Ialspp { block: k, sweeps: 1 })) < 1e-5, "{loss:?}");
        for block in [1, 4] {
            let (one, many) = (
                dist(&solve(SolverKind::Ialspp { block, sweeps: 1 })),
                dist(&solve(SolverKind::Ialspp { block, sweeps: 200 })),
            );
            assert!(many < 1e-5 && many < one, "{loss:?} block {block}: {one} then {many}");
        }
    }
}

/// The vectorized iALS++ rows against the plain row-at-a-time form they
/// replaced, over k and block sizes that exercise every tile of the Gram
/// products (64, 8 and single columns) and a last block shorter than the rest.
#[test]
fn ialspp_fast_rows_equal_the_plain_reference() {
    let m = 90;
    let ials = ImplicitLoss::Ials {
        unobserved_weight: 0.2,
        reg_exponent: 1.0,
        confidence_weights: true,
    };
    for (k, block) in [(8, 3), (13, 13), (80, 32), (150, 72)] {
        let (csr, fixed, _) = random_case(31 + k as u64, 43, m, k, 0.15, true);
        let raw_gram = block_gram(&fixed, k);
        for loss in [ImplicitLoss::Hu, ials] {
            for sweeps in [1, 2] {
                let fb = Feedback::Implicit {
                    alpha: 1.5,
                    confidence: Confidence::Linear,
                    loss,
                };
                let p = params(k, fb, SolverKind::Ialspp { block, sweeps }, RegScaling::None, Backend::Faer);
                let fx = FixedSide {
                    factors: &fixed,
                    bias: &[],
                    total_rows: m,
                };
                let warm: Vec<f32> = (0..csr.n_rows() * k).map(|i| ((i % 7) as f32 - 3.0) * 0.05).collect();
                let mut fast = warm.clone();
                solve_rows(&p, RowsView::of_csr(&csr, 0, csr.n_rows()), fx, Some(&raw_gram), &mut fast, None).unwrap();
                let weights = p.implicit_weights().unwrap();
                let gram: Vec<f64> = raw_gram.iter().map(|&v| v * weights.gram_scale() as f64).collect();
                let mut s = RowScratch::new(&p, k);
                for u in 0..csr.n_rows() {
                    let (cols, vals) = csr.row(u);
                    let mut want = warm[u * k..(u + 1) * k].to_vec();
                    subspace::reference_row_subspace(&p, weights, block, sweeps, cols, vals, &fx, &gram, &mut s, &mut want).unwrap();
                    for (f, (&g, &w)) in fast[u * k..(u + 1) * k].iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() < 1e-5 * (1.0 + w.abs()),
                            "k {k} block {block} {loss:?} sweeps {sweeps} row {u} factor {f}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn cg_improves_monotonically_towards_cholesky() {
    let (k, m) = (8, 40);
    let (csr, fixed, _) = random_case(5, 20, m, k, 0.2, true);
    let gram = block_gram(&fixed, k);
    let fb = Feedback::Implicit {
        alpha: 5.0,
        confidence: Confidence::Log { epsilon: 1.0 },
        loss: ImplicitLoss::Hu,
    };
    let rows = RowsView::of_csr(&csr, 0, csr.n_rows());
    let fx = FixedSide {
        factors: &fixed,
        bias: &[],
        total_rows: fixed.len() / k,
    };
    let mut exact = vec![0f32; csr.n_rows() * k];
    solve_rows(
        &params(k, fb, SolverKind::Cholesky, RegScaling::Count, Backend::Faer),
        rows,
        fx,
        Some(&gram),
        &mut exact,
        None,
    )
    .unwrap();
    let err = |steps| {
        let mut out = vec![0f32; csr.n_rows() * k];
        solve_rows(
            &params(k, fb, SolverKind::Cg { steps }, RegScaling::Count, Backend::Faer),
            rows,
            fx,
            Some(&gram),
            &mut out,
            None,
        )
        .unwrap();
        out.iter().zip(&exact).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt()
    };
    let (e1, e3, ek) = (err(1), err(3), err(k));
    assert!(e1 > e3 && e3 > ek, "{e1} {e3} {ek}");
    assert!(ek < 1e-3, "{ek}");
}

#[test]
fn bad_blocks_are_errors_not_panics() {
    let k = 2;
    let p = params(
        k,
        Feedback::Explicit {
            biased: false,
            global_mean: 0.0,
        },
        SolverKind::Cholesky,
        RegScaling::Count,
        Backend::Faer,
    );
    let fixed = vec![0.5f32; 3 * k];
    let fx = FixedSide {
        factors: &fixed,
        bias: &[],
        total_rows: fixed.len() / k,
    };
    let mut out = vec![0f32; k];
    let bad_col = RowsView {
        indptr: &[0, 4],
        indices: &[0, 2, 7, 5],
        values: &[1.0; 4],
    };
    // The first index out of range is named.
    match solve_rows(&p, bad_col, fx, None, &mut out, None) {
        Err(SolveError::Invalid(m)) => assert!(m.contains("column index 7 out of range for 3"), "{m}"),
        other => panic!("expected an invalid column, got {other:?}"),
    }
    let bad_ptr = RowsView {
        indptr: &[0, 5],
        indices: &[0],
        values: &[1.0],
    };
    assert!(matches!(
        solve_rows(&p, bad_ptr, fx, None, &mut out, None),
        Err(SolveError::Invalid(_))
    ));
    let nan = RowsView {
        indptr: &[0, 1],
        indices: &[0],
        values: &[f32::NAN],
    };
    assert!(matches!(solve_rows(&p, nan, fx, None, &mut out, None), Err(SolveError::Invalid(_))));
    let mut short = vec![0f32; 1];
    let ok = RowsView {
        indptr: &[0, 1],
        indices: &[0],
        values: &[1.0],
    };
    assert!(matches!(
        solve_rows(&p, ok, fx, None, &mut short, None),
        Err(SolveError::Invalid(_))
    ));
    let imp = params(
        k,
        Feedback::Implicit {
            alpha: 1.0,
            confidence: Confidence::Linear,
            loss: ImplicitLoss::Hu,
        },
        SolverKind::Cholesky,
        RegScaling::Count,
        Backend::Faer,
    );
    assert!(matches!(
        solve_rows(&imp, ok, fx, None, &mut out, None),
        Err(SolveError::Invalid(_))
    ));
    let gram = vec![0f64; k * k];
    let negative = RowsView {
        indptr: &[0, 3],
        indices: &[0, 1, 2],
        values: &[1.0, -0.5, 2.0],
    };
    match solve_rows(&imp, negative, fx, Some(&gram), &mut out, None) {
        Err(SolveError::Invalid(m)) => assert!(m.contains("must be >= 0"), "{m}"),
        other => panic!("expected a negative value refused, got {other:?}"),
    }
    // λ = 0 with one rating in two unknowns: singular, reported with the row.
    let zero = SolveParams { lambda: 0.0, ..p };
    assert!(matches!(
        solve_rows(&zero, ok, fx, None, &mut out, None),
        Err(SolveError::NotPositiveDefinite { row: 0, .. })
    ));
}

#[test]
fn gram_is_independent_of_thread_count_and_matches_naive() {
    let k = 5;
    let mut rng = SplitMix64::new(9);
    let f: Vec<f32> = (0..1300 * k).map(|_| rng.next_normal() as f32).collect();
    let g = block_gram(&f, k);
    for a in 0..k {
        for b in 0..k {
            let want: f64 = (0..1300).map(|r| f[r * k + a] as f64 * f[r * k + b] as f64).sum();
            // f32 sums of 256 rows at a time, added in f64 (`block_gram`).
            assert!(
                (g[a * k + b] - want).abs() < 1e-5 * want.abs().max(1.0),
                "({a}, {b}): {} vs {want}",
                g[a * k + b]
            );
        }
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    assert_eq!(pool.install(|| block_gram(&f, k)), g);
}

/// The block CG (rows stepping together, the dense term as one product,
/// item rows gathered) against the row-at-a-time CG it replaced, on rows
/// more than one task long and with a row too long for the gathered panel.
#[test]
fn block_cg_matches_the_row_at_a_time_reference() {
    for &(k, rows, m, density) in &[(8usize, 70usize, 50usize, 0.2f64), (33, 40, 60, 0.3), (64, 5, 5000, 0.9)] {
        let (csr, fixed, _) = random_case(k as u64, rows, m, k, density, true);
        let gram = block_gram(&fixed, k);
        let ials = ImplicitLoss::Ials {
            unobserved_weight: 0.2,
            reg_exponent: 1.0,
            confidence_weights: true,
        };
        for (confidence, loss) in [
            (Confidence::Linear, ImplicitLoss::Hu),
            (Confidence::Log { epsilon: 1.0 }, ImplicitLoss::Hu),
            (Confidence::Linear, ials),
        ] {
            let fb = Feedback::Implicit {
                alpha: 3.0,
                confidence,
                loss,
            };
            let p = params(k, fb, SolverKind::Cg { steps: 3 }, RegScaling::Count, Backend::Faer);
            let warm: Vec<f32> = (0..rows * k).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
            let mut got = warm.clone();
            let view = RowsView::of_csr(&csr, 0, rows);
            let fx = FixedSide {
                factors: &fixed,
                bias: &[],
                total_rows: fixed.len() / k,
            };
            solve_rows(&p, view, fx, Some(&gram), &mut got, None).unwrap();
            for r in 0..rows {
                let (cols, vals) = csr.row(r);
                let mut want = warm[r * k..(r + 1) * k].to_vec();
                let lam = p.row_lambda(cols.len(), m) as f32;
                let w = p.implicit_weights().unwrap();
                let gram32: Vec<f32> = gram.iter().map(|&v| (v * w.gram_scale() as f64) as f32).collect();
                implicit::reference_cg_row(k, w, 3, lam, cols, vals, &fixed, &gram32, &mut want);
                for (g, w) in got[r * k..(r + 1) * k].iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "k={k} row {r}: {g} vs {w}");
                }
            }
        }
    }
}

/// However the block CG groups its rows (by the panel of gathered item rows
/// that fits this CPU's L2), and whether a row's items are gathered or read
/// in place, every row gets the same bits.
#[test]
fn block_cg_rows_get_the_same_bits_in_any_grouping() {
    for &(k, rows, m, density) in &[(8usize, 40usize, 50usize, 0.3f64), (64, 33, 300, 0.2), (128, 9, 200, 0.5)] {
        let (csr, fixed, _) = random_case(k as u64 + 5, rows, m, k, density, true);
        let gram = block_gram(&fixed, k);
        let fb = Feedback::Implicit {
            alpha: 3.0,
            confidence: Confidence::Linear,
            loss: ImplicitLoss::Hu,
        };
        let p = params(k, fb, SolverKind::Cg { steps: 3 }, RegScaling::Count, Backend::Faer);
        let w = p.implicit_weights().unwrap();
        let scaled: Vec<f64> = gram.iter().map(|&v| v * w.gram_scale() as f64).collect();
        let gram32 = implicit::padded_gram_f32(&scaled, k);
        let warm: Vec<f32> = (0..rows * k).map(|i| ((i % 5) as f32 - 2.0) * 0.02).collect();
        let view = RowsView::of_csr(&csr, 0, rows);
        let fx = FixedSide {
            factors: &fixed,
            bias: &[],
            total_rows: fixed.len() / k,
        };
        let solve = |panel_floats: usize, gather: bool| {
            let mut cg = implicit::CgBlock::new(k, rows);
            let mut out = warm.clone();
            let problem = implicit::CgProblem {
                p: &p,
                weights: w,
                steps: 3,
                rows: &view,
                fixed: &fx,
                gram: &gram32,
            };
            implicit::solve_rows_cg_in_groups(&problem, 0, &mut cg, panel_floats, gather, &mut out);
            out.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
        };
        // Everything in one group; three rows' worth; each row alone and read
        // in place; one group read in place (a fixed side that fits in L2).
        let one_group = solve(usize::MAX / 2, true);
        assert_ne!(
            one_group,
            warm.iter().map(|v| v.to_bits()).collect::<Vec<u32>>(),
            "k={k}: the rows moved"
        );
        let widest = (0..rows).map(|r| csr.row(r).0.len() * k).max().unwrap();
        assert_eq!(solve(3 * widest, true), one_group, "k={k}: groups of about three rows");
        assert_eq!(solve(0, true), one_group, "k={k}: every row alone, read in place");
        assert_eq!(solve(usize::MAX / 2, false), one_group, "k={k}: one group, read in place");
        assert_eq!(solve(3 * widest, false), one_group, "k={k}: groups of three, read in place");
    }
}

#[test]
fn explicit_rows_without_ratings_solve_to_zero_and_leave_their_neighbours_alone() {
    // Rows 0 and 2 have ratings, row 1 none (a CSR handed over whole can have such rows).
    let (k, m) = (6, 9);
    let (full, fixed, bias) = random_case(11, 3, m, k, 0.5, false);
    let (c0, v0) = full.row(0);
    let (c2, v2) = full.row(2);
    let indptr = [0, c0.len(), c0.len(), c0.len() + c2.len()];
    let indices: Vec<u32> = c0.iter().chain(c2).copied().collect();
    let values: Vec<f32> = v0.iter().chain(v2).copied().collect();
    let rows = RowsView {
        indptr: &indptr,
        indices: &indices,
        values: &values,
    };
    let side = FixedSide {
        factors: &fixed,
        bias: &bias,
        total_rows: fixed.len() / k,
    };
    for scaling in [RegScaling::Count, RegScaling::None] {
        let p = params(
            k,
            Feedback::Explicit {
                biased: true,
                global_mean: 3.0,
            },
            SolverKind::Cholesky,
            scaling,
            Backend::Faer,
        );
        let mut out = vec![1.0f32; 3 * k];
        let mut out_bias = vec![1.0f32; 3];
        solve_rows(&p, rows, side, None, &mut out, Some(&mut out_bias)).unwrap();
        assert!(out[k..2 * k].iter().all(|&v| v == 0.0) && out_bias[1] == 0.0);
        // The rows with ratings get what they get when solved with full's rows.
        let mut alone = vec![1.0f32; 3 * k];
        let mut alone_bias = vec![1.0f32; 3];
        solve_rows(&p, RowsView::of_csr(&full, 0, 3), side, None, &mut alone, Some(&mut alone_bias)).unwrap();
        assert_eq!(out[..k], alone[..k]);
        assert_eq!(out[2 * k..], alone[2 * k..]);
        assert_eq!((out_bias[0], out_bias[2]), (alone_bias[0], alone_bias[2]));
    }
}
