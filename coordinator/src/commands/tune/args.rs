//! Flags of `coordinator tune`: the grid axes as lists, the rest shared
//! with training through the argument groups.

use std::path::PathBuf;

use als_core::data::split::{DEFAULT_FOLDS, DEFAULT_TEST_RATIO};
use als_core::data::{DuplicatePolicy, LoadOptions};
use als_core::train::{
    TrainConfig, DEFAULT_ALPHA, DEFAULT_BLOCK_SIZE, DEFAULT_FACTORS, DEFAULT_LAMBDA, DEFAULT_REG_EXPONENT, DEFAULT_UNOBSERVED_WEIGHT,
};
use clap::Args;

use super::axis::{self, AxisEntry};
use super::grid::{Axes, Setting};
use crate::args::split::SplitSeedArg;
use crate::args::{check_columns, parse, Cadence, ClusterArgs, LayoutArgs, MetricArgs, ModelArgs, ProgressArgs, SolverArg};
use crate::input::{DataSource, InputSpec, TestSource};
use crate::training::{executor_for_learner, ExecutorChoice, ModelOutput, TrainJob};

/// What each cross-validation fold holds out (`--folds-of`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoldsOf {
    /// A seeded fifth (with 5 folds) of the ratings: every rating is tested once.
    Ratings,
    /// A seeded fifth of the users, whole: every user is held out once.
    Users,
}

/// `coordinator tune`: k-fold cross-validation over a grid of λ, factors (and α, α₀, ν, σ, b).
#[derive(Args, Debug, Clone)]
pub struct TuneArgs {
    /// Ratings file; every rating is in the test fold exactly once.
    #[arg(long, value_name = "FILE", help_heading = "Data")]
    pub data: PathBuf,
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Number of folds.
    #[arg(long, default_value_t = DEFAULT_FOLDS, value_name = "N", value_parser = parse::folds, help_heading = "Evaluation")]
    pub folds: usize,
    /// What the folds hold out: ratings, or whole users (strong generalization:
    /// each held-out user is folded in on 80% of their ratings and ranked on the rest).
    #[arg(long, value_enum, default_value_t = FoldsOf::Ratings, help_heading = "Evaluation")]
    pub folds_of: FoldsOf,
    /// With --folds-of users: the users `--split users --test-ratio F` (same
    /// --split-seed) holds out as test users are left out of tuning, so a
    /// later `train --split users` is scored on users tuning never saw; 0 tunes on every user.
    #[arg(long, value_name = "F", default_value_t = DEFAULT_TEST_RATIO, value_parser = parse::ratio_or_zero, help_heading = "Evaluation")]
    pub test_ratio: f64,
    /// `--split-seed`: the seed of the fold assignment.
    #[command(flatten)]
    pub seed: SplitSeedArg,
    #[command(flatten)]
    pub metrics: MetricArgs,
    /// Early stopping: every run evaluates its fold after each iteration and
    /// stops once the metric has not improved for N of them; it scores its
    /// best iteration, and the --out model trains for the winner's mean best
    /// iteration count.
    #[arg(long, value_name = "N", value_parser = parse::positive_usize, help_heading = "Evaluation")]
    pub patience: Option<usize>,

