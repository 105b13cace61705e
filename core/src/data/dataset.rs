//! Dense indexing and the two layouts of the training ratings.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::held_out::HeldOutUsers;
use super::ids::dense_order;
use super::{Csr, DataError, RawRatings};

/// What to do with repeated (user, item) pairs in the training rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DuplicatePolicy {
    /// The last rating in file order wins (default for explicit ratings).
    #[default]
    Last,
    /// The first rating in file order wins.
    First,
    /// Values add up (default for implicit feedback: counts of events).
    Sum,
}

impl std::str::FromStr for DuplicatePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "last" => Ok(Self::Last),
            "first" => Ok(Self::First),
            "sum" => Ok(Self::Sum),
            _ => Err(format!("unknown duplicate policy '{s}' (last, first, sum)")),
        }
    }
}

/// Held-out ratings in dense indices (cold-start rows already dropped).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestSet {
    pub users: Vec<u32>,
    pub items: Vec<u32>,
    pub ratings: Vec<f32>,
}

impl TestSet {
    pub fn len(&self) -> usize {
        self.ratings.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ratings.is_empty()
    }
}

/// How a [`Dataset`]'s dense indices were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdOrder {
    /// [`dense_order`]: a block is a range of id hash buckets, which anyone
    /// holding an id can compute (`BlockLayout::hashed`).
    Hashed,
    /// The caller's numbering (a matrix handed over whole): blocks are
    /// balanced ranges of it (`BlockLayout::balanced`).
    Given,
}

/// Training ratings by user and by item, test ratings, and the id maps.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Original user id of each dense user index, in [`dense_order`] (by
    /// hash bucket, then numerically when all ids are integers), or in the
    /// caller's numbering (see [`IdOrder`]).
    pub user_ids: Vec<String>,
    pub item_ids: Vec<String>,
    /// How the dense indices were chosen, which decides the block layouts.
    pub id_order: IdOrder,
    /// users × items, columns sorted.
    pub by_user: Csr,
    /// items × users, columns sorted.
    pub by_item: Csr,
    pub test: TestSet,
    /// Users held out of training whole (`--split users`), ranked after a
    /// fold-in; their ranked rows are here, and `test` is empty.
    pub held_out: Option<HeldOutUsers>,
    /// Test rows dropped because their user or item has no training rating.
    pub test_dropped_cold: usize,
    /// Training rows merged into another by the duplicate policy.
    pub duplicates_merged: usize,
    pub rating_min: f32,
    pub rating_max: f32,
    /// A digest of the training triples by id ([`DataFingerprint`]), to tie
    /// a model or checkpoint to its data.
    pub fingerprint: String,
}

pub(super) fn index_of(ids: &[String]) -> HashMap<&str, u32> {
    ids.iter().enumerate().map(|(i, s)| (s.as_str(), i as u32)).collect()
}

/// The dense index of each token in `index`, `u32::MAX` for a token not in it.
pub(super) fn dense_indices(tokens: &[String], index: &HashMap<&str, u32>) -> Vec<u32> {
    tokens.iter().map(|t| index.get(t.as_str()).copied().unwrap_or(u32::MAX)).collect()
}

/// The tokens marked `seen`, in [`dense_order`].
pub(super) fn seen_ids(tokens: &[String], seen: &[bool]) -> Vec<String> {
    dense_order(tokens.iter().zip(seen).filter(|(_, &s)| s).map(|(t, _)| t.as_str()).collect())
}

impl Dataset {
    pub fn n_users(&self) -> usize {
        self.user_ids.len()
    }
    pub fn n_items(&self) -> usize {
        self.item_ids.len()
    }
    pub fn n_train(&self) -> usize {
        self.by_user.nnz()
    }

