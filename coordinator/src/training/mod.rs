//! A training run: load, train, evaluate, refit, save, report. The train
//! command runs one [`TrainJob`]; `tune` runs its final fit through it.

mod summary;
mod trainer;
mod workers_read;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use als_core::checkpoint::{latest_checkpoint, RunSignature};
use als_core::data::Dataset;
use als_core::model::{save_model, Model, ModelParts, PendingModel};
use als_core::train::{IterationReport, Layouts, StateView, TestMetrics, TrainConfig, TrainData, TrainError, TrainResult};
use anyhow::{bail, Context};
use serde_json::Value;

use crate::input::{load_input, log_summary, DataSource, Input, InputSpec, TestSource};
use crate::model_build::model_parts;
use crate::progress;
use crate::report::{metrics_json, write_json_atomic, DataSummary};

pub use summary::{headline_metric, metrics_line};
pub use trainer::{check_out_dir, executor_for_learner, ExecutorChoice, Trainer};

/// Checkpoints of a run (`--checkpoint-dir`, `--checkpoint-every`, `--resume`).
#[derive(Debug, Clone)]
pub struct CheckpointPlan {
    pub dir: PathBuf,
    pub every: usize,
    pub resume: bool,
}

/// Where the model is saved (`--out`, `--overwrite`).
#[derive(Debug, Clone)]
pub struct ModelOutput {
    pub dir: PathBuf,
    pub overwrite: bool,
}

/// Everything a training run needs, resolved and checked from the flags.
pub struct TrainJob {
    pub cfg: TrainConfig,
    pub input: InputSpec,
    pub executor: ExecutorChoice,
    pub token: Option<String>,
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    pub worker_timeout: Duration,
    /// Refit the saved model on every rating after the evaluated run.
    pub refit_on_all: bool,
    pub checkpoint: Option<CheckpointPlan>,
    pub output: Option<ModelOutput>,
    pub metrics_json: Option<PathBuf>,
    pub quiet: bool,
    /// The workers build their blocks from the input (`--input-on-workers`).
    pub input_on_workers: bool,
}

/// What a training run produced.
pub struct TrainOutcome {
    pub result: TrainResult,
    pub model: Model,
    /// The metrics document (also written to --metrics-json when given;
    /// read by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub metrics: Value,
    pub data: DataSummary,
    /// The executor that actually ran (`in-process`, `local:N`, `workers:...`).
    pub executor: String,
    /// The saved model's rows were written by the workers, not from here.
    #[cfg_attr(not(test), allow(dead_code))]
    pub model_rows_by_workers: bool,
}

