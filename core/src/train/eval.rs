//! Test-set evaluation of the current factors.

use serde::{Deserialize, Serialize};

use ndarray::Array2;

use crate::blocks::BlockLayout;
use crate::data::{Csr, Dataset, HeldOutUsers, TestSet};
pub use crate::metrics::relevant_by_user;
use crate::metrics::{ranking_metrics_by_blocks, ErrorSums, RankingMetrics, WIDE_NDCG_K};
use crate::side::Factors;
use crate::solve::{solve_rows, Feedback, FixedSide, RowsView, SolveParams, SolverKind};

use super::{TrainConfig, TrainError};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestMetrics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Without clipping (protocol step 4 of the reference benchmarks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse_raw: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae_raw: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranking: Option<RankingMetrics>,
}

impl TestMetrics {
    /// Flat metric names as they appear in the metrics JSON (`precision@10`, ...).
    pub fn to_json_map(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        let mut put = |k: String, v: Option<f64>| {
            if let Some(v) = v {
                m.insert(k, serde_json::json!(v));
            }
        };
        put("rmse".into(), self.rmse);
        put("mae".into(), self.mae);
        put("rmse_raw".into(), self.rmse_raw);
        put("mae_raw".into(), self.mae_raw);
        if let Some(r) = &self.ranking {
            put(format!("precision@{}", r.k), Some(r.precision));
            put(format!("recall@{}", r.k), Some(r.recall));
            put(format!("recall_capped@{}", r.k), Some(r.recall_capped));
            put(format!("map@{}", r.k), Some(r.map));
            put(format!("ndcg@{}", r.k), Some(r.ndcg));
            put(format!("ndcg@{WIDE_NDCG_K}"), Some(r.ndcg_wide));
            put(format!("precision_pooled@{}", r.k), Some(r.precision_pooled));
            m.insert("n_eval_users".into(), serde_json::json!(r.n_eval_users));
        }
        m
    }
}

/// Explicit prediction μ + bᵤ + bᵢ + pᵤᵀqᵢ (biases only in biased models).
#[inline]
pub fn predict(p: &SolveParams, users: &Factors, items: &Factors, u: usize, i: usize) -> f32 {
    predict_rows(p, users.row(u), users.bias_of(u), items.row(i), items.bias_of(i))
}

/// [`predict`] from the rows themselves: workers evaluate with it, so their
/// predictions are bit for bit the coordinator's.
#[inline]
pub fn predict_rows(p: &SolveParams, pu: &[f32], bu: f32, qi: &[f32], bi: f32) -> f32 {
    let dot = crate::linalg::vec::dot_f32_f64(pu, qi) as f32;
    match p.feedback {
        Feedback::Explicit { biased: true, global_mean } => global_mean + bu + bi + dot,
        _ => dot,
    }
}

/// Test metrics of the current factors, computed here. With held-out users
/// (`ds.held_out`) they are folded in first, which for implicit feedback
/// needs the items' Gramian as training sums it (the row solve refuses to go
/// without it).
///
/// The sums behind the metrics go user block by user block of `user_blocks`
/// (the test rows of each user in test order), the blocks' sums added in
/// block order: as a cluster's workers sum the blocks they hold, so the
/// metrics are the same bits for any cluster shape. Held-out users go by
/// the blocks their ids hash to, as the workers hold them.
pub fn evaluate(
    ds: &Dataset,
    cfg: &TrainConfig,
    p: &SolveParams,
    users: &Factors,
    items: &Factors,
    item_gram: Option<&[f64]>,
    user_blocks: &BlockLayout,
) -> Result<TestMetrics, TrainError> {
    if let Some(h) = &ds.held_out {
        let folded = fold_in_held_out(h, p, items, item_gram)?;
        // Each user block's held-out users, as the workers holding them sum theirs.
        let starts = h.block_starts(user_blocks.n_blocks());
        return Ok(metrics_of(ds, cfg, p, (&h.test, &h.fold_in), (&folded, items), &starts));
    }
    Ok(metrics_of(ds, cfg, p, (&ds.test, &ds.by_user), (users, items), &user_blocks.starts))
}

