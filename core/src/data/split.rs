//! Train/test splits, reproducible on every machine for a seed.
//!
//! The ratio split is exactly protocol step 2 of `shared/anchors/common.py`
//! (rows ordered by SplitMix64 keys), so our test sets equal the reference
//! tools' test sets row for row.

use super::{DataError, RawRatings};
use crate::rng::splitmix64_nth;

#[derive(Debug, Clone, PartialEq)]
pub enum SplitSpec {
    /// Everything is training data.
    None,
    /// The first floor(n·test_frac) rows in SplitMix64-key order are test rows.
    Ratio { test_frac: f64, seed: u64 },
    /// Per user: that user's rows in key order; the first floor(nᵤ·test_frac)
    /// are test rows, but every user keeps at least one training row.
    PerUser { test_frac: f64, seed: u64 },
    /// The latest floor(n·test_frac) rows by timestamp (ties by row) are test rows.
    Temporal { test_frac: f64 },
    /// Fold f of k: positions p of the key order with p % k == f are test rows.
    KFold { folds: usize, fold: usize, seed: u64 },
}

fn check_frac(f: f64) -> Result<(), DataError> {
    if (0.0..1.0).contains(&f) {
        Ok(())
    } else {
        Err(DataError::Split(format!("test fraction must be in [0, 1), got {f}")))
    }
}

/// Row indices in (key, row) order: the protocol's shuffle.
fn key_order(n: usize, seed: u64) -> Vec<usize> {
    let mut keyed: Vec<(u64, usize)> = (0..n).map(|i| (splitmix64_nth(seed, i as u64), i)).collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// (train rows, test rows), each ascending, disjoint, together all rows.
pub fn split_rows(raw: &RawRatings, spec: &SplitSpec) -> Result<(Vec<usize>, Vec<usize>), DataError> {
    let n = raw.len();
    let mut is_test = vec![false; n];
    match *spec {
        SplitSpec::None => {}
        SplitSpec::Ratio { test_frac, seed } => {
            check_frac(test_frac)?;
            let n_test = (n as f64 * test_frac).floor() as usize;
            for &i in key_order(n, seed).iter().take(n_test) {
                is_test[i] = true;
            }
        }
        SplitSpec::PerUser { test_frac, seed } => {
            check_frac(test_frac)?;
            let mut by_user: Vec<Vec<usize>> = vec![Vec::new(); raw.user_tokens.len()];
            for i in key_order(n, seed) {
                by_user[raw.users[i] as usize].push(i);
            }
            for rows in by_user {
                let n_test = ((rows.len() as f64 * test_frac).floor() as usize).min(rows.len().saturating_sub(1));
                for &i in rows.iter().take(n_test) {
                    is_test[i] = true;
                }
            }
        }
        SplitSpec::Temporal { test_frac } => {
            check_frac(test_frac)?;
            let ts = raw.timestamps.as_ref().ok_or_else(|| DataError::Split(format!("{}: the temporal split needs a timestamp column", raw.source)))?;
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by_key(|&i| (ts[i], i));
            let n_test = (n as f64 * test_frac).floor() as usize;
            for &i in order.iter().rev().take(n_test) {
                is_test[i] = true;
            }
        }
        SplitSpec::KFold { folds, fold, seed } => {
            if folds < 2 || fold >= folds {
                return Err(DataError::Split(format!("k-fold needs folds >= 2 and fold < folds, got fold {fold} of {folds}")));
            }
            for (p, i) in key_order(n, seed).into_iter().enumerate() {
                if p % folds == fold {
                    is_test[i] = true;
                }
            }
        }
    }
    let (mut train, mut test) = (Vec::with_capacity(n), Vec::new());
    for (i, t) in is_test.into_iter().enumerate() {
        if t {
            test.push(i)
        } else {
            train.push(i)
        }
    }
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(users: &[u32], ts: Option<Vec<i64>>) -> RawRatings {
        let nu = users.iter().max().map_or(0, |m| m + 1);
        RawRatings {
            source: "t".into(),
            user_tokens: (0..nu).map(|u| u.to_string()).collect(),
            item_tokens: vec!["i".into()],
            users: users.to_vec(),
            items: vec![0; users.len()],
            ratings: vec![1.0; users.len()],
            timestamps: ts,
            skipped_lines: 0,
        }
    }

    #[test]
    fn ratio_split_matches_the_protocol() {
        let r = raw(&[0; 10], None);
        let (train, test) = split_rows(&r, &SplitSpec::Ratio { test_frac: 0.2, seed: 42 }).unwrap();
        // Independent re-statement of protocol step 2.
        let mut keys: Vec<(u64, usize)> = (0..10u64)
            .map(|i| {
                let mut z = 42u64.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31), i as usize)
            })
            .collect();
        keys.sort();
        let mut want: Vec<usize> = keys[..2].iter().map(|k| k.1).collect();
        want.sort();
        assert_eq!(test, want);
        assert_eq!(train.len(), 8);
        assert_eq!(split_rows(&r, &SplitSpec::Ratio { test_frac: 0.2, seed: 42 }).unwrap().1, test);
        assert_ne!(split_rows(&r, &SplitSpec::Ratio { test_frac: 0.5, seed: 7 }).unwrap().1, split_rows(&r, &SplitSpec::Ratio { test_frac: 0.5, seed: 8 }).unwrap().1);
        assert!(split_rows(&r, &SplitSpec::Ratio { test_frac: 1.0, seed: 1 }).is_err());
    }

    #[test]
    fn kfold_partitions_rows_and_per_user_keeps_training_rows() {
        let r = raw(&[0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 3], None);
        let mut all = Vec::new();
        for f in 0..3 {
            let (train, test) = split_rows(&r, &SplitSpec::KFold { folds: 3, fold: f, seed: 1 }).unwrap();
            assert_eq!(train.len() + test.len(), r.len());
            assert!(train.iter().all(|i| !test.contains(i)));
            all.extend(test);
        }
        all.sort();
        assert_eq!(all, (0..r.len()).collect::<Vec<_>>());
        assert!(split_rows(&r, &SplitSpec::KFold { folds: 3, fold: 3, seed: 1 }).is_err());
        let (train, test) = split_rows(&r, &SplitSpec::PerUser { test_frac: 0.6, seed: 1 }).unwrap();
        for u in 0..4u32 {
            assert!(train.iter().any(|&i| r.users[i] == u), "user {u} kept no training row");
        }
        assert_eq!(test.iter().filter(|&&i| r.users[i] == 3).count(), 3);
    }

    #[test]
    fn temporal_split_puts_latest_rows_in_test() {
        let r = raw(&[0, 1, 2, 3, 4], Some(vec![50, 10, 40, 20, 30]));
        let (_, test) = split_rows(&r, &SplitSpec::Temporal { test_frac: 0.4 }).unwrap();
        assert_eq!(test, vec![0, 2]);
        assert!(split_rows(&raw(&[0], None), &SplitSpec::Temporal { test_frac: 0.2 }).is_err());
    }
}
