//! The workers build their blocks from the input (by default where they
//! can, or always with `--input-on-workers`), and the coordinator trains on
//! their blocks without reading the input. With users held out (`--split
//! users`) each user block keeps its held-out users and its worker folds
//! them in at evaluations, from the item rows its peers send. Workers that
//! do not send each other rows cannot: the coordinator then holds the data
//! too, folds the held-out users in itself, checks that what the workers
//! built is the data it loaded (the same file on every machine), and ships
//! none.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use als_core::data::split::UserHoldout;
use als_core::data::{Dataset, SplitSpec};
use als_core::train::{DataShape, Layouts};
use anyhow::bail;

use super::{ExecutorChoice, TrainJob, Trainer, WhoReads};
use crate::cluster::ingest::{BlocksBuilt, IngestPlan, InputOutOfReach, WorkerLost};
use crate::cluster::ratings::OnWorkers;
use crate::cluster::ClusterSession;
use crate::input::{core_split, load_input, CoreSplit, DataSource, InputSpec, TestSource};
use crate::report::DataSummary;

/// What the workers read and how they split it.
pub struct WorkersRead {
    path: PathBuf,
    split: SplitSpec,
    /// `--split users`: whole users held out.
    hold_out: Option<UserHoldout>,
    /// The workers fold the held-out users in (they send each other rows).
    pub workers_fold_in: bool,
    /// `--test FILE`, read by the workers too.
    test: Option<PathBuf>,
    /// The run fails where a worker may not read the input
    /// (`--input-on-workers`); else the coordinator reads it and ships.
    required: bool,
}

impl WorkersRead {
    /// This coordinator need not read the ratings: the workers build every
    /// block, and fold in any held-out users (`--split users`).
    pub fn reads_none_here(&self) -> bool {
        self.hold_out.is_none() || self.workers_fold_in
    }

    /// The same input with no row held out (the final fit's).
    pub fn every_row(&self) -> WorkersRead {
        WorkersRead {
            path: self.path.clone(),
            split: SplitSpec::None,
            hold_out: None,
            workers_fold_in: self.workers_fold_in,
            test: None,
            required: self.required,
        }
    }
}

/// What the workers read, if they read the input: by default wherever they
/// can (a file, on workers), with `--input-on-workers` always, or refused
/// before anything is loaded where they cannot build what the run needs.
/// Whether they fold held-out users in is known once they answer
/// ([`WorkersRead::workers_fold_in`]).
pub fn plan_of(job: &TrainJob) -> anyhow::Result<Option<WorkersRead>> {
    let required = match job.who_reads {
        WhoReads::Coordinator => return Ok(None),
        WhoReads::Workers => true,
        WhoReads::Auto => {
            let possible = !matches!(job.executor, ExecutorChoice::InProcess) && matches!(job.input.source, DataSource::File(_));
            if !possible {
                return Ok(None);
            }
            false
        }
    };
    if matches!(job.executor, ExecutorChoice::InProcess) {
        bail!("--input-on-workers needs workers (--workers or --local)");
    }
    let DataSource::File(path) = &job.input.source else {
        bail!("--input-on-workers needs --data: the workers read a file, not the embedded dataset");
    };
    // A relative path would be resolved in each worker's directory.
    let (split, hold_out, test) = match &job.input.test {
        TestSource::None => (SplitSpec::None, None, None),
        TestSource::File(t) => (SplitSpec::None, None, Some(std::path::absolute(t)?)),
        TestSource::Split(choice) => match core_split(*choice, job.input.seed) {
            CoreSplit::Rows(split) => (split, None, None),
            CoreSplit::Users(h) => (SplitSpec::None, Some(h), None),
        },
    };
    let path = std::path::absolute(path)?;
    Ok(Some(WorkersRead {
        path,
        split,
        hold_out,
        workers_fold_in: false,
        test,
        required,
    }))
}

