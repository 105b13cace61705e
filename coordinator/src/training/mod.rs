//! A training run: load, train, evaluate, refit, save, report. The train
//! command runs one [`TrainJob`]; `tune` runs its final fit through it.

mod summary;
mod trainer;
mod workers_read;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use als_core::checkpoint::{latest_sealed, RunSignature, StartFrom};
use als_core::data::Dataset;
use als_core::model::{save_model, Model, ModelParts, PendingModel};
use als_core::row_places::IdLines;
use als_core::side::Factors;
use als_core::train::{IterationReport, Layouts, StateView, TestMetrics, TrainConfig, TrainData, TrainError, TrainResult};
use anyhow::{bail, Context};
use serde_json::Value;

use crate::cluster::executor::FinalRows;
use crate::cluster::ratings::OnWorkers;
use crate::input::{load_input, log_summary, DataSource, Input, InputSpec, TestSource};
use crate::model_build::{model_parts, model_parts_of, DataOfModel};
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
    /// Who reads the input of a run on workers.
    pub who_reads: WhoReads,
}

/// Who reads the input of a run on workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhoReads {
    /// The workers, where they can: a file input (not the embedded data),
    /// no users held out (folded in from the ratings held here), and every
    /// worker reaching the file (else the coordinator loads it and ships the
    /// blocks, saying so). The default.
    Auto,
    /// The workers, or the run fails (`--input-on-workers`).
    Workers,
    /// The coordinator, which ships the blocks (`--input-here`).
    Coordinator,
}

/// What a training run produced.
pub struct TrainOutcome {
    /// The evaluated run; its factors (`state`) are left empty where a
    /// refit on every rating made the model.
    pub result: TrainResult,
    /// The trained model; `None` where this coordinator read no ratings
    /// (`--input-on-workers`): the seen matrix is then only in the saved
    /// model's files, and the factors were moved into them.
    pub model: Option<Model>,
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
    /// The saved model's ids files too (this coordinator holds no ids).
    #[cfg_attr(not(test), allow(dead_code))]
    pub model_ids_by_workers: bool,
    /// This coordinator read ratings from the input (in any run of the job).
    #[cfg_attr(not(test), allow(dead_code))]
    pub read_input_here: bool,
}

/// The data of a run as this coordinator knows it: loaded here, or only
/// described by the workers that built the blocks from the input.
enum RunData {
    Here(Box<Input>),
    OnWorkers(Box<OnWorkers<'static>>, DataSummary),
}

impl RunData {
    fn summary(&self) -> &DataSummary {
        match self {
            RunData::Here(input) => &input.summary,
            RunData::OnWorkers(_, s) => s,
        }
    }

    fn layouts(&self, blocks: usize) -> Layouts {
        match self {
            RunData::Here(input) => Layouts::for_dataset(&input.dataset, blocks),
            RunData::OnWorkers(w, _) => w.layouts(),
        }
    }

    fn fingerprint(&self) -> String {
        match self {
            RunData::Here(input) => input.dataset.fingerprint.clone(),
            RunData::OnWorkers(w, _) => w.built.fingerprint_digest(),
        }
    }

    /// The count of the model's seen matrix, where the blocks hold it
    /// (not where whole users are held out of them: `--split users`).
    fn seen_nnz(&self) -> Option<u64> {
        match self {
            RunData::Here(input) => seen_nnz(&input.dataset),
            RunData::OnWorkers(w, _) => Some(w.built.ratings),
        }
    }

