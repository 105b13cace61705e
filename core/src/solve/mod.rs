//! Per-row least-squares solvers over a block of rows.
//!
//! With one side's factors fixed, every row of the other side is an
//! independent regularized least-squares problem. [`solve_rows`] solves a
//! block of them in parallel; the coordinator's in-process path and every
//! worker call it, so a row gets the same answer wherever it is solved. A
//! row's answer depends only on its own ratings (sorted by column), the
//! fixed factors it references and, for implicit feedback, the Gramian.

mod exact;
mod explicit;
mod gram;
mod implicit;
mod params;
mod posterior;
mod subspace;
mod terms;

pub use gram::{block_gram, block_gram_into, from_lower_triangle, lower_triangle, sum_grams, sum_in_order};
pub(crate) use params::ImplicitWeights;
pub use params::{Confidence, Feedback, ImplicitLoss, RegScaling, SolveParams, SolverKind};
pub use posterior::{sample_rows, RowPrior};
pub use terms::{ObjectiveTerms, TermsWanted};

use std::borrow::Cow;

use rayon::prelude::*;

use crate::linalg::syrk::panel_width;
use crate::linalg::{normal_ld, DenseScratch, NotPositiveDefinite};

/// Rows to solve: `indptr[r]..indptr[r+1]` index `indices`/`values` (absolute
/// offsets, so a view of a larger CSR needs no copy). Column indices address
/// rows of the [`FixedSide`].
#[derive(Debug, Clone, Copy)]
pub struct RowsView<'a> {
    pub indptr: &'a [usize],
    pub indices: &'a [u32],
    pub values: &'a [f32],
}

impl<'a> RowsView<'a> {
    pub fn n_rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// Rows `start..end` of a CSR matrix, without copying.
    pub fn of_csr(csr: &'a crate::data::Csr, start: usize, end: usize) -> Self {
        RowsView {
            indptr: &csr.indptr[start..=end],
            indices: &csr.indices,
            values: &csr.values,
        }
    }

    #[inline]
    fn row(&self, r: usize) -> (&'a [u32], &'a [f32]) {
        let (a, b) = (self.indptr[r], self.indptr[r + 1]);
        (&self.indices[a..b], &self.values[a..b])
    }
}

/// The side held fixed during a half-iteration: `factors` is m×k row-major,
/// `bias` has m entries for biased explicit models and is empty otherwise.
#[derive(Debug, Clone, Copy)]
pub struct FixedSide<'a> {
    pub factors: &'a [f32],
    pub bias: &'a [f32],
    /// Rows of the whole fixed side, at least m: a worker holds only the
    /// rows its blocks reference, and the iALS loss scales λ by the total.
    pub total_rows: usize,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SolveError {
    /// `row` counts from the first row of the view solved. The cause is part
    /// of the message and not a `source`, so error chains print it once.
    #[error("row {row}: {cause}")]
    NotPositiveDefinite { row: usize, cause: NotPositiveDefinite },
    #[error("invalid solve input: {0}")]
    Invalid(String),
}

impl SolveError {
    /// The same error for a view that starts `offset` rows into its side.
    pub fn offset_rows(self, offset: usize) -> Self {
        match self {
            SolveError::NotPositiveDefinite { row, cause } => SolveError::NotPositiveDefinite { row: row + offset, cause },
            e => e,
        }
    }

    /// The failing row, where one row failed.
    pub fn row(&self) -> Option<usize> {
        match self {
            SolveError::NotPositiveDefinite { row, .. } => Some(*row),
            SolveError::Invalid(_) => None,
        }
    }
}

/// Rows handed to one rayon task: large enough to amortize scratch set-up.
const ROWS_PER_TASK: usize = 32;

/// Ratings gathered per dense Gram update: bounds scratch memory for rows with huge counts.
pub(crate) const GATHER_CHUNK: usize = 256;

/// Whether every value is finite: a branch-free pass per 4096 values (it
/// vectorizes, unlike a short-circuiting `any`), run on every fixed factor
/// of every block solved and on factors received off the wire.
#[multiversion::multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
pub fn all_finite(v: &[f32]) -> bool {
    v.chunks(4096).all(|c| c.iter().fold(true, |ok, x| ok & x.is_finite()))
}

/// The largest of `v`, if any (a fold, so it vectorizes; every half checks
/// every rating's column with it).
#[multiversion::multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
fn max_index(v: &[u32]) -> Option<u32> {
    v.iter().copied().max()
}

