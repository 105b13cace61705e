//! Where the rows a replay starts from are: the state the workers' rows
//! were last known to equal (see [`super::half`]).
//!
//! Where the coordinator read no ratings and every worker exchanges rows
//! with its peers, it keeps no copy of the factors: a fresh run's snapshot
//! is the initial rows, drawn from the ids; a resumed run's, the
//! checkpoint it resumes from; after a checkpoint the workers wrote, that
//! file. Starting or replaying then ships no rows: each block goes to the
//! worker that built it, which draws its rows or reads them from the file
//! itself. A worker that cannot reach the file gets them read here, a
//! block at a time. The starting YᵀY of implicit feedback is the workers'
//! per-block Gramians, reduced here, asked again after a loss once the
//! lost blocks have moved.

use std::ops::Range;

use als_core::checkpoint::check_sealed;
use als_core::row_places::{read_rows_at, RowPlaces, RowsPlace, RowsShape};
use als_core::side::{Factors, Side};
use als_core::train::Layouts;
use als_proto::pb::{AdoptStep, BlockChunk, FetchRowsRequest, RowsPart};
use als_proto::spec::side_to_pb;
use anyhow::Context;

use super::membership::max_attempts;
use super::row_files::place_to_pb;
use super::rpc::{checked_lower_gram, fetch_rows, sum_lower_grams};
use super::wire::{rows_messages, rows_taken_there};
use super::ClusterExecutor;

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

    /// Whether this coordinator can push a half's fixed rows itself: it
    /// keeps a copy of them, and knows which rows each worker needs (with
    /// the ratings on the workers, only where it asked them).
    pub(super) fn pushes_possible(&self) -> bool {
        !self.no_copy() && self.routing.knows_references()
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

    /// YᵀY of the item rows of a run that starts without a copy, per block
    /// in block order (the bits of `gram_by_blocks`), each block's asked of
    /// the worker that holds its rows. Where a worker is lost meanwhile,
    /// its blocks move first (the survivors build them again and draw their
    /// rows, or read them from the checkpoint, as it did), and all are
    /// asked again: this coordinator holds neither the ids nor the rows.
    pub(super) fn snapshot_item_gram(&mut self) -> anyhow::Result<Vec<f64>> {
        let (k, _) = self.rows_shape();
        let none = Factors {
            matrix: ndarray::Array2::zeros((0, k)),
            bias: Vec::new(),
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempts > max_attempts(self.slots.len()) {
                return Err(self.gave_up("gathering the starting item Gramians", attempts - 1));
            }
            if self.has_orphans() {
                self.unreported_bytes += self.sync_assignment(&none, &none)?;
            }
            if let Some(gram) = self.item_gram_from_workers()? {
                self.item_gram_from_workers = true;
                return Ok(gram);
            }
        }
    }
}

impl ClusterExecutor<'_> {
    /// Every item block's Gramian of its rows on the worker that holds it
    /// (`FetchRows` with `grams`: k·(k+1)/2 values a block, no rows),
    /// reduced in block order as a half's are; `None` where a worker was
    /// lost (it is marked so).
    fn item_gram_from_workers(&mut self) -> anyhow::Result<Option<Vec<f64>>> {
        let (k, _) = self.rows_shape();
        let req = FetchRowsRequest {
            job_id: self.job_id.clone(),
            side: side_to_pb(Side::Items) as i32,
            grams: true,
        };
        #[cfg_attr(not(test), allow(unused_mut))]
        let mut results = self.on_live_workers(|_, handle| fetch_rows(handle, req.clone()));
        #[cfg(test)]
        if let Some(w) = self.lose_at_starting_gram.take() {
            let taken = "taken as lost by a test, as it answers for the starting YᵀY";
            results
                .iter_mut()
                .filter(|(at, _)| *at == w)
                .for_each(|(_, r)| *r = Err(super::rpc::HalfError::Lost(taken.into())));
        }
        let (answers, lost) = self.settle(results)?;
        if lost {
            return Ok(None);
        }
        let (layout, owner) = (&self.layouts.items, &self.routing.items.owner);
        let mut grams: Vec<Option<Vec<f64>>> = vec![None; layout.n_blocks()];
        let mut seen = vec![false; layout.n_blocks()];
        for (w, half) in answers {
            let addr = &self.slots[w].handle.addr;
            self.unreported_bytes += half.bytes_sent + half.bytes_received;
            for (b, g) in half.blocks {
                let b = b as usize;
                g.check_place(addr, Side::Items, (b, w), owner, &mut seen, layout)?;
                let p = g.arrays.into_pieces();
                anyhow::ensure!(
                    p.factors.is_empty(),
                    "worker {addr}: item block {b} came with rows, not its Gramian alone"
                );
                grams[b] = Some(checked_lower_gram(addr, b, &p.gram, k)?);
            }
        }
        if let Some(missing) = grams.iter().position(Option::is_none) {
            anyhow::bail!("no worker sent the Gramian of item block {missing}");
        }
        Ok(Some(sum_lower_grams(k, grams.iter().flatten().map(Vec::as_slice))))
    }
}

/// Block `b` of `side` for the worker that built it, which holds its ids:
/// with the rows from the copy, or told to draw them or read them from the
/// checkpoint itself, so a replay without a copy ships no rows. A worker
/// that cannot read the checkpoint (`read_here`) gets the block's rows
/// read from it here, one block at a time.
#[allow(clippy::too_many_arguments)]
pub(super) fn snapshot_messages(
    snapshot: &Snapshot,
    job_id: &str,
    side: Side,
    b: usize,
    layouts: &Layouts,
    copy: &Factors,
    (k, biased): (usize, bool),
    read_here: bool,
) -> anyhow::Result<Vec<BlockChunk>> {
    let range = layouts.side(side).range(b);
    Ok(match snapshot {
        Snapshot::Copy => {
            anyhow::ensure!(copy.n_rows() >= range.end, "internal error: no copy of the {} rows", side.name());
            let bias = if copy.bias.is_empty() { &[][..] } else { &copy.bias[range.clone()] };
            rows_messages(job_id, side, b, layouts, &copy.flat()[range.start * k..range.end * k], bias)
        }
        Snapshot::Initial(draw) => rows_taken_there(job_id, side, b, layouts, Some(*draw), Vec::new()),
        Snapshot::File(places) if read_here => {
            let (factors, bias) = read_block(places, side, range, k, biased)?;
            rows_messages(job_id, side, b, layouts, &factors, &bias)
        }
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

/// The factors and biases (where `biased`) of rows `range` of `side` in a
/// sealed checkpoint, read at its places.
fn read_block(places: &RowPlaces, side: Side, range: Range<usize>, k: usize, biased: bool) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    let (rows, bias) = places.side(side);
    let read = |place: &RowsPlace, width| {
        read_rows_at(place, range.start as u64, range.len(), width)
            .map_err(|e| anyhow::anyhow!("cannot read the {} rows of the checkpoint: {e}", side.name()))
    };
    let factors = read(rows, k)?;
    let bias = match (biased, bias) {
        (false, _) => Vec::new(),
        (true, Some(place)) => read(place, 1)?,
        (true, None) => anyhow::bail!("internal error: the checkpoint has no {} biases", side.name()),
    };
    Ok((factors, bias))
}
