//! Mutation fuzzing of the worker's message validation: valid blocks and
//! factor pushes with random corruptions must give `Ok` or an error, never a
//! panic, and a solve after an accepted message must not panic either.
//!
//! Ignored in the test suite; `bench/fuzz.sh` runs it for a bounded time
//! (`ALS_FUZZ_SECONDS`, default 60).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use als_core::linalg::Backend;
use als_core::rng::SplitMix64;
use als_core::side::Side;
use als_core::solve::{Confidence, Feedback, ImplicitLoss, RegScaling, SolveParams, SolverKind};
use als_worker::job::{BlockData, EvalInput, FixedFactors, Job, JobError};

fn params(rng: &mut SplitMix64) -> SolveParams {
    let feedback = if rng.next_u64().is_multiple_of(2) {
        Feedback::Explicit {
            biased: rng.next_u64().is_multiple_of(2),
            global_mean: 3.0,
        }
    } else {
        Feedback::Implicit {
            alpha: 2.0,
            confidence: Confidence::Linear,
            loss: if rng.next_u64().is_multiple_of(2) {
                ImplicitLoss::Hu
            } else {
                ImplicitLoss::Ials {
                    unobserved_weight: 0.1,
                    reg_exponent: 1.0,
                    confidence_weights: false,
                }
            },
        }
    };
    let solver = match feedback {
        Feedback::Implicit { .. } if rng.next_u64().is_multiple_of(2) => SolverKind::Cg { steps: 3 },
        _ => SolverKind::Cholesky,
    };
    SolveParams {
        factors: 1 + (rng.next_u64() % 6) as usize,
        lambda: 0.1,
        reg_scaling: RegScaling::Count,
        feedback,
        solver,
        backend: Backend::Faer,
    }
}

/// A valid block of `n` rows over `m` other-side rows.
fn block(rng: &mut SplitMix64, p: &SolveParams, n: u32, m: u32) -> BlockData {
    let k = p.factors;
    let mut indptr = vec![0u32];
    let mut columns = Vec::new();
    let needed: Vec<u32> = (0..m).filter(|_| rng.next_u64().is_multiple_of(2)).collect();
    let needed = if needed.is_empty() { vec![0] } else { needed };
    for _ in 0..n {
        for c in 0..needed.len() as u32 {
            if rng.next_u64().is_multiple_of(3) {
                columns.push(c);
            }
        }
        indptr.push(columns.len() as u32);
    }
    let biased = p.biased();
    let mut test_indptr = vec![0u32];
    let mut test_columns = Vec::new();
    for _ in 0..n {
        for c in 0..m {
            if rng.next_u64().is_multiple_of(5) {
                test_columns.push(c);
            }
        }
        test_indptr.push(test_columns.len() as u32);
    }
    let test_values: Vec<f32> = test_columns.iter().map(|_| (1 + rng.next_u64() % 5) as f32).collect();
    BlockData {
        block: (rng.next_u64() % 4) as u32,
        row_start: 0,
        n_rows: n,
        nnz: columns.len() as u64,
        n_needed: needed.len() as u32,
        indptr,
        values: columns.iter().map(|_| (1 + rng.next_u64() % 5) as f32).collect(),
        columns,
        needed,
        factors: (0..n as usize * k).map(|_| rng.next_normal() as f32).collect(),
        bias: if biased { vec![0.0; n as usize] } else { Vec::new() },
        n_test: test_columns.len() as u64,
        test_indptr: if test_columns.is_empty() { Vec::new() } else { test_indptr },
        test_columns,
        test_values,
        ids: (0..n).map(|r| format!("r{r}")).collect(),
        held_out: None,
    }
}

fn corrupt_u32(rng: &mut SplitMix64, v: &mut Vec<u32>) {
    match rng.next_u64() % 4 {
        0 if !v.is_empty() => {
            let i = (rng.next_u64() % v.len() as u64) as usize;
            v[i] = rng.next_u64() as u32 % 64;
        }
        1 => v.push(rng.next_u64() as u32),
        2 => {
            v.pop();
        }
        _ if !v.is_empty() => {
            let i = (rng.next_u64() % v.len() as u64) as usize;
            v[i] = u32::MAX;
        }
        _ => {}
    }
}

