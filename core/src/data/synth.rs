//! Synthetic ratings with a low-rank ground truth.
//!
//! The model of `shared/anchors/gen_synth.py` (not its numpy streams):
//! rank-R factors `U, V ~ N(0, s²)` with `s = (0.8/R)^¼` so that
//! `Var(u·v) = 0.8`, biases `b_u ~ N(0, 0.4²)`, `b_i ~ N(0, 0.5²)`, global mean
//! 3.2, noise `N(0, noise_std²)`; rating `3.2 + b_u + b_i + u·v + e`, rounded
//! and clipped to 1..5 when `stars`. User activity and item popularity follow
//! power laws `(rank + offset)^-exponent` over randomly permuted ids, and a
//! candidate pair is kept with probability `sigmoid(obs_beta · u·v / √0.8)`,
//! so which pairs are observed also carries the low-rank signal.
//!
//! Rows are generated user by user: each user's number of ratings comes from
//! the activity weights (scaled to exactly `ratings` in total, at most
//! `ceil(items/2)` per user), its factor, bias and draws from its own
//! SplitMix64 stream. Memory is O(users + items·rank) whatever the number of
//! ratings, and the rows are the same on every machine and thread count.

use std::io::Write;
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{DataError, RawRatings};
use crate::rng::{splitmix64_nth, SplitMix64};

/// Parameters of the synthetic data (defaults as `gen_synth.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SynthSpec {
    pub users: usize,
    pub items: usize,
    pub ratings: u64,
    pub rank: usize,
    pub noise_std: f64,
    pub seed: u64,
    pub user_exp: f64,
    pub user_offset: f64,
    pub item_exp: f64,
    pub item_offset: f64,
    pub obs_beta: f64,
    /// Round and clip to 1..5 (as `gen_synth.py`); false: the continuous
    /// `3.2 + b_u + b_i + u·v + noise` (for recovery tests).
    pub stars: bool,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec {
            users: 50_000,
            items: 20_000,
            ratings: 1_000_000,
            rank: 16,
            noise_std: 0.5,
            seed: 42,
            user_exp: 0.8,
            user_offset: 50.0,
            item_exp: 1.0,
            item_offset: 20.0,
            obs_beta: 2.0,
            stars: true,
        }
    }
}

impl SynthSpec {
    /// The embedded default dataset of the product: 2 000 users, 1 000
    /// items, 100 000 ratings.
    pub fn small_default() -> Self {
        SynthSpec {
            users: 2_000,
            items: 1_000,
            ratings: 100_000,
            ..Default::default()
        }
    }

    /// Most ratings one user gets: `ceil(items / 2)`.
    pub fn max_per_user(&self) -> u64 {
        self.items.div_ceil(2) as u64
    }

    /// `DataError::Invalid` for a spec that cannot be generated.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |m: String| Err(DataError::Invalid(format!("synthetic data: {m}")));
        if self.users == 0 || self.items == 0 || self.ratings == 0 || self.rank == 0 {
            return bad(format!(
                "users, items, ratings and rank must be positive (got {}, {}, {}, {})",
                self.users, self.items, self.ratings, self.rank
            ));
        }
        if self.users >= u32::MAX as usize || self.items >= u32::MAX as usize {
            return bad("users and items must be below 2^32 - 1".into());
        }
        if 2 * self.ratings as u128 > self.users as u128 * self.items as u128 {
            return bad(format!(
                "{} ratings is more than half of the {} x {} user-item pairs",
                self.ratings, self.users, self.items
            ));
        }
        if self.ratings > usize::MAX as u64 {
            return bad("too many ratings for this platform".into());
        }
        for (name, v) in [
            ("noise_std", self.noise_std),
            ("user_exp", self.user_exp),
            ("user_offset", self.user_offset),
            ("item_exp", self.item_exp),
            ("item_offset", self.item_offset),
            ("obs_beta", self.obs_beta),
        ] {
            if !v.is_finite() {
                return bad(format!("{name} must be finite, got {v}"));
            }
        }
        if self.noise_std < 0.0 {
            return bad(format!("noise_std must be >= 0, got {}", self.noise_std));
        }
        if self.user_offset <= -1.0 || self.item_offset <= -1.0 {
            return bad("offsets must be > -1 (weights are (rank + offset)^-exp, rank from 1)".into());
        }
        Ok(())
    }
}

