//! The blocks of a dataset built from shares of the input, without anyone
//! holding all of it: what workers that each read a share do (issue 14),
//! here as plain functions the protocol will carry.
//!
//! 1. Each share routes its rows, with their places in the input, to the
//!    block of their user ([`route_share`]); splits decided by the place
//!    alone (ratio, k-fold, temporal) are decided there.
//! 2. A user block ([`UserBlock`]) holds every row of its users: it decides
//!    the per-user split, numbers its users (the side's dense order within
//!    the block), and sends its training rows, users numbered, on to the
//!    blocks of their items ([`UserBlock::item_rows`]).
//! 3. An item block ([`ItemBlock`]) numbers its items and lays out its
//!    items' rows, repeated pairs merged in input order.
//! 4. The user block numbers its rows' items by asking the item blocks
//!    ([`ItemBlock::index_of`]) and lays out its users' rows and test rows
//!    ([`UserBlock::finish`]).
//!
//! Block b's dense rows start where blocks `0..b` end: a prefix sum of the
//! blocks' id counts. The result is [`Dataset::build`](crate::data::Dataset::build)'s, block by block
//! (tested), so the model is the same whoever read which share.

use rustc_hash::FxHashMap;

use super::dataset::merge_duplicates;
use super::ids::{all_integers, block_of_id, dense_order_as};
use super::split::per_user_rows;
use super::{Csr, DataError, DuplicatePolicy, RawRatings};

/// One rating on its way to its user's block.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutedRow {
    /// Place in the input (its share's offset plus its place in the share).
    pub place: u64,
    pub user: String,
    pub item: String,
    pub value: f32,
    /// Held out by a split decided from the place alone.
    pub test: bool,
}

/// The rows of a share, `first_place` being the place of its first row, by
/// user block of `n_blocks`; `is_test` decides a row from its place.
pub fn route_share(raw: &RawRatings, first_place: u64, n_blocks: usize, is_test: &dyn Fn(u64) -> bool) -> Vec<Vec<RoutedRow>> {
    let mut out = vec![Vec::new(); n_blocks];
    for r in 0..raw.len() {
        let (user, item, value) = raw.row(r);
        let place = first_place + r as u64;
        out[block_of_id(user, n_blocks)].push(RoutedRow {
            place,
            user: user.to_owned(),
            item: item.to_owned(),
            value,
            test: is_test(place),
        });
    }
    out
}

/// A training rating on its way to its item's block, its user numbered.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemBoundRow {
    pub place: u64,
    /// The user's dense index.
    pub user: u32,
    pub item: String,
    pub value: f32,
}

/// Every row of one block's users, from every share.
#[derive(Debug, Default)]
pub struct UserBlock {
    /// In input order.
    rows: Vec<RoutedRow>,
    /// The block's users in dense order (after [`UserBlock::number_users`]).
    pub user_ids: Vec<String>,
    index: FxHashMap<String, u32>,
}

impl UserBlock {
    /// Gather the routed rows of this block from all shares.
    pub fn new(parts: Vec<Vec<RoutedRow>>) -> Self {
        UserBlock {
            rows: in_input_order(parts, |r| r.place),
            ..Default::default()
        }
    }

    /// Hold out `test_frac` of each user's rows by their keys (the per-user split).
    pub fn split_per_user(&mut self, test_frac: f64, seed: u64) {
        let mut users: FxHashMap<&str, u32> = FxHashMap::default();
        let keys: Vec<u32> = self
            .rows
            .iter()
            .map(|r| {
                let next = users.len() as u32;
                *users.entry(r.user.as_str()).or_insert(next)
            })
            .collect();
        let rows = &self.rows;
        let test = per_user_rows(&keys, |j| rows[j].place, test_frac, seed, |_| true);
        for (r, t) in self.rows.iter_mut().zip(test) {
            r.test = t;
        }
    }

    /// Whether every training user id here is an integer (the side's dense
    /// order is numeric when every block says so).
    pub fn users_are_integers(&self) -> bool {
        all_integers(self.rows.iter().filter(|r| !r.test).map(|r| r.user.as_str()))
    }

    /// Number the users that have training rows, in the side's dense order.
    pub fn number_users(&mut self, numeric: bool) {
        (self.user_ids, self.index) = number(self.rows.iter().filter(|r| !r.test).map(|r| r.user.as_str()), numeric);
    }

    /// The training rows, users numbered from `first_user`, by item block.
    pub fn item_rows(&self, first_user: u32, n_blocks: usize) -> Vec<Vec<ItemBoundRow>> {
        let mut out = vec![Vec::new(); n_blocks];
        for r in self.rows.iter().filter(|r| !r.test) {
            out[block_of_id(&r.item, n_blocks)].push(ItemBoundRow {
                place: r.place,
                user: first_user + self.index[&r.user],
                item: r.item.clone(),
                value: r.value,
            });
        }
        out
    }

    /// The item ids this block's rows name, training and test, each once.
    pub fn items_named(&self) -> Vec<&str> {
        let mut seen: FxHashMap<&str, ()> = FxHashMap::default();
        self.rows
            .iter()
            .map(|r| r.item.as_str())
            .filter(|i| seen.insert(i, ()).is_none())
            .collect()
    }

