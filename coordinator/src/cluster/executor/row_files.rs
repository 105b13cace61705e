//! Checkpoints and models written by the workers: each writes the latest
//! rows of its blocks into the files the coordinator created under a
//! directory they all reach (`worker --output-root`; `--local` workers
//! reach what the coordinator does), so no row crosses the network for a
//! checkpoint or for the model.

use als_core::row_places::{IdsPlace, RowPlaces, RowsPlace as Place};
use als_core::side::Side;
use als_proto::pb::{RowsPart, RowsPlace, WriteRowsRequest};
use als_proto::spec::side_to_pb;
use anyhow::Context;

use super::rpc::{rpc_err, HalfError};
use super::ClusterExecutor;

impl ClusterExecutor<'_> {
    /// Have every live worker write its blocks' rows at `places`. `Ok(false)`
    /// when they cannot, and nothing can be trusted of the file: a worker
    /// is lost (its blocks' rows come back by a fetch's replay), or one
    /// writes no file (no `--output-root`, or the directory out of its
    /// reach), which turns worker writes off for the run.
    pub(super) fn write_rows_on_workers(&mut self, places: &RowPlaces) -> anyhow::Result<bool> {
        // A lost worker's blocks that have not moved yet: their rows come back by a replay.
        if !self.workers_write_rows || self.has_orphans() {
            return Ok(false);
        }
        let seen = places.seen.as_ref();
        let ids = places.ids.as_ref();
        let id_place = |p: &IdsPlace| Place {
            path: p.path.clone(),
            at: 0,
            end: p.lines.bytes[p.lines.bytes.len() - 1],
        };
        let (user_ids, item_ids) = (ids.map(|i| id_place(&i.users)), ids.map(|i| id_place(&i.items)));
        let parts = [
            (Side::Users, RowsPart::Factors, Some(&places.user_rows)),
            (Side::Items, RowsPart::Factors, Some(&places.item_rows)),
            (Side::Users, RowsPart::Bias, places.user_bias.as_ref()),
            (Side::Items, RowsPart::Bias, places.item_bias.as_ref()),
            (Side::Users, RowsPart::SeenIndptr, seen.map(|s| &s.indptr)),
            (Side::Users, RowsPart::SeenIndices, seen.map(|s| &s.indices)),
            (Side::Users, RowsPart::Ids, user_ids.as_ref()),
            (Side::Items, RowsPart::Ids, item_ids.as_ref()),
        ];
        let mut req = WriteRowsRequest {
            job_id: self.job_id.clone(),
            places: Vec::new(),
            // Each user block's first rating among every user's.
            user_nnz_starts: match seen {
                Some(_) => self.ratings.user_nnz_starts(&self.layouts.users),
                None => Vec::new(),
            },
            // Each block's first byte among its side's id lines.
            user_id_starts: ids.map(|i| i.users.lines.bytes.clone()).unwrap_or_default(),
            item_id_starts: ids.map(|i| i.items.lines.bytes.clone()).unwrap_or_default(),
        };
        for (side, part, place) in parts {
            if let Some(place) = place {
                req.places.push(place_to_pb(side, part, place)?);
            }
        }
        let results = self.on_live_workers(|_, handle| {
            let req = req.clone();
            async move {
                let mut c = handle.client.clone();
                c.write_rows(req)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| rpc_err(&handle.addr, "writing its rows", s))
            }
        });
        let mut written = [
            vec![0usize; self.layouts.users.n_blocks()],
            vec![0usize; self.layouts.items.n_blocks()],
        ];
        let mut usable = true;
        for (w, r) in results {
            match r {
                Ok(resp) => {
                    for (side, blocks) in [(Side::Users, &resp.user_blocks), (Side::Items, &resp.item_blocks)] {
                        let owner = &self.routing.side(side).owner;
                        let counts = &mut written[super::side_ix(side)];
                        for &b in blocks {
                            let b = b as usize;
                            anyhow::ensure!(
                                owner.get(b) == Some(&w),
                                "worker {} wrote the rows of {side:?} block {b}, which it does not own",
                                self.slots[w].handle.addr
                            );
                            counts[b] += 1;
                        }
                    }
                }
                Err(HalfError::Lost(m)) => {
                    self.lose(w, &m);
                    usable = false;
                }
                Err(e) => {
                    let why = match e {
                        HalfError::Fatal(e) => format!("{e:#}"),
                        HalfError::Job(f) => f.message,
                        HalfError::Peer(m) | HalfError::Lost(m) => m,
                    };
                    tracing::warn!("{why}; the coordinator writes the checkpoints and the model from now on");
                    self.workers_write_rows = false;
                    usable = false;
                }
            }
        }
        if usable {
            // Every block written once, by its owner: the file holds every row.
            anyhow::ensure!(
                written.iter().flatten().all(|&n| n == 1),
                "the workers did not write every block's rows exactly once"
            );
            self.row_writes_by_workers += 1;
        }
        Ok(usable)
    }
}

/// A place in a file as a worker is told it.
pub(super) fn place_to_pb(side: Side, part: RowsPart, place: &Place) -> anyhow::Result<RowsPlace> {
    let Place { path, at, end } = place;
    Ok(RowsPlace {
        side: side_to_pb(side) as i32,
        part: part as i32,
        path: path
            .to_str()
            .with_context(|| format!("{} is not UTF-8", path.display()))?
            .to_owned(),
        at: *at,
        end: *end,
    })
}