    /// What the training loop is given of the data. With the users split
    /// (`workers_read` that does not read all here) the workers build the
    /// blocks and this coordinator folds the held-out users in; another
    /// plan got here with the data loaded only when the workers could not
    /// build the blocks, which are then shipped.
    fn train_data(
        &self,
        layouts: &Layouts,
        trainer: &Trainer,
        job: &TrainJob,
        workers_read: Option<&workers_read::WorkersRead>,
    ) -> anyhow::Result<TrainData<'_>> {
        Ok(match self {
            RunData::Here(input) => {
                let mut data = TrainData::held(&input.dataset, &layouts.users);
                if let Some(plan) = workers_read.filter(|w| !w.reads_none_here()) {
                    if let Some(shape) = workers_read::build(trainer, plan, job, &input.dataset, layouts)? {
                        data.shape = shape;
                    }
                }
                data
            }
            RunData::OnWorkers(w, _) => TrainData {
                shape: w.built.shape(),
                ratings: None,
            },
        })
    }

    /// This coordinator read the ratings (at the start, or later to save a model the workers could not write).
    fn read_here(&self) -> bool {
        match self {
            RunData::Here(_) => true,
            RunData::OnWorkers(w, _) => w.was_loaded(),
        }
    }

    /// Where each block's ids go in the model's ids files, where this
    /// coordinator holds none of them: the workers write them.
    fn id_lines_elsewhere(&self) -> Option<[IdLines; 2]> {
        match self {
            RunData::OnWorkers(w, _) if w.described.ids.is_none() => Some(w.described.id_lines(&w.built)),
            _ => None,
        }
    }

    fn on_workers(&self) -> Option<&OnWorkers<'static>> {
        match self {
            RunData::Here(_) => None,
            RunData::OnWorkers(w, _) => Some(w),
        }
    }
}

/// The model of a finished run: its parts, and whether they hold the seen
/// matrix. The coordinator that read no ratings keeps its factors' only copy
/// in the parts (moved out of the result) and leaves the seen matrix in the
/// files the workers wrote; where they wrote none (`written` false, and a
/// model to save) it reads the input to save the model itself.
fn parts_of_run(
    result: &mut TrainResult,
    data: RunData,
    cfg: &TrainConfig,
    source: &str,
    held_out: &TestMetrics,
    written: bool,
    job: &TrainJob,
) -> anyhow::Result<ModelOfRun> {
    if let (RunData::OnWorkers(w, _), false, Some(_)) = (&data, written, &job.output) {
        tracing::warn!("the workers did not write the model's files: this coordinator reads the input to save it");
        let ds = w.dataset()?;
        return Ok(ModelOfRun {
            parts: model_parts(result, ds, cfg, source, held_out),
            seen_here: true,
            read_here: true,
        });
    }
    let read_here = data.read_here();
    Ok(match data {
        RunData::Here(input) => ModelOfRun {
            parts: model_parts(result, &input.dataset, cfg, source, held_out),
            seen_here: true,
            read_here,
        },
        RunData::OnWorkers(w, _) => {
            let factors = (take_factors(&mut result.state.users), take_factors(&mut result.state.items));
            let OnWorkers { built, described, .. } = *w;
            // Where not described, the workers wrote the ids files with the rows.
            let ids = described.ids.map(|i| (i.users, i.items)).unwrap_or_default();
            let of = DataOfModel {
                user_ids: ids.0,
                item_ids: ids.1,
                rating_range: built.training_range,
                fingerprint: built.fingerprint_digest(),
                seen: None,
            };
            ModelOfRun {
                parts: model_parts_of(result, factors, of, cfg, source, held_out),
                seen_here: false,
                read_here,
            }
        }
    })
}

/// A run's model parts, and what this coordinator holds of its data.
struct ModelOfRun {
    parts: ModelParts,
    /// The parts hold the seen matrix (else only the workers' files do).
    seen_here: bool,
    /// This coordinator read the input for the run.
    read_here: bool,
}

/// The factors, leaving an empty side behind.
fn take_factors(f: &mut Factors) -> Factors {
    Factors {
        matrix: std::mem::replace(&mut f.matrix, ndarray::Array2::zeros((0, 0))),
        bias: std::mem::take(&mut f.bias),
    }
}

