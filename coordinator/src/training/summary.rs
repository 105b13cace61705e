//! What a training run prints: the iteration line, the summary and, after
//! training on the embedded dataset, a few recommendations.

use std::io::Write;

use als_core::model::Model;
use als_core::train::{Learner, TestMetrics, TrainConfig};

use super::{TrainJob, TrainOutcome};

/// Users whose recommendations are printed after training on the embedded dataset.
const DEMO_USERS: usize = 3;
/// Recommendations printed per demo user.
const DEMO_TOP_N: usize = 5;

/// The test metric shown on the progress bar: RMSE (explicit) or NDCG@K (implicit).
pub fn headline_metric(m: &TestMetrics) -> Option<(String, f64)> {
    if let Some(r) = m.rmse {
        return Some(("rmse".into(), r));
    }
    m.ranking.as_ref().map(|r| (format!("ndcg@{}", r.k), r.ndcg))
}

/// The test metrics of one evaluation as `name=value` pairs (for logs and the summary).
pub fn metrics_line(m: &TestMetrics) -> String {
    let mut parts = Vec::new();
    if let (Some(rmse), Some(mae)) = (m.rmse, m.mae) {
        parts.push(format!("rmse={rmse:.4} mae={mae:.4}"));
    }
    if let (Some(rmse), Some(mae)) = (m.rmse_raw, m.mae_raw) {
        parts.push(format!("rmse_raw={rmse:.4} mae_raw={mae:.4}"));
    }
    if let Some(r) = &m.ranking {
        parts.push(format!(
            "precision@{k}={:.4} recall@{k}={:.4} map@{k}={:.4} ndcg@{k}={:.4} ndcg@{w}={:.4} (users={})",
            r.precision,
            r.recall,
            r.map,
            r.ndcg,
            r.ndcg_wide,
            r.n_eval_users,
            k = r.k,
            w = als_core::metrics::WIDE_NDCG_K
        ));
    }
    parts.join(" ")
}

pub(crate) fn print_summary(out: &mut dyn Write, o: &TrainOutcome, cfg: &TrainConfig, job: &TrainJob) -> std::io::Result<()> {
    let d = &o.data;
    let spi = crate::report::seconds_per_iteration(&o.result.reports).unwrap_or(0.0);
    let (steps, step) = match cfg.learner {
        Learner::Sgd { .. } => ("SGD epochs", "epoch"),
        Learner::Gibbs { .. } => ("Gibbs iterations", "iteration"),
        Learner::Als => ("iterations", "iteration"),
    };
    writeln!(
        out,
        "trained {} {} model: {} factors, {} {steps}, {:.3} s/{step} ({})",
        if cfg.is_implicit() { "an implicit" } else { "an explicit" },
        if cfg.is_implicit() { "feedback" } else { "rating" },
        cfg.factors,
        o.result.reports.len(),
        spi,
        o.executor
    )?;
    write!(
        out,
        "data: {} training ratings, {} users, {} items, {} test ratings ({} cold-start dropped)",
        d.n_train, d.n_users, d.n_items, d.n_test, d.test_dropped_cold
    )?;
    match (d.held_out_users, d.n_fold_in) {
        (Some(users), Some(rows)) => writeln!(out, "; {users} users held out, folded in from {rows} ratings")?,
        _ => writeln!(out)?,
    }
    let line = metrics_line(&o.result.final_metrics);
    if line.is_empty() {
        writeln!(out, "test: no test set")?;
    } else {
        writeln!(out, "test: {line}")?;
    }
    if let Some(dir) = job.output.as_ref().map(|o| &o.dir) {
        let on = &o.metrics["model_trained_on"];
        match on["ratings"].as_str() {
            Some("all") => writeln!(
                out,
                "model saved to {} (trained on all {} ratings of the input)",
                dir.display(),
                on["n_ratings"]
            )?,
            _ => writeln!(
                out,
                "model saved to {} (trained on the {} training ratings)",
                dir.display(),
                on["n_ratings"]
            )?,
        }
    }
    if let Some(p) = &job.metrics_json {
        writeln!(out, "metrics written to {}", p.display())?;
    }
    Ok(())
}

/// The top recommendations of the first users (shown after training on the embedded dataset).
pub(crate) fn print_demo(out: &mut dyn Write, model: &Model) -> std::io::Result<()> {
    writeln!(out, "top-{DEMO_TOP_N} recommendations (items the user rated are excluded):")?;
    for u in 0..model.n_users().min(DEMO_USERS) {
        let recs = model.recommend(u, DEMO_TOP_N, false, None);
        let items: Vec<String> = recs
            .iter()
            .map(|s| format!("{} ({:.3})", model.item_ids()[s.index as usize], s.score))
            .collect();
        writeln!(out, "  user {}: {}", model.user_ids()[u], items.join(", "))?;
    }
    Ok(())
}
