//! Command-line definitions (clap derive) and their translation into core
//! settings: [`LoadOptions`], the test source, [`TrainConfig`] and the
//! executor choice.
//!
//! `coordinator` with no subcommand trains; the train flags live at the top
//! level, so `coordinator --data r.csv --factors 32` works as is.

use std::path::PathBuf;

use als_core::blocks::DEFAULT_BLOCKS;
use als_core::data::synth::SynthSpec;
use als_core::data::{DuplicatePolicy, Format, LoadOptions};
use als_core::linalg::Backend;
use als_core::solve::{Confidence, RegScaling, SolverKind};
use als_core::train::{ImplicitConfig, Learner, TrainConfig, DEFAULT_LEARNING_RATE};
use anyhow::bail;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// The command line of `coordinator`.
#[derive(Parser, Debug)]
#[command(
    name = "coordinator",
    version,
    about = "ALS matrix factorization: train on ratings or implicit feedback, then recommend",
    long_about = "ALS matrix factorization: train on ratings or implicit feedback, then recommend.\n\n\
                  With no subcommand it trains (on --data, or on an embedded synthetic dataset).",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Every info log line on a terminal too (handshakes, block moves, timings); RUST_LOG overrides.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub train: TrainArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a synthetic low-rank ratings file (CSV `user,item,rating`).
    Generate(GenerateArgs),
    /// Top-N items for a user (or for every user with --all) from a saved model.
    Recommend(RecommendArgs),
    /// Items (or users) most similar to one, by cosine over the factors.
    Similar(SimilarArgs),
    /// k-fold cross-validation over a grid of --lambda, --factors (and --alpha): a table, the best marked.
    Tune(Box<crate::tune_cmd::TuneArgs>),
    /// Add users to a saved model from a ratings file (fold-in), as a new model version.
    FoldIn(crate::fold_in_cmd::FoldInArgs),
    /// Answer recommendations over HTTP/JSON from a saved model.
    Serve(crate::serve::ServeArgs),
}

/// Input file layouts (`--format`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatArg {
    /// Guess from the file name and the first line.
    #[default]
    Auto,
    /// MovieLens 100k u.data: TAB separated user item rating timestamp.
    #[value(name = "ml-100k")]
    Ml100k,
    /// MovieLens 1M/10M ratings.dat: user::item::rating::timestamp.
    #[value(name = "ml-1m")]
    Ml1m,
    /// MovieLens latest/20M/25M ratings.csv with its header.
    #[value(name = "ml-latest")]
    MlLatest,
    Csv,
    Tsv,
    /// Runs of spaces and/or tabs.
    Whitespace,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Auto => Format::Auto,
            FormatArg::Ml100k => Format::Ml100k,
            FormatArg::Ml1m => Format::Ml1m,
            FormatArg::MlLatest => Format::MlLatest,
            FormatArg::Csv => Format::Csv,
            FormatArg::Tsv => Format::Tsv,
            FormatArg::Whitespace => Format::Whitespace,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuplicatesArg {
    /// The later line wins.
    Last,
    /// The earlier line wins.
    First,
    /// Values add up.
    Sum,
}

impl From<DuplicatesArg> for DuplicatePolicy {
    fn from(d: DuplicatesArg) -> Self {
        match d {
            DuplicatesArg::Last => DuplicatePolicy::Last,
            DuplicatesArg::First => DuplicatePolicy::First,
            DuplicatesArg::Sum => DuplicatePolicy::Sum,
        }
    }
}

