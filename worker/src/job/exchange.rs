//! Peer exchange on the worker: the routes its solved rows take to peers,
//! the messages it sends on them, and the rows peers send it, which become
//! the fixed side of the next half without a push from the coordinator.
//!
//! A worker sends a peer exactly the rows of its blocks that the peer's
//! blocks reference (the coordinator computes the routes from the layout),
//! and a receiver takes each needed row once, from whoever owns it, besides
//! the rows of its own blocks, which never travel.

use als_core::side::Side;
use als_proto::codec::{Bytes, Field, PieceReader};
use als_proto::payload::{PeerFields, PeerLimits};
use als_proto::pb::PeerChunk;
use als_proto::spec::side_to_pb;
use als_proto::CHUNK_BYTES;

use super::{bad_push, invalid, FixedFactors, Job, JobError};

/// Where the solved rows of one side go: every peer's rows under one epoch.
#[derive(Debug, Default)]
pub struct Routes {
    pub epoch: u64,
    /// (peer address, global rows of the side it needs from this worker, ascending).
    pub peers: Vec<(String, Vec<u32>)>,
}

/// Rows peers sent for a coming step, laid out over this worker's union of
/// needed rows of that side.
#[derive(Debug)]
pub struct Inbox {
    pub side: Side,
    pub step: u64,
    factors: Vec<f32>,
    bias: Vec<f32>,
    got: Vec<bool>,
    n_got: usize,
}

impl Inbox {
    fn empty(side: Side, step: u64, rows: usize, k: usize, biased: bool) -> Inbox {
        Inbox {
            side,
            step,
            factors: vec![0.0; rows * k],
            bias: vec![0.0; if biased { rows } else { 0 }],
            got: vec![false; rows],
            n_got: 0,
        }
    }

    pub fn bytes(&self) -> u64 {
        (4 * (self.factors.len() + self.bias.len()) + self.got.len()) as u64
    }
}

/// Rows from one peer as received, undecoded but for the row list.
pub struct PeerRows {
    pub side: Side,
    pub step: u64,
    /// The routes' epoch the sender sent on.
    pub epoch: u64,
    pub rows: Vec<u32>,
    pub factors: Vec<Bytes>,
    pub bias: Vec<Bytes>,
}

impl Job {
    /// Most bytes a route stream may carry: every row of the side once.
    pub fn route_limit(&self, side: Side, n_rows: u32) -> Result<u64, JobError> {
        let n_side = self.n_rows_of(side);
        if n_rows as u64 > n_side {
            return invalid(format!("a route of {n_rows} rows exceeds the {n_side} {}", side.name()));
        }
        self.within_budget(2 * 4 * n_rows as u64, &format!("a route of {n_rows} rows"))?;
        Ok(4 * n_rows as u64)
    }

    /// Store one peer's route of `side`: rows of this worker's blocks, ascending.
    /// A newer epoch replaces every route of the side; an older one is refused.
    pub fn set_route(&mut self, side: Side, epoch: u64, peer: String, rows: Vec<u32>) -> Result<(), JobError> {
        if peer.is_empty() || peer.len() > 512 {
            return invalid("a route's peer address must be 1..=512 bytes");
        }
        if rows.windows(2).any(|w| w[0] >= w[1]) {
            return invalid("a route's rows must be ascending and distinct");
        }
        let held = &self.side(side).blocks;
        let mut blocks = held.values().peekable();
        for &g in &rows {
            let g = g as u64;
            while blocks.peek().is_some_and(|b| b.row_start + b.n_rows as u64 <= g) {
                blocks.next();
            }
            if blocks.peek().is_none_or(|b| b.row_start > g) {
                return invalid(format!("route row {g} of {} is in no block this worker holds", side.name()));
            }
        }
        let si = side_slot(side);
        match &self.routes[si] {
            Some(r) if r.epoch > epoch => return invalid(format!("route epoch {epoch} is older than {}", r.epoch)),
            Some(r) if r.epoch == epoch => {}
            _ => {
                self.routes[si] = Some(Routes { epoch, peers: Vec::new() });
                // A new assignment: rows peers sent on the old routes are void.
                self.inbox.clear();
            }
        }
        let routes = self.routes[si].as_mut().expect("set above");
        routes.peers.retain(|(p, _)| *p != peer);
        routes.peers.push((peer, rows));
        Ok(())
    }

