//! The tuning table (stdout) and its JSON document (`--out-json`).

use std::io::Write;

use serde_json::{json, Value};

use super::args::FoldsOf;
use super::grid::{Metric, Setting, SettingScores};

impl FoldsOf {
    fn name(self) -> &'static str {
        match self {
            FoldsOf::Ratings => "ratings",
            FoldsOf::Users => "users",
        }
    }
}

/// What a tuning run found.
#[derive(Debug, Clone)]
pub struct TuneReport {
    pub data: String,
    pub n_ratings: usize,
    pub folds: usize,
    /// Whether the folds hold out ratings or whole users (`--folds-of`).
    pub folds_of: FoldsOf,
    pub split_seed: u64,
    pub metric: Metric,
    /// In grid order.
    pub scores: Vec<SettingScores>,
    pub best: Option<usize>,
    /// The train command's default setting (always in the grid).
    pub default: usize,
    /// The training settings common to every run (λ, factors and α vary).
    pub config: Value,
    pub executor: String,
    pub seconds: f64,
}

fn entry(s: &SettingScores) -> Value {
    json!({
        "lambda": s.setting.lambda,
        "factors": s.setting.factors,
        "alpha": s.setting.alpha,
        "unobserved_weight": s.setting.unobserved_weight,
        "reg_exponent": s.setting.reg_exponent,
        "init_std": s.setting.init_std,
        "block_size": s.setting.block_size,
        "solver": s.setting.solver,
        "mean": s.mean(),
        "std": s.std(),
        "per_fold": s.per_fold,
        "seconds": s.seconds,
        "best_iterations": s.best_iterations,
    })
}

/// The JSON document:
///
/// ```text
/// { "metric": "rmse" | "ndcg@K", "higher_is_better": bool, "folds": N,
///   "folds_of": "ratings" | "users", "split_seed": u64,
///   "data": str, "n_ratings": u64,
///   "settings": [ { "lambda", "factors", "alpha" (null for explicit),
///                   "unobserved_weight" (null unless --loss ials), "reg_exponent",
///                   "init_std", "solver", "block_size" (null where not a grid axis), "mean", "std",
///                   "per_fold": [f64; folds], "seconds": [f64; folds],
///                   "best_iterations": [u64; folds] (--patience; else []) }, ... ]   // grid order
///   "best": { "index": u64, ...the settings entry... } | null,
///   "default": { "index": u64, ...the entry of train's default setting... },
///   "best_over_default": best mean − default mean | null,
///   "config": TrainConfig of the first setting, "executor": str, "seconds": f64 }
/// ```
///
/// A non-finite metric (a fold without test rows) is written as null.
pub fn to_json(r: &TuneReport) -> Value {
    let indexed = |i: usize| {
        let mut e = entry(&r.scores[i]);
        e["index"] = json!(i);
        e
    };
    let best = r.best.map(indexed);
    json!({
        "metric": r.metric.name,
        "higher_is_better": r.metric.higher_is_better,
        "folds": r.folds,
        "folds_of": r.folds_of.name(),
        "split_seed": r.split_seed,
        "data": r.data,
        "n_ratings": r.n_ratings,
        "settings": r.scores.iter().map(entry).collect::<Vec<_>>(),
        "best": best,
        "default": indexed(r.default),
        "best_over_default": r.best.map(|b| r.scores[b].mean() - r.scores[r.default].mean()),
        "config": r.config,
        "executor": r.executor,
        "seconds": r.seconds,
    })
}

