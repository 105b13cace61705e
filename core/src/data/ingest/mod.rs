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
use super::split::{per_user_rows, user_holdout_key, HeldKeys, HELD_OUT_RANKED_FRACTION};
use super::{Csr, DataError, DuplicatePolicy, HeldOutRow, HeldOutUsers, RawRatings};

/// One rating on its way to its user's block; its ids are codes into its
/// part's table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoutedRow {
    /// Place in the input (its share's offset plus its place in the share).
    pub place: u64,
    pub user: u32,
    pub item: u32,
    pub value: f32,
    /// Held out by a split decided from the place alone.
    pub test: bool,
}

/// Rows from one sender (or one message) with the table of the ids they
/// name: ids travel once per part, not once per row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutedPart {
    pub ids: Vec<String>,
    pub rows: Vec<RoutedRow>,
}

/// A training rating on its way to its item's block, its user numbered and
/// repeated pairs merged already (so it needs no place: the item block's
/// order is the users').
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ItemBoundRow {
    /// The user's dense index.
    pub user: u32,
    /// A code into its part's table.
    pub item: u32,
    pub value: f32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemBoundPart {
    pub ids: Vec<String>,
    pub rows: Vec<ItemBoundRow>,
}

/// Builds a part's table, each id once, from codes of another table.
#[derive(Default)]
struct PartTable {
    ids: Vec<String>,
    code: FxHashMap<u32, u32>,
}

impl PartTable {
    /// The part's code of `id`, which is code `from` elsewhere.
    fn code(&mut self, from: u32, id: &str) -> u32 {
        let next = self.ids.len() as u32;
        *self.code.entry(from).or_insert_with(|| {
            self.ids.push(id.to_owned());
            next
        })
    }

    /// A new code for `id`, which the caller makes sure is not in the table.
    fn push(&mut self, id: &str) -> u32 {
        self.ids.push(id.to_owned());
        self.ids.len() as u32 - 1
    }
}

/// The rows of a share, `first_place` being the place of its first row, by
/// user block of `n_blocks`; `is_test` decides a row from its place.
pub fn route_share(raw: &RawRatings, first_place: u64, n_blocks: usize, is_test: &dyn Fn(u64) -> bool) -> Vec<RoutedPart> {
    // One hash per distinct user, not per row; a user is in one block, so
    // its code there is one number (an item is in the parts of many blocks).
    let user_block: Vec<u32> = raw.user_tokens.iter().map(|u| block_of_id(u, n_blocks) as u32).collect();
    let mut user_code = vec![u32::MAX; raw.user_tokens.len()];
    let mut tables: Vec<PartTable> = (0..n_blocks).map(|_| PartTable::default()).collect();
    let mut rows: Vec<Vec<RoutedRow>> = vec![Vec::new(); n_blocks];
    for r in 0..raw.len() {
        let (u, i) = (raw.users[r], raw.items[r]);
        let b = user_block[u as usize] as usize;
        let t = &mut tables[b];
        if user_code[u as usize] == u32::MAX {
            user_code[u as usize] = t.push(&raw.user_tokens[u as usize]);
        }
        let place = first_place + r as u64;
        rows[b].push(RoutedRow {
            place,
            user: user_code[u as usize],
            item: t.code(i, &raw.item_tokens[i as usize]),
            value: raw.ratings[r],
            test: is_test(place),
        });
    }
    tables
        .into_iter()
        .zip(rows)
        .map(|(t, rows)| RoutedPart { ids: t.ids, rows })
        .collect()
}

/// Parts' tables merged into one, each id once; `remap` gets, per part, its
/// codes' codes in the merged table.
fn merge_tables(tables: Vec<Vec<String>>) -> (Vec<String>, FxHashMap<String, u32>, Vec<Vec<u32>>) {
    let mut ids: Vec<String> = Vec::new();
    let mut code: FxHashMap<String, u32> = FxHashMap::default();
    let remap = tables
        .into_iter()
        .map(|t| {
            t.into_iter()
                .map(|id| match code.get(&id) {
                    Some(&c) => c,
                    None => {
                        let c = ids.len() as u32;
                        ids.push(id.clone());
                        code.insert(id, c);
                        c
                    }
                })
                .collect()
        })
        .collect();
    (ids, code, remap)
}

/// Every row of one block's users, from every share.
#[derive(Debug, Default)]
pub struct UserBlock {
    /// The ids the rows name, each once.
    ids: Vec<String>,
    /// In input order, codes into `ids`.
    rows: Vec<RoutedRow>,
    /// The block's users in dense order (after [`UserBlock::number_users`]).
    pub user_ids: Vec<String>,
    /// Per code, its user's index within the block (`u32::MAX`: none).
    dense: Vec<u32>,
    /// The training rows, repeated pairs merged: the block's users × item
    /// codes (after [`UserBlock::item_rows`]), and how many repeats merged.
    merged: Option<(Csr, usize)>,
    /// Held-out users' rows (`--split users`), in input order, `test`
    /// marking the ranked ones; their users are not numbered with the others.
    held: Vec<RoutedRow>,
    /// The held-out users in the side's dense order (after
    /// [`UserBlock::number_held_out`]), and per code its index there.
    pub held_user_ids: Vec<String>,
    held_dense: Vec<u32>,
    /// Users are held out: [`UserBlock::finish`] lays out the held-out ones too.
    holds_out: bool,
    /// How repeated pairs merge (given to [`UserBlock::item_rows`]); the
    /// held-out users' fold-in rows merge the same way.
    duplicates: DuplicatePolicy,
}

impl UserBlock {
    /// Gather the routed rows of this block from all shares.
    pub fn new(parts: Vec<RoutedPart>) -> Self {
        let (tables, rows): (Vec<_>, Vec<_>) = parts.into_iter().map(|p| (p.ids, p.rows)).unzip();
        let (ids, _, remap) = merge_tables(tables);
        let rows = rows
            .into_iter()
            .zip(&remap)
            .map(|(rows, m)| {
                rows.into_iter()
                    .map(|r| RoutedRow {
                        user: m[r.user as usize],
                        item: m[r.item as usize],
                        ..r
                    })
                    .collect()
            })
            .collect();
        UserBlock {
            ids,
            rows: in_input_order(rows, |r| r.place),
            ..Default::default()
        }
    }

    /// The places of its rows, in input order.
    pub fn places(&self) -> impl Iterator<Item = u64> + '_ {
        self.rows.iter().map(|r| r.place)
    }

    /// Hold out `test_frac` of each user's rows by their keys (the per-user split).
    pub fn split_per_user(&mut self, test_frac: f64, seed: u64) {
        let keys: Vec<u32> = self.rows.iter().map(|r| r.user).collect();
        let rows = &self.rows;
        let test = per_user_rows(&keys, |j| rows[j].place, test_frac, seed, |_| true);
        for (r, t) in self.rows.iter_mut().zip(test) {
            r.test = t;
        }
    }

    /// The hold-out key of each of its users (`--split users`), every user
    /// once: the keys a selection of the held-out users' bounds asks about.
    pub fn holdout_keys(&self, user_seed: u64) -> Vec<u128> {
        self.distinct_users(self.rows.iter())
            .into_iter()
            .map(|u| user_holdout_key(&self.ids[u as usize], user_seed))
            .collect()
    }

    /// Set apart every row of the users `held` holds (`--split users`):
    /// they are neither trained on nor numbered with the others. Each such
    /// user's rows are split as [`split_users`](super::split::split_users)
    /// splits them under split seed `seed`: ranked or folded in. The rows
    /// set apart are counted.
    pub fn hold_out_users(&mut self, user_seed: u64, held: &HeldKeys, seed: u64) -> u64 {
        let mut is_held: Vec<Option<bool>> = vec![None; self.ids.len()];
        let ids = &self.ids;
        let (kept, mut apart): (Vec<RoutedRow>, Vec<RoutedRow>) = std::mem::take(&mut self.rows).into_iter().partition(|r| {
            !*is_held[r.user as usize].get_or_insert_with(|| held.holds(user_holdout_key(&ids[r.user as usize], user_seed)))
        });
        let users: Vec<u32> = apart.iter().map(|r| r.user).collect();
        let ranked = per_user_rows(&users, |j| apart[j].place, HELD_OUT_RANKED_FRACTION, seed, |_| true);
        for (r, ranked) in apart.iter_mut().zip(ranked) {
            r.test = ranked;
        }
        self.rows = kept;
        self.held = apart;
        self.holds_out = true;
        self.held.len() as u64
    }

    /// The held-out users' codes, each once.
    fn held_users(&self) -> Vec<u32> {
        self.distinct_users(self.held.iter())
    }

    /// The users of `rows`, each once, in their rows' order.
    fn distinct_users<'a>(&self, rows: impl Iterator<Item = &'a RoutedRow>) -> Vec<u32> {
        let mut seen = vec![false; self.ids.len()];
        rows.filter(|r| !std::mem::replace(&mut seen[r.user as usize], true))
            .map(|r| r.user)
            .collect()
    }

    /// Whether every held-out user id here is an integer (their dense order
    /// is numeric when every block says so, as the held-out users' own).
    pub fn held_out_are_integers(&self) -> bool {
        all_integers(self.held_users().into_iter().map(|c| self.ids[c as usize].as_str()))
    }

    /// Number the held-out users in their dense order.
    pub fn number_held_out(&mut self, numeric: bool) {
        (self.held_user_ids, self.held_dense) = number(&self.ids, self.held_users(), numeric);
    }

    /// The held-out users of this block, their items numbered as `item_of`
    /// says per code (looked up for every held-out row's item), as
    /// [`HeldOutUsers::build`] builds every one's (after
    /// [`UserBlock::number_held_out`]).
    fn held_out_users(&self, n_items: usize, source: &str, item_of: &[Option<Option<u32>>]) -> Result<HeldOutUsers, DataError> {
        if self.held_dense.len() != self.ids.len() && !self.held.is_empty() {
            return Err(DataError::Invalid(format!(
                "{source}: held-out users laid out before they were numbered"
            )));
        }
        let rows = || {
            self.held.iter().map(|r| HeldOutRow {
                user: self.held_dense[r.user as usize],
                item: item_of[r.item as usize].flatten(),
                value: r.value,
                ranked: r.test,
            })
        };
        let item_name = |i: u32| {
            let named = self.held.iter().find(|r| item_of[r.item as usize].flatten() == Some(i));
            named.map_or_else(|| format!("row {i}"), |r| self.ids[r.item as usize].clone())
        };
        HeldOutUsers::from_rows(self.held_user_ids.clone(), n_items, rows, self.duplicates, source, &item_name)
    }

    /// The codes of the users with training rows, each once.
    fn training_users(&self) -> Vec<u32> {
        self.distinct_users(self.rows.iter().filter(|r| !r.test))
    }

    /// Whether every training user id here is an integer (the side's dense
    /// order is numeric when every block says so).
    pub fn users_are_integers(&self) -> bool {
        all_integers(self.training_users().into_iter().map(|c| self.ids[c as usize].as_str()))
    }

    /// Number the users that have training rows, in the side's dense order.
    pub fn number_users(&mut self, numeric: bool) {
        (self.user_ids, self.dense) = number(&self.ids, self.training_users(), numeric);
    }

    /// The training rows, users numbered from `first_user`, repeated pairs
    /// merged by `duplicates` in input order (kept for [`UserBlock::finish`]),
    /// by item block.
    pub fn item_rows(&mut self, first_user: u32, n_blocks: usize, duplicates: DuplicatePolicy) -> Vec<ItemBoundPart> {
        self.duplicates = duplicates;
        let training = || {
            self.rows
                .iter()
                .filter(|r| !r.test)
                .map(|r| (self.dense[r.user as usize], r.item, r.value))
        };
        // A stable layout keeps each pair's rows in input order for the merge.
        let merged = merge_duplicates(Csr::from_entries(self.user_ids.len(), self.ids.len(), training), duplicates);
        // An item is in one block: per code, its block and its code there.
        let mut item_block = vec![u32::MAX; self.ids.len()];
        let mut item_code = vec![u32::MAX; self.ids.len()];
        let mut tables: Vec<PartTable> = (0..n_blocks).map(|_| PartTable::default()).collect();
        let mut rows: Vec<Vec<ItemBoundRow>> = vec![Vec::new(); n_blocks];
        let m = &merged.0;
        for u in 0..m.n_rows() {
            let (cols, vals) = m.row(u);
            for (&c, &value) in cols.iter().zip(vals) {
                let c = c as usize;
                if item_block[c] == u32::MAX {
                    let b = block_of_id(&self.ids[c], n_blocks);
                    item_block[c] = b as u32;
                    item_code[c] = tables[b].push(&self.ids[c]);
                }
                rows[item_block[c] as usize].push(ItemBoundRow {
                    user: first_user + u as u32,
                    item: item_code[c],
                    value,
                });
            }
        }
        self.merged = Some(merged);
        tables
            .into_iter()
            .zip(rows)
            .map(|(t, rows)| ItemBoundPart { ids: t.ids, rows })
            .collect()
    }

    /// The item ids this block's rows name, training, test and held-out
    /// users', each once.
    pub fn items_named(&self) -> Vec<&str> {
        let mut seen = vec![false; self.ids.len()];
        self.rows
            .iter()
            .chain(&self.held)
            .filter(|r| !std::mem::replace(&mut seen[r.item as usize], true))
            .map(|r| self.ids[r.item as usize].as_str())
            .collect()
    }

    /// The block's rows (users × all items), test rows and held-out users
    /// (where users are held out) in dense indices, items numbered by
    /// `item_index` (`None`: no training rating), after
    /// [`UserBlock::item_rows`] merged the training rows.
    pub fn finish(
        &self,
        first_user: u32,
        n_items: usize,
        source: &str,
        item_index: &dyn Fn(&str) -> Option<u32>,
    ) -> Result<FinishedUserBlock, DataError> {
        let (merged, duplicates_merged) = self
            .merged
            .as_ref()
            .ok_or_else(|| DataError::Invalid(format!("{source}: a user block laid out before its training rows were merged")))?;
        // One look-up per distinct item.
        let mut item_of: Vec<Option<Option<u32>>> = vec![None; self.ids.len()];
        let mut item = |c: u32| *item_of[c as usize].get_or_insert_with(|| item_index(&self.ids[c as usize]));
        // The rows' columns become item indices, each row sorted again.
        let mut indices = Vec::with_capacity(merged.nnz());
        let mut values = Vec::with_capacity(merged.nnz());
        let mut pairs: Vec<(u32, f32)> = Vec::new();
        for u in 0..merged.n_rows() {
            let (cols, vals) = merged.row(u);
            pairs.clear();
            for (&c, &v) in cols.iter().zip(vals) {
                let i = item(c).ok_or_else(|| {
                    DataError::Invalid(format!("{source}: item {} of a training row is not numbered", self.ids[c as usize]))
                })?;
                if crate::limits::check_value(v).is_err() {
                    // A sum of repeated pairs may leave the range the loader checked.
                    return Err(DataError::Invalid(format!(
                        "{source}: user {}, item {}: value {v:e} (after merging repeated pairs) is outside the supported range ±{:e}",
                        self.user_ids[u],
                        self.ids[c as usize],
                        crate::limits::MAX_ABS_VALUE
                    )));
                }
                pairs.push((i, v));
            }
            pairs.sort_unstable_by_key(|p| p.0);
            indices.extend(pairs.iter().map(|p| p.0));
            values.extend(pairs.iter().map(|p| p.1));
        }
        let by_user = Csr {
            n_cols: n_items,
            indptr: merged.indptr.clone(),
            indices,
            values,
        };
        let mut test = Vec::new();
        let mut test_dropped_cold = 0;
        for r in self.rows.iter().filter(|r| r.test) {
            let u = self.dense[r.user as usize];
            match (u != u32::MAX, item(r.item)) {
                (true, Some(i)) => test.push((first_user + u, i, r.value)),
                _ => test_dropped_cold += 1,
            }
        }
        let held_out = match self.holds_out {
            true => {
                // Looked up with the training rows' items: one look-up per distinct item.
                for r in &self.held {
                    item(r.item);
                }
                Some(self.held_out_users(n_items, source, &item_of)?)
            }
            false => None,
        };
        // Before repeats are merged, as the single-process dataset takes it.
        let training_range = crate::data::value_range(self.rows.iter().filter(|r| !r.test).map(|r| r.value));
        Ok(FinishedUserBlock {
            by_user,
            test,
            test_dropped_cold,
            duplicates_merged: *duplicates_merged,
            training_range,
            held_out,
        })
    }
}

