//! The metrics JSON of a training run (`--metrics-json FILE`).
//!
//! The key layout is an interface (scripts and the benchmarks read it):
//!
//! ```text
//! {
//!   "final": {                       // TestMetrics::to_json_map of the last evaluation; each key present when it applies
//!     "rmse": f64, "mae": f64,       //   explicit: clipped to the training rating range (unless --no-clip)
//!     "rmse_raw": f64, "mae_raw": f64,   // explicit: raw predictions (the reference protocol)
//!     "precision@10": f64, "recall@10": f64, "map@10": f64, "ndcg@10": f64,
//!     "recall_capped@10": f64,       //   hits / min(K, |T_u|), Recall@K of Liang et al. and Rendle et al.
//!     "ndcg@100": f64,               //   NDCG at 100 from the same lists, whatever --k is
//!     "precision_pooled@10": f64, "n_eval_users": u64   // implicit (the number is --k)
//!   },
//!   "seconds_per_iteration": f64,    // mean wall seconds of one full iteration (both halves)
//!   "iterations": [                  // one object per iteration, in order
//!     { "iteration": 1,              // 1-based
//!       "seconds": f64,              // wall seconds of the iteration (both halves, without evaluation)
//!       "objective": f64,            // training objective after the iteration
//!       "train_rmse": f64,
//!       ...the "final" keys, when this iteration was evaluated (see --eval-every)...,
//!       "bytes_sent": u64,           // all bytes sent by the coordinator and workers (0 in-process)
//!       "bytes_min": u64,            // factor bytes the routing strictly needs (0 in-process)
//!       "bytes_min_peer": u64,       // the same with no hub: worker to worker, nothing gathered (docs/ARCHITECTURE.md)
//!       "bytes_peer": u64,           // of bytes_sent, solved rows sent worker to worker (peer exchange)
//!       "compute_seconds": f64,
//!       "transfer_seconds": f64 }
//!   ],
//!   "config": { ...TrainConfig as serde serializes it... },
//!   "data": { "source": str, "n_users": u64, "n_items": u64, "n_train": u64,
//!             "n_test": u64, "test_dropped_cold": u64, "skipped_lines": u64,
//!             "duplicates_merged": u64, "load_seconds": f64,
//!             "held_out_users": u64, "n_fold_in": u64 },   // --split users only: users held out whole, their fold-in rows
//!   "executor": "in-process" | "local:N" | "workers:HOST:PORT,...",
//!   "bytes_outside_halves": u64,     // bytes in no iteration's report: the test set's evaluations on the
//!                                    // workers and the model fetched after the last half (0 in-process)
//!   "peer_bytes_outside_halves": u64 // of those, the item rows workers sent each other for the evaluations
//! }
//! ```
//!
//! `objective` and `train_rmse` are `null` if the trainer did not compute
//! them; `seconds_per_iteration` is `null` when no iteration ran.

use std::io::Write;
use std::path::Path;

use als_core::train::{IterationReport, TestMetrics, TrainConfig};

use serde::Serialize;
use serde_json::{json, Map, Value};

/// What was loaded, for logs, the metrics JSON and the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DataSummary {
    /// The --data path, or a description of the embedded dataset.
    pub source: String,
    pub n_users: usize,
    pub n_items: usize,
    /// Training ratings after merging duplicates.
    pub n_train: usize,
    /// Test ratings after dropping cold-start rows (with --split users: the
    /// held-out users' ranked rows).
    pub n_test: usize,
    pub test_dropped_cold: usize,
    /// Users held out of training whole (--split users).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_out_users: Option<usize>,
    /// Their rows they are folded in from (--split users).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_fold_in: Option<usize>,
    /// Invalid lines skipped under --skip-invalid (data and test files).
    pub skipped_lines: u64,
    pub duplicates_merged: usize,
    pub load_seconds: f64,
}

/// One `iterations` entry.
pub fn iteration_json(r: &IterationReport) -> Value {
    let mut m = Map::new();
    m.insert("iteration".into(), json!(r.iteration));
    m.insert("seconds".into(), json!(r.seconds));
    m.insert("objective".into(), json!(r.objective));
    m.insert("train_rmse".into(), json!(r.train_rmse));
    for (k, v) in r.test.to_json_map() {
        m.insert(k, v);
    }
    m.insert("bytes_sent".into(), json!(r.bytes_sent()));
    m.insert("bytes_min".into(), json!(r.bytes_min()));
    m.insert("bytes_min_peer".into(), json!(r.bytes_min_peer()));
    m.insert("bytes_peer".into(), json!(r.bytes_peer()));
    m.insert("compute_seconds".into(), json!(r.compute_seconds()));
    m.insert("transfer_seconds".into(), json!(r.transfer_seconds()));
    Value::Object(m)
}

/// Mean wall seconds of one iteration (`None` without iterations).
pub fn seconds_per_iteration(reports: &[IterationReport]) -> Option<f64> {
    if reports.is_empty() {
        None
    } else {
        Some(reports.iter().map(|r| r.seconds).sum::<f64>() / reports.len() as f64)
    }
}