/// Run a whole training job; the summary goes to `out` (stdout in the binary).
pub fn run(job: TrainJob, out: &mut dyn Write) -> anyhow::Result<TrainOutcome> {
    let (cfg, spec) = (&job.cfg, &job.input);
    // Everything that can be refused is refused before loading and training.
    if let Some(plan) = &job.checkpoint {
        // Found out now, not after the first iteration.
        als_core::checkpoint::check_checkpoint_dir(&plan.dir).context("--checkpoint-dir")?;
    }
    if let Some(o) = &job.output {
        check_out_dir(&o.dir, o.overwrite)?;
    }
    let resume = job.checkpoint.as_ref().is_some_and(|c| c.resume);
    let workers_read = workers_read::plan_of(&job, resume)?;
    let embedded = matches!(spec.source, DataSource::Synthetic(_));
    if embedded {
        tracing::info!("no --data given: training on the embedded synthetic dataset");
    }

    let input: Input = load_input(spec)?;
    log_summary(&input);
    let ds = &input.dataset;
    if spec.test != TestSource::None && ds.n_scored_test_rows() == 0 {
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
    let signature = RunSignature::new(&ds.fingerprint, cfg);
    let start = match &job.checkpoint {
        Some(CheckpointPlan { dir, resume: true, .. }) => {
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
    let bar = progress::training_bar(cfg.iterations, job.quiet);
    let total = cfg.iterations;
    // The saved model's rows, when the workers wrote them (the evaluated run's model only).
    let mut model_rows: Option<PendingModel> = None;
    let mut on_iteration = |r: &IterationReport, state: &mut StateView| -> Result<(), TrainError> {
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
        if let (Some(o), true, false) = (&job.output, r.iteration == total, job.refit_on_all) {
            model_rows = model_rows_by_executor(state, o, seen_nnz(ds))?;
        }
        if let Some(plan) = &job.checkpoint {
            if r.iteration.is_multiple_of(plan.every) || r.iteration == total {
                let path = state.checkpoint(&plan.dir, &signature)?;
                tracing::info!(checkpoint = %path.display(), "checkpoint written");
            }
        }
        Ok(())
    };
    let trainer = Trainer::open(&job.executor, job.token.as_deref(), job.tls.clone(), job.worker_timeout)?;
    if let Trainer::Cluster(session) = &trainer {
        tracing::info!(workers = ?session.addrs(), "training on the cluster");
    }
    let mut data = TrainData::held(ds, &layouts.users);
    if let Some(plan) = &workers_read {
        match workers_read::build(&trainer, plan, &job, ds, &layouts) {
            Ok(Some(shape)) => data.shape = shape,
            Ok(None) => {}
            Err(e) => return trainer.shutdown(Err(e)),
        }
    }
    let trained = trainer.train(&data, cfg, &layouts, start, &mut on_iteration);
    progress::finish(&bar);
    let result = match trained {
        Ok(r) => r,
        Err(e) => return trainer.shutdown(Err(e)),
    };
    let (model, trained_on, model_rows) = if job.refit_on_all {
        // Only the full data set is needed from here on.
        drop(input.dataset);
        let on_workers = workers_read.as_ref().map(|w| w.every_row());
        match final_fit(&trainer, &job, &input.summary.source, &result.final_metrics, on_workers) {
            Ok(m) => m,
            Err(e) => return trainer.shutdown(Err(e)),
        }
    } else {
        let model = model_parts(&result, ds, cfg, &input.summary.source, &result.final_metrics);
        let on = if spec.test == TestSource::None {
            TrainedOn::All(ds.n_train())
        } else {
            TrainedOn::Train(ds.n_train())
        };
        (model, on, model_rows)
    };
    trainer.shutdown(Ok(()))?;
    let executor = job.executor.label();
    let mut metrics = metrics_json(
        &result.reports,
        &result.final_metrics,
        cfg,
        &input.summary,
        &executor,
        result.bytes_outside_halves,
    );
    let mut parts = model;
    trained_on.record(&mut parts, &mut metrics);
    let model = Model::new(parts).context("the trained model is inconsistent")?;
    let model_rows_by_workers = model_rows.is_some();
    if let Some(o) = &job.output {
        match model_rows {
            Some(rows) => rows.finish(&model),
            None => save_model(&model, &o.dir, o.overwrite),
        }
        .with_context(|| format!("cannot save the model to {}", o.dir.display()))?;
        tracing::info!(dir = %o.dir.display(), trained_on = %trained_on.describe(), rows_by_workers = model_rows_by_workers, "model saved");
    }
    if let Some(path) = &job.metrics_json {
        write_json_atomic(path, &metrics)?;
        tracing::info!(file = %path.display(), "metrics written");
    }

    let outcome = TrainOutcome {
        result,
        model,
        metrics,
        data: input.summary.clone(),
        executor,
        model_rows_by_workers,
    };
    summary::print_summary(out, &outcome, cfg, &job).context("cannot write the summary")?;
    if embedded {
        summary::print_demo(out, &outcome.model).context("cannot write the summary")?;
    }
    Ok(outcome)
}

/// Evaluation and deployment are two jobs: once the held-out run is
/// reported, the model users deploy is trained again, with the same
/// settings, on every rating of the input.
fn final_fit(
    trainer: &Trainer,
    job: &TrainJob,
    source: &str,
    held_out: &TestMetrics,
    workers_read: Option<workers_read::WorkersRead>,
) -> anyhow::Result<(ModelParts, TrainedOn, Option<PendingModel>)> {
    let (spec, cfg, output) = (&job.input, &job.cfg, job.output.as_ref());
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
    let mut data = TrainData::held(ds, &layouts.users);
    if let Some(plan) = &workers_read {
        if let Some(shape) = workers_read::build(trainer, plan, job, ds, &layouts)? {
            data.shape = shape;
        }
    }
    let bar = progress::training_bar(cfg.iterations, job.quiet);
    bar.set_message("final fit on every rating");
    let mut model_rows = None;
    let mut on_iteration = |r: &IterationReport, state: &mut StateView| -> Result<(), TrainError> {
        bar.inc(1);
        tracing::debug!(iteration = r.iteration, seconds = r.seconds, "final fit");
        if let (Some(o), true) = (output, r.iteration == cfg.iterations) {
            model_rows = model_rows_by_executor(state, o, seen_nnz(ds))?;
        }
        Ok(())
    };
    let trained = trainer.train(&data, cfg, &layouts, None, &mut on_iteration);
    progress::finish(&bar);
    let result = trained.context("the final fit on every rating failed")?;
    let model = model_parts(&result, ds, cfg, source, held_out);
    Ok((model, TrainedOn::All(ds.n_train()), model_rows))
}

/// The model's seen matrix (the training ratings by user), when the blocks
/// hold it: not where whole users are held out of them (`--split users`).
fn seen_nnz(ds: &Dataset) -> Option<u64> {
    ds.held_out.is_none().then_some(ds.by_user.indices.len() as u64)
}

/// The model's rows written by the executor where it keeps them (each
/// worker its blocks', into the model's files, and the seen matrix's with
/// `seen_nnz`), and read back into the state: the coordinator fetches none
/// of them. `None` where the executor cannot (in-process, or workers that
/// write no files): the model is then saved from the state, as
/// [`save_model`] saves it, to the same bytes.
fn model_rows_by_executor(state: &mut StateView, out: &ModelOutput, seen_nnz: Option<u64>) -> Result<Option<PendingModel>, TrainError> {
    let mut pending = PendingModel::begin(&out.dir, out.overwrite, state.shape(), seen_nnz)?;
    let places = pending.places();
    let written = state.rows_written_at(&places, |users, items| Ok(pending.read_rows_into(users, items)?))?;
    Ok(written.then_some(pending))
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

    fn record(self, model: &mut ModelParts, metrics: &mut Value) {
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
