//! Peer exchange on the worker: the routes its solved rows take to peers,
//! the messages it sends on them, and the rows peers send it, which become
//! the fixed side of the next half without a push from the coordinator.
//!
//! A worker sends a peer exactly the rows of its blocks that the peer's
//! blocks reference (the coordinator computes the routes from the layout),
//! and a receiver takes each needed row once, from whoever owns it, besides
//! the rows of its own blocks, which never travel.
//!
//! An evaluation's item rows travel the same way on routes of their own:
//! each worker scores its users against the item rows of its own blocks
//! and those its peers send, so no factor passes through the coordinator.

use als_core::side::Side;
use als_proto::codec::{Bytes, Field, PieceReader};
use als_proto::payload::{PeerFields, PeerLimits};
use als_proto::pb::PeerChunk;
use als_proto::spec::side_to_pb;
use als_proto::CHUNK_BYTES;

use std::sync::{Arc, Mutex, MutexGuard};

use super::{all_finite, bad_push, invalid, FixedFactors, Job, JobError, SolvedBlock};

/// What rows on a route are for: the fixed side of a coming half, or the
/// item rows an evaluation scores against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsFor {
    Half(Side),
    Evaluation,
}

impl RowsFor {
    pub fn new(side: Side, evaluation: bool) -> Result<RowsFor, JobError> {
        match (evaluation, side) {
            (false, s) => Ok(RowsFor::Half(s)),
            (true, Side::Items) => Ok(RowsFor::Evaluation),
            (true, Side::Users) => invalid("an evaluation's rows are item rows"),
        }
    }

    /// The side the rows are of.
    pub fn side(self) -> Side {
        match self {
            RowsFor::Half(s) => s,
            RowsFor::Evaluation => Side::Items,
        }
    }

    pub fn is_evaluation(self) -> bool {
        self == RowsFor::Evaluation
    }

    /// The slot of the routes and layouts (users, items, evaluation).
    pub(super) fn slot(self) -> usize {
        match self {
            RowsFor::Half(s) => side_slot(s),
            RowsFor::Evaluation => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RowsFor::Half(s) => s.name(),
            RowsFor::Evaluation => "items (evaluation)",
        }
    }
}

/// An assignment of blocks as a worker needs it to ask its peers for rows:
/// per side (users, items), each block's owner (an index into `workers`)
/// and first row, `starts` ending with the side's row count; the workers'
/// addresses (empty for a lost one); this worker's index.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub epoch: u64,
    pub owners: [Vec<u32>; 2],
    pub starts: [Vec<u64>; 2],
    pub workers: Vec<String>,
    pub me: u32,
}

/// Most blocks per side, and workers, an assignment may name.
pub const MAX_ASSIGNED_BLOCKS: usize = 1 << 20;
pub const MAX_WORKERS: usize = 1 << 12;

/// What a worker asks one peer for: the peer's address, and per kind of
/// rows the rows of the peer's blocks it needs (global, ascending).
pub type Subscription = (String, Vec<(RowsFor, Vec<u32>)>);

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
    pub fn bytes(&self) -> u64 {
        (4 * (self.factors.capacity() + self.bias.capacity()) + self.got.len()) as u64
    }
}

/// Rows from one peer as received, undecoded but for the row list.
pub struct PeerRows {
    pub to: RowsFor,
    pub step: u64,
    /// The routes' epoch the sender sent on.
    pub epoch: u64,
    pub rows: Vec<u32>,
    pub factors: Vec<Bytes>,
    pub bias: Vec<Bytes>,
}

/// Where rows of one side sent by peers go: the union of this worker's
/// needed rows of that side, and the positions its own blocks fill.
#[derive(Debug, Default)]
pub(super) struct Layout {
    union: Vec<u32>,
    /// Ascending, disjoint.
    own: Vec<std::ops::Range<usize>>,
}

