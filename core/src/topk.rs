//! Top-N selection by score, for one score row or for blocks of dot products.
//!
//! Order everywhere: higher score first, equal scores by lower index first
//! (the tie rule of the evaluation protocol). `-0.0` and `0.0` are equal.
//! NaN ranks below every number, `-inf` included, so a NaN score never beats
//! a real one; it only shows up when fewer than `n` real scores exist.

use std::cmp::Reverse;
use std::sync::Mutex;

use ndarray::{s, ArrayView2, Axis};
use rayon::prelude::*;

/// One ranked entry: a row/column index and its score.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scored {
    pub index: u32,
    pub score: f32,
}

/// Query rows per block of [`top_n_batch`] (fewer when targets are many, see there).
pub const BLOCK_ROWS: usize = 256;

/// Length of a recommendation or similarity list when none is asked for.
pub const DEFAULT_TOP_N: usize = 10;
/// Upper bound on the floats of one block's score matrix (64 MiB).
const BLOCK_SCORES_MAX: usize = 1 << 24;

/// Total order key of a score: larger key = better score. Branch free (the
/// signs of scores are unpredictable), NaN -> 0, -0.0 and 0.0 -> the same key.
#[inline(always)]
fn score_key(s: f32) -> u32 {
    let bits = if s == 0.0 { 0 } else { s.to_bits() };
    // Negative: flip all bits; positive: set the sign bit.
    let mask = ((bits as i32) >> 31) as u32 | 0x8000_0000;
    let key = bits ^ mask;
    if s.is_nan() {
        0
    } else {
        key
    }
}

/// Rank key of (score, index): larger = ranked earlier (score desc, then index asc).
#[inline]
fn rank_key(score: f32, index: u32) -> u64 {
    ((score_key(score) as u64) << 32) | (!index) as u64
}

/// Bounded selection of the best `n` (score, index) pairs pushed into it.
///
/// The result does not depend on the order of the pushes.
///
/// Candidates above the bar are appended to a buffer; when it holds
/// [`TopN::BUFFER_FACTOR`]·n of them, a linear-time selection keeps the best n
/// and raises the bar to the n-th. A binary heap did the same with a sift per
/// candidate, which cost 2.5× more for the 100-long lists of NDCG@100.
#[derive(Debug, Clone)]
pub struct TopN {
    n: usize,
    /// (rank key, score bits) of the candidates; the best n are among them.
    buf: Vec<(u64, u32)>,
    /// Rank key an entry must beat to get in: the n-th best key at the last
    /// selection, else 0 (every real key is >= 1, as indices stay below `u32::MAX`).
    threshold: u64,
    /// The score of that n-th best entry (NaN before the first selection).
    worst_score: f32,
}

impl TopN {
    /// The buffer holds up to this many times `n` candidates between selections.
    const BUFFER_FACTOR: usize = 4;

    pub fn new(n: usize) -> Self {
        TopN {
            n,
            buf: Vec::with_capacity((n * Self::BUFFER_FACTOR).min(1 << 16)),
            threshold: if n == 0 { u64::MAX } else { 0 },
            worst_score: f32::NAN,
        }
    }

    #[inline]
    pub fn push(&mut self, index: u32, score: f32) {
        let key = rank_key(score, index);
        if key > self.threshold {
            self.insert(key, score);
        }
    }

    #[inline]
    fn insert(&mut self, key: u64, score: f32) {
        self.buf.push((key, score.to_bits()));
        if self.buf.len() >= self.n.saturating_mul(Self::BUFFER_FACTOR).max(self.n + 1) {
            self.keep_best();
        }
    }

    /// Keep the best n candidates and raise the bar to the n-th of them.
    #[inline(never)]
    fn keep_best(&mut self) {
        if self.buf.len() <= self.n {
            return;
        }
        let n = self.n;
        let (_, nth, _) = self.buf.select_nth_unstable_by(n - 1, |a, b| b.0.cmp(&a.0));
        let (key, bits) = *nth;
        self.buf.truncate(n);
        self.threshold = key;
        self.worst_score = f32::from_bits(bits);
    }

