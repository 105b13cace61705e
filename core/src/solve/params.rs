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

/// The loss implicit feedback minimizes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase", tag = "loss")]
pub enum ImplicitLoss {
    /// Hu, Koren & Volinsky 2008: every pair weighted by its confidence, 1
    /// where unobserved; λ scaled by [`RegScaling`].
    #[default]
    Hu,
    /// Rendle, Krichene, Zhang & Koren 2022 ("Revisiting the Performance of
    /// iALS"): observed pairs have target 1 and weight 1 (their confidence
    /// when `confidence_weights`); every pair has weight α₀
    /// (`unobserved_weight`) towards 0; a row's λ is λ·(n + α₀·N)^ν, n its
    /// own count and N the rows of the other side.
    Ials {
        unobserved_weight: f32,
        reg_exponent: f32,
        confidence_weights: bool,
    },
}

/// What implicit feedback adds to a row's normal equations: the Gramian
/// times [`gram_scale`](Self::gram_scale), and per observed value the
/// [`observed`](Self::observed) weights. Every implicit solver and the
/// objective read the loss through these, so they cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ImplicitWeights {
    pub alpha: f32,
    pub confidence: Confidence,
    pub loss: ImplicitLoss,
}

impl ImplicitWeights {
    /// The weight of every pair towards 0, carried by the Gramian.
    #[inline]
    pub fn gram_scale(self) -> f32 {
        match self.loss {
            ImplicitLoss::Hu => 1.0,
            ImplicitLoss::Ials { unobserved_weight, .. } => unobserved_weight,
        }
    }

    /// For an observed value r: (its quadratic weight beyond the Gramian's,
    /// its weight in the right-hand side). Hu: (c − 1, c·p); iALS: (w, w·p),
    /// with p = 1 where r > 0 and 0 otherwise.
    #[inline]
    pub fn observed(self, r: f32) -> (f32, f32) {
        let (extra, total) = self.observed_f64(r);
        (extra as f32, total as f32)
    }

    /// [`observed`](Self::observed) in f64, for the exact (Cholesky) path.
    #[inline]
    pub fn observed_f64(self, r: f32) -> (f64, f64) {
        let excess = || self.confidence.excess(self.alpha, r) as f64;
        let pref = if r > 0.0 { 1.0 } else { 0.0 };
        match self.loss {
            ImplicitLoss::Hu => {
                let e = excess();
                (e, pref * (1.0 + e))
            }
            ImplicitLoss::Ials { confidence_weights, .. } => {
                let w = if confidence_weights { 1.0 + excess() } else { 1.0 };
                (w, pref * w)
            }
        }
    }

    /// An observed pair's part of the objective at score s, beyond the
    /// α₀·s² the Gramian term counts for every pair: Hu c(p − s)² − s²,
    /// iALS w(p − s)².
    #[inline]
    pub fn observed_loss(self, r: f32, s: f64) -> f64 {
        let pref = if r > 0.0 { 1.0 } else { 0.0 };
        match self.loss {
            ImplicitLoss::Hu => {
                let c = 1.0 + self.confidence.excess(self.alpha, r) as f64;
                c * (pref - s).powi(2) - s * s
            }
            ImplicitLoss::Ials { .. } => self.observed_f64(r).0 * (pref - s).powi(2),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum Feedback {
    /// Ratings: r̂ = μ + bᵤ + bᵢ + pᵤᵀqᵢ (biases and μ only when `biased`).
    Explicit { biased: bool, global_mean: f32 },
    /// Observations with confidence; preference 1 where r > 0.
    Implicit {
        alpha: f32,
        confidence: Confidence,
        /// Absent in settings written before the iALS loss existed.
        #[serde(default)]
        loss: ImplicitLoss,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum SolverKind {
    /// Exact normal equations by Cholesky.
    Cholesky,
    /// Conjugate gradient warm-started from the previous factors (implicit feedback).
    Cg { steps: usize },
    /// iALS++ subspace solves (implicit feedback): `sweeps` passes over
    /// blocks of `block` coordinates, each solved exactly, warm-started.
    Ialspp { block: usize, sweeps: usize },
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
    /// Each row has a bias of its own (explicit feedback with biases).
    pub fn biased(&self) -> bool {
        matches!(self.feedback, Feedback::Explicit { biased: true, .. })
    }

    /// Unknowns per row: the factors, plus the row's own bias in biased explicit models.
    pub fn dim(&self) -> usize {
        self.factors + usize::from(self.biased())
    }

    /// λ for a row with `n` ratings, solved against a side of `other_rows`
    /// rows (all of them, not only those a worker holds).
    #[inline]
    pub fn row_lambda(&self, n: usize, other_rows: usize) -> f64 {
        let lambda = self.lambda as f64;
        if let Feedback::Implicit {
            loss: ImplicitLoss::Ials {
                unobserved_weight,
                reg_exponent,
                ..
            },
            ..
        } = self.feedback
        {
            return lambda * (n as f64 + unobserved_weight as f64 * other_rows as f64).powf(reg_exponent as f64);
        }
        match self.reg_scaling {
            RegScaling::Count => lambda * n as f64,
            RegScaling::None => lambda,
        }
    }

    /// The implicit loss's weights, for implicit feedback.
    pub(crate) fn implicit_weights(&self) -> Option<ImplicitWeights> {
        match self.feedback {
            Feedback::Implicit { alpha, confidence, loss } => Some(ImplicitWeights { alpha, confidence, loss }),
            Feedback::Explicit { .. } => None,
        }
    }
}
