//! `coordinator [train flags]`: load, train, evaluate, save, report.

use std::io::Write;
use std::path::Path;

use als_core::checkpoint::{latest_checkpoint, write_checkpoint, RunSignature};
use als_core::data::synth::SynthSpec;
use als_core::data::Dataset;
use als_core::model::{save_model, Model};
use als_core::train::{
    train, train_sgd, IterationReport, Layouts, Learner, LocalExecutor, TestMetrics, TrainConfig, TrainError, TrainResult, TrainState,
};
use anyhow::{bail, Context};
use serde_json::Value;

use crate::cli::{ExecutorChoice, TestSource, TrainArgs};
use crate::cluster::{ClientOptions, ClusterSession};
use crate::input::{load_input, log_summary, DataSource, Input, InputSpec};
use crate::model_build::build_model;
use crate::progress;
use crate::report::{metrics_json, write_json_atomic, DataSummary};

/// Users whose recommendations are printed after training on the embedded dataset.
const DEMO_USERS: usize = 3;
/// Recommendations printed per demo user.
const DEMO_TOP_N: usize = 5;

/// What a training run produced.
pub struct TrainOutcome {
    pub result: TrainResult,
    pub model: Model,
    /// The metrics document (also written to --metrics-json when given).
    pub metrics: Value,
    pub data: DataSummary,
    /// The executor that actually ran (`in-process`, `local:N`, `workers:...`).
    pub executor: String,
}

/// Refuse an existing `--out` before any work, so a long run is not lost at
/// the end (the same rules as the core's `save_model`).
pub fn check_out_dir(out: &Path, overwrite: bool) -> anyhow::Result<()> {
    if out.file_name().is_none() {
        bail!("--out {}: give a directory name (not '.', '..' or a root)", out.display());
    }
    let meta = match std::fs::symlink_metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect --out {}", out.display())),
    };
    if !overwrite {
        bail!("model directory {} already exists; pass --overwrite to replace it", out.display());
    }
    if !meta.is_dir() {
        bail!("--out {} exists and is not a directory", out.display());
    }
    let is_model = out.join(als_core::model::store::MODEL_JSON).is_file();
    let is_empty = std::fs::read_dir(out)
        .with_context(|| format!("cannot read --out {}", out.display()))?
        .next()
        .is_none();
    if !is_model && !is_empty {
        bail!("refusing to replace {}: it is not a model directory (no model.json)", out.display());
    }
    Ok(())
}

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
            "precision@{k}={:.4} recall@{k}={:.4} map@{k}={:.4} ndcg@{k}={:.4} (users={})",
            r.precision,
            r.recall,
            r.map,
            r.ndcg,
            r.n_eval_users,
            k = r.k
        ));
    }
    parts.join(" ")
}

/// Where a command's training runs, opened once: every run of the command
/// (the evaluated run and the final fit, or tune's folds) uses the same
/// workers, so a worker lost in one run is not needed to start the next.
///
/// This is the one place that picks the executor.
pub enum Trainer {
    InProcess,
    Cluster(Box<ClusterSession>),
}

impl Trainer {
    /// Start the local workers or connect to the remote ones.
    pub fn open(
        choice: &ExecutorChoice,
        token: Option<&str>,
        tls: Option<tonic::transport::ClientTlsConfig>,
        worker_timeout: std::time::Duration,
    ) -> anyhow::Result<Trainer> {
        tracing::debug!(executor = %choice.label(), "executor requested");
        let mut session = match choice {
            ExecutorChoice::InProcess => return Ok(Trainer::InProcess),
            ExecutorChoice::Workers(addrs) => {
                let opts = ClientOptions {
                    token: token.map(str::to_owned),
                    tls,
                    ..Default::default()
                };
                ClusterSession::connect(addrs, &opts)?
            }
            ExecutorChoice::Local(n) => ClusterSession::local(*n, &ClientOptions::default())?,
        };
        tracing::debug!(workers = ?session.addrs(), "training on the cluster");
        session.faults.worker_timeout = worker_timeout;
        Ok(Trainer::Cluster(Box::new(session)))
    }