/// The rows peers send this worker, taken apart from the job so they can
/// arrive while the job solves (the solve holds the job for its whole
/// length): each is checked and laid out as it comes. Shared between the job
/// and the service's `PeerRows` handler.
#[derive(Debug)]
pub struct Mailbox {
    job_id: String,
    k: usize,
    biased: bool,
    /// The routes' epoch rows must be sent on; none before the first route.
    epoch: Option<u64>,
    /// Per side of the rows sent (users, items), and the evaluation's items.
    layouts: [Layout; 3],
    /// Bytes of the job's budget left for the mailbox, as of the job's last change.
    room: u64,
    /// Rows for the coming steps, at most two.
    held: Vec<Inbox>,
    /// Item rows for the evaluation of one step, apart from the halves'.
    eval: Option<Inbox>,
    /// Per side: the buffers of the last fixed side of that side, for the
    /// next inbox of the side (the same size while the blocks stay), so that
    /// every half does not allocate, zero and fault in a fresh one.
    spare: [Option<(Vec<f32>, Vec<f32>)>; 2],
}

pub type SharedMailbox = Arc<Mutex<Mailbox>>;

/// The mailbox, usable even if a thread panicked while holding it (every
/// method leaves it consistent before anything can panic).
pub fn lock(m: &SharedMailbox) -> MutexGuard<'_, Mailbox> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Mailbox {
    pub fn new(job_id: String, k: usize, biased: bool) -> Mailbox {
        Mailbox {
            job_id,
            k,
            biased,
            epoch: None,
            layouts: Default::default(),
            room: 0,
            held: Vec::new(),
            eval: None,
            spare: [None, None],
        }
    }

    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// Bytes held: the inboxes and the spare buffers.
    pub fn bytes(&self) -> u64 {
        let spare: usize = self.spare.iter().flatten().map(|(f, b)| f.capacity() + b.capacity()).sum();
        self.held.iter().chain(&self.eval).map(Inbox::bytes).sum::<u64>() + 4 * spare as u64
    }

    /// Rows sent before now are void: the blocks or the routes changed.
    fn clear(&mut self) {
        self.held.clear();
        self.eval = None;
        self.spare = [None, None];
    }

    /// A fixed side's buffers, done with, for the next inbox of its side.
    pub fn recycle(&mut self, side: Side, factors: Vec<f32>, bias: Vec<f32>) {
        self.spare[side_slot(side)] = Some((factors, bias));
    }

    /// Drop the spare buffers: no rows from peers are coming to fill them.
    pub fn forget_spares(&mut self) {
        self.spare = [None, None];
    }

    fn new_inbox(&mut self, to: RowsFor, step: u64) -> Inbox {
        let side = to.side();
        let rows = self.layouts[to.slot()].union.len();
        let (mut factors, mut bias) = match to {
            RowsFor::Half(s) => self.spare[side_slot(s)].take().unwrap_or_default(),
            RowsFor::Evaluation => Default::default(),
        };
        // Stale values are harmless: every position is written once before
        // the inbox is used (its rows are counted), by a peer or from an own block.
        factors.resize(rows * self.k, 0.0);
        bias.resize(if self.biased { rows } else { 0 }, 0.0);
        Inbox {
            side,
            step,
            factors,
            bias,
            got: vec![false; rows],
            n_got: 0,
        }
    }

    /// Byte limits of a peer's rows for `to`, from its header: at most this
    /// worker's needed rows of that side.
    pub fn limits(&self, to: RowsFor, step: u64, n_rows: u32) -> Result<PeerLimits, JobError> {
        let union = self.layouts[to.slot()].union.len();
        if n_rows as usize > union {
            return invalid(format!(
                "a peer sent {n_rows} rows of {}; this worker's blocks need {union}",
                to.name()
            ));
        }
        let k = self.k as u64;
        let n = n_rows as u64;
        let bias = if self.biased { 4 * n } else { 0 };
        let held = match to {
            RowsFor::Half(_) => self.held.iter().any(|b| b.step == step),
            RowsFor::Evaluation => self.eval.as_ref().is_some_and(|b| b.step == step),
        };
        let inbox = if held { 0 } else { union as u64 * (4 * k + 5) };
        let incoming = 2 * (4 * n + 4 * k * n + bias) + inbox;
        let held = self.bytes();
        if held.saturating_add(incoming) > self.room {
            return Err(JobError::OverBudget(format!(
                "{n_rows} rows from a peer need {incoming} bytes, but this worker's memory budget (--max-memory) has {} left",
                self.room.saturating_sub(held)
            )));
        }
        Ok(PeerLimits {
            rows: 4 * n,
            factors: 4 * k * n,
            bias,
        })
    }

    /// Take rows from a peer: each must be needed here, outside this worker's
    /// own blocks, and not sent before for the step; values finite.
    pub fn add(&mut self, p: PeerRows) -> Result<(), JobError> {
        let biased = self.biased;
        let mut read_f = PieceReader::new("factors", &p.factors);
        let mut read_b = PieceReader::new("bias", &p.bias);
        self.take(p.to, p.step, p.epoch, &p.rows, |_, factors, bias| {
            read_f.read_finite_into(factors).map_err(bad_push)?;
            if biased {
                read_b.read_finite_into(bias).map_err(bad_push)?;
            }
            Ok(())
        })?;
        read_f.finish().map_err(bad_push)?;
        read_b.finish().map_err(bad_push)?;
        Ok(())
    }

    /// Take rows a worker of this process hands over from its solved block,
    /// with the checks of [`Mailbox::add`], copied once.
    pub fn add_direct(&mut self, d: &DirectRows) -> Result<(), JobError> {
        let (k, biased) = (self.k, self.biased);
        let n_block = d.factors.len() / k.max(1);
        if d.factors.len() != n_block * k || d.bias.len() != if biased { n_block } else { 0 } {
            return invalid(format!(
                "a handed-over block of {} values and {} biases is not rows of {k}",
                d.factors.len(),
                d.bias.len()
            ));
        }
        self.take(d.to, d.step, d.epoch, d.rows, |g, factors, bias| {
            let r = (g as u64)
                .checked_sub(d.row_start)
                .map(|r| r as usize)
                .filter(|&r| r < n_block)
                .ok_or_else(|| JobError::Invalid(format!("handed-over row {g} is not in its block")))?;
            let row = &d.factors[r * k..(r + 1) * k];
            if !all_finite(row) || (biased && !d.bias[r].is_finite()) {
                return invalid(format!("handed-over row {g}: a non-finite value"));
            }
            factors.copy_from_slice(row);
            if biased {
                bias[0] = d.bias[r];
            }
            Ok(())
        })
    }

    /// The checks rows of a peer pass, wherever they come from, with `read`
    /// filling each one's place in the inbox of `step`: its factors and its
    /// bias (none unbiased).
    fn take(
        &mut self,
        to: RowsFor,
        step: u64,
        epoch: u64,
        rows: &[u32],
        read: impl FnMut(u32, &mut [f32], &mut [f32]) -> Result<(), JobError>,
    ) -> Result<(), JobError> {
        let (k, biased) = (self.k, self.biased);
        if self.epoch != Some(epoch) {
            // Sent in an attempt the coordinator gave up on, or before this worker's routes came.
            return Err(JobError::NotReady(format!(
                "peer rows of route epoch {epoch}, this worker is at {}",
                self.epoch.map_or("none".into(), |e| e.to_string())
            )));
        }
        if rows.windows(2).any(|w| w[0] >= w[1]) {
            return invalid("peer rows must be ascending and distinct");
        }
        let side = match to {
            RowsFor::Half(side) => side,
            RowsFor::Evaluation => {
                // One evaluation at a time: rows of another step start it afresh.
                if self.eval.as_ref().is_none_or(|b| b.step != step) {
                    self.eval = Some(self.new_inbox(to, step));
                }
                let inbox = self.eval.as_mut().expect("set above");
                return fill(&self.layouts[to.slot()], inbox, (k, biased), to, rows, read);
            }
        };
        // A fast peer may send the rows of the next step before this worker
        // started the solve of this one: two steps are held, never more
        // (the next-but-one needs this worker's own solve first).
        let newest = self.held.iter().map(|b| b.step).max().unwrap_or(0);
        if step + 1 < newest {
            return invalid(format!("peer rows for step {step} after step {newest}"));
        }
        let at_step = match self.held.iter().position(|b| b.step == step) {
            Some(i) if self.held[i].side != side => return invalid(format!("peer rows of two sides for step {step}")),
            Some(i) => i,
            None => {
                self.held.retain(|b| b.step + 1 >= step);
                let inbox = self.new_inbox(to, step);
                self.held.push(inbox);
                self.held.len() - 1
            }
        };
        fill(&self.layouts[to.slot()], &mut self.held[at_step], (k, biased), to, rows, read)
    }

    /// The evaluation's item rows for `step`, laid out over this worker's
    /// evaluation union, with the rows of its own item blocks still to be
    /// filled in (positions `own`); every other row must have come.
    pub(super) fn take_eval(&mut self, step: u64) -> Result<EvalRows, JobError> {
        let layout = &self.layouts[RowsFor::Evaluation.slot()];
        let own: usize = layout.own.iter().map(|r| r.len()).sum();
        let need = layout.union.len() - own;
        let arrived = self.eval.as_ref().filter(|b| b.step == step).map_or(0, |b| b.n_got);
        if arrived != need {
            return Err(JobError::NotReady(format!(
                "{arrived} of the {need} item rows of the evaluation of step {step} arrived from peers"
            )));
        }
        let inbox = match self.eval.take().filter(|b| b.step == step) {
            Some(b) => b,
            None => self.new_inbox(RowsFor::Evaluation, step),
        };
        Ok(EvalRows {
            items: self.layouts[RowsFor::Evaluation.slot()].union.clone(),
            factors: inbox.factors,
            bias: inbox.bias,
        })
    }
}