/// One generated rating (0-based ids).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthRow {
    pub user: u32,
    pub item: u32,
    pub rating: f32,
}

/// The ground truth behind the ratings (for recovery tests).
#[derive(Debug, Clone)]
pub struct SynthTruth {
    pub rank: usize,
    pub global_mean: f64,
    /// users × rank, row-major.
    pub user_factors: Vec<f64>,
    pub user_bias: Vec<f64>,
    /// items × rank, row-major.
    pub item_factors: Vec<f64>,
    pub item_bias: Vec<f64>,
    /// Ratings of each user.
    pub user_counts: Vec<u32>,
}

/// Stream numbers of the seed, one per use.
const S_ITEM_FACTORS: u64 = 1;
const S_ITEM_BIAS: u64 = 2;
const S_USER_PERM: u64 = 3;
const S_ITEM_PERM: u64 = 4;
const S_USERS: u64 = 5;

const GLOBAL_MEAN: f64 = 3.2;
const USER_BIAS_SD: f64 = 0.4;
const ITEM_BIAS_SD: f64 = 0.5;
/// Variance of u·v.
const DOT_VAR: f64 = 0.8;

/// Rows per parallel batch of users.
const BATCH_ROWS: u64 = 1 << 18;

fn stream(seed: u64, which: u64) -> SplitMix64 {
    SplitMix64::new(splitmix64_nth(seed, which))
}

/// Uniform in 0..n.
#[inline]
fn below(rng: &mut SplitMix64, n: usize) -> usize {
    ((rng.next_u64() as u128 * n as u128) >> 64) as usize
}

/// A random permutation of 0..n (Fisher-Yates).
fn permutation(n: usize, rng: &mut SplitMix64) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        p.swap(i, below(rng, i + 1));
    }
    p
}

/// Power-law weights by popularity rank 1..=n: `(k + offset)^-exp`.
fn rank_weights(n: usize, exp: f64, offset: f64) -> Vec<f64> {
    (1..=n).map(|k| (k as f64 + offset).powf(-exp)).collect()
}

/// Integer counts proportional to `w` (non-increasing), summing exactly to
/// `total`, none above `cap`: the heaviest are capped first, the rest get
/// the floor of their share plus one by largest remainder.
fn allocate(w: &[f64], total: u64, cap: u64) -> Vec<u32> {
    let n = w.len();
    let mut counts = vec![0u32; n];
    let mut rem = total;
    let mut first = 0;
    let mut w_rem: f64 = w.iter().sum();
    while first < n && rem > 0 && w_rem > 0.0 && rem as f64 * w[first] / w_rem > cap as f64 {
        counts[first] = cap as u32;
        rem -= cap.min(rem);
        w_rem -= w[first];
        first += 1;
    }
    if first == n || rem == 0 {
        return counts;
    }
    let w_rem: f64 = w[first..].iter().sum();
    let mut assigned = 0u64;
    let mut fracs: Vec<(f64, usize)> = Vec::with_capacity(n - first);
    for k in first..n {
        let share = if w_rem > 0.0 {
            rem as f64 * w[k] / w_rem
        } else {
            rem as f64 / (n - first) as f64
        };
        let f = share.floor().min(cap as f64).max(0.0);
        counts[k] = f as u32;
        assigned += f as u64;
        fracs.push((share - f, k));
    }
    // Largest remainders first (ties: heavier rank first).
    fracs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    while assigned < rem {
        let before = assigned;
        for &(_, k) in &fracs {
            if assigned == rem {
                break;
            }
            if (counts[k] as u64) < cap {
                counts[k] += 1;
                assigned += 1;
            }
        }
        assert!(assigned > before, "synthetic data: cannot place {rem} ratings");
    }
    while assigned > rem {
        for &(_, k) in fracs.iter().rev() {
            if assigned == rem {
                break;
            }
            if counts[k] > 0 {
                counts[k] -= 1;
                assigned -= 1;
            }
        }
    }
    counts
}