/// Rows from several senders, in input order.
fn in_input_order<T>(parts: Vec<Vec<T>>, place: impl Fn(&T) -> u64) -> Vec<T> {
    let mut rows: Vec<T> = parts.into_iter().flatten().collect();
    rows.sort_by_key(place);
    rows
}

/// The ids of `codes` (distinct) in the side's dense order, and per code
/// of `ids` its index in that order (`u32::MAX` for the others).
fn number(ids: &[String], codes: Vec<u32>, numeric: bool) -> (Vec<String>, Vec<u32>) {
    let code_of: FxHashMap<&str, u32> = codes.iter().map(|&c| (ids[c as usize].as_str(), c)).collect();
    let ordered = dense_order_as(codes.iter().map(|&c| ids[c as usize].as_str()).collect(), numeric);
    let mut dense = vec![u32::MAX; ids.len()];
    for (i, id) in ordered.iter().enumerate() {
        dense[code_of[id.as_str()] as usize] = i as u32;
    }
    (ordered, dense)
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
    /// The training rows' values' range, before repeats are merged
    /// (infinite and reversed for a block without any).
    pub training_range: (f32, f32),
    /// Where users are held out (`--split users`): the block's held-out users.
    pub held_out: Option<HeldOutUsers>,
}

/// Every training row of one block's items, users numbered.
#[derive(Debug, Default)]
pub struct ItemBlock {
    ids: Vec<String>,
    code: FxHashMap<String, u32>,
    /// Items as codes into `ids`; each (user, item) once.
    rows: Vec<ItemBoundRow>,
    /// The block's items in dense order (after [`ItemBlock::number_items`]).
    pub item_ids: Vec<String>,
    dense: Vec<u32>,
}

