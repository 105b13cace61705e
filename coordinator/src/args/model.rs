//! The model and solver flags shared by `train` and `tune`, and their
//! translation into a validated [`TrainConfig`]. Defaults come from
//! `als_core::train`, where each is declared once.

use als_core::blocks::DEFAULT_BLOCKS;
use als_core::linalg::Backend;
use als_core::solve::{Confidence, ImplicitLoss, RegScaling, SolverKind};
use als_core::train::{
    Field, ImplicitConfig, Learner, SettingError, TrainConfig, DEFAULT_ALPHA, DEFAULT_BLOCK_SIZE, DEFAULT_BURN_IN, DEFAULT_CG_STEPS,
    DEFAULT_ITERATIONS, DEFAULT_LEARNING_RATE, DEFAULT_LOG_EPSILON, DEFAULT_MIN_POS, DEFAULT_NOISE_PRECISION, DEFAULT_RANKING_K,
    DEFAULT_REG_EXPONENT, DEFAULT_SEED, DEFAULT_SWEEPS, DEFAULT_UNOBSERVED_WEIGHT,
};
use anyhow::bail;
use clap::{Args, ValueEnum};

use super::parse;

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

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LossArg {
    /// Hu, Koren & Volinsky: every pair weighted by its confidence 1 + α·r, 1 where unobserved.
    #[default]
    Hu,
    /// Rendle et al. 2022 (iALS): observed pairs weight 1 towards 1, every pair
    /// weight --unobserved-weight towards 0, λ·(n + α₀·N)^--reg-exponent per row.
    Ials,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ObservedWeightArg {
    /// 1, as Rendle et al.
    #[default]
    One,
    /// The confidence of --confidence and --alpha.
    Confidence,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SolverArg {
    /// Exact normal equations (default for explicit ratings).
    Cholesky,
    /// Warm-started conjugate gradient (implicit feedback; default there).
    Cg,
    /// iALS++ subspace solves (implicit feedback; Rendle et al. 2021): blocks of
    /// --block-size coordinates, each solved exactly, --sweeps passes per row.
    Ialspp,
    /// Stochastic gradient descent on the explicit biased model (Surprise's SVD updates,
    /// DSGD over the blocks, in this process); --iterations counts epochs.
    Sgd,
    /// Bayesian PMF by Gibbs sampling (explicit ratings; Salakhutdinov & Mnih 2008): rows
    /// drawn from their posteriors under a learned prior, the model the mean of the draws
    /// after --burn-in; in this process. --lambda does not apply.
    Gibbs,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendArg {
    /// Pure Rust dense kernels.
    #[default]
    Faer,
    /// ndarray-linalg over the system LAPACK (needs a build with the `lapack` feature).
    Lapack,
}

/// How the model is learned, apart from the grid axes (λ, factors, α, α₀, ν,
/// the start's σ, the solver and iALS++'s block size: [`ModelPoint`]).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Model")]
pub struct ModelArgs {
    /// ALS iterations (each solves users, then items; SGD: epochs).
    #[arg(long, default_value_t = DEFAULT_ITERATIONS, value_name = "N", value_parser = parse::positive_usize)]
    pub iterations: usize,
    /// How λ scales with a row's rating count [default: count; --loss ials
    /// scales it by --reg-exponent instead].
    #[arg(long, value_enum)]
    pub reg_scaling: Option<RegScalingArg>,
    /// Implicit feedback (Hu, Koren & Volinsky): values are confidences, ranking metrics.
    #[arg(long)]
    pub implicit: bool,
    /// Loss of --implicit [default: hu].
    #[arg(long, value_enum, requires = "implicit")]
    pub loss: Option<LossArg>,
    /// Weight of an observed pair under --loss ials [default: one].
    #[arg(long, value_enum)]
    pub observed_weight: Option<ObservedWeightArg>,
    /// Confidence of --implicit [default: linear].
    #[arg(long, value_enum, requires = "implicit")]
    pub confidence: Option<ConfidenceArg>,
    /// ε of --confidence log [default: 1.0].
    #[arg(long, value_name = "E", requires = "implicit", value_parser = parse::positive_f32)]
    pub epsilon: Option<f32>,
    /// Conjugate-gradient steps per row of --solver cg [default: 3].
    #[arg(long, value_name = "N", value_parser = parse::positive_usize)]
    pub cg_steps: Option<usize>,
    /// Passes over the blocks per row and half-iteration of --solver ialspp [default: 1].
    #[arg(long, value_name = "N", value_parser = parse::positive_usize)]
    pub sweeps: Option<usize>,
    /// Step size γ of --solver sgd [default: 0.005, Surprise's lr_all].
    #[arg(long, value_name = "G", value_parser = parse::positive_f32)]
    pub learning_rate: Option<f32>,
    /// Iterations of --solver gibbs discarded before draws are averaged [default: 10].
    #[arg(long, value_name = "N")]
    pub burn_in: Option<usize>,
    /// Precision α of the rating noise of --solver gibbs (1/σ²) [default: 2].
    #[arg(long, value_name = "A", value_parser = parse::positive_f32)]
    pub noise_precision: Option<f32>,
    /// Explicit model without the global mean and biases (r̂ = pᵤ·qᵢ).
    #[arg(long, conflicts_with = "implicit")]
    pub no_biases: bool,
    /// Seed of the initial factors.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Blocks per side (fixed by the data, not by the cluster size).
    #[arg(long, default_value_t = DEFAULT_BLOCKS, value_name = "N", value_parser = parse::positive_usize, help_heading = "Execution")]
    pub blocks: usize,
    /// Dense kernel backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Faer, help_heading = "Execution")]
    pub backend: BackendArg,
}

/// How test predictions are scored.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Evaluation")]
pub struct MetricArgs {
    /// Ranking cutoff K of precision/recall/MAP/NDCG@K.
    #[arg(long, default_value_t = DEFAULT_RANKING_K, value_name = "K", value_parser = parse::positive_usize)]
    pub k: usize,
    /// Test rows with a value >= this are relevant for the ranking metrics.
    #[arg(long, default_value_t = DEFAULT_MIN_POS, value_name = "V", value_parser = parse::finite_f32)]
    pub min_pos: f32,
    /// RMSE/MAE on raw predictions (default: clipped to the training rating range).
    #[arg(long)]
    pub no_clip: bool,
}

/// One point of the λ × factors × α × α₀ × ν × σ × b space: `train` takes
/// one, `tune` a grid.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ModelPoint {
    pub lambda: f32,
    pub factors: usize,
    /// α of implicit feedback; `None` takes the default.
    pub alpha: Option<f32>,
    /// α₀ of `--loss ials`; `None` takes the default.
    pub unobserved_weight: Option<f32>,
    /// ν of `--loss ials`; `None` takes the default.
    pub reg_exponent: Option<f32>,
    /// σ of the Gaussian start; `None` starts from unit-length vectors.
    pub init_std: Option<f32>,
    /// Coordinates per block of `--solver ialspp`; `None` takes the default.
    pub block_size: Option<usize>,
    /// The row solver (or SGD); `None` takes the default for the feedback.
    pub solver: Option<SolverArg>,
}

impl ModelPoint {
    /// λ and factors, every other axis at its default.
    pub fn new(lambda: f32, factors: usize) -> Self {
        ModelPoint {
            lambda,
            factors,
            alpha: None,
            unobserved_weight: None,
            reg_exponent: None,
            init_std: None,
            block_size: None,
            solver: None,
        }
    }
}

/// How often a run evaluates (`--eval-every`) and computes the objective (`--objective-every`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    pub eval_every: usize,
    pub objective_every: usize,
}

/// The flag that sets a configuration field, for error messages.
pub fn flag_of(field: Field) -> &'static str {
    match field {
        Field::Factors => "--factors",
        Field::Lambda => "--lambda",
        Field::Blocks => "--blocks",
        Field::Alpha => "--alpha",
        Field::Epsilon => "--epsilon",
        Field::Solver => "--solver",
        Field::CgSteps => "--cg-steps",
        Field::BlockSize => "--block-size",
        Field::Sweeps => "--sweeps",
        Field::LearningRate => "--learning-rate",
        Field::BurnIn => "--burn-in",
        Field::NoisePrecision => "--noise-precision",
        Field::UnobservedWeight => "--unobserved-weight",
        Field::RegExponent => "--reg-exponent",
        Field::InitStd => "--init-std",
        Field::RankingK => "--k",
        Field::MinPos => "--min-pos",
    }
}