/// An evaluation's item rows as peers sent them: `items` (global rows,
/// ascending) with their factors and biases, where the rows of this
/// worker's own item blocks are still to be written.
pub(super) struct EvalRows {
    pub items: Vec<u32>,
    pub factors: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Lay peer rows into `inbox` (over `layout`'s union): each must be needed
/// here, outside this worker's own blocks, and not sent before for the
/// inbox's step; `read` fills each one's factors and bias.
fn fill(
    layout: &Layout,
    inbox: &mut Inbox,
    (k, biased): (usize, bool),
    to: RowsFor,
    rows: &[u32],
    mut read: impl FnMut(u32, &mut [f32], &mut [f32]) -> Result<(), JobError>,
) -> Result<(), JobError> {
    let (name, step) = (to.name(), inbox.step);
    // Rows ascend: each is looked for past the last one's place.
    let (mut at, mut run) = (0, 0);
    for &g in rows {
        at = seek(&layout.union, at, g);
        if layout.union.get(at) != Some(&g) {
            return invalid(format!("peer row {g} of {name} is not needed here"));
        }
        while layout.own.get(run).is_some_and(|r| r.end <= at) {
            run += 1;
        }
        if layout.own.get(run).is_some_and(|r| r.contains(&at)) {
            return invalid(format!("peer row {g} of {name} belongs to this worker's own block"));
        }
        if inbox.got[at] {
            return invalid(format!("peer row {g} of {name} sent twice for step {step}"));
        }
        let bias: &mut [f32] = if biased { &mut inbox.bias[at..at + 1] } else { &mut [] };
        read(g, &mut inbox.factors[at * k..(at + 1) * k], bias)?;
        inbox.got[at] = true;
        inbox.n_got += 1;
    }
    Ok(())
}

/// The first position at or after `from` of `sorted` holding `g` or more.
/// A peer's rows are mostly neighbours in the union, so the next few
/// places are looked at before a search.
fn seek(sorted: &[u32], from: usize, g: u32) -> usize {
    let rest = &sorted[from.min(sorted.len())..];
    let near = rest.len().min(8);
    match rest[..near].iter().position(|&u| u >= g) {
        Some(i) => from + i,
        None => from + near + rest[near..].partition_point(|&u| u < g),
    }
}

/// Rows of a just-solved block that a worker of this process hands over
/// in place: the routed `rows` (global, ascending), read from the block.
pub struct DirectRows<'a> {
    pub to: RowsFor,
    pub step: u64,
    pub epoch: u64,
    pub rows: &'a [u32],
    /// The block's first global row, its factors (k per row) and biases (none unbiased).
    pub row_start: u64,
    pub factors: &'a [f32],
    pub bias: &'a [f32],
}

/// One just-solved block's rows for step `step`, routed: per peer whose
/// route holds some of them, those rows (global, ascending).
pub fn block_routes<'p>(plan: &'p PeerPlan, b: &SolvedBlock) -> impl Iterator<Item = (&'p str, &'p [u32])> {
    let (lo, hi) = (b.row_start, b.row_start + b.n_rows as u64);
    plan.peers.iter().filter_map(move |(peer, rows)| {
        let rows = &rows[rows.partition_point(|&g| (g as u64) < lo)..rows.partition_point(|&g| (g as u64) < hi)];
        (!rows.is_empty()).then_some((peer.as_str(), rows))
    })
}