    /// Train `cfg` on `ds` from `start` (or a fresh start).
    pub fn train(
        &self,
        ds: &Dataset,
        cfg: &TrainConfig,
        layouts: &Layouts,
        start: Option<TrainState>,
        on_iteration: &mut dyn FnMut(&IterationReport, &TrainState) -> Result<(), TrainError>,
    ) -> anyhow::Result<TrainResult> {
        match (self, cfg.learner) {
            (Trainer::InProcess, Learner::Sgd { .. }) => Ok(train_sgd(ds, cfg, layouts, start, on_iteration).context("training failed")?),
            (Trainer::Cluster(_), Learner::Sgd { .. }) => bail!("--solver sgd trains in this process; it cannot run on workers"),
            (Trainer::InProcess, Learner::Als) => {
                let mut exec = LocalExecutor::new(ds, layouts.clone());
                Ok(train(ds, cfg, &mut exec, layouts, start, on_iteration).context("training failed")?)
            }
            (Trainer::Cluster(session), Learner::Als) => session.train(ds, cfg, layouts, start, on_iteration).context("training failed"),
        }
    }

    /// Stop in-process workers. After a failed run, a failure to stop is
    /// logged and the run's own error is the one returned.
    pub fn shutdown<T>(self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        let stopped = match self {
            Trainer::InProcess => Ok(()),
            Trainer::Cluster(session) => (*session).shutdown(),
        };
        match (result, stopped) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(_), Err(e)) => Err(e.context("stopping the local workers failed")),
            (Err(e), Ok(())) => Err(e),
            (Err(e), Err(stop)) => {
                tracing::warn!("stopping the local workers failed too: {stop:#}");
                Err(e)
            }
        }
    }
}

/// The executor of a learner: SGD runs in this process, because a DSGD
/// sub-epoch is milliseconds of work per cell, less than shipping its factor
/// blocks to a worker and back, and workers solve ALS rows only. An explicit
/// `--workers`/`--local` (`cluster_given`) is refused; the default (local
/// workers) becomes in-process.
pub fn executor_for_learner(cfg: &TrainConfig, cluster_given: bool, choice: ExecutorChoice) -> anyhow::Result<ExecutorChoice> {
    if !matches!(cfg.learner, Learner::Sgd { .. }) {
        return Ok(choice);
    }
    if cluster_given {
        bail!("--solver sgd trains in this process: drop --workers/--local");
    }
    if choice != ExecutorChoice::InProcess {
        tracing::info!("--solver sgd trains in this process: no workers are started");
    }
    Ok(ExecutorChoice::InProcess)
}

/// The input spec of the flags.
pub fn input_spec(args: &TrainArgs) -> anyhow::Result<InputSpec> {
    let test = args.test_source()?;
    let source = match &args.data {
        Some(p) => DataSource::File(p.clone()),
        None => {
            if matches!(test, TestSource::File(_)) {
                bail!("--test needs --data (the embedded dataset is split with --test-ratio)");
            }
            DataSource::Synthetic(SynthSpec::small_default())
        }
    };
    Ok(InputSpec {
        source,
        load: args.load_options(),
        test,
        duplicates: args.duplicate_policy(),
        seed: args.split_seed,
    })
}

