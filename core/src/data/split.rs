//! Choosing the training and test rows of one ratings file.
//!
//! [`SplitSpec::Ratio`] is exactly step 2 of the evaluation protocol in
//! `shared/anchors/common.py`: row `i` gets the key `splitmix64_nth(seed, i)`,
//! rows are ordered by `(key, i)` and the first `floor(n * test_frac)` are the
//! test set. The other splits reuse that key order (k-fold, per user) or the
//! timestamps (temporal).
//!
//! [`split_users`] is the strong-generalization protocol of Liang et al.
//! (2018) and Rendle et al.: whole users are held out of training, and each
//! held-out user is folded in on most of their rows and ranked on the rest.

use rayon::prelude::*;

use super::select::{select_kth, TemporalKeys};
use super::{DataError, RawRatings};
use crate::rng::{fnv1a64, mix64, splitmix64_nth, GOLDEN};

/// Fraction of the rows held out for testing, by default.
pub const DEFAULT_TEST_RATIO: f64 = 0.2;
/// Folds of a k-fold split (and of `tune`'s cross-validation), by default.
pub const DEFAULT_FOLDS: usize = 5;
/// Seed of the split: 42 is the reference tools' protocol split.
pub const DEFAULT_SPLIT_SEED: u64 = 42;

/// How to split the rows into training and test sets.
#[derive(Debug, Clone, PartialEq)]
pub enum SplitSpec {
    /// Everything is training data; no test set.
    None,
    /// The protocol split: rows ordered by (SplitMix64 key, row); the first
    /// `floor(n * test_frac)` are test.
    Ratio { test_frac: f64, seed: u64 },
    /// Per user: that user's rows in (key, row) order, the first
    /// `floor(n_u * test_frac)` are test, but every user keeps at least one
    /// training row.
    PerUser { test_frac: f64, seed: u64 },
    /// Rows ordered by (timestamp, row); the last `floor(n * test_frac)` are test.
    Temporal { test_frac: f64 },
    /// The key order of `Ratio`; fold `f` tests the positions `p` with `p % folds == f`.
    KFold { folds: usize, fold: usize, seed: u64 },
}

/// Fraction of each held-out user's rows that is ranked (the rest is folded
/// in): `test_prop = 0.2` of Liang et al.'s `generate_data.py`.
pub const HELD_OUT_RANKED_FRACTION: f64 = 0.2;

/// Which users [`split_users`] holds out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UserHoldout {
    /// The first `floor(users * frac)` users of the seeded user order.
    Ratio { frac: f64, seed: u64 },
    /// Fold `fold` of `folds`: the users at positions `p % folds == fold` of
    /// the seeded user order (strong-generalization cross-validation).
    Folds { folds: usize, fold: usize, seed: u64 },
}

impl UserHoldout {
    /// The seed of the users' hold-out order ([`user_holdout_key`]): a
    /// different stream from the row keys, which use the split seed itself.
    pub fn user_seed(&self) -> u64 {
        holdout_user_seed(self.seed())
    }

    /// The split seed (the held-out rows of each held-out user follow it).
    pub fn seed(&self) -> u64 {
        let (UserHoldout::Ratio { seed, .. } | UserHoldout::Folds { seed, .. }) = *self;
        seed
    }

    /// The positions of the held-out users in the hold-out order of `n_users` users.
    pub fn positions(&self, n_users: usize) -> Result<std::ops::Range<usize>, DataError> {
        Ok(match *self {
            UserHoldout::Ratio { frac, .. } => 0..n_test(n_users, frac)?,
            UserHoldout::Folds { folds, fold, .. } => {
                check_folds(folds, fold)?;
                n_users * fold / folds..n_users * (fold + 1) / folds
            }
        })
    }
}

/// The seed of the users' hold-out order under split seed `seed`.
pub fn holdout_user_seed(seed: u64) -> u64 {
    splitmix64_nth(seed, u64::MAX - 1)
}

/// Held-out users as a range of their hold-out keys, `[from, to)`, `None`
/// being unbounded: what whoever holds some users needs to decide theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldKeys {
    pub from: Option<u128>,
    pub to: Option<u128>,
}

impl HeldKeys {
    pub fn holds(&self, key: u128) -> bool {
        self.from.is_none_or(|f| key >= f) && self.to.is_none_or(|t| key < t)
    }
}

/// Rows of a strong-generalization split: each ascending, disjoint, together all rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSplit {
    /// Every row of the users who are not held out.
    pub train: Vec<usize>,
    /// Held-out users' rows their factors are solved from.
    pub fold_in: Vec<usize>,
    /// Held-out users' rows that are ranked.
    pub test: Vec<usize>,
}

/// Row keys are computed in parallel above this many rows.
const PAR_ROWS: usize = 1 << 16;

