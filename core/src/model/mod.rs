//! The trained model: factors, biases, id maps and the items each user has
//! seen, with prediction, recommendation and similarity queries.
//!
//! [`store`] saves it to and loads it from a model directory.

pub mod fold_in;
pub mod store;

pub use fold_in::{fold_in_users, FoldIn, FoldInError, FoldInReport, FoldedUser};
pub use store::{load_model, save_model, ModelError, MODEL_FORMAT_VERSION};

use std::sync::OnceLock;

use ndarray::{Array2, ArrayView2, Axis};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::data::Csr;
use crate::topk::{self, Scored, TopN};

/// Explicit ratings (biases, predicted ratings) or implicit feedback (scores).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Explicit,
    Implicit,
}

/// Lazily built id -> row maps of a [`Model`].
///
/// Carries no model data: it compares equal to any other, a clone starts
/// empty, and it is rebuilt on use when the id lists no longer match it.
#[derive(Default)]
pub struct IdIndex {
    users: OnceLock<FxHashMap<String, u32>>,
    items: OnceLock<FxHashMap<String, u32>>,
}

impl IdIndex {
    fn lookup(cell: &OnceLock<FxHashMap<String, u32>>, ids: &[String], id: &str) -> Option<usize> {
        let map = cell.get_or_init(|| ids.iter().enumerate().map(|(i, s)| (s.clone(), i as u32)).collect());
        if map.len() == ids.len() {
            // Verify the hit, so a map built before `ids` changed can't give a wrong row.
            match map.get(id) {
                Some(&i) if ids.get(i as usize).map(String::as_str) == Some(id) => return Some(i as usize),
                None => return None,
                Some(_) => {}
            }
        }
        // Stale map (ids changed after it was built) or duplicate ids: scan.
        ids.iter().position(|s| s == id)
    }
}

impl Clone for IdIndex {
    fn clone(&self) -> Self {
        IdIndex::default()
    }
}

impl PartialEq for IdIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for IdIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdIndex")
    }
}

/// A trained model.
///
/// Build with a struct literal ending in `..Default::default()` (which also
/// fills `index`), or set `index: Default::default()`.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub kind: ModelKind,
    /// Original ids in row order.
    pub user_ids: Vec<String>,
    pub item_ids: Vec<String>,
    /// n_users × k and n_items × k.
    pub user_factors: Array2<f32>,
    pub item_factors: Array2<f32>,
    /// Explicit models.
    pub user_bias: Option<Vec<f32>>,
    pub item_bias: Option<Vec<f32>>,
    /// 0 for implicit.
    pub global_mean: f32,
    pub rating_range: Option<(f32, f32)>,
    /// Training items of each user (sorted), so recommendations exclude seen
    /// items without the data file. Only the structure is saved; a loaded
    /// model has all values 1.
    pub seen: Csr,
    pub hyperparameters: serde_json::Value,
    pub data_fingerprint: String,
    pub metrics: serde_json::Value,
    /// Increments when users are folded in (model versions).
    pub version: u64,
    /// Lazy id lookup (no data; ignored by `==`).
    pub index: IdIndex,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            kind: ModelKind::Implicit,
            user_ids: Vec::new(),
            item_ids: Vec::new(),
            user_factors: Array2::zeros((0, 0)),
            item_factors: Array2::zeros((0, 0)),
            user_bias: None,
            item_bias: None,
            global_mean: 0.0,
            rating_range: None,
            seen: Csr {
                n_cols: 0,
                indptr: vec![0],
                indices: Vec::new(),
                values: Vec::new(),
            },
            hyperparameters: serde_json::Value::Null,
            data_fingerprint: String::new(),
            metrics: serde_json::Value::Null,
            version: 0,
            index: IdIndex::default(),
        }
    }
}