/// How the test set is held out of `--data` (`--split`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitArg {
    /// Seeded random holdout of --test-ratio of the rows (the reference protocol).
    #[default]
    Ratio,
    /// --test-ratio of each user's ratings.
    PerUser,
    /// The latest --test-ratio of the rows by timestamp.
    Temporal,
    /// Fold --fold of --folds seeded folds.
    Kfold,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegScalingArg {
    /// λ times the row's rating count (ALS-WR, as Spark does).
    #[default]
    Count,
    /// Plain λ (as `implicit` does).
    None,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConfidenceArg {
    /// c = 1 + α·r.
    #[default]
    Linear,
    /// c = 1 + α·ln(1 + r/ε).
    Log,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolverArg {
    /// Exact normal equations (default for explicit ratings).
    Cholesky,
    /// Warm-started conjugate gradient (implicit feedback; default there).
    Cg,
    /// Stochastic gradient descent on the explicit biased model (Surprise's SVD updates,
    /// DSGD over the blocks, in this process); --iterations counts epochs.
    Sgd,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendArg {
    /// Pure Rust dense kernels.
    #[default]
    Faer,
    /// ndarray-linalg over the system LAPACK (needs a build with the `lapack` feature).
    Lapack,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!("must be strictly between 0 and 1, got {s}"))
    }
}

fn parse_non_negative_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s.trim().parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("must be a finite number >= 0, got {s}"))
    }
}

fn parse_positive_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s.trim().parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("must be a finite number > 0, got {s}"))
    }
}

fn parse_finite_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s.trim().parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("must be a finite number, got {s}"))
    }
}

fn parse_positive_usize(s: &str) -> Result<usize, String> {
    let v: usize = s.trim().parse().map_err(|_| format!("'{s}' is not a non-negative integer"))?;
    if v > 0 {
        Ok(v)
    } else {
        Err("must be at least 1".into())
    }
}

