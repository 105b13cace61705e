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