    /// The messages carrying this worker's just-solved rows of `side` to each
    /// peer on the routes of `epoch` (which must hold all `n_peers`), for step
    /// `step`. Built from the latest solve of each block.
    pub fn peer_messages(&self, side: Side, step: u64, epoch: u64, n_peers: u32) -> Result<Vec<(String, Vec<PeerChunk>)>, JobError> {
        if n_peers == 0 {
            // A worker alone has nobody to send to.
            return Ok(Vec::new());
        }
        let routes = match &self.routes[side_slot(side)] {
            Some(r) if r.epoch == epoch && r.peers.len() == n_peers as usize => r,
            _ => {
                return Err(JobError::NotReady(format!(
                    "no complete routes of {} for epoch {epoch} ({n_peers} peers)",
                    side.name()
                )))
            }
        };
        let k = self.params.factors;
        let biased = self.biased();
        let blocks = &self.side(side).blocks;
        let mut out = Vec::with_capacity(routes.peers.len());
        // An empty route sends nothing: the peer needs none of these rows.
        for (peer, rows) in routes.peers.iter().filter(|(_, rows)| !rows.is_empty()) {
            let mut factors = Vec::with_capacity(rows.len() * k);
            let mut bias = Vec::with_capacity(if biased { rows.len() } else { 0 });
            let mut it = blocks.values().peekable();
            for &g in rows {
                let g64 = g as u64;
                while it.peek().is_some_and(|b| b.row_start + b.n_rows as u64 <= g64) {
                    it.next();
                }
                // Checked when the route was set; blocks only change with a new epoch.
                let Some(b) = it.peek().filter(|b| b.row_start <= g64) else {
                    return invalid(format!("route row {g} is no longer held here"));
                };
                let (f, bi) = b.latest();
                let r = (g64 - b.row_start) as usize;
                factors.extend_from_slice(&f[r * k..(r + 1) * k]);
                if biased {
                    bias.push(bi[r]);
                }
            }
            let fields = PeerFields {
                rows: Field::U32(rows),
                factors: Field::F32(&factors),
                bias: Field::F32(&bias),
            };
            let chunks = fields.to_chunks(CHUNK_BYTES, |j| PeerChunk {
                job_id: self.id.clone(),
                side: side_to_pb(side) as i32,
                step,
                epoch,
                n_rows: if j == 0 { rows.len() as u32 } else { 0 },
                ..Default::default()
            });
            out.push((peer.clone(), chunks));
        }
        Ok(out)
    }

    /// Byte limits of a peer's rows of `side`, from its header: at most this
    /// worker's needed rows of that side.
    pub fn peer_limits(&self, side: Side, step: u64, n_rows: u32) -> Result<PeerLimits, JobError> {
        let union = self.side(side.other()).union.len();
        if n_rows as usize > union {
            return invalid(format!(
                "a peer sent {n_rows} rows of {}; this worker's blocks need {union}",
                side.name()
            ));
        }
        let k = self.params.factors as u64;
        let n = n_rows as u64;
        let bias = if self.biased() { 4 * n } else { 0 };
        let inbox = if self.inbox.iter().any(|b| b.step == step) {
            0
        } else {
            union as u64 * (4 * k + 5)
        };
        self.within_budget(2 * (4 * n + 4 * k * n + bias) + inbox, &format!("{n_rows} rows from a peer"))?;
        Ok(PeerLimits {
            rows: 4 * n,
            factors: 4 * k * n,
            bias,
        })
    }