/// Load the input here, or have the workers build and describe the blocks
/// (`--input-on-workers`, where this coordinator need not read any of it).
fn run_data(
    trainer: &Trainer,
    job: &TrainJob,
    spec: &InputSpec,
    workers_read: Option<&workers_read::WorkersRead>,
) -> anyhow::Result<RunData> {
    if let Some(plan) = workers_read.filter(|w| w.reads_none_here()) {
        if let Some((on, summary)) = workers_read::on_workers(trainer, plan, job, spec.clone())? {
            return Ok(RunData::OnWorkers(Box::new(on), summary));
        }
    }
    let input = load_input(spec)?;
    log_summary(&input);
    Ok(RunData::Here(Box::new(input)))
}

#[cfg(test)]
impl TrainOutcome {
    /// The model of a run that holds it (tests).
    pub fn model(&self) -> &Model {
        self.model.as_ref().expect("the run holds its model (it read the ratings)")
    }
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
    let mut workers_read = workers_read::plan_of(&job)?;
    let embedded = matches!(spec.source, DataSource::Synthetic(_));
    if embedded {
        tracing::info!("no --data given: training on the embedded synthetic dataset");
    }
    let trainer = Trainer::open(&job.executor, job.token.as_deref(), job.tls.clone(), job.worker_timeout)?;
    if let Trainer::Cluster(session) = &trainer {
        tracing::info!(workers = ?session.addrs(), "training on the cluster");
        if let Some(plan) = &mut workers_read {
            // Held-out users are folded in from the item rows peers send each other.
            plan.workers_fold_in = session.all_exchange();
        }
    }
    // A resumed run's blocks are built by the workers too; each takes its
    // own with the checkpoint's rows.
    let evaluated_read = workers_read.as_ref();
    let data = match run_data(&trainer, &job, spec, evaluated_read) {
        Ok(d) => d,
        Err(e) => return trainer.shutdown(Err(e)),
    };
    let trained = train_run(&trainer, &job, &data, evaluated_read);
    let outcome = trained.and_then(|(result, model_rows)| finish_run(&trainer, &job, data, result, model_rows, workers_read));
    let outcome = trainer.shutdown(outcome)?;
    summary::print_summary(out, &outcome, cfg, &job).context("cannot write the summary")?;
    if let (true, Some(model)) = (embedded, &outcome.model) {
        summary::print_demo(out, model).context("cannot write the summary")?;
    }
    Ok(outcome)
}

/// The evaluated run: train on `data` (resumed from the latest checkpoint
/// with `--resume`), checkpointing as asked; the model's rows are written
/// by the workers when this run's model is the one saved.
fn train_run(
    trainer: &Trainer,
    job: &TrainJob,
    data: &RunData,
    workers_read: Option<&workers_read::WorkersRead>,
) -> anyhow::Result<(TrainResult, Option<PendingModel>)> {
    let cfg = &job.cfg;
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
    let layouts = data.layouts(cfg.blocks);
    let signature = RunSignature::new(&data.fingerprint(), cfg);
    let start = match &job.checkpoint {
        Some(CheckpointPlan { dir, resume: true, .. }) => {
            // Found and checked here; its rows are read where they are needed.
            let sealed = latest_sealed(dir, &signature)?;
            if sealed.iterations_done > cfg.iterations {
                bail!(
                    "--resume: checkpoint {} has {} iterations done, more than --iterations {}; \
                     pass --iterations {} or more, or a --checkpoint-dir without it",
                    sealed.path.display(),
                    sealed.iterations_done,
                    cfg.iterations,
                    sealed.iterations_done
                );
            }
            tracing::info!(checkpoint = %sealed.path.display(), iterations_done = sealed.iterations_done, "resuming");
            Some(StartFrom::Checkpoint(sealed))
        }
        _ => None,
    };
    let bar = progress::training_bar(cfg.iterations, job.quiet);
    let total = cfg.iterations;
    let (seen, ids) = (data.seen_nnz(), data.id_lines_elsewhere());
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
            model_rows = model_rows_by_executor(state, o, seen, ids.clone())?;
        }
        if let Some(plan) = &job.checkpoint {
            if r.iteration.is_multiple_of(plan.every) || r.iteration == total {
                let path = state.checkpoint(&plan.dir, &signature)?;
                tracing::info!(checkpoint = %path.display(), "checkpoint written");
            }
        }
        Ok(())
    };
    let train_data = data.train_data(&layouts, trainer, job, workers_read)?;
    if job.input.test != TestSource::None && train_data.shape.n_scored_test == 0 {
        tracing::warn!("the test set is empty: no test metrics will be reported");
    }
    // A refit makes the model: nobody reads this run's final rows.
    let final_rows = match job.refit_on_all {
        true => FinalRows::NotRead,
        false => final_rows_of(job, data.on_workers().is_some()),
    };
    let trained = trainer.train(&train_data, data.on_workers(), cfg, &layouts, start, final_rows, &mut on_iteration);
    progress::finish(&bar);
    Ok((trained?, model_rows))
}

