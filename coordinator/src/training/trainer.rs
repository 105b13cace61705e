//! Where training runs: the executor choice, opened once per command, and
//! the rule that SGD trains in this process.

use std::path::Path;

use als_core::checkpoint::StartFrom;
use als_core::train::{
    train_gibbs, train_on, train_sgd, Layouts, Learner, LocalExecutor, OnIteration, TrainConfig, TrainData, TrainResult, TrainState,
};
use anyhow::{bail, Context};

use crate::cluster::executor::FinalRows;
use crate::cluster::ratings::OnWorkers;
use crate::cluster::{ClientOptions, ClusterSession};

/// Who solves the half-iterations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutorChoice {
    /// This process, no gRPC (`--in-process`).
    InProcess,
    /// Remote workers (`--workers a:50051,b:50051`).
    Workers(Vec<String>),
    /// N workers started in this process on loopback (`--local N`; the default, one per core).
    Local(usize),
}

impl ExecutorChoice {
    /// The name written to the metrics JSON: `in-process`, `local:N` or `workers:a,b`.
    pub fn label(&self) -> String {
        match self {
            ExecutorChoice::InProcess => "in-process".into(),
            ExecutorChoice::Local(n) => format!("local:{n}"),
            ExecutorChoice::Workers(ws) => format!("workers:{}", ws.join(",")),
        }
    }
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

    /// Train `cfg` on `data` from `start` (or a fresh start). Only a
    /// cluster trains on ratings this process does not hold.
    // The run's parts as the callers hold them; a struct of them would only be unpacked here.
    #[allow(clippy::too_many_arguments)]
    pub fn train<'a>(
        &self,
        data: &TrainData<'a>,
        on_workers: Option<&'a OnWorkers<'a>>,
        cfg: &TrainConfig,
        layouts: &Layouts,
        start: Option<StartFrom>,
        final_rows: FinalRows,
        on_iteration: &mut OnIteration,
    ) -> anyhow::Result<TrainResult> {
        let here = || data.ratings.context("training in this process needs the ratings here");
        // Only a cluster reads a checkpoint's rows where they lie; this process reads them all.
        let held = |start: Option<StartFrom>| -> anyhow::Result<Option<TrainState>> {
            start.map(StartFrom::into_state).transpose().context("--resume")
        };
        match (self, cfg.learner) {
            (Trainer::InProcess, Learner::Sgd { .. }) => {
                Ok(train_sgd(here()?, cfg, layouts, held(start)?, on_iteration).context("training failed")?)
            }
            (Trainer::Cluster(_), Learner::Sgd { .. }) => bail!("--solver sgd trains in this process; it cannot run on workers"),
            (Trainer::InProcess, Learner::Gibbs { .. }) => {
                Ok(train_gibbs(here()?, cfg, held(start)?, on_iteration).context("training failed")?)
            }
            (Trainer::Cluster(_), Learner::Gibbs { .. }) => bail!("--solver gibbs samples in this process; it cannot run on workers"),
            (Trainer::InProcess, Learner::Als) => {
                let mut exec = LocalExecutor::new(here()?, layouts.clone());
                Ok(train_on(data, cfg, &mut exec, layouts, held(start)?, on_iteration).context("training failed")?)
            }
            (Trainer::Cluster(session), Learner::Als) => session
                .train(data, on_workers, cfg, layouts, start, final_rows, on_iteration)
                .context("training failed"),
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

/// The executor of a learner. SGD runs in this process, because a DSGD
/// sub-epoch is milliseconds of work per cell, less than shipping its factor
/// blocks to a worker and back. Gibbs sampling does too: workers solve ALS
/// rows only, and the protocol carries no row prior to draw against (its
/// row draws are keyed by row, so they could move to workers unchanged). An
/// explicit `--workers`/`--local` (`cluster_given`) is refused; the default
/// (local workers) becomes in-process.
pub fn executor_for_learner(cfg: &TrainConfig, cluster_given: bool, choice: ExecutorChoice) -> anyhow::Result<ExecutorChoice> {
    let solver = match cfg.learner {
        Learner::Als => return Ok(choice),
        Learner::Sgd { .. } => "sgd",
        Learner::Gibbs { .. } => "gibbs",
    };
    if cluster_given {
        bail!("--solver {solver} trains in this process: drop --workers/--local");
    }
    if choice != ExecutorChoice::InProcess {
        tracing::info!("--solver {solver} trains in this process: no workers are started");
    }
    Ok(ExecutorChoice::InProcess)
}