/// `(train rows, test rows)`: each ascending, disjoint, together all rows.
pub fn split_rows(raw: &RawRatings, spec: &SplitSpec) -> Result<(Vec<usize>, Vec<usize>), DataError> {
    let n = raw.len();
    let is_test = match *spec {
        SplitSpec::None => vec![false; n],
        SplitSpec::Ratio { test_frac, seed } => ratio(n, n_test(n, test_frac)?, seed),
        SplitSpec::PerUser { test_frac, seed } => {
            check_frac(test_frac)?;
            per_user(raw, test_frac, seed)
        }
        SplitSpec::Temporal { test_frac } => {
            let k = n_test(n, test_frac)?;
            let ts = raw.timestamps.as_ref().ok_or_else(|| {
                DataError::Split(format!(
                    "the temporal split needs timestamps, and {} has none (a timestamp column on every row)",
                    if raw.source.is_empty() { "the data" } else { &raw.source }
                ))
            })?;
            temporal(ts, k)
        }
        SplitSpec::KFold { folds, fold, seed } => {
            check_folds(folds, fold)?;
            kfold(n, folds, fold, seed)
        }
    };
    let n_te = is_test.iter().filter(|&&t| t).count();
    let mut train = Vec::with_capacity(n - n_te);
    let mut test = Vec::with_capacity(n_te);
    for (r, &t) in is_test.iter().enumerate() {
        if t {
            test.push(r);
        } else {
            train.push(r);
        }
    }
    Ok((train, test))
}

/// Hold whole users out: the chosen users' rows, each user's in (key, row)
/// order, split as [`SplitSpec::PerUser`] splits them with
/// [`HELD_OUT_RANKED_FRACTION`]: the first `floor(n_u * 0.2)` are ranked,
/// the others folded in, and at least one is folded in.
///
/// Users are ordered by [`user_holdout_key`] of their id under a seed
/// derived from `seed`, so which users are held out depends on the ids
/// alone: not on which rows each user has, nor on the file's order, nor on
/// who read which part of the input. The held-out users are a leading range
/// of that order (ratio) or one of `folds` consecutive ranges of it, sizes
/// differing by at most one: whoever holds some users decides theirs from
/// one or two boundary keys, which [`select_kth`] finds over the holders.
pub fn split_users(raw: &RawRatings, which: UserHoldout) -> Result<UserSplit, DataError> {
    let n_users = raw.user_tokens.len();
    let (seed, user_seed) = (which.seed(), which.user_seed());
    let mut order: Vec<(u128, usize)> = raw
        .user_tokens
        .iter()
        .enumerate()
        .map(|(u, id)| (user_holdout_key(id, user_seed), u))
        .collect();
    order.sort_unstable();
    let held = which.positions(n_users)?;
    let mut held_out = vec![false; n_users];
    for &(_, u) in &order[held] {
        held_out[u] = true;
    }
    let ranked = per_user_where(raw, HELD_OUT_RANKED_FRACTION, seed, |u| held_out[u]);
    let mut split = UserSplit {
        train: Vec::new(),
        fold_in: Vec::new(),
        test: Vec::new(),
    };
    for (r, &u) in raw.users.iter().enumerate() {
        if !held_out[u as usize] {
            split.train.push(r);
        } else if ranked[r] {
            split.test.push(r);
        } else {
            split.fold_in.push(r);
        }
    }
    if split.train.is_empty() {
        return Err(DataError::Split(format!(
            "holding out users left no training rows ({n_users} users in all)"
        )));
    }
    Ok(split)
}

fn check_folds(folds: usize, fold: usize) -> Result<(), DataError> {
    if folds < 2 {
        return Err(DataError::Split(format!("k-fold needs at least 2 folds, got {folds}")));
    }
    if fold >= folds {
        return Err(DataError::Split(format!("fold {fold} does not exist: folds are 0..{}", folds - 1)));
    }
    Ok(())
}

fn check_frac(test_frac: f64) -> Result<(), DataError> {
    if (0.0..1.0).contains(&test_frac) {
        Ok(())
    } else {
        Err(DataError::Split(format!("the test fraction must be in [0, 1), got {test_frac}")))
    }
}

/// `floor(n * test_frac)` (as `int(np.floor(n * test_frac))` in the protocol).
pub fn n_test(n: usize, test_frac: f64) -> Result<usize, DataError> {
    check_frac(test_frac)?;
    Ok(((n as f64 * test_frac).floor() as usize).min(n))
}

