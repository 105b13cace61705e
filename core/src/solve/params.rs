//! Hyperparameters of one row solve.

use serde::{Deserialize, Serialize};

use crate::linalg::Backend;

/// How λ is applied to a row (the libraries differ: never compare λ across them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegScaling {
    /// λ·nᵤ, nᵤ = the row's rating count (ALS-WR, as Spark does).
    #[default]
    Count,
    /// Plain λ (as `implicit` does).
    None,
}

impl std::str::FromStr for RegScaling {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "count" => Ok(Self::Count),
            "none" => Ok(Self::None),
            _ => Err(format!("unknown regularization scaling '{s}' (count, none)")),
        }
    }
}

/// Confidence of an implicit observation r ≥ 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "scheme")]
pub enum Confidence {
    /// c = 1 + α·r (Hu, Koren & Volinsky 2008; Spark's implicitPrefs).
    Linear,
    /// c = 1 + α·ln(1 + r/ε).
    Log { epsilon: f32 },
}

impl Confidence {
    /// c − 1 for a value.
    #[inline]
    pub fn excess(self, alpha: f32, r: f32) -> f32 {
        match self {
            Confidence::Linear => alpha * r,
            Confidence::Log { epsilon } => alpha * (1.0 + r / epsilon).ln(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum Feedback {
    /// Ratings: r̂ = μ + bᵤ + bᵢ + pᵤᵀqᵢ (biases and μ only when `biased`).
    Explicit { biased: bool, global_mean: f32 },
    /// Observations with confidence; preference 1 where r > 0.
    Implicit { alpha: f32, confidence: Confidence },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum SolverKind {
    /// Exact normal equations by Cholesky.
    Cholesky,
    /// Conjugate gradient warm-started from the previous factors (implicit feedback).
    Cg { steps: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SolveParams {
    pub factors: usize,
    pub lambda: f32,
    pub reg_scaling: RegScaling,
    pub feedback: Feedback,
    pub solver: SolverKind,
    pub backend: Backend,
}

impl SolveParams {
    /// Unknowns per row: the factors, plus the row's own bias in biased explicit models.
    pub fn dim(&self) -> usize {
        match self.feedback {
            Feedback::Explicit { biased: true, .. } => self.factors + 1,
            _ => self.factors,
        }
    }

    /// λ for a row with `n` ratings.
    #[inline]
    pub fn row_lambda(&self, n: usize) -> f64 {
        match self.reg_scaling {
            RegScaling::Count => self.lambda as f64 * n as f64,
            RegScaling::None => self.lambda as f64,
        }
    }
}
