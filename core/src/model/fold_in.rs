//! Fold-in: the factors of a user who is not in the model (or whose history
//! changed), from their history against the model's fixed item factors.
//!
//! The solve is the trainer's own: the [`SolveParams`] are rebuilt from the
//! stored training configuration, the row goes through
//! [`crate::solve::solve_one_row`], and for implicit feedback the item
//! Gramian YᵀY is summed over the same item blocks as in training.
//!
//! One difference, on purpose: training's conjugate gradient is warm-started
//! from the previous iteration's row and runs only a few steps. A new user has
//! no previous row, and a few steps from zero are far from the solution, so a
//! fold-in without a warm start solves the same normal equations exactly
//! (Cholesky): the fixed point the trainer's CG steps approach. With a warm
//! start (refitting a user already in the model) it uses the model's solver,
//! which is exactly what one more user half-iteration would give.

use std::borrow::Cow;

use ndarray::{concatenate, Array2, Axis};

use super::{Model, ModelKind};
use crate::blocks::BlockLayout;
use crate::data::{Csr, DuplicatePolicy, RawRatings};
use crate::solve::{block_gram, solve_one_row, sum_grams, Feedback, FixedSide, SolveError, SolveParams, SolverKind};
use crate::train::TrainConfig;

/// Why a user could not be folded in.
#[derive(Debug, thiserror::Error)]
pub enum FoldInError {
    #[error("the model's stored hyperparameters are not a training configuration: {0}")]
    Hyperparameters(String),
    #[error("the model does not match its hyperparameters: {0}")]
    Inconsistent(String),
    #[error("the history is empty")]
    EmptyHistory,
    #[error("none of the {unknown} items of the history is in the model")]
    NoKnownItems { unknown: usize },
    #[error("item '{item}': {problem}")]
    BadValue { item: String, problem: String },
    /// The cause is part of the message (not a source), so chains don't repeat it.
    #[error("user '{user}': {error}")]
    User { user: String, error: Box<FoldInError> },
    #[error(transparent)]
    Solve(#[from] SolveError),
}

/// A folded-in user.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedUser {
    pub factors: Vec<f32>,
    /// b_u of biased explicit models, else 0.
    pub bias: f32,
    /// The known history items (sorted, distinct item rows): the user's seen items.
    pub items: Vec<u32>,
    /// Their values after merging duplicates.
    pub values: Vec<f32>,
    /// History entries whose item is not in the model (skipped).
    pub unknown: usize,
}

/// What is needed to fold users into one model, computed once (the serve
/// loop reuses it for every request).
#[derive(Debug, Clone)]
pub struct FoldIn {
    /// The trainer's parameters (the model's solver).
    params: SolveParams,
    /// The same with an exact solver, for rows without a warm start.
    exact: SolveParams,
    /// YᵀY of the item factors (implicit feedback).
    gram: Option<Vec<f64>>,
}

/// The item factors as one row-major slice (copied only if the array is not standard layout).
fn item_slice(model: &Model) -> Cow<'_, [f32]> {
    match model.item_factors().as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(model.item_factors().iter().copied().collect()),
    }
}

/// YᵀY summed per item block in block order, the blocks laid out from the
/// item counts of `seen` as training lays them out from its item matrix, so
/// the sum is the trainer's (bit for bit when `seen` is the training matrix).
fn item_gram(model: &Model, blocks: usize) -> Vec<f64> {
    let k = model.factors();
    let flat = item_slice(model);
    let layout = BlockLayout::balanced(&model.seen().transpose(), blocks);
    let partials: Vec<Vec<f64>> = (0..layout.n_blocks())
        .map(|b| {
            let r = layout.range(b);
            block_gram(&flat[r.start * k..r.end * k], k)
        })
        .collect();
    sum_grams(k, partials.iter().map(Vec::as_slice))
}

impl FoldIn {
    /// Rebuild the trainer's solve settings from the model's stored hyperparameters.
    pub fn new(model: &Model) -> Result<Self, FoldInError> {
        let cfg: TrainConfig =
            serde_json::from_value(model.hyperparameters().clone()).map_err(|e| FoldInError::Hyperparameters(e.to_string()))?;
        let mut params = cfg.solve_params(model.global_mean() as f64);
        let bad = |m: String| Err(FoldInError::Inconsistent(m));
        if params.factors != model.factors() {
            return bad(format!(
                "{} factors in the hyperparameters, {} in the model",
                params.factors,
                model.factors()
            ));
        }
        match (model.kind(), params.feedback) {
            (ModelKind::Implicit, Feedback::Implicit { .. }) => {}
            (ModelKind::Explicit, Feedback::Explicit { biased, .. }) => {
                if biased != model.item_bias().is_some() {
                    return bad(format!("biased = {biased}, item biases present = {}", model.item_bias().is_some()));
                }
                // Explicit rows are ridge regressions: ALS solves them exactly
                // whatever optimizer trained the item side.
                params.solver = SolverKind::Cholesky;
            }
            (kind, _) => return bad(format!("a {kind:?} model with hyperparameters of the other kind")),
        }
        let exact = SolveParams {
            solver: SolverKind::Cholesky,
            ..params
        };
        let gram = matches!(params.feedback, Feedback::Implicit { .. }).then(|| item_gram(model, cfg.blocks));
        Ok(FoldIn { params, exact, gram })
    }

