//! The small job the worker's integration tests share: 10 users × 8 items
//! with a fixed rating pattern, its blocks, and solver settings.
#![allow(dead_code)]

use als_core::linalg::Backend;
use als_core::side::Side;
use als_core::solve::{Confidence, Feedback, ImplicitLoss, RegScaling, SolveParams, SolverKind};
use als_worker::job::{BlockData, FixedFactors, Job};

pub const USERS: u32 = 10;
pub const ITEMS: u32 = 8;

/// User u rated item i when (u + 2i) % 3 != 0, with rating 1 + (u·i) % 5.
pub fn rated(u: u32, i: u32) -> Option<f32> {
    (!(u + 2 * i).is_multiple_of(3)).then(|| (1 + (u * i) % 5) as f32)
}

/// Rows `rows` of `side` as a block, with starting factors `0.1·(row + j)`.
pub fn block(id: u32, side: Side, rows: std::ops::Range<u32>, k: usize, biased: bool) -> BlockData {
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
        // Shipped whole, as the coordinator ships a block it read.
        ids: Vec::new(),
        held_out: None,
    }
}

pub fn params(implicit: bool) -> SolveParams {
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

pub fn gram(p: &SolveParams) -> Option<Vec<f64>> {
    let k = p.factors;
    matches!(p.feedback, Feedback::Implicit { .. }).then(|| (0..k * k).map(|x| if x % (k + 1) == 0 { 2.0 } else { 0.1 }).collect())
}

/// A job holding user block 0 (users 0..6) and item blocks 1 (items 3..5)
/// and, with `block_2`, 2 (items 5..8), its item blocks solved once against
/// pushed users (step 1); block 1's solved rows with it.
pub fn job_with_solved_items(p: SolveParams, block_2: bool) -> (Job, Vec<f32>, Vec<f32>) {
    let (k, biased) = (p.factors, p.biased());
    let mut job = Job::new("local".into(), p, USERS as u64, ITEMS as u64).unwrap();
    job.add_block(Side::Users, block(0, Side::Users, 0..6, k, biased)).unwrap();
    job.add_block(Side::Items, block(1, Side::Items, 3..5, k, biased)).unwrap();
    if block_2 {
        job.add_block(Side::Items, block(2, Side::Items, 5..8, k, biased)).unwrap();
    }
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
