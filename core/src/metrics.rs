//! Evaluation metrics, exactly as steps 4 and 5 of the protocol in
//! `shared/anchors/common.py` define them.

use ndarray::{ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::data::{Csr, TestSet};
use crate::topk;

/// RMSE and MAE over `n` rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RatingMetrics {
    pub rmse: f64,
    pub mae: f64,
    pub n: usize,
}

/// RMSE/MAE of predictions against truth (protocol step 4: raw predictions).
/// `clip` = Some((lo,hi)) clips predictions first.
///
/// Differences are taken in f64 (as the reference does). With no rows,
/// `n == 0` and both values are 0.
pub fn rating_metrics(truth: &[f32], predicted: &[f32], clip: Option<(f32, f32)>) -> RatingMetrics {
    assert_eq!(
        truth.len(),
        predicted.len(),
        "rating_metrics: {} truths, {} predictions",
        truth.len(),
        predicted.len()
    );
    let mut sums = ErrorSums::default();
    for (&t, &p) in truth.iter().zip(predicted) {
        sums.add(t, p, clip);
    }
    sums.metrics()
}

/// The sums RMSE and MAE come from, so that a part of the test rows (a user
/// block, on the worker holding it) can be summed where it is and the parts
/// added up in a fixed order: the result is then the same bits wherever
/// the parts were summed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ErrorSums {
    pub squared: f64,
    pub absolute: f64,
    pub n: u64,
}

impl ErrorSums {
    /// One test row: truth `t`, prediction `p` (clipped to `clip` first).
    #[inline]
    pub fn add(&mut self, t: f32, p: f32, clip: Option<(f32, f32)>) {
        let p = match clip {
            Some((lo, hi)) => p.max(lo).min(hi),
            None => p,
        };
        let d = t as f64 - p as f64;
        self.squared += d * d;
        self.absolute += d.abs();
        self.n += 1;
    }

    /// The sums of another part, after this one's.
    pub fn merge(&mut self, o: &ErrorSums) {
        self.squared += o.squared;
        self.absolute += o.absolute;
        self.n += o.n;
    }

    pub fn metrics(&self) -> RatingMetrics {
        if self.n == 0 {
            return RatingMetrics { rmse: 0.0, mae: 0.0, n: 0 };
        }
        let n = self.n as f64;
        RatingMetrics {
            rmse: (self.squared / n).sqrt(),
            mae: self.absolute / n,
            n: self.n as usize,
        }
    }
}

/// The cutoff of the second NDCG every ranking evaluation reports: NDCG@100,
/// the headline metric of Liang et al. (2018) and Rendle et al. (2021).
pub const WIDE_NDCG_K: usize = 100;

/// How long the top lists of an evaluation at `k` are: long enough for the
/// metrics at `k` and for NDCG@[`WIDE_NDCG_K`].
pub fn ranking_list_len(k: usize) -> usize {
    k.max(WIDE_NDCG_K)
}

/// Mean ranking metrics at `k` over the evaluated users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankingMetrics {
    pub k: usize,
    pub n_eval_users: usize,
    pub precision: f64,
    /// hits / |T_u| (the classic recall; Spark's and implicit's).
    pub recall: f64,
    /// hits / min(k, |T_u|): Recall@K as Liang et al. and Rendle et al.
    /// define it (`ials/recommender.h`), so a perfect list scores 1.
    pub recall_capped: f64,
    pub map: f64,
    pub ndcg: f64,
    /// NDCG@[`WIDE_NDCG_K`], from the same lists.
    pub ndcg_wide: f64,
    /// sum of hits / sum of min(k, |T_u|) (implicit's "precision").
    pub precision_pooled: f64,
}

/// Relevant items per user: test items with rating >= `min_pos`, sorted and deduplicated.
/// Returns the users with at least one, ascending, and their lists.
pub fn relevant_by_user(test: &TestSet, n_users: usize, min_pos: f32) -> (Vec<u32>, Vec<Vec<u32>>) {
    let mut per_user: Vec<Vec<u32>> = vec![Vec::new(); n_users];
    for ((&u, &i), &r) in test.users.iter().zip(&test.items).zip(&test.ratings) {
        if r >= min_pos {
            per_user[u as usize].push(i);
        }
    }
    let mut users = Vec::new();
    let mut lists = Vec::new();
    for (u, mut l) in per_user.into_iter().enumerate() {
        if l.is_empty() {
            continue;
        }
        l.sort_unstable();
        l.dedup();
        users.push(u as u32);
        lists.push(l);
    }
    (users, lists)
}