    /// The trainer's row-solve parameters.
    pub fn params(&self) -> &SolveParams {
        &self.params
    }

    fn implicit(&self) -> bool {
        matches!(self.params.feedback, Feedback::Implicit { .. })
    }

    /// Map a history to item rows: unknown items are counted and skipped;
    /// repeated items merge as training merges them by default (implicit
    /// values add up, for explicit ratings the last one wins). Returns sorted
    /// distinct rows, their values and the unknown count.
    pub fn resolve<S: AsRef<str>>(&self, model: &Model, history: &[(S, f32)]) -> Result<(Vec<u32>, Vec<f32>, usize), FoldInError> {
        if history.is_empty() {
            return Err(FoldInError::EmptyHistory);
        }
        let mut known: Vec<(u32, f32)> = Vec::with_capacity(history.len());
        let mut unknown = 0;
        for (item, value) in history {
            let item = item.as_ref();
            let problem = if let Err(e) = crate::limits::check_value(*value) {
                Some(e)
            } else if self.implicit() && *value < 0.0 {
                Some(format!(
                    "value {value} is negative (implicit feedback values are counts or weights >= 0)"
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(FoldInError::BadValue {
                    item: item.to_string(),
                    problem,
                });
            }
            match model.item_index(item) {
                Some(i) => known.push((i as u32, *value)),
                None => unknown += 1,
            }
        }
        if known.is_empty() {
            return Err(FoldInError::NoKnownItems { unknown });
        }
        // Stable: equal items keep their history order, so "last" is the later entry.
        known.sort_by_key(|e| e.0);
        let (mut rows, mut vals): (Vec<u32>, Vec<f32>) = (Vec::with_capacity(known.len()), Vec::with_capacity(known.len()));
        for (i, v) in known {
            match rows.last() {
                Some(&last) if last == i => {
                    let slot = vals.last_mut().expect("values follow rows");
                    *slot = if self.implicit() { *slot + v } else { v };
                }
                _ => {
                    rows.push(i);
                    vals.push(v);
                }
            }
        }
        Ok((rows, vals, unknown))
    }

    /// Solve one row from resolved item rows and values. `warm_start` (the
    /// user's current factors) selects the model's own solver; without it the
    /// solve is exact (see the module docs).
    pub fn solve(&self, model: &Model, items: &[u32], values: &[f32], warm_start: Option<&[f32]>) -> Result<(Vec<f32>, f32), FoldInError> {
        let flat = item_slice(model);
        let fixed = FixedSide {
            factors: &flat,
            bias: match self.params.feedback {
                Feedback::Explicit { biased: true, .. } => model.item_bias().unwrap_or(&[]),
                _ => &[],
            },
            total_rows: model.item_ids().len(),
        };
        let params = if warm_start.is_some() { &self.params } else { &self.exact };
        Ok(solve_one_row(params, items, values, fixed, self.gram.as_deref(), warm_start)?)
    }

    /// Fold in one history of (item id, value) pairs (implicit: a count or
    /// weight, 1 for a plain interaction; explicit: the rating).
    pub fn fold_in<S: AsRef<str>>(
        &self,
        model: &Model,
        history: &[(S, f32)],
        warm_start: Option<&[f32]>,
    ) -> Result<FoldedUser, FoldInError> {
        let (items, values, unknown) = self.resolve(model, history)?;
        let (factors, bias) = self.solve(model, &items, &values, warm_start)?;
        Ok(FoldedUser {
            factors,
            bias,
            items,
            values,
            unknown,
        })
    }
}

/// What [`fold_in_users`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoldInReport {
    /// Users appended to the model.
    pub added: usize,
    /// Users already in the model whose row was refit from the given history.
    pub refit: usize,
    /// History rows whose item is not in the model (skipped).
    pub unknown_items: usize,
}

/// Fold every user of `raw` into a copy of `model`, as the next model version.
///
/// New users are appended (rows after the existing ones, in first-seen
/// order). A user already in the model is refit: the given history replaces
/// theirs, since the model keeps which items a user saw but not the values
/// needed to merge old and new ratings; the row is warm-started from their
/// current factors, so the refit is one more trainer half-step for that user.
pub fn fold_in_users(model: &Model, raw: &RawRatings, duplicates: Option<DuplicatePolicy>) -> Result<(Model, FoldInReport), FoldInError> {
    let fold = FoldIn::new(model)?;
    // Group rows by user token, in first-seen order of the users.
    let mut rows_of: Vec<Vec<usize>> = vec![Vec::new(); raw.user_tokens.len()];
    for (r, &u) in raw.users.iter().enumerate() {
        rows_of[u as usize].push(r);
    }
    let k = model.factors();
    let mut next = model.clone().into_parts();
    let mut report = FoldInReport::default();
    let mut new_ids = Vec::new();
    let mut new_factors: Vec<f32> = Vec::new();
    let mut new_bias = Vec::new();
    // Seen rows: replaced for refit users, appended for new ones.
    let mut seen_rows: Vec<Vec<u32>> = (0..model.n_users()).map(|u| model.seen().row(u).0.to_vec()).collect();
    for (token, rows) in raw.user_tokens.iter().zip(&rows_of) {
        if rows.is_empty() {
            continue;
        }
        let history: Vec<(&str, f32)> = merge_duplicates(raw, rows, duplicates)
            .into_iter()
            .map(|(item, v)| (raw.item_tokens[item as usize].as_str(), v))
            .collect();
        let existing = model.user_index(token);
        let warm = existing.map(|u| model.user_factors().row(u).to_vec());
        let user = fold.fold_in(model, &history, warm.as_deref()).map_err(|e| FoldInError::User {
            user: token.clone(),
            error: Box::new(e),
        })?;
        report.unknown_items += user.unknown;
        match existing {
            Some(u) => {
                next.user_factors.row_mut(u).assign(&ndarray::ArrayView1::from(&user.factors[..]));
                if let Some(b) = next.user_bias.as_mut() {
                    b[u] = user.bias;
                }
                seen_rows[u] = user.items;
                report.refit += 1;
            }
            None => {
                new_ids.push(token.clone());
                new_factors.extend_from_slice(&user.factors);
                new_bias.push(user.bias);
                seen_rows.push(user.items);
                report.added += 1;
            }
        }
    }
    let added = Array2::from_shape_vec((new_ids.len(), k), new_factors).expect("k values per folded user");
    next.user_factors = concatenate(Axis(0), &[next.user_factors.view(), added.view()]).expect("same factor count");
    if let Some(b) = next.user_bias.as_mut() {
        b.extend_from_slice(&new_bias);
    }
    next.user_ids.extend(new_ids);
    next.seen = seen_csr(&seen_rows, model.n_items());
    next.version = model.version() + 1;
    // New users are tokens the model lacks, each once, so the parts stay valid.
    let next = Model::new(next).map_err(|e| FoldInError::Inconsistent(e.to_string()))?;
    Ok((next, report))
}

/// One user's `(item token, value)` rows with repeated items merged by
/// `policy`, in first-seen order. `None` leaves them to [`FoldIn::resolve`],
/// which merges as training does by default.
fn merge_duplicates(raw: &RawRatings, rows: &[usize], policy: Option<DuplicatePolicy>) -> Vec<(u32, f32)> {
    let pairs = rows.iter().map(|&r| (raw.items[r], raw.ratings[r]));
    let Some(policy) = policy else {
        return pairs.collect();
    };
    let mut at = std::collections::HashMap::with_capacity(rows.len());
    let mut merged: Vec<(u32, f32)> = Vec::with_capacity(rows.len());
    for (item, v) in pairs {
        match at.get(&item) {
            None => {
                at.insert(item, merged.len());
                merged.push((item, v));
            }
            Some(&i) => match policy {
                DuplicatePolicy::First => {}
                DuplicatePolicy::Last => merged[i].1 = v,
                DuplicatePolicy::Sum => merged[i].1 += v,
            },
        }
    }
    merged
}

fn seen_csr(rows: &[Vec<u32>], n_items: usize) -> Csr {
    let mut indptr = Vec::with_capacity(rows.len() + 1);
    indptr.push(0);
    let mut indices = Vec::new();
    for r in rows {
        indices.extend_from_slice(r);
        indptr.push(indices.len());
    }
    let values = vec![1.0; indices.len()];
    Csr {
        n_cols: n_items,
        indptr,
        indices,
        values,
    }
}

#[cfg(test)]
mod tests;
