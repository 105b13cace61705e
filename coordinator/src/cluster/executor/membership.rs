//! Which worker owns which block: the assignment synced to the workers,
//! losing a worker (its blocks move to the others), reviving one (its blocks
//! come home), and the bound on attempts per half.

use std::collections::BTreeSet;

use als_core::side::{Factors, Side};
use als_proto::encoded_bytes;
use als_proto::fault::{fault_of, Fault};
use als_proto::pb::ingest_request::Step;
use als_proto::pb::{AdoptStep, IngestRequest, ReleaseBlocksRequest};
use als_proto::spec::side_to_pb;

use crate::cluster::client::{connect, ClientOptions};
use crate::cluster::routing::owners_among;

use super::rpc::{rpc_err, HalfError, JobFailed};
use super::snapshot::{snapshot_messages, Snapshot};
use super::wire::block_messages;
use super::{side_ix, ClusterExecutor, Slot};
use crate::cluster::ratings::RatingsAt;

/// Blocks as compact ranges ("0-3,7").
pub(super) fn block_list(blocks: &BTreeSet<usize>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = blocks.iter().copied().peekable();
    while let Some(a) = it.next() {
        let mut b = a;
        while it.peek() == Some(&(b + 1)) {
            b = it.next().expect("peeked");
        }
        out.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(",")
    }
}

/// Attempts one half-iteration gets before the run ends (each failed attempt
/// lost a worker; a worker that keeps coming back and failing cannot loop forever).
pub(super) fn max_attempts(workers: usize) -> usize {
    2 * workers + 2
}

/// The answers of a round of calls peers take part in, sorted.
pub(super) struct Answers<T> {
    pub(super) ok: Vec<(usize, T)>,
    /// A worker was lost (and is marked so).
    pub(super) lost: bool,
    /// A worker could not send its rows to a peer.
    pub(super) peer_failed: bool,
    /// Jobs that failed: the run ends with the lowest failing row's.
    pub(super) failed: Vec<JobFailed>,
}

/// What one worker is to take and to let go: (worker, blocks to ship, blocks to release).
type Moves = (usize, Vec<(Side, usize)>, Vec<(Side, Vec<u32>)>);