/// Cosine similarities of row `q` of `m` to every row (0 where a norm is 0).
fn cosine_row(m: ArrayView2<f32>, q: usize, n: usize) -> Vec<Scored> {
    let norms: Vec<f32> = m
        .axis_iter(Axis(0))
        .map(|r| {
            let r = r.to_vec();
            topk::dot(&r, &r).sqrt()
        })
        .collect();
    let qv = m.row(q).to_vec();
    let dots = topk::row_dots(m, &qv);
    let qn = norms[q];
    let sims: Vec<f32> = dots
        .iter()
        .zip(&norms)
        .map(|(&d, &nj)| {
            let den = qn * nj;
            if den > 0.0 {
                d / den
            } else {
                0.0
            }
        })
        .collect();
    topk::top_n_of_scores(&sims, n, &[q as u32])
}

impl Model {
    /// Number of latent factors k.
    pub fn factors(&self) -> usize {
        self.user_factors.ncols()
    }

    pub fn n_users(&self) -> usize {
        self.user_ids.len()
    }

    pub fn n_items(&self) -> usize {
        self.item_ids.len()
    }

    /// Row of a user id (O(1) after the first call).
    pub fn user_index(&self, id: &str) -> Option<usize> {
        IdIndex::lookup(&self.index.users, &self.user_ids, id)
    }

    /// Row of an item id (O(1) after the first call).
    pub fn item_index(&self, id: &str) -> Option<usize> {
        IdIndex::lookup(&self.index.items, &self.item_ids, id)
    }

    /// Drop the id maps (they are rebuilt on the next lookup). Lookups stay
    /// correct without this after ids change, but slower until it is called.
    pub fn reset_index(&mut self) {
        self.index = IdIndex::default();
    }

    fn user_bias_of(&self, u: usize) -> f32 {
        self.user_bias.as_ref().map_or(0.0, |b| b[u])
    }

    /// The constant and per-item terms added to p·q (explicit: μ + b_u + b_i).
    #[inline]
    fn offset(&self, user_bias: f32, i: usize) -> f32 {
        match self.kind {
            ModelKind::Explicit => self.global_mean + user_bias + self.item_bias.as_ref().map_or(0.0, |b| b[i]),
            ModelKind::Implicit => 0.0,
        }
    }

    #[inline]
    fn score_vec(&self, user_vec: &[f32], user_bias: f32, i: usize) -> f32 {
        let row = self.item_factors.row(i);
        let d = match row.as_slice() {
            Some(r) => topk::dot(user_vec, r),
            None => topk::dot(user_vec, &row.to_vec()),
        };
        match self.kind {
            ModelKind::Explicit => self.offset(user_bias, i) + d,
            ModelKind::Implicit => d,
        }
    }

    /// Predicted rating/score: explicit mu + b_u + b_i + p.q, implicit p.q.
    ///
    /// Panics when `u` or `i` is out of range.
    pub fn predict(&self, u: usize, i: usize) -> f32 {
        let p = self.user_factors.row(u).to_vec();
        self.score_vec(&p, self.user_bias_of(u), i)
    }

    /// Top-n items for user u (seen excluded unless include_seen), restricted
    /// to `candidates` (sorted item indices) if given. Scores are [`Model::predict`]'s.
    ///
    /// Panics when `u` is out of range.
    pub fn recommend(&self, u: usize, n: usize, include_seen: bool, candidates: Option<&[u32]>) -> Vec<Scored> {
        let p = self.user_factors.row(u).to_vec();
        let exclude: &[u32] = if include_seen || u >= self.seen.n_rows() {
            &[]
        } else {
            self.seen.row(u).0
        };
        self.recommend_for_vector(&p, self.user_bias_of(u), n, exclude, candidates)
    }