/// After the evaluated run: the final fit (`--final-fit all`) or this
/// run's model, saved; the metrics written.
fn finish_run(
    trainer: &Trainer,
    job: &TrainJob,
    data: RunData,
    mut result: TrainResult,
    model_rows: Option<PendingModel>,
    workers_read: Option<workers_read::WorkersRead>,
) -> anyhow::Result<TrainOutcome> {
    let (cfg, spec) = (&job.cfg, &job.input);
    let summary = data.summary().clone();
    let mut read_input_here = data.read_here();
    let (
        ModelOfRun {
            parts,
            seen_here,
            read_here,
        },
        trained_on,
        model_rows,
    ) = if job.refit_on_all {
        // Only the full data set is needed from here on, and only the refit's factors.
        drop(data);
        drop((take_factors(&mut result.state.users), take_factors(&mut result.state.items)));
        let on_workers = workers_read.as_ref().map(|w| w.every_row());
        final_fit(trainer, job, &summary.source, &result.final_metrics, on_workers)?
    } else {
        let on = if spec.test == TestSource::None {
            TrainedOn::All(summary.n_train)
        } else {
            TrainedOn::Train(summary.n_train)
        };
        let held_out = result.final_metrics.clone();
        let parts = parts_of_run(&mut result, data, cfg, &summary.source, &held_out, model_rows.is_some(), job)?;
        (parts, on, model_rows)
    };
    read_input_here |= read_here;
    let executor = job.executor.label();
    let mut metrics = metrics_json(
        &result.reports,
        &result.final_metrics,
        cfg,
        &summary,
        &executor,
        result.bytes_outside_halves,
        result.peer_bytes_outside_halves,
    );
    let mut parts = parts;
    trained_on.record(&mut parts, &mut metrics);
    let model_rows_by_workers = model_rows.is_some();
    let model_ids_by_workers = model_rows.as_ref().is_some_and(PendingModel::ids_written_elsewhere);
    // Without the seen matrix here there is no model to query, only its files.
    let (model, parts) = match seen_here {
        true => (Some(Model::new(parts).context("the trained model is inconsistent")?), None),
        false => (None, Some(parts)),
    };
    if let Some(o) = &job.output {
        match (model_rows, &model, &parts) {
            (Some(rows), Some(model), _) => rows.finish(model),
            (Some(rows), None, Some(parts)) => rows.finish_without_seen(parts),
            (None, Some(model), _) => save_model(model, &o.dir, o.overwrite),
            _ => bail!(
                "the model's seen matrix is only on the workers, and they did not write the model's files \
                 (start them with --output-root holding {})",
                o.dir.display()
            ),
        }
        .with_context(|| format!("cannot save the model to {}", o.dir.display()))?;
        tracing::info!(dir = %o.dir.display(), trained_on = %trained_on.describe(), rows_by_workers = model_rows_by_workers, ids_by_workers = model_ids_by_workers, "model saved");
    }
    if let Some(path) = &job.metrics_json {
        write_json_atomic(path, &metrics)?;
        tracing::info!(file = %path.display(), "metrics written");
    }
    Ok(TrainOutcome {
        result,
        model,
        metrics,
        data: summary,
        executor,
        model_rows_by_workers,
        model_ids_by_workers,
        read_input_here,
    })
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
) -> anyhow::Result<(ModelOfRun, TrainedOn, Option<PendingModel>)> {
    let (spec, cfg, output) = (&job.input, &job.cfg, job.output.as_ref());
    let full_spec = InputSpec {
        test: TestSource::None,
        ..spec.clone()
    };
    let data = run_data(trainer, job, &full_spec, workers_read.as_ref())?;
    let n_train = data.summary().n_train;
    tracing::info!(
        ratings = n_train,
        users = data.summary().n_users,
        items = data.summary().n_items,
        "refitting the saved model on every rating (--final-fit all); its metrics come from the held-out run"
    );
    let layouts = data.layouts(cfg.blocks);
    let train_data = data.train_data(&layouts, trainer, job, workers_read.as_ref())?;
    let bar = progress::training_bar(cfg.iterations, job.quiet);
    bar.set_message("final fit on every rating");
    let (seen, ids) = (data.seen_nnz(), data.id_lines_elsewhere());
    let mut model_rows = None;
    let mut on_iteration = |r: &IterationReport, state: &mut StateView| -> Result<(), TrainError> {
        bar.inc(1);
        tracing::debug!(iteration = r.iteration, seconds = r.seconds, "final fit");
        if let (Some(o), true) = (output, r.iteration == cfg.iterations) {
            model_rows = model_rows_by_executor(state, o, seen, ids.clone())?;
        }
        Ok(())
    };
    let trained = trainer.train(
        &train_data,
        data.on_workers(),
        cfg,
        &layouts,
        None,
        final_rows_of(job, data.on_workers().is_some()),
        &mut on_iteration,
    );
    progress::finish(&bar);
    let mut result = trained.context("the final fit on every rating failed")?;
    let parts = parts_of_run(&mut result, data, cfg, source, held_out, model_rows.is_some(), job)?;
    Ok((parts, TrainedOn::All(n_train), model_rows))
}