impl ClusterExecutor<'_> {
    /// Sort the answers of a round of calls peers take part in (a solve
    /// with exchange, `SendRows`): lost workers are marked so, a failed peer
    /// send is told; a protocol breach ends the run.
    pub(super) fn sort_answers<T>(&mut self, results: Vec<(usize, Result<T, HalfError>)>) -> anyhow::Result<Answers<T>> {
        let mut a = Answers {
            ok: Vec::new(),
            lost: false,
            peer_failed: false,
            failed: Vec::new(),
        };
        for (w, r) in results {
            match r {
                Ok(v) => a.ok.push((w, v)),
                Err(HalfError::Lost(m)) => {
                    self.lose(w, &m);
                    a.lost = true;
                }
                Err(HalfError::Peer(m)) => {
                    tracing::warn!("{m}");
                    a.peer_failed = true;
                }
                Err(HalfError::Job(f)) => a.failed.push(f),
                Err(HalfError::Fatal(e)) => return Err(e),
            }
        }
        Ok(a)
    }

    /// The answers of a round of calls no peer takes part in: the workers'
    /// results, and whether one was lost (it is marked so). A failed job or
    /// a protocol breach ends the run.
    pub(super) fn settle<T>(&mut self, results: Vec<(usize, Result<T, HalfError>)>) -> anyhow::Result<(Vec<(usize, T)>, bool)> {
        let (mut ok, mut lost) = (Vec::new(), false);
        for (w, r) in results {
            match r {
                Ok(v) => ok.push((w, v)),
                Err(HalfError::Lost(m)) => {
                    self.lose(w, &m);
                    lost = true;
                }
                Err(HalfError::Job(f)) => return Err(f.into()),
                Err(HalfError::Fatal(e)) => return Err(e),
                Err(HalfError::Peer(m)) => anyhow::bail!("{m}: no peer takes part in this call"),
            }
        }
        Ok((ok, lost))
    }

    /// The error that ends a run after `attempts` of `what` failed in a row.
    pub(super) fn gave_up(&self, what: &str, attempts: usize) -> anyhow::Error {
        let causes: Vec<String> = self.slots.iter().filter_map(|s| s.cause.clone()).collect();
        anyhow::anyhow!(
            "{what} failed {attempts} times in a row, so the job cannot go on; last causes: {}",
            causes.join("; ")
        )
    }

    pub(super) fn lose(&mut self, w: usize, why: &str) {
        if self.slots[w].alive {
            tracing::warn!(worker = %self.slots[w].handle.addr, "worker lost: {why}; moving its blocks");
            self.workers_lost += 1;
        }
        let s = &mut self.slots[w];
        s.alive = false;
        s.started = false;
        s.holds = Default::default();
        s.current = Default::default();
        s.cause = Some(why.to_string());
    }

    /// Take back lost workers that answer again (restarted on their
    /// address). Each lost worker has at most one reconnection under way in
    /// the background: one that failed is started again, one that succeeded
    /// is kept until `take_back` (the workers' rows are the snapshot's, so
    /// its blocks can go back to it), and none is waited for, so a worker
    /// that stays dead costs the halves nothing. A restarted worker is back
    /// within two halves once the snapshot is current.
    pub(super) fn revive(&mut self, take_back: bool) {
        let opts = ClientOptions {
            connect_timeout: self.faults.revive_timeout,
            ..self.client_opts.clone()
        };
        let pushes_possible = self.pushes_possible();
        for w in 0..self.slots.len() {
            if self.slots[w].alive {
                continue;
            }
            let addr = self.slots[w].handle.addr.clone();
            let slot = &mut self.slots[w];
            if slot.reviving.as_ref().is_some_and(|a| a.is_finished()) {
                if let Ok(Ok(h)) = self.rt.block_on(slot.reviving.take().expect("checked")) {
                    slot.back = Some(h);
                }
            }
            match slot.back.take() {
                Some(h) if take_back => {
                    let exchanges = h.exchanges_rows();
                    if !pushes_possible && !exchanges {
                        // Its rows would have to come through a copy this coordinator does not
                        // keep, or to routes it does not know.
                        tracing::warn!(worker = %addr, "the worker is back but cannot send rows to peers; it stays out of this job");
                        continue;
                    }
                    tracing::info!(worker = %addr, "worker is back; returning its blocks");
                    *slot = Slot::new(h, true, slot.cause.take());
                    if self.exchange && !exchanges {
                        tracing::warn!(worker = %addr, "the worker cannot send rows to peers; the coordinator carries them from now on");
                        self.exchange = false;
                    }
                }
                Some(h) => slot.back = Some(h),
                None if slot.reviving.is_none() => {
                    let opts = opts.clone();
                    slot.reviving = Some(self.rt.spawn(async move { connect(&addr, &opts).await }));
                }
                None => {}
            }
        }
    }

    /// A lost worker still owns blocks (it was lost outside a half, and they
    /// have not moved yet): only a replay gives their latest rows.
    pub(super) fn has_orphans(&self) -> bool {
        [Side::Users, Side::Items]
            .into_iter()
            .any(|side| self.routing.side(side).owner.iter().any(|&w| !self.slots[w].alive))
    }

    /// Owners for the live workers: a block stays home while its home worker lives, else moves to a survivor.
    pub(super) fn desired_owners(&self) -> anyhow::Result<[Vec<usize>; 2]> {
        let alive = self.alive();
        anyhow::ensure!(
            alive.iter().any(|&a| a),
            "every worker is gone, so the job cannot go on: {}",
            self.slots
                .iter()
                .map(|s| s.cause.clone().unwrap_or_else(|| format!("worker {}: lost", s.handle.addr)))
                .collect::<Vec<_>>()
                .join("; ")
        );
        Ok(self.home.clone().map(|home| owners_among(&home, &alive)))
    }

    /// Per worker, whether it is alive.
    pub(super) fn alive(&self) -> Vec<bool> {
        self.slots.iter().map(|s| s.alive).collect()
    }

    /// Start the job on every worker and make the blocks each built from the
    /// input its own (`Ingest` with `Adopt`), where every worker is up and
    /// the blocks are at home; otherwise [`Self::sync_assignment`] has
    /// each take its blocks with the coordinator's rows (and a lost
    /// worker's blocks built again, or shipped).
    pub(super) fn adopt_built(&mut self, adopt: AdoptStep) -> anyhow::Result<()> {
        if self.slots.iter().any(|s| !s.alive) {
            tracing::warn!("a worker is lost: each live worker takes the blocks it built with this coordinator's rows");
            return Ok(());
        }
        let futs: Vec<_> = self
            .slots
            .iter()
            .enumerate()
            .map(|(w, slot)| {
                let mut c = slot.handle.client.clone();
                let addr = slot.handle.addr.clone();
                let (start, job_id) = (self.start_req.clone(), self.job_id.clone());
                let work = async move {
                    c.start_job(start).await.map_err(|s| rpc_err(&addr, "cannot start the job", s))?;
                    let req = IngestRequest {
                        job_id,
                        step: Some(Step::Adopt(adopt)),
                        ..Default::default()
                    };
                    c.ingest(req)
                        .await
                        .map_err(|s| rpc_err(&addr, "cannot adopt the blocks it built", s))?;
                    Ok::<(), HalfError>(())
                };
                self.watch(w, work)
            })
            .collect();
        let results = self.rt.block_on(futures::future::join_all(futs));
        let (adopted, _) = self.settle(results)?;
        for (w, ()) in adopted {
            let home = &self.home;
            // An adopting worker takes every block it built.
            for (at, own) in self.built_at.iter_mut().flatten().zip(home) {
                for (b, _) in own.iter().enumerate().filter(|(_, &o)| o == w) {
                    at[b] = None;
                }
            }
            let slot = &mut self.slots[w];
            slot.started = true;
            for (held, own) in slot.holds.iter_mut().zip(home) {
                *held = (0..own.len()).filter(|&b| own[b] == w).collect();
            }
            // Their rows are the coordinator's initial rows, drawn from the same ids.
            slot.current = slot.holds.clone();
        }
        Ok(())
    }

    /// Make every live worker hold exactly its blocks (shipping what is missing); returns bytes sent.
    pub(super) fn sync_assignment(&mut self, users: &Factors, items: &Factors) -> anyhow::Result<u64> {
        let mut total = 0u64;
        let mut rebuilds = 0;
        loop {
            let owners = self.desired_owners()?;
            // What each live worker is missing and holds in excess.
            let mut plans: Vec<Moves> = Vec::new();
            for (w, slot) in self.slots.iter().enumerate().filter(|(_, s)| s.alive) {
                let mut ship: Vec<(Side, usize)> = Vec::new();
                let mut release: Vec<(Side, Vec<u32>)> = Vec::new();
                for side in [Side::Users, Side::Items] {
                    let si = side_ix(side);
                    let want: BTreeSet<usize> = (0..owners[si].len()).filter(|&b| owners[si][b] == w).collect();
                    ship.extend(want.difference(&slot.holds[si]).map(|&b| (side, b)));
                    let extra: Vec<u32> = slot.holds[si].difference(&want).map(|&b| b as u32).collect();
                    if !extra.is_empty() {
                        release.push((side, extra));
                    }
                }
                plans.push((w, ship, release));
            }
            // A block its new owner built goes with its rows alone. Where the
            // workers hold the only copy of the ratings, the survivors first
            // build the blocks again from the input, each where it is to go.
            let unbuilt = |(w, ship, _): &Moves| ship.iter().any(|&(side, b)| self.built_by(side, b) != Some(*w));
            if let (RatingsAt::Workers(on), true) = (self.ratings, plans.iter().any(unbuilt)) {
                rebuilds += 1;
                if rebuilds > max_attempts(self.slots.len()) {
                    return Err(self.gave_up("building the lost blocks again", rebuilds - 1));
                }
                if !self.rebuild(on, &owners)? {
                    continue;
                }
            }
            let ds = self.ratings.held();
            // The test rows go with the user blocks shipped; blocks the workers built hold theirs.
            let (layouts, routing, test) = (&self.layouts, &self.routing, &self.test);
            let (snapshot, rows_shape) = (&self.snapshot, self.rows_shape());
            let in_file = matches!(snapshot, Snapshot::File(_));
            let mut futs = Vec::new();
            let mut shipped: Vec<(usize, Vec<(Side, usize)>)> = Vec::new();
            for (w, ship, release) in plans {
                let ship: Vec<(Side, usize, bool)> = ship
                    .into_iter()
                    .map(|(side, b)| (side, b, self.built_by(side, b) == Some(w)))
                    .collect();
                let slot = &self.slots[w];
                // Blocks are turned into messages one at a time as they are
                // sent, so the coordinator never holds a second copy of the
                // ratings (at 100M ratings that copy was 1.6 GB of peak RSS).
                shipped.push((w, ship.iter().map(|&(side, b, _)| (side, b)).collect()));
                let mut c = slot.handle.client.clone();
                let addr = slot.handle.addr.clone();
                let start = (!slot.started).then(|| self.start_req.clone());
                let job_id = self.job_id.clone();
                let mut read_here = slot.reads_no_files;
                let work = async move {
                    if let Some(req) = start {
                        c.start_job(req).await.map_err(|s| rpc_err(&addr, "cannot start the job", s))?;
                    }
                    for (side, blocks) in release {
                        let req = ReleaseBlocksRequest {
                            job_id: job_id.clone(),
                            side: side_to_pb(side) as i32,
                            blocks,
                        };
                        c.release_blocks(req)
                            .await
                            .map_err(|s| rpc_err(&addr, "releasing blocks failed", s))?;
                    }
                    let mut bytes = 0u64;
                    for (side, b, built_there) in ship {
                        let current = match side {
                            Side::Users => users,
                            Side::Items => items,
                        };
                        let from_snapshot = |read_here| {
                            snapshot_messages(snapshot, &job_id, side, b, layouts, current, rows_shape, read_here).map_err(HalfError::Fatal)
                        };
                        let msgs = match (built_there, ds) {
                            (true, _) => from_snapshot(read_here)?,
                            (false, Some(ds)) => {
                                let csr = if side == Side::Users { &ds.by_user } else { &ds.by_item };
                                // Held here, the ratings' references are counted here too.
                                let needed = routing.side(side).needed(b).ok_or_else(|| {
                                    HalfError::Fatal(anyhow::anyhow!(
                                        "internal error: {} block {b}'s references are not here",
                                        side.name()
                                    ))
                                })?;
                                block_messages(&job_id, side, b, csr, layouts, needed, current, test.of(ds))
                            }
                            (false, None) => {
                                return Err(HalfError::Fatal(anyhow::anyhow!(
                                    "{} block {b} has no ratings to ship: neither here nor built by worker {addr}",
                                    side.name()
                                )))
                            }
                        };
                        bytes += encoded_bytes(&msgs);
                        let read_there = built_there && in_file && !read_here;
                        match c.assign_block(tokio_stream::iter(msgs)).await {
                            Ok(_) => {}
                            // Refused before the block was taken: it is sent again with its rows.
                            Err(s) if read_there && fault_of(&s) == (Fault::Job { row: None }) => {
                                tracing::warn!(
                                    worker = %addr,
                                    "it cannot read the checkpoint's rows itself ({}): this coordinator reads its blocks' rows and sends them",
                                    s.message()
                                );
                                read_here = true;
                                let msgs = from_snapshot(true)?;
                                bytes += encoded_bytes(&msgs);
                                c.assign_block(tokio_stream::iter(msgs))
                                    .await
                                    .map_err(|s| rpc_err(&addr, "shipping a block failed", s))?;
                            }
                            Err(s) => return Err(rpc_err(&addr, "shipping a block failed", s)),
                        }
                    }
                    Ok::<(u64, bool), HalfError>((bytes, read_here))
                };
                futs.push(self.watch(w, work));
            }
            let results = self.rt.block_on(futures::future::join_all(futs));
            let (shipped_to, lost_any) = self.settle(results)?;
            for (w, (bytes, read_here)) in shipped_to {
                total += bytes;
                let slot = &mut self.slots[w];
                slot.started = true;
                slot.reads_no_files = read_here;
                for (held, own) in slot.holds.iter_mut().zip(&owners) {
                    *held = (0..own.len()).filter(|&b| own[b] == w).collect();
                }
                // Shipped blocks carry the coordinator's rows; released ones are gone.
                for (side, b) in shipped.iter().filter(|(v, _)| *v == w).flat_map(|(_, s)| s) {
                    slot.current[side_ix(*side)].insert(*b);
                    if let Some(at) = &mut self.built_at {
                        at[side_ix(*side)][*b] = None;
                    }
                }
                for (current, held) in slot.current.iter_mut().zip(&slot.holds) {
                    current.retain(|b| held.contains(b));
                }
                if bytes > 0 {
                    tracing::info!(
                        worker = %slot.handle.addr,
                        user_blocks = %block_list(&slot.holds[0]),
                        item_blocks = %block_list(&slot.holds[1]),
                        bytes,
                        "worker holds its blocks"
                    );
                }
            }
            if !lost_any {
                // What the workers built and did not take goes.
                if self.built_at.take().is_some() {
                    self.drop_built();
                }
                let [u, i] = owners;
                // The unions only change when blocks move (a sort per worker: not every half).
                if self.routing.users.owner != u || self.routing.items.owner != i {
                    self.bytes_min = [None, None];
                }
                if self.routing.users.owner != u {
                    self.routing.users.set_owners(u, &self.layouts.users);
                }
                if self.routing.items.owner != i {
                    self.routing.items.set_owners(i, &self.layouts.items);
                }
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn block_lists_read_as_ranges() {
        let set = |v: &[usize]| v.iter().copied().collect::<BTreeSet<usize>>();
        assert_eq!(block_list(&set(&[0, 1, 2, 3, 7, 9, 10])), "0-3,7,9-10");
        assert_eq!(block_list(&set(&[5])), "5");
        assert_eq!(block_list(&set(&[])), "none");
    }
}
