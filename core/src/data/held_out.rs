//! Users held out of training whole (strong generalization): the rows each
//! one is folded in from, and the rows that are ranked, in the training
//! item indices.

use super::dataset::{dense_indices, index_of, merge_duplicates, seen_ids};
use super::ids::block_of_id;
use super::{Csr, DataError, Dataset, DuplicatePolicy, RawRatings, TestSet};

/// Held-out users of a [`Dataset`]: not in its user index, nor in training.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeldOutUsers {
    /// Original id of each held-out user (the dense order of training ids).
    pub user_ids: Vec<String>,
    /// Held-out users × training items: the rows each user's factors are
    /// solved from, duplicates merged as in training.
    pub fold_in: Csr,
    /// The ranked rows; `users` index [`Self::user_ids`].
    pub test: TestSet,
    /// Rows dropped because their item has no training rating, or (ranked
    /// rows) because their user has no fold-in row left to be solved from.
    pub dropped_cold: usize,
}

impl HeldOutUsers {
    pub fn n_users(&self) -> usize {
        self.user_ids.len()
    }

    /// Index the held-out rows of `raw` (the file `ds` was built from) in
    /// `ds`'s items.
    pub fn build(
        ds: &Dataset,
        raw: &RawRatings,
        fold_in: &[usize],
        test: &[usize],
        duplicates: DuplicatePolicy,
    ) -> Result<Self, DataError> {
        let itok = dense_indices(&raw.item_tokens, &index_of(&ds.item_ids));
        // Per input row: not held out, folded in (false) or ranked (true).
        let mut ranked: Vec<Option<bool>> = vec![None; raw.len()];
        let mut user_seen = vec![false; raw.user_tokens.len()];
        for (rows, is_ranked) in [(fold_in, false), (test, true)] {
            for &r in rows {
                ranked[r] = Some(is_ranked);
                user_seen[raw.users[r] as usize] = true;
            }
        }
        let user_ids = seen_ids(&raw.user_tokens, &user_seen);
        let utok = dense_indices(&raw.user_tokens, &index_of(&user_ids));
        let rows = || {
            ranked.iter().enumerate().filter_map(|(r, k)| {
                let i = itok[raw.items[r] as usize];
                k.map(|ranked| HeldOutRow {
                    user: utok[raw.users[r] as usize],
                    item: (i != u32::MAX).then_some(i),
                    value: raw.ratings[r],
                    ranked,
                })
            })
        };
        let item_name = |i: u32| ds.item_ids[i as usize].clone();
        Self::from_rows(user_ids, ds.n_items(), rows, duplicates, &raw.source, &item_name)
    }

    /// The held-out users `user_ids` (in the side's dense order) from their
    /// rows in input order, items in the training items (`None`: no
    /// training rating): the fold-in rows merged by `duplicates`, the
    /// ranked rows kept where their item is known and their user has a
    /// fold-in row left. What a user block holding held-out users builds
    /// too (its users only), so both are one function.
    pub fn from_rows<I: Iterator<Item = HeldOutRow>>(
        user_ids: Vec<String>,
        n_items: usize,
        rows: impl Fn() -> I,
        duplicates: DuplicatePolicy,
        source: &str,
        item_name: &dyn Fn(u32) -> String,
    ) -> Result<Self, DataError> {
        let mut dropped_cold = 0;
        let fold_in_rows = || rows().filter(|r| !r.ranked).filter_map(|r| Some((r.user, r.item?, r.value)));
        let (fold_in, _) = merge_duplicates(Csr::from_entries(user_ids.len(), n_items, fold_in_rows), duplicates);
        for (u, user) in user_ids.iter().enumerate() {
            let (cols, vals) = fold_in.row(u);
            if let Some((&c, v)) = cols.iter().zip(vals).find(|(_, v)| crate::limits::check_value(**v).is_err()) {
                return Err(DataError::Invalid(format!(
                    "{source}: held-out user {user}, item {}: value {v:e} (after merging repeated pairs) is outside the supported range ±{:e}",
                    item_name(c),
                    crate::limits::MAX_ABS_VALUE
                )));
            }
        }
        let mut test = TestSet::default();
        for r in rows() {
            match (r.ranked, r.item) {
                (false, Some(_)) => {}
                // A user with no known fold-in item has no factors to rank with.
                (true, Some(i)) if fold_in.row_len(r.user as usize) > 0 => {
                    test.users.push(r.user);
                    test.items.push(i);
                    test.ratings.push(r.value);
                }
                _ => dropped_cold += 1,
            }
        }
        Ok(HeldOutUsers {
            user_ids,
            fold_in,
            test,
            dropped_cold,
        })
    }