fn corrupt_f32(rng: &mut SplitMix64, v: &mut Vec<f32>) {
    let specials = [f32::NAN, f32::INFINITY, -1.0, 0.0, 1e30];
    match rng.next_u64() % 3 {
        0 if !v.is_empty() => {
            let i = (rng.next_u64() % v.len() as u64) as usize;
            v[i] = specials[(rng.next_u64() % specials.len() as u64) as usize];
        }
        1 => v.push(1.0),
        _ => {
            v.pop();
        }
    }
}

fn one_case(seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let p = params(&mut rng);
    let (nu, ni) = (1 + rng.next_u64() % 20, 1 + rng.next_u64() % 20);
    let mut job = Job::new("fuzz".into(), p, nu, ni).unwrap();
    let n_rows = (rng.next_u64() % nu) as u32;
    let mut d = block(&mut rng, &p, n_rows, ni as u32);
    for _ in 0..(rng.next_u64() % 3) {
        match rng.next_u64() % 11 {
            0 => corrupt_u32(&mut rng, &mut d.indptr),
            1 => corrupt_u32(&mut rng, &mut d.columns),
            2 => corrupt_u32(&mut rng, &mut d.needed),
            3 => corrupt_f32(&mut rng, &mut d.values),
            4 => corrupt_f32(&mut rng, &mut d.factors),
            5 => corrupt_f32(&mut rng, &mut d.bias),
            6 => d.row_start = rng.next_u64() % 64,
            8 => corrupt_u32(&mut rng, &mut d.test_indptr),
            9 => corrupt_u32(&mut rng, &mut d.test_columns),
            10 => corrupt_f32(&mut rng, &mut d.test_values),
            _ => {
                d.nnz = rng.next_u64() % 1000;
                d.n_needed = (rng.next_u64() % 64) as u32;
            }
        }
    }
    let _ = job.block_limits(Side::Users, d.n_rows, d.nnz, d.n_needed, d.n_test);
    let (block_id, n_test, rows) = (d.block, d.n_test as usize, d.n_rows as usize);
    let test_items: Vec<u32> = d.test_columns.clone();
    let accepted = job.add_block(Side::Users, d).is_ok();
    let n = job.needed_fixed_rows(Side::Items);
    let k = p.factors;
    let mut f = FixedFactors {
        side: Side::Items,
        step: 1,
        factors: (0..n * k).map(|_| rng.next_normal() as f32).collect(),
        bias: if p.biased() { vec![0.1; n] } else { Vec::new() },
        gram: matches!(p.feedback, Feedback::Implicit { .. }).then(|| {
            let mut g = vec![0.0; k * k];
            (0..k).for_each(|i| g[i * k + i] = 1.0);
            g
        }),
    };
    if rng.next_u64().is_multiple_of(3) {
        corrupt_f32(&mut rng, &mut f.factors);
    }
    let pushed = job.set_fixed(f).is_ok();
    if accepted && pushed {
        let _ = job.solve(Side::Users, 1, None, &|_| {});
    }
    // An evaluation of the block, valid or corrupted: an error or a full answer, never a panic.
    let biased = p.biased();
    let ranking_k = if rng.next_u64().is_multiple_of(2) {
        0
    } else {
        1 + (rng.next_u64() % 5) as u32
    };
    // Lists as long as the metrics at that cutoff need (NDCG@100 too).
    let top_k = if ranking_k == 0 {
        0
    } else {
        als_core::metrics::ranking_list_len(ranking_k as usize) as u32
    };
    let all_items = top_k > 0 || rng.next_u64().is_multiple_of(2);
    let mut item_rows: Vec<u32> = if all_items { Vec::new() } else { test_items.clone() };
    item_rows.sort_unstable();
    item_rows.dedup();
    let n_items = if all_items { ni as usize } else { item_rows.len() };
    let mut e = EvalInput {
        step: 2,
        blocks: vec![block_id],
        top_k,
        min_pos: 1.0,
        clip: rng.next_u64().is_multiple_of(2).then_some((1.0, 5.0)),
        ranking_k,
        all_items,
        user_factors: (0..rows * k).map(|_| rng.next_normal() as f32).collect(),
        user_bias: if biased { vec![0.1; rows] } else { Vec::new() },
        item_factors: (0..n_items * k).map(|_| rng.next_normal() as f32).collect(),
        item_bias: if biased { vec![0.1; n_items] } else { Vec::new() },
        item_rows,
    };
    let corrupted = rng.next_u64().is_multiple_of(2);
    if corrupted {
        match rng.next_u64() % 4 {
            0 => corrupt_u32(&mut rng, &mut e.item_rows),
            1 => corrupt_f32(&mut rng, &mut e.user_factors),
            2 => corrupt_f32(&mut rng, &mut e.item_factors),
            _ => corrupt_u32(&mut rng, &mut e.blocks),
        }
    }
    let _ = job.eval_limits(&e.blocks, e.all_items, e.item_rows.len() as u32, e.top_k);
    if let (Ok(r), true, false) = (job.evaluate(&e), accepted, corrupted) {
        let s = &r[0].sums;
        if top_k == 0 {
            assert_eq!(s.raw.n as usize, n_test, "seed {seed}: every test row summed");
            assert!(s.raw.squared.is_finite() && s.clipped.squared.is_finite(), "seed {seed}: {s:?}");
        } else {
            assert!(
                s.ranking.n as usize <= rows && s.ranking.ndcg <= s.ranking.n as f64,
                "seed {seed}: {s:?}"
            );
        }
    }
}