/// One peer's routed rows of a solved block, as messages, as their encoded
/// length, or in place for a worker of this process.
pub struct PeerSend<'a> {
    pub job_id: &'a str,
    pub plan: &'a PeerPlan,
    /// The step the rows are the fixed side of.
    pub step: u64,
    pub k: usize,
    pub block: &'a SolvedBlock<'a>,
    pub rows: &'a [u32],
}

impl PeerSend<'_> {
    /// The arrays and message headers of the send, handed to `f`.
    fn with_fields<R>(&self, f: impl FnOnce(&PeerFields, &dyn Fn(usize) -> PeerChunk) -> R) -> R {
        let (k, b, rows, lo) = (self.k, self.block, self.rows, self.block.row_start);
        let row = |i: usize| {
            let r = (rows[i] as u64 - lo) as usize;
            &b.factors[r * k..(r + 1) * k]
        };
        let bias: Vec<f32> = match b.bias.is_empty() {
            true => Vec::new(),
            false => rows.iter().map(|&g| b.bias[(g as u64 - lo) as usize]).collect(),
        };
        let fields = PeerFields {
            rows: Field::U32(rows),
            factors: Field::Rows {
                n_rows: rows.len(),
                k,
                row: &row,
            },
            bias: Field::F32(&bias),
        };
        let header = |j: usize| PeerChunk {
            job_id: self.job_id.to_owned(),
            side: side_to_pb(self.plan.to.side()) as i32,
            step: self.step,
            epoch: self.plan.epoch,
            evaluation: self.plan.to.is_evaluation(),
            n_rows: if j == 0 { rows.len() as u32 } else { 0 },
            ..Default::default()
        };
        f(&fields, &header)
    }

    /// The messages of a `PeerRows` call.
    pub fn messages(&self) -> Vec<PeerChunk> {
        self.with_fields(|fields, header| fields.to_chunks(CHUNK_BYTES, header))
    }

    /// The bytes [`PeerSend::messages`] take encoded, without encoding them.
    pub fn encoded_len(&self) -> u64 {
        self.with_fields(|fields, header| fields.encoded_len(CHUNK_BYTES, header))
    }

    /// The rows in place, for [`Mailbox::add_direct`].
    pub fn direct(&self) -> DirectRows<'_> {
        DirectRows {
            to: self.plan.to,
            step: self.step,
            epoch: self.plan.epoch,
            rows: self.rows,
            row_start: self.block.row_start,
            factors: self.block.factors,
            bias: self.block.bias,
        }
    }
}