/// The last row of the protocol's test set in (key, row) order: row `i` is a
/// test row exactly when `(splitmix64_nth(seed, i), i) <= (key, row)`.
///
/// A function of the row count, the test count and the seed alone, so
/// whoever holds some rows and their places in the input (a worker reading
/// its share) decides for each without seeing the others. Found in two
/// passes over the generated keys with 65,536 counters: which bucket of the
/// keys' top 16 bits holds the `k`-th, then the keys of that bucket
/// (about n/65,536 of them) sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatioThreshold {
    /// `None`: no test rows.
    last: Option<(u64, u64)>,
    seed: u64,
}

impl RatioThreshold {
    pub fn new(n: u64, k: u64, seed: u64) -> Self {
        let last = (k > 0 && n > 0).then(|| {
            let k = k.min(n);
            let counts = bucket_counts(n, seed);
            // The bucket holding the k-th key, and how many come before it.
            let (mut below, mut bucket) = (0u64, 0usize);
            while below + counts[bucket] < k {
                below += counts[bucket];
                bucket += 1;
            }
            keys_in_buckets(n, seed, bucket..bucket + 1)[(k - below - 1) as usize]
        });
        RatioThreshold { last, seed }
    }

    /// Whether row `i` of the input is a test row.
    #[inline]
    pub fn is_test(&self, i: u64) -> bool {
        self.last.is_some_and(|last| (splitmix64_nth(self.seed, i), i) <= last)
    }
}

/// The bucket of a row key: its top 16 bits.
#[inline]
fn bucket_of(key: u64) -> usize {
    (key >> 48) as usize
}

/// Rows are generated in chunks of this many, in parallel.
const KEY_CHUNK: u64 = 1 << 20;