/// Whether any of `v` is below zero (a fold per chunk, so it vectorizes).
#[multiversion::multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
fn any_negative(v: &[f32]) -> bool {
    v.chunks(4096).any(|c| c.iter().fold(false, |neg, &x| neg | (x < 0.0)))
}

/// The fixed side of a half-iteration, checked once: its shape against the
/// parameters, every factor and bias finite, the Gramian present (and
/// finite-sized) for implicit feedback. Blocks solved against it
/// ([`solve_rows_checked`]) check only their own rows, so a worker holding
/// many blocks scans the fixed side once per half, not once per block.
#[derive(Debug, Clone, Copy)]
pub struct CheckedFixed<'a> {
    side: FixedSide<'a>,
    gram: Option<&'a [f64]>,
    /// Rows of the fixed side (the column range of the rows solved).
    rows: usize,
}

impl<'a> CheckedFixed<'a> {
    pub fn new(p: &SolveParams, side: FixedSide<'a>, gram: Option<&'a [f64]>) -> Result<Self, SolveError> {
        let checked = Self::shaped(p, side, gram)?;
        if !all_finite(side.factors) || !all_finite(side.bias) {
            return Err(SolveError::Invalid("non-finite fixed factor".into()));
        }
        Ok(checked)
    }

    /// [`new`](Self::new) for a side whose every factor and bias the caller
    /// has already checked finite (a worker checks pushed rows as it copies
    /// them in): the shape is checked, the values are not scanned again.
    pub fn of_finite(p: &SolveParams, side: FixedSide<'a>, gram: Option<&'a [f64]>) -> Result<Self, SolveError> {
        debug_assert!(all_finite(side.factors) && all_finite(side.bias));
        Self::shaped(p, side, gram)
    }

    fn shaped(p: &SolveParams, side: FixedSide<'a>, gram: Option<&'a [f64]>) -> Result<Self, SolveError> {
        let k = p.factors;
        let bad = |m: String| Err(SolveError::Invalid(m));
        if k == 0 {
            return bad("factors must be positive".into());
        }
        if !side.factors.len().is_multiple_of(k) {
            return bad(format!("fixed factors length {} is not a multiple of {k}", side.factors.len()));
        }
        let m = side.factors.len() / k;
        if side.total_rows < m {
            return bad(format!("fixed side has {m} rows, more than its stated total {}", side.total_rows));
        }
        match &p.feedback {
            Feedback::Explicit { biased: true, .. } if side.bias.len() != m => {
                return bad(format!("fixed bias has {} entries, expected {m}", side.bias.len()));
            }
            Feedback::Explicit { .. } => {}
            Feedback::Implicit { .. } => match gram {
                Some(g) if g.len() == k * k => {}
                Some(g) => return bad(format!("gramian has {} values, expected {}", g.len(), k * k)),
                None => return bad("implicit feedback needs the gramian of the fixed side".into()),
            },
        }
        match p.solver {
            SolverKind::Ialspp { .. } if !matches!(p.feedback, Feedback::Implicit { .. }) => {
                return bad("the ialspp solver applies to implicit feedback only".into());
            }
            SolverKind::Ialspp { block, sweeps } if block == 0 || sweeps == 0 => {
                return bad(format!(
                    "ialspp needs a positive block size and sweep count, got {block} and {sweeps}"
                ));
            }
            _ => {}
        }
        Ok(CheckedFixed { side, gram, rows: m })
    }
}

/// Check a block's rows and outputs against a checked fixed side before any
/// arithmetic: a bad block is an error, never a panic.
fn validate_rows(
    p: &SolveParams,
    rows: &RowsView,
    fixed: &CheckedFixed,
    out_len: usize,
    out_bias_len: Option<usize>,
) -> Result<(), SolveError> {
    let k = p.factors;
    let bad = |m: String| Err(SolveError::Invalid(m));
    let m = fixed.rows;
    let n = rows.n_rows();
    if rows.indptr.is_empty() {
        return bad("empty indptr".into());
    }
    if rows.indptr.windows(2).any(|w| w[0] > w[1]) {
        return bad("indptr is not non-decreasing".into());
    }
    let end = *rows.indptr.last().unwrap_or(&0);
    if end > rows.indices.len() || end > rows.values.len() {
        return bad(format!(
            "indptr ends at {end} beyond {} indices",
            rows.indices.len().min(rows.values.len())
        ));
    }
    let (start, end) = (rows.indptr[0], end);
    // The maximum vectorizes where a search for the first bad index does
    // not; the search runs only to name it.
    let cols = &rows.indices[start..end];
    if max_index(cols).is_some_and(|c| c as usize >= m) {
        let bad_ix = cols.iter().find(|&&c| c as usize >= m).copied().unwrap_or_default();
        return bad(format!("column index {bad_ix} out of range for {m} fixed rows"));
    }
    if !all_finite(&rows.values[start..end]) {
        return bad("non-finite rating value".into());
    }
    if out_len != n * k {
        return bad(format!("output has {out_len} values, expected {n} rows × {k}"));
    }
    match &p.feedback {
        Feedback::Explicit { biased: true, .. } => {
            if out_bias_len != Some(n) {
                return bad(format!("output bias has {out_bias_len:?} entries, expected {n}"));
            }
        }
        Feedback::Explicit { biased: false, .. } => {}
        Feedback::Implicit { .. } => {
            if any_negative(&rows.values[start..end]) {
                return bad("implicit feedback values must be >= 0".into());
            }
        }
    }
    Ok(())
}

