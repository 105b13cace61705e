//! `coordinator tune`: k-fold cross-validation over a grid of λ, factors
//! (and α for implicit feedback).
//!
//! The grid always holds the train command's default setting (appended
//! where the axes miss it), so the table says what tuning won over it.
//!
//! The ratings are read once; fold f is the test set of the seeded k-fold
//! split (`--split kfold`), so every rating is tested exactly once; with
//! `--folds-of users` fold f holds whole users out (as `--split users`), so
//! every user is held out exactly once. Each
//! (setting, fold) trains through [`Trainer`], the path of the train
//! command, and is scored on its fold: RMSE for explicit ratings, NDCG@K for
//! implicit feedback. Folds are the outer loop so one fold's data is in
//! memory at a time.

mod args;
mod axis;
mod grid;
mod output;

pub use args::{FoldsOf, TuneArgs};
pub use grid::{best, expand, with_default, Metric, SettingScores};
pub use output::{print_table, to_json, TuneReport};

use std::io::Write;
use std::time::Instant;

use als_core::data::split::{split_rows, split_users, UserHoldout};
use als_core::data::{load_ratings, Dataset, RawRatings, SplitSpec};
use als_core::train::{Layouts, TestMetrics, TrainConfig, TrainData, TrainError};
use anyhow::{bail, Context};

use crate::cluster::executor::FinalRows;
use crate::progress;
use crate::report::write_json_atomic;
use crate::training::{self, check_out_dir, ExecutorChoice, Trainer, WhoReads};

/// `(train rows, test rows)` of fold `fold`: the k-fold split of `--split kfold`.
pub fn fold_rows(raw: &RawRatings, folds: usize, fold: usize, seed: u64) -> anyhow::Result<(Vec<usize>, Vec<usize>)> {
    Ok(split_rows(raw, &SplitSpec::KFold { folds, fold, seed })?)
}

/// The rows of the users `train --split users --test-ratio F` would keep for
/// training (same seed): tuning by users never sees the test users.
fn without_test_users(raw: RawRatings, args: &TuneArgs) -> anyhow::Result<RawRatings> {
    if args.test_ratio == 0.0 {
        return Ok(raw);
    }
    let which = UserHoldout::Ratio {
        frac: args.test_ratio,
        seed: args.seed.split_seed,
    };
    let kept = split_users(&raw, which)?.train;
    tracing::info!(ratings = kept.len(), of = raw.len(), "test users left out of tuning (--test-ratio)");
    Ok(raw.rows(&kept))
}

/// The dataset of fold `fold`: a fold of the ratings, or of the users held out whole.
fn fold_dataset(raw: &RawRatings, args: &TuneArgs, fold: usize) -> anyhow::Result<Dataset> {
    let (folds, seed) = (args.folds, args.seed.split_seed);
    Ok(match args.folds_of {
        FoldsOf::Ratings => {
            let (train, test) = fold_rows(raw, folds, fold, seed)?;
            Dataset::build((raw, &train), Some((raw, &test)), args.duplicate_policy())?
        }
        FoldsOf::Users => {
            let split = split_users(raw, UserHoldout::Folds { folds, fold, seed })?;
            Dataset::build_user_split(raw, &split, args.duplicate_policy())?
        }
    })
}

/// `--patience`: the best score so far and whether the run was stopped.
struct EarlyStop {
    patience: usize,
    higher_is_better: bool,
    /// The best finite score and its iteration.
    best: Option<(f64, usize)>,
    since_best: usize,
    stopped: bool,
}

impl EarlyStop {
    fn new(patience: usize, higher_is_better: bool) -> Self {
        EarlyStop {
            patience,
            higher_is_better,
            best: None,
            since_best: 0,
            stopped: false,
        }
    }

    /// One iteration's score; an error stops the run (the trainer's way to end early).
    fn observe(&mut self, iteration: usize, value: f64) -> Result<(), TrainError> {
        let better = value.is_finite()
            && self
                .best
                .is_none_or(|(b, _)| if self.higher_is_better { value > b } else { value < b });
        if better {
            self.best = Some((value, iteration));
            self.since_best = 0;
        } else {
            self.since_best += 1;
        }
        if self.since_best >= self.patience {
            self.stopped = true;
            return Err(TrainError::Stopped(format!(
                "early stop: no better score in {} iterations",
                self.patience
            )));
        }
        Ok(())
    }
}

/// The compared metric of a run's final test metrics (NaN when missing).
fn score(m: &TestMetrics, implicit: bool) -> f64 {
    if implicit {
        m.ranking.as_ref().map_or(f64::NAN, |r| r.ndcg)
    } else {
        m.rmse.unwrap_or(f64::NAN)
    }
}

fn metric_of(cfg: &TrainConfig) -> Metric {
    if cfg.is_implicit() {
        Metric {
            name: format!("ndcg@{}", cfg.ranking_k),
            higher_is_better: true,
        }
    } else {
        Metric {
            name: "rmse".into(),
            higher_is_better: false,
        }
    }
}