/// Protocol step 5 exactly: relevant set T_u = test items of u with rating >=
/// min_pos (deduplicated); evaluated users = those with |T_u| >= 1;
/// candidates = all items except u's training items (`train_by_user` row u,
/// sorted columns); score = dot(user_factors[u], item_factors[i]); top-k best
/// first, ties to lower item index; P, R, AP (divided by min(K,|T_u|)), NDCG
/// (ideal DCG over min(K,|T_u|)), plain means over evaluated users, plus
/// precision_pooled. Uses [`topk::top_n_batch`] over the evaluated users only.
///
/// A user with fewer than `k` candidates gets a shorter list (P@K still divides by K).
pub fn ranking_metrics(
    user_factors: ArrayView2<f32>,
    item_factors: ArrayView2<f32>,
    train_by_user: &Csr,
    test: &TestSet,
    k: usize,
    min_pos: f32,
) -> RankingMetrics {
    ranking_metrics_by_blocks(
        user_factors,
        item_factors,
        train_by_user,
        test,
        k,
        min_pos,
        &[0, user_factors.nrows()],
    )
}

/// [`ranking_metrics`] summed user block by user block (`starts`: block b
/// holds users `starts[b]..starts[b + 1]`), the blocks' sums added in block
/// order: as the workers holding the blocks sum them, to the same bits.
pub fn ranking_metrics_by_blocks(
    user_factors: ArrayView2<f32>,
    item_factors: ArrayView2<f32>,
    train_by_user: &Csr,
    test: &TestSet,
    k: usize,
    min_pos: f32,
    starts: &[usize],
) -> RankingMetrics {
    let n_users = user_factors.nrows();
    let (users, relevant) = relevant_by_user(test, n_users, min_pos);
    let idx: Vec<usize> = users.iter().map(|&u| u as usize).collect();
    let queries = user_factors.select(Axis(0), &idx);
    let exclude = |r: usize| -> &[u32] {
        let u = idx[r];
        if u < train_by_user.n_rows() {
            train_by_user.row(u).0
        } else {
            &[]
        }
    };
    let top = topk::top_n_batch(queries.view(), item_factors, ranking_list_len(k), &exclude);
    let recommended: Vec<Vec<u32>> = top.into_iter().map(|v| v.into_iter().map(|s| s.index).collect()).collect();
    let mut scorer = ListScorer::new(k);
    let mut total = RankingSums::default();
    let mut j = 0;
    for block in starts.windows(2) {
        let mut sums = RankingSums::default();
        while j < users.len() && (users[j] as usize) < block[1] {
            scorer.add(&mut sums, &recommended[j], &relevant[j]);
            j += 1;
        }
        total.merge(&sums);
    }
    debug_assert_eq!(j, users.len(), "the blocks cover every user");
    total.metrics(k)
}

/// The same metrics from ready-made recommendation lists (used by the above
/// and tested directly): `recommended[j]` are item indices for user
/// `users[j]`, `relevant[j]` a sorted deduplicated list of relevant items.
///
/// Only the first `k` recommendations count (the first [`WIDE_NDCG_K`] for
/// `ndcg_wide`). Entries with an empty relevant list are not evaluated. With
/// no evaluated user (or `k == 0`) every mean is 0.
pub fn ranking_metrics_from_lists(recommended: &[Vec<u32>], relevant: &[Vec<u32>], k: usize) -> RankingMetrics {
    assert_eq!(recommended.len(), relevant.len(), "ranking_metrics_from_lists: list counts differ");
    let mut scorer = ListScorer::new(k);
    let mut sums = RankingSums::default();
    for (rec, rel) in recommended.iter().zip(relevant) {
        scorer.add(&mut sums, rec, rel);
    }
    sums.metrics(k)
}

/// The per-user values ranking metrics average, summed over users, so that
/// a part of the users (a user block, on the worker holding it) can be
/// summed where it is and the parts added up in a fixed order (see
/// [`ErrorSums`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RankingSums {
    pub precision: f64,
    pub recall: f64,
    pub recall_capped: f64,
    pub ap: f64,
    pub ndcg: f64,
    pub ndcg_wide: f64,
    /// Hits, and Σ min(k, |T_u|), over users (for the pooled precision).
    pub hits: u64,
    pub pooled_div: u64,
    /// Evaluated users.
    pub n: u64,
}

impl RankingSums {
    /// The sums of another part, after this one's.
    pub fn merge(&mut self, o: &RankingSums) {
        self.precision += o.precision;
        self.recall += o.recall;
        self.recall_capped += o.recall_capped;
        self.ap += o.ap;
        self.ndcg += o.ndcg;
        self.ndcg_wide += o.ndcg_wide;
        self.hits += o.hits;
        self.pooled_div += o.pooled_div;
        self.n += o.n;
    }

