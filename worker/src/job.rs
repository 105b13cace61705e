//! A worker's state for the one job it runs: its blocks of ratings on each
//! side, the fixed factors of the coming half-iteration, and the solve.
//!
//! Every number that arrives is checked here before it is stored: indices
//! inside their ranges, lengths that agree, finite values, sizes under the
//! limits the job declared. Nothing here panics on bad input.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use als_core::data::HeldOutUsers;
use als_core::side::Side;
use als_core::solve::{
    all_finite, block_gram, solve_rows_summing_terms, CheckedFixed, Feedback, FixedSide, ObjectiveTerms, RowsView, SolveParams, TermsWanted,
};
use als_proto::codec::{Bytes, PieceReader};
use als_proto::payload::{BlockLimits, FactorLimits};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JobError {
    #[error("invalid message: {0}")]
    Invalid(String),
    #[error("not ready: {0}")]
    NotReady(String),
    /// Accepting the message would take the job past the worker's memory budget.
    #[error("{0}")]
    OverBudget(String),
    /// The work failed (the same input fails on any worker); `row` is the
    /// lowest failing row of the side, counted over the whole problem.
    #[error("{message}")]
    Solve { message: String, row: Option<u64> },
}

/// A malformed push, named as such.
fn bad_push(e: impl std::fmt::Display) -> JobError {
    JobError::Invalid(format!("pushed rows: {e}"))
}

fn invalid<T>(m: impl Into<String>) -> Result<T, JobError> {
    Err(JobError::Invalid(m.into()))
}

/// One block of rows of the solving side, with its ratings and current factors.
#[derive(Debug)]
pub struct Block {
    pub row_start: u64,
    pub n_rows: usize,
    pub indptr: Vec<usize>,
    /// Indexes into `needed`.
    pub columns: Vec<u32>,
    pub values: Vec<f32>,
    /// Global fixed-side rows referenced, ascending.
    pub needed: Vec<u32>,
    /// `columns` mapped into this worker's union of needed rows (rebuilt when blocks change).
    pub union_columns: Vec<u32>,
    /// The rows' factors before the step being solved (the CG warm start).
    pub factors: Vec<f32>,
    pub bias: Vec<f32>,
    /// Held-out test rows of the block's rows (user blocks), for [`Job::evaluate`].
    pub test: TestRows,
    /// The rows' ids where this worker built the block, else empty.
    pub ids: Vec<String>,
    /// The block's held-out users, where built here with users held out.
    pub held_out: Option<HeldOutUsers>,
    /// The latest solve, kept apart until a later step shows the coordinator
    /// accepted it: a half-iteration redone after a fault restarts from the
    /// same warm start as the first attempt.
    pending: Option<(u64, Vec<f32>, Vec<f32>)>,
}

impl Block {
    /// The block's rows as the coordinator last accepted them: the latest
    /// solve (a solve the coordinator did not accept is always redone here,
    /// or the block is shipped anew), else the rows it was shipped with.
    fn latest(&self) -> (&[f32], &[f32]) {
        match &self.pending {
            Some((_, f, b)) => (f, b),
            None => (&self.factors, &self.bias),
        }
    }
}

/// Test rows by block row: row r's are `columns[indptr[r]..indptr[r + 1]]`
/// (global rows of the other side) with their `values`. Empty when the block has none.
#[derive(Debug, Default)]
pub struct TestRows {
    pub indptr: Vec<usize>,
    pub columns: Vec<u32>,
    pub values: Vec<f32>,
}

impl TestRows {
    fn row(&self, r: usize) -> (&[u32], &[f32]) {
        if self.indptr.is_empty() {
            return (&[], &[]);
        }
        let (a, b) = (self.indptr[r], self.indptr[r + 1]);
        (&self.columns[a..b], &self.values[a..b])
    }
}

