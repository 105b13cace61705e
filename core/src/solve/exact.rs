//! Exact row solves: each row's ridge system (explicit ratings, or implicit
//! feedback solved by Cholesky), solved eight rows at a time by the batched
//! kernel, or one at a time where the backend or the size calls for it.

use super::{explicit, implicit, Feedback, FixedSide, ImplicitWeights, RowScratch, RowsView, SolveError, SolveParams};
use crate::linalg::batched_cholesky::{CholeskyBatch, LANES};
use crate::linalg::normal_ld;

/// What every row of a block is solved against.
pub(super) struct Problem<'a> {
    pub p: &'a SolveParams,
    pub rows: &'a RowsView<'a>,
    pub fixed: &'a FixedSide<'a>,
    pub gram: Option<&'a [f64]>,
}

/// Solve rows `first..` of the problem into `out_rows` (k values each)
/// and, for biased models, `bias_rows`. Returns the first failing row's error.
pub(super) fn solve_task(
    pr: &Problem,
    first: usize,
    s: &mut RowScratch,
    out_rows: &mut [f32],
    bias_rows: &mut [f32],
) -> Option<SolveError> {
    let k = pr.p.factors;
    let d = pr.p.dim();
    if s.dense.batches(d) {
        let mut lanes = s.lanes.take().unwrap_or_else(|| Box::new(LaneBuffers::new(d, s)));
        let err = solve_batched(pr, first, s, &mut lanes, out_rows, bias_rows);
        s.lanes = Some(lanes);
        return err;
    }
    for (j, (x, b)) in out_rows.chunks_mut(k).zip(bias_rows.iter_mut()).enumerate() {
        let r = first + j;
        let Some(d) = ridge_system(pr, r, s) else {
            x.fill(0.0);
            *b = 0.0;
            continue;
        };
        let ld = normal_ld(d);
        if let Err(cause) = s.dense.cholesky_solve(&mut s.a[..d * ld], ld, &mut s.b[..d], d) {
            return Some(SolveError::NotPositiveDefinite { row: r, cause });
        }
        write_row(s.b[..d].iter().copied(), x, b);
    }
    None
}

/// Rows in groups of [`LANES`], one system per lane (an unused lane or a
/// row without ratings solves I·x = 0). Every row goes through the same
/// lane arithmetic, so its bits do not depend on how the rows are grouped.
fn solve_batched(
    pr: &Problem,
    first: usize,
    s: &mut RowScratch,
    lanes: &mut LaneBuffers,
    out_rows: &mut [f32],
    bias_rows: &mut [f32],
) -> Option<SolveError> {
    let k = pr.p.factors;
    let ld = normal_ld(lanes.batch.dim());
    let mut first_error = None;
    for (g, (xs, bs)) in out_rows.chunks_mut(LANES * k).zip(bias_rows.chunks_mut(LANES)).enumerate() {
        let r0 = first + g * LANES;
        let mut present = [false; LANES];
        for (lane, set) in present.iter_mut().enumerate().take(bs.len()) {
            if ridge_system(pr, r0 + lane, s).is_some() {
                // The row's system moves to its lane's buffers; the scratch gets that lane's old ones.
                std::mem::swap(&mut s.a, &mut lanes.a[lane]);
                std::mem::swap(&mut s.b, &mut lanes.b[lane]);
                *set = true;
            }
        }
        let LaneBuffers { batch, a, b } = &mut *lanes;
        batch.set_lanes(std::array::from_fn(|l| present[l].then(|| (&a[l][..], &b[l][..]))), ld);
        let results = batch.solve();
        for (lane, (x, bias)) in xs.chunks_mut(k).zip(bs.iter_mut()).enumerate() {
            if let Err(cause) = &results[lane] {
                first_error.get_or_insert(SolveError::NotPositiveDefinite {
                    row: r0 + lane,
                    cause: cause.clone(),
                });
                continue;
            }
            write_row(batch.solution(lane), x, bias);
        }
        if first_error.is_some() {
            return first_error;
        }
    }
    None
}

/// The batch and one system's buffers per lane (each the size of the
/// scratch's own, which they trade places with).
pub(crate) struct LaneBuffers {
    batch: CholeskyBatch,
    a: [Vec<f64>; LANES],
    b: [Vec<f64>; LANES],
}

impl LaneBuffers {
    fn new(d: usize, s: &RowScratch) -> Self {
        LaneBuffers {
            batch: CholeskyBatch::new(d),
            a: std::array::from_fn(|_| vec![0.0; s.a.len()]),
            b: std::array::from_fn(|_| vec![0.0; s.b.len()]),
        }
    }
}

/// Row r's ridge system in `s.a`/`s.b`; its dimension, or `None` for a row
/// whose answer is 0 without solving.
fn ridge_system(pr: &Problem, r: usize, s: &mut RowScratch) -> Option<usize> {
    let Problem { p, rows, fixed, gram } = *pr;
    let (cols, vals) = rows.row(r);
    match p.feedback {
        Feedback::Explicit { biased, global_mean } => explicit::ridge_system(p, biased, global_mean, cols, vals, fixed, s),
        Feedback::Implicit { alpha, confidence, loss } => {
            let w = ImplicitWeights { alpha, confidence, loss };
            Some(implicit::ridge_system(p, w, cols, vals, fixed, gram.unwrap_or(&[]), s))
        }
    }
}

/// A solution's d values: its k factors to `x` and, where d = k + 1, its
/// bias to `b` (else 0).
fn write_row(mut sol: impl Iterator<Item = f64>, x: &mut [f32], b: &mut f32) {
    for (o, v) in x.iter_mut().zip(sol.by_ref()) {
        *o = v as f32;
    }
    *b = sol.next().map_or(0.0, |v| v as f32);
}