/// The routes one half's solved rows take: a copy of the side's routes,
/// for the solve to send each block's rows as soon as it is solved.
#[derive(Debug, Clone)]
pub struct PeerPlan {
    pub to: RowsFor,
    pub epoch: u64,
    pub peers: Vec<(String, Vec<u32>)>,
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

    /// Store one peer's route for `to`: rows of this worker's blocks of its
    /// side, ascending. A newer epoch replaces every route for `to`; an older
    /// one is refused.
    pub fn set_route(&mut self, to: RowsFor, epoch: u64, peer: String, rows: Vec<u32>) -> Result<(), JobError> {
        let side = to.side();
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
        let si = to.slot();
        let mut new_epoch = false;
        match &self.routes[si] {
            Some(r) if r.epoch > epoch => return invalid(format!("route epoch {epoch} is older than {}", r.epoch)),
            Some(r) if r.epoch == epoch => {}
            _ => {
                self.routes[si] = Some(Routes { epoch, peers: Vec::new() });
                new_epoch = true;
            }
        }
        let routes = self.routes[si].as_mut().expect("set above");
        routes.peers.retain(|(p, _)| *p != peer);
        routes.peers.push((peer, rows));
        // A new assignment: rows peers sent on the old routes are void.
        self.refresh_mailbox(new_epoch);
        Ok(())
    }

    /// The routes this worker's rows for `to` take on `epoch`, which must
    /// hold all `n_peers`; `None` for a worker alone.
    pub fn peer_plan(&self, to: RowsFor, epoch: u64, n_peers: u32) -> Result<Option<PeerPlan>, JobError> {
        if n_peers == 0 {
            // A worker alone has nobody to send to.
            return Ok(None);
        }
        match &self.routes[to.slot()] {
            Some(r) if r.epoch == epoch && r.peers.len() == n_peers as usize => Ok(Some(PeerPlan {
                to,
                epoch,
                // An empty route sends nothing: the peer needs none of these rows.
                peers: r.peers.iter().filter(|(_, rows)| !rows.is_empty()).cloned().collect(),
            })),
            _ => Err(JobError::NotReady(format!(
                "no complete routes of {} for epoch {epoch} ({n_peers} peers)",
                to.name()
            ))),
        }
    }