/// Walker's alias table: O(1) draws from a discrete distribution.
struct Alias {
    prob: Vec<f64>,
    alias: Vec<u32>,
}

impl Alias {
    fn new(w: &[f64]) -> Alias {
        let n = w.len();
        let sum: f64 = w.iter().sum();
        let mut p: Vec<f64> = w.iter().map(|x| x * n as f64 / sum).collect();
        let mut prob = vec![1.0; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<u32>, Vec<u32>) = (0..n as u32).partition(|&i| p[i as usize] < 1.0);
        while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
            small.pop();
            large.pop();
            prob[s as usize] = p[s as usize];
            alias[s as usize] = l;
            p[l as usize] = (p[l as usize] + p[s as usize]) - 1.0;
            if p[l as usize] < 1.0 {
                small.push(l);
            } else {
                large.push(l);
            }
        }
        Alias { prob, alias }
    }

    #[inline]
    fn sample(&self, rng: &mut SplitMix64) -> usize {
        let x = rng.next_f64() * self.prob.len() as f64;
        let i = (x as usize).min(self.prob.len() - 1);
        if x - (i as f64) < self.prob[i] {
            i
        } else {
            self.alias[i] as usize
        }
    }
}

/// Everything shared by the users: O(users + items·rank).
struct Model {
    rank: usize,
    stars: bool,
    noise_std: f64,
    beta: f64,
    /// Factor standard deviation.
    s: f64,
    item_factors: Vec<f64>,
    item_bias: Vec<f64>,
    popularity: Alias,
    counts: Vec<u32>,
    users_seed: u64,
    n_items: usize,
}

impl Model {
    fn new(spec: &SynthSpec) -> Result<Model, DataError> {
        spec.validate()?;
        let (rank, items) = (spec.rank, spec.items);
        let s = (DOT_VAR / rank as f64).powf(0.25);
        let mut rng = stream(spec.seed, S_ITEM_FACTORS);
        let item_factors: Vec<f64> = (0..items * rank).map(|_| s * rng.next_normal()).collect();
        let mut rng = stream(spec.seed, S_ITEM_BIAS);
        let item_bias: Vec<f64> = (0..items).map(|_| ITEM_BIAS_SD * rng.next_normal()).collect();

        // Popularity rank -> random item id.
        let wr = rank_weights(items, spec.item_exp, spec.item_offset);
        let perm = permutation(items, &mut stream(spec.seed, S_ITEM_PERM));
        let mut w = vec![0.0; items];
        for (k, &id) in perm.iter().enumerate() {
            w[id as usize] = wr[k];
        }
        let popularity = Alias::new(&w);

        // Activity rank -> count -> random user id.
        let mut wu = rank_weights(spec.users, spec.user_exp, spec.user_offset);
        let ascending = spec.user_exp < 0.0;
        if ascending {
            wu.reverse();
        }
        let mut by_rank = allocate(&wu, spec.ratings, spec.max_per_user());
        if ascending {
            by_rank.reverse();
        }
        let perm = permutation(spec.users, &mut stream(spec.seed, S_USER_PERM));
        let mut counts = vec![0u32; spec.users];
        for (k, &id) in perm.iter().enumerate() {
            counts[id as usize] = by_rank[k];
        }
        Ok(Model {
            rank,
            stars: spec.stars,
            noise_std: spec.noise_std,
            beta: spec.obs_beta,
            s,
            item_factors,
            item_bias,
            popularity,
            counts,
            users_seed: splitmix64_nth(spec.seed, S_USERS),
            n_items: items,
        })
    }

    /// User u's factor and bias: the start of its stream.
    fn user_truth(&self, rng: &mut SplitMix64, uv: &mut Vec<f64>) -> f64 {
        uv.clear();
        uv.extend((0..self.rank).map(|_| self.s * rng.next_normal()));
        USER_BIAS_SD * rng.next_normal()
    }