/// A core setting error in the command line's words.
pub fn setting_error(e: SettingError) -> anyhow::Error {
    anyhow::anyhow!("invalid training settings: {}", e.named(flag_of(e.field)))
}

impl ModelArgs {
    /// The solver of `point`: `--solver`, else by feedback.
    pub fn solver_arg(&self, point: ModelPoint) -> SolverArg {
        point
            .solver
            .unwrap_or(if self.implicit { SolverArg::Cg } else { SolverArg::Cholesky })
    }

    /// Refuse a solver's own flags when none of `solvers` (the run's, or a
    /// grid's) uses them; `block_size_given`: a block size is set.
    pub fn check_solver_flags(&self, solvers: &[SolverArg], block_size_given: bool) -> anyhow::Result<()> {
        let uses = |s: SolverArg| solvers.contains(&s);
        if self.cg_steps.is_some() && !uses(SolverArg::Cg) {
            bail!("--cg-steps applies to --solver cg only");
        }
        for (given, flag) in [(block_size_given, "--block-size"), (self.sweeps.is_some(), "--sweeps")] {
            if given && !uses(SolverArg::Ialspp) {
                bail!("{flag} applies to --solver ialspp only");
            }
        }
        if self.learning_rate.is_some() && !uses(SolverArg::Sgd) {
            bail!("--learning-rate applies to --solver sgd only");
        }
        for (given, flag) in [
            (self.burn_in.is_some(), "--burn-in"),
            (self.noise_precision.is_some(), "--noise-precision"),
        ] {
            if given && !uses(SolverArg::Gibbs) {
                bail!("{flag} applies to --solver gibbs only");
            }
        }
        Ok(())
    }

