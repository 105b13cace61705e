//! The flags of a training run (`coordinator` with no subcommand), built
//! from the shared groups, and their translation into a [`TrainJob`].

use std::path::PathBuf;

use als_core::data::synth::SynthSpec;
use als_core::data::LoadOptions;
use als_core::train::{TrainConfig, DEFAULT_EVAL_EVERY, DEFAULT_FACTORS, DEFAULT_LAMBDA, DEFAULT_OBJECTIVE_EVERY};
use anyhow::bail;
use clap::{Args, ValueEnum};

use super::cluster::ClusterArgs;
use super::layout::{check_columns, LayoutArgs};
use super::model::{Cadence, MetricArgs, ModelArgs, ModelPoint, SolverArg};
use super::parse;
use super::split::SplitArgs;
use crate::input::{DataSource, InputSpec, TestSource};
use crate::training::{CheckpointPlan, ExecutorChoice, ModelOutput, TrainJob};

/// What the saved model is trained on (see `--final-fit`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalFit {
    /// Every rating of the input: the held-out rows too.
    All,
    /// The training split of the evaluated run.
    Train,
}

/// Flags of a training run (the default command).
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Ratings file; without it, train on the embedded synthetic dataset.
    #[arg(long, value_name = "FILE", help_heading = "Data")]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub layout: LayoutArgs,
    #[command(flatten)]
    pub split: SplitArgs,
    /// Evaluate every N iterations (0: after the last one only).
    #[arg(long, default_value_t = DEFAULT_EVAL_EVERY, value_name = "N", help_heading = "Evaluation")]
    pub eval_every: usize,
    /// Compute the training objective and train RMSE every N iterations (0:
    /// never; about one dot product per rating, computed with the items' half;
    /// it changes no factor).
    #[arg(long, default_value_t = DEFAULT_OBJECTIVE_EVERY, value_name = "N", help_heading = "Evaluation")]
    pub objective_every: usize,
    #[command(flatten)]
    pub metrics: MetricArgs,

    /// Latent factors k.
    #[arg(long, default_value_t = DEFAULT_FACTORS, value_name = "K", value_parser = parse::positive_usize, help_heading = "Model")]
    pub factors: usize,
    /// Regularization λ (scaled per row by --reg-scaling; default Spark's 0.1).
    #[arg(long, default_value_t = DEFAULT_LAMBDA, allow_hyphen_values = true, value_name = "L", value_parser = parse::non_negative_f32, help_heading = "Model")]
    pub lambda: f32,
    /// Confidence scale α of --implicit [default: 40].
    #[arg(long, value_name = "A", requires = "implicit", value_parser = parse::non_negative_f32, help_heading = "Model")]
    pub alpha: Option<f32>,
    /// Weight α₀ of every user–item pair under --loss ials [default: 0.1].
    #[arg(long, value_name = "A0", value_parser = parse::non_negative_f32, help_heading = "Model")]
    pub unobserved_weight: Option<f32>,
    /// Exponent ν of --loss ials: a row's λ is λ·(n + α₀·N)^ν, n its count, N
    /// the other side's rows (0: plain λ) [default: 1, Rendle et al.'s].
    #[arg(long, value_name = "NU", value_parser = parse::non_negative_f32, help_heading = "Model")]
    pub reg_exponent: Option<f32>,
    /// Initial factors with entries from N(0, S²/k), as Rendle et al. [default:
    /// unit-length Gaussian vectors, as Spark].
    #[arg(long, value_name = "S", value_parser = parse::positive_f32, help_heading = "Model")]
    pub init_std: Option<f32>,
    /// Coordinates per block of --solver ialspp [default: 16].
    #[arg(long, value_name = "B", value_parser = parse::positive_usize, help_heading = "Model")]
    pub block_size: Option<usize>,
    /// Row solver [default: cholesky for explicit, cg for --implicit].
    #[arg(long, value_enum, help_heading = "Model")]
    pub solver: Option<SolverArg>,
    #[command(flatten)]
    pub model: ModelArgs,

    /// Size of the thread pool [default: all cores].
    #[arg(long, value_name = "N", value_parser = parse::positive_usize, help_heading = "Execution")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Save the model to this directory (refused if it exists, unless --overwrite).
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    pub out: Option<PathBuf>,
    /// Replace an existing model directory given by --out.
    #[arg(long, requires = "out", help_heading = "Output")]
    pub overwrite: bool,
    /// What the model saved to --out is trained on: `all` refits it on every
    /// rating of --data once the held-out evaluation is reported (the default
    /// when the tool splits --data itself), `train` keeps the model of the
    /// evaluated run (experiments). With --test FILE, --data is the training set as given.
    #[arg(long, value_enum, value_name = "WHAT", requires = "out", help_heading = "Output")]
    pub final_fit: Option<FinalFit>,
    /// Write the per-iteration and final metrics to this JSON file.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub metrics_json: Option<PathBuf>,
    /// Write a checkpoint (factors and progress, atomically, checksummed) here every --checkpoint-every iterations.
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Iterations between checkpoints.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = parse::positive_usize, help_heading = "Output")]
    pub checkpoint_every: usize,
    /// Continue from the newest valid checkpoint in --checkpoint-dir (refused if it was written for other data or settings).
    #[arg(long, requires = "checkpoint_dir", help_heading = "Output")]
    pub resume: bool,
    #[command(flatten)]
    pub progress: super::ProgressArgs,
}