#[test]
#[ignore = "fuzzing runs from bench/fuzz.sh for a bounded time"]
fn validation_never_panics() {
    let secs: u64 = std::env::var("ALS_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut cases = 0u64;
    while Instant::now() < deadline {
        let seed = cases;
        if catch_unwind(AssertUnwindSafe(|| one_case(seed))).is_err() {
            panic!("worker validation panicked on fuzz case seed {seed}");
        }
        cases += 1;
    }
    eprintln!("{cases} fuzz cases, no panic");
}

#[test]
fn a_few_fuzz_cases_run_in_the_suite() {
    for seed in 0..300 {
        one_case(seed);
    }
}

/// What a message declares is checked against the worker's memory budget
/// before anything is buffered: a lying header cannot make it allocate.
#[test]
fn declared_sizes_beyond_the_memory_budget_are_refused_before_buffering() {
    let p = SolveParams {
        factors: 1,
        lambda: 0.1,
        reg_scaling: RegScaling::None,
        feedback: Feedback::Implicit {
            alpha: 1.0,
            confidence: Confidence::Linear,
            loss: ImplicitLoss::Hu,
        },
        solver: SolverKind::Cg { steps: 3 },
        backend: Default::default(),
    };
    let mut job = Job::new("budget".into(), p, 1_000_000, 100_000).unwrap();
    job.memory_budget = 64 << 20;
    // Ten billion declared ratings: refused, by name, before a byte is held.
    let e = job.block_limits(Side::Users, 1_000_000, 10_000_000_000, 100_000, 0).unwrap_err();
    assert!(matches!(e, JobError::OverBudget(_)), "{e}");
    assert!(e.to_string().contains("memory budget"), "{e}");
    // A small block fits.
    assert!(job.block_limits(Side::Users, 100, 1_000, 100, 0).is_ok());
    // An evaluation whose answer would be 20k users × K lists beyond the budget.
    let mut rng = SplitMix64::new(5);
    let mut d = block(&mut rng, &p, 20_000, 10);
    d.block = 0;
    job.add_block(Side::Users, d).unwrap();
    let e = job.eval_limits(&[0], true, 0, 1_000).unwrap_err();
    assert!(matches!(e, JobError::OverBudget(_)), "{e}");
    assert!(job.eval_limits(&[0], true, 0, 10).is_ok(), "K = 10 fits");
    let e = job.eval_limits(&[0], true, 0, 1_000_000).unwrap_err();
    assert!(matches!(e, JobError::Invalid(_)), "K beyond the ranking limit: {e}");
}