/// Solve every row of `rows` against `fixed`, writing row r's factors to
/// `out[r*k..(r+1)*k]` (their current contents are the warm start of CG) and,
/// for biased explicit models, its bias to `out_bias[r]`.
pub fn solve_rows(
    p: &SolveParams,
    rows: RowsView,
    fixed: FixedSide,
    gram: Option<&[f64]>,
    out: &mut [f32],
    out_bias: Option<&mut [f32]>,
) -> Result<(), SolveError> {
    solve_rows_checked(p, rows, &CheckedFixed::new(p, fixed, gram)?, out, out_bias)
}

/// [`solve_rows`] against a fixed side checked once for many blocks.
pub fn solve_rows_checked(
    p: &SolveParams,
    rows: RowsView,
    fixed: &CheckedFixed,
    out: &mut [f32],
    out_bias: Option<&mut [f32]>,
) -> Result<(), SolveError> {
    solve_rows_with_terms(p, rows, fixed, out, out_bias, None)
}

/// [`solve_rows_checked`] that also sums the solved rows' share of the
/// objective, when `terms` asks, per block of `block_starts` (row offsets
/// into `rows`: first 0, last the row count), each block in row order. The
/// in-process path and the workers both sum through here, so any cluster
/// shape reports the same bits.
pub fn solve_rows_summing_terms(
    p: &SolveParams,
    rows: RowsView,
    fixed: &CheckedFixed,
    out: &mut [f32],
    out_bias: Option<&mut [f32]>,
    terms: Option<(TermsWanted, &[usize])>,
) -> Result<Option<Vec<ObjectiveTerms>>, SolveError> {
    let Some((want, starts)) = terms else {
        solve_rows_with_terms(p, rows, fixed, out, out_bias, None)?;
        return Ok(None);
    };
    if starts.first() != Some(&0) || starts.last() != Some(&rows.n_rows()) || starts.windows(2).any(|w| w[0] > w[1]) {
        return Err(SolveError::Invalid(format!(
            "block starts {starts:?} do not cover {} rows",
            rows.n_rows()
        )));
    }
    let mut per_row = vec![ObjectiveTerms::default(); rows.n_rows()];
    solve_rows_with_terms(p, rows, fixed, out, out_bias, Some((&mut per_row, want)))?;
    Ok(Some(terms::block_sums(&per_row, starts)))
}