impl ItemBlock {
    /// Gather the training rows of this block from all user blocks.
    pub fn new(mut parts: Vec<ItemBoundPart>) -> Self {
        // A user block's part holds its users in order and user blocks hold
        // ranges of users: in that order, every item's users come sorted,
        // and laying the block out sorts nothing.
        parts.sort_by_key(|p| p.rows.first().map_or(0, |r| r.user));
        let (tables, rows): (Vec<_>, Vec<_>) = parts.into_iter().map(|p| (p.ids, p.rows)).unzip();
        let (ids, code, remap) = merge_tables(tables);
        let rows = rows
            .into_iter()
            .zip(&remap)
            .flat_map(|(rows, m): (Vec<ItemBoundRow>, &Vec<u32>)| {
                rows.into_iter().map(|r| ItemBoundRow {
                    item: m[r.item as usize],
                    ..r
                })
            })
            .collect();
        ItemBlock {
            ids,
            code,
            rows,
            ..Default::default()
        }
    }

    /// The users of its rows (dense indices).
    pub fn users(&self) -> impl Iterator<Item = u32> + '_ {
        self.rows.iter().map(|r| r.user)
    }

    /// Whether every item id here is an integer.
    pub fn items_are_integers(&self) -> bool {
        all_integers(self.ids.iter().map(String::as_str))
    }

    pub fn number_items(&mut self, numeric: bool) {
        (self.item_ids, self.dense) = number(&self.ids, (0..self.ids.len() as u32).collect(), numeric);
    }

    /// An item's index within the block (`None`: no training rating).
    pub fn index_of(&self, item: &str) -> Option<u32> {
        self.code.get(item).map(|&c| self.dense[c as usize])
    }

    /// The block's items × all users. The user blocks merged repeated pairs
    /// before sending them, so a pair that comes twice is a sender's fault.
    pub fn by_item(&self, n_users: usize) -> Result<Csr, DataError> {
        let entries = || self.rows.iter().map(|r| (self.dense[r.item as usize], r.user, r.value));
        let csr = Csr::from_entries(self.item_ids.len(), n_users, entries);
        if let Some(i) = csr.row_with_repeated_column() {
            return Err(DataError::Invalid(format!(
                "item {}: a user's rating of it came twice from the user blocks",
                self.item_ids[i]
            )));
        }
        Ok(csr)
    }
}

