//! A solved row's share of the training objective, computed by whoever
//! solved the row, right after its task solved it: its fixed rows are still
//! in cache, and nobody makes a separate pass over every rating. The sums
//! go block by block in a fixed order, so any cluster shape reports the
//! same bits as the single-process path.

use super::{FixedSide, RowsView, SolveParams};
use crate::linalg::rows_ops::dots_f64;
use crate::linalg::vec::dot_f64;
use crate::solve::Feedback;

/// Terms of the objective (see [`crate::objective::objective`]) for some rows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ObjectiveTerms {
    /// The data term over the rows' ratings (implicit: the observed pairs'
    /// part beyond the all-pairs ⟨YᵀY, XᵀX⟩, which needs both Gramians; for
    /// Hu's loss, c(p − s)² − s² per pair, so it may be negative).
    pub loss: f64,
    /// Squared training error over the same ratings.
    pub sq: f64,
    /// λ-weighted squared norms of the rows (biases included).
    pub reg: f64,
}

impl ObjectiveTerms {
    /// A left fold in the order given: the same sequence, the same bits.
    pub fn sum(terms: impl IntoIterator<Item = ObjectiveTerms>) -> ObjectiveTerms {
        terms.into_iter().fold(ObjectiveTerms::default(), |a, b| ObjectiveTerms {
            loss: a.loss + b.loss,
            sq: a.sq + b.sq,
            reg: a.reg + b.reg,
        })
    }

    pub fn is_finite(&self) -> bool {
        self.loss.is_finite() && self.sq.is_finite() && self.reg.is_finite()
    }
}

/// Which terms a half-step computes for the rows it solves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermsWanted {
    /// The regularization only: the users' half, whose data term waits for the new items.
    Reg,
    /// The data term as well: the items' half, the last of an iteration.
    Full,
}

/// Buffers one thread reuses for its rows' terms.
#[derive(Debug, Default)]
pub(crate) struct TermsScratch {
    x64: Vec<f64>,
    dots: Vec<f64>,
}

/// Row `r` of `rows`, solved to factors and bias `solved`, against `fixed`.
pub(crate) fn row_terms(
    p: &SolveParams,
    rows: &RowsView,
    fixed: &FixedSide,
    r: usize,
    solved: (&[f32], f32),
    want: TermsWanted,
    scratch: &mut TermsScratch,
) -> ObjectiveTerms {
    let k = p.factors;
    let (x, bias) = solved;
    let (cols, vals) = rows.row(r);
    let TermsScratch { x64, dots } = scratch;
    x64.clear();
    x64.extend(x.iter().map(|&v| v as f64));
    let reg = p.row_lambda(cols.len(), fixed.total_rows) * (dot_f64(x64, x64) + (bias as f64).powi(2));
    let mut t = ObjectiveTerms { reg, ..Default::default() };
    if want == TermsWanted::Reg {
        return t;
    }
    dots.resize(cols.len(), 0.0);
    dots_f64(fixed.factors, cols, k, x64, dots);
    match p.feedback {
        Feedback::Explicit { biased, global_mean } => {
            for ((&c, &v), &dot) in cols.iter().zip(vals).zip(dots.iter()) {
                let mut pred = dot;
                if biased {
                    pred += global_mean as f64 + fixed.bias[c as usize] as f64 + bias as f64;
                }
                let e = v as f64 - pred;
                t.loss += e * e;
            }
            t.sq = t.loss;
        }
        Feedback::Implicit { .. } => {
            let w = p.implicit_weights().expect("implicit feedback has weights");
            for (&v, &dot) in vals.iter().zip(dots.iter()) {
                let pref = if v > 0.0 { 1.0 } else { 0.0 };
                t.loss += w.observed_loss(v, dot);
                t.sq += (pref - dot).powi(2);
            }
        }
    }
    t
}

/// Per block of `starts` (block b is rows `starts[b]..starts[b + 1]` of
/// `rows`), the sum of its rows' terms, in row order.
pub(crate) fn block_sums(rows: &[ObjectiveTerms], starts: &[usize]) -> Vec<ObjectiveTerms> {
    starts
        .windows(2)
        .map(|w| ObjectiveTerms::sum(rows[w[0]..w[1]].iter().copied()))
        .collect()
}