/// [`solve_rows_checked`] that also puts each solved row's share of the
/// objective into `terms` (one per row), computed right after its task
/// solved it.
fn solve_rows_with_terms(
    p: &SolveParams,
    rows: RowsView,
    fixed: &CheckedFixed,
    out: &mut [f32],
    out_bias: Option<&mut [f32]>,
    terms: Option<(&mut [ObjectiveTerms], TermsWanted)>,
) -> Result<(), SolveError> {
    validate_rows(p, &rows, fixed, out.len(), out_bias.as_ref().map(|b| b.len()))?;
    if let Some((t, _)) = &terms {
        if t.len() != rows.n_rows() {
            return Err(SolveError::Invalid(format!(
                "{} objective terms for {} rows",
                t.len(),
                rows.n_rows()
            )));
        }
    }
    let (terms, want) = match terms {
        Some((t, w)) => (Some(t), w),
        // Not read without terms.
        None => (None, TermsWanted::Reg),
    };
    let (gram, fixed) = (fixed.gram, fixed.side);
    let k = p.factors;
    let d = p.dim();
    let weights = p.implicit_weights();
    // The loss weighs every pair by s through YᵀY: scaled once per call,
    // not once per row (Hu et al.'s s = 1 needs no copy).
    let scaled_gram: Option<Cow<[f64]>> = match (weights, gram) {
        (Some(w), Some(g)) if w.gram_scale() != 1.0 => {
            let scale = w.gram_scale() as f64;
            Some(Cow::Owned(g.iter().map(|&v| v * scale).collect()))
        }
        (_, g) => g.map(Cow::Borrowed),
    };
    let gram = scaled_gram.as_deref();
    // CG works on an f32 copy of the Gramian with padded rows; made once
    // per block, not per row.
    let gram_f32: Vec<f32> = match (&p.solver, gram) {
        (SolverKind::Cg { .. }, Some(g)) => implicit::padded_gram_f32(g, k),
        _ => Vec::new(),
    };
    // iALS++ reads each diagonal block of the Gramian laid out for its
    // Cholesky: laid out once per block of rows, not once per row.
    let blocked_gram = match (&p.solver, gram) {
        (SolverKind::Ialspp { block, .. }, Some(g)) => Some(subspace::BlockedGram::new(g, k, *block)),
        _ => None,
    };
    let solve_task = |s: &mut RowScratch, task: usize, out_rows: &mut [f32], bias_rows: &mut [f32]| {
        let first = task * ROWS_PER_TASK;
        if let (Some(w), SolverKind::Cg { steps }) = (weights, p.solver) {
            let cg = s.cg.get_or_insert_with(|| implicit::CgBlock::new(k, ROWS_PER_TASK));
            let problem = implicit::CgProblem {
                p,
                weights: w,
                steps,
                rows: &rows,
                fixed: &fixed,
                gram: &gram_f32,
            };
            implicit::solve_rows_cg(&problem, first, cg, out_rows);
            return None;
        }
        if let (Some(w), SolverKind::Ialspp { sweeps, .. }, Some(bg)) = (weights, p.solver, &blocked_gram) {
            return subspace::solve_rows_subspace(p, w, sweeps, &rows, first, &fixed, bg, s, out_rows);
        }
        if matches!(p.solver, SolverKind::Ialspp { .. }) {
            // Returned above whenever the Gramian is there, which the checked side guarantees.
            return Some(SolveError::Invalid("ialspp needs the gramian".into()));
        }
        // CG and iALS++ returned above: what is left is solved exactly.
        let problem = exact::Problem {
            p,
            rows: &rows,
            fixed: &fixed,
            gram,
        };
        exact::solve_task(&problem, first, s, out_rows, bias_rows)
    };
    run_row_tasks_with(
        k,
        out,
        out_bias,
        terms,
        || RowScratch::new(p, d),
        |s, task, out_rows, bias_rows, terms| {
            let failed = solve_task(s, task, out_rows, bias_rows);
            if let (None, Some(terms)) = (&failed, terms) {
                let first = task * ROWS_PER_TASK;
                let scratch = &mut s.terms;
                for (i, t) in terms.iter_mut().enumerate() {
                    *t = terms::row_terms(
                        p,
                        &rows,
                        &fixed,
                        first + i,
                        (&out_rows[i * k..(i + 1) * k], bias_rows[i]),
                        want,
                        scratch,
                    );
                }
            }
            failed
        },
    )
}

/// Run `task` over the rows of `out` (k values each) and `out_bias` (one
/// each; `None`: no biases) in parallel tasks of [`ROWS_PER_TASK`] rows, each
/// with per-thread state from `init`. A task returns the error of its first
/// failing row. Every task runs to its end and the lowest failing row is
/// reported, so the error is the same whatever the thread count or the
/// cluster shape.
pub(crate) fn run_row_tasks<S>(
    k: usize,
    out: &mut [f32],
    out_bias: Option<&mut [f32]>,
    init: impl Fn() -> S + Sync + Send,
    task: impl Fn(&mut S, usize, &mut [f32], &mut [f32]) -> Option<SolveError> + Sync + Send,
) -> Result<(), SolveError> {
    run_row_tasks_with(k, out, out_bias, None::<&mut [()]>, init, |s, t, o, b, _| task(s, t, o, b))
}