/// Raw fields of a block as received (already decoded from bytes).
pub struct BlockData {
    pub block: u32,
    pub row_start: u64,
    pub n_rows: u32,
    pub nnz: u64,
    pub n_needed: u32,
    pub indptr: Vec<u32>,
    pub columns: Vec<u32>,
    pub values: Vec<f32>,
    pub needed: Vec<u32>,
    pub factors: Vec<f32>,
    pub bias: Vec<f32>,
    pub n_test: u64,
    pub test_indptr: Vec<u32>,
    pub test_columns: Vec<u32>,
    pub test_values: Vec<f32>,
    /// The rows' ids, where built here (the model's ids files are then
    /// written here too); empty where shipped whole.
    pub ids: Vec<String>,
    /// User blocks built here with users held out (`--split users`): the
    /// block's held-out users, folded in and scored at evaluations.
    pub held_out: Option<HeldOutUsers>,
}

#[derive(Debug, Default)]
struct SideBlocks {
    blocks: BTreeMap<u32, Block>,
    /// Sorted union of the blocks' `needed` rows: the fixed rows pushed before a solve.
    union: Vec<u32>,
}

impl SideBlocks {
    fn rebuild_union(&mut self) {
        let mut u: Vec<u32> = self.blocks.values().flat_map(|b| b.needed.iter().copied()).collect();
        u.sort_unstable();
        u.dedup();
        for b in self.blocks.values_mut() {
            // `needed` is ascending, so positions in the union keep the column order of every row.
            let pos: Vec<u32> = b
                .needed
                .iter()
                .map(|g| u.binary_search(g).expect("needed row is in the union") as u32)
                .collect();
            b.union_columns = b.columns.iter().map(|&c| pos[c as usize]).collect();
        }
        self.union = u;
    }
}

/// The fixed side's factors received for one step.
pub struct FixedFactors {
    pub side: Side,
    pub step: u64,
    pub factors: Vec<f32>,
    pub bias: Vec<f32>,
    pub gram: Option<Vec<f64>>,
}

/// A push of fixed rows as received: the rows other than those of
/// `local_blocks`, undecoded.
pub struct PushedRows {
    pub local_blocks: Vec<u32>,
    pub factors: Vec<Bytes>,
    pub bias: Vec<Bytes>,
    pub gram: Option<Vec<f64>>,
}

/// One solved block, ready to stream back (its rows borrowed from the
/// block's pending solve, not copied).
pub struct SolvedBlock<'a> {
    pub block: u32,
    pub row_start: u64,
    pub n_rows: usize,
    pub factors: &'a [f32],
    pub bias: &'a [f32],
    pub gram: Option<Vec<f64>>,
    /// The block's rows' objective terms, summed in row order, when asked.
    pub terms: Option<ObjectiveTerms>,
}

/// Memory a worker may hold for its job when nothing else is said: 3/4 of
/// this machine's memory (8 GiB where it cannot be read).
pub fn default_memory_budget() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    total.map_or(8 << 30, |t| t / 4 * 3)
}

pub struct Job {
    pub id: String,
    pub params: SolveParams,
    pub n_users: u64,
    pub n_items: u64,
    users: SideBlocks,
    items: SideBlocks,
    fixed: Option<FixedFactors>,
    /// Per side (users, items): where this worker's solved rows go (peer
    /// exchange); then where its item rows go for an evaluation.
    routes: [Option<Routes>; 3],
    /// Rows peers send for the coming steps, reachable while the job solves.
    mailbox: SharedMailbox,
    pub last_activity: Instant,
    /// Bytes this job may hold: its blocks, the pushed factors and what one
    /// request needs on top (decoded copies, answers).
    pub memory_budget: u64,
}

mod evaluate;
mod exchange;

/// Unit tests' solve settings: `k` factors, explicit without biases,
/// exact (Cholesky) solves.
#[cfg(test)]
pub(crate) fn plain_params(k: usize) -> SolveParams {
    SolveParams {
        factors: k,
        lambda: 0.1,
        reg_scaling: als_core::solve::RegScaling::Count,
        feedback: Feedback::Explicit {
            biased: false,
            global_mean: 0.0,
        },
        solver: als_core::solve::SolverKind::Cholesky,
        backend: als_core::linalg::Backend::Faer,
    }
}
pub use evaluate::{EvalBlock, EvalFromPeers, EvalInput, MAX_TOP_K};
pub use exchange::{
    block_routes, lock as lock_mailbox, Assignment, DirectRows, Mailbox, PeerPlan, PeerRows, PeerSend, Routes, RowsFor, SharedMailbox,
    Subscription, MAX_ASSIGNED_BLOCKS, MAX_WORKERS,
};