    /// Whether the flags choose `--loss ials`.
    pub fn is_ials(&self) -> bool {
        self.loss == Some(LossArg::Ials)
    }

    /// Whether `--loss ials` weighs observed pairs by their confidence.
    pub fn confidence_weights(&self) -> bool {
        self.observed_weight == Some(ObservedWeightArg::Confidence)
    }

    /// The implicit loss the flags choose; its own flags are refused elsewhere.
    fn implicit_loss(&self, point: ModelPoint) -> anyhow::Result<ImplicitLoss> {
        if !self.is_ials() {
            for (given, flag) in [
                (point.unobserved_weight.is_some(), "--unobserved-weight"),
                (point.reg_exponent.is_some(), "--reg-exponent"),
                (self.observed_weight.is_some(), "--observed-weight"),
            ] {
                if given {
                    bail!("{flag} applies to --implicit --loss ials only");
                }
            }
            return Ok(ImplicitLoss::Hu);
        }
        if self.reg_scaling.is_some() {
            bail!("--reg-scaling does not apply to --loss ials: its λ scales by (n + α₀·N)^ν, set with --reg-exponent");
        }
        let confidence_weights = self.confidence_weights();
        if !confidence_weights {
            for (given, flag) in [(point.alpha.is_some(), "--alpha"), (self.confidence.is_some(), "--confidence")] {
                if given {
                    bail!("{flag} weighs observed pairs: with --loss ials it needs --observed-weight confidence");
                }
            }
        }
        Ok(ImplicitLoss::Ials {
            unobserved_weight: point.unobserved_weight.unwrap_or(DEFAULT_UNOBSERVED_WEIGHT),
            reg_exponent: point.reg_exponent.unwrap_or(DEFAULT_REG_EXPONENT),
            confidence_weights,
        })
    }

    /// The training configuration at `point`, validated.
    pub fn train_config(&self, point: ModelPoint, metrics: &MetricArgs, cadence: Cadence) -> anyhow::Result<TrainConfig> {
        self.check_solver_flags(&[self.solver_arg(point)], point.block_size.is_some())?;
        self.config_at(point, metrics, cadence)
    }

