//! Ratings in, dense-indexed training and test matrices out.
//!
//! `load` reads a ratings file into [`RawRatings`] (file order, original id
//! tokens), `split` picks train and test rows, and [`Dataset::build`] maps the
//! training ids to dense indices and lays the ratings out twice, by user and
//! by item, as Spark ALS does.

pub(crate) mod csr;
pub(crate) mod dataset;
pub(crate) mod error;
pub(crate) mod format;
pub(crate) mod held_out;
pub mod ids;
pub mod ingest;
pub(crate) mod load;
pub mod select;
pub mod split;
pub mod synth;

pub use csr::Csr;
pub use dataset::{DataFingerprint, Dataset, DatasetBuild, DuplicatePolicy, IdOrder, Rows, TestSet};
pub use error::DataError;
pub use format::{Format, LoadOptions};
pub use held_out::{HeldOutRow, HeldOutUsers};
pub use load::{input_files, input_size, load_ratings, load_share, parse_ratings, Share};
pub use split::SplitSpec;

/// The smallest and largest of `values` (infinite and reversed for none):
/// the rating range where explicit predictions are clipped.
pub fn value_range(values: impl IntoIterator<Item = f32>) -> (f32, f32) {
    values
        .into_iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// Positions `0..keys.len()` grouped by key, each key's in ascending order (a
/// counting sort): `(start, order)`, key k's positions being
/// `order[start[k]..start[k + 1]]`. Every key must be below `n_keys`.
pub fn group_by_key(keys: &[u32], n_keys: usize) -> (Vec<usize>, Vec<usize>) {
    let mut start = vec![0usize; n_keys + 1];
    for &k in keys {
        start[k as usize + 1] += 1;
    }
    for k in 0..n_keys {
        start[k + 1] += start[k];
    }
    let mut next = start.clone();
    let mut order = vec![0usize; keys.len()];
    for (pos, &k) in keys.iter().enumerate() {
        order[next[k as usize]] = pos;
        next[k as usize] += 1;
    }
    (start, order)
}

/// A whole text file as UTF-8, without a leading byte-order mark (editors on
/// Windows write one; left in, it would become part of the first id).
pub fn read_text_file(path: &std::path::Path) -> Result<String, DataError> {
    let text = std::fs::read_to_string(path).map_err(DataError::io(path))?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// Ratings as read from a file, in file order, before any split.
///
/// Ids are interned: `users[row]` indexes `user_tokens`, which holds each
/// distinct user id once, in first-seen order. Tokens keep the text of the
/// file exactly (ids are opaque; `007` and `7` are different users).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawRatings {
    /// Where the rows came from (file path or a description), for messages.
    pub source: String,
    pub user_tokens: Vec<String>,
    pub item_tokens: Vec<String>,
    pub users: Vec<u32>,
    pub items: Vec<u32>,
    pub ratings: Vec<f32>,
    /// Present when the format has a timestamp column (needed by the temporal split).
    pub timestamps: Option<Vec<i64>>,
    /// Lines skipped as invalid under `--skip-invalid`.
    pub skipped_lines: u64,
}

impl RawRatings {
    pub fn len(&self) -> usize {
        self.ratings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ratings.is_empty()
    }

    /// The given rows only, in that order, with the same tokens (so a user's
    /// or item's token index, and the seeded orders built on it, stay the same).
    pub fn rows(&self, rows: &[usize]) -> RawRatings {
        let pick = |v: &[u32]| rows.iter().map(|&r| v[r]).collect();
        RawRatings {
            source: self.source.clone(),
            user_tokens: self.user_tokens.clone(),
            item_tokens: self.item_tokens.clone(),
            users: pick(&self.users),
            items: pick(&self.items),
            ratings: rows.iter().map(|&r| self.ratings[r]).collect(),
            timestamps: self.timestamps.as_ref().map(|t| rows.iter().map(|&r| t[r]).collect()),
            skipped_lines: self.skipped_lines,
        }
    }

    /// Rows in the given order as (user token, item token, rating).
    pub fn row(&self, r: usize) -> (&str, &str, f32) {
        (
            &self.user_tokens[self.users[r] as usize],
            &self.item_tokens[self.items[r] as usize],
            self.ratings[r],
        )
    }
}
