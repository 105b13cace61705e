//! Synthetic ratings with a known low-rank truth (the product's embedded
//! default dataset, and data of any size for benchmarks).
//!
//! Semantics of `shared/anchors/gen_synth.py`: rank-R truth, user and item
//! biases, Zipf-like user activity and item popularity, and observation
//! biased towards liked items (so implicit metrics mean something). Users are
//! generated independently from per-user seeded streams, so memory does not
//! grow with the number of ratings and the rows are the same for a seed on
//! every machine and thread count.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{DataError, RawRatings};
use crate::rng::{mix64, SplitMix64, GOLDEN};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Round and clip to 1..5 stars; else continuous ratings.
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
    /// The embedded default dataset of the product.
    pub fn small_default() -> Self {
        SynthSpec { users: 2_000, items: 1_000, ratings: 100_000, ..Default::default() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthRow {
    pub user: u32,
    pub item: u32,
    pub rating: f32,
}

/// Power-law weights over popularity ranks, assigned to ids by a seeded shuffle.
fn powerlaw(n: usize, exp: f64, offset: f64, rng: &mut SplitMix64) -> Vec<f64> {
    let mut w: Vec<f64> = (1..=n).map(|r| (r as f64 + offset).powf(-exp)).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        w.swap(i, j);
    }
    let s: f64 = w.iter().sum();
    w.iter_mut().for_each(|x| *x /= s);
    w
}

/// Ratings per user: proportional to activity, capped, summing exactly to `total`.
fn allocate(weights: &[f64], total: u64, cap: u64) -> Vec<u64> {
    let mut n: Vec<u64> = weights.iter().map(|w| ((w * total as f64).floor() as u64).min(cap)).collect();
    let mut left = total - n.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
    while left > 0 {
        for &u in &order {
            if left == 0 {
                break;
            }
            if n[u] < cap {
                n[u] += 1;
                left -= 1;
            }
        }
    }
    n
}

struct Truth {
    item_vecs: Vec<f64>,
    item_bias: Vec<f64>,
    item_cdf: Vec<f64>,
    per_user: Vec<u64>,
    scale: f64,
}

fn validate(spec: &SynthSpec) -> Result<(), DataError> {
    let bad = |m: String| Err(DataError::Invalid(format!("synthetic data: {m}")));
    if spec.users == 0 || spec.items == 0 || spec.rank == 0 || spec.ratings == 0 {
        return bad("users, items, rank and ratings must be positive".into());
    }
    if spec.users > u32::MAX as usize || spec.items > u32::MAX as usize {
        return bad("at most 2^32 users and items".into());
    }
    if spec.ratings as f64 > 0.5 * spec.users as f64 * spec.items as f64 {
        return bad(format!("{} ratings is more than half of {} users × {} items", spec.ratings, spec.users, spec.items));
    }
    if !(spec.noise_std.is_finite() && spec.noise_std >= 0.0) {
        return bad("noise must be a finite number >= 0".into());
    }
    Ok(())
}

fn truth(spec: &SynthSpec) -> Truth {
    let mut rng = SplitMix64::new(spec.seed);
    let scale = (0.8 / spec.rank as f64).powf(0.25);
    let item_vecs = (0..spec.items * spec.rank).map(|_| rng.next_normal() * scale).collect();
    let item_bias = (0..spec.items).map(|_| rng.next_normal() * 0.5).collect();
    let pu = powerlaw(spec.users, spec.user_exp, spec.user_offset, &mut rng);
    let pi = powerlaw(spec.items, spec.item_exp, spec.item_offset, &mut rng);
    let mut acc = 0.0;
    let item_cdf = pi
        .iter()
        .map(|p| {
            acc += p;
            acc
        })
        .collect();
    let cap = (spec.items as u64 / 2).max(1);
    Truth { item_vecs, item_bias, item_cdf, per_user: allocate(&pu, spec.ratings, cap), scale }
}

fn user_rows(spec: &SynthSpec, t: &Truth, u: usize) -> Vec<SynthRow> {
    let n = t.per_user[u] as usize;
    if n == 0 {
        return Vec::new();
    }
    let mut rng = SplitMix64::new(mix64(spec.seed ^ (u as u64 + 1).wrapping_mul(GOLDEN)));
    let r = spec.rank;
    let uv: Vec<f64> = (0..r).map(|_| rng.next_normal() * t.scale).collect();
    let ub = rng.next_normal() * 0.4;
    let sd = 0.8f64.sqrt();
    let dot = |i: usize| -> f64 { (0..r).map(|f| uv[f] * t.item_vecs[i * r + f]).sum() };
    let mut chosen: Vec<usize> = Vec::with_capacity(n);
    let mut seen: HashSet<usize> = HashSet::with_capacity(n * 2);
    let mut attempts = 0usize;
    let last = t.item_cdf.last().copied().unwrap_or(1.0);
    while chosen.len() < n {
        attempts += 1;
        let x = rng.next_f64() * last;
        let i = t.item_cdf.partition_point(|&c| c < x).min(spec.items - 1);
        // After many rejections (a picky user), stop applying the preference filter.
        let keep = spec.obs_beta == 0.0 || attempts > 50 * n + 1000 || rng.next_f64() < 1.0 / (1.0 + (-spec.obs_beta * dot(i) / sd).exp());
        if keep && seen.insert(i) {
            chosen.push(i);
        }
        if attempts > 400 * n + 10_000 {
            // Popularity is too concentrated to find more distinct items by sampling: take the rest in order.
            for i in 0..spec.items {
                if chosen.len() == n {
                    break;
                }
                if seen.insert(i) {
                    chosen.push(i);
                }
            }
        }
    }
    chosen
        .into_iter()
        .map(|i| {
            let raw = 3.2 + ub + t.item_bias[i] + dot(i) + spec.noise_std * rng.next_normal();
            let rating = if spec.stars { raw.round().clamp(1.0, 5.0) } else { raw };
            SynthRow { user: u as u32, item: i as u32, rating: rating as f32 }
        })
        .collect()
}

/// Stream the rows, user by user, in a fixed order.
pub fn generate(spec: &SynthSpec, mut emit: impl FnMut(SynthRow)) -> Result<(), DataError> {
    validate(spec)?;
    let t = truth(spec);
    // Users are generated in parallel a batch at a time; output order is fixed.
    const BATCH: usize = 4096;
    let mut start = 0;
    while start < spec.users {
        let end = (start + BATCH).min(spec.users);
        let rows: Vec<Vec<SynthRow>> = (start..end).into_par_iter().map(|u| user_rows(spec, &t, u)).collect();
        for r in rows.into_iter().flatten() {
            emit(r);
        }
        start = end;
    }
    Ok(())
}

/// The rows in memory; ids are the decimal indices.
pub fn generate_raw(spec: &SynthSpec) -> Result<RawRatings, DataError> {
    let mut raw = RawRatings {
        source: format!("synthetic(users={}, items={}, ratings={}, seed={})", spec.users, spec.items, spec.ratings, spec.seed),
        user_tokens: (0..spec.users).map(|u| u.to_string()).collect(),
        item_tokens: (0..spec.items).map(|i| i.to_string()).collect(),
        ..Default::default()
    };
    raw.users.reserve(spec.ratings as usize);
    generate(spec, |r| {
        raw.users.push(r.user);
        raw.items.push(r.item);
        raw.ratings.push(r.rating);
    })?;
    Ok(raw)
}

/// Write `user,item,rating` CSV atomically; `progress` sees rows written so far.
pub fn write_csv(spec: &SynthSpec, path: &Path, mut progress: impl FnMut(u64)) -> Result<u64, DataError> {
    let io = |e: std::io::Error| DataError::Io { path: path.to_owned(), source: e };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp);
    w.write_all(b"user,item,rating\n").map_err(io)?;
    let mut rows = 0u64;
    let mut err = None;
    generate(spec, |r| {
        if err.is_some() {
            return;
        }
        let res = if spec.stars { writeln!(w, "{},{},{}", r.user, r.item, r.rating as i32) } else { writeln!(w, "{},{},{}", r.user, r.item, r.rating) };
        if let Err(e) = res {
            err = Some(e);
        }
        rows += 1;
        if rows % 1_000_000 == 0 {
            progress(rows);
        }
    })?;
    if let Some(e) = err {
        return Err(io(e));
    }
    let tmp = w.into_inner().map_err(|e| io(e.into_error()))?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    progress(rows);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SynthSpec {
        SynthSpec { users: 300, items: 200, ratings: 5000, ..Default::default() }
    }

    #[test]
    fn deterministic_distinct_exact_count_in_range() {
        let a = generate_raw(&small()).unwrap();
        let b = generate_raw(&small()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 5000);
        let mut pairs: Vec<(u32, u32)> = a.users.iter().copied().zip(a.items.iter().copied()).collect();
        pairs.sort();
        pairs.dedup();
        assert_eq!(pairs.len(), 5000);
        assert!(a.ratings.iter().all(|&r| (1.0..=5.0).contains(&r) && r.fract() == 0.0));
        let c = generate_raw(&SynthSpec { seed: 43, ..small() }).unwrap();
        assert_ne!(a.ratings, c.ratings);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        assert_eq!(pool.install(|| generate_raw(&small()).unwrap()), a);
    }

    #[test]
    fn impossible_specs_are_refused_and_csv_is_written() {
        assert!(generate_raw(&SynthSpec { users: 10, items: 10, ratings: 60, ..Default::default() }).is_err());
        assert!(generate_raw(&SynthSpec { users: 0, ..small() }).is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        let n = write_csv(&small(), &p, |_| {}).unwrap();
        assert_eq!(n, 5000);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 5001);
        assert!(text.starts_with("user,item,rating\n"));
    }
}