    /// [`Self::train_config`] without [`Self::check_solver_flags`], which a
    /// grid of solvers checks once over all of them.
    pub fn config_at(&self, point: ModelPoint, metrics: &MetricArgs, cadence: Cadence) -> anyhow::Result<TrainConfig> {
        let solver_arg = self.solver_arg(point);
        if !self.implicit && solver_arg == SolverArg::Cg {
            bail!("--solver cg applies to implicit feedback (--implicit); explicit ratings use cholesky");
        }
        if solver_arg == SolverArg::Ialspp && !self.implicit {
            bail!("--solver ialspp applies to implicit feedback (--implicit); explicit ratings use cholesky");
        }
        if self.implicit && solver_arg == SolverArg::Sgd {
            bail!("--solver sgd learns explicit ratings only; for --implicit use --solver cg or cholesky");
        }
        if self.implicit && solver_arg == SolverArg::Gibbs {
            bail!("--solver gibbs samples explicit ratings only; for --implicit use --solver cg, cholesky or ialspp");
        }
        if self.epsilon.is_some() && self.confidence != Some(ConfidenceArg::Log) {
            bail!("--epsilon applies to --confidence log only");
        }
        if point.alpha.is_some() && !self.implicit {
            bail!("--alpha applies to --implicit only");
        }
        let loss = self.implicit_loss(point)?;
        let solver = match solver_arg {
            // SGD solves no rows, and Gibbs draws them from the Cholesky
            // of the same normal equations; the field keeps its explicit default.
            SolverArg::Cholesky | SolverArg::Sgd | SolverArg::Gibbs => SolverKind::Cholesky,
            SolverArg::Cg => SolverKind::Cg {
                steps: self.cg_steps.unwrap_or(DEFAULT_CG_STEPS),
            },
            SolverArg::Ialspp => SolverKind::Ialspp {
                block: point.block_size.unwrap_or(DEFAULT_BLOCK_SIZE),
                sweeps: self.sweeps.unwrap_or(DEFAULT_SWEEPS),
            },
        };
        let learner = match solver_arg {
            SolverArg::Sgd => Learner::Sgd {
                learning_rate: self.learning_rate.unwrap_or(DEFAULT_LEARNING_RATE),
            },
            SolverArg::Gibbs => Learner::Gibbs {
                burn_in: self.burn_in.unwrap_or(DEFAULT_BURN_IN),
                noise_precision: self.noise_precision.unwrap_or(DEFAULT_NOISE_PRECISION),
            },
            SolverArg::Cholesky | SolverArg::Cg | SolverArg::Ialspp => Learner::Als,
        };
        let implicit = self.implicit.then(|| ImplicitConfig {
            alpha: point.alpha.unwrap_or(DEFAULT_ALPHA),
            confidence: match self.confidence.unwrap_or_default() {
                ConfidenceArg::Linear => Confidence::Linear,
                ConfidenceArg::Log => Confidence::Log {
                    epsilon: self.epsilon.unwrap_or(DEFAULT_LOG_EPSILON),
                },
            },
            loss,
        });
        let backend: Backend = match self.backend {
            BackendArg::Faer => Backend::Faer,
            // Core refuses `lapack` with a clear message when the build lacks the feature.
            BackendArg::Lapack => "lapack".parse::<Backend>().map_err(|e| anyhow::anyhow!("--backend {e}"))?,
        };
        let cfg = TrainConfig {
            factors: point.factors,
            iterations: self.iterations,
            lambda: point.lambda,
            reg_scaling: match self.reg_scaling.unwrap_or_default() {
                RegScalingArg::Count => RegScaling::Count,
                RegScalingArg::None => RegScaling::None,
            },
            implicit,
            biased: !self.no_biases,
            solver,
            learner,
            seed: self.seed,
            init_std: point.init_std,
            blocks: self.blocks,
            backend,
            eval_every: cadence.eval_every,
            objective_every: cadence.objective_every,
            ranking_k: metrics.k,
            min_pos: metrics.min_pos,
            clip_predictions: !metrics.no_clip,
        };
        cfg.validate().map_err(setting_error)?;
        Ok(cfg)
    }
}