    /// Mean training rating (the global bias μ of explicit models): each
    /// block of `users`' ratings summed in row order, the blocks added in
    /// block order, as workers holding the blocks would (the same bits for
    /// any cluster shape).
    pub fn global_mean(&self, users: &crate::blocks::BlockLayout) -> f64 {
        let v = &self.by_user.values;
        let indptr = &self.by_user.indptr;
        let sum: f64 = (0..users.n_blocks())
            .map(|b| {
                let r = users.range(b);
                v[indptr[r.start]..indptr[r.end]].iter().map(|&x| x as f64).sum::<f64>()
            })
            .fold(0.0, |a, s| a + s);
        sum / v.len().max(1) as f64
    }

    /// Build from chosen rows of one or two raw files.
    ///
    /// Dense ids come from the training rows only; test rows whose user or
    /// item has no training rating are dropped (Spark's coldStartStrategy=drop).
    pub fn build(
        train: (&RawRatings, &[usize]),
        test: Option<(&RawRatings, &[usize])>,
        duplicates: DuplicatePolicy,
    ) -> Result<Dataset, DataError> {
        let (raw, rows) = train;
        Ok(Dataset::index((raw, Rows::Listed(rows)), test, duplicates)?.finish())
    }

    /// [`Dataset::build`] but for the by-item copy, which
    /// [`DatasetBuild::finish`] makes: a caller frees the rows read before,
    /// so they and both copies are never held at once.
    pub fn index(
        train: (&RawRatings, Rows),
        test: Option<(&RawRatings, &[usize])>,
        duplicates: DuplicatePolicy,
    ) -> Result<DatasetBuild, DataError> {
        let (raw, rows) = train;
        if rows.is_empty() {
            return Err(DataError::EmptyTrain);
        }
        // Tokens used by training rows, then the dense order.
        let mut user_seen = vec![false; raw.user_tokens.len()];
        let mut item_seen = vec![false; raw.item_tokens.len()];
        for r in rows.iter() {
            user_seen[raw.users[r] as usize] = true;
            item_seen[raw.items[r] as usize] = true;
        }
        let user_ids = seen_ids(&raw.user_tokens, &user_seen);
        let item_ids = seen_ids(&raw.item_tokens, &item_seen);
        let (uidx, iidx) = (index_of(&user_ids), index_of(&item_ids));
        // Token index -> dense index for the training file.
        let utok = dense_indices(&raw.user_tokens, &uidx);
        let itok = dense_indices(&raw.item_tokens, &iidx);

        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for r in rows.iter() {
            let v = raw.ratings[r];
            lo = lo.min(v);
            hi = hi.max(v);
        }
        // Straight from the rows read: no copy of the training triples is held.
        let training = || {
            rows.iter()
                .map(|r| (utok[raw.users[r] as usize], itok[raw.items[r] as usize], raw.ratings[r]))
        };
        let (by_user, duplicates_merged) = merge_duplicates(Csr::from_entries(user_ids.len(), item_ids.len(), training), duplicates);
        // The loader checks every value; a sum of repeated pairs, or ratings
        // from another source, are checked here.
        check_merged_values(&by_user, &raw.source, "user", &user_ids, &item_ids)?;

        let mut test_set = TestSet::default();
        let mut test_dropped_cold = 0;
        if let Some((traw, trows)) = test {
            let same = std::ptr::eq(traw, raw);
            let (tutok, titok): (Vec<u32>, Vec<u32>) = if same {
                (utok.clone(), itok.clone())
            } else {
                (dense_indices(&traw.user_tokens, &uidx), dense_indices(&traw.item_tokens, &iidx))
            };
            for &r in trows {
                let (u, i) = (tutok[traw.users[r] as usize], titok[traw.items[r] as usize]);
                if u == u32::MAX || i == u32::MAX {
                    test_dropped_cold += 1;
                    continue;
                }
                test_set.users.push(u);
                test_set.items.push(i);
                test_set.ratings.push(traw.ratings[r]);
            }
        }
        let fingerprint = fingerprint(&user_ids, &item_ids, &by_user);
        Ok(DatasetBuild::ByUser(Dataset {
            user_ids,
            item_ids,
            id_order: IdOrder::Hashed,
            // Made by `finish`.
            by_item: Csr::default(),
            by_user,
            test: test_set,
            held_out: None,
            test_dropped_cold,
            duplicates_merged,
            rating_min: lo,
            rating_max: hi,
            fingerprint,
        }))
    }
}