/// Flags of a training run (the default command).
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    // ---------------------------------------------------------------- data
    /// Ratings file; without it, train on the embedded synthetic dataset.
    #[arg(long, value_name = "FILE", help_heading = "Data")]
    pub data: Option<PathBuf>,
    /// Layout of the ratings file(s).
    #[arg(long, value_enum, default_value_t = FormatArg::Auto, help_heading = "Data")]
    pub format: FormatArg,
    /// The first line is a header (default: detected).
    #[arg(long, conflicts_with = "no_header", help_heading = "Data")]
    pub header: bool,
    /// The first line is data (default: detected).
    #[arg(long, help_heading = "Data")]
    pub no_header: bool,
    /// 0-based column of the user id.
    #[arg(long, default_value_t = 0, value_name = "N", help_heading = "Data")]
    pub user_col: usize,
    /// 0-based column of the item id.
    #[arg(long, default_value_t = 1, value_name = "N", help_heading = "Data")]
    pub item_col: usize,
    /// 0-based column of the rating [default: 2].
    #[arg(long, value_name = "N", conflicts_with = "no_rating_col", help_heading = "Data")]
    pub rating_col: Option<usize>,
    /// No rating column: an event log where every line counts 1.
    #[arg(long, help_heading = "Data")]
    pub no_rating_col: bool,
    /// 0-based column of an integer timestamp [default: 3 with --split temporal, else none].
    #[arg(long, value_name = "N", help_heading = "Data")]
    pub timestamp_col: Option<usize>,
    /// Skip malformed lines (and report how many) instead of stopping.
    #[arg(long, help_heading = "Data")]
    pub skip_invalid: bool,
    /// Repeated (user, item) pairs [default: last for explicit ratings, sum for --implicit].
    #[arg(long, value_enum, help_heading = "Data")]
    pub duplicates: Option<DuplicatesArg>,

    // ---------------------------------------------------------------- test
    /// Explicit test file (read with the same options as --data); --data is then all training.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["test_ratio", "split", "folds", "fold", "no_test"], help_heading = "Evaluation")]
    pub test: Option<PathBuf>,
    /// Fraction of --data held out for testing [default: 0.2].
    #[arg(long, value_name = "F", value_parser = parse_ratio, help_heading = "Evaluation")]
    pub test_ratio: Option<f64>,
    /// How the test set is held out of --data.
    #[arg(long, value_enum, help_heading = "Evaluation")]
    pub split: Option<SplitArg>,
    /// Number of folds of --split kfold [default: 5].
    #[arg(long, value_name = "N", help_heading = "Evaluation")]
    pub folds: Option<usize>,
    /// Which fold of --split kfold is the test set (0-based) [default: 0].
    #[arg(long, value_name = "I", help_heading = "Evaluation")]
    pub fold: Option<usize>,
    /// Train on every row of --data; no evaluation.
    #[arg(long, conflicts_with_all = ["test_ratio", "split", "folds", "fold"], help_heading = "Evaluation")]
    pub no_test: bool,
    /// Evaluate every N iterations (0: after the last one only).
    #[arg(long, default_value_t = 1, value_name = "N", help_heading = "Evaluation")]
    pub eval_every: usize,
    /// Compute the training objective and train RMSE every N iterations (0:
    /// never; a pass over every rating that changes no factor).
    #[arg(long, default_value_t = als_core::train::DEFAULT_OBJECTIVE_EVERY, value_name = "N", help_heading = "Evaluation")]
    pub objective_every: usize,
    /// Ranking cutoff K of precision/recall/MAP/NDCG@K.
    #[arg(long, default_value_t = 10, value_name = "K", value_parser = parse_positive_usize, help_heading = "Evaluation")]
    pub k: usize,
    /// Test rows with a value >= this are relevant for the ranking metrics.
    #[arg(long, default_value_t = 1.0, value_name = "V", value_parser = parse_finite_f32, help_heading = "Evaluation")]
    pub min_pos: f32,
    /// RMSE/MAE on raw predictions (default: clipped to the training rating range).
    #[arg(long, help_heading = "Evaluation")]
    pub no_clip: bool,

    // ---------------------------------------------------------------- model
    /// Latent factors k.
    #[arg(long, default_value_t = 64, value_name = "K", value_parser = parse_positive_usize, help_heading = "Model")]
    pub factors: usize,
    /// ALS iterations (each solves users, then items).
    #[arg(long, default_value_t = 15, value_name = "N", value_parser = parse_positive_usize, help_heading = "Model")]
    pub iterations: usize,
    /// Regularization λ (scaled per row by --reg-scaling; default Spark's 0.1).
    #[arg(long, default_value_t = 0.1, allow_hyphen_values = true, value_name = "L", value_parser = parse_non_negative_f32, help_heading = "Model")]
    pub lambda: f32,
    /// How λ scales with a row's rating count.
    #[arg(long, value_enum, default_value_t = RegScalingArg::Count, help_heading = "Model")]
    pub reg_scaling: RegScalingArg,
    /// Implicit feedback (Hu, Koren & Volinsky): values are confidences, ranking metrics.
    #[arg(long, help_heading = "Model")]
    pub implicit: bool,
    /// Confidence scale α of --implicit [default: 40].
    #[arg(long, value_name = "A", requires = "implicit", value_parser = parse_non_negative_f32, help_heading = "Model")]
    pub alpha: Option<f32>,
    /// Confidence of --implicit [default: linear].
    #[arg(long, value_enum, requires = "implicit", help_heading = "Model")]
    pub confidence: Option<ConfidenceArg>,
    /// ε of --confidence log [default: 1.0].
    #[arg(long, value_name = "E", requires = "implicit", value_parser = parse_positive_f32, help_heading = "Model")]
    pub epsilon: Option<f32>,
    /// Row solver [default: cholesky for explicit, cg for --implicit].
    #[arg(long, value_enum, help_heading = "Model")]
    pub solver: Option<SolverArg>,
    /// Conjugate-gradient steps per row of --solver cg [default: 3].
    #[arg(long, value_name = "N", value_parser = parse_positive_usize, help_heading = "Model")]
    pub cg_steps: Option<usize>,
    /// Step size γ of --solver sgd [default: 0.005, Surprise's lr_all].
    #[arg(long, value_name = "G", value_parser = parse_positive_f32, help_heading = "Model")]
    pub learning_rate: Option<f32>,
    /// Explicit model without the global mean and biases (r̂ = pᵤ·qᵢ).
    #[arg(long, conflicts_with = "implicit", help_heading = "Model")]
    pub no_biases: bool,
    /// Seed of the initial factors.
    #[arg(long, default_value_t = 42, help_heading = "Model")]
    pub seed: u64,
    /// Seed of the train/test split (42 is the reference tools' protocol split).
    #[arg(long, default_value_t = 42, help_heading = "Evaluation")]
    pub split_seed: u64,

    // ---------------------------------------------------------------- execution
    /// Size of the thread pool [default: all cores].
    #[arg(long, value_name = "N", value_parser = parse_positive_usize, help_heading = "Execution")]
    pub threads: Option<usize>,
    /// Blocks per side (fixed by the data, not by the cluster size).
    #[arg(long, default_value_t = DEFAULT_BLOCKS, value_name = "N", value_parser = parse_positive_usize, help_heading = "Execution")]
    pub blocks: usize,
    /// Dense kernel backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Faer, help_heading = "Execution")]
    pub backend: BackendArg,
    /// Train on these workers (HOST:PORT, comma separated).
    #[arg(long, value_name = "ADDRS", value_delimiter = ',', num_args = 1.., conflicts_with_all = ["local", "in_process"], help_heading = "Execution")]
    pub workers: Option<Vec<String>>,
    /// Start N workers in this process on loopback [default: one per core].
    #[arg(long, value_name = "N", conflicts_with = "in_process", help_heading = "Execution")]
    pub local: Option<usize>,
    /// Train in this process without workers or gRPC.
    #[arg(long, help_heading = "Execution")]
    pub in_process: bool,
    /// File holding the cluster token (else the ALS_TOKEN environment variable).
    #[arg(long, value_name = "FILE", help_heading = "Execution")]
    pub token_file: Option<PathBuf>,

    // ---------------------------------------------------------------- output
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
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = parse_positive_usize, help_heading = "Output")]
    pub checkpoint_every: usize,
    /// Continue from the newest valid checkpoint in --checkpoint-dir (refused if it was written for other data or settings).
    #[arg(long, requires = "checkpoint_dir", help_heading = "Output")]
    pub resume: bool,
    /// PEM CA that signs the workers' certificates: talk to --workers over TLS.
    #[arg(long, value_name = "FILE", help_heading = "Execution")]
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate of this coordinator, for workers that require mutual TLS (with --tls-key).
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"], help_heading = "Execution")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert", help_heading = "Execution")]
    pub tls_key: Option<PathBuf>,
    /// Name the workers' certificates are checked against (default: the host of each address).
    #[arg(long, value_name = "NAME", requires = "tls_ca", help_heading = "Execution")]
    pub tls_domain: Option<String>,
    /// Seconds a worker may leave a health check unanswered before its blocks move to the others.
    #[arg(long, default_value_t = 5.0, value_name = "S", help_heading = "Execution")]
    pub worker_timeout: f64,
    /// No progress bar.
    #[arg(long, help_heading = "Output")]
    pub quiet: bool,
}