/// Who reads the final rows of the run that makes the model. Where only
/// the workers read the ratings, the model is all this coordinator would
/// read them for: the workers write its rows, and they are fetched only
/// where they did not; without a model to save, nobody reads them.
fn final_rows_of(job: &TrainJob, on_workers: bool) -> FinalRows {
    match (on_workers, job.output.is_some()) {
        (false, _) => FinalRows::Wanted,
        (true, true) => FinalRows::UnlessWritten,
        (true, false) => FinalRows::NotRead,
    }
}

/// The model's seen matrix (the training ratings by user), when the blocks
/// hold it: not where whole users are held out of them (`--split users`).
fn seen_nnz(ds: &Dataset) -> Option<u64> {
    ds.held_out.is_none().then_some(ds.by_user.indices.len() as u64)
}

/// The model's rows written by the executor where it keeps them (each
/// worker its blocks', into the model's files, the seen matrix's with
/// `seen_nnz`, and the ids' with `ids`), and read back into the state: the
/// coordinator fetches none of them. `None` where the executor cannot (in-process, or workers that
/// write no files): the model is then saved from the state, as
/// [`save_model`] saves it, to the same bytes.
fn model_rows_by_executor(
    state: &mut StateView,
    out: &ModelOutput,
    seen_nnz: Option<u64>,
    ids: Option<[IdLines; 2]>,
) -> Result<Option<PendingModel>, TrainError> {
    let mut pending = PendingModel::begin(&out.dir, out.overwrite, state.shape(), seen_nnz, ids)?;
    let places = pending.places();
    // Read into the state, or, where it keeps no rows (the workers hold them), only checked.
    let written = state.rows_written_at(&places, |rows| match rows {
        Some((users, items)) => Ok(pending.read_rows_into(users, items)?),
        None => Ok(pending.check_rows_written()?),
    })?;
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