    /// Recommendation scores for an arbitrary user vector (fold-in): explicit
    /// adds mu + b_u(given) + b_i; excludes the given sorted `seen` indices.
    ///
    /// `candidates` (sorted; out-of-range indices are ignored) restricts the items.
    pub fn recommend_for_vector(
        &self,
        user_vec: &[f32],
        user_bias: f32,
        n: usize,
        exclude: &[u32],
        candidates: Option<&[u32]>,
    ) -> Vec<Scored> {
        assert_eq!(
            user_vec.len(),
            self.item_factors.ncols(),
            "user vector has {} factors, the model {}",
            user_vec.len(),
            self.item_factors.ncols()
        );
        let n_items = self.item_factors.nrows();
        match candidates {
            None => {
                let mut scores = topk::row_dots(self.item_factors.view(), user_vec);
                if self.kind == ModelKind::Explicit {
                    for (i, s) in scores.iter_mut().enumerate() {
                        *s += self.offset(user_bias, i);
                    }
                }
                topk::top_n_of_scores(&scores, n, exclude)
            }
            Some(cands) => {
                let mut top = TopN::new(n);
                let mut ex = exclude.iter().copied().peekable();
                let mut last = None;
                for &c in cands {
                    if c as usize >= n_items || last == Some(c) {
                        continue;
                    }
                    last = Some(c);
                    while ex.next_if(|&e| e < c).is_some() {}
                    if ex.peek() == Some(&c) {
                        continue;
                    }
                    top.push(c, self.score_vec(user_vec, user_bias, c as usize));
                }
                top.into_sorted()
            }
        }
    }

    /// The `n` items most similar to item `i` by cosine over item factors (i itself excluded).
    pub fn similar_items(&self, i: usize, n: usize) -> Vec<Scored> {
        cosine_row(self.item_factors.view(), i, n)
    }

