//! Peer exchange: the routes each worker's solved rows take straight to the
//! peers whose blocks reference them (Spark's OutBlock/InBlock routing), so
//! the next half's fixed rows need no push from the coordinator.
//!
//! A route is computed from the layout and the owners alone, and sent once
//! per assignment: when blocks move, every route is sent again under a new
//! epoch, and the next half is pushed by the coordinator as before. The
//! routes of an evaluation's item rows ([`super::evaluation`]) go with them.

use als_core::side::Side;
use als_core::train::Layouts;
use als_proto::codec::Field;
use als_proto::payload::RouteFields;
use als_proto::pb::{RouteChunk, SendRowsRequest};
use als_proto::spec::side_to_pb;
use als_proto::{encoded_bytes, CHUNK_BYTES};
use prost::Message;

use super::half::until_a_loss;
use super::health::watched;
use super::rpc::{rpc_err, send_rows, JobFailed};
use super::ClusterExecutor;
use crate::cluster::routing::Routing;

/// The rows of `side` that worker `from` solves and worker `to` needs for
/// its next half: `to`'s union of needed `side` rows within `from`'s blocks.
pub(super) fn route_rows(routing: &Routing, layouts: &Layouts, side: Side, from: usize, to: usize) -> Vec<u32> {
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

/// What sending a side's rows peer to peer came to.
pub(super) enum RowsSent {
    /// Every live worker sent its rows: the bytes of the calls, and of the rows.
    Done { bytes: u64, peer_bytes: u64 },
    /// A worker was lost meanwhile (and marked so): the bytes of the calls.
    Lost(u64),
    /// A worker could not send its rows to a peer.
    PeerFailed(u64),
}

/// What sending the routes came to.
pub(super) enum RoutesSent {
    /// Every live worker has its routes: the bytes sent.
    Done(u64),
    /// A worker was lost meanwhile (and marked so): the assignment changes again.
    Lost(u64),
}

impl ClusterExecutor<'_> {
    /// A new epoch of routes for every live worker, both sides.
    pub(super) fn send_routes(&mut self) -> anyhow::Result<RoutesSent> {
        self.routes_epoch += 1;
        let epoch = self.routes_epoch;
        let alive: Vec<usize> = (0..self.slots.len()).filter(|&w| self.slots[w].alive).collect();
        let eval_items: Vec<Vec<u32>> = (0..self.slots.len()).map(|w| self.eval_items(w)).collect();
        let mut futs = Vec::new();
        for &from in &alive {
            let mut streams = Vec::new();
            // The halves' routes of both sides, then the evaluation's (item rows).
            for (side, evaluation) in [(Side::Users, false), (Side::Items, false), (Side::Items, true)] {
                for &to in alive.iter().filter(|&&to| to != from) {
                    let rows = match evaluation {
                        false => route_rows(&self.routing, &self.layouts, side, from, to),
                        true => rows_owned_by(&self.routing, &self.layouts, side, from, &eval_items[to]),
                    };
                    let peer = self.slots[to].handle.addr.clone();
                    let fields = RouteFields { rows: Field::U32(&rows) };
                    let chunks = fields.to_chunks(CHUNK_BYTES, |j| RouteChunk {
                        job_id: self.job_id.clone(),
                        side: side_to_pb(side) as i32,
                        epoch,
                        peer: if j == 0 { peer.clone() } else { String::new() },
                        n_rows: if j == 0 { rows.len() as u32 } else { 0 },
                        evaluation,
                        ..Default::default()
                    });
                    streams.push(chunks);
                }
            }
            let handle = self.slots[from].handle.clone();
            let faults = self.faults.clone();
            futs.push(async move {
                let addr = handle.addr.clone();
                let mut client = handle.client.clone();
                let work = async move {
                    let mut bytes = 0;
                    for chunks in streams {
                        bytes += encoded_bytes(&chunks);
                        client
                            .set_routes(tokio_stream::iter(chunks))
                            .await
                            .map_err(|s| rpc_err(&addr, "sending routes failed", s))?;
                    }
                    Ok(bytes)
                };
                (from, watched(&handle, &faults, work).await)
            });
        }
        let results = self.rt.block_on(futures::future::join_all(futs));
        let (sent, lost) = self.settle(results)?;
        let bytes = sent.iter().map(|(_, b)| b).sum();
        Ok(if lost { RoutesSent::Lost(bytes) } else { RoutesSent::Done(bytes) })
    }

    /// Every live worker sends its latest rows of `side` to the peers that
    /// need them, as the fixed side of `step`, on the current routes; with
    /// `evaluation`, its item rows on the evaluation's routes instead.
    pub(super) fn send_rows(&mut self, side: Side, step: u64, evaluation: bool) -> anyhow::Result<RowsSent> {
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
        // A loss ends the call for all: the others would wait on sending it rows.
        let results = self.rt.block_on(until_a_loss(futs, true));
        let a = self.sort_answers(results)?;
        if let Some(f) = JobFailed::first(a.failed) {
            return Err(f.into());
        }
        let peer_bytes: u64 = a.ok.iter().map(|(_, b)| b).sum();
        Ok(match (a.lost, a.peer_failed) {
            (true, _) => RowsSent::Lost(bytes + peer_bytes),
            (false, true) => RowsSent::PeerFailed(bytes + peer_bytes),
            (false, false) => RowsSent::Done { bytes, peer_bytes },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use als_core::blocks::BlockLayout;
    use als_core::data::Csr;

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
