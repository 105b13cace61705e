//! Ratings and timestamps: a Clinger fast path for short decimals.

use super::scan::show;

pub(super) const POW10: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

/// Decimals of at most 7 significant digits and 10 decimals (`3`, `4.5`, `-0.25`): both the digits and
/// the power of ten are exact in f32, so one division is correctly rounded,
/// i.e. equal to `str::parse::<f32>` (Clinger's fast path).
#[inline]
pub(super) fn fast_decimal(f: &[u8]) -> Option<f32> {
    let (neg, d) = match f.first()? {
        b'-' => (true, &f[1..]),
        b'+' => (false, &f[1..]),
        _ => (false, f),
    };
    let (mut m, mut digits, mut sig, mut frac, mut dot) = (0u32, 0u32, 0u32, 0usize, false);
    for &b in d {
        match b {
            b'0'..=b'9' => {
                // Leading zeros do not count against the 7 significant digits.
                if m != 0 || b != b'0' {
                    sig += 1;
                    if sig > 7 {
                        return None;
                    }
                }
                digits += 1;
                m = m * 10 + (b - b'0') as u32;
                frac += dot as usize;
                if frac > 10 {
                    return None;
                }
            }
            b'.' if !dot => dot = true,
            _ => return None,
        }
    }
    if digits == 0 {
        return None;
    }
    let v = m as f32 / POW10[frac];
    Some(if neg { -v } else { v })
}

#[inline]
pub(super) fn parse_rating(f: &[u8]) -> Result<f32, String> {
    // At most 7 significant digits and 10 decimals: always inside the range.
    if let Some(v) = fast_decimal(f) {
        return Ok(v);
    }
    match std::str::from_utf8(f).ok().and_then(|s| s.parse::<f32>().ok()) {
        Some(v) if !v.is_finite() => Err(format!("rating '{}' is not finite", show(f))),
        Some(v) if v.abs() > crate::limits::MAX_ABS_VALUE => Err(format!(
            "rating '{}' is outside the supported range ±{:e}",
            show(f),
            crate::limits::MAX_ABS_VALUE
        )),
        Some(v) => Ok(v),
        None => Err(format!("rating '{}' is not a number", show(f))),
    }
}

#[inline]
pub(super) fn parse_ts(f: &[u8]) -> Result<i64, String> {
    let (neg, d) = match f.first() {
        Some(b'-') => (true, &f[1..]),
        Some(b'+') => (false, &f[1..]),
        _ => (false, f),
    };
    if !d.is_empty() && d.len() <= 18 {
        let mut v = 0i64;
        let mut ok = true;
        for &b in d {
            let x = b.wrapping_sub(b'0');
            if x > 9 {
                ok = false;
                break;
            }
            v = v * 10 + x as i64;
        }
        if ok {
            return Ok(if neg { -v } else { v });
        }
    }
    std::str::from_utf8(f)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| format!("timestamp '{}' is not an integer", show(f)))
}