    /// λ values to try: comma separated, each a value or a range LO:HI:log:N
    /// (N log-spaced points, ends included) or LO:HI:lin:N, e.g. 1e-4:1e-1:log:8.
    #[arg(long, value_name = "L,..", value_delimiter = ',', num_args = 1.., default_values_t = [AxisEntry::one(DEFAULT_LAMBDA)], value_parser = axis::non_negative_f32, help_heading = "Grid")]
    pub lambda: Vec<AxisEntry<f32>>,
    /// Factor counts to try: comma separated, values or ranges as for --lambda
    /// (points rounded to integers), e.g. 16:256:log:5.
    #[arg(long, value_name = "K,..", value_delimiter = ',', num_args = 1.., default_values_t = [AxisEntry::one(DEFAULT_FACTORS)], value_parser = axis::positive_usize, help_heading = "Grid")]
    pub factors: Vec<AxisEntry<usize>>,
    /// Confidence scales α of --implicit to try: values or ranges as for --lambda [default: 40].
    #[arg(long, value_name = "A,..", value_delimiter = ',', num_args = 1.., requires = "implicit", value_parser = axis::non_negative_f32, help_heading = "Grid")]
    pub alpha: Option<Vec<AxisEntry<f32>>>,
    /// Weights α₀ of every pair under --loss ials to try: values or ranges as for --lambda [default: 0.1].
    #[arg(long, value_name = "A0,..", value_delimiter = ',', num_args = 1.., value_parser = axis::non_negative_f32, help_heading = "Grid")]
    pub unobserved_weight: Option<Vec<AxisEntry<f32>>>,
    /// Exponents ν of --loss ials to try: values or ranges as for --lambda [default: 1].
    #[arg(long, value_name = "NU,..", value_delimiter = ',', num_args = 1.., value_parser = axis::non_negative_f32, help_heading = "Grid")]
    pub reg_exponent: Option<Vec<AxisEntry<f32>>>,
    /// Standard deviations σ of the Gaussian start to try: values or ranges as
    /// for --lambda [default: unit-length vectors].
    #[arg(long, value_name = "S,..", value_delimiter = ',', num_args = 1.., value_parser = axis::non_negative_f32, help_heading = "Grid")]
    pub init_std: Option<Vec<AxisEntry<f32>>>,
    /// Row solvers to try, comma separated (cholesky, cg, ialspp; sgd for
    /// ratings) [default: cholesky for explicit, cg for --implicit].
    #[arg(long, value_enum, value_name = "S,..", value_delimiter = ',', num_args = 1.., help_heading = "Grid")]
    pub solver: Option<Vec<SolverArg>>,
    /// Block sizes of --solver ialspp to try (for its settings only): values or
    /// ranges as for --factors [default: 16].
    #[arg(long, value_name = "B,..", value_delimiter = ',', num_args = 1.., value_parser = axis::positive_usize, help_heading = "Grid")]
    pub block_size: Option<Vec<AxisEntry<usize>>>,
    #[command(flatten)]
    pub model: ModelArgs,

    /// Every run trains on this cluster (default: in this process, no workers).
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Write the table (every setting, every fold, the best) to this JSON file, atomically.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub out_json: Option<PathBuf>,
    /// Train the best setting on every rating of --data and save that model here.
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    pub out: Option<PathBuf>,
    /// Replace an existing model directory given by --out.
    #[arg(long, requires = "out", help_heading = "Output")]
    pub overwrite: bool,
    #[command(flatten)]
    pub progress: ProgressArgs,
}

impl TuneArgs {
    /// The λ values of the grid, in the order given, each once.
    pub fn lambdas(&self) -> Vec<f32> {
        axis::values(&self.lambda)
    }

    /// The factor counts of the grid, in the order given, each once.
    pub fn factors(&self) -> Vec<usize> {
        axis::values(&self.factors)
    }

    /// The α values of the grid (`[None]` for explicit ratings and for
    /// --loss ials with observed weight one, where α is not read).
    pub fn alphas(&self) -> Vec<Option<f32>> {
        match (&self.alpha, self.model.implicit) {
            (Some(a), _) => axis::values(a).into_iter().map(Some).collect(),
            (None, true) if !self.model.is_ials() || self.model.confidence_weights() => vec![Some(DEFAULT_ALPHA)],
            (None, _) => vec![None],
        }
    }

    /// The α₀ values of the grid (`[None]` unless --loss ials).
    pub fn unobserved_weights(&self) -> Vec<Option<f32>> {
        match (&self.unobserved_weight, self.model.is_ials()) {
            (Some(a), _) => axis::values(a).into_iter().map(Some).collect(),
            (None, true) => vec![Some(DEFAULT_UNOBSERVED_WEIGHT)],
            (None, false) => vec![None],
        }
    }

    /// Every axis of the grid; an axis not given is `[None]` (its default).
    pub fn axes(&self) -> Axes {
        fn given<T: Copy + PartialEq>(axis: &Option<Vec<AxisEntry<T>>>) -> Vec<Option<T>> {
            axis.as_ref()
                .map_or(vec![None], |a| axis::values(a).into_iter().map(Some).collect())
        }
        Axes {
            lambdas: self.lambdas(),
            factors: self.factors(),
            alphas: self.alphas(),
            unobserved_weights: self.unobserved_weights(),
            reg_exponents: given(&self.reg_exponent),
            init_stds: given(&self.init_std),
            solvers: self.solvers(),
            block_sizes: given(&self.block_size),
        }
    }

