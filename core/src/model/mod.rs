//! The trained model: factors, biases, id maps and the items each user has
//! seen, with prediction, recommendation and similarity queries.
//!
//! [`store`] saves it to and loads it from a model directory.

pub(crate) mod fold_in;
pub mod id_lines;
pub mod store;

pub use fold_in::{fold_in_users, FoldIn, FoldInError, FoldInReport, FoldedUser};
pub use store::{load_model, save_model, ModelError, PendingModel, MODEL_FORMAT_VERSION};

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

/// Id -> row maps of a [`Model`], built with it. Derived from the id lists,
/// so it is left out of `==` and `Debug`.
#[derive(Clone, Default)]
struct IdIndex {
    users: FxHashMap<String, u32>,
    items: FxHashMap<String, u32>,
}

impl IdIndex {
    /// Index both id lists; a repeated id is an error (rows would be ambiguous).
    fn build(user_ids: &[String], item_ids: &[String]) -> Result<IdIndex, ModelError> {
        fn one(which: &'static str, ids: &[String]) -> Result<FxHashMap<String, u32>, ModelError> {
            let mut map = FxHashMap::with_capacity_and_hasher(ids.len(), Default::default());
            for (row, id) in ids.iter().enumerate() {
                if let Some(first) = map.insert(id.clone(), row as u32) {
                    return Err(ModelError::Invalid {
                        problem: format!("{which} id {id:?} appears twice (rows {first} and {row})"),
                    });
                }
            }
            Ok(map)
        }
        Ok(IdIndex {
            users: one("user", user_ids)?,
            items: one("item", item_ids)?,
        })
    }
}

impl PartialEq for IdIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for IdIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdIndex({} users, {} items)", self.users.len(), self.items.len())
    }
}

/// The data of a model, as training builds it or a model directory holds it.
/// [`Model::new`] checks it and indexes its ids.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelParts {
    pub kind: ModelKind,
    /// Original ids in row order.
    pub user_ids: Vec<String>,
    pub item_ids: Vec<String>,
    /// n_users × k and n_items × k.
    pub user_factors: Array2<f32>,
    pub item_factors: Array2<f32>,
    /// Biased explicit models.
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
}

impl Default for ModelParts {
    fn default() -> Self {
        ModelParts {
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
        }
    }
}

impl ModelParts {
    /// Every size agrees with every other (what the queries index by),
    /// the seen matrix's aside.
    fn check_rows(&self) -> Result<(), ModelError> {
        let bad = |problem: String| Err(ModelError::Invalid { problem });
        let (nu, ni) = (self.user_ids.len(), self.item_ids.len());
        let k = self.user_factors.ncols();
        if self.user_factors.nrows() != nu {
            return bad(format!("{} user factor rows for {nu} user ids", self.user_factors.nrows()));
        }
        if self.item_factors.dim() != (ni, k) {
            let (r, c) = self.item_factors.dim();
            return bad(format!("item factors are {r} × {c}, expected {ni} × {k}"));
        }
        for (which, bias, n) in [("user", &self.user_bias, nu), ("item", &self.item_bias, ni)] {
            if let Some(b) = bias {
                if b.len() != n {
                    return bad(format!("{} {which} biases for {n} {which}s", b.len()));
                }
            }
        }
        if self.user_bias.is_some() != self.item_bias.is_some() {
            return bad("user and item biases must be both present or both absent".into());
        }
        if self.kind == ModelKind::Implicit && self.user_bias.is_some() {
            return bad("an implicit model has no biases".into());
        }
        Ok(())
    }

    /// [`Self::check_rows`], and the seen matrix.
    fn check(&self) -> Result<(), ModelError> {
        self.check_rows()?;
        match seen_problem(&self.seen, self.user_ids.len(), self.item_ids.len()) {
            Some(problem) => Err(ModelError::Invalid { problem }),
            None => Ok(()),
        }
    }
}

/// What is wrong with a seen-items CSR of `n_users` rows over `n_items`
/// items: shape, offsets, item range, or rows not sorted and distinct.
fn seen_problem(seen: &Csr, n_users: usize, n_items: usize) -> Option<String> {
    if seen.indptr.len() != n_users + 1 || seen.n_cols != n_items {
        return Some(format!(
            "seen items are {} × {}, expected {n_users} × {n_items}",
            seen.n_rows(),
            seen.n_cols
        ));
    }
    let nnz = seen.indices.len();
    if seen.indptr[0] != 0 || seen.indptr.windows(2).any(|w| w[0] > w[1]) || seen.indptr[n_users] != nnz {
        return Some(format!(
            "the seen items' offsets do not rise from 0 to {nnz} (the number of entries)"
        ));
    }
    for u in 0..n_users {
        let row = seen.row(u).0;
        if let Some(&i) = row.iter().find(|&&i| i as usize >= n_items) {
            return Some(format!("a seen item row {i} is past the {n_items} items (user row {u})"));
        }
        if row.windows(2).any(|w| w[0] >= w[1]) {
            return Some(format!("the seen items of user row {u} are not sorted and distinct"));
        }
    }
    None
}

