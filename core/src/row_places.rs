//! Where an executor writes the latest rows of both sides, so that whoever
//! holds them (this process, or each cluster worker its own blocks) writes
//! them straight into the output: a checkpoint's one file, or a model's
//! `.npy` files.

use std::path::PathBuf;

use crate::side::Factors;

/// Where one part of one side's rows goes: row `r` at byte
/// `at + r·(bytes per row)` of `path`; nothing is written at or past `end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowsPlace {
    pub path: PathBuf,
    pub at: u64,
    pub end: u64,
}

/// The places of a whole state: both sides' factor rows, and their biases
/// where the model has them; a model's also the users' rated items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPlaces {
    pub user_rows: RowsPlace,
    pub item_rows: RowsPlace,
    pub user_bias: Option<RowsPlace>,
    pub item_bias: Option<RowsPlace>,
    pub seen: Option<SeenPlaces>,
    /// A model's ids files, where whoever holds the blocks writes them too
    /// (a coordinator that keeps no ids).
    pub ids: Option<Box<IdsPlaces>>,
}

impl RowPlaces {
    /// The factor rows' place of `side`, and its biases' where there are any.
    pub fn side(&self, side: crate::side::Side) -> (&RowsPlace, Option<&RowsPlace>) {
        match side {
            crate::side::Side::Users => (&self.user_rows, self.user_bias.as_ref()),
            crate::side::Side::Items => (&self.item_rows, self.item_bias.as_ref()),
        }
    }

    /// A checkpoint's places (every part in one file) in the file at
    /// `path`: its temporary file moved to its final name, the same bytes
    /// at the same offsets.
    pub fn at_path(&self, path: &std::path::Path) -> RowPlaces {
        let moved = |p: &RowsPlace| RowsPlace {
            path: path.to_owned(),
            ..p.clone()
        };
        RowPlaces {
            user_rows: moved(&self.user_rows),
            item_rows: moved(&self.item_rows),
            user_bias: self.user_bias.as_ref().map(moved),
            item_bias: self.item_bias.as_ref().map(moved),
            seen: None,
            ids: None,
        }
    }
}

/// Where the training ratings by user go, as a CSR matrix of item indices
/// (a model's `seen`): user `u`'s row pointer at `indptr.at + u·8` (i64),
/// the `n`-th rating's item at `indices.at + n·4` (u32). The last pointer
/// (the count of all) is written with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenPlaces {
    pub indptr: RowsPlace,
    pub indices: RowsPlace,
}

/// Where each block's ids go as lines of a side's ids file (`id\n` each,
/// in row order): block `b`'s rows `rows[b]..rows[b + 1]` at bytes
/// `bytes[b]..bytes[b + 1]` of the file, which is `bytes[blocks]` long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdLines {
    pub rows: Vec<u64>,
    pub bytes: Vec<u64>,
}

/// A side's ids file and its blocks' lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdsPlace {
    pub path: PathBuf,
    pub lines: IdLines,
}

/// Both sides' ids files of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdsPlaces {
    pub users: IdsPlace,
    pub items: IdsPlace,
}

/// The dimensions of a state's rows, known before the rows are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowsShape {
    pub n_users: usize,
    pub n_items: usize,
    pub k: usize,
    pub biased: bool,
}

impl RowsShape {
    pub fn of(users: &Factors, items: &Factors) -> RowsShape {
        RowsShape {
            n_users: users.n_rows(),
            n_items: items.n_rows(),
            k: users.k(),
            biased: !users.bias.is_empty(),
        }
    }
}

/// Write `values` little-endian at byte `offset` of `f` (a checkpoint's or
/// a model's rows: each writer its own range).
pub fn write_le_at<T: crate::le::Le>(f: &mut std::fs::File, offset: u64, values: &[T]) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(offset))?;
    crate::le::write_le(f, values)
}

/// Read `values.len()` little-endian values at byte `offset` of `f`
/// straight into `values` (the rows a checkpoint's or a model's file holds
/// at [`RowsPlace`]s): [`write_le_at`]'s mirror.
pub fn read_le_at<T: crate::le::Le + bytemuck::Pod>(f: &mut std::fs::File, offset: u64, values: &mut [T]) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(bytemuck::cast_slice_mut(values))?;
    crate::le::fix_order(values);
    Ok(())
}

/// Rows `first_row..+n_rows` of one part at `place`, `width` values each
/// (a block's factors or biases in a sealed checkpoint): refused where they
/// would reach past the part's end, and unless every value is finite, as
/// rows written from a solve always are.
pub fn read_rows_at(place: &RowsPlace, first_row: u64, n_rows: usize, width: usize) -> Result<Vec<f32>, String> {
    let path = &place.path;
    let len = n_rows * width;
    let at = offset_within(place.at, first_row, width as u64 * 4, len as u64 * 4, place.end)?;
    let mut values = vec![0f32; len];
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    read_le_at(&mut f, at, &mut values).map_err(|e| format!("{}: {e}", path.display()))?;
    if !crate::solve::all_finite(&values) {
        return Err(format!("{}: a row from {first_row} is not finite", path.display()));
    }
    Ok(values)
}

/// The offset of `bytes` bytes at row `row_start` of rows `row_bytes` long
/// from `base`, refused where they would reach past `end` (a place's
/// bound, which no write or read crosses).
pub fn offset_within(base: u64, row_start: u64, row_bytes: u64, bytes: u64, end: u64) -> Result<u64, String> {
    let at = row_start.checked_mul(row_bytes).and_then(|o| o.checked_add(base));
    match at.and_then(|a| a.checked_add(bytes)) {
        Some(stop) if stop <= end => Ok(at.expect("checked")),
        _ => Err(format!("rows from {row_start} would reach past byte {end} of the file")),
    }
}