    /// Without peer exchange a fixed side's buffers would only be held, not
    /// reused: let them go (a push lays out fresh ones, as before).
    pub fn forget_spares(&self) {
        lock(&self.mailbox).forget_spares();
    }

    /// The mailbox peers' rows go to, for the service to reach without the job.
    pub fn mailbox(&self) -> SharedMailbox {
        self.mailbox.clone()
    }

    /// Bring the mailbox up to this job's blocks, routes and budget; `clear`
    /// voids the rows it holds (they were laid out for other blocks or sent
    /// on other routes).
    pub(super) fn refresh_mailbox(&self, clear: bool) {
        let epoch = self.routes.iter().flatten().map(|r| r.epoch).max();
        let layout = |side: Side| {
            let held: Vec<u32> = self.side(side).blocks.keys().copied().collect();
            Layout {
                union: self.side(side.other()).union.clone(),
                own: self
                    .local_runs(side, &held)
                    .map(|r| r.into_iter().map(|r| r.1).collect())
                    .unwrap_or_default(),
            }
        };
        let others = self.held_bytes_but_mailbox();
        let eval = if clear { Some(self.eval_layout()) } else { None };
        let mut m = lock(&self.mailbox);
        if let Some(eval) = eval {
            m.clear();
            m.layouts = [layout(Side::Users), layout(Side::Items), eval];
        }
        m.epoch = epoch;
        m.room = self.memory_budget.saturating_sub(others);
    }