    /// The means at `k` (every mean 0 with no evaluated user).
    pub fn metrics(&self, k: usize) -> RankingMetrics {
        let n = self.n;
        let mean = |x: f64| if n == 0 { 0.0 } else { x / n as f64 };
        RankingMetrics {
            k,
            n_eval_users: n as usize,
            precision: mean(self.precision),
            recall: mean(self.recall),
            recall_capped: mean(self.recall_capped),
            map: mean(self.ap),
            ndcg: mean(self.ndcg),
            ndcg_wide: mean(self.ndcg_wide),
            precision_pooled: if self.pooled_div == 0 {
                0.0
            } else {
                self.hits as f64 / self.pooled_div as f64
            },
        }
    }
}

/// Scores one user's list at a cutoff `k` into [`RankingSums`]: the
/// discounts are computed once.
pub struct ListScorer {
    k: usize,
    disc: Vec<f64>,
    ideal: Vec<f64>,
    hit: Vec<bool>,
}

impl ListScorer {
    pub fn new(k: usize) -> ListScorer {
        let len = ranking_list_len(k);
        let disc: Vec<f64> = (1..=len).map(|r| 1.0 / ((r + 1) as f64).log2()).collect();
        let ideal: Vec<f64> = disc
            .iter()
            .scan(0f64, |acc, d| {
                *acc += d;
                Some(*acc)
            })
            .collect();
        ListScorer {
            k,
            disc,
            ideal,
            hit: Vec::with_capacity(len),
        }
    }

