//! Test-set evaluation of the current factors.

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::metrics::{ranking_metrics, rating_metrics, RankingMetrics};
use crate::side::Factors;
use crate::solve::{Feedback, SolveParams};

use super::TrainConfig;

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
            put(format!("map@{}", r.k), Some(r.map));
            put(format!("ndcg@{}", r.k), Some(r.ndcg));
            put(format!("precision_pooled@{}", r.k), Some(r.precision_pooled));
            m.insert("n_eval_users".into(), serde_json::json!(r.n_eval_users));
        }
        m
    }
}

/// Explicit prediction μ + bᵤ + bᵢ + pᵤᵀqᵢ (biases only in biased models).
#[inline]
pub fn predict(p: &SolveParams, users: &Factors, items: &Factors, u: usize, i: usize) -> f32 {
    let dot = crate::linalg::vec::dot_f32_f64(users.row(u), items.row(i)) as f32;
    match p.feedback {
        Feedback::Explicit { biased: true, global_mean } => global_mean + users.bias_of(u) + items.bias_of(i) + dot,
        _ => dot,
    }
}

pub fn evaluate(ds: &Dataset, cfg: &TrainConfig, p: &SolveParams, users: &Factors, items: &Factors) -> TestMetrics {
    if ds.test.is_empty() {
        return TestMetrics::default();
    }
    if cfg.is_implicit() {
        let r = ranking_metrics(
            users.matrix.view(),
            items.matrix.view(),
            &ds.by_user,
            &ds.test,
            cfg.ranking_k,
            cfg.min_pos,
        );
        return TestMetrics {
            ranking: Some(r),
            ..Default::default()
        };
    }
    let pred: Vec<f32> = ds
        .test
        .users
        .iter()
        .zip(&ds.test.items)
        .map(|(&u, &i)| predict(p, users, items, u as usize, i as usize))
        .collect();
    let raw = rating_metrics(&ds.test.ratings, &pred, None);
    let clipped = if cfg.clip_predictions {
        rating_metrics(&ds.test.ratings, &pred, Some((ds.rating_min, ds.rating_max)))
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