/// The ingest of `plan`, with the bounds of its steps.
fn ingest_plan(plan: &WorkersRead, job: &TrainJob) -> anyhow::Result<IngestPlan> {
    let mut bytes = als_core::data::input_size(&plan.path)?.0;
    if let Some(t) = &plan.test {
        bytes += als_core::data::input_size(t)?.0;
    }
    Ok(IngestPlan {
        path: plan.path.clone(),
        load: job.input.load.clone(),
        test_path: plan.test.clone(),
        split: plan.split.clone(),
        hold_out: plan.hold_out,
        duplicates: job.input.duplicates,
        // As asked: the workers cap it as the layout does (at most one block per user and per item).
        blocks: job.cfg.blocks,
        // Parsing runs at tens of MB/s per core: a second per MB is far beyond it.
        step_timeout: Duration::from_secs(600 + bytes / 1_000_000),
        peer_timeout: job.worker_timeout.max(Duration::from_secs(30)),
    })
}

/// The cluster session of `trainer` and the blocks its workers built from
/// `ingest`; `None` when workers kept being lost meanwhile, or (`required`
/// false) a worker may not read the input, and the coordinator does
/// `instead`, as the log says.
fn built_by_workers<'t>(
    trainer: &'t Trainer,
    ingest: &IngestPlan,
    required: bool,
    instead: &str,
) -> anyhow::Result<Option<(&'t ClusterSession, BlocksBuilt)>> {
    let Trainer::Cluster(session) = trainer else {
        bail!("--input-on-workers needs workers (--workers or --local)");
    };
    match session.build_blocks(ingest) {
        Ok(built) => Ok(Some((session, built))),
        Err(e) if e.is::<WorkerLost>() => {
            tracing::warn!("the workers could not build their blocks ({e:#}): {instead}");
            Ok(None)
        }
        Err(e) if !required && e.is::<InputOutOfReach>() => {
            tracing::warn!(
                "{e:#}; the workers read the input only where they all can \
                 (give each an --input-root holding it, or pass --input-here): {instead}"
            );
            Ok(None)
        }
        Err(e) => Err(e.context("the workers could not build their blocks from the input")),
    }
}

/// Have the workers build the blocks and describe them, for a run on a
/// coordinator that reads none of the input (`plan` must
/// [`WorkersRead::reads_none_here`]); `input` is the input as this
/// coordinator would load it, should it have to save a model the workers
/// could not write. `None` when they could not build or describe them (a
/// worker lost): the coordinator then loads the input and ships the blocks.
pub fn on_workers(
    trainer: &Trainer,
    plan: &WorkersRead,
    job: &TrainJob,
    input: InputSpec,
) -> anyhow::Result<Option<(OnWorkers<'static>, DataSummary)>> {
    anyhow::ensure!(plan.reads_none_here(), "users held out are folded in from the ratings held here");
    let ingest = ingest_plan(plan, job)?;
    let t0 = Instant::now();
    let Some((session, built)) = built_by_workers(
        trainer,
        &ingest,
        plan.required,
        "loading the input here and shipping the blocks instead",
    )?
    else {
        return Ok(None);
    };
    let described = match session.describe_blocks(&ingest, &built, job.cfg.min_pos) {
        Ok(d) => d,
        Err(e) if e.is::<WorkerLost>() => {
            tracing::warn!("the workers could not describe their blocks ({e:#}): loading the input here and shipping the blocks instead");
            return Ok(None);
        }
        Err(e) => return Err(e.context("the workers could not describe the blocks they built")),
    };
    let seconds = t0.elapsed().as_secs_f64();
    tracing::info!(
        ratings = built.ratings,
        users = built.n_users(),
        items = built.n_items(),
        peer_bytes = built.peer_bytes,
        seconds = format_args!("{seconds:.2}"),
        "the workers built their blocks from the input; this coordinator reads none of it"
    );
    let source = match &input.source {
        DataSource::File(p) => p.display().to_string(),
        DataSource::Synthetic(_) => bail!("--input-on-workers needs --data"),
    };
    let summary = DataSummary {
        source,
        n_users: built.n_users(),
        n_items: built.n_items(),
        n_train: built.ratings as usize,
        n_test: built.shape().n_scored_test,
        test_dropped_cold: (built.test_dropped_cold + built.held_out.as_ref().map_or(0, |h| h.dropped_cold)) as usize,
        held_out_users: built.held_out.as_ref().map(|h| h.users() as usize),
        n_fold_in: built.held_out.as_ref().map(|h| h.fold_in as usize),
        skipped_lines: built.skipped_lines,
        duplicates_merged: built.duplicates_merged as usize,
        load_seconds: seconds,
    };
    let (check, path, blocks) = (built.clone(), plan.path.clone(), job.cfg.blocks);
    // Loaded only to save a model the workers could not write: the same data, or the run stops.
    let load = Box::new(move || -> anyhow::Result<Dataset> {
        let ds = load_input(&input)?.dataset;
        let layouts = Layouts::for_dataset(&ds, blocks);
        check_same_data(&check, &check.shape(), &ds, &layouts, &path)?;
        Ok(ds)
    });
    // Built again, as many blocks as the workers built.
    let plan = IngestPlan {
        blocks: built.user_starts.len() - 1,
        ..ingest
    };
    Ok(Some((OnWorkers::new(built, described, plan, load), summary)))
}