/// [`run_row_tasks`] with a per-row output `extra` (one per row, or `None`),
/// handed to each task as the slice of its rows.
pub(crate) fn run_row_tasks_with<S, T: Send>(
    k: usize,
    out: &mut [f32],
    out_bias: Option<&mut [f32]>,
    extra: Option<&mut [T]>,
    init: impl Fn() -> S + Sync + Send,
    task: impl Fn(&mut S, usize, &mut [f32], &mut [f32], Option<&mut [T]>) -> Option<SolveError> + Sync + Send,
) -> Result<(), SolveError> {
    let mut no_bias;
    let out_bias: &mut [f32] = match out_bias {
        Some(b) => b,
        None => {
            no_bias = vec![0f32; out.len() / k.max(1)];
            &mut no_bias
        }
    };
    let extra: Vec<Option<&mut [T]>> = match extra {
        Some(e) => e.chunks_mut(ROWS_PER_TASK).map(Some).collect(),
        None => std::iter::repeat_with(|| None)
            .take(out_bias.len().div_ceil(ROWS_PER_TASK))
            .collect(),
    };
    let first_error = out
        .par_chunks_mut(ROWS_PER_TASK * k)
        .zip(out_bias.par_chunks_mut(ROWS_PER_TASK))
        .zip(extra.into_par_iter())
        .enumerate()
        .map_init(init, |s, (t, ((out_rows, bias_rows), extra))| {
            task(s, t, out_rows, bias_rows, extra)
        })
        .flatten()
        .min_by_key(|e| e.row());
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Buffers one thread reuses for all its rows.
pub(crate) struct RowScratch {
    pub dense: DenseScratch,
    /// Gathered fixed rows, row-major GATHER_CHUNK × panel_width(d), in f32
    /// (the Gram kernel sums in f32 within a chunk, in f64 across chunks),
    /// and the portable kernel's product scratch.
    pub panel: Vec<f32>,
    pub g32: Vec<f32>,
    /// The normal matrix (d columns of `normal_ld(d)`, column-major) and its right-hand side.
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    /// Column sums of the gathered rows (the bias feature's Gram row).
    pub colsum: Vec<f64>,
    /// The block CG's vectors, made on a thread's first CG task.
    pub cg: Option<implicit::CgBlock>,
    /// iALS++'s per-row state, made on a thread's first such row.
    pub subspace: Option<subspace::SubspaceScratch>,
    /// Eight rows' systems for the batched Cholesky, made on first use.
    pub lanes: Option<Box<exact::LaneBuffers>>,
    /// The solved rows' objective terms' buffers.
    pub(crate) terms: terms::TermsScratch,
}

impl RowScratch {
    pub(crate) fn new(p: &SolveParams, d: usize) -> Self {
        // The block CG has its own buffers (`cg`): its threads need none of
        // the exact path's, which would be allocated and zeroed for nothing
        // each time the pool splits the rows (several times per block).
        let d = if p.implicit_weights().is_some() && matches!(p.solver, SolverKind::Cg { .. }) {
            0
        } else {
            d
        };
        RowScratch {
            dense: DenseScratch::new(p.backend, d),
            panel: vec![0.0; GATHER_CHUNK * panel_width(d)],
            g32: vec![0.0; panel_width(d) * panel_width(d)],
            a: vec![0.0; normal_ld(d) * d],
            b: vec![0.0; d],
            colsum: vec![0.0; d],
            cg: None,
            subspace: None,
            lanes: None,
            terms: Default::default(),
        }
    }

    /// Add `lam` to the normal matrix's diagonal.
    fn add_ridge(&mut self, d: usize, lam: f64) {
        let ld = normal_ld(d);
        for c in 0..d {
            self.a[c * ld + c] += lam;
        }
    }
}

/// Solve one row outside a block (fold-in of a new user): the same code path as training.
pub fn solve_one_row(
    p: &SolveParams,
    cols: &[u32],
    vals: &[f32],
    fixed: FixedSide,
    gram: Option<&[f64]>,
    warm_start: Option<&[f32]>,
) -> Result<(Vec<f32>, f32), SolveError> {
    let mut sorted: Vec<(u32, f32)> = cols.iter().copied().zip(vals.iter().copied()).collect();
    sorted.sort_by_key(|e| e.0);
    let (c, v): (Vec<u32>, Vec<f32>) = sorted.into_iter().unzip();
    let indptr = [0, c.len()];
    let rows = RowsView {
        indptr: &indptr,
        indices: &c,
        values: &v,
    };
    let mut out = warm_start.map(<[f32]>::to_vec).unwrap_or_else(|| vec![0.0; p.factors]);
    let mut bias = [0f32];
    let biased = p.biased();
    solve_rows(p, rows, fixed, gram, &mut out, if biased { Some(&mut bias) } else { None })?;
    Ok((out, bias[0]))
}

#[cfg(test)]
mod tests;
