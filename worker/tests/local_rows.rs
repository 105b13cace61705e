//! A push that leaves out the rows a worker has already (its own blocks of
//! the fixed side) gives the worker the same fixed side, and so the same
//! solve, as a push of every row; what it lists is checked.

mod common;

use als_core::side::Side;
use als_proto::codec::{f32_bytes, Bytes};
use als_worker::job::{FixedFactors, Job, JobError, PushedRows};
use common::{gram, job_with_solved_items, params, rated, ITEMS};

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
        let (mut full_job, solved, solved_bias) = job_with_solved_items(p, true);
        let (mut local_job, again, _) = job_with_solved_items(p, true);
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
    let (mut job, _, _) = job_with_solved_items(p, true);
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
    let (mut job, _, _) = job_with_solved_items(p, true);
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