/// Wrapping sums of a mix of every cell (user row, item row, value) of a
/// block's CSR, whose rows start at `first_row`, by user (`rows_are_users`)
/// or by item. The user blocks' sums and the item blocks' sums are equal
/// exactly when the two copies of the ratings hold the same cells: a check
/// of the shuffle that costs one pass and 32 bytes per block.
pub fn cell_sums(csr: &Csr, first_row: u32, rows_are_users: bool) -> [u64; 4] {
    use crate::rng::{mix64, splitmix64_nth};
    let mut lanes = [0u64; 4];
    for r in 0..csr.n_rows() {
        let row = first_row + r as u32;
        let (cols, vals) = csr.row(r);
        for (&c, &v) in cols.iter().zip(vals) {
            let (u, i) = if rows_are_users { (row, c) } else { (c, row) };
            let e = mix64(((u as u64) << 32 | i as u64) ^ mix64(v.to_bits() as u64 ^ 0x6365_6c6c));
            for (j, lane) in lanes.iter_mut().enumerate() {
                *lane = lane.wrapping_add(splitmix64_nth(e, j as u64));
            }
        }
    }
    lanes
}

/// Lane-wise wrapping sum of cell sums.
pub fn add_cell_sums(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
    [0, 1, 2, 3].map(|j| a[j].wrapping_add(b[j]))
}

#[cfg(test)]
mod tests;