/// The rows of a raw file a dataset is built from: every one (no list of
/// them is made), or those listed.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    All(usize),
    Listed(&'a [usize]),
}

impl<'a> Rows<'a> {
    pub fn is_empty(self) -> bool {
        match self {
            Rows::All(n) => n == 0,
            Rows::Listed(rows) => rows.is_empty(),
        }
    }

    pub fn iter(self) -> RowsIter<'a> {
        match self {
            Rows::All(n) => RowsIter::All(0..n),
            Rows::Listed(rows) => RowsIter::Listed(rows.iter()),
        }
    }
}

/// [`Rows::iter`].
pub enum RowsIter<'a> {
    All(std::ops::Range<usize>),
    Listed(std::slice::Iter<'a, usize>),
}

impl Iterator for RowsIter<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        match self {
            RowsIter::All(r) => r.next(),
            RowsIter::Listed(i) => i.next().copied(),
        }
    }
}

/// A dataset being built ([`Dataset::index`]): indexed by user, its by-item
/// copy still to make, or complete.
pub enum DatasetBuild {
    ByUser(Dataset),
    Done(Dataset),
}

impl DatasetBuild {
    /// The dataset, with the by-item copy of its ratings.
    pub fn finish(self) -> Dataset {
        match self {
            DatasetBuild::ByUser(mut ds) => {
                ds.by_item = ds.by_user.transpose();
                ds
            }
            DatasetBuild::Done(ds) => ds,
        }
    }
}

impl From<Dataset> for DatasetBuild {
    fn from(ds: Dataset) -> DatasetBuild {
        DatasetBuild::Done(ds)
    }
}

impl Dataset {
    /// A dataset straight from a users × items matrix whose row and column
    /// numbers are the ids (the shape `implicit` and scipy users hand over).
    /// Every row and column is kept, with or without ratings, so the factor
    /// matrices line up with the caller's numbering; there is no test set.
    ///
    /// Columns must be strictly increasing within each row (no repeated
    /// pairs: the caller merges them, as scipy's `sum_duplicates` does), and
    /// every value finite and within [`crate::limits::MAX_ABS_VALUE`].
    pub fn from_user_items(by_user: Csr) -> Result<Dataset, DataError> {
        let bad = |m: String| Err(DataError::Invalid(m));
        let (n_users, n_items) = (by_user.n_rows(), by_user.n_cols);
        if by_user.indptr.first() != Some(&0) {
            return bad("indptr must start at 0".into());
        }
        if by_user.indptr.windows(2).any(|w| w[0] > w[1]) {
            return bad("indptr must be non-decreasing".into());
        }
        let nnz = by_user.indptr[n_users];
        if nnz != by_user.indices.len() || nnz != by_user.values.len() {
            return bad(format!(
                "indptr ends at {nnz}, but there are {} indices and {} values",
                by_user.indices.len(),
                by_user.values.len()
            ));
        }
        if nnz == 0 {
            return Err(DataError::EmptyTrain);
        }
        if n_users > u32::MAX as usize || n_items > u32::MAX as usize {
            return bad(format!("{n_users} × {n_items} is beyond 2^32 rows or columns"));
        }
        for r in 0..n_users {
            let (cols, vals) = by_user.row(r);
            if let Some(&c) = cols.iter().find(|&&c| c as usize >= n_items) {
                return bad(format!("row {r}: column {c} is out of range for {n_items} columns"));
            }
            if let Some(w) = cols.windows(2).find(|w| w[0] >= w[1]) {
                let what = if w[0] == w[1] { "is repeated" } else { "is out of order" };
                return bad(format!("row {r}: column {} {what} (merge or sort the entries first)", w[1]));
            }
            if let Some((c, e)) = cols
                .iter()
                .zip(vals)
                .find_map(|(c, v)| crate::limits::check_value(*v).err().map(|e| (c, e)))
            {
                return bad(format!("row {r}, column {c}: {e}"));
            }
        }
        let (lo, hi) = super::value_range(by_user.values.iter().copied());
        let user_ids: Vec<String> = (0..n_users).map(|i| i.to_string()).collect();
        let item_ids: Vec<String> = (0..n_items).map(|i| i.to_string()).collect();
        let by_item = by_user.transpose();
        let fingerprint = fingerprint(&user_ids, &item_ids, &by_user);
        Ok(Dataset {
            user_ids,
            item_ids,
            id_order: IdOrder::Given,
            by_user,
            by_item,
            test: TestSet::default(),
            held_out: None,
            test_dropped_cold: 0,
            duplicates_merged: 0,
            rating_min: lo,
            rating_max: hi,
            fingerprint,
        })
    }
}