/// A trained model: read-only once built, with its ids indexed, so every
/// lookup is O(1) and no query can see sizes that disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    parts: ModelParts,
    index: IdIndex,
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
        self.user_factors().ncols()
    }

    pub fn n_users(&self) -> usize {
        self.user_ids().len()
    }

    pub fn n_items(&self) -> usize {
        self.item_ids().len()
    }

    /// Check the parts and index the ids (an id given twice is an error).
    pub fn new(parts: ModelParts) -> Result<Model, ModelError> {
        parts.check()?;
        let index = IdIndex::build(&parts.user_ids, &parts.item_ids)?;
        Ok(Model { parts, index })
    }

    /// The data back, to change it (then [`Model::new`] again) or to move it out.
    pub fn into_parts(self) -> ModelParts {
        self.parts
    }

    pub fn kind(&self) -> ModelKind {
        self.parts.kind
    }

    /// Original user ids in row order.
    pub fn user_ids(&self) -> &[String] {
        &self.parts.user_ids
    }

    /// Original item ids in row order.
    pub fn item_ids(&self) -> &[String] {
        &self.parts.item_ids
    }

    /// n_users × k.
    pub fn user_factors(&self) -> &Array2<f32> {
        &self.parts.user_factors
    }

    /// n_items × k.
    pub fn item_factors(&self) -> &Array2<f32> {
        &self.parts.item_factors
    }

    /// b_u of biased explicit models.
    pub fn user_bias(&self) -> Option<&[f32]> {
        self.parts.user_bias.as_deref()
    }

    /// b_i of biased explicit models.
    pub fn item_bias(&self) -> Option<&[f32]> {
        self.parts.item_bias.as_deref()
    }

    /// μ of biased explicit models, else 0.
    pub fn global_mean(&self) -> f32 {
        self.parts.global_mean
    }

    /// The training data's rating range (explicit models).
    pub fn rating_range(&self) -> Option<(f32, f32)> {
        self.parts.rating_range
    }

    /// Each user's training items (sorted item rows).
    pub fn seen(&self) -> &Csr {
        &self.parts.seen
    }

    /// The training configuration, as saved in model.json.
    pub fn hyperparameters(&self) -> &serde_json::Value {
        &self.parts.hyperparameters
    }

    pub fn data_fingerprint(&self) -> &str {
        &self.parts.data_fingerprint
    }

    /// Metrics measured at training time.
    pub fn metrics(&self) -> &serde_json::Value {
        &self.parts.metrics
    }

    /// Starts at 1; increments with each fold-in.
    pub fn version(&self) -> u64 {
        self.parts.version
    }

    /// Row of a user id.
    pub fn user_index(&self, id: &str) -> Option<usize> {
        self.index.users.get(id).map(|&r| r as usize)
    }

    /// Row of an item id.
    pub fn item_index(&self, id: &str) -> Option<usize> {
        self.index.items.get(id).map(|&r| r as usize)
    }

    fn user_bias_of(&self, u: usize) -> f32 {
        self.user_bias().map_or(0.0, |b| b[u])
    }

    /// The constant and per-item terms added to p·q (explicit: μ + b_u + b_i).
    #[inline]
    fn offset(&self, user_bias: f32, i: usize) -> f32 {
        match self.kind() {
            ModelKind::Explicit => self.global_mean() + user_bias + self.item_bias().map_or(0.0, |b| b[i]),
            ModelKind::Implicit => 0.0,
        }
    }

    #[inline]
    fn score_vec(&self, user_vec: &[f32], user_bias: f32, i: usize) -> f32 {
        let row = self.item_factors().row(i);
        let d = match row.as_slice() {
            Some(r) => topk::dot(user_vec, r),
            None => topk::dot(user_vec, &row.to_vec()),
        };
        match self.kind() {
            ModelKind::Explicit => self.offset(user_bias, i) + d,
            ModelKind::Implicit => d,
        }
    }

    /// Predicted rating/score: explicit mu + b_u + b_i + p.q, implicit p.q.
    ///
    /// Panics when `u` or `i` is out of range.
    pub fn predict(&self, u: usize, i: usize) -> f32 {
        let p = self.user_factors().row(u).to_vec();
        self.score_vec(&p, self.user_bias_of(u), i)
    }

    /// Top-n items for user u (seen excluded unless include_seen), restricted
    /// to `candidates` (sorted item indices) if given. Scores are [`Model::predict`]'s.
    ///
    /// Panics when `u` is out of range.
    pub fn recommend(&self, u: usize, n: usize, include_seen: bool, candidates: Option<&[u32]>) -> Vec<Scored> {
        let p = self.user_factors().row(u).to_vec();
        let exclude: &[u32] = if include_seen { &[] } else { self.seen().row(u).0 };
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
            self.item_factors().ncols(),
            "user vector has {} factors, the model {}",
            user_vec.len(),
            self.item_factors().ncols()
        );
        let n_items = self.item_factors().nrows();
        match candidates {
            None => {
                let mut scores = topk::row_dots(self.item_factors().view(), user_vec);
                if self.kind() == ModelKind::Explicit {
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
        cosine_row(self.item_factors().view(), i, n)
    }

    /// The `n` users most similar to user `u` by cosine over user factors (u itself excluded).
    pub fn similar_users(&self, u: usize, n: usize) -> Vec<Scored> {
        cosine_row(self.user_factors().view(), u, n)
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
        Model::new(ModelParts {
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
        })
        .expect("consistent parts")
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
        let m = random_model(ModelKind::Explicit, 5, 7, 3, 1);
        assert_eq!(m.factors(), 3);
        assert_eq!(m.user_index("u3"), Some(3));
        assert_eq!(m.item_index("item 6"), Some(6));
        assert_eq!(m.item_index("item 7"), None);
        // Changed parts are indexed anew.
        let mut parts = m.clone().into_parts();
        parts.user_ids.swap(0, 3);
        let swapped = Model::new(parts).unwrap();
        assert_eq!(swapped.user_index("u3"), Some(0));
        assert_eq!(swapped.user_index("u0"), Some(3));
        let (u, i) = (2, 4);
        let d: f32 = (0..3).map(|c| m.user_factors()[[u, c]] * m.item_factors()[[i, c]]).sum();
        let want = 3.53 + m.user_bias().unwrap()[u] + m.item_bias().unwrap()[i] + d;
        assert!((m.predict(u, i) - want).abs() < 1e-5);
        let imp = random_model(ModelKind::Implicit, 5, 7, 3, 1);
        let d: f32 = (0..3).map(|c| imp.user_factors()[[u, c]] * imp.item_factors()[[i, c]]).sum();
        assert!((imp.predict(u, i) - d).abs() < 1e-5);
    }

    #[test]
    fn new_rejects_parts_that_disagree() {
        let good = random_model(ModelKind::Explicit, 5, 7, 3, 1).into_parts();
        let problem = |change: &dyn Fn(&mut ModelParts)| {
            let mut p = good.clone();
            change(&mut p);
            match Model::new(p) {
                Err(ModelError::Invalid { problem }) => problem,
                other => panic!("accepted or wrong error: {other:?}"),
            }
        };
        assert!(problem(&|p| p.user_ids[4] = "u1".into()).contains("user id \"u1\" appears twice (rows 1 and 4)"));
        assert!(problem(&|p| p.item_ids[0] = "item 6".into()).contains("item id \"item 6\" appears twice"));
        assert!(problem(&|p| {
            p.user_ids.pop();
        })
        .contains("5 user factor rows for 4 user ids"));
        assert!(problem(&|p| p.item_factors = Array2::zeros((7, 4))).contains("item factors are 7 × 4, expected 7 × 3"));
        assert!(problem(&|p| p.item_bias.as_mut().unwrap().push(0.0)).contains("8 item biases for 7 items"));
        assert!(problem(&|p| p.user_bias = None).contains("both present or both absent"));
        assert!(problem(&|p| p.kind = ModelKind::Implicit).contains("no biases"));
        assert!(problem(&|p| p.seen.n_cols = 8).contains("seen items are 5 × 8"));
        assert!(problem(&|p| p.seen.indices[0] = 7).contains("seen item row 7 is past the 7 items"));
        assert!(problem(&|p| {
            p.seen.indptr.pop();
        })
        .contains("seen items are 4 × 7, expected 5 × 7"));
        let seen = |indptr: Vec<usize>, indices: Vec<u32>| Csr {
            n_cols: 7,
            values: vec![1.0; indices.len()],
            indptr,
            indices,
        };
        assert!(problem(&|p| p.seen = seen(vec![0, 2, 1, 2, 2, 2], vec![1, 2])).contains("offsets do not rise from 0 to 2"));
        assert!(problem(&|p| p.seen = seen(vec![0, 2, 2, 2, 2, 2], vec![3, 3])).contains("user row 0 are not sorted and distinct"));
        assert!(Model::new(good).is_ok());
    }

    #[test]
    fn recommend_excludes_seen_and_respects_candidates() {
        for kind in [ModelKind::Explicit, ModelKind::Implicit] {
            let m = random_model(kind, 6, 30, 4, 5);
            for u in 0..6 {
                let seen = m.seen().row(u).0;
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
        let f = &m.item_factors();
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
        let mut z = m.clone().into_parts();
        z.item_factors.row_mut(0).fill(0.0);
        let z = Model::new(z).unwrap();
        assert!(z.similar_items(0, 5).iter().all(|s| s.score == 0.0));
    }
}
