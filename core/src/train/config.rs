//! Hyperparameters of a training run.

use serde::{Deserialize, Serialize};

use crate::blocks::DEFAULT_BLOCKS;
use crate::linalg::Backend;
use crate::solve::{Confidence, Feedback, ImplicitLoss, RegScaling, SolveParams, SolverKind};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImplicitConfig {
    pub alpha: f32,
    pub confidence: Confidence,
    /// Hu et al.'s loss or the iALS of Rendle et al.; absent in settings
    /// written before the iALS loss existed.
    #[serde(default)]
    pub loss: ImplicitLoss,
}

impl ImplicitConfig {
    /// Hu et al.'s loss with confidence scale `alpha` and the given confidence.
    pub fn hu(alpha: f32, confidence: Confidence) -> Self {
        ImplicitConfig {
            alpha,
            confidence,
            loss: ImplicitLoss::Hu,
        }
    }
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
    /// Bayesian PMF by Gibbs sampling (explicit ratings): rows drawn from
    /// their conditionals under a learned Normal-Wishart prior; the model is
    /// the mean of the draws after the first `burn_in` iterations.
    Gibbs { burn_in: usize, noise_precision: f32 },
}

// The defaults of every front end (command line, Python, tune), declared
// once here as Spark declares them with `setDefault`.

/// Latent factors k.
pub const DEFAULT_FACTORS: usize = 64;
/// ALS iterations (SGD: epochs).
pub const DEFAULT_ITERATIONS: usize = 15;
/// Spark's default λ; on ml-100k u1 it gives RMSE 0.925 where 0.05 overfits (0.952).
pub const DEFAULT_LAMBDA: f32 = 0.1;
/// Confidence scale α of implicit feedback: Hu et al.'s choice, and Spark's
/// most quoted setting.
pub const DEFAULT_ALPHA: f32 = 40.0;
/// ε of the log confidence 1 + α·ln(1 + r/ε).
pub const DEFAULT_LOG_EPSILON: f32 = 1.0;
/// Conjugate-gradient steps per row: `implicit`'s default, warm-started.
pub const DEFAULT_CG_STEPS: usize = 3;
/// Seed of the initial factors.
pub const DEFAULT_SEED: u64 = 42;
/// Coordinates per block of the iALS++ solver. Rendle et al. used 128 at
/// dimensions of 256 and more; measured here (ml-100k and ml-latest-small,
/// k = 256 and 1024, one sweep per half), NDCG@10 after each iteration is
/// the same within 0.005 for blocks of 8 to 128, while a block's b³/3
/// Cholesky makes 64 cost 1.7× and 128 3× what 16 costs per iteration.
pub const DEFAULT_BLOCK_SIZE: usize = 16;
/// Passes over the blocks per row and half-iteration of iALS++ (theirs: one).
pub const DEFAULT_SWEEPS: usize = 1;
/// Weight α₀ of every user–item pair in the iALS loss: the setting of
/// Rendle et al.'s code and of their ML-20M reproduction.
pub const DEFAULT_UNOBSERVED_WEIGHT: f32 = 0.1;
/// Exponent ν of the iALS regularization λ·(n + α₀·N)^ν: their setting.
pub const DEFAULT_REG_EXPONENT: f32 = 1.0;
/// Ranking cutoff K of the ranking metrics.
pub const DEFAULT_RANKING_K: usize = 10;
/// Test rows with a value ≥ this are relevant.
pub const DEFAULT_MIN_POS: f32 = 1.0;
/// Evaluate the test set after every iteration.
pub const DEFAULT_EVAL_EVERY: usize = 1;

/// Gibbs iterations discarded before draws are averaged. On ml-100k u1 the
/// chain's test RMSE settles within about ten draws from its start.
pub const DEFAULT_BURN_IN: usize = 10;
/// Precision α of the rating noise of Bayesian PMF: Salakhutdinov & Mnih's
/// value (a noise standard deviation of 0.71 stars).
pub const DEFAULT_NOISE_PRECISION: f32 = 2.0;

/// Surprise's `lr_all` default, so its users get the step size they know.
pub const DEFAULT_LEARNING_RATE: f32 = 0.005;

/// The training objective after every iteration, by default: the command
/// line prints it, and it shows that ALS never increases it.
pub const DEFAULT_OBJECTIVE_EVERY: usize = 1;

/// A [`TrainConfig`] field, as named in a [`SettingError`]. Front ends map
/// it to their own flag or parameter name, so core never spells a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Factors,
    Lambda,
    Blocks,
    /// `implicit.alpha`.
    Alpha,
    /// `implicit.confidence.epsilon`.
    Epsilon,
    /// The solver and learner together (which pairs with which feedback).
    Solver,
    /// `solver.steps` of CG.
    CgSteps,
    /// `solver.block` of iALS++.
    BlockSize,
    /// `solver.sweeps` of iALS++.
    Sweeps,
    /// `learner.learning_rate` of SGD.
    LearningRate,
    /// `learner.burn_in` of Gibbs sampling.
    BurnIn,
    /// `learner.noise_precision` of Gibbs sampling.
    NoisePrecision,
    /// `implicit.loss.unobserved_weight` of the iALS loss.
    UnobservedWeight,
    /// `implicit.loss.reg_exponent` of the iALS loss.
    RegExponent,
    InitStd,
    RankingK,
    MinPos,
}

