//! A push that leaves out the rows a worker has already (its own blocks of
//! the fixed side) gives the worker the same fixed side, and so the same
//! solve, as a push of every row; what it lists is checked.

use als_core::linalg::Backend;
use als_core::side::Side;
use als_core::solve::{Confidence, Feedback, ImplicitLoss, RegScaling, SolveParams, SolverKind};
use als_proto::codec::{f32_bytes, Bytes};
use als_worker::job::{BlockData, FixedFactors, Job, JobError, PushedRows};

const USERS: u32 = 10;
const ITEMS: u32 = 8;

/// User u rated item i when (u + 2i) % 3 != 0, with rating 1 + (u·i) % 5.
fn rated(u: u32, i: u32) -> Option<f32> {
    (!(u + 2 * i).is_multiple_of(3)).then(|| (1 + (u * i) % 5) as f32)
}

/// Rows `rows` of `side` as a block, with starting factors `0.1·(row + j)`.
fn block(id: u32, side: Side, rows: std::ops::Range<u32>, k: usize, biased: bool) -> BlockData {
    let others = match side {
        Side::Users => ITEMS,
        Side::Items => USERS,
    };
    let rating = |r: u32, c: u32| match side {
        Side::Users => rated(r, c),
        Side::Items => rated(c, r),
    };
    let needed: Vec<u32> = (0..others).filter(|&c| rows.clone().any(|r| rating(r, c).is_some())).collect();
    let (mut indptr, mut columns, mut values) = (vec![0u32], Vec::new(), Vec::new());
    for r in rows.clone() {
        for (pos, &c) in needed.iter().enumerate() {
            if let Some(v) = rating(r, c) {
                columns.push(pos as u32);
                values.push(v);
            }
        }
        indptr.push(columns.len() as u32);
    }
    let n = rows.len();
    BlockData {
        block: id,
        row_start: rows.start as u64,
        n_rows: n as u32,
        nnz: columns.len() as u64,
        n_needed: needed.len() as u32,
        indptr,
        columns,
        values,
        needed,
        factors: (0..n * k).map(|x| 0.1 * ((rows.start as usize + x) % 7) as f32).collect(),
        bias: if biased { vec![0.2; n] } else { Vec::new() },
        n_test: 0,
        test_indptr: Vec::new(),
        test_columns: Vec::new(),
        test_values: Vec::new(),
    }
}

fn params(implicit: bool) -> SolveParams {
    SolveParams {
        factors: 3,
        lambda: 0.1,
        reg_scaling: RegScaling::Count,
        feedback: if implicit {
            Feedback::Implicit {
                alpha: 2.0,
                confidence: Confidence::Linear,
                loss: ImplicitLoss::Hu,
            }
        } else {
            Feedback::Explicit {
                biased: true,
                global_mean: 3.0,
            }
        },
        solver: if implicit {
            SolverKind::Cg { steps: 3 }
        } else {
            SolverKind::Cholesky
        },
        backend: Backend::Faer,
    }
}

/// A job holding user block 0 (users 0..6) and item blocks 1 (items 3..5)
/// and 2 (items 5..8), with item block 1 solved once against pushed users.
fn job_with_solved_items(p: SolveParams) -> (Job, Vec<f32>, Vec<f32>) {
    let (k, biased) = (p.factors, matches!(p.feedback, Feedback::Explicit { biased: true, .. }));
    let mut job = Job::new("local".into(), p, USERS as u64, ITEMS as u64).unwrap();
    job.add_block(Side::Users, block(0, Side::Users, 0..6, k, biased)).unwrap();
    job.add_block(Side::Items, block(1, Side::Items, 3..5, k, biased)).unwrap();
    job.add_block(Side::Items, block(2, Side::Items, 5..8, k, biased)).unwrap();
    let n = job.needed_fixed_rows(Side::Users);
    job.set_fixed(FixedFactors {
        side: Side::Users,
        step: 1,
        factors: (0..n * k).map(|x| 0.05 * (x % 11) as f32 - 0.2).collect(),
        bias: if biased { vec![0.1; n] } else { Vec::new() },
        gram: gram(&p),
    })
    .unwrap();
    let solved = std::sync::Mutex::new((Vec::new(), Vec::new()));
    job.solve(Side::Items, 1, None, &|b| {
        if b.block == 1 {
            let mut s = solved.lock().unwrap();
            s.0.extend_from_slice(b.factors);
            s.1.extend_from_slice(b.bias);
        }
    })
    .unwrap();
    let (f, b) = solved.into_inner().unwrap();
    (job, f, b)
}

fn gram(p: &SolveParams) -> Option<Vec<f64>> {
    let k = p.factors;
    matches!(p.feedback, Feedback::Implicit { .. }).then(|| (0..k * k).map(|x| if x % (k + 1) == 0 { 2.0 } else { 0.1 }).collect())
}

/// The solved users of `job` after the fixed items are set by `set`.
fn users_after(job: &mut Job, set: impl FnOnce(&mut Job) -> Result<(), JobError>) -> Vec<f32> {
    set(job).unwrap();
    let out = std::sync::Mutex::new(Vec::new());
    job.solve(Side::Users, 2, None, &|b| out.lock().unwrap().extend_from_slice(b.factors))
        .unwrap();
    out.into_inner().unwrap()
}

