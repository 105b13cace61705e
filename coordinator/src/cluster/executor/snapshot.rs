//! Where the rows a replay starts from are: the state the workers' rows
//! were last known to equal (see [`super::half`]).
//!
//! Where the coordinator read no ratings and every worker exchanges rows
//! with its peers, it keeps no copy of the factors: a fresh run's snapshot
//! is the initial rows, drawn from the ids block by block as the workers
//! drew them, and after a checkpoint the workers wrote, it is that file,
//! read block by block. So its memory does not grow with the rows between
//! the reads of the model, and a replay ships each block from its source.

use als_core::checkpoint::check_sealed;
use als_core::init::init_factors;
use als_core::row_places::{read_le_at, RowPlaces, RowsPlace, RowsShape};
use als_core::side::{Factors, Side};
use als_core::solve::{all_finite, block_gram_into};
use als_core::train::Layouts;
use als_proto::pb::{AdoptStep, BlockChunk, RowsPart};
use anyhow::Context;

use super::row_files::place_to_pb;
use super::wire::{rows_messages, rows_taken_there};
use super::ClusterExecutor;
use crate::cluster::ratings::RatingsAt;

/// The rows the workers' rows were last known to equal.
#[derive(Debug, Clone)]
pub(super) enum Snapshot {
    /// The caller's copy (`users`, `items` as `train` holds them).
    Copy,
    /// The initial rows, drawn from the ids with this seed and spread.
    Initial(AdoptStep),
    /// A checkpoint the workers wrote, sealed at these places.
    File(Box<RowPlaces>),
}

impl ClusterExecutor<'_> {
    /// The coordinator holds no copy of the factors: the snapshot is elsewhere.
    pub(super) fn no_copy(&self) -> bool {
        !matches!(self.snapshot, Snapshot::Copy)
    }

    /// Block `b` of `side` as the snapshot has it: `copy` is the caller's
    /// side (read only while the snapshot is the copy).
    pub(super) fn snapshot_block(&self, side: Side, b: usize, copy: &Factors) -> anyhow::Result<Factors> {
        snapshot_block(
            &self.snapshot,
            self.ratings,
            self.layouts.side(side).range(b),
            side,
            copy,
            self.rows_shape(),
        )
    }

    /// Where the snapshot is a checkpoint file the workers read their rows
    /// from in place, that it still holds what was sealed (checksum and
    /// shape, read a chunk at a time): a file changed since would give a
    /// model other than the fault-free one, with no error.
    pub(super) fn check_snapshot_file(&self) -> anyhow::Result<()> {
        let Snapshot::File(places) = &self.snapshot else {
            return Ok(());
        };
        let (k, biased) = self.rows_shape();
        let shape = RowsShape {
            n_users: self.layouts.users.n_rows(),
            n_items: self.layouts.items.n_rows(),
            k,
            biased,
        };
        check_sealed(&places.user_rows.path, shape).context("cannot replay from the last checkpoint")
    }

    /// The k and the biases of every row.
    pub(super) fn rows_shape(&self) -> (usize, bool) {
        let biased = self.params.biased();
        (self.params.factors, biased)
    }

    /// YᵀY of the snapshot's item rows, per block in block order (the bits
    /// of `gram_by_blocks`), one block's rows at a time.
    pub(super) fn snapshot_item_gram(&self) -> anyhow::Result<Vec<f64>> {
        let (k, _) = self.rows_shape();
        let empty = Factors::zeros(0, k, false);
        let mut total = vec![0.0f64; k * k];
        let mut g = vec![0.0f64; k * k];
        for b in 0..self.layouts.items.n_blocks() {
            let rows = self.snapshot_block(Side::Items, b, &empty)?;
            block_gram_into(rows.flat(), k, &mut g);
            for (a, v) in total.iter_mut().zip(&g) {
                *a += v;
            }
        }
        Ok(total)
    }
}

/// Block `b` of `side` for the worker that built it, which holds its ids:
/// with the rows from the copy, or told to draw them or read them from the
/// checkpoint itself, so a replay without a copy ships no rows.
#[allow(clippy::too_many_arguments)]
pub(super) fn snapshot_messages(
    snapshot: &Snapshot,
    ratings: RatingsAt,
    job_id: &str,
    side: Side,
    b: usize,
    layouts: &Layouts,
    copy: &Factors,
    (k, biased): (usize, bool),
) -> anyhow::Result<Vec<BlockChunk>> {
    Ok(match snapshot {
        Snapshot::Copy => {
            let range = layouts.side(side).range(b);
            let rows = snapshot_block(snapshot, ratings, range, side, copy, (k, biased))?;
            rows_messages(job_id, side, b, layouts, &rows)
        }
        Snapshot::Initial(draw) => rows_taken_there(job_id, side, b, layouts, Some(*draw), Vec::new()),
        Snapshot::File(places) => {
            let (rows, bias) = places.side(side);
            let mut rows_in = vec![place_to_pb(side, RowsPart::Factors, rows)?];
            if let (true, Some(bias)) = (biased, bias) {
                rows_in.push(place_to_pb(side, RowsPart::Bias, bias)?);
            }
            rows_taken_there(job_id, side, b, layouts, None, rows_in)
        }
    })
}

/// The rows `range` of `side` as `snapshot` has them, as a matrix of
/// their own (`(k, biased)` the rows' shape).
pub(super) fn snapshot_block(
    snapshot: &Snapshot,
    ratings: RatingsAt,
    range: std::ops::Range<usize>,
    side: Side,
    copy: &Factors,
    (k, biased): (usize, bool),
) -> anyhow::Result<Factors> {
    match snapshot {
        Snapshot::Copy => {
            anyhow::ensure!(copy.n_rows() >= range.end, "internal error: no copy of the {} rows", side.name());
            Ok(Factors {
                matrix: copy.matrix.slice(ndarray::s![range.clone(), ..]).to_owned(),
                bias: if copy.bias.is_empty() {
                    Vec::new()
                } else {
                    copy.bias[range].to_vec()
                },
            })
        }
        Snapshot::Initial(draw) => {
            let RatingsAt::Workers(w) = ratings else {
                anyhow::bail!("internal error: initial rows without the workers' ids");
            };
            let ids = match side {
                Side::Users => &w.described.user_ids,
                Side::Items => &w.described.item_ids,
            };
            Ok(init_factors(&ids[range], side, draw.seed, k, draw.init_std, biased))
        }
        Snapshot::File(places) => {
            let (rows, bias) = places.side(side);
            let mut out = Factors::zeros(range.len(), k, biased);
            read_f32s(rows, (range.start * k) as u64, out.flat_mut())?;
            if let (true, Some(place)) = (biased, bias) {
                read_f32s(place, range.start as u64, &mut out.bias)?;
            }
            Ok(out)
        }
    }
}

/// `dest.len()` values from `place`, starting at value `first`; each must
/// be finite, as rows from a worker always are.
fn read_f32s(place: &RowsPlace, first: u64, dest: &mut [f32]) -> anyhow::Result<()> {
    let path = &place.path;
    let from = place.at + first * 4;
    anyhow::ensure!(
        from + dest.len() as u64 * 4 <= place.end,
        "{}: the rows asked for run past the checkpoint's part",
        path.display()
    );
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot reopen the checkpoint {}", path.display()))?;
    read_le_at(&mut f, from, dest).with_context(|| format!("cannot read the checkpoint {}", path.display()))?;
    anyhow::ensure!(all_finite(dest), "{}: a row in it is not finite", path.display());
    Ok(())
}
