//! Hyperparameters of a training run.

use serde::{Deserialize, Serialize};

use crate::blocks::DEFAULT_BLOCKS;
use crate::linalg::Backend;
use crate::solve::{Confidence, Feedback, RegScaling, SolveParams, SolverKind};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImplicitConfig {
    pub alpha: f32,
    pub confidence: Confidence,
}

/// How the factors are learned.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Learner {
    /// Alternating least squares with the row solver of [`TrainConfig::solver`].
    #[default]
    Als,
    /// Stochastic gradient descent on the explicit biased objective (Surprise's
    /// SVD updates), parallel over disjoint blocks (DSGD); iterations are epochs.
    Sgd { learning_rate: f32 },
}

/// Surprise's `lr_all` default, so its users get the step size they know.
pub const DEFAULT_LEARNING_RATE: f32 = 0.005;

/// The training objective after every iteration, by default: the command
/// line prints it, and it shows that ALS never increases it.
pub const DEFAULT_OBJECTIVE_EVERY: usize = 1;

fn default_objective_every() -> usize {
    DEFAULT_OBJECTIVE_EVERY
}

fn is_default_objective_every(n: &usize) -> bool {
    *n == DEFAULT_OBJECTIVE_EVERY
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub factors: usize,
    pub iterations: usize,
    pub lambda: f32,
    pub reg_scaling: RegScaling,
    /// `None`: explicit ratings.
    pub implicit: Option<ImplicitConfig>,
    /// Explicit models: learn μ + bᵤ + bᵢ besides the factors.
    pub biased: bool,
    pub solver: SolverKind,
    /// ALS (with `solver`) or SGD; absent in configs written before SGD existed.
    #[serde(default)]
    pub learner: Learner,
    pub seed: u64,
    /// Blocks per side; fixed by the data, not by the cluster size.
    pub blocks: usize,
    pub backend: Backend,
    /// Evaluate the test set every N iterations (0: only after the last one).
    pub eval_every: usize,
    /// Compute the training objective and train RMSE every N iterations (0:
    /// never). It is a pass over every rating, about a tenth of an
    /// iteration's work: callers that do not show it skip it. It changes no
    /// factor. SGD computes it every epoch regardless: it is its divergence
    /// check. Left out of saved settings at its default, so models and
    /// checkpoints of earlier versions read the same.
    #[serde(default = "default_objective_every", skip_serializing_if = "is_default_objective_every")]
    pub objective_every: usize,
    pub ranking_k: usize,
    /// Test rows with a value ≥ this are relevant for ranking metrics.
    pub min_pos: f32,
    /// Clip explicit predictions to the training rating range before RMSE/MAE.
    pub clip_predictions: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            factors: 64,
            iterations: 15,
            // Spark's default; on ml-100k u1 it gives RMSE 0.925 where 0.05 overfits (0.952).
            lambda: 0.1,
            reg_scaling: RegScaling::Count,
            implicit: None,
            biased: true,
            solver: SolverKind::Cholesky,
            learner: Learner::Als,
            seed: 42,
            blocks: DEFAULT_BLOCKS,
            backend: Backend::Faer,
            eval_every: 1,
            objective_every: DEFAULT_OBJECTIVE_EVERY,
            ranking_k: 10,
            min_pos: 1.0,
            clip_predictions: true,
        }
    }
}

impl TrainConfig {
    pub fn is_implicit(&self) -> bool {
        self.implicit.is_some()
    }

    /// Biases are learned for explicit ratings only.
    pub fn has_biases(&self) -> bool {
        self.biased && !self.is_implicit()
    }

    /// Every setting inside its documented range ([`crate::limits`]).
    pub fn validate(&self) -> Result<(), String> {
        use crate::limits::{check_range, EPSILON_RANGE, MAX_ALPHA, MAX_FACTORS, MAX_LAMBDA, MAX_LEARNING_RATE};
        if self.factors == 0 || self.factors > MAX_FACTORS {
            return Err(format!("--factors must be in 1..={MAX_FACTORS}, got {}", self.factors));
        }
        check_range("--lambda", self.lambda, 0.0, MAX_LAMBDA)?;
        if self.blocks == 0 {
            return Err("--blocks must be positive".into());
        }
        if let Some(imp) = &self.implicit {
            check_range("--alpha", imp.alpha, 0.0, MAX_ALPHA)?;
            if let Confidence::Log { epsilon } = imp.confidence {
                check_range("--epsilon", epsilon, EPSILON_RANGE.0, EPSILON_RANGE.1)?;
            }
        } else if let SolverKind::Cg { .. } = self.solver {
            return Err("--solver cg applies to implicit feedback (--implicit); explicit ratings use cholesky".into());
        }
        if let Learner::Sgd { learning_rate } = self.learner {
            if self.is_implicit() {
                return Err("--solver sgd learns explicit ratings only; for --implicit use --solver cg or cholesky".into());
            }
            if learning_rate.is_nan() || learning_rate <= 0.0 {
                return Err(format!("--learning-rate must be > 0, got {learning_rate}"));
            }
            check_range("--learning-rate", learning_rate, 0.0, MAX_LEARNING_RATE)?;
        }
        if let SolverKind::Cg { steps: 0 } = self.solver {
            return Err("--cg-steps must be positive".into());
        }
        if self.ranking_k == 0 || self.ranking_k > crate::limits::MAX_RANKING_K {
            return Err(format!(
                "--k (the ranking cutoff) must be in 1..={}, got {}",
                crate::limits::MAX_RANKING_K,
                self.ranking_k
            ));
        }
        if !self.min_pos.is_finite() {
            return Err(format!("--min-pos must be finite, got {}", self.min_pos));
        }
        Ok(())
    }

    /// The per-row solve parameters for this run (μ is the training mean).
    pub fn solve_params(&self, global_mean: f64) -> SolveParams {
        let feedback = match self.implicit {
            Some(ImplicitConfig { alpha, confidence }) => Feedback::Implicit { alpha, confidence },
            None => Feedback::Explicit {
                biased: self.biased,
                global_mean: if self.biased { global_mean as f32 } else { 0.0 },
            },
        };
        SolveParams {
            factors: self.factors,
            lambda: self.lambda,
            reg_scaling: self.reg_scaling,
            feedback,
            solver: self.solver,
            backend: self.backend,
        }
    }
}