    /// The block's rows (users × all items) and test rows in dense indices,
    /// items numbered by `item_index` (`None`: no training rating).
    pub fn finish(
        &self,
        first_user: u32,
        n_items: usize,
        duplicates: DuplicatePolicy,
        source: &str,
        item_index: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<FinishedUserBlock, DataError> {
        let (mut tu, mut ti, mut tv) = (Vec::new(), Vec::new(), Vec::new());
        let mut test = Vec::new();
        let mut test_dropped_cold = 0;
        for r in &self.rows {
            let item = item_index(&r.item);
            if !r.test {
                tu.push(self.index[&r.user]);
                ti.push(item.ok_or_else(|| DataError::Invalid(format!("{source}: item {} of a training row is not numbered", r.item)))?);
                tv.push(r.value);
                continue;
            }
            match (self.index.get(&r.user), item) {
                (Some(&u), Some(i)) => test.push((first_user + u, i, r.value)),
                _ => test_dropped_cold += 1,
            }
        }
        let (by_user, duplicates_merged) = merge_duplicates(Csr::from_triples(self.user_ids.len(), n_items, &tu, &ti, &tv), duplicates);
        // A sum of repeated pairs may leave the range the loader checked.
        for (u, user) in self.user_ids.iter().enumerate() {
            let (cols, vals) = by_user.row(u);
            if let Some((c, v)) = cols.iter().zip(vals).find(|(_, v)| crate::limits::check_value(**v).is_err()) {
                let item = self
                    .rows
                    .iter()
                    .find(|r| &r.user == user && item_index(&r.item) == Some(*c))
                    .map_or("?", |r| r.item.as_str());
                return Err(DataError::Invalid(format!(
                    "{source}: user {user}, item {item}: value {v:e} (after merging repeated pairs) is outside the supported range ±{:e}",
                    crate::limits::MAX_ABS_VALUE
                )));
            }
        }
        Ok(FinishedUserBlock {
            by_user,
            test,
            test_dropped_cold,
            duplicates_merged,
        })
    }
}

/// Rows from several senders, in input order.
fn in_input_order<T>(parts: Vec<Vec<T>>, place: impl Fn(&T) -> u64) -> Vec<T> {
    let mut rows: Vec<T> = parts.into_iter().flatten().collect();
    rows.sort_by_key(place);
    rows
}

/// The distinct ids in the side's dense order, and each one's index.
fn number<'a>(ids: impl Iterator<Item = &'a str>, numeric: bool) -> (Vec<String>, FxHashMap<String, u32>) {
    let mut seen: FxHashMap<&str, ()> = FxHashMap::default();
    let distinct: Vec<&str> = ids.filter(|i| seen.insert(i, ()).is_none()).collect();
    let ordered = dense_order_as(distinct, numeric);
    let index = ordered.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    (ordered, index)
}

/// A user block laid out: its users' training rows and its test rows.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedUserBlock {
    /// The block's users × all items, columns sorted, repeats merged.
    pub by_user: Csr,
    /// (user, item, value) in dense indices, in input order.
    pub test: Vec<(u32, u32, f32)>,
    pub test_dropped_cold: usize,
    pub duplicates_merged: usize,
}

/// Every training row of one block's items, users numbered.
#[derive(Debug, Default)]
pub struct ItemBlock {
    rows: Vec<ItemBoundRow>,
    /// The block's items in dense order (after [`ItemBlock::number_items`]).
    pub item_ids: Vec<String>,
    index: FxHashMap<String, u32>,
}

impl ItemBlock {
    /// Gather the training rows of this block from all user blocks.
    pub fn new(parts: Vec<Vec<ItemBoundRow>>) -> Self {
        ItemBlock {
            rows: in_input_order(parts, |r| r.place),
            ..Default::default()
        }
    }

    /// Whether every item id here is an integer.
    pub fn items_are_integers(&self) -> bool {
        all_integers(self.rows.iter().map(|r| r.item.as_str()))
    }

    pub fn number_items(&mut self, numeric: bool) {
        let mut seen: FxHashMap<&str, ()> = FxHashMap::default();
        let ids: Vec<&str> = self
            .rows
            .iter()
            .map(|r| r.item.as_str())
            .filter(|i| seen.insert(i, ()).is_none())
            .collect();
        self.item_ids = dense_order_as(ids, numeric);
        self.index = self.item_ids.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    }

    /// An item's index within the block (`None`: no training rating).
    pub fn index_of(&self, item: &str) -> Option<u32> {
        self.index.get(item).copied()
    }

    /// The block's items × all users, repeats merged as the user blocks merge them.
    pub fn by_item(&self, n_users: usize, duplicates: DuplicatePolicy) -> Csr {
        let rows: Vec<u32> = self.rows.iter().map(|r| self.index[&r.item]).collect();
        let cols: Vec<u32> = self.rows.iter().map(|r| r.user).collect();
        let vals: Vec<f32> = self.rows.iter().map(|r| r.value).collect();
        merge_duplicates(Csr::from_triples(self.item_ids.len(), n_users, &rows, &cols, &vals), duplicates).0
    }
}

#[cfg(test)]
mod tests;