impl TrainArgs {
    /// Read options for `--data` and `--test`.
    ///
    /// Timestamps are read only when asked for (`--timestamp-col`) or needed
    /// (`--split temporal`, then column 3 by default, the MovieLens layout),
    /// so an unrelated fourth column never stops a load.
    pub fn load_options(&self) -> LoadOptions {
        let defaults = LoadOptions::default();
        let timestamp_col = self.timestamp_col.or_else(|| {
            (self.split == Some(SplitArg::Temporal) && self.test.is_none())
                .then_some(defaults.timestamp_col)
                .flatten()
        });
        LoadOptions {
            format: self.format.into(),
            header: if self.header {
                Some(true)
            } else if self.no_header {
                Some(false)
            } else {
                None
            },
            user_col: self.user_col,
            item_col: self.item_col,
            rating_col: if self.no_rating_col {
                None
            } else {
                Some(self.rating_col.unwrap_or(2))
            },
            timestamp_col,
            skip_invalid: self.skip_invalid,
            ..defaults
        }
    }

    /// Column numbers must name distinct columns.
    pub fn validate_columns(&self) -> anyhow::Result<()> {
        let o = self.load_options();
        let mut named = vec![("--user-col", o.user_col), ("--item-col", o.item_col)];
        if let Some(r) = o.rating_col {
            named.push(("--rating-col", r));
        }
        if let Some(t) = o.timestamp_col {
            named.push(("--timestamp-col", t));
        }
        for (a, (na, ca)) in named.iter().enumerate() {
            for (nb, cb) in &named[a + 1..] {
                if ca == cb {
                    bail!("{na} and {nb} both name column {ca}");
                }
            }
        }
        Ok(())
    }

