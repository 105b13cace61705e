//! Test-set evaluation of the current factors.

use serde::{Deserialize, Serialize};

use ndarray::Array2;

use crate::data::{Dataset, HeldOutUsers, TestSet};
pub use crate::metrics::relevant_by_user;
use crate::metrics::{ranking_metrics, ranking_metrics_from_lists, rating_metrics, RankingMetrics, WIDE_NDCG_K};
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
pub fn evaluate(
    ds: &Dataset,
    cfg: &TrainConfig,
    p: &SolveParams,
    users: &Factors,
    items: &Factors,
    item_gram: Option<&[f64]>,
) -> Result<TestMetrics, TrainError> {
    if let Some(h) = &ds.held_out {
        let folded = fold_in_held_out(h, p, items, item_gram)?;
        return Ok(metrics_of(ds, cfg, p, &h.test, &h.fold_in, &folded, items));
    }
    Ok(metrics_of(ds, cfg, p, &ds.test, &ds.by_user, users, items))
}

/// Metrics of `test`, whose users index `users`; `seen` (users × items) are
/// the items not ranked for each user.
fn metrics_of(
    ds: &Dataset,
    cfg: &TrainConfig,
    p: &SolveParams,
    test: &TestSet,
    seen: &crate::data::Csr,
    users: &Factors,
    items: &Factors,
) -> TestMetrics {
    if test.is_empty() {
        return TestMetrics::default();
    }
    if cfg.is_implicit() {
        let r = ranking_metrics(users.matrix.view(), items.matrix.view(), seen, test, cfg.ranking_k, cfg.min_pos);
        return TestMetrics {
            ranking: Some(r),
            ..Default::default()
        };
    }
    let pred: Vec<f32> = test
        .users
        .iter()
        .zip(&test.items)
        .map(|(&u, &i)| predict(p, users, items, u as usize, i as usize))
        .collect();
    metrics_of_predictions(ds, cfg, &test.ratings, &pred)
}

/// Factors of the held-out users from their fold-in rows against the fixed
/// items, as `recommend --history` folds a user in: the trainer's row solve,
/// exact (Cholesky) since there is no previous row to warm-start from.
/// Rendle et al. fold iALS++ users in with 8 sweeps from zero instead; the
/// exact solve is the point those sweeps approach.
pub fn fold_in_held_out(h: &HeldOutUsers, p: &SolveParams, items: &Factors, item_gram: Option<&[f64]>) -> Result<Factors, TrainError> {
    let exact = SolveParams {
        solver: SolverKind::Cholesky,
        ..*p
    };
    let (n, k) = (h.n_users(), p.factors);
    let biased = matches!(p.feedback, Feedback::Explicit { biased: true, .. });
    let mut out = vec![0f32; n * k];
    let mut bias = vec![0f32; if biased { n } else { 0 }];
    let fixed = FixedSide {
        factors: items.flat(),
        bias: if biased { &items.bias } else { &[] },
        total_rows: items.n_rows(),
    };
    solve_rows(
        &exact,
        RowsView::of_csr(&h.fold_in, 0, n),
        fixed,
        item_gram,
        &mut out,
        biased.then_some(bias.as_mut_slice()),
    )?;
    let matrix = Array2::from_shape_vec((n, k), out).map_err(|_| TrainError::Internal("fold-in factors have the wrong shape"))?;
    Ok(Factors { matrix, bias })
}

/// Explicit metrics from a prediction for every test row, in test order
/// (made here or gathered from workers).
pub fn metrics_from_predictions(ds: &Dataset, cfg: &TrainConfig, pred: &[f32]) -> TestMetrics {
    metrics_of_predictions(ds, cfg, &ds.test.ratings, pred)
}

fn metrics_of_predictions(ds: &Dataset, cfg: &TrainConfig, truth: &[f32], pred: &[f32]) -> TestMetrics {
    let raw = rating_metrics(truth, pred, None);
    let clipped = if cfg.clip_predictions {
        rating_metrics(truth, pred, Some((ds.rating_min, ds.rating_max)))
    } else {
        raw
    };
    TestMetrics {
        rmse: Some(clipped.rmse),
        mae: Some(clipped.mae),
        rmse_raw: Some(raw.rmse),
        mae_raw: Some(raw.mae),
        ranking: None,
    }
}

/// Ranking metrics from top-K lists gathered elsewhere: `lists[j]` belongs to
/// the j-th user [`relevant_by_user`] selects, `relevant[j]` is its list.
pub fn metrics_from_top_lists(cfg: &TrainConfig, relevant: &[Vec<u32>], lists: &[Vec<u32>]) -> TestMetrics {
    TestMetrics {
        ranking: Some(ranking_metrics_from_lists(lists, relevant, cfg.ranking_k)),
        ..Default::default()
    }
}