impl Field {
    /// The field's path in the serialized configuration.
    pub fn path(self) -> &'static str {
        match self {
            Field::Factors => "factors",
            Field::Lambda => "lambda",
            Field::Blocks => "blocks",
            Field::Alpha => "implicit.alpha",
            Field::Epsilon => "implicit.confidence.epsilon",
            Field::Solver => "solver",
            Field::CgSteps => "solver.steps",
            Field::BlockSize => "solver.block",
            Field::Sweeps => "solver.sweeps",
            Field::LearningRate => "learner.learning_rate",
            Field::BurnIn => "learner.burn_in",
            Field::NoisePrecision => "learner.noise_precision",
            Field::UnobservedWeight => "implicit.loss.unobserved_weight",
            Field::RegExponent => "implicit.loss.reg_exponent",
            Field::InitStd => "init_std",
            Field::RankingK => "ranking_k",
            Field::MinPos => "min_pos",
        }
    }
}

/// A setting outside its documented range ([`crate::limits`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} {problem}", field.path())]
pub struct SettingError {
    pub field: Field,
    /// What is wrong, without the name: "must be in 1..=4096, got 0".
    pub problem: String,
}

impl SettingError {
    /// The message with the field shown as `name` (a flag or a parameter).
    pub fn named(&self, name: &str) -> String {
        format!("{name} {}", self.problem)
    }
}