    /// The duplicate rule: `--duplicates`, else last for explicit and sum for implicit.
    pub fn duplicate_policy(&self) -> DuplicatePolicy {
        match self.duplicates {
            Some(d) => d.into(),
            None if self.implicit => DuplicatePolicy::Sum,
            None => DuplicatePolicy::Last,
        }
    }

    /// Where the test set comes from.
    pub fn test_source(&self) -> anyhow::Result<TestSource> {
        if let Some(t) = &self.test {
            return Ok(TestSource::File(t.clone()));
        }
        if self.no_test {
            return Ok(TestSource::None);
        }
        let split = self.split.unwrap_or_default();
        if split != SplitArg::Kfold && (self.folds.is_some() || self.fold.is_some()) {
            bail!("--folds and --fold apply to --split kfold only");
        }
        let ratio = self.test_ratio.unwrap_or(0.2);
        Ok(TestSource::Split(match split {
            SplitArg::Ratio => SplitChoice::Ratio(ratio),
            SplitArg::PerUser => SplitChoice::PerUser(ratio),
            SplitArg::Temporal => SplitChoice::Temporal(ratio),
            SplitArg::Kfold => {
                if self.test_ratio.is_some() {
                    bail!("--test-ratio does not apply to --split kfold (the test set is one of --folds folds)");
                }
                let folds = self.folds.unwrap_or(5);
                let fold = self.fold.unwrap_or(0);
                if folds < 2 {
                    bail!("--folds must be at least 2, got {folds}");
                }
                if fold >= folds {
                    bail!("--fold must be in 0..{folds} (0-based), got {fold}");
                }
                SplitChoice::KFold { folds, fold }
            }
        }))
    }

    /// The training configuration, validated.
    pub fn train_config(&self) -> anyhow::Result<TrainConfig> {
        let solver_arg = self
            .solver
            .unwrap_or(if self.implicit { SolverArg::Cg } else { SolverArg::Cholesky });
        if !self.implicit && solver_arg == SolverArg::Cg {
            bail!("--solver cg applies to implicit feedback (--implicit); explicit ratings use cholesky");
        }
        if self.cg_steps.is_some() && solver_arg != SolverArg::Cg {
            bail!("--cg-steps applies to --solver cg only");
        }
        if self.epsilon.is_some() && self.confidence != Some(ConfidenceArg::Log) {
            bail!("--epsilon applies to --confidence log only");
        }
        if self.learning_rate.is_some() && solver_arg != SolverArg::Sgd {
            bail!("--learning-rate applies to --solver sgd only");
        }
        if self.implicit && solver_arg == SolverArg::Sgd {
            bail!("--solver sgd learns explicit ratings only; for --implicit use --solver cg or cholesky");
        }
        let solver = match solver_arg {
            // SGD solves no rows; the field keeps its explicit default.
            SolverArg::Cholesky | SolverArg::Sgd => SolverKind::Cholesky,
            SolverArg::Cg => SolverKind::Cg {
                steps: self.cg_steps.unwrap_or(3),
            },
        };
        let learner = match solver_arg {
            SolverArg::Sgd => Learner::Sgd {
                learning_rate: self.learning_rate.unwrap_or(DEFAULT_LEARNING_RATE),
            },
            SolverArg::Cholesky | SolverArg::Cg => Learner::Als,
        };
        let implicit = self.implicit.then(|| ImplicitConfig {
            alpha: self.alpha.unwrap_or(40.0),
            confidence: match self.confidence.unwrap_or_default() {
                ConfidenceArg::Linear => Confidence::Linear,
                ConfidenceArg::Log => Confidence::Log {
                    epsilon: self.epsilon.unwrap_or(1.0),
                },
            },
        });
        let backend: Backend = match self.backend {
            BackendArg::Faer => Backend::Faer,
            // Core refuses `lapack` with a clear message when the build lacks the feature.
            BackendArg::Lapack => "lapack".parse::<Backend>().map_err(|e| anyhow::anyhow!("--backend {e}"))?,
        };
        let cfg = TrainConfig {
            factors: self.factors,
            iterations: self.iterations,
            lambda: self.lambda,
            reg_scaling: match self.reg_scaling {
                RegScalingArg::Count => RegScaling::Count,
                RegScalingArg::None => RegScaling::None,
            },
            implicit,
            biased: !self.no_biases,
            solver,
            learner,
            seed: self.seed,
            blocks: self.blocks,
            backend,
            eval_every: self.eval_every,
            objective_every: self.objective_every,
            ranking_k: self.k,
            min_pos: self.min_pos,
            clip_predictions: !self.no_clip,
        };
        cfg.validate().map_err(|e| anyhow::anyhow!("invalid training settings: {e}"))?;
        Ok(cfg)
    }