/// How many of the keys of rows `0..n` fall in each of the 65,536 buckets.
fn bucket_counts(n: u64, seed: u64) -> Vec<u64> {
    let rows = move |c: u64| c * KEY_CHUNK..((c + 1) * KEY_CHUNK).min(n);
    (0..n.div_ceil(KEY_CHUNK))
        .into_par_iter()
        .map(|c| {
            let mut h = vec![0u64; 1 << 16];
            rows(c).for_each(|i| h[bucket_of(splitmix64_nth(seed, i))] += 1);
            h
        })
        .reduce(
            || vec![0u64; 1 << 16],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

/// `(key, row)` of the rows `0..n` whose keys fall in `buckets`, sorted.
fn keys_in_buckets(n: u64, seed: u64, buckets: std::ops::Range<usize>) -> Vec<(u64, u64)> {
    let rows = move |c: u64| c * KEY_CHUNK..((c + 1) * KEY_CHUNK).min(n);
    let mut keys: Vec<(u64, u64)> = (0..n.div_ceil(KEY_CHUNK))
        .into_par_iter()
        .flat_map_iter(|c| {
            let buckets = buckets.clone();
            rows(c).filter_map(move |i| {
                let key = splitmix64_nth(seed, i);
                buckets.contains(&bucket_of(key)).then_some((key, i))
            })
        })
        .collect();
    keys.par_sort_unstable();
    keys
}

/// Keys held at once by [`key_ranks`] (16 bytes each).
const RANK_PASS_KEYS: u64 = 1 << 22;

/// The positions in the (key, row) order of rows `0..n` under `seed` of
/// `rows` (ascending, below `n`), one per row: a function of `n` and `seed`
/// alone, so a worker ranks the rows of its share without the others'. The
/// keys are generated again for each range of buckets holding about
/// [`RANK_PASS_KEYS`] of them, so memory stays bounded at any `n`.
pub fn key_ranks(n: u64, seed: u64, rows: &[u64]) -> Vec<u64> {
    debug_assert!(rows.windows(2).all(|w| w[0] < w[1]) && rows.last().is_none_or(|&r| r < n));
    let counts = bucket_counts(n, seed);
    let mut ranks = vec![0u64; rows.len()];
    // Every row asked (ascending, distinct, below n): a row is its own index.
    let every_row = rows.len() as u64 == n;
    let (mut first, mut before) = (0usize, 0u64);
    while first < counts.len() {
        // Buckets first..last, about RANK_PASS_KEYS keys (at least one bucket).
        let (mut last, mut held) = (first, 0u64);
        while last < counts.len() && (last == first || held + counts[last] <= RANK_PASS_KEYS) {
            held += counts[last];
            last += 1;
        }
        if held > 0 {
            for (p, &(_, row)) in keys_in_buckets(n, seed, first..last).iter().enumerate() {
                let at = if every_row { Ok(row as usize) } else { rows.binary_search(&row) };
                if let Ok(at) = at {
                    ranks[at] = before + p as u64;
                }
            }
        }
        before += held;
        first = last;
    }
    ranks
}

/// The first `k` rows of the (key, row) order.
fn ratio(n: usize, k: usize, seed: u64) -> Vec<bool> {
    let t = RatioThreshold::new(n as u64, k as u64, seed);
    if n >= PAR_ROWS {
        (0..n as u64).into_par_iter().map(|i| t.is_test(i)).collect()
    } else {
        (0..n as u64).map(|i| t.is_test(i)).collect()
    }
}

fn kfold(n: usize, folds: usize, fold: usize, seed: u64) -> Vec<bool> {
    let rows: Vec<u64> = (0..n as u64).collect();
    key_ranks(n as u64, seed, &rows)
        .into_iter()
        .map(|p| p % folds as u64 == fold as u64)
        .collect()
}

fn per_user(raw: &RawRatings, test_frac: f64, seed: u64) -> Vec<bool> {
    per_user_where(raw, test_frac, seed, |_| true)
}

/// [`per_user`] for the users (token indices) `chosen` accepts; other users' rows stay training rows.
fn per_user_where(raw: &RawRatings, test_frac: f64, seed: u64, chosen: impl Fn(usize) -> bool) -> Vec<bool> {
    // The whole input: a row's place is its index.
    per_user_rows(&raw.users, |j| j as u64, test_frac, seed, chosen)
}

/// The per-user split of some rows holding every row of their users:
/// `users[j]` is the user (any dense key) of the j-th row and `place(j)` its
/// place in the input, which gives its key. What the owner of a user block
/// decides for its users, whoever read their rows.
pub fn per_user_rows(users: &[u32], place: impl Fn(usize) -> u64, test_frac: f64, seed: u64, chosen: impl Fn(usize) -> bool) -> Vec<bool> {
    let n_users = users.iter().map(|&u| u as usize + 1).max().unwrap_or(0);
    // Rows grouped by user, ascending within a user.
    let (start, rows) = super::group_by_key(users, n_users);
    let mut is_test = vec![false; users.len()];
    let mut group: Vec<(u64, u64, usize)> = Vec::new();
    for u in 0..n_users {
        let g = &rows[start[u]..start[u + 1]];
        if g.len() < 2 || !chosen(u) {
            continue;
        }
        let k = ((g.len() as f64 * test_frac).floor() as usize).min(g.len() - 1);
        if k == 0 {
            continue;
        }
        group.clear();
        group.extend(g.iter().map(|&j| (splitmix64_nth(seed, place(j)), place(j), j)));
        group.sort_unstable();
        for &(_, _, j) in &group[..k] {
            is_test[j] = true;
        }
    }
    is_test
}

/// The key that orders users for holding them out: two independent hashes
/// of the id's bytes under `user_seed`, the second breaking ties of the
/// first, so the order depends on the id alone.
pub fn user_holdout_key(id: &str, user_seed: u64) -> u128 {
    let first = mix64(fnv1a64(id.as_bytes()) ^ user_seed);
    let second = id.bytes().fold(user_seed.rotate_left(32) ^ GOLDEN, |a, b| mix64(a ^ b as u64));
    (first as u128) << 64 | second as u128
}

/// The last `k` rows of the (timestamp, row) order: those at or above its
/// `(n − k)`-th key, found by [`select_kth`] as workers holding shares of the
/// input would find it (one part here).
fn temporal(ts: &[i64], k: usize) -> Vec<bool> {
    let n = ts.len();
    let keys = TemporalKeys {
        timestamps: ts,
        first_row: 0,
    };
    match select_kth(&[&keys], (n - k.min(n)) as u64) {
        Some(first_test) => (0..n).into_par_iter().map(|i| keys.key(i) >= first_test).collect(),
        None => vec![false; n],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// n rows; user of row r is `users[r % users.len()]`.
    fn raw_n(n: usize, users: &[u32]) -> RawRatings {
        let n_users = users.iter().map(|&u| u as usize + 1).max().unwrap_or(0);
        RawRatings {
            source: "test".into(),
            user_tokens: (0..n_users).map(|u| u.to_string()).collect(),
            item_tokens: (0..n).map(|i| i.to_string()).collect(),
            users: (0..n).map(|r| users[r % users.len()]).collect(),
            items: (0..n as u32).collect(),
            ratings: vec![1.0; n],
            timestamps: None,
            skipped_lines: 0,
        }
    }

    /// The protocol written out plainly: SplitMix64 by hand, a full sort.
    fn reference_ratio(n: usize, seed: u64, frac: f64) -> Vec<usize> {
        let key = |i: usize| {
            let mut z = seed.wrapping_add((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut order: Vec<(u64, usize)> = (0..n).map(|i| (key(i), i)).collect();
        order.sort();
        let k = (n as f64 * frac).floor() as usize;
        let mut test: Vec<usize> = order[..k].iter().map(|&(_, i)| i).collect();
        test.sort();
        test
    }

    fn check_partition(n: usize, train: &[usize], test: &[usize]) {
        assert!(train.windows(2).all(|w| w[0] < w[1]), "train not ascending");
        assert!(test.windows(2).all(|w| w[0] < w[1]), "test not ascending");
        let mut all: Vec<usize> = train.iter().chain(test).copied().collect();
        all.sort();
        assert_eq!(all, (0..n).collect::<Vec<_>>(), "not disjoint or not complete");
    }

    #[test]
    fn the_ratio_threshold_decides_each_row_alone_as_the_protocol_sorts_them() {
        // Over several chunks of a million rows, so the parallel passes are exercised.
        let n = 2_500_003;
        let expected = reference_ratio(n, 7, 0.2);
        let t = RatioThreshold::new(n as u64, expected.len() as u64, 7);
        // Rows decided share by share from their places in the input alone.
        let mut got = Vec::new();
        for (lo, hi) in [(0, 1_000_000), (1_000_000, 1_000_001), (1_000_001, n)] {
            got.extend((lo..hi).filter(|&i| t.is_test(i as u64)));
        }
        assert_eq!(got, expected);
        // No test rows, every row, no rows.
        assert!(!(0..100).any(|i| RatioThreshold::new(100, 0, 7).is_test(i)));
        assert!((0..100).all(|i| RatioThreshold::new(100, 100, 7).is_test(i)));
        assert!(!RatioThreshold::new(0, 5, 7).is_test(0));
    }

    #[test]
    fn key_ranks_are_the_positions_in_key_order_whichever_rows_are_asked() {
        // Past one pass of RANK_PASS_KEYS keys, so the bucket ranges are exercised.
        let n = 5_000_011u64;
        let mut order: Vec<(u64, u64)> = (0..n).map(|i| (splitmix64_nth(3, i), i)).collect();
        order.par_sort_unstable();
        let mut expected = vec![0u64; n as usize];
        for (p, &(_, r)) in order.iter().enumerate() {
            expected[r as usize] = p as u64;
        }
        let some: Vec<u64> = (0..n).filter(|r| r % 1013 == 5 || *r == n - 1).collect();
        let ranks = key_ranks(n, 3, &some);
        for (r, p) in some.iter().zip(&ranks) {
            assert_eq!(*p, expected[*r as usize], "row {r}");
        }
        let all: Vec<u64> = (0..1000).collect();
        let small = key_ranks(1000, 9, &all);
        let mut sorted = small.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, all, "a permutation");
        assert!(key_ranks(0, 9, &[]).is_empty());
    }

    #[test]
    fn ratio_matches_the_protocol() {
        let raw = raw_n(10, &[0]);
        let (train, test) = split_rows(&raw, &SplitSpec::Ratio { test_frac: 0.2, seed: 42 }).unwrap();
        assert_eq!(test, reference_ratio(10, 42, 0.2));
        // The same numbers from a plain Python version of common.py's split.
        assert_eq!(test, vec![1, 4]);
        assert_eq!(train, vec![0, 2, 3, 5, 6, 7, 8, 9]);
        let raw = raw_n(37, &[0]);
        let (_, test) = split_rows(&raw, &SplitSpec::Ratio { test_frac: 0.3, seed: 7 }).unwrap();
        assert_eq!(test, vec![1, 5, 7, 8, 10, 17, 21, 26, 31, 33, 36]);
        for (n, seed, frac) in [
            (0, 1, 0.5),
            (1, 1, 0.5),
            (2, 3, 0.5),
            (1000, 9, 0.25),
            (5000, 42, 0.0),
            (777, 5, 0.999),
        ] {
            let raw = raw_n(n, &[0]);
            let (train, test) = split_rows(&raw, &SplitSpec::Ratio { test_frac: frac, seed }).unwrap();
            assert_eq!(test, reference_ratio(n, seed, frac), "n={n} seed={seed} frac={frac}");
            check_partition(n, &train, &test);
        }
        // Python: 100000 rows, seed 42 -> 20000 test rows summing to 1007712094.
        let raw = raw_n(100_000, &[0]);
        let (train, test) = split_rows(&raw, &SplitSpec::Ratio { test_frac: 0.2, seed: 42 }).unwrap();
        assert_eq!((train.len(), test.len()), (80_000, 20_000));
        assert_eq!(test.iter().sum::<usize>(), 1_007_712_094);
        assert_eq!(&test[..5], &[1, 4, 16, 18, 21]);
    }

    /// MovieLens may not be redistributed: run by scripts/test.sh when shared/data is beside the checkout.
    #[test]
    #[ignore = "needs shared/data/ml-100k"]
    fn ratio_split_of_ml100k_on_shared_data() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/ml-100k/u.data");
        let p = p.as_path();
        let raw = crate::data::load_ratings(p, &Default::default()).unwrap();
        let (train, test) = split_rows(&raw, &SplitSpec::Ratio { test_frac: 0.2, seed: 42 }).unwrap();
        assert_eq!((train.len(), test.len()), (80_000, 20_000));
        assert_eq!(test.iter().sum::<usize>(), 1_007_712_094);
    }

    #[test]
    fn every_split_partitions_and_is_reproducible() {
        let mut raw = raw_n(503, &[0, 1, 1, 2, 3, 3, 3, 4]);
        raw.timestamps = Some((0..503).map(|r| (r as i64 * 7919) % 101).collect());
        let specs = [
            SplitSpec::None,
            SplitSpec::Ratio { test_frac: 0.2, seed: 1 },
            SplitSpec::PerUser { test_frac: 0.3, seed: 1 },
            SplitSpec::Temporal { test_frac: 0.1 },
            SplitSpec::KFold {
                folds: 5,
                fold: 2,
                seed: 1,
            },
        ];
        for spec in &specs {
            let (train, test) = split_rows(&raw, spec).unwrap();
            check_partition(503, &train, &test);
            assert_eq!(split_rows(&raw, spec).unwrap(), (train.clone(), test.clone()), "{spec:?}");
            if *spec != SplitSpec::None {
                assert!(!test.is_empty(), "{spec:?}");
            } else {
                assert!(test.is_empty());
            }
        }
        // Another seed gives another split.
        let a = split_rows(&raw, &SplitSpec::Ratio { test_frac: 0.2, seed: 1 }).unwrap();
        let b = split_rows(&raw, &SplitSpec::Ratio { test_frac: 0.2, seed: 2 }).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.1.len(), b.1.len());
    }

    #[test]
    fn kfold_test_sets_partition_the_rows_in_key_order() {
        let raw = raw_n(103, &[0]);
        let mut seen = vec![0; 103];
        for fold in 0..4 {
            let (train, test) = split_rows(&raw, &SplitSpec::KFold { folds: 4, fold, seed: 3 }).unwrap();
            check_partition(103, &train, &test);
            assert!(test.len() == 25 || test.len() == 26, "{}", test.len());
            for r in test {
                seen[r] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1));
        // Fold f holds key-order positions f, f + k, ...: with k = 5 the
        // first fold's test rows are every 5th row of the reference order.
        let raw = raw_n(50, &[0]);
        let (_, test) = split_rows(
            &raw,
            &SplitSpec::KFold {
                folds: 5,
                fold: 0,
                seed: 42,
            },
        )
        .unwrap();
        let mut order: Vec<(u64, usize)> = (0..50).map(|i| (splitmix64_nth(42, i as u64), i)).collect();
        order.sort();
        let mut want: Vec<usize> = order.iter().step_by(5).map(|&(_, i)| i).collect();
        want.sort();
        assert_eq!(test, want);
    }

    #[test]
    fn per_user_keeps_a_training_row_for_every_user() {
        // Users with 1, 2, 3 and 40 rows.
        let mut users = vec![0u32];
        users.extend([1, 1]);
        users.extend([2, 2, 2]);
        users.extend(std::iter::repeat_n(3, 40));
        let raw = raw_n(users.len(), &users);
        for frac in [0.0, 0.2, 0.5, 0.9, 0.999] {
            let (train, test) = split_rows(&raw, &SplitSpec::PerUser { test_frac: frac, seed: 11 }).unwrap();
            check_partition(raw.len(), &train, &test);
            for u in 0..4u32 {
                let n_u = users.iter().filter(|&&x| x == u).count();
                let te = test.iter().filter(|&&r| raw.users[r] == u).count();
                let want = ((n_u as f64 * frac).floor() as usize).min(n_u - 1);
                assert_eq!(te, want, "user {u} frac {frac}");
                assert!(train.iter().any(|&r| raw.users[r] == u));
            }
        }
        // Within a user, the test rows are the lowest keys.
        let (_, test) = split_rows(&raw, &SplitSpec::PerUser { test_frac: 0.25, seed: 11 }).unwrap();
        let mut rows3: Vec<(u64, usize)> = (0..raw.len())
            .filter(|&r| raw.users[r] == 3)
            .map(|r| (splitmix64_nth(11, r as u64), r))
            .collect();
        rows3.sort();
        let mut want: Vec<usize> = rows3[..10].iter().map(|&(_, r)| r).collect();
        want.sort();
        assert_eq!(test.iter().copied().filter(|&r| raw.users[r] == 3).collect::<Vec<_>>(), want);
    }

    #[test]
    fn temporal_puts_the_latest_rows_in_test() {
        let mut raw = raw_n(10, &[0]);
        raw.timestamps = Some(vec![50, 10, 90, 30, 90, 20, 70, 60, 80, 40]);
        let (train, test) = split_rows(&raw, &SplitSpec::Temporal { test_frac: 0.3 }).unwrap();
        // Latest three: 90 (rows 2 and 4) and 80 (row 8).
        assert_eq!(test, vec![2, 4, 8]);
        assert_eq!(train, vec![0, 1, 3, 5, 6, 7, 9]);
        // Ties at the boundary: (timestamp, row) order, the later row is newer.
        raw.timestamps = Some(vec![5; 10]);
        let (_, test) = split_rows(&raw, &SplitSpec::Temporal { test_frac: 0.2 }).unwrap();
        assert_eq!(test, vec![8, 9]);
        let ts = raw.timestamps.clone().unwrap();
        let (train, test) = split_rows(&raw, &SplitSpec::Temporal { test_frac: 0.5 }).unwrap();
        let latest_train = train.iter().map(|&r| (ts[r], r)).max().unwrap();
        assert!(test.iter().all(|&r| (ts[r], r) > latest_train));
    }

    #[test]
    fn invalid_specs_are_split_errors() {
        let raw = raw_n(10, &[0]);
        let bad = [
            SplitSpec::Ratio { test_frac: 1.0, seed: 1 },
            SplitSpec::Ratio { test_frac: -0.1, seed: 1 },
            SplitSpec::Ratio {
                test_frac: f64::NAN,
                seed: 1,
            },
            SplitSpec::PerUser { test_frac: 1.5, seed: 1 },
            SplitSpec::Temporal { test_frac: 2.0 },
            SplitSpec::KFold {
                folds: 1,
                fold: 0,
                seed: 1,
            },
            SplitSpec::KFold {
                folds: 3,
                fold: 3,
                seed: 1,
            },
        ];
        for spec in &bad {
            assert!(matches!(split_rows(&raw, spec), Err(DataError::Split(_))), "{spec:?}");
        }
        // No timestamps.
        match split_rows(&raw, &SplitSpec::Temporal { test_frac: 0.2 }) {
            Err(DataError::Split(m)) => assert!(m.contains("timestamps"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    /// Rows of `users` (token indices) in `rows`.
    fn users_of(raw: &RawRatings, rows: &[usize]) -> std::collections::BTreeSet<u32> {
        rows.iter().map(|&r| raw.users[r]).collect()
    }

    #[test]
    fn users_split_holds_whole_users_out_and_ranks_a_fifth_of_each() {
        // 50 users with 1 to 20 rows each.
        let mut users = Vec::new();
        for u in 0..50u32 {
            users.extend(std::iter::repeat_n(u, 1 + (u as usize * 7) % 20));
        }
        let mut raw = raw_n(users.len(), &users);
        raw.users = users.clone();
        let split = split_users(&raw, UserHoldout::Ratio { frac: 0.2, seed: 42 }).unwrap();
        // A partition of the rows, each part ascending.
        let held: Vec<usize> = {
            let mut v: Vec<usize> = split.fold_in.iter().chain(&split.test).copied().collect();
            v.sort();
            v
        };
        check_partition(raw.len(), &split.train, &held);
        assert!(split.fold_in.windows(2).all(|w| w[0] < w[1]) && split.test.windows(2).all(|w| w[0] < w[1]));
        // floor(50 * 0.2) users held out whole: none of their rows trains.
        let (train_users, held_users) = (users_of(&raw, &split.train), users_of(&raw, &held));
        assert_eq!(held_users.len(), 10);
        assert!(train_users.is_disjoint(&held_users));
        assert_eq!(train_users.len() + held_users.len(), 50);
        // Each held-out user: floor(n_u / 5) ranked, the rest (at least one) folded in.
        for &u in &held_users {
            let n_u = users.iter().filter(|&&x| x == u).count();
            let ranked = split.test.iter().filter(|&&r| raw.users[r] == u).count();
            let folded = split.fold_in.iter().filter(|&&r| raw.users[r] == u).count();
            assert_eq!(ranked, (n_u as f64 * HELD_OUT_RANKED_FRACTION).floor() as usize, "user {u}");
            assert_eq!(ranked + folded, n_u);
            assert!(folded >= 1);
        }
        // Reproducible; another seed holds out other users.
        assert_eq!(split, split_users(&raw, UserHoldout::Ratio { frac: 0.2, seed: 42 }).unwrap());
        let other = split_users(&raw, UserHoldout::Ratio { frac: 0.2, seed: 7 }).unwrap();
        assert_ne!(users_of(&raw, &other.fold_in), users_of(&raw, &split.fold_in));
        // Which users are held out does not depend on their rows: drop every
        // row of one kept user but the first, and the same users are held out.
        let kept = *train_users
            .iter()
            .find(|&&u| users.iter().filter(|&&x| x == u).count() > 1)
            .unwrap();
        let first = users.iter().position(|&x| x == kept).unwrap();
        let rows: Vec<usize> = (0..raw.len()).filter(|&r| users[r] != kept || r == first).collect();
        let mut fewer = raw.clone();
        fewer.users = rows.iter().map(|&r| raw.users[r]).collect();
        fewer.items = rows.iter().map(|&r| raw.items[r]).collect();
        fewer.ratings = rows.iter().map(|&r| raw.ratings[r]).collect();
        let again = split_users(&fewer, UserHoldout::Ratio { frac: 0.2, seed: 42 }).unwrap();
        let held_again: Vec<usize> = again.fold_in.iter().chain(&again.test).copied().collect();
        assert_eq!(users_of(&fewer, &held_again), held_users);
    }

    #[test]
    fn held_out_users_are_decided_from_boundary_keys_found_over_any_holders() {
        use crate::data::select::{select_kth, KeyPart, KeysPart};
        // 150,000 users, so the selection takes histogram rounds.
        let n_users = 150_000usize;
        let users: Vec<u32> = (0..n_users as u32).collect();
        let mut raw = raw_n(n_users, &users);
        raw.user_tokens = (0..n_users).map(|u| format!("user{}", u * 7919 % 1_000_003)).collect();
        let user_seed = splitmix64_nth(5, u64::MAX - 1);
        let keys: Vec<u128> = raw.user_tokens.iter().map(|id| user_holdout_key(id, user_seed)).collect();
        // Three holders with users spread over them unevenly.
        let parts: Vec<Vec<u128>> = (0..3)
            .map(|p| keys.iter().enumerate().filter(|(u, _)| u % 5 % 3 == p).map(|(_, &k)| k).collect())
            .collect();
        let holders: Vec<KeysPart> = parts.iter().map(|p| KeysPart(p)).collect();
        let refs: Vec<&dyn KeyPart> = holders.iter().map(|h| h as &dyn KeyPart).collect();
        let held_by_split = |s: &UserSplit| users_of(&raw, &s.fold_in.iter().chain(&s.test).copied().collect::<Vec<_>>());
        let at = |k: usize| select_kth(&refs, k as u64);
        // Ratio: the users at or below the k-th key.
        let s = split_users(&raw, UserHoldout::Ratio { frac: 0.2, seed: 5 }).unwrap();
        let last = at(n_users / 5 - 1).unwrap();
        let by_key: std::collections::BTreeSet<u32> = (0..n_users).filter(|&u| keys[u] <= last).map(|u| u as u32).collect();
        assert_eq!(held_by_split(&s), by_key);
        // Fold 2 of 4: the users from its first key up to the next fold's.
        let s = split_users(
            &raw,
            UserHoldout::Folds {
                folds: 4,
                fold: 2,
                seed: 5,
            },
        )
        .unwrap();
        let (lo, hi) = (at(n_users * 2 / 4).unwrap(), at(n_users * 3 / 4).unwrap());
        let by_key: std::collections::BTreeSet<u32> = (0..n_users).filter(|&u| keys[u] >= lo && keys[u] < hi).map(|u| u as u32).collect();
        assert_eq!(held_by_split(&s), by_key);
    }

    #[test]
    fn user_folds_hold_out_every_user_exactly_once() {
        let users: Vec<u32> = (0..400).map(|r| (r * 13 % 37) as u32).collect();
        let mut raw = raw_n(users.len(), &users);
        raw.users = users;
        let mut times_held = [0usize; 37];
        for fold in 0..4 {
            let s = split_users(&raw, UserHoldout::Folds { folds: 4, fold, seed: 3 }).unwrap();
            let held: Vec<usize> = s.fold_in.iter().chain(&s.test).copied().collect();
            let held_users = users_of(&raw, &held);
            assert!(users_of(&raw, &s.train).is_disjoint(&held_users));
            // 37 users in 4 folds: 9 or 10 each.
            assert!((9..=10).contains(&held_users.len()), "fold {fold}: {}", held_users.len());
            for u in held_users {
                times_held[u as usize] += 1;
            }
        }
        assert!(times_held.iter().all(|&t| t == 1), "{times_held:?}");
        for bad in [
            UserHoldout::Folds {
                folds: 1,
                fold: 0,
                seed: 1,
            },
            UserHoldout::Folds {
                folds: 3,
                fold: 3,
                seed: 1,
            },
            UserHoldout::Ratio { frac: 1.0, seed: 1 },
        ] {
            assert!(matches!(split_users(&raw, bad), Err(DataError::Split(_))), "{bad:?}");
        }
    }
}