    /// Push `scores[start..end]` with their positions as indices. Every
    /// earlier push must have had a lower index (then an equal score never
    /// gets in, which lets whole chunks be skipped on their best score).
    #[inline]
    fn push_range(&mut self, scores: &[f32], start: usize, end: usize) {
        const CHUNK: usize = 64;
        let mut i = start;
        // Until the first selection every entry is a candidate.
        while i < end && self.worst_score.is_nan() {
            self.push(i as u32, scores[i]);
            i += 1;
        }
        // Then, since every earlier push had a lower index, the candidates are
        // exactly the scores above the n-th best kept (an equal score loses on
        // its higher index; NaN compares false). A bar that rose inside a chunk
        // only lets a few extra candidates into the buffer.
        while i + CHUNK <= end {
            let chunk = &scores[i..i + CHUNK];
            let mut above = mask_above(chunk, self.worst_score);
            while above != 0 {
                let j = above.trailing_zeros() as usize;
                self.insert(rank_key(chunk[j], (i + j) as u32), chunk[j]);
                above &= above - 1;
            }
            i += CHUNK;
        }
        for (j, &x) in scores[i..end].iter().enumerate() {
            if x > self.worst_score {
                self.insert(rank_key(x, (i + j) as u32), x);
            }
        }
    }

    /// The kept entries, best first.
    pub fn into_sorted(mut self) -> Vec<Scored> {
        self.keep_best();
        let mut v = self.buf;
        v.sort_unstable_by_key(|e| Reverse(e.0));
        v.into_iter()
            .map(|(key, bits)| Scored {
                index: !(key as u32),
                score: f32::from_bits(bits),
            })
            .collect()
    }
}

/// Bit j set where `scores[j] > t` (at most 64 scores): one vector compare
/// per 16 scores with AVX-512.
#[multiversion::multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
fn mask_above(scores: &[f32], t: f32) -> u64 {
    scores.iter().enumerate().fold(0u64, |m, (j, &x)| m | (u64::from(x > t) << j))
}

/// Top `n` columns of one score row, best first; ties -> lower index first;
/// `exclude` is a SORTED slice of indices to skip (seen items). NaN scores never win.
///
/// Duplicates and out-of-range entries in `exclude` are harmless.
pub fn top_n_of_scores(scores: &[f32], n: usize, exclude: &[u32]) -> Vec<Scored> {
    assert!(scores.len() < u32::MAX as usize, "top_n_of_scores: too many scores for u32 indices");
    if n == 0 {
        return Vec::new();
    }
    let mut top = TopN::new(n);
    let len = scores.len();
    let mut start = 0usize;
    for &e in exclude {
        let e = e as usize;
        if e >= len {
            break;
        }
        if e >= start {
            top.push_range(scores, start, e);
            start = e + 1;
        }
    }
    top.push_range(scores, start, len);
    top.into_sorted()
}

/// Query rows per block for `t` targets: [`BLOCK_ROWS`], fewer when the
/// block's score matrix would exceed 64 MiB.
fn block_rows(t: usize) -> usize {
    (BLOCK_SCORES_MAX / t.max(1)).clamp(1, BLOCK_ROWS)
}

/// For each query row (rows of `queries`, shape q×k), the top `n` targets
/// (rows of `targets`, t×k) by dot product, excluding for query r the sorted
/// indices `exclude(r)`.
///
/// Blocks of up to 256 query rows (fewer when `t` is so large that a block's
/// scores would pass 64 MiB): one f32 matrix product per block with faer
/// (sequential inside a block), then a bounded-heap selection per row that
/// skips 16-score chunks with nothing above the current n-th best. Blocks run
/// in parallel on rayon.
///
/// A query's scores are the same bits in any block: every product has the
/// full block's rows (the last block is padded with zero queries), and the
/// blocking depends only on `t`. So the workers, which score subsets of the
/// users, rank exactly as the single process does. faer's AVX-512 kernels
/// made a 30k × 41k × 128 evaluation about 30% faster than matrixmultiply's
/// AVX2 ones; with fewer rows (one user) faer takes another path whose bits
/// differ, hence the padding.
pub fn top_n_batch<'a>(
    queries: ArrayView2<f32>,
    targets: ArrayView2<f32>,
    n: usize,
    exclude: &(dyn Fn(usize) -> &'a [u32] + Sync),
) -> Vec<Vec<Scored>> {
    top_n_batch_in(&ScoreBuffers::new(), queries, targets, n, exclude)
}

