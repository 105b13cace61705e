//! Value parsers shared by the argument groups: each refuses what the
//! setting cannot take, with the reason, before any work starts.

pub(crate) fn ratio(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!("must be strictly between 0 and 1, got {s}"))
    }
}

/// A fraction in [0, 1): [`ratio`] that also takes 0 (none).
pub(crate) fn ratio_or_zero(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(0.0) => Ok(0.0),
        _ => ratio(s).map_err(|_| format!("must be 0 or strictly between 0 and 1, got {s}")),
    }
}

pub(crate) fn non_negative_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s.trim().parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("must be a finite number >= 0, got {s}"))
    }
}

pub(crate) fn positive_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s.trim().parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("must be a finite number > 0, got {s}"))
    }
}

pub(crate) fn finite_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s.trim().parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("must be a finite number, got {s}"))
    }
}

pub(crate) fn positive_usize(s: &str) -> Result<usize, String> {
    let v: usize = s.trim().parse().map_err(|_| format!("'{s}' is not a non-negative integer"))?;
    if v > 0 {
        Ok(v)
    } else {
        Err("must be at least 1".into())
    }
}

/// Folds of a k-fold split: one fold trains nothing.
pub(crate) fn folds(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(v) if v >= 2 => Ok(v),
        _ => Err(format!("must be an integer >= 2, got {s}")),
    }
}

/// Seconds a worker may stay silent: positive and finite.
pub(crate) fn seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("must be a positive number of seconds, got {s}")),
    }
}
