//! The values of one grid axis on the command line: a comma-separated list
//! whose entries are single values or ranges, `LO:HI:log:N` (N log-spaced
//! points, both ends included: the shape regularization searches take) or
//! `LO:HI:lin:N` (N evenly spaced points).

use std::fmt;

/// Most points one range may expand to: a grid is trained fold by fold, so
/// a range of thousands is a typo, not a plan.
pub const MAX_RANGE_POINTS: usize = 64;

/// One comma-separated entry of an axis: its values, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisEntry<T>(pub Vec<T>);

impl<T: fmt::Display> fmt::Display for AxisEntry<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(T::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

impl<T> AxisEntry<T> {
    pub fn one(v: T) -> Self {
        AxisEntry(vec![v])
    }
}

/// The values of an axis: every entry's, in order, each value once.
pub fn values<T: Copy + PartialEq>(entries: &[AxisEntry<T>]) -> Vec<T> {
    distinct(entries.iter().flat_map(|e| e.0.iter().copied()))
}

/// Each value once, in first-seen order.
pub fn distinct<T: PartialEq>(values: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// A number, or the points of a `LO:HI:log:N` / `LO:HI:lin:N` range.
fn points(s: &str) -> Result<Vec<f64>, String> {
    let s = s.trim();
    let parts: Vec<&str> = s.split(':').collect();
    let num = |t: &str| -> Result<f64, String> {
        match t.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(format!("'{t}' is not a finite number (in '{s}')")),
        }
    };
    match parts.as_slice() {
        [one] => Ok(vec![num(one)?]),
        [lo, hi, scale, n] => {
            let (lo, hi) = (num(lo)?, num(hi)?);
            let n: usize = match n.trim().parse() {
                Ok(n) if (2..=MAX_RANGE_POINTS).contains(&n) => n,
                _ => return Err(format!("the point count of '{s}' must be an integer in 2..={MAX_RANGE_POINTS}")),
            };
            if lo >= hi {
                return Err(format!("a range runs from low to high, got '{s}'"));
            }
            let at = |j: usize| j as f64 / (n - 1) as f64;
            match scale.trim() {
                "lin" => Ok((0..n).map(|j| lo + (hi - lo) * at(j)).collect()),
                "log" if lo > 0.0 => {
                    let (a, b) = (lo.ln(), hi.ln());
                    // Ends exact, so `1e-4:1e-1:log:4` gives 0.0001 and 0.1 themselves.
                    Ok((0..n)
                        .map(|j| {
                            if j == 0 {
                                lo
                            } else if j == n - 1 {
                                hi
                            } else {
                                (a + (b - a) * at(j)).exp()
                            }
                        })
                        .collect())
                }
                "log" => Err(format!("a log range needs a low end > 0, got '{s}'")),
                other => Err(format!("range scale '{other}' is neither 'log' nor 'lin' (in '{s}')")),
            }
        }
        _ => Err(format!("'{s}' is neither a number nor a range LO:HI:log:N or LO:HI:lin:N")),
    }
}

/// λ or α entries: finite and >= 0.
pub fn non_negative_f32(s: &str) -> Result<AxisEntry<f32>, String> {
    let v = points(s)?;
    if let Some(bad) = v.iter().find(|&&x| x < 0.0) {
        return Err(format!("values must be >= 0, got {bad} (in '{s}')"));
    }
    Ok(AxisEntry(v.into_iter().map(|x| x as f32).collect()))
}

/// Factor counts: positive integers; range points round to the nearest one
/// (repeats after rounding are dropped).
pub fn positive_usize(s: &str) -> Result<AxisEntry<usize>, String> {
    let v = points(s)?;
    let single = !s.contains(':');
    let mut out: Vec<usize> = Vec::new();
    for x in v {
        if single && x.fract() != 0.0 {
            return Err(format!("'{s}' is not an integer"));
        }
        let r = x.round();
        if r < 1.0 {
            return Err(format!("values must be at least 1, got {x} (in '{s}')"));
        }
        let r = r as usize;
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(AxisEntry(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_and_linear_ranges() {
        let l = non_negative_f32("1e-4:1e-1:log:4").unwrap().0;
        // 10^-4, 10^-3, 10^-2, 10^-1, the ends exact.
        assert_eq!((l[0], l[3]), (1e-4, 1e-1));
        for (got, want) in l.iter().zip([1e-4f32, 1e-3, 1e-2, 1e-1]) {
            assert!((got / want - 1.0).abs() < 1e-5, "{l:?}");
        }
        assert_eq!(non_negative_f32("0:1:lin:5").unwrap().0, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(non_negative_f32(" 0.05 ").unwrap().0, vec![0.05]);
        // 16 * 2^j for j in 0..5: 16, 32, 64, 128, 256.
        assert_eq!(positive_usize("16:256:log:5").unwrap().0, vec![16, 32, 64, 128, 256]);
        // Rounding repeats are dropped: 1, 1.41, 2 -> 1, 2.
        assert_eq!(positive_usize("1:2:log:3").unwrap().0, vec![1, 2]);
        assert_eq!(
            values(&[AxisEntry(vec![0.1f32, 0.2]), AxisEntry::one(0.1), AxisEntry::one(0.3)]),
            vec![0.1, 0.2, 0.3]
        );
    }

    #[test]
    fn bad_entries_say_why() {
        for (s, why) in [
            ("0:1:log:3", "low end > 0"),
            ("1:0.1:log:3", "low to high"),
            ("0.1:1:log:1", "2..=64"),
            ("0.1:1:log:65", "2..=64"),
            ("0.1:1:cubic:3", "neither 'log' nor 'lin'"),
            ("0.1:1:log", "neither a number nor a range"),
            ("x", "not a finite number"),
            ("-1", ">= 0"),
            ("nan", "not a finite number"),
        ] {
            let e = non_negative_f32(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
        assert!(positive_usize("2.5").unwrap_err().contains("not an integer"));
        assert!(positive_usize("0").unwrap_err().contains("at least 1"));
        assert!(positive_usize("0.1:0.3:lin:3").unwrap_err().contains("at least 1"));
    }
}