    /// Append user u's rows. `mark[i] == u + 1` flags items already rated.
    fn user_rows(&self, u: usize, mark: &mut [u32], uv: &mut Vec<f64>, out: &mut Vec<SynthRow>) {
        let count = self.counts[u] as u64;
        if count == 0 {
            return;
        }
        let stamp = u as u32 + 1;
        let mut rng = SplitMix64::new(splitmix64_nth(self.users_seed, u as u64));
        let bu = self.user_truth(&mut rng, uv);
        // Popularity-and-taste draws; a (rare) user needing most of a
        // heavy-tailed catalog falls back to uniform draws after many misses.
        let patience = 64 * count + 4096;
        let (mut got, mut tries) = (0u64, 0u64);
        let scale = self.beta / DOT_VAR.sqrt();
        while got < count {
            tries += 1;
            let picky = tries <= patience;
            let i = if picky {
                self.popularity.sample(&mut rng)
            } else {
                below(&mut rng, self.n_items)
            };
            if mark[i] == stamp {
                continue;
            }
            let v = &self.item_factors[i * self.rank..(i + 1) * self.rank];
            let dot: f64 = uv.iter().zip(v).map(|(a, b)| a * b).sum();
            if picky && self.beta != 0.0 {
                let keep = 1.0 / (1.0 + (-scale * dot).exp());
                if rng.next_f64() >= keep {
                    continue;
                }
            }
            mark[i] = stamp;
            got += 1;
            let raw = GLOBAL_MEAN + bu + self.item_bias[i] + dot + self.noise_std * rng.next_normal();
            let rating = if self.stars { raw.round_ties_even().clamp(1.0, 5.0) } else { raw };
            out.push(SynthRow {
                user: u as u32,
                item: i as u32,
                rating: rating as f32,
            });
        }
    }

    /// Consecutive user ranges of about `BATCH_ROWS` rows.
    fn batches(&self) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let (mut start, mut rows) = (0usize, 0u64);
        for (u, &c) in self.counts.iter().enumerate() {
            rows += c as u64;
            if rows >= BATCH_ROWS {
                out.push(start..u + 1);
                start = u + 1;
                rows = 0;
            }
        }
        if start < self.counts.len() {
            out.push(start..self.counts.len());
        }
        out
    }
}

/// Generate in parallel batches, handing each batch to `sink` in user order.
fn run(spec: &SynthSpec, sink: &mut dyn FnMut(&[SynthRow]) -> Result<(), DataError>) -> Result<(), DataError> {
    let model = Model::new(spec)?;
    let batches = model.batches();
    let group = 2 * rayon::current_num_threads().max(1);
    for chunk in batches.chunks(group) {
        let rows: Vec<Vec<SynthRow>> = chunk
            .par_iter()
            .map_init(
                || (vec![0u32; model.n_items], Vec::with_capacity(model.rank)),
                |(mark, uv), r| {
                    let n: u64 = model.counts[r.clone()].iter().map(|&c| c as u64).sum();
                    let mut out = Vec::with_capacity(n as usize);
                    for u in r.clone() {
                        model.user_rows(u, mark, uv, &mut out);
                    }
                    out
                },
            )
            .collect();
        for b in &rows {
            sink(b)?;
        }
    }
    Ok(())
}

/// Stream the rows: user by user (ids ascending), each user's items in draw
/// order; the same rows for the same spec on every machine and thread count.
pub fn generate(spec: &SynthSpec, mut emit: impl FnMut(SynthRow)) -> Result<(), DataError> {
    run(spec, &mut |rows| {
        rows.iter().for_each(|&r| emit(r));
        Ok(())
    })
}