/// Run the cross-validation, print the table to `out`, write `--out-json`.
pub fn run(args: &TuneArgs, out: &mut dyn Write) -> anyhow::Result<TuneReport> {
    let t0 = Instant::now();
    let (settings, default) = with_default(expand(&args.axes()), args.default_point());
    // Refuse any bad setting before loading or training.
    let configs = settings.iter().map(|&s| args.train_config(s)).collect::<anyhow::Result<Vec<_>>>()?;
    let load = args.load_options()?;
    let choice = args.executor(&configs[0])?;
    let token = args.cluster.token()?;
    let tls = args.cluster.tls()?;
    let metric = metric_of(&configs[0]);
    if let Some(dir) = &args.out {
        check_out_dir(dir, args.overwrite)?;
    }
    if args.cluster.who_reads() == WhoReads::Workers && matches!(choice, ExecutorChoice::InProcess) {
        // Found out now, not at the final fit after the whole search.
        bail!("--input-on-workers needs workers (--workers or --local): the final fit's workers read --data");
    }

    let raw = load_ratings(&args.data, &load).map_err(anyhow::Error::new)?;
    let data = args.data.display().to_string();
    let raw = match args.folds_of {
        FoldsOf::Users => without_test_users(raw, args).with_context(|| format!("cannot split {data}"))?,
        FoldsOf::Ratings => raw,
    };
    tracing::info!(data = %data, ratings = raw.len(), folds = args.folds, settings = settings.len(), executor = %choice.label(), "tuning");
    let mut scores: Vec<SettingScores> = settings
        .iter()
        .map(|&setting| SettingScores {
            setting,
            per_fold: Vec::new(),
            seconds: Vec::new(),
            best_iterations: Vec::new(),
        })
        .collect();
    let bar = progress::bar(
        (settings.len() * args.folds) as u64,
        args.progress.quiet,
        "{spinner} tuning [{elapsed_precise}] [{bar:30}] {pos}/{len} {msg}",
    );
    // One set of workers for every run.
    let trainer = Trainer::open(&choice, token.as_deref(), tls, args.cluster.worker_timeout())?;
    let outcome = (|| -> anyhow::Result<()> {
        for fold in 0..args.folds {
            let ds = fold_dataset(&raw, args, fold).with_context(|| format!("cannot index fold {fold} of {data}"))?;
            for (s, cfg) in scores.iter_mut().zip(&configs) {
                let layouts = Layouts::for_dataset(&ds, cfg.blocks);
                let started = Instant::now();
                let mut watch = args.patience.map(|p| EarlyStop::new(p, metric.higher_is_better));
                let result = trainer.train(
                    &TrainData::held(&ds, &layouts.users),
                    None,
                    cfg,
                    &layouts,
                    None,
                    // Only the metrics are read: the factors stay on the workers.
                    FinalRows::NotRead,
                    &mut |r, _| match &mut watch {
                        Some(w) => w.observe(r.iteration, score(&r.test, cfg.is_implicit())),
                        None => Ok(()),
                    },
                );
                let seconds = started.elapsed().as_secs_f64();
                // An error the watch raised is its stop; any other is the run's failure.
                let result = match result {
                    Err(e) if !watch.as_ref().is_some_and(|w| w.stopped) => {
                        return Err(e.context(format!("fold {fold}, lambda {}, factors {}", s.setting.lambda, s.setting.factors)));
                    }
                    r => r.ok(),
                };
                let value = match (watch, result) {
                    // Stopped or run to the end, the best iteration counts.
                    (Some(w), _) => {
                        let (value, iteration) = w.best.unwrap_or((f64::NAN, cfg.iterations));
                        s.best_iterations.push(iteration);
                        value
                    }
                    (None, result) => result.map_or(f64::NAN, |r| score(&r.final_metrics, cfg.is_implicit())),
                };
                tracing::info!(fold, setting = ?s.setting, metric = %metric.name, value, seconds = format_args!("{seconds:.3}"), "fold done");
                s.per_fold.push(value);
                s.seconds.push(seconds);
                bar.set_message(format!("fold {}/{}", fold + 1, args.folds));
                bar.inc(1);
            }
        }
        Ok(())
    })();
    progress::finish(&bar);
    trainer.shutdown(outcome)?;

    let best = best(&scores, &metric);
    let report = TuneReport {
        data,
        n_ratings: raw.len(),
        folds: args.folds,
        folds_of: args.folds_of,
        split_seed: args.seed.split_seed,
        metric,
        scores,
        best,
        default,
        config: serde_json::to_value(&configs[0]).unwrap_or(serde_json::Value::Null),
        executor: choice.label(),
        seconds: t0.elapsed().as_secs_f64(),
    };
    print_table(out, &report).context("cannot write the table")?;
    if let Some(path) = &args.out_json {
        write_json_atomic(path, &to_json(&report))?;
        writeln!(out, "results written to {}", path.display()).context("cannot write the table")?;
    }
    if let (Some(dir), Some(b)) = (&args.out, report.best) {
        // The chosen setting, refit on every rating: the model to deploy.
        let s = report.scores[b].setting;
        tracing::info!(setting = ?s, dir = %dir.display(), "training the best setting on every rating");
        let iterations = report.scores[b].mean_best_iteration();
        training::run(args.final_fit_job(s, iterations, dir.clone())?, out).context("training the best setting on every rating")?;
    } else if args.out.is_some() {
        anyhow::bail!("no setting gave a finite score, so no model was saved");
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