/// Run a whole training command; the summary goes to `out` (stdout in the binary).
pub fn run(args: &TrainArgs, out: &mut dyn Write) -> anyhow::Result<TrainOutcome> {
    // Everything that can be refused is refused before loading and training.
    args.validate_columns()?;
    let cfg = args.train_config()?;
    let spec = input_spec(args)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let choice = executor_for_learner(&cfg, args.workers.is_some() || args.local.is_some(), args.executor_choice(cores)?)?;
    let token = args.token()?;
    let refit_on_all = args.refit_on_all()?;
    if let Some(dir) = &args.checkpoint_dir {
        // Found out now, not after the first iteration.
        als_core::checkpoint::check_checkpoint_dir(dir).context("--checkpoint-dir")?;
    }
    if let Some(dir) = &args.out {
        check_out_dir(dir, args.overwrite)?;
    }
    let embedded = matches!(spec.source, DataSource::Synthetic(_));
    if embedded {
        tracing::info!("no --data given: training on the embedded synthetic dataset");
    }

    let input: Input = load_input(&spec)?;
    log_summary(&input);
    let ds = &input.dataset;
    if spec.test != TestSource::None && ds.test.is_empty() {
        tracing::warn!("the test set is empty: no test metrics will be reported");
    }

    tracing::info!(
        factors = cfg.factors,
        iterations = cfg.iterations,
        lambda = cfg.lambda,
        implicit = cfg.is_implicit(),
        solver = ?cfg.solver,
        learner = ?cfg.learner,
        threads = rayon::current_num_threads(),
        blocks = cfg.blocks,
        "training"
    );
    let layouts = Layouts::for_dataset(ds, cfg.blocks);
    let signature = RunSignature::new(&ds.fingerprint, &cfg);
    let start = match (&args.checkpoint_dir, args.resume) {
        (Some(dir), true) => {
            let (path, state) = latest_checkpoint(dir, &signature)?;
            if state.iterations_done > cfg.iterations {
                bail!(
                    "--resume: checkpoint {} has {} iterations done, more than --iterations {}; \
                     pass --iterations {} or more, or a --checkpoint-dir without it",
                    path.display(),
                    state.iterations_done,
                    cfg.iterations,
                    state.iterations_done
                );
            }
            tracing::info!(checkpoint = %path.display(), iterations_done = state.iterations_done, "resuming");
            Some(state)
        }
        _ => None,
    };
    let bar = progress::training_bar(cfg.iterations, args.quiet);
    let total = cfg.iterations;
    let mut on_iteration = |r: &IterationReport, state: &TrainState| -> Result<(), TrainError> {
        let obj = r.objective.map_or("-".to_string(), |o| format!("{o:.6e}"));
        let train_rmse = r.train_rmse.map_or("-".to_string(), |x| format!("{x:.4}"));
        let mut msg = format!("iteration {}/{} objective {obj}", r.iteration, total);
        if let Some((name, v)) = headline_metric(&r.test) {
            msg.push_str(&format!(" {name} {v:.4}"));
        }
        bar.set_message(msg);
        bar.inc(1);
        tracing::info!(
            target: "als_coordinator::iterations",
            iteration = r.iteration,
            seconds = format_args!("{:.3}", r.seconds),
            objective = %obj,
            train_rmse = %train_rmse,
            test = %metrics_line(&r.test),
            "iteration"
        );
        if let Some(dir) = &args.checkpoint_dir {
            if r.iteration.is_multiple_of(args.checkpoint_every) || r.iteration == total {
                let path = write_checkpoint(dir, &signature, state)?;
                tracing::info!(checkpoint = %path.display(), "checkpoint written");
            }
        }
        Ok(())
    };
    let timeout = std::time::Duration::from_secs_f64(args.worker_timeout.max(0.1));
    let tls = match &args.tls_ca {
        Some(ca) => {
            let identity = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
            Some(crate::cluster::client_tls(ca, identity, args.tls_domain.as_deref())?)
        }
        None => None,
    };
    let trainer = Trainer::open(&choice, token.as_deref(), tls, timeout)?;
    if let Trainer::Cluster(session) = &trainer {
        tracing::info!(workers = ?session.addrs(), "training on the cluster");
    }
    let trained = trainer.train(ds, &cfg, &layouts, start, &mut on_iteration);
    progress::finish(&bar);
    let result = match trained {
        Ok(r) => r,
        Err(e) => return trainer.shutdown(Err(e)),
    };
    let (model, trained_on) = if refit_on_all {
        // Only the full data set is needed from here on.
        drop(input.dataset);
        match final_fit(&trainer, &spec, &cfg, args.quiet, &input.summary.source, &result.final_metrics) {
            Ok(m) => m,
            Err(e) => return trainer.shutdown(Err(e)),
        }
    } else {
        let model = build_model(&result, ds, &cfg, &input.summary.source, &result.final_metrics);
        let on = if spec.test == TestSource::None {
            TrainedOn::All(ds.n_train())
        } else {
            TrainedOn::Train(ds.n_train())
        };
        (model, on)
    };
    trainer.shutdown(Ok(()))?;
    let executor = choice.label();
    let mut metrics = metrics_json(&result.reports, &result.final_metrics, &cfg, &input.summary, &executor);
    let mut model = model;
    trained_on.record(&mut model, &mut metrics);
    if let Some(dir) = &args.out {
        save_model(&model, dir, args.overwrite).with_context(|| format!("cannot save the model to {}", dir.display()))?;
        tracing::info!(dir = %dir.display(), trained_on = %trained_on.describe(), "model saved");
    }
    if let Some(path) = &args.metrics_json {
        write_json_atomic(path, &metrics)?;
        tracing::info!(file = %path.display(), "metrics written");
    }

    let outcome = TrainOutcome {
        result,
        model,
        metrics,
        data: input.summary.clone(),
        executor,
    };
    print_summary(out, &outcome, &cfg, args).context("cannot write the summary")?;
    if embedded {
        print_demo(out, &outcome.model).context("cannot write the summary")?;
    }
    Ok(outcome)
}