#[test]
fn a_push_without_the_local_rows_solves_as_a_full_push() {
    for implicit in [false, true] {
        let p = params(implicit);
        let (k, biased) = (p.factors, !implicit);
        // The items user block 0 needs, and the master copy of every item row:
        // the solved rows of item block 1, anything else for the others.
        let (mut full_job, solved, solved_bias) = job_with_solved_items(p);
        let (mut local_job, again, _) = job_with_solved_items(p);
        assert_eq!(solved, again);
        let needed: Vec<u32> = (0..ITEMS).filter(|&i| (0..6).any(|u| rated(u, i).is_some())).collect();
        let master = |i: u32, j: usize| -> f32 {
            if (3..5).contains(&i) {
                solved[(i as usize - 3) * k + j]
            } else {
                0.3 - 0.07 * (i as usize * k + j) as f32
            }
        };
        let bias_of = |i: u32| {
            if (3..5).contains(&i) {
                solved_bias[i as usize - 3]
            } else {
                -0.1 * i as f32
            }
        };
        let full: Vec<f32> = needed.iter().flat_map(|&i| (0..k).map(move |j| master(i, j))).collect();
        let full_bias: Vec<f32> = if biased {
            needed.iter().map(|&i| bias_of(i)).collect()
        } else {
            Vec::new()
        };
        let want = users_after(&mut full_job, |j| {
            j.set_fixed(FixedFactors {
                side: Side::Items,
                step: 2,
                factors: full.clone(),
                bias: full_bias.clone(),
                gram: gram(&p),
            })
        });
        // The same fixed side with block 1's rows left out, its pieces split mid-value.
        let rest: Vec<u32> = needed.iter().copied().filter(|i| !(3..5).contains(i)).collect();
        assert!(rest.len() < needed.len() && !rest.is_empty());
        let pushed: Vec<f32> = rest.iter().flat_map(|&i| (0..k).map(move |j| master(i, j))).collect();
        let pushed_bias: Vec<f32> = if biased {
            rest.iter().map(|&i| bias_of(i)).collect()
        } else {
            Vec::new()
        };
        assert_eq!(
            local_job.fixed_limits(Side::Items, rest.len() as u32, &[1]).unwrap().factors,
            (rest.len() * k * 4) as u64
        );
        let split = |v: &[f32]| {
            let b = Bytes::from(f32_bytes(v));
            let mid = b.len() / 2 + 1;
            vec![b.slice(..mid), b.slice(mid..)]
        };
        let got = users_after(&mut local_job, |j| {
            j.set_fixed_pushed(
                Side::Items,
                2,
                PushedRows {
                    local_blocks: vec![1],
                    factors: split(&pushed),
                    bias: if biased { split(&pushed_bias) } else { Vec::new() },
                    gram: gram(&p),
                },
            )
        });
        assert_eq!(got, want, "implicit={implicit}");
    }
}

#[test]
fn what_a_push_lists_as_local_is_checked() {
    let p = params(false);
    let (mut job, _, _) = job_with_solved_items(p);
    let needed = job.needed_fixed_rows(Side::Items);
    // A block not held, blocks out of order, a count that ignores the local rows.
    for (blocks, n) in [(vec![3u32], needed), (vec![2, 1], needed), (vec![1], needed)] {
        let e = job.fixed_limits(Side::Items, n as u32, &blocks).unwrap_err();
        assert!(matches!(e, JobError::Invalid(_)), "{blocks:?}: {e}");
    }
    // Fewer or more pushed values than the rows outside the local blocks.
    let outside = needed - 2;
    for extra in [-1i64, 1] {
        let n = (outside as i64 * 3 + extra) as usize;
        let e = job
            .set_fixed_pushed(
                Side::Items,
                2,
                PushedRows {
                    local_blocks: vec![1],
                    factors: vec![Bytes::from(f32_bytes(&vec![0.5; n]))],
                    bias: vec![Bytes::from(f32_bytes(&vec![0.0; outside]))],
                    gram: None,
                },
            )
            .unwrap_err();
        assert!(
            matches!(e, JobError::Invalid(_)) && e.to_string().contains("factors"),
            "{extra}: {e}"
        );
    }
    let e = job
        .set_fixed_pushed(
            Side::Items,
            2,
            PushedRows {
                local_blocks: vec![4],
                factors: Vec::new(),
                bias: Vec::new(),
                gram: None,
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("not held"), "{e}");
}

#[test]
fn a_non_finite_pushed_value_is_refused_wherever_it_is() {
    let p = params(false);
    let (mut job, _, _) = job_with_solved_items(p);
    let outside = job.needed_fixed_rows(Side::Items) - 2;
    let k = p.factors;
    let push = |job: &mut Job, factors: &[f32], bias: &[f32]| {
        job.set_fixed_pushed(
            Side::Items,
            2,
            PushedRows {
                local_blocks: vec![1],
                factors: vec![Bytes::from(f32_bytes(factors))],
                bias: vec![Bytes::from(f32_bytes(bias))],
                gram: None,
            },
        )
    };
    let (good_f, good_b) = (vec![0.5f32; outside * k], vec![0.25f32; outside]);
    push(&mut job, &good_f, &good_b).expect("finite rows are taken");
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for at in 0..good_f.len() {
            let mut f = good_f.clone();
            f[at] = bad;
            let e = push(&mut job, &f, &good_b).unwrap_err();
            assert!(
                matches!(e, JobError::Invalid(_)) && e.to_string().contains("non-finite factors"),
                "{bad} at {at}: {e}"
            );
        }
        for at in 0..good_b.len() {
            let mut b = good_b.clone();
            b[at] = bad;
            let e = push(&mut job, &good_f, &b).unwrap_err();
            assert!(e.to_string().contains("non-finite bias"), "{bad} at bias {at}: {e}");
        }
    }
}