/// Metrics of `test`, whose users index `users`; `seen` (users × items) are
/// the items not ranked for each user; user blocks start at `starts`.
fn metrics_of(
    ds: &Dataset,
    cfg: &TrainConfig,
    p: &SolveParams,
    (test, seen): (&TestSet, &crate::data::Csr),
    (users, items): (&Factors, &Factors),
    starts: &[usize],
) -> TestMetrics {
    if test.is_empty() {
        return TestMetrics::default();
    }
    if cfg.is_implicit() {
        let r = ranking_metrics_by_blocks(
            users.matrix.view(),
            items.matrix.view(),
            seen,
            test,
            cfg.ranking_k,
            cfg.min_pos,
            starts,
        );
        return TestMetrics {
            ranking: Some(r),
            ..Default::default()
        };
    }
    // The test rows grouped by user, each user's in test order.
    let (indptr, order) = crate::data::group_by_key(&test.users, users.n_rows());
    let clip = clip_range(ds, cfg);
    let (mut raw, mut clipped) = (ErrorSums::default(), ErrorSums::default());
    for block in starts.windows(2) {
        let (mut raw_b, mut clipped_b) = (ErrorSums::default(), ErrorSums::default());
        for &r in &order[indptr[block[0]]..indptr[block[1]]] {
            let pred = predict(p, users, items, test.users[r] as usize, test.items[r] as usize);
            raw_b.add(test.ratings[r], pred, None);
            clipped_b.add(test.ratings[r], pred, clip);
        }
        raw.merge(&raw_b);
        clipped.merge(&clipped_b);
    }
    metrics_of_error_sums(&raw, &clipped)
}

/// Where explicit predictions are clipped before RMSE and MAE: the
/// training ratings' range, unless clipping is off.
pub fn clip_range(ds: &Dataset, cfg: &TrainConfig) -> Option<(f32, f32)> {
    clip_of((ds.rating_min, ds.rating_max), cfg)
}

/// [`clip_range`] of a training range known without the dataset.
pub fn clip_of(rating_range: (f32, f32), cfg: &TrainConfig) -> Option<(f32, f32)> {
    cfg.clip_predictions.then_some(rating_range)
}

/// Explicit metrics from the error sums of the raw and of the clipped
/// predictions (made here or summed on the workers).
pub fn metrics_of_error_sums(raw: &ErrorSums, clipped: &ErrorSums) -> TestMetrics {
    let (raw, clipped) = (raw.metrics(), clipped.metrics());
    TestMetrics {
        rmse: Some(clipped.rmse),
        mae: Some(clipped.mae),
        rmse_raw: Some(raw.rmse),
        mae_raw: Some(raw.mae),
        ranking: None,
    }
}

/// Factors of the held-out users from their fold-in rows against the fixed
/// items, as `recommend --history` folds a user in: the trainer's row solve,
/// exact (Cholesky) since there is no previous row to warm-start from.
/// Rendle et al. fold iALS++ users in with 8 sweeps from zero instead; the
/// exact solve is the point those sweeps approach.
pub fn fold_in_held_out(h: &HeldOutUsers, p: &SolveParams, items: &Factors, item_gram: Option<&[f64]>) -> Result<Factors, TrainError> {
    let fixed = FixedSide {
        factors: items.flat(),
        bias: if p.biased() { &items.bias } else { &[] },
        total_rows: items.n_rows(),
    };
    let (out, bias) = fold_in_rows(&h.fold_in, p, fixed, item_gram)?;
    let matrix =
        Array2::from_shape_vec((h.n_users(), p.factors), out).map_err(|_| TrainError::Internal("fold-in factors have the wrong shape"))?;
    Ok(Factors { matrix, bias })
}

/// The factors (and biases, in biased models) of the users whose rows are
/// `rows`, their columns indexing `fixed`'s rows: each row solved exactly
/// against the fixed items. A worker folds its blocks' held-out users in
/// through here too, so their factors are the same bits.
pub fn fold_in_rows(rows: &Csr, p: &SolveParams, fixed: FixedSide, item_gram: Option<&[f64]>) -> Result<(Vec<f32>, Vec<f32>), TrainError> {
    let exact = SolveParams {
        solver: SolverKind::Cholesky,
        ..*p
    };
    let (n, k) = (rows.n_rows(), p.factors);
    let biased = p.biased();
    let mut out = vec![0f32; n * k];
    let mut bias = vec![0f32; if biased { n } else { 0 }];
    solve_rows(
        &exact,
        RowsView::of_csr(rows, 0, n),
        fixed,
        item_gram,
        &mut out,
        biased.then_some(bias.as_mut_slice()),
    )?;
    Ok((out, bias))
}

/// Ranking metrics from the sums of the evaluated users (summed on the workers).
pub fn metrics_of_ranking_sums(cfg: &TrainConfig, sums: &crate::metrics::RankingSums) -> TestMetrics {
    TestMetrics {
        ranking: Some(sums.metrics(cfg.ranking_k)),
        ..Default::default()
    }
}