    /// Which executor the flags ask for (`cores` = the default `--local` size).
    pub fn executor_choice(&self, cores: usize) -> anyhow::Result<ExecutorChoice> {
        ExecutorChoice::resolve(self.in_process, self.workers.as_deref(), self.local, cores)
    }

    /// The cluster token: --token-file, else ALS_TOKEN (None when neither is set).
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        Ok(als_proto::token::resolve_token_from_env(self.token_file.as_deref())?)
    }
}

pub use als_proto::token::resolve_token;

/// Held-out split of one file (the core [`als_core::data::SplitSpec`] is built from it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SplitChoice {
    Ratio(f64),
    PerUser(f64),
    Temporal(f64),
    KFold { folds: usize, fold: usize },
}

/// What the saved model is trained on (see `--final-fit`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalFit {
    /// Every rating of the input: the held-out rows too.
    All,
    /// The training split of the evaluated run.
    Train,
}

impl TrainArgs {
    /// Whether the saved model is refit on all ratings after the evaluated run:
    /// only when the tool made the split itself and a model is saved.
    pub fn refit_on_all(&self) -> anyhow::Result<bool> {
        let split_here = matches!(self.test_source()?, TestSource::Split(_));
        match self.final_fit {
            Some(FinalFit::All) if self.test.is_some() => {
                bail!("--final-fit all: with --test FILE the training set is --data as given; drop --final-fit")
            }
            Some(FinalFit::All) => Ok(split_here),
            Some(FinalFit::Train) => Ok(false),
            None => Ok(split_here && self.out.is_some()),
        }
    }
}

/// Where the test rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TestSource {
    /// No test set: train on everything.
    None,
    /// A separate file.
    File(PathBuf),
    /// Held out of the training data.
    Split(SplitChoice),
}

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
    pub fn resolve(in_process: bool, workers: Option<&[String]>, local: Option<usize>, cores: usize) -> anyhow::Result<ExecutorChoice> {
        let given = [in_process, workers.is_some(), local.is_some()].iter().filter(|&&b| b).count();
        if given > 1 {
            bail!("--in-process, --workers and --local exclude each other; give at most one");
        }
        if in_process {
            return Ok(ExecutorChoice::InProcess);
        }
        if let Some(ws) = workers {
            let addrs: Vec<String> = ws.iter().map(|w| w.trim().to_string()).collect();
            if addrs.is_empty() || addrs.iter().any(String::is_empty) {
                bail!("--workers needs a comma-separated list of HOST:PORT addresses without empty entries");
            }
            for a in &addrs {
                match a.rsplit_once(':') {
                    Some((_, port)) if port.parse::<u16>().is_ok() => {}
                    _ => bail!("--workers: '{a}' is not HOST:PORT"),
                }
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(d) = addrs.iter().find(|a| !seen.insert(a.as_str())) {
                bail!("--workers lists {d} twice");
            }
            return Ok(ExecutorChoice::Workers(addrs));
        }
        match local {
            Some(0) => bail!("--local needs at least 1 worker"),
            Some(n) => Ok(ExecutorChoice::Local(n)),
            None => Ok(ExecutorChoice::Local(cores.max(1))),
        }
    }

    /// The name written to the metrics JSON: `in-process`, `local:N` or `workers:a,b`.
    pub fn label(&self) -> String {
        match self {
            ExecutorChoice::InProcess => "in-process".into(),
            ExecutorChoice::Local(n) => format!("local:{n}"),
            ExecutorChoice::Workers(ws) => format!("workers:{}", ws.join(",")),
        }
    }
}