/// The rows in memory. Token `k` of `user_tokens` / `item_tokens` is the
/// decimal id `k` for every id `0..users` / `0..items` (so `users[row]` is the
/// synthetic id itself; ids without ratings have a token but no row).
pub fn generate_raw(spec: &SynthSpec) -> Result<RawRatings, DataError> {
    spec.validate()?;
    let n = spec.ratings as usize;
    let mut raw = RawRatings {
        source: format!("synthetic(seed={})", spec.seed),
        user_tokens: (0..spec.users).map(|u| u.to_string()).collect(),
        item_tokens: (0..spec.items).map(|i| i.to_string()).collect(),
        users: Vec::with_capacity(n),
        items: Vec::with_capacity(n),
        ratings: Vec::with_capacity(n),
        timestamps: None,
        skipped_lines: 0,
    };
    generate(spec, |r| {
        raw.users.push(r.user);
        raw.items.push(r.item);
        raw.ratings.push(r.rating);
    })?;
    Ok(raw)
}

/// The factors and biases behind a spec's ratings.
pub fn ground_truth(spec: &SynthSpec) -> Result<SynthTruth, DataError> {
    let model = Model::new(spec)?;
    let mut user_factors = Vec::with_capacity(spec.users * spec.rank);
    let mut user_bias = Vec::with_capacity(spec.users);
    let mut uv = Vec::with_capacity(spec.rank);
    for u in 0..spec.users {
        let mut rng = SplitMix64::new(splitmix64_nth(model.users_seed, u as u64));
        user_bias.push(model.user_truth(&mut rng, &mut uv));
        user_factors.extend_from_slice(&uv);
    }
    Ok(SynthTruth {
        rank: spec.rank,
        global_mean: GLOBAL_MEAN,
        user_factors,
        user_bias,
        item_factors: model.item_factors,
        item_bias: model.item_bias,
        user_counts: model.counts,
    })
}

