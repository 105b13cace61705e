//! Where the rows a replay starts from are: the state the workers' rows
//! were last known to equal (see [`super::half`]).
//!
//! Where the coordinator read no ratings and every worker exchanges rows
//! with its peers, it keeps no copy of the factors: a fresh run's snapshot
//! is the initial rows, drawn from the ids, and after a checkpoint the
//! workers wrote, it is that file. A replay then ships no rows: each block
//! goes to the worker that built it again, which draws its rows or reads
//! them from the file itself. The coordinator draws only the initial item
//! rows, one block at a time, for the starting YᵀY of implicit feedback.

use als_core::checkpoint::check_sealed;
use als_core::init::init_factors;
use als_core::row_places::{RowPlaces, RowsShape};
use als_core::side::{Factors, Side};
use als_core::solve::block_gram_into;
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

    /// YᵀY of the initial item rows of a run that starts without a copy,
    /// per block in block order (the bits of `gram_by_blocks`), one block's
    /// rows drawn from the ids at a time, as the workers drew them.
    pub(super) fn snapshot_item_gram(&self) -> anyhow::Result<Vec<f64>> {
        let (Snapshot::Initial(draw), RatingsAt::Workers(w)) = (&self.snapshot, self.ratings) else {
            anyhow::bail!("internal error: a starting Gramian without a copy needs the initial rows and the workers' ids");
        };
        let (k, _) = self.rows_shape();
        let mut total = vec![0.0f64; k * k];
        let mut g = vec![0.0f64; k * k];
        for b in 0..self.layouts.items.n_blocks() {
            let ids = &w.described.item_ids[self.layouts.items.range(b)];
            let rows = init_factors(ids, Side::Items, draw.seed, k, draw.init_std, false);
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
pub(super) fn snapshot_messages(
    snapshot: &Snapshot,
    job_id: &str,
    side: Side,
    b: usize,
    layouts: &Layouts,
    copy: &Factors,
    biased: bool,
) -> anyhow::Result<Vec<BlockChunk>> {
    Ok(match snapshot {
        Snapshot::Copy => {
            let end = layouts.side(side).range(b).end;
            anyhow::ensure!(copy.n_rows() >= end, "internal error: no copy of the {} rows", side.name());
            rows_messages(job_id, side, b, layouts, copy)
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