/// A grid value in at most 4 significant digits, so log-spaced points fit
/// their column (the best line and the JSON keep every digit).
fn short(v: f32) -> String {
    if v == 0.0 || !v.is_finite() {
        return v.to_string();
    }
    let digits = (3 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A grid axis that only some runs have: its column head and its value.
type OptionalAxis = (&'static str, fn(&Setting) -> Option<String>);

/// The table: one line per setting, mean ± std of the metric, the best marked.
pub fn print_table(out: &mut dyn Write, r: &TuneReport) -> std::io::Result<()> {
    let direction = if r.metric.higher_is_better { "higher" } else { "lower" };
    writeln!(
        out,
        "{}-fold cross-validation over the {} of {} ({} ratings): {} ({} is better), mean ± std over the folds",
        r.folds,
        r.folds_of.name(),
        r.data,
        r.n_ratings,
        r.metric.name,
        direction
    )?;
    // Optional axes get a column only where some setting has them.
    let optional: [OptionalAxis; 6] = [
        ("alpha", |s| s.alpha.map(short)),
        ("alpha0", |s| s.unobserved_weight.map(short)),
        ("nu", |s| s.reg_exponent.map(short)),
        ("init_std", |s| s.init_std.map(short)),
        ("solver", |s| {
            s.solver
                .and_then(|v| clap::ValueEnum::to_possible_value(&v))
                .map(|v| v.get_name().to_string())
        }),
        ("block", |s| s.block_size.map(|b| b.to_string())),
    ];
    let shown: Vec<_> = optional
        .iter()
        .filter(|(_, get)| r.scores.iter().any(|s| get(&s.setting).is_some()))
        .collect();
    let heads: String = shown.iter().map(|(name, _)| format!(" {name:>9}")).collect();
    let early = r.scores.iter().any(|s| !s.best_iterations.is_empty());
    let iters_head = if early { format!(" {:>6}", "iters") } else { String::new() };
    writeln!(
        out,
        "{:>9} {:>8}{heads} {:>20}{iters_head} {:>9}",
        "lambda", "factors", r.metric.name, "s/run"
    )?;
    let cells = |s: &Setting| -> String {
        shown
            .iter()
            .map(|(_, get)| format!(" {:>9}", get(s).unwrap_or_else(|| "-".into())))
            .collect()
    };
    for (i, s) in r.scores.iter().enumerate() {
        let secs = s.seconds.iter().sum::<f64>() / s.seconds.len().max(1) as f64;
        let mark = match (r.best == Some(i), r.default == i) {
            (true, true) => "  <- best (the default)",
            (true, false) => "  <- best",
            (false, true) => "  (the default)",
            (false, false) => "",
        };
        let score = format!("{:.4} ± {:.4}", s.mean(), s.std());
        // The mean iteration the folds scored at (--patience).
        let iters = match (early, s.mean_iteration()) {
            (false, _) => String::new(),
            (true, None) => format!(" {:>6}", "-"),
            (true, Some(mean)) => format!(" {mean:>6.1}"),
        };
        writeln!(
            out,
            "{:>9} {:>8}{} {score:>20}{iters} {secs:>9.3}{mark}",
            short(s.setting.lambda),
            s.setting.factors,
            cells(&s.setting)
        )?;
    }
    match r.best {
        Some(i) => {
            let s = &r.scores[i];
            let extra: String = shown
                .iter()
                .filter_map(|(name, get)| get(&s.setting).map(|v| format!(", {name} {v}")))
                .collect();
            writeln!(
                out,
                "best: lambda {}, factors {}{extra}: {} {:.4} ± {:.4}",
                s.setting.lambda,
                s.setting.factors,
                r.metric.name,
                s.mean(),
                s.std()
            )?;
        }
        None => writeln!(out, "best: none (no setting has a finite {})", r.metric.name)?,
    }
    if let Some(b) = r.best.filter(|&b| b != r.default) {
        let (won, base) = (r.scores[b].mean(), r.scores[r.default].mean());
        let gain = if r.metric.higher_is_better { won - base } else { base - won };
        let relative = if base != 0.0 && base.is_finite() {
            format!(" ({:+.1}%)", 100.0 * gain / base.abs())
        } else {
            String::new()
        };
        writeln!(
            out,
            "won by {gain:.4}{relative} over the default (lambda {}, factors {}): {} {won:.4} against {base:.4}",
            r.scores[r.default].setting.lambda, r.scores[r.default].setting.factors, r.metric.name
        )?;
    }
    writeln!(out, "{:.1} s in all ({})", r.seconds, r.executor)
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn grid_values_are_shown_in_four_significant_digits() {
        for (v, want) in [
            (0.0031622776f32, "0.003162"),
            (0.23403473, "0.234"),
            (1.2818611, "1.282"),
            (0.1, "0.1"),
            (3.0, "3"),
            (1234.6, "1235"),
            (0.0, "0"),
        ] {
            assert_eq!(short(v), want);
        }
    }
}