/// The whole metrics document (layout in the module docs).
pub fn metrics_json(
    reports: &[IterationReport],
    final_metrics: &TestMetrics,
    config: &TrainConfig,
    data: &DataSummary,
    executor: &str,
    bytes_outside_halves: u64,
    peer_bytes_outside_halves: u64,
) -> Value {
    json!({
        "final": Value::Object(final_metrics.to_json_map()),
        "seconds_per_iteration": seconds_per_iteration(reports),
        "iterations": reports.iter().map(iteration_json).collect::<Vec<_>>(),
        "config": serde_json::to_value(config).unwrap_or(Value::Null),
        "data": serde_json::to_value(data).unwrap_or(Value::Null),
        "executor": executor,
        "bytes_outside_halves": bytes_outside_halves,
        "peer_bytes_outside_halves": peer_bytes_outside_halves,
    })
}

/// Write `path` atomically (the core's one output mechanism, [`als_core::atomic`]),
/// replacing what is there; missing parent directories are created.
pub fn write_atomic(path: &Path, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> anyhow::Result<()> {
    als_core::atomic::write_file_atomic(path, als_core::atomic::OutputPolicy::REPLACE, fill)?;
    Ok(())
}

/// Write a JSON document (pretty, with a final newline) atomically.
pub fn write_json_atomic(path: &Path, value: &Value) -> anyhow::Result<()> {
    write_atomic(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value).map_err(std::io::Error::other)?;
        w.write_all(b"\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use als_core::metrics::RankingMetrics;
    use als_core::train::HalfStepReport;

    fn report(it: usize, evaluated: bool) -> IterationReport {
        IterationReport {
            iteration: it,
            seconds: it as f64,
            objective: Some(100.0 / it as f64),
            train_rmse: Some(0.5),
            test: if evaluated {
                TestMetrics {
                    rmse: Some(0.9),
                    mae: Some(0.7),
                    rmse_raw: Some(0.95),
                    mae_raw: Some(0.72),
                    ranking: None,
                }
            } else {
                TestMetrics::default()
            },
            halves: vec![
                HalfStepReport {
                    bytes_sent: 10,
                    bytes_min: 8,
                    bytes_min_peer: 3,
                    compute_seconds: 0.25,
                    transfer_seconds: 0.125,
                    ..Default::default()
                },
                HalfStepReport {
                    bytes_sent: 5,
                    bytes_min: 4,
                    bytes_min_peer: 2,
                    compute_seconds: 0.25,
                    transfer_seconds: 0.125,
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn layout_of_an_explicit_run() {
        let reports = vec![report(1, false), report(2, true)];
        let data = DataSummary {
            source: "r.csv".into(),
            n_users: 3,
            n_items: 4,
            n_train: 10,
            n_test: 2,
            ..Default::default()
        };
        let v = metrics_json(&reports, &reports[1].test, &TrainConfig::default(), &data, "local:2", 4096, 1024);
        assert_eq!(v["final"]["rmse"], json!(0.9));
        assert_eq!(v["final"]["mae"], json!(0.7));
        assert_eq!(v["final"]["rmse_raw"], json!(0.95));
        assert!(v["final"].get("ndcg@10").is_none());
        assert_eq!(v["seconds_per_iteration"], json!(1.5));
        let its = v["iterations"].as_array().unwrap();
        assert_eq!(its.len(), 2);
        assert_eq!(its[0]["iteration"], json!(1));
        assert_eq!(its[0]["seconds"], json!(1.0));
        assert_eq!(its[0]["objective"], json!(100.0));
        assert_eq!(its[0]["train_rmse"], json!(0.5));
        assert!(its[0].get("rmse").is_none(), "not evaluated");
        assert_eq!(its[1]["rmse"], json!(0.9));
        assert_eq!(its[1]["bytes_sent"], json!(15));
        assert_eq!(its[1]["bytes_min"], json!(12));
        assert_eq!(its[1]["bytes_min_peer"], json!(5));
        assert_eq!(its[1]["compute_seconds"], json!(0.5));
        assert_eq!(its[1]["transfer_seconds"], json!(0.25));
        assert_eq!(v["config"]["factors"], json!(64));
        assert_eq!(v["data"]["source"], json!("r.csv"));
        assert_eq!(v["data"]["n_users"], json!(3));
        assert_eq!(v["bytes_outside_halves"], json!(4096));
        assert_eq!(v["peer_bytes_outside_halves"], json!(1024));
        assert_eq!(v["data"]["test_dropped_cold"], json!(0));
        assert_eq!(v["executor"], json!("local:2"));
    }

    #[test]
    fn ranking_keys_use_k() {
        let m = TestMetrics {
            ranking: Some(RankingMetrics {
                k: 10,
                n_eval_users: 7,
                precision: 0.1,
                recall: 0.2,
                recall_capped: 0.25,
                map: 0.3,
                ndcg: 0.4,
                ndcg_wide: 0.45,
                precision_pooled: 0.15,
            }),
            ..Default::default()
        };
        let v = metrics_json(&[], &m, &TrainConfig::default(), &DataSummary::default(), "in-process", 0, 0);
        for (k, want) in [
            ("precision@10", 0.1),
            ("recall@10", 0.2),
            ("recall_capped@10", 0.25),
            ("map@10", 0.3),
            ("ndcg@10", 0.4),
            ("ndcg@100", 0.45),
        ] {
            assert_eq!(v["final"][k], json!(want), "{k}");
        }
        assert!(v["final"].get("rmse").is_none());
        assert!(v["seconds_per_iteration"].is_null());
        assert_eq!(v["iterations"], json!([]));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("m.json");
        write_json_atomic(&p, &json!({"a": 1})).unwrap();
        write_json_atomic(&p, &json!({"a": 2})).unwrap();
        let back: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(back, json!({"a": 2}));
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