impl Job {
    pub fn new(id: String, params: SolveParams, n_users: u64, n_items: u64) -> Result<Job, JobError> {
        if id.is_empty() || id.len() > 128 {
            return invalid("job id must be 1..=128 bytes");
        }
        if n_users == 0 || n_items == 0 || n_users > u32::MAX as u64 || n_items > u32::MAX as u64 {
            return invalid(format!("sizes out of range: {n_users} users, {n_items} items"));
        }
        let mailbox = Arc::new(Mutex::new(Mailbox::new(id.clone(), params.factors, params.biased())));
        Ok(Job {
            id,
            params,
            n_users,
            n_items,
            users: SideBlocks::default(),
            items: SideBlocks::default(),
            fixed: None,
            routes: [None, None, None],
            mailbox,
            last_activity: Instant::now(),
            memory_budget: default_memory_budget(),
        })
    }

    /// Bytes the job holds now (blocks of both sides, the pushed factors and the peers' rows).
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes_but_mailbox() + exchange::lock(&self.mailbox).bytes()
    }

    /// [`Job::held_bytes`] but for the mailbox, which checks its own share.
    fn held_bytes_but_mailbox(&self) -> u64 {
        let block = |b: &Block| {
            let words = b.columns.len() + b.union_columns.len() + b.values.len() + b.needed.len() + 2 * (b.factors.len() + b.bias.len());
            let test = b.test.columns.len() + b.test.values.len() + 2 * b.test.indptr.len();
            (8 * b.indptr.len() + 4 * (words + test)) as u64
        };
        let sides: u64 = [&self.users, &self.items].iter().flat_map(|s| s.blocks.values()).map(block).sum();
        let routes: u64 = self
            .routes
            .iter()
            .flatten()
            .flat_map(|r| &r.peers)
            .map(|(a, rows)| (a.len() + 4 * rows.len()) as u64)
            .sum();
        sides + self.fixed_bytes() + routes
    }

    /// Bytes of the pushed fixed factors held for the coming solve.
    fn fixed_bytes(&self) -> u64 {
        self.fixed.as_ref().map_or(0, |f| {
            4 * (f.factors.len() + f.bias.len()) as u64 + 8 * f.gram.as_ref().map_or(0, |g| g.len()) as u64
        })
    }

    /// Refuse a message that needs `incoming` more bytes than the budget leaves.
    fn within_budget(&self, incoming: u64, what: &str) -> Result<(), JobError> {
        let held = self.held_bytes();
        if held.saturating_add(incoming) > self.memory_budget {
            return Err(JobError::OverBudget(format!(
                "{what} needs {incoming} bytes, but this worker's memory budget ({} bytes, --max-memory) has {} left",
                self.memory_budget,
                self.memory_budget.saturating_sub(held)
            )));
        }
        Ok(())
    }

    fn side(&self, s: Side) -> &SideBlocks {
        match s {
            Side::Users => &self.users,
            Side::Items => &self.items,
        }
    }

    fn side_mut(&mut self, s: Side) -> &mut SideBlocks {
        match s {
            Side::Users => &mut self.users,
            Side::Items => &mut self.items,
        }
    }

    pub fn n_rows_of(&self, s: Side) -> u64 {
        match s {
            Side::Users => self.n_users,
            Side::Items => self.n_items,
        }
    }

    fn biased(&self) -> bool {
        self.params.biased()
    }

    fn implicit(&self) -> bool {
        matches!(self.params.feedback, Feedback::Implicit { .. })
    }

    /// Upper bounds of a block's byte fields, from its header (so a stream can be cut off early).
    pub fn block_limits(&self, side: Side, n_rows: u32, nnz: u64, n_needed: u32, n_test: u64) -> Result<BlockLimits, JobError> {
        let k = self.params.factors as u64;
        let (n_side, n_other) = (self.n_rows_of(side), self.n_rows_of(side.other()));
        if n_rows as u64 > n_side {
            return invalid(format!("block of {n_rows} rows exceeds the {n_side} {} of the job", side.name()));
        }
        if n_needed as u64 > n_other {
            return invalid(format!(
                "block needs {n_needed} rows of {} but the job has {n_other}",
                side.other().name()
            ));
        }
        if nnz > n_rows as u64 * n_needed as u64 {
            return invalid(format!("block declares {nnz} ratings for {n_rows} rows × {n_needed} columns"));
        }
        if n_test > 0 && side != Side::Users {
            return invalid("only user blocks carry test rows");
        }
        if n_test > n_rows as u64 * n_other {
            return invalid(format!("block declares {n_test} test rows for {n_rows} rows × {n_other} columns"));
        }
        let rows = n_rows as u64;
        let limits = BlockLimits {
            indptr: (rows + 1) * 4,
            columns: nnz * 4,
            values: nnz * 4,
            needed: n_needed as u64 * 4,
            factors: rows * k * 4,
            bias: if self.biased() { rows * 4 } else { 0 },
            test_indptr: if n_test > 0 { (rows + 1) * 4 } else { 0 },
            test_columns: n_test * 4,
            test_values: n_test * 4,
        };
        // The bytes as received, then decoded: twice the declared sizes, refused before any is buffered.
        self.within_budget(
            limits.total().saturating_mul(2),
            &format!("{} block of {n_rows} rows and {nnz} ratings", side.name()),
        )?;
        Ok(limits)
    }

    /// Store a block after checking every field.
    pub fn add_block(&mut self, side: Side, d: BlockData) -> Result<(), JobError> {
        let k = self.params.factors;
        let (n_side, n_other) = (self.n_rows_of(side), self.n_rows_of(side.other()));
        let n = d.n_rows as usize;
        let nnz = usize::try_from(d.nnz).map_err(|_| JobError::Invalid("nnz too large".into()))?;
        if d.row_start.checked_add(d.n_rows as u64).is_none_or(|e| e > n_side) {
            return invalid(format!(
                "rows {}..+{} outside the job's {n_side} {}",
                d.row_start,
                d.n_rows,
                side.name()
            ));
        }
        if d.indptr.len() != n + 1 {
            return invalid(format!("indptr has {} entries, expected {}", d.indptr.len(), n + 1));
        }
        if d.indptr[0] != 0 || d.indptr.windows(2).any(|w| w[0] > w[1]) || d.indptr[n] as usize != nnz {
            return invalid("indptr must start at 0, not decrease, and end at nnz");
        }
        if d.columns.len() != nnz || d.values.len() != nnz {
            return invalid(format!(
                "{} columns and {} values for {nnz} ratings",
                d.columns.len(),
                d.values.len()
            ));
        }
        if d.needed.len() != d.n_needed as usize {
            return invalid(format!("needed has {} rows, header says {}", d.needed.len(), d.n_needed));
        }
        if d.needed.windows(2).any(|w| w[0] >= w[1]) || d.needed.last().is_some_and(|&g| g as u64 >= n_other) {
            return invalid("needed rows must be ascending and inside the other side");
        }
        for r in 0..n {
            let row = &d.columns[d.indptr[r] as usize..d.indptr[r + 1] as usize];
            if row.windows(2).any(|w| w[0] >= w[1]) || row.last().is_some_and(|&c| c >= d.n_needed) {
                return invalid(format!("row {r}: columns must be ascending and index the needed rows"));
            }
        }
        if d.values.iter().any(|v| !v.is_finite()) {
            return invalid("non-finite rating value");
        }
        if self.implicit() && d.values.iter().any(|&v| v < 0.0) {
            return invalid("implicit feedback values must be >= 0");
        }
        if d.factors.len() != n * k || d.factors.iter().any(|v| !v.is_finite()) {
            return invalid(format!("factors: expected {} finite values, got {}", n * k, d.factors.len()));
        }
        let want_bias = if self.biased() { n } else { 0 };
        if d.bias.len() != want_bias || d.bias.iter().any(|v| !v.is_finite()) {
            return invalid(format!("bias: expected {want_bias} finite values, got {}", d.bias.len()));
        }
        if !d.ids.is_empty() && d.ids.len() != n {
            return invalid(format!("{} ids for {n} rows", d.ids.len()));
        }
        if let Some(h) = &d.held_out {
            let n_items = self.n_items as usize;
            if side != Side::Users || h.fold_in.n_cols != n_items || h.test.items.iter().any(|&i| i as usize >= n_items) {
                return invalid("held-out users belong to a user block, their rows inside the job's items");
            }
        }
        let test = self.check_test_rows(side, &d)?;
        let s = self.side_mut(side);
        let end = d.row_start + d.n_rows as u64;
        if let Some((id, _)) = s
            .blocks
            .iter()
            .find(|(&id, b)| id != d.block && d.row_start < b.row_start + b.n_rows as u64 && b.row_start < end)
        {
            return invalid(format!("rows overlap block {id}"));
        }
        s.blocks.insert(
            d.block,
            Block {
                row_start: d.row_start,
                n_rows: n,
                indptr: d.indptr.iter().map(|&p| p as usize).collect(),
                columns: d.columns,
                values: d.values,
                needed: d.needed,
                union_columns: Vec::new(),
                factors: d.factors,
                bias: d.bias,
                test,
                ids: d.ids,
                held_out: d.held_out,
                pending: None,
            },
        );
        s.rebuild_union();
        // Peer rows are laid out over the old union.
        self.refresh_mailbox(true);
        Ok(())
    }

    fn check_test_rows(&self, side: Side, d: &BlockData) -> Result<TestRows, JobError> {
        let n = d.n_rows as usize;
        let n_test = usize::try_from(d.n_test).map_err(|_| JobError::Invalid("n_test too large".into()))?;
        if n_test == 0 {
            if !(d.test_indptr.is_empty() && d.test_columns.is_empty() && d.test_values.is_empty()) {
                return invalid("test rows sent but n_test is 0");
            }
            return Ok(TestRows::default());
        }
        if side != Side::Users {
            return invalid("only user blocks carry test rows");
        }
        let p = &d.test_indptr;
        if p.len() != n + 1 || p[0] != 0 || p.windows(2).any(|w| w[0] > w[1]) || p[n] as usize != n_test {
            return invalid(format!("test_indptr must have {} entries from 0 up to n_test", n + 1));
        }
        if d.test_columns.len() != n_test || d.test_values.len() != n_test {
            return invalid(format!(
                "{} test columns and {} test values for {n_test} test rows",
                d.test_columns.len(),
                d.test_values.len()
            ));
        }
        let n_other = self.n_rows_of(side.other());
        if d.test_columns.iter().any(|&c| c as u64 >= n_other) {
            return invalid("a test column is outside the other side");
        }
        if d.test_values.iter().any(|v| !v.is_finite()) {
            return invalid("non-finite test value");
        }
        Ok(TestRows {
            indptr: p.iter().map(|&x| x as usize).collect(),
            columns: d.test_columns.clone(),
            values: d.test_values.clone(),
        })
    }

    pub fn release_blocks(&mut self, side: Side, blocks: &[u32]) {
        let s = self.side_mut(side);
        for b in blocks {
            s.blocks.remove(b);
        }
        s.rebuild_union();
        self.refresh_mailbox(true);
    }

    /// Rows of the `fixed` side this worker needs (the solving side's union).
    pub fn needed_fixed_rows(&self, fixed: Side) -> usize {
        self.side(fixed.other()).union.len()
    }

    /// For each of `local_blocks` (blocks of `fixed` this worker holds, whose
    /// rows it need not be sent), the block and the run of positions of the
    /// needed union that fall in its rows; ascending.
    fn local_runs(&self, fixed: Side, local_blocks: &[u32]) -> Result<Vec<(u32, std::ops::Range<usize>)>, JobError> {
        if local_blocks.windows(2).any(|w| w[0] >= w[1]) {
            return invalid("local blocks must be ascending and distinct");
        }
        let union = &self.side(fixed.other()).union;
        let mut runs = Vec::with_capacity(local_blocks.len());
        for &id in local_blocks {
            let Some(b) = self.side(fixed).blocks.get(&id) else {
                return invalid(format!("local block {id} of {} is not held here", fixed.name()));
            };
            let end = b.row_start + b.n_rows as u64;
            let lo = union.partition_point(|&g| (g as u64) < b.row_start);
            let hi = union.partition_point(|&g| (g as u64) < end);
            runs.push((id, lo..hi));
        }
        // Held blocks never overlap (checked when they arrive), so neither do their runs.
        runs.sort_by_key(|r| r.1.start);
        Ok(runs)
    }

    pub fn fixed_limits(&self, fixed: Side, n_rows: u32, local_blocks: &[u32]) -> Result<FactorLimits, JobError> {
        let local: usize = self.local_runs(fixed, local_blocks)?.iter().map(|r| r.1.len()).sum();
        let want = self.needed_fixed_rows(fixed) - local;
        if n_rows as usize != want {
            return invalid(format!(
                "{n_rows} fixed rows pushed, this worker's blocks need {want} besides the {local} it has"
            ));
        }
        let k = self.params.factors as u64;
        let gram = if self.implicit() { k * k * 8 } else { 0 };
        let row_bytes = k * 4 + if self.biased() { 4 } else { 0 };
        let bias = if self.biased() { n_rows as u64 * 4 } else { 0 };
        // The previous step's factors are replaced, so they do not count; the
        // pushed rows are held as received, then laid out with the local ones.
        let previous = self.fixed_bytes();
        let incoming = 2 * gram + n_rows as u64 * row_bytes + self.needed_fixed_rows(fixed) as u64 * row_bytes;
        self.within_budget(incoming.saturating_sub(previous), &format!("{n_rows} pushed factor rows"))?;
        Ok(FactorLimits {
            gram,
            factors: n_rows as u64 * k * 4,
            bias,
        })
    }

    /// The fixed side for the coming solve from a push: its rows (`factors`,
    /// `bias`: pieces as received, the union less the rows of
    /// `local_blocks`) laid out around the rows this worker has already.
    /// Values are checked finite as they are copied in, while still in cache,
    /// so the side is never scanned again (the solve trusts it).
    pub fn set_fixed_pushed(&mut self, fixed: Side, step: u64, pushed: PushedRows) -> Result<(), JobError> {
        let k = self.params.factors;
        let runs = self.local_runs(fixed, &pushed.local_blocks)?;
        let union = &self.side(fixed.other()).union;
        let n = union.len();
        let biased = self.biased();
        let mut factors = vec![0f32; n * k];
        let mut bias = vec![0f32; if biased { n } else { 0 }];
        let mut read_f = PieceReader::new("factors", &pushed.factors);
        let mut read_b = PieceReader::new("bias", &pushed.bias);
        let mut at = 0;
        for (id, run) in &runs {
            read_f.read_finite_into(&mut factors[at * k..run.start * k]).map_err(bad_push)?;
            if biased {
                read_b.read_finite_into(&mut bias[at..run.start]).map_err(bad_push)?;
            }
            self.copy_own_rows(fixed, *id, run.clone(), &mut factors, &mut bias)?;
            at = run.end;
        }
        read_f.read_finite_into(&mut factors[at * k..]).map_err(bad_push)?;
        if biased {
            read_b.read_finite_into(&mut bias[at..]).map_err(bad_push)?;
        }
        read_f.finish().map_err(bad_push)?;
        read_b.finish().map_err(bad_push)?;
        self.install_fixed(FixedFactors {
            side: fixed,
            step,
            factors,
            bias,
            gram: pushed.gram,
        })
    }

    /// Into `factors` and `bias` (laid out over the union of needed rows of
    /// `fixed`), at union positions `run`, the latest rows of this worker's
    /// own block `id` of that side, checked finite.
    fn copy_own_rows(
        &self,
        fixed: Side,
        id: u32,
        run: std::ops::Range<usize>,
        factors: &mut [f32],
        bias: &mut [f32],
    ) -> Result<(), JobError> {
        let k = self.params.factors;
        let biased = self.biased();
        let union = &self.side(fixed.other()).union;
        let block = &self.side(fixed).blocks[&id];
        let (own_f, own_b) = block.latest();
        for p in run {
            let r = (union[p] as u64 - block.row_start) as usize;
            let row = &mut factors[p * k..(p + 1) * k];
            row.copy_from_slice(&own_f[r * k..(r + 1) * k]);
            if !all_finite(row) || (biased && !own_b[r].is_finite()) {
                return invalid(format!("local block {id} has a non-finite row"));
            }
            if biased {
                bias[p] = own_b[r];
            }
        }
        Ok(())
    }

    pub fn set_fixed(&mut self, f: FixedFactors) -> Result<(), JobError> {
        if !all_finite(&f.factors) || !all_finite(&f.bias) {
            return invalid("fixed factors: a non-finite value");
        }
        self.install_fixed(f)
    }

    /// The fixed side after its values were checked finite: its shape and Gramian checked here.
    fn install_fixed(&mut self, f: FixedFactors) -> Result<(), JobError> {
        let k = self.params.factors;
        let n = self.needed_fixed_rows(f.side);
        if f.factors.len() != n * k {
            return invalid(format!("fixed factors: expected {} values, got {}", n * k, f.factors.len()));
        }
        let want_bias = if self.biased() { n } else { 0 };
        if f.bias.len() != want_bias {
            return invalid(format!("fixed bias: expected {want_bias} values, got {}", f.bias.len()));
        }
        match (&f.gram, self.implicit()) {
            (Some(g), true) if g.len() == k * k && g.iter().all(|v| v.is_finite()) => {}
            (None, false) => {}
            _ => return invalid(format!("gramian: implicit feedback needs {} finite values, explicit none", k * k)),
        }
        self.fixed = Some(f);
        self.refresh_mailbox(false);
        Ok(())
    }

    /// Solve every block of `side` against the pushed fixed factors of
    /// `step`, handing each block to `on_block` as soon as it is solved (from
    /// the thread that solved it), so its rows can be on their way while
    /// other blocks still compute. Returns the number of blocks solved.
    pub fn solve(
        &mut self,
        side: Side,
        step: u64,
        terms: Option<TermsWanted>,
        on_block: &(dyn Fn(&SolvedBlock) + Sync),
    ) -> Result<usize, JobError> {
        let fixed = self
            .fixed
            .take()
            .ok_or_else(|| JobError::NotReady("no factors pushed for this step".into()))?;
        if fixed.side != side.other() || fixed.step != step {
            let msg = format!(
                "pushed factors are for {} step {}, solve asks {} step {step}",
                fixed.side.name(),
                fixed.step,
                side.other().name()
            );
            self.fixed = Some(fixed);
            return Err(JobError::NotReady(msg));
        }
        let params = self.params;
        let implicit = self.implicit();
        let biased = self.biased();
        let k = params.factors;
        let fx = FixedSide {
            factors: &fixed.factors,
            bias: &fixed.bias,
            total_rows: self.n_rows_of(side.other()) as usize,
        };
        // Its values were checked finite as they arrived; the shape is checked once for all blocks.
        let fx = match CheckedFixed::of_finite(&params, fx, fixed.gram.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                let message = e.to_string();
                self.fixed = Some(fixed);
                return Err(JobError::Solve { row: None, message });
            }
        };
        // Every block at once, so the pool sees all of this worker's rows (one
        // fork-join per half, not one per block); rows are independent, so the
        // bits are those of solving block by block.
        use rayon::prelude::*;
        let held: Vec<(u32, &mut Block)> = self.side_mut(side).blocks.iter_mut().map(|(&id, b)| (id, b)).collect();
        let results: Vec<Result<(), JobError>> = held
            .into_par_iter()
            .map(|(id, b)| {
                // A later step means the previous solve was accepted: it becomes the warm start.
                if let Some((s, f, bias)) = b.pending.take() {
                    if s != step {
                        b.factors = f;
                        b.bias = bias;
                    }
                }
                let mut f = b.factors.clone();
                let mut bias = b.bias.clone();
                let rows = RowsView {
                    indptr: &b.indptr,
                    indices: &b.union_columns,
                    values: &b.values,
                };
                let whole_block = [0, b.n_rows];
                let with_terms = terms.map(|w| (w, whole_block.as_slice()));
                let per_block = solve_rows_summing_terms(&params, rows, &fx, &mut f, biased.then_some(bias.as_mut_slice()), with_terms)
                    .map_err(|e| {
                        let e = e.offset_rows(b.row_start as usize);
                        JobError::Solve {
                            row: e.row().map(|r| r as u64),
                            message: e.to_string(),
                        }
                    })?;
                // Each block's Gramian sequential, so the same bits as in-process.
                let gram = implicit.then(|| block_gram(&f, k));
                on_block(&SolvedBlock {
                    block: id,
                    row_start: b.row_start,
                    n_rows: b.n_rows,
                    gram,
                    terms: per_block.map(ObjectiveTerms::sum),
                    factors: &f,
                    bias: &bias,
                });
                b.pending = Some((step, f, bias));
                Ok(())
            })
            .collect();
        // The lowest failing block's error, as the block-by-block loop reported.
        let n = results.len();
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        // The fixed side is done with: a half is only ever solved again after
        // a new push. Its buffers take the side's next rows from peers.
        exchange::lock(&self.mailbox).recycle(fixed.side, fixed.factors, fixed.bias);
        self.refresh_mailbox(false);
        Ok(n)
    }

    /// The latest rows of every block of `side` held here, in block order.
    pub fn rows_of(&self, side: Side) -> Vec<SolvedBlock<'_>> {
        self.side(side)
            .blocks
            .iter()
            .map(|(&id, b)| {
                let (factors, bias) = b.latest();
                SolvedBlock {
                    block: id,
                    row_start: b.row_start,
                    n_rows: b.n_rows,
                    factors,
                    bias,
                    gram: None,
                    terms: None,
                }
            })
            .collect()
    }

    /// The ids of every block of `side` held here, in block order: `None`
    /// for a block shipped whole, whose ids only the coordinator holds.
    pub fn ids_of(&self, side: Side) -> Vec<(u32, Option<&[String]>)> {
        let blocks = &self.side(side).blocks;
        blocks
            .iter()
            .map(|(&id, b)| (id, (b.ids.len() == b.n_rows).then_some(&b.ids[..])))
            .collect()
    }

    pub fn n_blocks(&self, side: Side) -> usize {
        self.side(side).blocks.len()
    }

    /// The user blocks' training ratings, as the items each row rated (a
    /// model's `seen` matrix), ascending by block.
    pub fn seen_of_users(&self) -> Vec<SeenBlock<'_>> {
        self.users
            .blocks
            .iter()
            .map(|(&block, b)| SeenBlock {
                block,
                row_start: b.row_start,
                indptr: &b.indptr,
                columns: &b.columns,
                needed: &b.needed,
            })
            .collect()
    }
}

/// One user block's rated items: row `r`'s are
/// `needed[columns[indptr[r]..indptr[r + 1]]]`, global item rows.
pub struct SeenBlock<'a> {
    pub block: u32,
    pub row_start: u64,
    pub indptr: &'a [usize],
    pub columns: &'a [u32],
    pub needed: &'a [u32],
}

impl SeenBlock<'_> {
    /// The row pointers of the block's rows (its last excluded), from `start`.
    pub fn indptr_from(&self, start: u64) -> Vec<i64> {
        self.indptr[..self.indptr.len() - 1]
            .iter()
            .map(|&p| (start + p as u64) as i64)
            .collect()
    }

    /// The global items rated, row after row.
    pub fn items(&self) -> Vec<u32> {
        self.columns.iter().map(|&c| self.needed[c as usize]).collect()
    }

    pub fn nnz(&self) -> u64 {
        self.columns.len() as u64
    }
}