fn push_u32(buf: &mut Vec<u8>, mut v: u32) {
    let mut tmp = [0u8; 10];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Write the rows as CSV (`user,item,rating` header) atomically
/// ([`crate::atomic`]: an existing file is replaced in one step). `progress`
/// gets the rows written so far about every million rows and at the end.
pub fn write_csv(spec: &SynthSpec, path: &Path, mut progress: impl FnMut(u64)) -> Result<u64, DataError> {
    spec.validate()?;
    let mut written = 0u64;
    let mut next_report = 1_000_000u64;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    // Generation errors travel through the writer's io::Error and come back out below.
    let mut failure: Option<DataError> = None;
    let res = crate::atomic::write_file_atomic(path, crate::atomic::OutputPolicy::REPLACE, |w| {
        w.write_all(b"user,item,rating\n")?;
        let r = run(spec, &mut |rows| {
            buf.clear();
            for r in rows {
                push_u32(&mut buf, r.user);
                buf.push(b',');
                push_u32(&mut buf, r.item);
                buf.push(b',');
                if spec.stars {
                    buf.push(b'0' + r.rating as u8);
                } else {
                    write!(buf, "{}", r.rating).map_err(DataError::io(path))?;
                }
                buf.push(b'\n');
            }
            w.write_all(&buf).map_err(DataError::io(path))?;
            written += rows.len() as u64;
            if written >= next_report {
                progress(written);
                next_report = (written / 1_000_000 + 1) * 1_000_000;
            }
            Ok(())
        });
        r.map_err(|e| {
            let msg = e.to_string();
            failure = Some(e);
            std::io::Error::other(msg)
        })
    });
    if let Some(e) = failure {
        return Err(e);
    }
    res.map_err(|e| DataError::Invalid(e.to_string()))?;
    progress(written);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn spec(users: usize, items: usize, ratings: u64, seed: u64) -> SynthSpec {
        SynthSpec {
            users,
            items,
            ratings,
            seed,
            ..Default::default()
        }
    }

    fn rows(s: &SynthSpec) -> Vec<SynthRow> {
        let mut v = Vec::new();
        generate(s, |r| v.push(r)).unwrap();
        v
    }

    #[test]
    fn deterministic_exact_distinct_and_in_range() {
        let s = spec(300, 200, 20_000, 42);
        let a = rows(&s);
        assert_eq!(a.len(), 20_000);
        assert_eq!(a, rows(&s), "same seed, same rows");
        let pairs: HashSet<(u32, u32)> = a.iter().map(|r| (r.user, r.item)).collect();
        assert_eq!(pairs.len(), a.len(), "pairs are distinct");
        assert!(a.iter().all(|r| (r.user as usize) < 300 && (r.item as usize) < 200));
        assert!(a.iter().all(|r| (1.0..=5.0).contains(&r.rating) && r.rating.fract() == 0.0));
        assert!(a.windows(2).all(|w| w[0].user <= w[1].user), "grouped by user");
        // Every star value occurs and the mean is in the usual range.
        for v in 1..=5 {
            assert!(a.iter().any(|r| r.rating == v as f32), "no {v}");
        }
        let mean = a.iter().map(|r| r.rating as f64).sum::<f64>() / a.len() as f64;
        assert!((3.0..4.2).contains(&mean), "mean {mean}");
        // Another seed differs.
        let b = rows(&spec(300, 200, 20_000, 43));
        assert_eq!(b.len(), 20_000);
        assert_ne!(a, b);
    }

    #[test]
    fn same_rows_with_any_thread_count() {
        // Several parallel batches.
        let s = spec(3_000, 500, 600_000, 7);
        let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
        let one = pool(1).install(|| rows(&s));
        let four = pool(4).install(|| rows(&s));
        assert_eq!(one.len(), 600_000);
        assert!(one == four);
    }

    #[test]
    fn activity_is_skewed_and_capped() {
        let s = spec(1_000, 2_000, 50_000, 5);
        let truth = ground_truth(&s).unwrap();
        assert_eq!(truth.user_counts.iter().map(|&c| c as u64).sum::<u64>(), 50_000);
        let max = *truth.user_counts.iter().max().unwrap();
        assert!(max as u64 <= s.max_per_user());
        assert!(max > 3 * *truth.user_counts.iter().min().unwrap());
        let a = rows(&s);
        let mut per_user = vec![0u32; 1_000];
        for r in &a {
            per_user[r.user as usize] += 1;
        }
        assert_eq!(per_user, truth.user_counts);
        // Popular items are rated more (the top decile holds well over 10%).
        let mut per_item = vec![0u64; 2_000];
        for r in &a {
            per_item[r.item as usize] += 1;
        }
        per_item.sort_unstable_by(|x, y| y.cmp(x));
        assert!(per_item[..200].iter().sum::<u64>() * 4 > 50_000);
    }

    #[test]
    fn allocation_is_exact_under_the_cap() {
        for (n, total, cap) in [(5, 10, 2), (4, 7, 7), (1000, 12345, 50), (3, 1, 1), (7, 21, 3)] {
            let w = rank_weights(n, 0.8, 1.0);
            let c = allocate(&w, total, cap);
            assert_eq!(c.iter().map(|&x| x as u64).sum::<u64>(), total, "{n} {total} {cap}");
            assert!(c.iter().all(|&x| x as u64 <= cap));
            assert!(c.windows(2).all(|p| p[0] + 1 >= p[1]), "roughly non-increasing: {c:?}");
        }
    }

    #[test]
    fn densest_spec_completes() {
        // ratings = users * items / 2: every user rates exactly ceil(items/2)... here 2 of 4.
        let s = SynthSpec {
            obs_beta: 8.0,
            ..spec(3, 4, 6, 1)
        };
        let a = rows(&s);
        assert_eq!(a.len(), 6);
        let pairs: HashSet<(u32, u32)> = a.iter().map(|r| (r.user, r.item)).collect();
        assert_eq!(pairs.len(), 6);
        let s = spec(1, 1001, 500, 9);
        assert_eq!(rows(&s).len(), 500);
    }

    #[test]
    fn continuous_ratings_follow_the_truth() {
        let s = SynthSpec {
            stars: false,
            noise_std: 0.0,
            ..spec(200, 100, 5_000, 3)
        };
        let t = ground_truth(&s).unwrap();
        let a = rows(&s);
        assert!(a.iter().any(|r| r.rating.fract() != 0.0));
        for r in a.iter().take(500) {
            let (u, i) = (r.user as usize, r.item as usize);
            let dot: f64 = (0..s.rank)
                .map(|k| t.user_factors[u * s.rank + k] * t.item_factors[i * s.rank + k])
                .sum();
            let want = t.global_mean + t.user_bias[u] + t.item_bias[i] + dot;
            assert!((r.rating as f64 - want).abs() < 1e-5, "{} vs {want}", r.rating);
        }
        // The factor scale gives Var(u.v) near 0.8.
        let dots: Vec<f64> = (0..200)
            .flat_map(|u| (0..100).map(move |i| (u, i)))
            .map(|(u, i)| {
                (0..s.rank)
                    .map(|k| t.user_factors[u * s.rank + k] * t.item_factors[i * s.rank + k])
                    .sum()
            })
            .collect();
        let var = dots.iter().map(|d| d * d).sum::<f64>() / dots.len() as f64;
        assert!((0.6..1.0).contains(&var), "var {var}");
    }

    #[test]
    fn invalid_specs() {
        for s in [
            spec(0, 10, 1, 1),
            spec(10, 0, 1, 1),
            spec(10, 10, 0, 1),
            spec(10, 10, 51, 1),
            SynthSpec {
                rank: 0,
                ..spec(10, 10, 5, 1)
            },
            SynthSpec {
                noise_std: -1.0,
                ..spec(10, 10, 5, 1)
            },
            SynthSpec {
                obs_beta: f64::NAN,
                ..spec(10, 10, 5, 1)
            },
        ] {
            assert!(matches!(generate(&s, |_| {}), Err(DataError::Invalid(_))), "{s:?}");
            assert!(matches!(generate_raw(&s), Err(DataError::Invalid(_))));
        }
        assert!(generate(&spec(10, 10, 50, 1), |_| {}).is_ok());
    }

    #[test]
    fn defaults() {
        let d = SynthSpec::default();
        assert_eq!((d.users, d.items, d.ratings, d.rank, d.seed), (50_000, 20_000, 1_000_000, 16, 42));
        assert_eq!(
            (d.user_exp, d.user_offset, d.item_exp, d.item_offset, d.obs_beta),
            (0.8, 50.0, 1.0, 20.0, 2.0)
        );
        assert!(d.stars);
        let s = SynthSpec::small_default();
        assert_eq!((s.users, s.items, s.ratings, s.rank), (2_000, 1_000, 100_000, 16));
        // Missing fields of a serialized spec take the defaults.
        let j: SynthSpec = serde_json::from_str(r#"{"users": 10, "seed": 3}"#).unwrap();
        assert_eq!((j.users, j.items, j.seed), (10, 20_000, 3));
    }

    #[test]
    fn raw_and_csv_agree() {
        let s = spec(150, 80, 3_000, 11);
        let raw = generate_raw(&s).unwrap();
        assert_eq!(raw.len(), 3_000);
        assert_eq!(raw.source, "synthetic(seed=11)");
        assert_eq!(raw.user_tokens.len(), 150);
        assert_eq!(raw.item_tokens[79], "79");
        assert_eq!(raw.timestamps, None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("synth.csv");
        let mut calls = Vec::new();
        let n = write_csv(&s, &path, |k| calls.push(k)).unwrap();
        assert_eq!(n, 3_000);
        assert_eq!(calls.last(), Some(&3_000));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("user,item,rating\n"));
        let back = crate::data::load_ratings(&path, &Default::default()).unwrap();
        assert_eq!(back.len(), 3_000);
        for r in 0..raw.len() {
            assert_eq!(back.row(r), raw.row(r));
        }
        // No temporary file is left next to the output.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Continuous ratings round-trip through the text exactly.
        let s = SynthSpec { stars: false, ..s };
        write_csv(&s, &path, |_| {}).unwrap();
        let back = crate::data::load_ratings(&path, &Default::default()).unwrap();
        assert_eq!(back.ratings, generate_raw(&s).unwrap().ratings);
    }
}
