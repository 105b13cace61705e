//! The update of one rating.

/// The constants of an epoch's updates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    /// γ.
    pub learning_rate: f32,
    /// λ, applied at every update (so a row with n ratings is pulled n times).
    pub lambda: f32,
    /// μ, the training mean (0 for unbiased models).
    pub global_mean: f32,
    /// Learn bᵤ and bᵢ.
    pub biased: bool,
}

/// One SGD step on rating `r` (Surprise's SVD order: biases, then factors
/// from their values before the step). `bu`/`bi` are ignored when the model
/// is unbiased. Returns the error e before the step.
#[inline]
pub fn update(step: &SgdStep, r: f32, pu: &mut [f32], bu: &mut f32, qi: &mut [f32], bi: &mut f32) -> f32 {
    let dot: f32 = pu.iter().zip(qi.iter()).map(|(p, q)| p * q).sum();
    let pred = if step.biased { step.global_mean + *bu + *bi + dot } else { dot };
    let e = r - pred;
    let (lr, lam) = (step.learning_rate, step.lambda);
    if step.biased {
        *bu += lr * (e - lam * *bu);
        *bi += lr * (e - lam * *bi);
    }
    for (p, q) in pu.iter_mut().zip(qi.iter_mut()) {
        let (p0, q0) = (*p, *q);
        *p += lr * (e * q0 - lam * p0);
        *q += lr * (e * p0 - lam * q0);
    }
    e
}