/// Every value of a users × items matrix after merging repeated pairs is in
/// range; the error names the source, the `who` kind of user, and the pair.
pub(super) fn check_merged_values(m: &Csr, source: &str, who: &str, user_ids: &[String], item_ids: &[String]) -> Result<(), DataError> {
    for (r, user) in user_ids.iter().enumerate() {
        let (cols, vals) = m.row(r);
        if let Some((c, v)) = cols.iter().zip(vals).find(|(_, v)| crate::limits::check_value(**v).is_err()) {
            return Err(DataError::Invalid(format!(
                "{source}: {who} {user}, item {}: value {v:e} (after merging repeated pairs) is outside the supported range ±{:e}",
                item_ids[*c as usize],
                crate::limits::MAX_ABS_VALUE
            )));
        }
    }
    Ok(())
}

/// Resolve repeated columns within each (sorted) row; returns the count merged.
pub(super) fn merge_duplicates(m: Csr, policy: DuplicatePolicy) -> (Csr, usize) {
    if m.row_with_repeated_column().is_none() {
        return (m, 0);
    }
    let mut out = Csr {
        n_cols: m.n_cols,
        indptr: vec![0],
        indices: Vec::new(),
        values: Vec::new(),
    };
    let mut merged = 0;
    for r in 0..m.n_rows() {
        let (cols, vals) = m.row(r);
        let mut k = 0;
        while k < cols.len() {
            let mut v = vals[k];
            let mut j = k + 1;
            while j < cols.len() && cols[j] == cols[k] {
                // Rows of equal column keep file order (stable sort), so "last" is the later line.
                match policy {
                    DuplicatePolicy::Last => v = vals[j],
                    DuplicatePolicy::First => {}
                    DuplicatePolicy::Sum => v += vals[j],
                }
                merged += 1;
                j += 1;
            }
            out.indices.push(cols[k]);
            out.values.push(v);
            k = j;
        }
        out.indptr.push(out.indices.len());
    }
    (out, merged)
}

fn fingerprint(user_ids: &[String], item_ids: &[String], by_user: &Csr) -> String {
    let mut parts = DataFingerprint::default();
    parts.add_rows(user_ids, item_ids, by_user, 0..user_ids.len());
    parts.digest(user_ids.len(), item_ids.len())
}

/// The parts of a data fingerprint that any holder of some rows can compute
/// and anyone can add up: four 64-bit lanes, each the wrapping sum over the
/// training triples of a mix of (user id, item id, value), and the count.
/// A sum does not depend on the order it is taken in, so workers holding
/// different user blocks get parts whose sum is the whole data's, for any
/// cluster shape; the digest is SHA-256 of the sizes and the sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataFingerprint {
    pub lanes: [u64; 4],
    pub ratings: u64,
}

impl DataFingerprint {
    /// Add the rows `rows` of `by_user` (users and items named by their ids).
    pub fn add_rows(&mut self, user_ids: &[String], item_ids: &[String], by_user: &Csr, rows: std::ops::Range<usize>) {
        use rayon::prelude::*;
        let item_hash: Vec<u64> = item_ids.par_iter().map(|i| id_hash(ITEM_SALT, i)).collect();
        self.add_hashed(|u| &user_ids[u], &|c| item_hash[c as usize], by_user, rows);
    }

