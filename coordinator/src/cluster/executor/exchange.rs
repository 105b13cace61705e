//! Peer exchange: the routes each worker's solved rows take straight to the
//! peers whose blocks reference them (Spark's OutBlock/InBlock routing), so
//! the next half's fixed rows need no push from the coordinator.
//!
//! Routes are set up once per assignment, by the workers themselves: the
//! coordinator tells each worker every block's owner and rows (`Subscribe`:
//! per block, not per row), and each worker asks every peer for the rows of
//! its blocks that its own blocks need, for each side's half and for its
//! evaluation ([`super::evaluation`]). When blocks move, every route is set
//! up again under a new epoch, and the next half is pushed by the
//! coordinator as before.

use als_core::side::Side;
use als_proto::pb::{SendRowsRequest, SubscribeRequest};
use als_proto::spec::side_to_pb;
use prost::Message;

use super::half::until_a_loss;
use super::health::watched;
use super::rpc::{send_rows, subscribe, HalfError, JobFailed};
use super::ClusterExecutor;

/// What a round of calls in which the workers call each other came to
/// (setting up routes, sending rows).
pub(super) enum PeerRound {
    /// Every live worker did its part: the bytes of the calls, and of what
    /// the workers sent each other.
    Done { bytes: u64, peer_bytes: u64 },
    /// A worker was lost meanwhile (and marked so): the bytes of the calls.
    Lost(u64),
    /// A worker could not reach a peer.
    PeerFailed(u64),
}