/// Have the workers build the blocks, and check them against `ds`; the
/// data's shape as they report it, which the run trains on, or `None` when
/// they could not build them (the blocks are shipped instead).
pub fn build(trainer: &Trainer, plan: &WorkersRead, job: &TrainJob, ds: &Dataset, layouts: &Layouts) -> anyhow::Result<Option<DataShape>> {
    let ingest = ingest_plan(plan, job)?;
    let t0 = Instant::now();
    // This coordinator holds the data: a loss costs the shipment, not the run.
    let Some((_, built)) = built_by_workers(trainer, &ingest, plan.required, "shipping the blocks instead")? else {
        return Ok(None);
    };
    // The held-out users are folded in and scored here, from this coordinator's rows.
    let shape = built.shape();
    check_same_data(&built, &shape, ds, layouts, &plan.path)?;
    tracing::info!(
        ratings = built.ratings,
        peer_bytes = built.peer_bytes,
        seconds = format_args!("{:.2}", t0.elapsed().as_secs_f64()),
        "the workers built their blocks from the input"
    );
    Ok(Some(shape))
}

/// The blocks the workers built, and the `shape` reported with them, are
/// those of the data the coordinator loaded (the mean and the range to the bit).
fn check_same_data(built: &BlocksBuilt, shape: &DataShape, ds: &Dataset, layouts: &Layouts, path: &std::path::Path) -> anyhow::Result<()> {
    let same = built.fingerprint_digest() == ds.fingerprint
        && built.user_starts == layouts.users.starts_u64()
        && built.item_starts == layouts.items.starts_u64()
        && built.test_rows == ds.test.len() as u64
        && built
            .held_out
            .as_ref()
            .map(|h| (h.users(), h.fold_in, h.test_rows(), h.dropped_cold))
            == ds.held_out.as_ref().map(|h| {
                (
                    h.n_users() as u64,
                    h.fold_in.nnz() as u64,
                    h.test.len() as u64,
                    h.dropped_cold as u64,
                )
            })
        && same_bits(shape, &DataShape::of(ds, &layouts.users));
    if !same {
        bail!(
            "the workers read other ratings from {} than this coordinator did ({} users, {} items, {} ratings, {} test rows; \
             here {}, {}, {}, {}): every worker must see the same file",
            path.display(),
            built.n_users(),
            built.n_items(),
            built.ratings,
            built.test_rows,
            ds.n_users(),
            ds.n_items(),
            ds.n_train(),
            ds.test.len()
        );
    }
    Ok(())
}

/// Shapes equal to the bit (a NaN-free mean and range compare as numbers otherwise).
fn same_bits(a: &DataShape, b: &DataShape) -> bool {
    let bits = |s: &DataShape| {
        (
            s.n_users,
            s.n_items,
            s.n_train,
            s.n_scored_test,
            s.holds_out_users,
            s.global_mean.to_bits(),
            s.rating_range.0.to_bits(),
            s.rating_range.1.to_bits(),
        )
    };
    bits(a) == bits(b)
}