    /// Take rows from a peer: each must be needed here, outside this worker's
    /// own blocks, and not sent before for the step; values finite.
    pub fn add_peer_rows(&mut self, p: PeerRows) -> Result<(), JobError> {
        let k = self.params.factors;
        let biased = self.biased();
        let union_len = self.side(p.side.other()).union.len();
        let epoch = self.routes.iter().flatten().map(|r| r.epoch).max();
        if epoch != Some(p.epoch) {
            // Sent in an attempt the coordinator gave up on, or before this worker's routes came.
            return Err(JobError::NotReady(format!(
                "peer rows of route epoch {}, this worker is at {}",
                p.epoch,
                epoch.map_or("none".into(), |e| e.to_string())
            )));
        }
        // A fast peer may send the rows of the next step before this worker
        // started the solve of this one: two steps are held, never more
        // (the next-but-one needs this worker's own solve first).
        let newest = self.inbox.iter().map(|b| b.step).max().unwrap_or(0);
        if p.step + 1 < newest {
            return invalid(format!("peer rows for step {} after step {newest}", p.step));
        }
        let at_step = match self.inbox.iter().position(|b| b.step == p.step) {
            Some(i) if self.inbox[i].side != p.side => return invalid(format!("peer rows of two sides for step {}", p.step)),
            Some(i) => i,
            None => {
                self.inbox.retain(|b| b.step + 1 >= p.step);
                self.inbox.push(Inbox::empty(p.side, p.step, union_len, k, biased));
                self.inbox.len() - 1
            }
        };
        let held: Vec<u32> = self.side(p.side).blocks.keys().copied().collect();
        // Positions of the union that this worker's own blocks fill: ascending, disjoint.
        let own: Vec<std::ops::Range<usize>> = self.local_runs(p.side, &held)?.into_iter().map(|r| r.1).collect();
        // Fields apart, so the union is read while the inbox is written.
        let union = match p.side.other() {
            Side::Users => &self.users.union,
            Side::Items => &self.items.union,
        };
        let mut read_f = PieceReader::new("factors", &p.factors);
        let mut read_b = PieceReader::new("bias", &p.bias);
        let inbox = &mut self.inbox[at_step];
        if p.rows.windows(2).any(|w| w[0] >= w[1]) {
            return invalid("peer rows must be ascending and distinct");
        }
        for &g in &p.rows {
            let Ok(at) = union.binary_search(&g) else {
                return invalid(format!("peer row {g} of {} is not needed here", p.side.name()));
            };
            let run = own.partition_point(|r| r.end <= at);
            if own.get(run).is_some_and(|r| r.contains(&at)) {
                return invalid(format!("peer row {g} of {} belongs to this worker's own block", p.side.name()));
            }
            if inbox.got[at] {
                return invalid(format!("peer row {g} of {} sent twice for step {}", p.side.name(), p.step));
            }
            read_f
                .read_finite_into(&mut inbox.factors[at * k..(at + 1) * k])
                .map_err(bad_push)?;
            if biased {
                read_b.read_finite_into(&mut inbox.bias[at..at + 1]).map_err(bad_push)?;
            }
            inbox.got[at] = true;
            inbox.n_got += 1;
        }
        read_f.finish().map_err(bad_push)?;
        read_b.finish().map_err(bad_push)?;
        Ok(())
    }

    /// The fixed side of `step` from the rows peers sent and this worker's own
    /// blocks of that side (solved here in the half before); every needed row
    /// must be there.
    pub fn set_fixed_from_peers(&mut self, fixed: Side, step: u64, gram: Option<Vec<f64>>) -> Result<(), JobError> {
        let k = self.params.factors;
        let biased = self.biased();
        let held: Vec<u32> = self.side(fixed).blocks.keys().copied().collect();
        let runs = self.local_runs(fixed, &held)?;
        let local: usize = runs.iter().map(|r| r.1.len()).sum();
        let union_len = self.side(fixed.other()).union.len();
        let at = self.inbox.iter().position(|b| b.side == fixed && b.step == step);
        let arrived = at.map_or(0, |i| self.inbox[i].n_got);
        if at.is_none() && local != union_len {
            return Err(JobError::NotReady(format!("no peer rows for {} step {step}", fixed.name())));
        }
        if arrived + local != union_len {
            return Err(JobError::NotReady(format!(
                "{arrived} of the {} rows of {} from peers arrived for step {step}",
                union_len - local,
                fixed.name()
            )));
        }
        // Every needed row is this worker's own where no peer had to send any.
        let mut inbox = match at {
            Some(i) => self.inbox.remove(i),
            None => Inbox::empty(fixed, step, union_len, k, biased),
        };
        // Older steps' rows are of no use any more.
        self.inbox.retain(|b| b.step > step);
        for (id, run) in &runs {
            self.copy_own_rows(fixed, *id, run.clone(), &mut inbox.factors, &mut inbox.bias)?;
        }
        self.install_fixed(FixedFactors {
            side: fixed,
            step,
            factors: inbox.factors,
            bias: inbox.bias,
            gram,
        })
    }
}

fn side_slot(s: Side) -> usize {
    match s {
        Side::Users => 0,
        Side::Items => 1,
    }
}