    /// Where each of `n_blocks` user blocks' held-out users start, then
    /// their count: the users are in the side's dense order, which is
    /// bucket order, so each block's are a run.
    pub fn block_starts(&self, n_blocks: usize) -> Vec<usize> {
        let mut starts = vec![0; n_blocks + 1];
        for id in &self.user_ids {
            starts[block_of_id(id, n_blocks) + 1] += 1;
        }
        for b in 0..n_blocks {
            starts[b + 1] += starts[b];
        }
        starts
    }
}

/// One row of a held-out user: `user` indexes the held-out users, `item`
/// the training items (`None`: no training rating); `ranked` rows are
/// scored, the others folded in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeldOutRow {
    pub user: u32,
    pub item: Option<u32>,
    pub value: f32,
    pub ranked: bool,
}

impl Dataset {
    /// The dataset of a strong-generalization split of `raw`: training from
    /// the users kept, and the held-out users indexed in its items.
    pub fn build_user_split(raw: &RawRatings, split: &super::split::UserSplit, duplicates: DuplicatePolicy) -> Result<Dataset, DataError> {
        let mut ds = Dataset::build((raw, &split.train), None, duplicates)?;
        ds.held_out = Some(HeldOutUsers::build(&ds, raw, &split.fold_in, &split.test, duplicates)?);
        Ok(ds)
    }

    /// Test rows that will be scored: the held-out users' ranked rows, or `test`.
    pub fn n_scored_test_rows(&self) -> usize {
        self.held_out.as_ref().map_or(self.test.len(), |h| h.test.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::parse_ratings;
    use crate::data::split::UserSplit;

    #[test]
    fn held_out_rows_are_indexed_in_the_training_items() {
        // Users a, b train; c and d are held out. Item z is only in held-out
        // rows, so it is unknown to the model; d has nothing else to be folded in from.
        let text = "a,x,1\na,y,2\nb,y,1\nb,w,3\nc,x,1\nc,x,2\nc,z,1\nc,y,5\nc,w,4\nd,z,1\nd,y,1\n";
        let raw = parse_ratings(text.as_bytes(), std::path::Path::new("t.csv"), &crate::data::LoadOptions::default()).unwrap();
        let split = UserSplit {
            train: vec![0, 1, 2, 3],
            fold_in: vec![4, 5, 6, 7, 9],
            test: vec![8, 10],
        };
        let ds = Dataset::build_user_split(&raw, &split, DuplicatePolicy::Sum).unwrap();
        let sorted = |ids: &[String]| {
            let mut v = ids.to_vec();
            v.sort();
            v
        };
        let at = |ids: &[String], id: &str| ids.iter().position(|x| x == id).unwrap() as u32;
        assert_eq!(sorted(&ds.user_ids), ["a", "b"]);
        assert_eq!(sorted(&ds.item_ids), ["w", "x", "y"]);
        let h = ds.held_out.as_ref().unwrap();
        assert_eq!(sorted(&h.user_ids), ["c", "d"]);
        let (c, d) = (at(&h.user_ids, "c") as usize, at(&h.user_ids, "d") as usize);
        let (w, x, y) = (at(&ds.item_ids, "w"), at(&ds.item_ids, "x"), at(&ds.item_ids, "y"));
        // c: x twice (summed), y; z dropped. d: z dropped, nothing left.
        let mut c_row = vec![(x, 3.0f32), (y, 5.0)];
        c_row.sort_by_key(|p| p.0);
        let (cols, vals) = h.fold_in.row(c);
        assert_eq!(cols.iter().copied().zip(vals.iter().copied()).collect::<Vec<_>>(), c_row);
        assert_eq!(h.fold_in.row_len(d), 0);
        // c's ranked w stays; d's ranked y is dropped (no fold-in row to solve d from).
        assert_eq!((h.test.users.as_slice(), h.test.items.as_slice()), (&[c as u32][..], &[w][..]));
        assert_eq!(h.dropped_cold, 3);
        assert_eq!(ds.n_scored_test_rows(), 1);
        assert!(ds.test.is_empty());
        // Training is the kept users' rows only.
        assert_eq!(ds.n_train(), 4);

        // A held-out pair whose repeats sum out of range is refused, naming it.
        let big = crate::limits::MAX_ABS_VALUE * 0.75;
        let text = format!("a,x,1\nc,x,{big}\nc,x,{big}\nc,x,1\n");
        let raw = parse_ratings(text.as_bytes(), std::path::Path::new("t.csv"), &crate::data::LoadOptions::default()).unwrap();
        let split = UserSplit {
            train: vec![0],
            fold_in: vec![1, 2],
            test: vec![3],
        };
        let err = Dataset::build_user_split(&raw, &split, DuplicatePolicy::Sum)
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.csv: held-out user c, item x"), "{err}");
    }
}