/// Scores buffers for [`top_n_batch_in`], one per pool thread, for callers
/// that score several batches in a row (a worker's user blocks, `recommend
/// --all`'s batches). A fresh buffer per block (tens of MB at 40k targets)
/// cost a page fault per 4 KiB, most of an evaluation's time in the kernel.
pub struct ScoreBuffers {
    buffers: Vec<Mutex<Vec<f32>>>,
}

impl ScoreBuffers {
    pub fn new() -> ScoreBuffers {
        ScoreBuffers {
            buffers: (0..rayon::current_num_threads()).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }
}

impl Default for ScoreBuffers {
    fn default() -> Self {
        ScoreBuffers::new()
    }
}

/// [`top_n_batch`] with the scores in `buffers`.
pub fn top_n_batch_in<'a>(
    buffers: &ScoreBuffers,
    queries: ArrayView2<f32>,
    targets: ArrayView2<f32>,
    n: usize,
    exclude: &(dyn Fn(usize) -> &'a [u32] + Sync),
) -> Vec<Vec<Scored>> {
    let (q, k) = queries.dim();
    let (t, k2) = targets.dim();
    assert_eq!(k, k2, "top_n_batch: queries have {k} columns, targets {k2}");
    assert!(t < u32::MAX as usize, "top_n_batch: too many targets for u32 indices");
    if q == 0 {
        return Vec::new();
    }
    if n == 0 || t == 0 {
        return vec![Vec::new(); q];
    }
    let rows = block_rows(t);
    let targets = targets.as_standard_layout();
    let targets = faer::MatRef::from_row_major_slice(targets.as_slice().expect("standard layout"), t, k);
    let starts: Vec<usize> = (0..q).step_by(rows).collect();
    // Each pool thread scores into its own buffer. Nothing inside a block calls
    // back into the pool, so a thread never finds its buffer taken; `try_lock`
    // falls back to a fresh one if it did (or if another pool shares `buffers`).
    let buffers = &buffers.buffers;
    let blocks: Vec<Vec<Vec<Scored>>> = starts
        .par_iter()
        .map(|&r0| {
            let r1 = (r0 + rows).min(q);
            let slot = rayon::current_thread_index().map(|i| &buffers[i % buffers.len()]);
            let mut own = Vec::new();
            let mut held = slot.and_then(|m| m.try_lock().ok());
            let scores: &mut Vec<f32> = held.as_deref_mut().unwrap_or(&mut own);
            scores.resize(rows * t, 0.0);
            // The block's queries, row-major whatever their layout, padded to `rows`.
            let mut block = vec![0f32; rows * k];
            for (dst, src) in block.chunks_exact_mut(k.max(1)).zip(queries.slice(s![r0..r1, ..]).rows()) {
                dst.iter_mut().zip(src).for_each(|(d, v)| *d = *v);
            }
            let lhs = faer::MatRef::from_row_major_slice(&block, rows, k);
            let dst = faer::MatMut::from_row_major_slice_mut(scores, rows, t);
            // `Replace`: the previous block's scores are overwritten, never read.
            faer::linalg::matmul::matmul(dst, faer::Accum::Replace, lhs, targets.transpose(), 1.0f32, faer::Par::Seq);
            (r0..r1)
                .zip(scores.chunks_exact(t))
                .map(|(r, row)| top_n_of_scores(row, n, exclude(r)))
                .collect()
        })
        .collect();
    blocks.into_iter().flatten().collect()
}

/// `a · b` in a fixed summation order (8 interleaved partial sums), so the
/// same pair of vectors always gives the same bits whatever the caller.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Scores of every row of `m` against `v` with [`dot`].
pub fn row_dots(m: ArrayView2<f32>, v: &[f32]) -> Vec<f32> {
    m.axis_iter(Axis(0))
        .map(|row| match row.as_slice() {
            Some(r) => dot(r, v),
            None => dot(&row.to_vec(), v),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use ndarray::Array2;

    /// Reference: full sort by (score desc with NaN last, index asc), exclusions removed.
    fn brute(scores: &[f32], n: usize, exclude: &[u32]) -> Vec<Scored> {
        let mut v: Vec<Scored> = scores
            .iter()
            .enumerate()
            .filter(|(i, _)| !exclude.contains(&(*i as u32)))
            .map(|(i, &s)| Scored { index: i as u32, score: s })
            .collect();
        v.sort_by(|a, b| {
            let (x, y) = (a.score, b.score);
            let o = match (x.is_nan(), y.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ => y.partial_cmp(&x).unwrap(),
            };
            o.then(a.index.cmp(&b.index))
        });
        v.truncate(n);
        v
    }

    fn same(a: &[Scored], b: &[Scored]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.index == y.index && x.score.to_bits() == y.score.to_bits())
    }

    fn random_exclude(rng: &mut SplitMix64, len: usize, frac: f64) -> Vec<u32> {
        (0..len as u32).filter(|_| rng.next_f64() < frac).collect()
    }

    #[test]
    fn ties_go_to_lower_index_and_nan_never_wins() {
        let s = [1.0, 3.0, f32::NAN, 3.0, -0.0, 0.0, f32::NEG_INFINITY, 3.0];
        let got: Vec<u32> = top_n_of_scores(&s, 8, &[]).iter().map(|x| x.index).collect();
        assert_eq!(got, vec![1, 3, 7, 0, 4, 5, 6, 2]);
        let got: Vec<u32> = top_n_of_scores(&s, 2, &[1]).iter().map(|x| x.index).collect();
        assert_eq!(got, vec![3, 7]);
        // -0.0 and 0.0 tie: lower index first whichever is pushed first.
        let got: Vec<u32> = top_n_of_scores(&[0.0, -0.0], 1, &[]).iter().map(|x| x.index).collect();
        assert_eq!(got, vec![0]);
        let got: Vec<u32> = top_n_of_scores(&[-0.0, 0.0], 1, &[]).iter().map(|x| x.index).collect();
        assert_eq!(got, vec![0]);
        assert!(top_n_of_scores(&s, 0, &[]).is_empty());
        assert!(top_n_of_scores(&[], 3, &[]).is_empty());
    }

    #[test]
    fn top_n_of_scores_matches_brute_force() {
        let mut rng = SplitMix64::new(7);
        for case in 0..300 {
            let len = if case % 3 == 0 {
                200 + (rng.next_u64() % 400) as usize
            } else {
                (rng.next_u64() % 60) as usize
            };
            // Coarse values so that ties are frequent.
            let coarse = case % 2 == 0;
            let scores: Vec<f32> = (0..len)
                .map(|_| {
                    let x = rng.next_normal() as f32;
                    if coarse {
                        (x * 2.0).round()
                    } else if rng.next_f64() < 0.05 {
                        f32::NAN
                    } else {
                        x
                    }
                })
                .collect();
            let exclude = random_exclude(&mut rng, len + 3, 0.3);
            for n in [0, 1, 3, 10, 100, len, len + 5] {
                let got = top_n_of_scores(&scores, n, &exclude);
                let want = brute(&scores, n, &exclude);
                assert!(same(&got, &want), "case {case} n {n}: {got:?} vs {want:?}");
            }
        }
    }

    fn random_matrix(rng: &mut SplitMix64, r: usize, c: usize) -> Array2<f32> {
        Array2::from_shape_fn((r, c), |_| rng.next_normal() as f32)
    }

    #[test]
    fn top_n_batch_matches_brute_force() {
        let mut rng = SplitMix64::new(11);
        for &(q, t, k, n) in &[
            (600usize, 97usize, 8usize, 10usize),
            (3, 5, 4, 10),
            (257, 40, 1, 40),
            (10, 30, 0, 5),
            (0, 4, 3, 2),
        ] {
            let qm = random_matrix(&mut rng, q, k);
            let tm = random_matrix(&mut rng, t, k);
            let excl: Vec<Vec<u32>> = (0..q).map(|_| random_exclude(&mut rng, t, 0.2)).collect();
            let got = top_n_batch(qm.view(), tm.view(), n, &|r| &excl[r]);
            assert_eq!(got.len(), q);
            for r in 0..q {
                // Brute-force scores in f64; compare the ranking of indices.
                let s: Vec<f32> = (0..t)
                    .map(|j| (0..k).map(|c| qm[[r, c]] as f64 * tm[[j, c]] as f64).sum::<f64>() as f32)
                    .collect();
                let want = brute(&s, n, &excl[r]);
                let gi: Vec<u32> = got[r].iter().map(|x| x.index).collect();
                let wi: Vec<u32> = want.iter().map(|x| x.index).collect();
                assert_eq!(gi, wi, "q {q} t {t} row {r}");
                for (g, w) in got[r].iter().zip(&want) {
                    assert!((g.score - w.score).abs() <= 1e-4 * (1.0 + w.score.abs()));
                }
            }
        }
    }

    /// A query's scores are the same bits whichever block it lands in and
    /// however many rows that block has (the workers evaluate subsets of the
    /// users; `recommend` scores batches), and the buffers reused across
    /// blocks leave nothing behind.
    #[test]
    fn top_n_batch_scores_do_not_depend_on_the_block() {
        let mut rng = SplitMix64::new(29);
        for &(q, t, k) in &[
            (300usize, 97usize, 64usize),
            (270, 1000, 128),
            (40, 33, 7),
            (20, 50, 130),
            (5, 9, 1),
        ] {
            let qm = random_matrix(&mut rng, q, k);
            let tm = random_matrix(&mut rng, t, k);
            let none = |_: usize| -> &[u32] { &[] };
            let all = top_n_batch(qm.view(), tm.view(), t, &none);
            let bits = |v: &[Scored]| v.iter().map(|x| (x.index, x.score.to_bits())).collect::<Vec<_>>();
            for (r, want) in all.iter().enumerate() {
                let alone = top_n_batch(qm.slice(s![r..r + 1, ..]), tm.view(), t, &none);
                assert_eq!(bits(&alone[0]), bits(want), "q {q} t {t} k {k} row {r} alone");
            }
            let from = q / 3;
            let tail = top_n_batch(qm.slice(s![from.., ..]), tm.view(), t, &none);
            for (j, got) in tail.iter().enumerate() {
                assert_eq!(
                    bits(got),
                    bits(&all[from + j]),
                    "q {q} t {t} k {k} row {} in a shifted block",
                    from + j
                );
            }
        }
    }

    #[test]
    fn top_n_batch_ties_and_non_standard_layout() {
        // Targets 1 and 3 are identical: the tie goes to 1. Queries given transposed (column major).
        let tm = ndarray::arr2(&[[0.0f32, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 0.0]]);
        let qt = ndarray::arr2(&[[1.0f32, 2.0], [0.0, 0.0]]); // queries (1,0) and (2,0)
        let got = top_n_batch(qt.t(), tm.view(), 3, &|r| if r == 0 { &[] } else { &[1] });
        let idx: Vec<Vec<u32>> = got.iter().map(|v| v.iter().map(|s| s.index).collect()).collect();
        assert_eq!(idx, vec![vec![1, 3, 2], vec![3, 2, 0]]);
        assert_eq!(got[1][0].score, 2.0);
    }

    #[test]
    fn block_rows_shrink_with_many_targets() {
        assert_eq!(block_rows(1000), 256);
        assert_eq!(block_rows(1 << 20), 16);
        assert_eq!(block_rows(1 << 30), 1);
    }

    #[test]
    fn dot_is_exact_on_small_integers() {
        let a: Vec<f32> = (0..19).map(|x| x as f32).collect();
        let b: Vec<f32> = (0..19).map(|x| (x % 3) as f32).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert_eq!(dot(&a, &b), want);
        assert_eq!(
            row_dots(ndarray::arr2(&[[1.0f32, 2.0], [3.0, 4.0]]).t(), &[1.0, 1.0]),
            vec![4.0, 6.0]
        );
    }
}