    /// Add every row of a block's `by_user` (its rows `user_ids`), whose
    /// columns are the items `items` names (column, id): a holder of one
    /// user block, which knows only the items its rows name.
    pub fn add_user_block(&mut self, user_ids: &[String], by_user: &Csr, items: &[(u32, &str)]) {
        // One string hash per distinct item, not per rating.
        let hashes: rustc_hash::FxHashMap<u32, u64> = items.iter().map(|&(c, id)| (c, id_hash(ITEM_SALT, id))).collect();
        self.add_hashed(|u| &user_ids[u], &|c| hashes[&c], by_user, 0..by_user.n_rows());
    }

    fn add_hashed<'a>(
        &mut self,
        user_id: impl Fn(usize) -> &'a str + Sync,
        item_hash: &(dyn Fn(u32) -> u64 + Sync),
        by_user: &Csr,
        rows: std::ops::Range<usize>,
    ) {
        use rayon::prelude::*;
        let (lanes, ratings) = rows
            .into_par_iter()
            .map(|u| {
                let uh = id_hash(USER_SALT, user_id(u));
                let (cols, vals) = by_user.row(u);
                let mut lanes = [0u64; 4];
                for (&c, &v) in cols.iter().zip(vals) {
                    let e = crate::rng::mix64(uh ^ crate::rng::mix64(item_hash(c) ^ crate::rng::mix64(v.to_bits() as u64 ^ VALUE_SALT)));
                    for (j, lane) in lanes.iter_mut().enumerate() {
                        *lane = lane.wrapping_add(crate::rng::splitmix64_nth(e, j as u64));
                    }
                }
                (lanes, cols.len() as u64)
            })
            .reduce(|| ([0u64; 4], 0), |(a, n), (b, m)| (add_lanes(a, b), n + m));
        self.lanes = add_lanes(self.lanes, lanes);
        self.ratings += ratings;
    }

    /// Add another holder's parts.
    pub fn merge(&mut self, other: &DataFingerprint) {
        self.lanes = add_lanes(self.lanes, other.lanes);
        self.ratings += other.ratings;
    }

    /// The fingerprint's text: hex SHA-256 of the sizes and the sums.
    pub fn digest(&self, n_users: usize, n_items: usize) -> String {
        let mut h = Sha256::new();
        for x in [n_users as u64, n_items as u64, self.ratings].into_iter().chain(self.lanes) {
            h.update(x.to_le_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn id_hash(salt: u64, id: &str) -> u64 {
    crate::rng::mix64(crate::rng::fnv1a64(id.as_bytes()) ^ salt)
}

const USER_SALT: u64 = 0x7573_6572_7300_0001;
const ITEM_SALT: u64 = 0x6974_656d_7300_0002;
const VALUE_SALT: u64 = 0x7661_6c75_6500_0003;

fn add_lanes(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
    [0, 1, 2, 3].map(|j| a[j].wrapping_add(b[j]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(rows: &[(&str, &str, f32)]) -> RawRatings {
        let mut r = RawRatings {
            source: "t".into(),
            ..Default::default()
        };
        let mut um: HashMap<String, u32> = HashMap::new();
        let mut im: HashMap<String, u32> = HashMap::new();
        for (u, i, v) in rows {
            let ul = um.len() as u32;
            let u = *um.entry(u.to_string()).or_insert_with(|| {
                r.user_tokens.push(u.to_string());
                ul
            });
            let il = im.len() as u32;
            let i = *im.entry(i.to_string()).or_insert_with(|| {
                r.item_tokens.push(i.to_string());
                il
            });
            r.users.push(u);
            r.items.push(i);
            r.ratings.push(*v);
        }
        r
    }

    #[test]
    fn numeric_ids_sort_numerically_and_cold_test_rows_drop() {
        let r = raw(&[
            ("10", "b", 1.0),
            ("9", "a", 2.0),
            ("10", "a", 3.0),
            ("11", "c", 4.0),
            ("9", "z", 5.0),
        ]);
        let d = Dataset::build((&r, &[0, 1, 2]), Some((&r, &[3, 4])), DuplicatePolicy::Last).unwrap();
        assert_eq!(d.id_order, IdOrder::Hashed);
        let mut users = d.user_ids.clone();
        users.sort_by_key(|u| u.parse::<i32>().unwrap());
        assert_eq!(users, vec!["9", "10"]);
        let at = |ids: &[String], id: &str| ids.iter().position(|x| x == id).unwrap() as u32;
        let (u9, u10) = (at(&d.user_ids, "9"), at(&d.user_ids, "10"));
        let (a, b) = (at(&d.item_ids, "a"), at(&d.item_ids, "b"));
        // User 10 rated b (1.0) and a (3.0); columns sorted by dense index.
        let mut row10: Vec<(u32, f32)> = vec![(a, 3.0), (b, 1.0)];
        row10.sort_by_key(|p| p.0);
        let (cols, vals) = d.by_user.row(u10 as usize);
        assert_eq!(cols.iter().copied().zip(vals.iter().copied()).collect::<Vec<_>>(), row10);
        let mut col_a: Vec<(u32, f32)> = vec![(u9, 2.0), (u10, 3.0)];
        col_a.sort_by_key(|p| p.0);
        let (rows, vals) = d.by_item.row(a as usize);
        assert_eq!(rows.iter().copied().zip(vals.iter().copied()).collect::<Vec<_>>(), col_a);
        assert!(d.test.is_empty());
        assert_eq!(d.test_dropped_cold, 2);
    }

    #[test]
    fn the_fingerprint_is_the_sum_of_its_parts_and_sees_every_change() {
        let rows: Vec<(String, String, f32)> = (0..400)
            .map(|r| (format!("u{}", r % 37), format!("i{}", r * 7 % 53), (r % 5) as f32 + 0.5))
            .collect();
        let build = |rows: &[(String, String, f32)]| {
            let triples: Vec<(&str, &str, f32)> = rows.iter().map(|(u, i, v)| (u.as_str(), i.as_str(), *v)).collect();
            let r = raw(&triples);
            let all: Vec<usize> = (0..r.len()).collect();
            Dataset::build((&r, &all), None, DuplicatePolicy::Last).unwrap()
        };
        let d = build(&rows);
        // Parts over any split of the users add up to the whole.
        for cut in [0, 1, 10, d.n_users()] {
            let (mut a, mut b) = (DataFingerprint::default(), DataFingerprint::default());
            a.add_rows(&d.user_ids, &d.item_ids, &d.by_user, 0..cut);
            b.add_rows(&d.user_ids, &d.item_ids, &d.by_user, cut..d.n_users());
            b.merge(&a);
            assert_eq!(b.digest(d.n_users(), d.n_items()), d.fingerprint);
        }
        // The rows in another order: the same data.
        let mut shuffled = rows.clone();
        shuffled.reverse();
        assert_eq!(build(&shuffled).fingerprint, d.fingerprint);
        // A changed value, a changed item, two values swapped: another fingerprint.
        let mut changed = rows.clone();
        changed[5].2 += 1.0;
        assert_ne!(build(&changed).fingerprint, d.fingerprint);
        let mut changed = rows.clone();
        changed[5].1 = "i999".into();
        assert_ne!(build(&changed).fingerprint, d.fingerprint);
        let mut changed = rows.clone();
        let (a, b) = (changed[3].2, changed[4].2);
        assert_ne!(a, b);
        changed[3].2 = b;
        changed[4].2 = a;
        assert_ne!(build(&changed).fingerprint, d.fingerprint);
    }

    #[test]
    fn duplicate_policies() {
        let r = raw(&[("u", "i", 1.0), ("u", "i", 2.0), ("u", "j", 5.0), ("u", "i", 4.0)]);
        let all = [0, 1, 2, 3];
        let last = Dataset::build((&r, &all), None, DuplicatePolicy::Last).unwrap();
        // Values of items i and j, whichever dense order they got.
        let iv = |d: &Dataset| -> Vec<f32> {
            let (cols, vals) = d.by_user.row(0);
            let by_id = |id: &str| vals[cols.iter().position(|&c| d.item_ids[c as usize] == id).unwrap()];
            vec![by_id("i"), by_id("j")]
        };
        assert_eq!(iv(&last), &[4.0, 5.0]);
        assert_eq!(last.duplicates_merged, 2);
        let first = Dataset::build((&r, &all), None, DuplicatePolicy::First).unwrap();
        assert_eq!(iv(&first), &[1.0, 5.0]);
        let sum = Dataset::build((&r, &all), None, DuplicatePolicy::Sum).unwrap();
        assert_eq!(iv(&sum), &[7.0, 5.0]);
        let i = sum.item_ids.iter().position(|x| x == "i").unwrap();
        assert_eq!(sum.by_item.row(i).1, &[7.0]);
        // Every row, unlisted: the same dataset as every row listed.
        for policy in [DuplicatePolicy::Last, DuplicatePolicy::Sum] {
            let listed = Dataset::build((&r, &all), Some((&r, &[1, 2])), policy).unwrap();
            let every = Dataset::index((&r, Rows::All(r.len())), Some((&r, &[1, 2])), policy)
                .unwrap()
                .finish();
            assert_eq!((&every.user_ids, &every.item_ids), (&listed.user_ids, &listed.item_ids));
            assert_eq!((&every.by_user, &every.by_item), (&listed.by_user, &listed.by_item));
            assert_eq!((every.test.ratings, every.fingerprint), (listed.test.ratings, listed.fingerprint));
            assert_eq!((every.rating_min, every.rating_max), (listed.rating_min, listed.rating_max));
        }
        let empty = Dataset::index((&r, Rows::All(0)), None, DuplicatePolicy::Last);
        assert!(matches!(empty, Err(DataError::EmptyTrain)));
    }

    #[test]
    fn from_user_items_keeps_every_row_and_column_and_checks_its_input() {
        let m = Csr {
            n_cols: 4,
            indptr: vec![0, 2, 2, 3],
            indices: vec![0, 3, 1],
            values: vec![1.0, 2.0, 5.0],
        };
        let d = Dataset::from_user_items(m.clone()).unwrap();
        assert_eq!((d.n_users(), d.n_items()), (3, 4));
        assert_eq!(d.user_ids, vec!["0", "1", "2"]);
        assert_eq!(d.by_item.row(3), (&[0u32][..], &[2.0f32][..]));
        assert_eq!(d.by_item.row(2).0.len(), 0);
        assert_eq!((d.rating_min, d.rating_max), (1.0, 5.0));
        let err = |m: Csr| Dataset::from_user_items(m).unwrap_err().to_string();
        let with = |f: &dyn Fn(&mut Csr)| {
            let mut c = m.clone();
            f(&mut c);
            c
        };
        assert!(err(with(&|c| c.indices[1] = 4)).contains("row 0: column 4 is out of range for 4 columns"));
        assert!(err(with(&|c| c.indices[1] = 0)).contains("row 0: column 0 is repeated"));
        assert!(err(with(&|c| c.indices = vec![3, 0, 1])).contains("out of order"));
        assert!(err(with(&|c| c.values[2] = f32::NAN)).contains("row 2, column 1: value NaN is not finite"));
        assert!(err(with(&|c| c.indptr = vec![0, 2, 1, 3])).contains("non-decreasing"));
        assert!(err(with(&|c| c.indptr = vec![0, 2, 2, 4])).contains("indptr ends at 4"));
        assert!(matches!(
            Dataset::from_user_items(Csr {
                n_cols: 2,
                indptr: vec![0, 0],
                indices: vec![],
                values: vec![]
            }),
            Err(DataError::EmptyTrain)
        ));
    }

    #[test]
    fn empty_train_is_an_error() {
        let r = raw(&[("u", "i", 1.0)]);
        assert!(matches!(
            Dataset::build((&r, &[]), None, DuplicatePolicy::Last),
            Err(DataError::EmptyTrain)
        ));
    }
}
