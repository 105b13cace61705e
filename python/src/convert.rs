//! Python values into the engine's types, with errors Python users can act on.

use als_core::data::Csr;
use als_core::linalg::Backend;
use als_core::solve::{Confidence, ImplicitLoss, RegScaling, SolverKind};
use als_core::train::{Field, ImplicitConfig, TrainConfig};
use numpy::PyReadonlyArray1;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

/// Why a call failed, by the Python exception it becomes.
#[derive(Debug)]
pub(crate) enum NativeError {
    /// The input or a setting is wrong (`ValueError`).
    Value(String),
    /// The input was fine but the work failed (`RuntimeError`).
    Runtime(String),
}

impl From<NativeError> for PyErr {
    fn from(e: NativeError) -> PyErr {
        match e {
            NativeError::Value(m) => PyValueError::new_err(m),
            NativeError::Runtime(m) => PyRuntimeError::new_err(m),
        }
    }
}

/// The model settings, as the Python layer passes them (every key present).
#[derive(Debug, Clone, FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct Settings {
    pub factors: usize,
    pub iterations: usize,
    pub regularization: f32,
    /// "none" (plain λ, as `implicit`) or "count" (λ·n, as Spark).
    pub reg_scaling: String,
    pub implicit: bool,
    pub alpha: f32,
    /// "linear" or "log".
    pub confidence: String,
    pub epsilon: f32,
    /// "hu" or "ials" (Rendle et al.; then `reg_scaling` is not read).
    pub loss: String,
    /// α₀ and ν of the ials loss.
    pub unobserved_weight: f32,
    pub reg_exponent: f32,
    /// "one" or "confidence": the weight of an observed pair under the ials loss.
    pub observed_weight: String,
    /// σ of N(0, σ²/k) initial factors; None: unit-length vectors.
    pub init_std: Option<f32>,
    /// "cg", "cholesky" or "ialspp".
    pub solver: String,
    pub cg_steps: usize,
    /// iALS++'s coordinates per block and passes per row.
    pub block_size: usize,
    pub sweeps: usize,
    pub biases: bool,
    pub seed: u64,
    pub blocks: usize,
    /// Compute the objective (`calculate_training_loss`).
    pub objective: bool,
    /// μ of a trained explicit model (row solves against it); `fit` computes its own.
    pub global_mean: f32,
}

impl Settings {
    /// The engine's configuration, checked by the engine's own rules.
    pub fn train_config(&self) -> Result<TrainConfig, NativeError> {
        let bad = |m: String| NativeError::Value(m);
        let reg_scaling: RegScaling = self.reg_scaling.parse().map_err(bad)?;
        let solver = match self.solver.as_str() {
            "cg" => SolverKind::Cg { steps: self.cg_steps },
            "cholesky" => SolverKind::Cholesky,
            "ialspp" => SolverKind::Ialspp {
                block: self.block_size,
                sweeps: self.sweeps,
            },
            s => return Err(bad(format!("unknown solver '{s}' (cg, cholesky, ialspp)"))),
        };
        let confidence = match self.confidence.as_str() {
            "linear" => Confidence::Linear,
            "log" => Confidence::Log { epsilon: self.epsilon },
            c => return Err(bad(format!("unknown confidence '{c}' (linear, log)"))),
        };
        let loss = match self.loss.as_str() {
            "hu" => ImplicitLoss::Hu,
            "ials" => ImplicitLoss::Ials {
                unobserved_weight: self.unobserved_weight,
                reg_exponent: self.reg_exponent,
                confidence_weights: match self.observed_weight.as_str() {
                    "one" => false,
                    "confidence" => true,
                    w => return Err(bad(format!("unknown observed_weight '{w}' (one, confidence)"))),
                },
            },
            l => return Err(bad(format!("unknown loss '{l}' (hu, ials)"))),
        };
        let cfg = TrainConfig {
            factors: self.factors,
            iterations: self.iterations,
            lambda: self.regularization,
            reg_scaling,
            implicit: self.implicit.then_some(ImplicitConfig {
                alpha: self.alpha,
                confidence,
                loss,
            }),
            init_std: self.init_std,
            biased: self.biases,
            solver,
            seed: self.seed,
            blocks: self.blocks,
            backend: Backend::Faer,
            // No test set: the one evaluation after the last iteration is empty.
            eval_every: 0,
            objective_every: usize::from(self.objective),
            ..TrainConfig::default()
        };
        cfg.validate().map_err(|e| bad(e.named(param_of(e.field))))?;
        Ok(cfg)
    }
}

/// The Python parameter that sets a configuration field, for error messages.
fn param_of(field: Field) -> &'static str {
    match field {
        Field::Factors => "factors",
        Field::Lambda => "regularization",
        Field::Blocks => "blocks",
        Field::Alpha => "alpha",
        Field::Epsilon => "epsilon",
        Field::Solver => "solver",
        Field::CgSteps => "cg_steps",
        Field::BlockSize => "block_size",
        Field::Sweeps => "sweeps",
        Field::LearningRate => "learning_rate",
        // The package offers ALS only: SGD's and Gibbs' fields are named for completeness.
        Field::BurnIn => "burn_in",
        Field::NoisePrecision => "noise_precision",
        Field::UnobservedWeight => "unobserved_weight",
        Field::RegExponent => "reg_exponent",
        Field::InitStd => "init_std",
        Field::RankingK => "K",
        Field::MinPos => "min_pos",
    }
}

/// A CSR matrix from scipy's three arrays, copied into the engine's layout
/// (it keeps the ratings by row and, transposed, by column anyway).
pub(crate) fn csr_from_arrays(
    indptr: &PyReadonlyArray1<'_, i64>,
    indices: &PyReadonlyArray1<'_, i32>,
    data: &PyReadonlyArray1<'_, f32>,
    n_cols: usize,
) -> Result<Csr, NativeError> {
    let contiguous = |what: &str| NativeError::Value(format!("{what} must be contiguous"));
    let p = indptr.as_slice().map_err(|_| contiguous("indptr"))?;
    let i = indices.as_slice().map_err(|_| contiguous("indices"))?;
    let v = data.as_slice().map_err(|_| contiguous("data"))?;
    if p.is_empty() {
        return Err(NativeError::Value("indptr is empty".into()));
    }
    if let Some(x) = p.iter().find(|&&x| x < 0) {
        return Err(NativeError::Value(format!("indptr has a negative entry {x}")));
    }
    if let Some(x) = i.iter().find(|&&x| x < 0) {
        return Err(NativeError::Value(format!("indices has a negative entry {x}")));
    }
    Ok(Csr {
        n_cols,
        indptr: p.iter().map(|&x| x as usize).collect(),
        indices: i.iter().map(|&x| x as u32).collect(),
        values: v.to_vec(),
    })
}

/// An error and its causes, one after another (what `anyhow`'s `{:#}` prints).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