impl TrainArgs {
    /// Whether the saved model is refit on all ratings after the evaluated run:
    /// only when the tool made the split itself and a model is saved.
    pub fn refit_on_all(&self) -> anyhow::Result<bool> {
        let split_here = matches!(self.split.test_source()?, TestSource::Split(_));
        match self.final_fit {
            Some(FinalFit::All) if self.split.test.is_some() => {
                bail!("--final-fit all: with --test FILE the training set is --data as given; drop --final-fit")
            }
            Some(FinalFit::All) => Ok(split_here),
            Some(FinalFit::Train) => Ok(false),
            None => Ok(split_here && self.out.is_some()),
        }
    }

    /// The input of the run: --data (or the embedded dataset) and its test set.
    pub fn input_spec(&self) -> anyhow::Result<InputSpec> {
        let test = self.split.test_source()?;
        let source = match &self.data {
            Some(p) => DataSource::File(p.clone()),
            None => {
                if matches!(test, TestSource::File(_)) {
                    bail!("--test needs --data (the embedded dataset is split with --test-ratio)");
                }
                DataSource::Synthetic(SynthSpec::small_default())
            }
        };
        let load = self.load_options();
        check_columns(&load)?;
        Ok(InputSpec {
            source,
            load,
            test,
            duplicates: self.layout.duplicate_policy(self.model.implicit),
            seed: self.split.seed.split_seed,
        })
    }

    /// The training configuration, validated.
    pub fn train_config(&self) -> anyhow::Result<TrainConfig> {
        let point = ModelPoint {
            lambda: self.lambda,
            factors: self.factors,
            alpha: self.alpha,
            unobserved_weight: self.unobserved_weight,
            reg_exponent: self.reg_exponent,
            init_std: self.init_std,
            block_size: self.block_size,
            solver: self.solver,
        };
        let cadence = Cadence {
            eval_every: self.eval_every,
            objective_every: self.objective_every,
        };
        self.model.train_config(point, &self.metrics, cadence)
    }

    /// How --data and --test are read.
    pub fn load_options(&self) -> LoadOptions {
        self.layout.load_options(self.split.timestamp_col())
    }

    /// The whole run the flags describe, refused now if any part is wrong.
    /// `cores` sizes the default cluster: one local worker per core.
    pub fn job(&self, cores: usize) -> anyhow::Result<TrainJob> {
        let cfg = self.train_config()?;
        if matches!(cfg.learner, als_core::train::Learner::Gibbs { .. }) && self.checkpoint_dir.is_some() {
            bail!("--checkpoint-dir does not apply to --solver gibbs: a resumed chain would need the running average of its draws, which checkpoints do not hold");
        }
        let input = self.input_spec()?;
        let executor = self.cluster.executor_choice(ExecutorChoice::Local(cores.max(1)))?;
        Ok(TrainJob {
            executor: crate::training::executor_for_learner(&cfg, self.cluster.cluster_given(), executor)?,
            cfg,
            input,
            token: self.cluster.token()?,
            tls: self.cluster.tls()?,
            worker_timeout: self.cluster.worker_timeout(),
            refit_on_all: self.refit_on_all()?,
            checkpoint: self.checkpoint_dir.as_ref().map(|dir| CheckpointPlan {
                dir: dir.clone(),
                every: self.checkpoint_every,
                resume: self.resume,
            }),
            output: self.out.as_ref().map(|dir| ModelOutput {
                dir: dir.clone(),
                overwrite: self.overwrite,
            }),
            metrics_json: self.metrics_json.clone(),
            quiet: self.progress.quiet,
            who_reads: self.cluster.who_reads(),
        })
    }
}
