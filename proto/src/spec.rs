//! Solver settings on the wire: conversions between core `SolveParams` and
//! the protocol's `SolverSpec`, validating everything that arrives.

use als_core::limits::{MAX_REG_EXPONENT, MAX_UNOBSERVED_WEIGHT};
use als_core::linalg::Backend;
use als_core::side::Side;
use als_core::solve::{Confidence, Feedback, ImplicitLoss, RegScaling, SolveParams, SolverKind, TermsWanted};

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

pub fn terms_to_pb(t: Option<TermsWanted>) -> pb::Terms {
    match t {
        None => pb::Terms::None,
        Some(TermsWanted::Reg) => pb::Terms::Reg,
        Some(TermsWanted::Full) => pb::Terms::Full,
    }
}

pub fn terms_from_pb(v: i32) -> Result<Option<TermsWanted>, String> {
    match pb::Terms::try_from(v) {
        Ok(pb::Terms::None) => Ok(None),
        Ok(pb::Terms::Reg) => Ok(Some(TermsWanted::Reg)),
        Ok(pb::Terms::Full) => Ok(Some(TermsWanted::Full)),
        Err(_) => Err(format!("invalid objective terms {v}")),
    }
}

pub fn spec_from_params(p: &SolveParams) -> pb::SolverSpec {
    let mut s = pb::SolverSpec {
        factors: p.factors as u32,
        lambda: p.lambda,
        reg_scaling: match p.reg_scaling {
            RegScaling::Count => pb::RegScaling::Count,
            RegScaling::None => pb::RegScaling::None,
        } as i32,
        backend: match p.backend {
            Backend::Faer => pb::Backend::Faer,
            Backend::Lapack => pb::Backend::Lapack,
        } as i32,
        ..Default::default()
    };
    match p.feedback {
        Feedback::Explicit { biased, global_mean } => {
            s.feedback = pb::Feedback::Explicit as i32;
            s.biased = biased;
            s.global_mean = global_mean;
        }
        Feedback::Implicit { alpha, confidence, loss } => {
            s.feedback = pb::Feedback::Implicit as i32;
            s.alpha = alpha;
            match loss {
                ImplicitLoss::Hu => s.implicit_loss = pb::ImplicitLoss::Hu as i32,
                ImplicitLoss::Ials {
                    unobserved_weight,
                    reg_exponent,
                    confidence_weights,
                } => {
                    s.implicit_loss = pb::ImplicitLoss::Ials as i32;
                    s.unobserved_weight = unobserved_weight;
                    s.reg_exponent = reg_exponent;
                    s.confidence_weights = confidence_weights;
                }
            }
            match confidence {
                Confidence::Linear => s.confidence = pb::Confidence::Linear as i32,
                Confidence::Log { epsilon } => {
                    s.confidence = pb::Confidence::Log as i32;
                    s.epsilon = epsilon;
                }
            }
        }
    }
    match p.solver {
        SolverKind::Cholesky => s.solver = pb::Solver::Cholesky as i32,
        SolverKind::Cg { steps } => {
            s.solver = pb::Solver::Cg as i32;
            s.cg_steps = steps as u32;
        }
        SolverKind::Ialspp { block, sweeps } => {
            s.solver = pb::Solver::Ialspp as i32;
            s.block_size = block as u32;
            s.sweeps = sweeps as u32;
        }
    }
    s
}

/// Largest factor count a worker accepts (bounds per-row scratch memory).
pub const MAX_FACTORS: u32 = als_core::limits::MAX_FACTORS as u32;