    /// The solver axis, each value once (`[None]`: the feedback's default solver).
    pub fn solvers(&self) -> Vec<Option<SolverArg>> {
        match &self.solver {
            None => vec![None],
            Some(list) => axis::distinct(list.iter().map(|&s| Some(s))),
        }
    }

    /// The solver `train` would use: the one given when only one is, else the feedback's default.
    fn default_solver(&self) -> Option<SolverArg> {
        match self.solvers().as_slice() {
            [one] => *one,
            _ => Some(self.model.solver_arg(Setting::new(DEFAULT_LAMBDA, DEFAULT_FACTORS))),
        }
    }

    /// The setting `train` uses with these flags and no model values: the
    /// grid's reference point.
    pub fn default_point(&self) -> Setting {
        // Axes that are given name their default explicitly, so a grid that
        // lists the default value finds it. λ does not apply to Gibbs, whose
        // settings take the grid's first λ (see `expand`).
        let lambda = match self.default_solver() {
            Some(SolverArg::Gibbs) => self.lambdas().first().copied().unwrap_or(DEFAULT_LAMBDA),
            _ => DEFAULT_LAMBDA,
        };
        Setting {
            alpha: self.alphas()[0].map(|_| DEFAULT_ALPHA),
            unobserved_weight: self.unobserved_weights()[0].map(|_| DEFAULT_UNOBSERVED_WEIGHT),
            reg_exponent: self.reg_exponent.as_ref().map(|_| DEFAULT_REG_EXPONENT),
            solver: self.default_solver(),
            block_size: self
                .block_size
                .as_ref()
                .filter(|_| self.default_solver() == Some(SolverArg::Ialspp))
                .map(|_| DEFAULT_BLOCK_SIZE),
            ..Setting::new(lambda, DEFAULT_FACTORS)
        }
    }

    /// The configuration of one grid point. Runs evaluate once, at the end
    /// (after every iteration with --patience), and skip the objective: tune
    /// reports fold scores only.
    pub fn train_config(&self, point: Setting) -> anyhow::Result<TrainConfig> {
        let cadence = Cadence {
            eval_every: usize::from(self.patience.is_some()),
            objective_every: 0,
        };
        let solvers: Vec<SolverArg> = self
            .solvers()
            .into_iter()
            .map(|s| self.model.solver_arg(Setting { solver: s, ..point }))
            .collect();
        self.model.check_solver_flags(&solvers, self.block_size.is_some())?;
        self.model.config_at(point, &self.metrics, cadence)
    }

    /// How --data is read (no timestamps: folds are seeded, not temporal).
    pub fn load_options(&self) -> anyhow::Result<LoadOptions> {
        let load = self.layout.load_options(None);
        check_columns(&load)?;
        Ok(load)
    }

    pub fn duplicate_policy(&self) -> DuplicatePolicy {
        self.layout.duplicate_policy(self.model.implicit)
    }

    /// Where every run trains: in this process unless a cluster is named.
    pub fn executor(&self, cfg: &TrainConfig) -> anyhow::Result<ExecutorChoice> {
        let choice = self.cluster.executor_choice(ExecutorChoice::InProcess)?;
        executor_for_learner(cfg, self.cluster.cluster_given(), choice)
    }

    /// The final fit: the chosen setting on every rating of --data, saved to
    /// `dir`, for `iterations` where early stopping chose them.
    pub fn final_fit_job(&self, point: Setting, iterations: Option<usize>, dir: PathBuf) -> anyhow::Result<TrainJob> {
        let mut cfg = self.train_config(point)?;
        if let Some(n) = iterations {
            cfg.iterations = n;
        }
        Ok(TrainJob {
            executor: self.executor(&cfg)?,
            input: InputSpec {
                source: DataSource::File(self.data.clone()),
                load: self.load_options()?,
                test: TestSource::None,
                duplicates: self.duplicate_policy(),
                seed: self.seed.split_seed,
            },
            cfg,
            token: self.cluster.token()?,
            tls: self.cluster.tls()?,
            worker_timeout: self.cluster.worker_timeout(),
            refit_on_all: false,
            checkpoint: None,
            output: Some(ModelOutput {
                dir,
                overwrite: self.overwrite,
            }),
            metrics_json: None,
            quiet: self.progress.quiet,
            who_reads: self.cluster.who_reads(),
        })
    }
}