impl ClusterExecutor<'_> {
    /// A new epoch of routes for every live worker, both sides and the
    /// evaluation's: each worker is told the assignment (every block's
    /// owner and rows) and asks its peers for the rows its blocks need
    /// (`Subscribe`), so no row list passes through the coordinator.
    pub(super) fn send_routes(&mut self) -> anyhow::Result<PeerRound> {
        self.routes_epoch += 1;
        let alive = |w: usize| self.slots[w].alive;
        let starts = |side: Side| self.layouts.side(side).starts_u64();
        let owners = |side: Side| self.routing.side(side).owner.iter().map(|&w| w as u32).collect::<Vec<u32>>();
        let base = SubscribeRequest {
            job_id: self.job_id.clone(),
            epoch: self.routes_epoch,
            user_owners: owners(Side::Users),
            user_starts: starts(Side::Users),
            item_owners: owners(Side::Items),
            item_starts: starts(Side::Items),
            workers: (0..self.slots.len())
                .map(|w| {
                    if alive(w) {
                        self.slots[w].handle.addr.clone()
                    } else {
                        String::new()
                    }
                })
                .collect(),
            you: 0,
            // As a solve's sends: a peer gets as long to answer as a worker gets, and more.
            peer_timeout_ms: u32::try_from((self.faults.worker_timeout * 6).as_millis()).unwrap_or(u32::MAX),
        };
        let mut bytes = 0;
        let mut futs = Vec::new();
        for w in (0..self.slots.len()).filter(|&w| alive(w)) {
            let req = SubscribeRequest {
                you: w as u32,
                ..base.clone()
            };
            bytes += req.encoded_len() as u64;
            let (handle, faults) = (self.slots[w].handle.clone(), self.faults.clone());
            futs.push(async move { (w, watched(&handle, &faults, subscribe(handle.clone(), req)).await) });
        }
        self.peer_round(futs, bytes)
    }

    /// Every live worker sends its latest rows of `side` to the peers that
    /// need them, as the fixed side of `step`, on the current routes; with
    /// `evaluation`, its item rows on the evaluation's routes instead.
    pub(super) fn send_rows(&mut self, side: Side, step: u64, evaluation: bool) -> anyhow::Result<PeerRound> {
        let n_alive = self.slots.iter().filter(|s| s.alive).count();
        let req = SendRowsRequest {
            job_id: self.job_id.clone(),
            side: side_to_pb(side) as i32,
            step,
            routes_epoch: self.routes_epoch,
            routes_peers: (n_alive - 1) as u32,
            // As a solve's sends: a peer gets as long to take the rows as a worker gets to answer, and more.
            peer_timeout_ms: u32::try_from((self.faults.worker_timeout * 6).as_millis()).unwrap_or(u32::MAX),
            evaluation,
        };
        let bytes = req.encoded_len() as u64 * n_alive as u64;
        let futs: Vec<_> = (0..self.slots.len())
            .filter(|&w| self.slots[w].alive)
            .map(|w| {
                let (handle, faults, req) = (self.slots[w].handle.clone(), self.faults.clone(), req.clone());
                async move { (w, watched(&handle, &faults, send_rows(handle.clone(), req)).await) }
            })
            .collect();
        self.peer_round(futs, bytes)
    }

    /// Run one call per live worker (`futs`, each answering with the bytes
    /// it sent its peers), `bytes` being the calls' own; a loss ends every
    /// call at once, since the others may wait on the lost worker.
    fn peer_round<F>(&mut self, futs: Vec<F>, bytes: u64) -> anyhow::Result<PeerRound>
    where
        F: std::future::Future<Output = (usize, Result<u64, HalfError>)>,
    {
        let results = self.rt.block_on(until_a_loss(futs, true));
        let a = self.sort_answers(results)?;
        if let Some(f) = JobFailed::first(a.failed) {
            return Err(f.into());
        }
        let peer_bytes: u64 = a.ok.iter().map(|(_, b)| b).sum();
        Ok(match (a.lost, a.peer_failed) {
            (true, _) => PeerRound::Lost(bytes + peer_bytes),
            (false, true) => PeerRound::PeerFailed(bytes + peer_bytes),
            (false, false) => PeerRound::Done { bytes, peer_bytes },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use als_core::blocks::BlockLayout;
    use als_core::data::Csr;
    use als_core::train::Layouts;

    use crate::cluster::routing::Routing;

    /// The rows of `side` that worker `from` solves and worker `to` needs for
    /// its next half: `to`'s union of needed `side` rows within `from`'s blocks.
    /// What the workers' subscriptions ask for (the reference their routes are
    /// tested against).
    fn route_rows(routing: &Routing, layouts: &Layouts, side: Side, from: usize, to: usize) -> Vec<u32> {
        rows_owned_by(routing, layouts, side, from, &routing.side(side.other()).union[to])
    }

    /// Of `needed` (rows of `side`, ascending), those in worker `from`'s blocks.
    fn rows_owned_by(routing: &Routing, layouts: &Layouts, side: Side, from: usize, needed: &[u32]) -> Vec<u32> {
        let owner = &routing.side(side).owner;
        let layout = layouts.side(side);
        let mut out = Vec::new();
        for b in (0..owner.len()).filter(|&b| owner[b] == from) {
            let r = layout.range(b);
            let lo = needed.partition_point(|&g| (g as usize) < r.start);
            let hi = needed.partition_point(|&g| (g as usize) < r.end);
            out.extend_from_slice(&needed[lo..hi]);
        }
        // Blocks ascend with their rows, so `out` is ascending already.
        out
    }

    #[test]
    fn routes_carry_exactly_the_needed_rows_of_the_senders_blocks() {
        // 4 users × 4 items; user u rates items u and (u + 1) mod 4.
        let (us, is) = ([0u32, 0, 1, 1, 2, 2, 3, 3], [0u32, 1, 1, 2, 2, 3, 3, 0]);
        let by_user = Csr::from_triples(4, 4, &us, &is, &[1.0; 8]);
        let by_item = Csr::from_triples(4, 4, &is, &us, &[1.0; 8]);
        let layouts = Layouts {
            users: BlockLayout { starts: vec![0, 2, 4] },
            items: BlockLayout { starts: vec![0, 2, 4] },
        };
        let routing = Routing::build(&by_user, &by_item, &layouts, 2);
        // Worker 0 solves users 0-1 (items 0, 1, 2 needed), worker 1 users 2-3 (items 2, 3, 0).
        // Worker 0 owns items 0-1: it sends worker 1 item 0; worker 1 sends worker 0 item 2.
        assert_eq!(route_rows(&routing, &layouts, Side::Items, 0, 1), vec![0]);
        assert_eq!(route_rows(&routing, &layouts, Side::Items, 1, 0), vec![2]);
        // Items 0-1 (worker 0) are rated by users 0, 1, 3; items 2-3 (worker 1) by users 1, 2, 3.
        assert_eq!(route_rows(&routing, &layouts, Side::Users, 0, 1), vec![1]);
        assert_eq!(route_rows(&routing, &layouts, Side::Users, 1, 0), vec![3]);
        // The routes of a half add up to its routing minimum with no hub.
        let k = 2;
        for side in [Side::Users, Side::Items] {
            let rows: usize = [(0, 1), (1, 0)]
                .iter()
                .map(|&(f, t)| route_rows(&routing, &layouts, side, f, t).len())
                .sum();
            assert_eq!((rows * k * 4) as u64, routing.bytes_min_peer(side.other(), k, layouts.side(side)));
        }
    }
}