/// Largest CG step or iALS++ sweep count a worker accepts.
const MAX_PASSES: u32 = als_core::limits::MAX_ROW_PASSES as u32;

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
    let at_most = |name: &str, v: f32, max: f32| {
        finite_nonneg(name, v).and_then(|v| {
            if v <= max {
                Ok(v)
            } else {
                Err(format!("{name} must be at most {max}, got {v}"))
            }
        })
    };
    let lambda = finite_nonneg("lambda", s.lambda)?;
    let reg_scaling = match pb::RegScaling::try_from(s.reg_scaling) {
        Ok(pb::RegScaling::Count) => RegScaling::Count,
        Ok(pb::RegScaling::None) => RegScaling::None,
        _ => return Err(format!("unknown reg scaling {}", s.reg_scaling)),
    };
    let backend = match pb::Backend::try_from(s.backend) {
        // Core refuses a backend this build lacks, by name.
        Ok(pb::Backend::Faer) => Backend::Faer,
        Ok(pb::Backend::Lapack) => "lapack".parse::<Backend>()?,
        _ => return Err(format!("unknown backend {}", s.backend)),
    };
    let feedback = match pb::Feedback::try_from(s.feedback) {
        Ok(pb::Feedback::Explicit) => {
            if !s.global_mean.is_finite() {
                return Err("global mean is not finite".into());
            }
            Feedback::Explicit {
                biased: s.biased,
                global_mean: s.global_mean,
            }
        }
        Ok(pb::Feedback::Implicit) => {
            let alpha = finite_nonneg("alpha", s.alpha)?;
            let confidence = match pb::Confidence::try_from(s.confidence) {
                Ok(pb::Confidence::Linear) => Confidence::Linear,
                Ok(pb::Confidence::Log) if s.epsilon.is_finite() && s.epsilon > 0.0 => Confidence::Log { epsilon: s.epsilon },
                Ok(pb::Confidence::Log) => return Err(format!("epsilon must be > 0, got {}", s.epsilon)),
                _ => return Err(format!("unknown confidence {}", s.confidence)),
            };
            let loss = match pb::ImplicitLoss::try_from(s.implicit_loss) {
                Ok(pb::ImplicitLoss::Hu) => ImplicitLoss::Hu,
                Ok(pb::ImplicitLoss::Ials) => ImplicitLoss::Ials {
                    unobserved_weight: at_most("unobserved weight", s.unobserved_weight, MAX_UNOBSERVED_WEIGHT)?,
                    reg_exponent: at_most("reg exponent", s.reg_exponent, MAX_REG_EXPONENT)?,
                    confidence_weights: s.confidence_weights,
                },
                _ => return Err(format!("unknown implicit loss {}", s.implicit_loss)),
            };
            Feedback::Implicit { alpha, confidence, loss }
        }
        _ => return Err(format!("unknown feedback {}", s.feedback)),
    };
    let solver = match pb::Solver::try_from(s.solver) {
        Ok(pb::Solver::Cholesky) => SolverKind::Cholesky,
        Ok(pb::Solver::Cg) if (1..=MAX_PASSES).contains(&s.cg_steps) => SolverKind::Cg {
            steps: s.cg_steps as usize,
        },
        Ok(pb::Solver::Cg) => return Err(format!("cg steps must be in 1..={MAX_PASSES}, got {}", s.cg_steps)),
        Ok(pb::Solver::Ialspp) if (1..=MAX_FACTORS).contains(&s.block_size) && (1..=MAX_PASSES).contains(&s.sweeps) => SolverKind::Ialspp {
            block: s.block_size as usize,
            sweeps: s.sweeps as usize,
        },
        Ok(pb::Solver::Ialspp) => {
            return Err(format!(
                "ialspp needs a block size in 1..={MAX_FACTORS} and sweeps in 1..={MAX_PASSES}, got {} and {}",
                s.block_size, s.sweeps
            ))
        }
        _ => return Err(format!("unknown solver {}", s.solver)),
    };
    if matches!(feedback, Feedback::Explicit { .. }) && !matches!(solver, SolverKind::Cholesky) {
        return Err("the cg and ialspp solvers apply to implicit feedback only".into());
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
                loss: ImplicitLoss::Hu,
            },
            solver: SolverKind::Cg { steps: 3 },
            backend: Backend::Faer,
        };
        assert_eq!(params_from_spec(&spec_from_params(&p)).unwrap(), p);
        let ials = SolveParams {
            feedback: Feedback::Implicit {
                alpha: 2.0,
                confidence: Confidence::Linear,
                loss: ImplicitLoss::Ials {
                    unobserved_weight: 0.1,
                    reg_exponent: 1.0,
                    confidence_weights: true,
                },
            },
            ..p
        };
        assert_eq!(params_from_spec(&spec_from_params(&ials)).unwrap(), ials);
        let ialspp = SolveParams {
            solver: SolverKind::Ialspp { block: 4, sweeps: 2 },
            ..ials
        };
        assert_eq!(params_from_spec(&spec_from_params(&ialspp)).unwrap(), ialspp);
        for (block, sweeps) in [(0, 1), (5000, 1), (4, 0), (4, 1001)] {
            let mut bad = spec_from_params(&ialspp);
            (bad.block_size, bad.sweeps) = (block, sweeps);
            assert!(params_from_spec(&bad).unwrap_err().starts_with("ialspp needs"), "{block} {sweeps}");
        }
        let mut bad = spec_from_params(&ialspp);
        bad.feedback = pb::Feedback::Explicit as i32;
        assert!(params_from_spec(&bad).unwrap_err().contains("implicit feedback only"));
        for (field, value, want) in [
            (0, f32::NAN, "unobserved weight must be a finite number >= 0, got NaN"),
            (0, -1.0, "unobserved weight must be a finite number >= 0, got -1"),
            (1, 2.5, "reg exponent must be at most 2, got 2.5"),
        ] {
            let mut bad = spec_from_params(&ials);
            if field == 0 {
                bad.unobserved_weight = value;
            } else {
                bad.reg_exponent = value;
            }
            assert_eq!(params_from_spec(&bad).unwrap_err(), want);
        }
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
        bad.feedback = 7;
        assert_eq!(params_from_spec(&bad).unwrap_err(), "unknown feedback 7");
        for unspecified in [
            |s: &mut pb::SolverSpec| s.feedback = 0,
            |s: &mut pb::SolverSpec| s.solver = 0,
            |s: &mut pb::SolverSpec| s.confidence = 0,
            |s: &mut pb::SolverSpec| s.implicit_loss = 0,
            |s: &mut pb::SolverSpec| s.reg_scaling = 0,
            |s: &mut pb::SolverSpec| s.backend = 0,
        ] {
            let mut bad = spec_from_params(&p);
            unspecified(&mut bad);
            assert!(params_from_spec(&bad).unwrap_err().starts_with("unknown"));
        }
        assert!(side_from_pb(0).is_err());
    }
}