/// Evaluation and deployment are two jobs: once the held-out run is
/// reported, the model users deploy is trained again, with the same
/// settings, on every rating of the input.
fn final_fit(
    trainer: &Trainer,
    spec: &InputSpec,
    cfg: &TrainConfig,
    quiet: bool,
    source: &str,
    held_out: &TestMetrics,
) -> anyhow::Result<(Model, TrainedOn)> {
    let full = load_input(&InputSpec {
        test: TestSource::None,
        ..spec.clone()
    })?;
    let ds = &full.dataset;
    tracing::info!(
        ratings = ds.n_train(),
        users = ds.n_users(),
        items = ds.n_items(),
        "refitting the saved model on every rating (--final-fit all); its metrics come from the held-out run"
    );
    let layouts = Layouts::for_dataset(ds, cfg.blocks);
    let bar = progress::training_bar(cfg.iterations, quiet);
    bar.set_message("final fit on every rating");
    let mut on_iteration = |r: &IterationReport, _: &TrainState| -> Result<(), TrainError> {
        bar.inc(1);
        tracing::debug!(iteration = r.iteration, seconds = r.seconds, "final fit");
        Ok(())
    };
    let trained = trainer.train(ds, cfg, &layouts, None, &mut on_iteration);
    progress::finish(&bar);
    let result = trained.context("the final fit on every rating failed")?;
    let model = build_model(&result, ds, cfg, source, held_out);
    Ok((model, TrainedOn::All(ds.n_train())))
}

/// Which ratings the saved model was trained on, as written to `model.json`
/// and the metrics JSON.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TrainedOn {
    /// Every rating of the input (refit, or no test set).
    All(usize),
    /// The training split (or --data with a separate --test file).
    Train(usize),
}

impl TrainedOn {
    fn describe(self) -> String {
        match self {
            TrainedOn::All(n) => format!("all {n} ratings of the input"),
            TrainedOn::Train(n) => format!("the {n} training ratings of the evaluated run"),
        }
    }

    fn record(self, model: &mut Model, metrics: &mut Value) {
        let (what, n) = match self {
            TrainedOn::All(n) => ("all", n),
            TrainedOn::Train(n) => ("train", n),
        };
        let fit = serde_json::json!({ "ratings": what, "n_ratings": n });
        if let Value::Object(h) = &mut model.hyperparameters {
            h.insert("trained_on".into(), fit.clone());
        }
        let from = Value::String("the held-out run (trained on the training split, scored on the test split)".into());
        if let Value::Object(m) = &mut model.metrics {
            if !m.is_empty() {
                m.insert("metrics_from".into(), from.clone());
            }
        }
        if let Value::Object(m) = metrics {
            m.insert("model_trained_on".into(), fit);
            m.insert("metrics_from".into(), from);
        }
    }
}

fn print_summary(out: &mut dyn Write, o: &TrainOutcome, cfg: &TrainConfig, args: &TrainArgs) -> std::io::Result<()> {
    let d = &o.data;
    let spi = crate::report::seconds_per_iteration(&o.result.reports).unwrap_or(0.0);
    let (steps, step) = match cfg.learner {
        Learner::Sgd { .. } => ("SGD epochs", "epoch"),
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
    writeln!(
        out,
        "data: {} training ratings, {} users, {} items, {} test ratings ({} cold-start dropped)",
        d.n_train, d.n_users, d.n_items, d.n_test, d.test_dropped_cold
    )?;
    let line = metrics_line(&o.result.final_metrics);
    if line.is_empty() {
        writeln!(out, "test: no test set")?;
    } else {
        writeln!(out, "test: {line}")?;
    }
    if let Some(dir) = &args.out {
        let on = &o.model.hyperparameters["trained_on"];
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
    if let Some(p) = &args.metrics_json {
        writeln!(out, "metrics written to {}", p.display())?;
    }
    Ok(())
}

/// The top recommendations of the first users (shown after training on the embedded dataset).
fn print_demo(out: &mut dyn Write, model: &Model) -> std::io::Result<()> {
    writeln!(out, "top-{DEMO_TOP_N} recommendations (items the user rated are excluded):")?;
    for u in 0..model.n_users().min(DEMO_USERS) {
        let recs = model.recommend(u, DEMO_TOP_N, false, None);
        let items: Vec<String> = recs
            .iter()
            .map(|s| format!("{} ({:.3})", model.item_ids[s.index as usize], s.score))
            .collect();
        writeln!(out, "  user {}: {}", model.user_ids[u], items.join(", "))?;
    }
    Ok(())
}