    /// The `n` users most similar to user `u` by cosine over user factors (u itself excluded).
    pub fn similar_users(&self, u: usize, n: usize) -> Vec<Scored> {
        cosine_row(self.user_factors.view(), u, n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// A random model for tests: `nu` users, `ni` items, `k` factors, each user having seen a few items.
    pub(crate) fn random_model(kind: ModelKind, nu: usize, ni: usize, k: usize, seed: u64) -> Model {
        let mut rng = SplitMix64::new(seed);
        let uf = Array2::from_shape_fn((nu, k), |_| rng.next_normal() as f32);
        let itf = Array2::from_shape_fn((ni, k), |_| rng.next_normal() as f32);
        let (mut rows, mut cols) = (Vec::new(), Vec::new());
        for u in 0..nu {
            for i in 0..ni {
                if rng.next_f64() < 0.3 {
                    rows.push(u as u32);
                    cols.push(i as u32);
                }
            }
        }
        let ones = vec![1.0; rows.len()];
        let explicit = kind == ModelKind::Explicit;
        Model {
            kind,
            user_ids: (0..nu).map(|u| format!("u{u}")).collect(),
            item_ids: (0..ni).map(|i| format!("item {i}")).collect(),
            user_factors: uf,
            item_factors: itf,
            user_bias: explicit.then(|| (0..nu).map(|_| rng.next_normal() as f32 * 0.3).collect()),
            item_bias: explicit.then(|| (0..ni).map(|_| rng.next_normal() as f32 * 0.3).collect()),
            global_mean: if explicit { 3.53 } else { 0.0 },
            rating_range: explicit.then_some((0.5, 5.0)),
            seen: Csr::from_triples(nu, ni, &rows, &cols, &ones),
            hyperparameters: serde_json::json!({"factors": k, "lambda": 0.1}),
            data_fingerprint: "abc123".into(),
            metrics: serde_json::json!({"rmse": 0.9}),
            version: 3,
            ..Default::default()
        }
    }

    fn brute_recommend(m: &Model, u: usize, exclude: &[u32], cands: Option<&[u32]>) -> Vec<u32> {
        let mut v: Vec<(f32, u32)> = (0..m.n_items() as u32)
            .filter(|i| !exclude.contains(i) && cands.is_none_or(|c| c.contains(i)))
            .map(|i| (m.predict(u, i as usize), i))
            .collect();
        v.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
        v.into_iter().map(|x| x.1).collect()
    }

    #[test]
    fn ids_and_predict() {
        let mut m = random_model(ModelKind::Explicit, 5, 7, 3, 1);
        assert_eq!(m.factors(), 3);
        assert_eq!(m.user_index("u3"), Some(3));
        assert_eq!(m.item_index("item 6"), Some(6));
        assert_eq!(m.item_index("item 7"), None);
        // Still correct after the ids change under a built map.
        m.user_ids.swap(0, 3);
        assert_eq!(m.user_index("u3"), Some(0));
        assert_eq!(m.user_index("u0"), Some(3));
        m.user_ids.push("new".into());
        assert_eq!(m.user_index("new"), Some(5));
        m.reset_index();
        assert_eq!(m.user_index("new"), Some(5));
        let (u, i) = (2, 4);
        let d: f32 = (0..3).map(|c| m.user_factors[[u, c]] * m.item_factors[[i, c]]).sum();
        let want = 3.53 + m.user_bias.as_ref().unwrap()[u] + m.item_bias.as_ref().unwrap()[i] + d;
        assert!((m.predict(u, i) - want).abs() < 1e-5);
        let imp = random_model(ModelKind::Implicit, 5, 7, 3, 1);
        let d: f32 = (0..3).map(|c| imp.user_factors[[u, c]] * imp.item_factors[[i, c]]).sum();
        assert!((imp.predict(u, i) - d).abs() < 1e-5);
    }

    #[test]
    fn recommend_excludes_seen_and_respects_candidates() {
        for kind in [ModelKind::Explicit, ModelKind::Implicit] {
            let m = random_model(kind, 6, 30, 4, 5);
            for u in 0..6 {
                let seen = m.seen.row(u).0;
                assert!(!seen.is_empty());
                let got: Vec<u32> = m.recommend(u, 10, false, None).iter().map(|s| s.index).collect();
                assert!(got.iter().all(|i| !seen.contains(i)), "seen item recommended");
                assert_eq!(got, brute_recommend(&m, u, seen, None)[..10]);
                let all: Vec<u32> = m.recommend(u, 100, true, None).iter().map(|s| s.index).collect();
                assert_eq!(all.len(), 30, "include_seen keeps every item");
                assert_eq!(all, brute_recommend(&m, u, &[], None));
                let cands: Vec<u32> = vec![0, 2, 3, 5, 8, 13, 21, 29, 40];
                let got: Vec<u32> = m.recommend(u, 100, false, Some(&cands)).iter().map(|s| s.index).collect();
                assert!(got.iter().all(|i| cands.contains(i) && !seen.contains(i)));
                assert_eq!(got, brute_recommend(&m, u, seen, Some(&cands)));
                // Scores are the predictions.
                let r = m.recommend(u, 3, true, Some(&cands));
                for s in &r {
                    assert_eq!(s.score.to_bits(), m.predict(u, s.index as usize).to_bits());
                }
            }
        }
    }

    #[test]
    fn similar_items_equals_brute_force_cosine() {
        let m = random_model(ModelKind::Implicit, 20, 50, 6, 9);
        let f = &m.item_factors;
        let cos = |a: usize, b: usize| {
            let (mut d, mut na, mut nb) = (0f64, 0f64, 0f64);
            for c in 0..f.ncols() {
                let (x, y) = (f[[a, c]] as f64, f[[b, c]] as f64);
                d += x * y;
                na += x * x;
                nb += y * y;
            }
            d / (na.sqrt() * nb.sqrt())
        };
        for i in [0, 17, 49] {
            let got = m.similar_items(i, 10);
            assert!(got.iter().all(|s| s.index as usize != i), "query item returned");
            let mut want: Vec<(f64, usize)> = (0..50).filter(|&j| j != i).map(|j| (cos(i, j), j)).collect();
            want.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
            let gi: Vec<usize> = got.iter().map(|s| s.index as usize).collect();
            let wi: Vec<usize> = want[..10].iter().map(|w| w.1).collect();
            assert_eq!(gi, wi);
            for (g, w) in got.iter().zip(&want) {
                assert!((g.score as f64 - w.0).abs() < 1e-5);
            }
        }
        let su = m.similar_users(3, 100);
        assert_eq!(su.len(), 19);
        assert!(su.iter().all(|s| s.index != 3));
        // A zero vector is similar to nothing (all 0), and is never similar to itself.
        let mut z = m.clone();
        z.item_factors.row_mut(0).fill(0.0);
        assert!(z.similar_items(0, 5).iter().all(|s| s.score == 0.0));
    }
}