/// `coordinator generate`.
#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Output CSV file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Number of users.
    #[arg(long, value_name = "N", default_value_t = SynthSpec::small_default().users, value_parser = parse_positive_usize)]
    pub users: usize,
    /// Number of items.
    #[arg(long, value_name = "N", default_value_t = SynthSpec::small_default().items, value_parser = parse_positive_usize)]
    pub items: usize,
    /// Number of ratings (distinct user-item pairs; at most half of users × items).
    #[arg(long, value_name = "N", default_value_t = SynthSpec::small_default().ratings)]
    pub ratings: u64,
    /// Rank of the ground truth.
    #[arg(long, default_value_t = 16, value_name = "R", value_parser = parse_positive_usize)]
    pub rank: usize,
    /// Standard deviation of the Gaussian noise added to each rating.
    #[arg(long, default_value_t = 0.5, value_name = "S", value_parser = parse_non_negative_f32)]
    pub noise: f32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Continuous ratings (default: rounded to the 1..5 star scale).
    #[arg(long)]
    pub continuous: bool,
    /// Replace an existing output file.
    #[arg(long)]
    pub overwrite: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `coordinator recommend`.
#[derive(Args, Debug, Clone)]
pub struct RecommendArgs {
    /// Model directory written by training with --out.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// User id as in the training data.
    #[arg(long, value_name = "ID", required_unless_present_any = ["all", "history"], conflicts_with_all = ["all", "history"])]
    pub user: Option<String>,
    /// A user not in the model: their history, one `item[,value]` per line (fold-in).
    #[arg(long, value_name = "FILE", conflicts_with = "all")]
    pub history: Option<PathBuf>,
    /// Number of recommendations.
    #[arg(short = 'n', long = "num", default_value_t = 10, value_name = "N", value_parser = parse_positive_usize)]
    pub n: usize,
    /// Keep items the user already rated.
    #[arg(long)]
    pub include_seen: bool,
    /// Only recommend among these items (one id per line).
    #[arg(long, value_name = "FILE")]
    pub items: Option<PathBuf>,
    /// One JSON object per line instead of a table (single user).
    #[arg(long, conflicts_with = "all")]
    pub json: bool,
    /// Recommend for every user of the model into --out.
    #[arg(long, requires = "out")]
    pub all: bool,
    /// Output of --all: CSV `user,rank,item,score`, or JSON lines when it ends in .json/.jsonl
    /// (its directory must exist).
    #[arg(long, value_name = "FILE", requires = "all")]
    pub out: Option<PathBuf>,
    /// Replace an existing --out file.
    #[arg(long, requires = "out")]
    pub overwrite: bool,
}

/// `coordinator similar`.
#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("query").required(true).args(["item", "user"])))]
pub struct SimilarArgs {
    /// Model directory written by training with --out.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Items similar to this item.
    #[arg(long, value_name = "ID")]
    pub item: Option<String>,
    /// Users similar to this user.
    #[arg(long, value_name = "ID")]
    pub user: Option<String>,
    /// Number of results.
    #[arg(short = 'n', long = "num", default_value_t = 10, value_name = "N", value_parser = parse_positive_usize)]
    pub n: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}
