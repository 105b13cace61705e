//! Flags of `coordinator tune`, and the training flags of one grid point.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser};

use crate::cli::{ConfidenceArg, DuplicatesArg, FormatArg, RegScalingArg, SolverArg, TrainArgs};

fn parse_list_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s.trim().parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("must be a finite number >= 0, got {s}"))
    }
}

fn parse_list_usize(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive integer")),
    }
}

fn parse_folds(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(v) if v >= 2 => Ok(v),
        _ => Err(format!("must be an integer >= 2, got {s}")),
    }
}

/// `coordinator tune`: k-fold cross-validation over a grid of λ, factors (and α).
#[derive(Args, Debug, Clone)]
pub struct TuneArgs {
    /// Ratings file; every rating is in the test fold exactly once.
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Layout of the ratings file.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub format: FormatArg,
    /// The first line is a header (default: detected).
    #[arg(long, conflicts_with = "no_header")]
    pub header: bool,
    /// The first line is data (default: detected).
    #[arg(long)]
    pub no_header: bool,
    /// 0-based column of the user id.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub user_col: usize,
    /// 0-based column of the item id.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub item_col: usize,
    /// 0-based column of the rating [default: 2].
    #[arg(long, value_name = "N", conflicts_with = "no_rating_col")]
    pub rating_col: Option<usize>,
    /// No rating column: an event log where every line counts 1.
    #[arg(long)]
    pub no_rating_col: bool,
    /// Skip malformed lines instead of stopping.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Repeated (user, item) pairs [default: last for explicit ratings, sum for --implicit].
    #[arg(long, value_enum)]
    pub duplicates: Option<DuplicatesArg>,
    /// Number of folds.
    #[arg(long, default_value_t = 5, value_name = "N", value_parser = parse_folds)]
    pub folds: usize,
    /// Seed of the fold assignment.
    #[arg(long, default_value_t = 42)]
    pub split_seed: u64,

    /// λ values to try (comma separated).
    #[arg(long, value_name = "L,..", value_delimiter = ',', num_args = 1.., default_value = "0.1", value_parser = parse_list_f32)]
    pub lambda: Vec<f32>,
    /// Factor counts to try (comma separated).
    #[arg(long, value_name = "K,..", value_delimiter = ',', num_args = 1.., default_value = "64", value_parser = parse_list_usize)]
    pub factors: Vec<usize>,
    /// Confidence scales α of --implicit to try (comma separated) [default: 40].
    #[arg(long, value_name = "A,..", value_delimiter = ',', num_args = 1.., requires = "implicit", value_parser = parse_list_f32)]
    pub alpha: Option<Vec<f32>>,
    /// Iterations (SGD: epochs) of every run.
    #[arg(long, default_value_t = 15, value_name = "N", value_parser = parse_list_usize)]
    pub iterations: usize,
    /// How λ scales with a row's rating count.
    #[arg(long, value_enum, default_value_t = RegScalingArg::Count)]
    pub reg_scaling: RegScalingArg,
    /// Implicit feedback: the metric is NDCG@K instead of RMSE.
    #[arg(long)]
    pub implicit: bool,
    /// Confidence of --implicit [default: linear].
    #[arg(long, value_enum, requires = "implicit")]
    pub confidence: Option<ConfidenceArg>,
    /// Learner [default: cholesky for explicit, cg for --implicit].
    #[arg(long, value_enum)]
    pub solver: Option<SolverArg>,
    /// Conjugate-gradient steps per row of --solver cg [default: 3].
    #[arg(long, value_name = "N", value_parser = parse_list_usize)]
    pub cg_steps: Option<usize>,
    /// Step size γ of --solver sgd [default: 0.005].
    #[arg(long, value_name = "G")]
    pub learning_rate: Option<f32>,
    /// Explicit model without the global mean and biases.
    #[arg(long, conflicts_with = "implicit")]
    pub no_biases: bool,
    /// Seed of the initial factors.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Blocks per side.
    #[arg(long, value_name = "N", value_parser = parse_list_usize)]
    pub blocks: Option<usize>,
    /// Ranking cutoff K of NDCG@K (--implicit).
    #[arg(long, default_value_t = 10, value_name = "K", value_parser = parse_list_usize)]
    pub k: usize,
    /// Test rows with a value >= this are relevant for NDCG.
    #[arg(long, value_name = "V")]
    pub min_pos: Option<f32>,
    /// RMSE on raw predictions (default: clipped to the training rating range).
    #[arg(long)]
    pub no_clip: bool,

    /// Train each run on N in-process workers over gRPC (default: in this process, no workers).
    #[arg(long, value_name = "N", conflicts_with = "workers")]
    pub local: Option<usize>,
    /// Train each run on these workers (HOST:PORT, comma separated).
    #[arg(long, value_name = "ADDRS", value_delimiter = ',', num_args = 1..)]
    pub workers: Option<Vec<String>>,
    /// File holding the cluster token (else ALS_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Write the table (every setting, every fold, the best) to this JSON file, atomically.
    #[arg(long, value_name = "FILE")]
    pub out_json: Option<PathBuf>,
    /// Train the best setting on every rating of --data and save that model here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace an existing model directory given by --out.
    #[arg(long, requires = "out")]
    pub overwrite: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `TrainArgs` as clap fills it when no flag is given (the defaults of `coordinator`).
#[derive(Parser)]
struct TrainDefaults {
    #[command(flatten)]
    train: TrainArgs,
}

impl TuneArgs {
    /// The α values of the grid (`[None]` for explicit ratings).
    pub fn alphas(&self) -> Vec<Option<f32>> {
        match (&self.alpha, self.implicit) {
            (Some(a), _) => a.iter().map(|&x| Some(x)).collect(),
            (None, true) => vec![Some(40.0)],
            (None, false) => vec![None],
        }
    }

    /// The training flags of one grid point: `coordinator`'s defaults, these
    /// flags, and the point's λ, factors and α. Runs evaluate once, at the end.
    pub fn train_args(&self, lambda: f32, factors: usize, alpha: Option<f32>) -> anyhow::Result<TrainArgs> {
        let mut t = TrainDefaults::try_parse_from(["coordinator"])
            .context("the default training flags")?
            .train;
        t.data = Some(self.data.clone());
        t.format = self.format;
        t.header = self.header;
        t.no_header = self.no_header;
        t.user_col = self.user_col;
        t.item_col = self.item_col;
        t.rating_col = self.rating_col;
        t.no_rating_col = self.no_rating_col;
        t.skip_invalid = self.skip_invalid;
        t.duplicates = self.duplicates;
        t.lambda = lambda;
        t.factors = factors;
        t.alpha = alpha;
        t.iterations = self.iterations;
        t.reg_scaling = self.reg_scaling;
        t.implicit = self.implicit;
        t.confidence = self.confidence;
        t.solver = self.solver;
        t.cg_steps = self.cg_steps;
        t.learning_rate = self.learning_rate;
        t.no_biases = self.no_biases;
        t.seed = self.seed;
        if let Some(b) = self.blocks {
            t.blocks = b;
        }
        t.k = self.k;
        if let Some(m) = self.min_pos {
            t.min_pos = m;
        }
        t.no_clip = self.no_clip;
        t.eval_every = 0;
        // tune reports fold scores, never the objective.
        t.objective_every = 0;
        t.local = self.local;
        t.workers = self.workers.clone();
        t.in_process = self.local.is_none() && self.workers.is_none();
        t.token_file = self.token_file.clone();
        t.quiet = true;
        Ok(t)
    }
}