    /// Where an evaluation's item rows go: every item for top-K lists
    /// (implicit feedback), else the distinct test items of this worker's
    /// user blocks and the items its held-out users are folded in from
    /// (none without test rows); the positions its own item blocks fill.
    fn eval_layout(&self) -> Layout {
        let held = || self.users.blocks.values().filter_map(|b| b.held_out.as_ref());
        let has_test = self.users.blocks.values().any(|b| !b.test.values.is_empty()) || held().any(|h| !h.test.is_empty());
        let union: Vec<u32> = if !has_test {
            Vec::new()
        } else if self.implicit() {
            (0..self.n_items as u32).collect()
        } else {
            // Held-out users are folded in from their fold-in items before their test items are scored.
            let mut v: Vec<u32> = self
                .users
                .blocks
                .values()
                .flat_map(|b| b.test.columns.iter().copied())
                .chain(held().flat_map(|h| h.fold_in.indices.iter().chain(&h.test.items).copied()))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let mut own: Vec<std::ops::Range<usize>> = self
            .items
            .blocks
            .values()
            .map(|b| {
                let end = b.row_start + b.n_rows as u64;
                union.partition_point(|&g| (g as u64) < b.row_start)..union.partition_point(|&g| (g as u64) < end)
            })
            .filter(|r| !r.is_empty())
            .collect();
        own.sort_by_key(|r| r.start);
        Layout { union, own }
    }

    /// What this worker asks each peer for under `a`: per peer, the rows of
    /// the peer's blocks this worker's blocks need, for each side's half and
    /// for its evaluation (item rows). Every peer gets all three lists, empty
    /// ones too: a sender knows it has every route when every peer's came.
    pub fn subscriptions(&self, a: &Assignment) -> Result<Vec<Subscription>, JobError> {
        self.check_assignment(a)?;
        let me = a.me as usize;
        let mut at = vec![None; a.workers.len()];
        let mut out: Vec<Subscription> = Vec::new();
        for (w, addr) in a.workers.iter().enumerate() {
            if w != me && !addr.is_empty() {
                at[w] = Some(out.len());
                out.push((addr.clone(), Vec::new()));
            }
        }
        let eval = self.eval_layout().union;
        let wanted = [
            (RowsFor::Half(Side::Users), &self.items.union),
            (RowsFor::Half(Side::Items), &self.users.union),
            (RowsFor::Evaluation, &eval),
        ];
        for (to, needed) in wanted {
            let slot = side_slot(to.side());
            let (owners, starts) = (&a.owners[slot], &a.starts[slot]);
            let mut per_peer = vec![Vec::new(); out.len()];
            // Both ascend: the block of each needed row is found past the last one's.
            let mut b = 0;
            for &g in needed {
                while starts[b + 1] <= g as u64 {
                    b += 1;
                }
                // This worker's own rows never travel.
                if let Some(i) = at[owners[b] as usize] {
                    per_peer[i].push(g);
                }
            }
            for (sub, rows) in out.iter_mut().zip(per_peer) {
                sub.1.push((to, rows));
            }
        }
        Ok(out)
    }

    /// An assignment must cover each side's rows with its blocks, name live
    /// workers as owners, and agree with the blocks this worker holds.
    fn check_assignment(&self, a: &Assignment) -> Result<(), JobError> {
        let n_workers = a.workers.len();
        if n_workers == 0 || n_workers > MAX_WORKERS || a.workers.iter().any(|w| w.len() > 512) {
            return invalid(format!("an assignment names 1..={MAX_WORKERS} workers of at most 512 bytes each"));
        }
        if a.workers.get(a.me as usize).is_none_or(|w| w.is_empty()) {
            return invalid(format!("this worker is number {} of {n_workers}, without an address", a.me));
        }
        for side in [Side::Users, Side::Items] {
            let (owners, starts) = (&a.owners[side_slot(side)], &a.starts[side_slot(side)]);
            let n = self.n_rows_of(side);
            if owners.is_empty() || owners.len() > MAX_ASSIGNED_BLOCKS || starts.len() != owners.len() + 1 {
                return invalid(format!(
                    "{} blocks of {} need as many owners and one more start, at most {MAX_ASSIGNED_BLOCKS}",
                    owners.len(),
                    side.name()
                ));
            }
            if starts[0] != 0 || starts.windows(2).any(|w| w[0] > w[1]) || starts[owners.len()] != n {
                return invalid(format!("the blocks of {} must cover rows 0..{n} in order", side.name()));
            }
            if owners.iter().any(|&w| a.workers.get(w as usize).is_none_or(|addr| addr.is_empty())) {
                return invalid(format!("a block of {} is owned by no live worker", side.name()));
            }
            for (&id, b) in &self.side(side).blocks {
                let id = id as usize;
                let agrees =
                    id < owners.len() && owners[id] == a.me && starts[id] == b.row_start && starts[id + 1] - starts[id] == b.n_rows as u64;
                if !agrees {
                    return invalid(format!(
                        "{} block {id} held here is not this worker's in the assignment",
                        side.name()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Limits of a peer's rows (see [`Mailbox::limits`]).
    pub fn peer_limits(&self, to: RowsFor, step: u64, n_rows: u32) -> Result<PeerLimits, JobError> {
        lock(&self.mailbox).limits(to, step, n_rows)
    }

    /// Take rows from a peer (see [`Mailbox::add`]).
    pub fn add_peer_rows(&mut self, p: PeerRows) -> Result<(), JobError> {
        lock(&self.mailbox).add(p)
    }

    /// Take rows a worker of this process hands over (see [`Mailbox::add_direct`]).
    pub fn add_direct_rows(&mut self, d: &DirectRows) -> Result<(), JobError> {
        lock(&self.mailbox).add_direct(d)
    }

    /// The fixed side of `step` from the rows peers sent and this worker's own
    /// blocks of that side (solved here in the half before); every needed row
    /// must be there.
    pub fn set_fixed_from_peers(&mut self, fixed: Side, step: u64, gram: Option<Vec<f64>>) -> Result<(), JobError> {
        let held: Vec<u32> = self.side(fixed).blocks.keys().copied().collect();
        let runs = self.local_runs(fixed, &held)?;
        let local: usize = runs.iter().map(|r| r.1.len()).sum();
        let union_len = self.side(fixed.other()).union.len();
        let mut inbox = {
            let mut m = lock(&self.mailbox);
            let at = m.held.iter().position(|b| b.side == fixed && b.step == step);
            let arrived = at.map_or(0, |i| m.held[i].n_got);
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
            let inbox = match at {
                Some(i) => m.held.remove(i),
                None => m.new_inbox(RowsFor::Half(fixed), step),
            };
            // Older steps' rows are of no use any more.
            m.held.retain(|b| b.step > step);
            inbox
        };
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