fn in_range(field: Field, v: f32, lo: f32, hi: f32) -> Result<(), SettingError> {
    crate::limits::check_range("", v, lo, hi).map(|_| ()).map_err(|m| SettingError {
        field,
        problem: m.trim_start().to_string(),
    })
}

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
    /// Initial factors: `None` draws unit-length Gaussian vectors (Spark's
    /// choice); `Some(σ)` draws each entry from N(0, σ²/k) (Rendle et al.'s,
    /// whose results depend on σ). Left out of saved settings when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_std: Option<f32>,
    /// Blocks per side; fixed by the data, not by the cluster size.
    pub blocks: usize,
    pub backend: Backend,
    /// Evaluate the test set every N iterations (0: only after the last one).
    pub eval_every: usize,
    /// Compute the training objective and train RMSE every N iterations (0:
    /// never). The halves compute it with their rows (one dot product per
    /// rating in the items' half): callers that do not show it skip it. It changes no
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
            factors: DEFAULT_FACTORS,
            iterations: DEFAULT_ITERATIONS,
            lambda: DEFAULT_LAMBDA,
            reg_scaling: RegScaling::Count,
            implicit: None,
            biased: true,
            solver: SolverKind::Cholesky,
            learner: Learner::Als,
            seed: DEFAULT_SEED,
            init_std: None,
            blocks: DEFAULT_BLOCKS,
            backend: Backend::Faer,
            eval_every: DEFAULT_EVAL_EVERY,
            objective_every: DEFAULT_OBJECTIVE_EVERY,
            ranking_k: DEFAULT_RANKING_K,
            min_pos: DEFAULT_MIN_POS,
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
    pub fn validate(&self) -> Result<(), SettingError> {
        use crate::limits::{
            EPSILON_RANGE, INIT_STD_RANGE, MAX_ALPHA, MAX_FACTORS, MAX_LAMBDA, MAX_LEARNING_RATE, MAX_NOISE_PRECISION, MAX_RANKING_K,
            MAX_REG_EXPONENT, MAX_ROW_PASSES, MAX_UNOBSERVED_WEIGHT,
        };
        let err = |field, problem: String| Err(SettingError { field, problem });
        if self.factors == 0 || self.factors > MAX_FACTORS {
            return err(Field::Factors, format!("must be in 1..={MAX_FACTORS}, got {}", self.factors));
        }
        in_range(Field::Lambda, self.lambda, 0.0, MAX_LAMBDA)?;
        if self.blocks == 0 || self.blocks > crate::data::ids::ID_BUCKETS {
            // A block is at least one id hash bucket.
            return err(
                Field::Blocks,
                format!("must be in 1..={}, got {}", crate::data::ids::ID_BUCKETS, self.blocks),
            );
        }
        if let Some(imp) = &self.implicit {
            in_range(Field::Alpha, imp.alpha, 0.0, MAX_ALPHA)?;
            if let Confidence::Log { epsilon } = imp.confidence {
                in_range(Field::Epsilon, epsilon, EPSILON_RANGE.0, EPSILON_RANGE.1)?;
            }
            if let ImplicitLoss::Ials {
                unobserved_weight,
                reg_exponent,
                ..
            } = imp.loss
            {
                in_range(Field::UnobservedWeight, unobserved_weight, 0.0, MAX_UNOBSERVED_WEIGHT)?;
                in_range(Field::RegExponent, reg_exponent, 0.0, MAX_REG_EXPONENT)?;
            }
        } else if let SolverKind::Cg { .. } | SolverKind::Ialspp { .. } = self.solver {
            return err(
                Field::Solver,
                "cg and ialspp apply to implicit feedback; explicit ratings use cholesky".into(),
            );
        }
        if let Learner::Sgd { learning_rate } = self.learner {
            if self.is_implicit() {
                return err(
                    Field::Solver,
                    "sgd learns explicit ratings only; implicit feedback uses cg or cholesky".into(),
                );
            }
            if learning_rate.is_nan() || learning_rate <= 0.0 {
                return err(Field::LearningRate, format!("must be > 0, got {learning_rate}"));
            }
            in_range(Field::LearningRate, learning_rate, 0.0, MAX_LEARNING_RATE)?;
        }
        if let Learner::Gibbs { burn_in, noise_precision } = self.learner {
            if self.is_implicit() {
                return err(
                    Field::Solver,
                    "gibbs samples explicit ratings only; implicit feedback uses cg, cholesky or ialspp".into(),
                );
            }
            if burn_in >= self.iterations {
                return err(
                    Field::BurnIn,
                    format!(
                        "must be below the iterations ({}) so that some draws are averaged, got {burn_in}",
                        self.iterations
                    ),
                );
            }
            if noise_precision.is_nan() || noise_precision <= 0.0 {
                return err(Field::NoisePrecision, format!("must be > 0, got {noise_precision}"));
            }
            in_range(Field::NoisePrecision, noise_precision, 0.0, MAX_NOISE_PRECISION)?;
        }
        if let SolverKind::Cg { steps: 0 } = self.solver {
            return err(Field::CgSteps, "must be positive".into());
        }
        if let SolverKind::Ialspp { block, sweeps } = self.solver {
            if block == 0 || block > MAX_FACTORS {
                return err(Field::BlockSize, format!("must be in 1..={MAX_FACTORS}, got {block}"));
            }
            if sweeps == 0 || sweeps > MAX_ROW_PASSES {
                return err(Field::Sweeps, format!("must be in 1..={MAX_ROW_PASSES}, got {sweeps}"));
            }
        }
        if let Some(std) = self.init_std {
            in_range(Field::InitStd, std, INIT_STD_RANGE.0, INIT_STD_RANGE.1)?;
        }
        if self.ranking_k == 0 || self.ranking_k > MAX_RANKING_K {
            return err(Field::RankingK, format!("must be in 1..={MAX_RANKING_K}, got {}", self.ranking_k));
        }
        if !self.min_pos.is_finite() {
            return err(Field::MinPos, format!("must be finite, got {}", self.min_pos));
        }
        Ok(())
    }

    /// The per-row solve parameters for this run (μ is the training mean).
    pub fn solve_params(&self, global_mean: f64) -> SolveParams {
        let feedback = match self.implicit {
            Some(ImplicitConfig { alpha, confidence, loss }) => Feedback::Implicit { alpha, confidence, loss },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings saved before the iALS loss and `init_std` existed read as Hu
    /// et al. with the unit-norm start; the new ones round-trip.
    #[test]
    fn settings_old_and_new_read_back() {
        let mut json = serde_json::to_value(TrainConfig {
            implicit: Some(ImplicitConfig::hu(2.0, Confidence::Linear)),
            ..Default::default()
        })
        .unwrap();
        assert!(json.get("init_std").is_none(), "left out at its default: {json}");
        json["implicit"].as_object_mut().unwrap().remove("loss");
        let old: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.implicit.unwrap().loss, ImplicitLoss::Hu);
        assert_eq!(old.init_std, None);
        let new = TrainConfig {
            implicit: Some(ImplicitConfig {
                alpha: 1.0,
                confidence: Confidence::Linear,
                loss: ImplicitLoss::Ials {
                    unobserved_weight: 0.25,
                    reg_exponent: 0.5,
                    confidence_weights: true,
                },
            }),
            init_std: Some(0.1),
            ..Default::default()
        };
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains(r#""loss":{"loss":"ials","unobserved_weight":0.25"#), "{text}");
        assert_eq!(serde_json::from_str::<TrainConfig>(&text).unwrap(), new);
    }

    #[test]
    fn a_side_has_between_one_block_and_one_per_id_bucket() {
        for (blocks, ok) in [
            (0, false),
            (1, true),
            (crate::data::ids::ID_BUCKETS, true),
            (crate::data::ids::ID_BUCKETS + 1, false),
        ] {
            let cfg = TrainConfig {
                blocks,
                ..Default::default()
            };
            assert_eq!(cfg.validate().is_ok(), ok, "{blocks} blocks");
        }
    }
}
