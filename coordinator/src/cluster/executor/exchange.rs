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
use super::rpc::{send_rows, subscribe, HalfError, JobFailed, Subscribed};
use super::{side_ix, ClusterExecutor};

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
            futs.push(self.watch(w, subscribe(self.slots[w].handle.clone(), req)));
        }
        let (round, answers) = self.peer_round(futs, bytes, |s: &Subscribed| s.peer_bytes)?;
        if let PeerRound::Done { .. } = round {
            self.rows_asked = self.checked_rows_asked(&answers)?.map(Some);
            // The routing minimums follow the routes.
            self.bytes_min = [None, None];
        }
        Ok(round)
    }

    /// Per half, per worker, the fixed rows the workers asked their peers
    /// for (`answers`, one per live worker; a lost one asks for none): each
    /// at most the fixed side's rows, and, where this coordinator knows the
    /// references, exactly its own count.
    fn checked_rows_asked(&self, answers: &[(usize, Subscribed)]) -> anyhow::Result<[Vec<u64>; 2]> {
        let mut asked = [vec![0u64; self.slots.len()], vec![0u64; self.slots.len()]];
        for side in [Side::Users, Side::Items] {
            let fixed = self.layouts.side(side.other());
            let n_fixed = fixed.starts.last().copied().unwrap_or(0) as u64;
            let si = side_ix(side);
            for (w, s) in answers {
                let n = s.rows_for_half[si];
                anyhow::ensure!(
                    n <= n_fixed,
                    "worker {} asked its peers for {n} rows of the {} for the {} half, of {n_fixed}",
                    self.slots[*w].handle.addr,
                    side.other().name(),
                    side.name()
                );
                asked[si][*w] = n;
            }
            if let Some(counted) = self.routing.pushed_rows(side, fixed) {
                anyhow::ensure!(
                    counted == asked[si],
                    "the workers asked their peers for {:?} rows of the {} for the {} half, the routes here need {counted:?}",
                    asked[si],
                    side.other().name(),
                    side.name()
                );
            }
        }
        Ok(asked)
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
            .map(|w| self.watch(w, send_rows(self.slots[w].handle.clone(), req.clone())))
            .collect();
        Ok(self.peer_round(futs, bytes, |&b: &u64| b)?.0)
    }

    /// Run one call per live worker (`futs`, each answering with what
    /// `peer_bytes` tells the bytes it sent its peers of), `bytes` being the
    /// calls' own; a loss ends every call at once, since the others may
    /// wait on the lost worker. The round, and the answers.
    fn peer_round<F, T>(&mut self, futs: Vec<F>, bytes: u64, peer_bytes: fn(&T) -> u64) -> anyhow::Result<(PeerRound, Vec<(usize, T)>)>
    where
        F: std::future::Future<Output = (usize, Result<T, HalfError>)>,
    {
        let results = self.rt.block_on(until_a_loss(futs, true));
        let a = self.sort_answers(results)?;
        if let Some(f) = JobFailed::first(a.failed) {
            return Err(f.into());
        }
        let sent: u64 = a.ok.iter().map(|(_, t)| peer_bytes(t)).sum();
        let round = match (a.lost, a.peer_failed) {
            (true, _) => PeerRound::Lost(bytes + sent),
            (false, true) => PeerRound::PeerFailed(bytes + sent),
            (false, false) => PeerRound::Done { bytes, peer_bytes: sent },
        };
        Ok((round, a.ok))
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
        let unions = &routing.side(side.other()).references.as_ref().expect("counted here").union;
        rows_owned_by(routing, layouts, side, from, &unions[to])
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
            let pushed = routing.pushed_rows(side.other(), layouts.side(side)).unwrap();
            assert_eq!((rows * k * 4) as u64, routing.minimums(side.other(), k, &pushed).peer);
        }
    }
}
