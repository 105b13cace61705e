//! Solver settings on the wire: conversions between core `SolveParams` and
//! the protocol's `SolverSpec`, validating everything that arrives.

use als_core::linalg::Backend;
use als_core::side::Side;
use als_core::solve::{Confidence, Feedback, RegScaling, SolveParams, SolverKind};

use crate::pb;

pub fn side_to_pb(s: Side) -> pb::Side {
    match s {
        Side::Users => pb::Side::Users,
        Side::Items => pb::Side::Items,
    }
}

pub fn side_from_pb(v: i32) -> Result<Side, String> {
    match pb::Side::try_from(v) {
        Ok(pb::Side::Users) => Ok(Side::Users),
        Ok(pb::Side::Items) => Ok(Side::Items),
        _ => Err(format!("invalid side {v}")),
    }
}

pub fn spec_from_params(p: &SolveParams) -> pb::SolverSpec {
    let mut s = pb::SolverSpec {
        factors: p.factors as u32,
        lambda: p.lambda,
        reg_scaling: match p.reg_scaling {
            RegScaling::Count => "count",
            RegScaling::None => "none",
        }
        .into(),
        backend: p.backend.name().into(),
        ..Default::default()
    };
    match p.feedback {
        Feedback::Explicit { biased, global_mean } => {
            s.feedback = "explicit".into();
            s.biased = biased;
            s.global_mean = global_mean;
        }
        Feedback::Implicit { alpha, confidence } => {
            s.feedback = "implicit".into();
            s.alpha = alpha;
            match confidence {
                Confidence::Linear => s.confidence = "linear".into(),
                Confidence::Log { epsilon } => {
                    s.confidence = "log".into();
                    s.epsilon = epsilon;
                }
            }
        }
    }
    match p.solver {
        SolverKind::Cholesky => s.solver = "cholesky".into(),
        SolverKind::Cg { steps } => {
            s.solver = "cg".into();
            s.cg_steps = steps as u32;
        }
    }
    s
}

/// Largest factor count a worker accepts (bounds per-row scratch memory).
pub const MAX_FACTORS: u32 = als_core::limits::MAX_FACTORS as u32;

pub fn params_from_spec(s: &pb::SolverSpec) -> Result<SolveParams, String> {
    if s.factors == 0 || s.factors > MAX_FACTORS {
        return Err(format!("factors must be in 1..={MAX_FACTORS}, got {}", s.factors));
    }
    let finite_nonneg = |name: &str, v: f32| {
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(format!("{name} must be a finite number >= 0, got {v}"))
        }
    };
    let lambda = finite_nonneg("lambda", s.lambda)?;
    let reg_scaling = s.reg_scaling.parse::<RegScaling>()?;
    let backend = s.backend.parse::<Backend>()?;
    let feedback = match s.feedback.as_str() {
        "explicit" => {
            if !s.global_mean.is_finite() {
                return Err("global mean is not finite".into());
            }
            Feedback::Explicit {
                biased: s.biased,
                global_mean: s.global_mean,
            }
        }
        "implicit" => {
            let alpha = finite_nonneg("alpha", s.alpha)?;
            let confidence = match s.confidence.as_str() {
                "linear" => Confidence::Linear,
                "log" if s.epsilon.is_finite() && s.epsilon > 0.0 => Confidence::Log { epsilon: s.epsilon },
                "log" => return Err(format!("epsilon must be > 0, got {}", s.epsilon)),
                other => return Err(format!("unknown confidence '{other}'")),
            };
            Feedback::Implicit { alpha, confidence }
        }
        other => return Err(format!("unknown feedback '{other}'")),
    };
    let solver = match s.solver.as_str() {
        "cholesky" => SolverKind::Cholesky,
        "cg" if s.cg_steps > 0 && s.cg_steps <= 1000 => SolverKind::Cg {
            steps: s.cg_steps as usize,
        },
        "cg" => return Err(format!("cg steps must be in 1..=1000, got {}", s.cg_steps)),
        other => return Err(format!("unknown solver '{other}'")),
    };
    if matches!(feedback, Feedback::Explicit { .. }) && matches!(solver, SolverKind::Cg { .. }) {
        return Err("the cg solver applies to implicit feedback only".into());
    }
    Ok(SolveParams {
        factors: s.factors as usize,
        lambda,
        reg_scaling,
        feedback,
        solver,
        backend,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_and_bad_specs_are_refused() {
        let p = SolveParams {
            factors: 8,
            lambda: 0.1,
            reg_scaling: RegScaling::None,
            feedback: Feedback::Implicit {
                alpha: 4.0,
                confidence: Confidence::Log { epsilon: 0.5 },
            },
            solver: SolverKind::Cg { steps: 3 },
            backend: Backend::Faer,
        };
        assert_eq!(params_from_spec(&spec_from_params(&p)).unwrap(), p);
        let e = SolveParams {
            feedback: Feedback::Explicit {
                biased: true,
                global_mean: 3.5,
            },
            solver: SolverKind::Cholesky,
            ..p
        };
        assert_eq!(params_from_spec(&spec_from_params(&e)).unwrap(), e);
        let mut bad = spec_from_params(&p);
        bad.lambda = f32::NAN;
        assert!(params_from_spec(&bad).is_err());
        let mut bad = spec_from_params(&p);
        bad.factors = 0;
        assert!(params_from_spec(&bad).is_err());
        let mut bad = spec_from_params(&p);
        bad.feedback = "other".into();
        assert!(params_from_spec(&bad).is_err());
        assert!(side_from_pb(0).is_err());
    }
}