    /// Add a user's list `rec` against its relevant items `rel` (sorted,
    /// distinct). A user without relevant items, or `k == 0`, adds nothing.
    /// Only the first `k` recommendations count (the first
    /// [`WIDE_NDCG_K`] for `ndcg_wide`).
    pub fn add(&mut self, sums: &mut RankingSums, rec: &[u32], rel: &[u32]) {
        let k = self.k;
        if k == 0 || rel.is_empty() {
            return;
        }
        debug_assert!(rel.windows(2).all(|w| w[0] < w[1]), "relevant list not sorted/deduplicated");
        let (disc, ideal) = (&self.disc, &self.ideal);
        // DCG of the first `cut` positions over the ideal DCG of min(cut, |T_u|) hits.
        let ndcg_at = |hit: &[bool], n_rel: usize, cut: usize| {
            let dcg: f64 = hit.iter().take(cut).zip(disc).filter(|(h, _)| **h).map(|(_, d)| d).sum();
            dcg / ideal[cut.min(n_rel) - 1]
        };
        // Whether each listed item is relevant, decided once for every metric.
        let hit = &mut self.hit;
        hit.clear();
        hit.extend(rec.iter().take(disc.len()).map(|item| rel.binary_search(item).is_ok()));
        let m = k.min(rel.len());
        let (mut hits, mut ap_u) = (0usize, 0f64);
        for (pos, _) in hit.iter().take(k).enumerate().filter(|(_, h)| **h) {
            hits += 1;
            ap_u += hits as f64 / (pos + 1) as f64;
        }
        sums.precision += hits as f64 / k as f64;
        sums.recall += hits as f64 / rel.len() as f64;
        sums.recall_capped += hits as f64 / m as f64;
        sums.ap += ap_u / m as f64;
        sums.ndcg += ndcg_at(hit, rel.len(), k);
        sums.ndcg_wide += ndcg_at(hit, rel.len(), WIDE_NDCG_K);
        sums.hits += hits as u64;
        sums.pooled_div += m as u64;
        sums.n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::arr2;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn rating_metrics_raw_and_clipped() {
        let truth = [1.0f32, 5.0, 3.0, 4.0];
        let pred = [0.0f32, 6.0, 3.5, 4.0];
        // Raw: errors 1, -1, -0.5, 0 -> SE 1+1+0.25 = 2.25, RMSE = sqrt(2.25/4) = 0.75; MAE = 2.5/4 = 0.625.
        let m = rating_metrics(&truth, &pred, None);
        assert_eq!(m.n, 4);
        assert!(close(m.rmse, 0.75) && close(m.mae, 0.625), "{m:?}");
        // Clipped to [1,5]: predictions 1, 5, 3.5, 4 -> errors 0, 0, -0.5, 0; RMSE = sqrt(0.25/4) = 0.25, MAE = 0.125.
        let c = rating_metrics(&truth, &pred, Some((1.0, 5.0)));
        assert!(close(c.rmse, 0.25) && close(c.mae, 0.125), "{c:?}");
        assert_eq!(rating_metrics(&[], &[], None), RatingMetrics { rmse: 0.0, mae: 0.0, n: 0 });
        // Two parts summed apart, then merged: the same metrics.
        let (mut first, mut second) = (ErrorSums::default(), ErrorSums::default());
        first.add(truth[0], pred[0], None);
        for j in 1..4 {
            second.add(truth[j], pred[j], None);
        }
        first.merge(&second);
        assert_eq!(first.n, 4);
        assert!(close(first.metrics().rmse, 0.75) && close(first.metrics().mae, 0.625));
    }

    #[test]
    fn ranking_from_lists_hand_computed() {
        // K = 3.
        // User A: rec [5, 1, 7], relevant {1, 2, 7}: hits at ranks 2 and 3.
        //   P = 2/3, R = 2/3, AP = (1/2 + 2/3) / min(3,3) = (7/6)/3 = 7/18,
        //   DCG = 1/log2(3) + 1/log2(4) = 1/log2(3) + 0.5, IDCG = 1 + 1/log2(3) + 0.5.
        // User B: rec [4, 9, 0], relevant {4}: hit at rank 1.
        //   P = 1/3, R = 1, AP = 1/min(3,1) = 1, NDCG = 1/1 = 1.
        // User C: rec [3], relevant {8, 9, 10, 11}: no hits -> all 0 (m = 3 for pooling).
        // User D: relevant {} -> not evaluated.
        let rec = vec![vec![5, 1, 7, 2], vec![4, 9, 0], vec![3], vec![1, 2, 3]];
        let rel = vec![vec![1, 2, 7], vec![4], vec![8, 9, 10, 11], vec![]];
        let m = ranking_metrics_from_lists(&rec, &rel, 3);
        let l3 = 3f64.log2();
        let ndcg_a = (1.0 / l3 + 0.5) / (1.0 + 1.0 / l3 + 0.5);
        assert_eq!(m.k, 3);
        assert_eq!(m.n_eval_users, 3);
        assert!(close(m.precision, (2.0 / 3.0 + 1.0 / 3.0 + 0.0) / 3.0), "{m:?}");
        assert!(close(m.recall, (2.0 / 3.0 + 1.0 + 0.0) / 3.0), "{m:?}");
        assert!(close(m.map, (7.0 / 18.0 + 1.0 + 0.0) / 3.0), "{m:?}");
        assert!(close(m.ndcg, (ndcg_a + 1.0 + 0.0) / 3.0), "{m:?}");
        // Pooled: hits 2 + 1 + 0 = 3 over min(3,3) + min(3,1) + min(3,4) = 7.
        assert!(close(m.precision_pooled, 3.0 / 7.0), "{m:?}");
        // Capped recall: A 2/min(3,3), B 1/min(3,1), C 0.
        assert!(close(m.recall_capped, (2.0 / 3.0 + 1.0 + 0.0) / 3.0), "{m:?}");
        // NDCG@100 counts A's 4th recommendation (item 2, rank 4): DCG gains 1/log2(5).
        let l5 = 5f64.log2();
        let ndcg_a_wide = (1.0 / l3 + 0.5 + 1.0 / l5) / (1.0 + 1.0 / l3 + 0.5);
        assert!(close(m.ndcg_wide, (ndcg_a_wide + 1.0 + 0.0) / 3.0), "{m:?}");
        // More relevant items than K: rec [8, 9, 0], T = {8, 9, 10, 11}, K = 3.
        //   recall = 2/4, capped = 2/min(3,4) = 2/3;
        //   NDCG@3 = (1 + 1/log2 3) / (1 + 1/log2 3 + 1/2);
        //   NDCG@100 = (1 + 1/log2 3) / (1 + 1/log2 3 + 1/2 + 1/log2 5) (ideal over min(100, 4) hits).
        let wide = ranking_metrics_from_lists(&[vec![8, 9, 0]], &[vec![8, 9, 10, 11]], 3);
        assert!(close(wide.recall, 0.5) && close(wide.recall_capped, 2.0 / 3.0), "{wide:?}");
        assert!(close(wide.ndcg, (1.0 + 1.0 / l3) / (1.5 + 1.0 / l3)), "{wide:?}");
        assert!(close(wide.ndcg_wide, (1.0 + 1.0 / l3) / (1.5 + 1.0 / l3 + 1.0 / l5)), "{wide:?}");
        // The 4th recommendation of A (item 2, relevant) is beyond K and must not count.
        let none = ranking_metrics_from_lists(&[vec![1]], &[vec![]], 3);
        assert_eq!(none.n_eval_users, 0);
        assert_eq!(none.precision, 0.0);
    }

    #[test]
    fn ranking_metrics_end_to_end() {
        // 1-d factors; item scores for a user with factor 1 are the item factors.
        let items = arr2(&[[3.0f32], [5.0], [5.0], [4.0], [1.0], [2.0]]);
        let users = arr2(&[[1.0f32], [1.0], [1.0], [-1.0]]);
        // Training: user 0 saw item 1 (excluded, although it scores highest); user 2 saw 0.
        let train = Csr::from_triples(4, 6, &[0, 2], &[1, 0], &[1.0, 1.0]);
        // Test rows:
        //   user 0: item 2 (r=4), item 3 (r=1, below min_pos 2 -> not relevant), item 2 again (dup).
        //   user 1: only item 4 with r=1 -> no relevant item -> not evaluated.
        //   user 2: item 5 (r=5).
        //   user 3: item 4 (r=3); its factor -1 ranks item 4 first.
        let test = TestSet {
            users: vec![0, 0, 0, 1, 2, 3],
            items: vec![2, 3, 2, 4, 5, 4],
            ratings: vec![4.0, 1.0, 4.0, 1.0, 5.0, 3.0],
        };
        // K = 2.
        // user 0: candidates exclude item 1; scores 2:5, 3:4, 0:3 -> top [2, 3]; T = {2}:
        //   hit at rank 1: P = 1/2, R = 1, AP = 1/1, NDCG = 1.
        //   (Without the training filter the list would be [1, 2]: item 1 wins the tie with 2 by index.)
        // user 2: candidates exclude 0; items 1 and 2 tie at 5 -> [1, 2]; T = {5}: no hit, all 0.
        // user 3: scores are negated: 4:-1, 5:-2 -> [4, 5]; T = {4}: hit at rank 1 -> P 1/2, R 1, AP 1, NDCG 1.
        let m = ranking_metrics(users.view(), items.view(), &train, &test, 2, 2.0);
        assert_eq!(m.n_eval_users, 3);
        assert!(close(m.precision, (0.5 + 0.0 + 0.5) / 3.0), "{m:?}");
        assert!(close(m.recall, 2.0 / 3.0), "{m:?}");
        assert!(close(m.map, 2.0 / 3.0), "{m:?}");
        assert!(close(m.ndcg, 2.0 / 3.0), "{m:?}");
        // Pooled: 2 hits over min(2,1)*3 = 3.
        assert!(close(m.precision_pooled, 2.0 / 3.0), "{m:?}");
        // NDCG@100 ranks past K: user 2's list [1, 2, 3, 5, 4] has item 5 at rank 4.
        assert!(close(m.ndcg_wide, (2.0 + 1.0 / 5f64.log2()) / 3.0), "{m:?}");
        // Summed by user blocks (as workers sum the blocks they hold): the
        // same metrics; blocks without evaluated users add nothing.
        for starts in [vec![0, 4], vec![0, 1, 4], vec![0, 2, 2, 3, 4], vec![0, 1, 2, 3, 4]] {
            let b = ranking_metrics_by_blocks(users.view(), items.view(), &train, &test, 2, 2.0, &starts);
            assert_eq!(b.n_eval_users, 3, "{starts:?}");
            assert!(
                close(b.ndcg, m.ndcg) && close(b.map, m.map) && close(b.ndcg_wide, m.ndcg_wide),
                "{starts:?}: {b:?}"
            );
            assert_eq!(b.precision_pooled, m.precision_pooled, "{starts:?}");
        }

        // Tie-breaking to the lower index: user 2's relevant item 2 (tied with 1) is NOT in a top-1 list.
        let t2 = TestSet {
            users: vec![2],
            items: vec![2],
            ratings: vec![5.0],
        };
        let m1 = ranking_metrics(users.view(), items.view(), &train, &t2, 1, 1.0);
        assert_eq!((m1.n_eval_users, m1.precision), (1, 0.0));
        let t1 = TestSet {
            users: vec![2],
            items: vec![1],
            ratings: vec![5.0],
        };
        let m1 = ranking_metrics(users.view(), items.view(), &train, &t1, 1, 1.0);
        assert_eq!((m1.n_eval_users, m1.precision), (1, 1.0));

        // min_pos 1 makes user 1 (item 4, score 1 -> rank 6 of 6) evaluated too.
        let m = ranking_metrics(users.view(), items.view(), &train, &test, 2, 1.0);
        assert_eq!(m.n_eval_users, 4);
        // user 0 now has T = {2, 3}: top [2, 3] -> P 1, R 1, AP 1, NDCG 1.
        assert!(close(m.precision, (1.0 + 0.0 + 0.0 + 0.5) / 4.0), "{m:?}");
    }
}
