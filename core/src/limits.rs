//! The documented ranges of every number the product reads: from a file, a
//! flag, a request or a message. Each is checked at the edge where it
//! arrives, so no `inf` or `NaN` can arise inside a model: with every value
//! and setting inside these ranges, the f64 normal equations and the f32
//! factors and scores stay finite.

/// Largest magnitude of a rating or an implicit-feedback value (after
/// duplicates are merged). Its square, times the confidence, stays far
/// inside f32 and f64.
pub const MAX_ABS_VALUE: f32 = 1e9;

/// Largest factor count (bounds per-row scratch memory, also on workers).
pub const MAX_FACTORS: usize = 4096;

/// Largest regularization λ.
pub const MAX_LAMBDA: f32 = 1e6;

/// Largest confidence scale α of implicit feedback.
pub const MAX_ALPHA: f32 = 1e6;

/// Largest weight α₀ of the unobserved pairs of the iALS loss.
pub const MAX_UNOBSERVED_WEIGHT: f32 = 1e6;

/// Largest exponent ν of the iALS regularization λ·(n + α₀·N)^ν (the
/// papers use 0 to 1; beyond 2 the row's λ can leave f32).
pub const MAX_REG_EXPONENT: f32 = 2.0;

/// Range of the standard deviation of Gaussian initial factors (before the
/// 1/√k scaling): zero factors would stay zero under the iALS loss.
pub const INIT_STD_RANGE: (f32, f32) = (1e-6, 10.0);

/// Range of ε of the log confidence 1 + α·ln(1 + r/ε).
pub const EPSILON_RANGE: (f32, f32) = (1e-9, 1e9);

/// Largest number of CG steps or iALS++ sweeps per row a worker accepts, and
/// of sweeps a run accepts.
pub const MAX_ROW_PASSES: usize = 1000;

/// Largest ranking cutoff K (top-K lists are K entries per evaluated user).
pub const MAX_RANKING_K: usize = 1000;

/// Largest SGD learning rate (a step that diverges below it is caught by the
/// divergence check; beyond it every dataset diverges).
pub const MAX_LEARNING_RATE: f32 = 10.0;

/// Largest noise precision α of Gibbs sampling (a noise standard deviation
/// of 0.001 rating units; the row systems scale by it).
pub const MAX_NOISE_PRECISION: f32 = 1e6;

/// A rating or feedback value inside ±[`MAX_ABS_VALUE`]; the error says why not.
pub fn check_value(v: f32) -> Result<f32, String> {
    if !v.is_finite() {
        Err(format!("value {v} is not finite"))
    } else if v.abs() > MAX_ABS_VALUE {
        Err(format!("value {v:e} is outside the supported range ±{MAX_ABS_VALUE:e}"))
    } else {
        Ok(v)
    }
}

/// `v` in `lo..=hi` (finite); `what` names the setting in the error.
pub fn check_range(what: &str, v: f32, lo: f32, hi: f32) -> Result<f32, String> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        let shown = if v.abs() >= 1e6 { format!("{v:e}") } else { v.to_string() };
        Err(format!("{what} must be in {lo}..={hi:e}, got {shown}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_at_and_beyond_the_edges() {
        assert_eq!(check_value(-1e9), Ok(-1e9));
        assert_eq!(check_value(4.5), Ok(4.5));
        assert!(check_value(3e38).unwrap_err().contains("outside the supported range"));
        assert!(check_value(f32::INFINITY).unwrap_err().contains("not finite"));
        assert!(check_value(f32::NAN).is_err());
        assert!(check_range("lambda", 0.0, 0.0, MAX_LAMBDA).is_ok());
        assert!(check_range("lambda", 2e6, 0.0, MAX_LAMBDA).is_err());
        assert!(check_range("lambda", -0.1, 0.0, MAX_LAMBDA).is_err());
    }
}
