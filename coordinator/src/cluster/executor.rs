//! The cluster's [`HalfStepExecutor`]: ship blocks once, then per half push
//! factors, solve remotely, gather the solved rows.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use als_core::data::{Csr, Dataset};
use als_core::side::{Factors, Side};
use als_core::solve::{all_finite, sum_grams, Feedback, SolveParams};
use als_core::train::{eval, HalfStepExecutor, HalfStepOutput, HalfStepReport, Layouts, TestMetrics, TrainConfig, TrainError, TrainState};
use als_proto::codec::{pieces_into, pieces_vec, Field};
use als_proto::payload::{Assembler, BlockFields, EvalFields, EvalResultPayload, FactorFields};
use als_proto::pb::{
    BlockChunk, EndJobRequest, EvalChunk, EvalResultChunk, FactorChunk, ReleaseBlocksRequest, SolveRequest, SolvedChunk, StartJobRequest,
};
use als_proto::spec::{side_to_pb, spec_from_params};
use als_proto::{CHUNK_BYTES, PROTOCOL_VERSION};
use anyhow::Context;
use prost::Message;

use super::client::{connect, ClientOptions, WorkerHandle};
use super::routing::Routing;

/// How the coordinator watches its workers.
#[derive(Debug, Clone)]
pub struct FaultOptions {
    /// A worker that does not answer a health check within this long is taken as lost.
    pub worker_timeout: Duration,
    /// Health checks of a busy worker are this far apart.
    pub heartbeat: Duration,
    /// How long a lost worker's address gets to answer before each half-iteration.
    pub revive_timeout: Duration,
}

impl Default for FaultOptions {
    fn default() -> Self {
        FaultOptions {
            worker_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_millis(500),
            revive_timeout: Duration::from_millis(500),
        }
    }
}

struct Slot {
    handle: WorkerHandle,
    alive: bool,
    /// StartJob done on this connection.
    started: bool,
    /// Blocks this worker holds, per side.
    holds: [BTreeSet<usize>; 2],
    /// Why it was last lost (for the error once every worker is gone).
    cause: Option<String>,
}

pub struct ClusterExecutor<'a> {
    rt: tokio::runtime::Handle,
    slots: Vec<Slot>,
    routing: Routing,
    /// The owners when every worker is up (lost workers' blocks come back to them).
    home: [Vec<usize>; 2],
    layouts: Layouts,
    job_id: String,
    start_req: StartJobRequest,
    client_opts: ClientOptions,
    faults: FaultOptions,
    ds: &'a Dataset,
    test: TestByUser,
    step: u64,
    /// Faults survived so far (for reports and tests).
    pub workers_lost: usize,
    /// Bytes of the evaluations on the workers (apart from the halves' bytes).
    pub eval_bytes: u64,
    /// Evaluations the workers did (the rest fell back to the coordinator).
    pub remote_evaluations: usize,
}

fn side_ix(s: Side) -> usize {
    match s {
        Side::Users => 0,
        Side::Items => 1,
    }
}

/// Blocks as compact ranges ("0-3,7").
fn block_list(blocks: &BTreeSet<usize>) -> String {
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

#[derive(Debug)]
enum HalfError {
    /// The worker is gone, unreachable or busy: its blocks move.
    Lost(String),
    /// The work failed on the worker; anywhere else it fails the same way.
    Job(JobFailed),
    Fatal(anyhow::Error),
}

/// Work that failed on a worker: the run ends with the worker's message, the
/// one the single-process path gives for the same input.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct JobFailed {
    pub message: String,
    /// The lowest failing row, when the failure is one row's.
    pub row: Option<u64>,
}

impl JobFailed {
    /// Of the failures of one round, the one the single-process path reports: the lowest row.
    fn first(failures: Vec<JobFailed>) -> Option<JobFailed> {
        failures.into_iter().min_by_key(|f| f.row.unwrap_or(u64::MAX))
    }
}

/// Attempts one half-iteration gets before the run ends (each failed attempt
/// lost a worker; a worker that keeps coming back and failing cannot loop forever).
fn max_attempts(workers: usize) -> usize {
    2 * workers + 2
}

/// The test rows grouped by user (stable), remembering each one's place in the test set.
#[derive(Default)]
struct TestByUser {
    indptr: Vec<usize>,
    items: Vec<u32>,
    values: Vec<f32>,
    /// Index in `Dataset::test` of each grouped row.
    position: Vec<usize>,
}

impl TestByUser {
    fn build(ds: &Dataset) -> Self {
        let t = &ds.test;
        let mut indptr = vec![0usize; ds.n_users() + 1];
        for &u in &t.users {
            indptr[u as usize + 1] += 1;
        }
        for u in 0..ds.n_users() {
            indptr[u + 1] += indptr[u];
        }
        let mut next = indptr.clone();
        let mut position = vec![0usize; t.len()];
        for (r, &u) in t.users.iter().enumerate() {
            position[next[u as usize]] = r;
            next[u as usize] += 1;
        }
        TestByUser {
            items: position.iter().map(|&r| t.items[r]).collect(),
            values: position.iter().map(|&r| t.ratings[r]).collect(),
            indptr,
            position,
        }
    }

    /// Grouped rows of users `range`.
    fn span(&self, range: &std::ops::Range<usize>) -> std::ops::Range<usize> {
        self.indptr[range.start]..self.indptr[range.end]
    }
}

/// One block's data as messages (header on the first); user blocks carry their test rows.
#[allow(clippy::too_many_arguments)]
fn block_messages(
    job_id: &str,
    side: Side,
    block: usize,
    csr: &Csr,
    layouts: &Layouts,
    needed: &[u32],
    current: &Factors,
    test: &TestByUser,
) -> Vec<BlockChunk> {
    let range = layouts.side(side).range(block);
    let (a, b) = (csr.indptr[range.start], csr.indptr[range.end]);
    let indptr: Vec<u32> = csr.indptr[range.start..=range.end].iter().map(|p| (p - a) as u32).collect();
    // Columns become positions in `needed`; both ascending, so row order is kept.
    let columns: Vec<u32> = csr.indices[a..b]
        .iter()
        .map(|c| needed.binary_search(c).expect("referenced column is needed") as u32)
        .collect();
    let k = current.k();
    let span = if side == Side::Users { test.span(&range) } else { 0..0 };
    let test_indptr: Vec<u32> = if span.is_empty() {
        Vec::new()
    } else {
        test.indptr[range.start..=range.end]
            .iter()
            .map(|p| (p - span.start) as u32)
            .collect()
    };
    let bias: &[f32] = if current.bias.is_empty() {
        &[]
    } else {
        &current.bias[range.clone()]
    };
    let fields = BlockFields {
        indptr: Field::U32(&indptr),
        columns: Field::U32(&columns),
        values: Field::F32(&csr.values[a..b]),
        needed: Field::U32(needed),
        factors: Field::F32(&current.flat()[range.start * k..range.end * k]),
        bias: Field::F32(bias),
        test_indptr: Field::U32(&test_indptr),
        test_columns: Field::U32(&test.items[span.clone()]),
        test_values: Field::F32(&test.values[span.clone()]),
    };
    fields.to_chunks(CHUNK_BYTES, |j| {
        let mut m = BlockChunk {
            job_id: job_id.to_owned(),
            side: side_to_pb(side) as i32,
            block: block as u32,
            ..Default::default()
        };
        if j == 0 {
            m.row_start = range.start as u64;
            m.n_rows = range.len() as u32;
            m.nnz = (b - a) as u64;
            m.n_needed = needed.len() as u32;
            m.n_test = span.len() as u64;
        }
        m
    })
}

/// The fixed rows one worker needs, as messages (the rows go from the
/// factor matrix straight into the message buffers).
fn factor_messages(job_id: &str, side: Side, step: u64, rows: &[u32], fixed: &Factors, gram: Option<&[f64]>) -> Vec<FactorChunk> {
    let row = |i: usize| fixed.row(rows[i] as usize);
    let bias: Vec<f32> = if fixed.bias.is_empty() {
        Vec::new()
    } else {
        rows.iter().map(|&r| fixed.bias[r as usize]).collect()
    };
    let fields = FactorFields {
        gram: Field::F64(gram.unwrap_or_default()),
        factors: Field::Rows {
            n_rows: rows.len(),
            k: fixed.k(),
            row: &row,
        },
        bias: Field::F32(&bias),
    };
    fields.to_chunks(CHUNK_BYTES, |j| FactorChunk {
        job_id: job_id.to_owned(),
        side: side_to_pb(side) as i32,
        step,
        n_rows: if j == 0 { rows.len() as u32 } else { 0 },
        ..Default::default()
    })
}

/// A solved block gathered from its chunks (decoded in place once checked).
struct Gathered {
    row_start: u64,
    n_rows: u32,
    arrays: Assembler<SolvedChunk>,
}

struct WorkerHalf {
    blocks: Vec<(u32, Gathered)>,
    bytes_sent: u64,
    bytes_received: u64,
    compute_seconds: f64,
}

fn encoded<M: Message>(msgs: &[M]) -> u64 {
    msgs.iter().map(|m| m.encoded_len() as u64).sum()
}

fn rpc_err(addr: &str, what: &str, s: tonic::Status) -> HalfError {
    use als_proto::fault::{fault_of, Fault};
    match fault_of(&s) {
        Fault::Job { row } => {
            tracing::debug!(worker = %addr, "{what}: {}", s.message());
            // A row's failure reads as the single-process path's; any other names the worker.
            let message = match row {
                Some(_) => s.message().to_string(),
                None => format!("worker {addr}: {}", s.message()),
            };
            HalfError::Job(JobFailed { message, row })
        }
        Fault::Busy => HalfError::Lost(format!("worker {addr}: {}", s.message())),
        Fault::Lost => HalfError::Lost(format!("worker {addr}: {what}: {}", s.message())),
        Fault::Protocol => HalfError::Fatal(anyhow::anyhow!("worker {addr}: {what}: {}", s.message())),
    }
}

async fn push_and_solve(w: WorkerHandle, job_id: String, side: Side, step: u64, msgs: Vec<FactorChunk>) -> Result<WorkerHalf, HalfError> {
    let addr = w.addr.clone();
    let mut client = w.client;
    let bytes_sent = encoded(&msgs);
    client
        .push_factors(tokio_stream::iter(msgs))
        .await
        .map_err(|s| rpc_err(&addr, "pushing factors failed", s))?;
    let req = SolveRequest {
        job_id,
        side: side_to_pb(side) as i32,
        step,
    };
    let mut stream = client.solve(req).await.map_err(|s| rpc_err(&addr, "solve failed", s))?.into_inner();
    let mut out = WorkerHalf {
        blocks: Vec::new(),
        bytes_sent,
        bytes_received: 0,
        compute_seconds: 0.0,
    };
    while let Some(c) = stream.message().await.map_err(|s| rpc_err(&addr, "solve stream broke", s))? {
        out.bytes_received += c.encoded_len() as u64;
        if c.last {
            out.compute_seconds = c.compute_seconds;
            return Ok(out);
        }
        if out.blocks.last().is_none_or(|(b, _)| *b != c.block) {
            let g = Gathered {
                row_start: c.row_start,
                n_rows: c.n_rows,
                arrays: Assembler::unlimited(),
            };
            out.blocks.push((c.block, g));
        }
        let g = &mut out.blocks.last_mut().expect("pushed above").1;
        g.arrays.add(&c).expect("no limits");
    }
    Err(HalfError::Lost(format!("worker {addr}: solve stream ended early")))
}

/// One worker's evaluation, gathered per block.
struct WorkerEval {
    blocks: Vec<(u32, Assembler<EvalResultChunk>)>,
    bytes: u64,
}

async fn run_evaluation(w: WorkerHandle, msgs: Vec<EvalChunk>) -> Result<WorkerEval, HalfError> {
    let addr = w.addr.clone();
    let mut client = w.client;
    let mut out = WorkerEval {
        blocks: Vec::new(),
        bytes: encoded(&msgs),
    };
    let mut stream = client
        .evaluate(tokio_stream::iter(msgs))
        .await
        .map_err(|s| rpc_err(&addr, "evaluation failed", s))?
        .into_inner();
    while let Some(c) = stream.message().await.map_err(|s| rpc_err(&addr, "evaluation stream broke", s))? {
        out.bytes += c.encoded_len() as u64;
        if c.last {
            return Ok(out);
        }
        if out.blocks.last().is_none_or(|(b, _)| *b != c.block) {
            out.blocks.push((c.block, Assembler::unlimited()));
        }
        let g = &mut out.blocks.last_mut().expect("pushed above").1;
        g.add(&c).expect("no limits");
    }
    Err(HalfError::Lost(format!("worker {addr}: evaluation stream ended early")))
}

/// Run `work` while health-checking the worker; a worker that stops answering is lost.
async fn watched<T>(
    w: &WorkerHandle,
    faults: &FaultOptions,
    work: impl std::future::Future<Output = Result<T, HalfError>>,
) -> Result<T, HalfError> {
    let mut health = tonic_health::pb::health_client::HealthClient::new(w.channel.clone());
    let addr = w.addr.clone();
    let watchdog = async {
        loop {
            tokio::time::sleep(faults.heartbeat).await;
            let check = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() });
            match tokio::time::timeout(faults.worker_timeout, check).await {
                Ok(Ok(_)) => {}
                Ok(Err(s)) => return HalfError::Lost(format!("worker {addr}: health check failed: {}", s.message())),
                Err(_) => return HalfError::Lost(format!("worker {addr}: no answer for {:?}", faults.worker_timeout)),
            }
        }
    };
    tokio::select! {
        r = work => r,
        e = watchdog => Err(e),
    }
}

impl<'a> ClusterExecutor<'a> {
    /// Start the job on every worker and ship every block once.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        rt: tokio::runtime::Handle,
        workers: Vec<WorkerHandle>,
        lost: &[Option<String>],
        client_opts: ClientOptions,
        faults: FaultOptions,
        ds: &'a Dataset,
        params: &SolveParams,
        layouts: &Layouts,
        state: &TrainState,
        job_id: String,
    ) -> anyhow::Result<ClusterExecutor<'a>> {
        anyhow::ensure!(!workers.is_empty(), "no workers");
        let routing = Routing::build(&ds.by_user, &ds.by_item, layouts, workers.len());
        let start_req = StartJobRequest {
            protocol_version: PROTOCOL_VERSION,
            job_id: job_id.clone(),
            spec: Some(spec_from_params(params)),
            n_users: ds.n_users() as u64,
            n_items: ds.n_items() as u64,
        };
        let mut exec = ClusterExecutor {
            rt,
            slots: workers
                .into_iter()
                .enumerate()
                .map(|(w, handle)| {
                    // A worker lost in an earlier run starts lost: revived once it answers.
                    let cause = lost.get(w).cloned().flatten();
                    Slot {
                        handle,
                        alive: cause.is_none(),
                        started: false,
                        holds: Default::default(),
                        cause,
                    }
                })
                .collect(),
            home: [routing.users.owner.clone(), routing.items.owner.clone()],
            routing,
            layouts: layouts.clone(),
            job_id,
            start_req,
            client_opts,
            faults,
            ds,
            test: TestByUser::build(ds),
            step: 0,
            workers_lost: 0,
            eval_bytes: 0,
            remote_evaluations: 0,
        };
        let t0 = Instant::now();
        let shipped = match exec.sync_assignment(&state.users, &state.items) {
            Ok(b) => b,
            Err(e) => {
                // Free the workers that did start the job for the next one.
                exec.finish();
                return Err(e);
            }
        };
        tracing::info!(
            workers = exec.slots.len(),
            bytes = shipped,
            seconds = t0.elapsed().as_secs_f64(),
            "ratings shipped to workers"
        );
        Ok(exec)
    }

    /// Tell every live worker the job is over (best effort).
    pub fn finish(&self) {
        self.rt.block_on(async {
            for s in self.slots.iter().filter(|s| s.alive) {
                let mut c = s.handle.client.clone();
                if let Err(st) = c
                    .end_job(EndJobRequest {
                        job_id: self.job_id.clone(),
                    })
                    .await
                {
                    tracing::warn!(worker = %s.handle.addr, "ending the job failed: {}", st.message());
                }
            }
        });
    }

    /// Why each worker is lost, if it is.
    pub fn lost_workers(&self) -> Vec<Option<String>> {
        self.slots.iter().map(|s| if s.alive { None } else { s.cause.clone() }).collect()
    }

    fn lose(&mut self, w: usize, why: &str) {
        if self.slots[w].alive {
            tracing::warn!(worker = %self.slots[w].handle.addr, "worker lost: {why}; moving its blocks");
            self.workers_lost += 1;
        }
        let s = &mut self.slots[w];
        s.alive = false;
        s.started = false;
        s.holds = Default::default();
        s.cause = Some(why.to_string());
    }

    /// Give lost workers a short chance to answer again (restarted on their address).
    fn revive(&mut self) {
        let opts = ClientOptions {
            connect_timeout: self.faults.revive_timeout,
            ..self.client_opts.clone()
        };
        for w in 0..self.slots.len() {
            if self.slots[w].alive {
                continue;
            }
            let addr = self.slots[w].handle.addr.clone();
            if let Ok(h) = self.rt.block_on(connect(&addr, &opts)) {
                tracing::info!(worker = %addr, "worker is back; returning its blocks");
                self.slots[w] = Slot {
                    handle: h,
                    alive: true,
                    started: false,
                    holds: Default::default(),
                    cause: self.slots[w].cause.take(),
                };
            }
        }
    }

    /// Owners for the live workers: a block stays home while its home worker lives, else moves to a survivor.
    fn desired_owners(&self) -> anyhow::Result<[Vec<usize>; 2]> {
        let alive: Vec<usize> = (0..self.slots.len()).filter(|&w| self.slots[w].alive).collect();
        anyhow::ensure!(
            !alive.is_empty(),
            "every worker is gone, so the job cannot go on: {}",
            self.slots
                .iter()
                .map(|s| s.cause.clone().unwrap_or_else(|| format!("worker {}: lost", s.handle.addr)))
                .collect::<Vec<_>>()
                .join("; ")
        );
        Ok(self.home.clone().map(|owners| {
            let mut orphan = 0;
            owners
                .iter()
                .map(|&w| {
                    if self.slots[w].alive {
                        w
                    } else {
                        orphan += 1;
                        alive[(orphan - 1) % alive.len()]
                    }
                })
                .collect()
        }))
    }

    /// Make every live worker hold exactly its blocks (shipping what is missing); returns bytes sent.
    fn sync_assignment(&mut self, users: &Factors, items: &Factors) -> anyhow::Result<u64> {
        let mut total = 0u64;
        loop {
            let owners = self.desired_owners()?;
            let ds = self.ds;
            let (layouts, routing, test) = (&self.layouts, &self.routing, &self.test);
            let mut futs = Vec::new();
            for (w, slot) in self.slots.iter().enumerate().filter(|(_, s)| s.alive) {
                // Blocks are turned into messages one at a time as they are
                // sent, so the coordinator never holds a second copy of the
                // ratings (at 100M ratings that copy was 1.6 GB of peak RSS).
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
                let mut c = slot.handle.client.clone();
                let addr = slot.handle.addr.clone();
                let start = (!slot.started).then(|| self.start_req.clone());
                let job_id = self.job_id.clone();
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
                    for (side, b) in ship {
                        let (csr, current) = match side {
                            Side::Users => (&ds.by_user, users),
                            Side::Items => (&ds.by_item, items),
                        };
                        let msgs = block_messages(&job_id, side, b, csr, layouts, &routing.side(side).needed[b], current, test);
                        bytes += encoded(&msgs);
                        c.assign_block(tokio_stream::iter(msgs))
                            .await
                            .map_err(|s| rpc_err(&addr, "shipping a block failed", s))?;
                    }
                    Ok::<u64, HalfError>(bytes)
                };
                let handle = slot.handle.clone();
                let faults = self.faults.clone();
                futs.push(async move { (w, watched(&handle, &faults, work).await) });
            }
            let results = self.rt.block_on(futures::future::join_all(futs));
            let mut lost_any = false;
            for (w, r) in results {
                match r {
                    Ok(bytes) => {
                        total += bytes;
                        let slot = &mut self.slots[w];
                        slot.started = true;
                        for (held, own) in slot.holds.iter_mut().zip(&owners) {
                            *held = (0..own.len()).filter(|&b| own[b] == w).collect();
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
                    Err(HalfError::Lost(m)) => {
                        self.lose(w, &m);
                        lost_any = true;
                    }
                    Err(HalfError::Job(f)) => return Err(f.into()),
                    Err(HalfError::Fatal(e)) => return Err(e),
                }
            }
            if !lost_any {
                let [u, i] = owners;
                // The unions only change when blocks move (a sort per worker: not every half).
                if self.routing.users.owner != u {
                    self.routing.users.owner = u;
                    self.routing.users.rebuild_unions(&self.layouts.users);
                }
                if self.routing.items.owner != i {
                    self.routing.items.owner = i;
                    self.routing.items.rebuild_unions(&self.layouts.items);
                }
                return Ok(total);
            }
        }
    }

    fn half(
        &mut self,
        side: Side,
        params: &SolveParams,
        fixed: &Factors,
        fixed_gram: Option<&[f64]>,
        target: &mut Factors,
    ) -> anyhow::Result<HalfStepOutput> {
        self.step += 1;
        let step = self.step;
        let t0 = Instant::now();
        let mut sent = 0u64;
        let mut attempts = 0;
        let results = loop {
            attempts += 1;
            if attempts > max_attempts(self.slots.len()) {
                let causes: Vec<String> = self.slots.iter().filter_map(|s| s.cause.clone()).collect();
                anyhow::bail!(
                    "the {} half-step failed {} times in a row, so the job cannot go on; last causes: {}",
                    side.name(),
                    attempts - 1,
                    causes.join("; ")
                );
            }
            if self.slots.iter().any(|s| !s.alive) {
                self.revive();
            }
            sent += match side {
                Side::Users => self.sync_assignment(target, fixed)?,
                Side::Items => self.sync_assignment(fixed, target)?,
            };
            let r = self.routing.side(side);
            let futs: Vec<_> = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.alive)
                .map(|(w, s)| {
                    let msgs = factor_messages(&self.job_id, side.other(), step, &r.union[w], fixed, fixed_gram);
                    let handle = s.handle.clone();
                    let faults = self.faults.clone();
                    let work = push_and_solve(handle.clone(), self.job_id.clone(), side, step, msgs);
                    async move { (w, watched(&handle, &faults, work).await) }
                })
                .collect();
            let results = self.rt.block_on(futures::future::join_all(futs));
            let mut ok = Vec::new();
            let mut lost = false;
            let mut failed = Vec::new();
            for (w, r) in results {
                match r {
                    Ok(h) => ok.push((w, h)),
                    Err(HalfError::Lost(m)) => {
                        self.lose(w, &m);
                        lost = true;
                    }
                    Err(HalfError::Job(f)) => failed.push(f),
                    Err(HalfError::Fatal(e)) => return Err(e),
                }
            }
            // A failed solve ends the run even if a worker was lost meanwhile: the
            // lost worker's rows would fail or pass the same way elsewhere, and the
            // lowest failing row among the answers is the single-process path's.
            if let Some(f) = JobFailed::first(failed) {
                return Err(f.into());
            }
            if !lost {
                break ok;
            }
            // Some results are missing: redo the whole half on the new layout (the
            // survivors restart from the same warm start, so the result is unchanged).
            sent += ok.iter().map(|(_, h)| h.bytes_sent + h.bytes_received).sum::<u64>();
        };
        let r = self.routing.side(side);
        let k = params.factors;
        let n_blocks = self.layouts.side(side).n_blocks();
        let mut grams: Vec<Option<Vec<f64>>> = vec![None; n_blocks];
        let implicit = matches!(params.feedback, Feedback::Implicit { .. });
        let biased = !target.bias.is_empty();
        let mut compute = 0f64;
        let mut seen = vec![false; n_blocks];
        for (w, res) in results {
            sent += res.bytes_sent + res.bytes_received;
            compute = compute.max(res.compute_seconds);
            let addr = &self.slots[w].handle.addr;
            tracing::debug!(
                worker = %addr,
                side = side.name(),
                step,
                blocks = res.blocks.len(),
                compute_seconds = res.compute_seconds,
                bytes_sent = res.bytes_sent,
                bytes_received = res.bytes_received,
                "worker solved its blocks"
            );
            for (b, g) in res.blocks {
                let b = b as usize;
                anyhow::ensure!(
                    b < n_blocks && r.owner[b] == w && !seen[b],
                    "worker {addr}: returned block {b}, which it does not own"
                );
                let range = self.layouts.side(side).range(b);
                anyhow::ensure!(
                    g.row_start as usize == range.start && g.n_rows as usize == range.len(),
                    "worker {addr}: block {b} has the wrong rows"
                );
                seen[b] = true;
                // Straight into the target rows: no intermediate vectors.
                let p = g.arrays.into_pieces();
                let dest = &mut target.flat_mut()[range.start * k..range.end * k];
                pieces_into("factors", &p.factors, dest).with_context(|| format!("worker {addr}: block {b} factors malformed"))?;
                anyhow::ensure!(all_finite(dest), "worker {addr}: block {b} factors malformed");
                if biased {
                    let dest = &mut target.bias[range.clone()];
                    pieces_into("bias", &p.bias, dest).with_context(|| format!("worker {addr}: block {b} bias malformed"))?;
                    anyhow::ensure!(all_finite(dest), "worker {addr}: block {b} bias malformed");
                }
                if implicit {
                    let gr: Vec<f64> = pieces_vec("gram", &p.gram).with_context(|| format!("worker {addr}"))?;
                    anyhow::ensure!(
                        gr.len() == k * k && gr.iter().all(|v| v.is_finite()),
                        "worker {addr}: block {b} gramian malformed"
                    );
                    grams[b] = Some(gr);
                }
            }
        }
        if let Some(missing) = seen.iter().position(|s| !s) {
            anyhow::bail!("block {missing} of {} was not solved", side.name());
        }
        let target_gram = implicit.then(|| sum_grams(k, grams.iter().map(|g| g.as_deref().unwrap_or(&[]))));
        let seconds = t0.elapsed().as_secs_f64();
        Ok(HalfStepOutput {
            target_gram,
            report: HalfStepReport {
                side: Some(side),
                seconds,
                compute_seconds: compute,
                transfer_seconds: (seconds - compute).max(0.0),
                bytes_sent: sent,
                bytes_min: self.routing.bytes_min(side, k),
            },
        })
    }
}

impl ClusterExecutor<'_> {
    /// The evaluation messages for worker `w`: its user blocks with test rows,
    /// their users' factors, and the item factors they need (all items for
    /// top-K lists). `None` when it holds no test rows.
    fn eval_messages(&self, w: usize, cfg: &TrainConfig, users: &Factors, items: &Factors) -> Option<(Vec<u32>, Vec<EvalChunk>)> {
        let layout = &self.layouts.users;
        let blocks: Vec<u32> = (0..layout.n_blocks())
            .filter(|&b| self.routing.users.owner[b] == w && !self.test.span(&layout.range(b)).is_empty())
            .map(|b| b as u32)
            .collect();
        if blocks.is_empty() {
            return None;
        }
        let implicit = cfg.is_implicit();
        let user_rows: Vec<usize> = blocks.iter().flat_map(|&b| layout.range(b as usize)).collect();
        let item_rows: Vec<u32> = if implicit {
            Vec::new()
        } else {
            let mut v: Vec<u32> = blocks
                .iter()
                .flat_map(|&b| self.test.items[self.test.span(&layout.range(b as usize))].iter().copied())
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let user_row = |i: usize| users.row(user_rows[i]);
        let item_row = |i: usize| if implicit { items.row(i) } else { items.row(item_rows[i] as usize) };
        let n_items = if implicit { items.n_rows() } else { item_rows.len() };
        let bias_of = |f: &Factors, rows: &mut dyn Iterator<Item = usize>| -> Vec<f32> {
            if f.bias.is_empty() {
                Vec::new()
            } else {
                rows.map(|r| f.bias[r]).collect()
            }
        };
        let user_bias = bias_of(users, &mut user_rows.iter().copied());
        let item_bias = if implicit {
            bias_of(items, &mut (0..n_items))
        } else {
            bias_of(items, &mut item_rows.iter().map(|&r| r as usize))
        };
        let fields = EvalFields {
            item_rows: Field::U32(&item_rows),
            user_factors: Field::Rows {
                n_rows: user_rows.len(),
                k: users.k(),
                row: &user_row,
            },
            user_bias: Field::F32(&user_bias),
            item_factors: Field::Rows {
                n_rows: n_items,
                k: items.k(),
                row: &item_row,
            },
            item_bias: Field::F32(&item_bias),
        };
        let msgs = fields.to_chunks(CHUNK_BYTES, |j| {
            let mut m = EvalChunk {
                job_id: self.job_id.clone(),
                step: self.step,
                ..Default::default()
            };
            if j == 0 {
                m.blocks = blocks.clone();
                m.top_k = if implicit { cfg.ranking_k as u32 } else { 0 };
                m.min_pos = cfg.min_pos;
                m.all_items = implicit;
                m.n_item_rows = item_rows.len() as u32;
            }
            m
        });
        Some((blocks, msgs))
    }

    /// Evaluate on the workers holding the user blocks (and their test rows).
    /// `Ok(None)` when a worker was lost meanwhile: the caller evaluates
    /// locally, and the next half moves the lost worker's blocks.
    fn evaluate_remote(&mut self, cfg: &TrainConfig, users: &Factors, items: &Factors) -> anyhow::Result<Option<TestMetrics>> {
        let ds = self.ds;
        let implicit = cfg.is_implicit();
        if ds.test.is_empty() || (implicit && cfg.ranking_k == 0) {
            return Ok(None);
        }
        let t0 = Instant::now();
        let mut asked: Vec<(usize, Vec<u32>)> = Vec::new();
        let mut futs = Vec::new();
        for w in 0..self.slots.len() {
            let Some((blocks, msgs)) = self.eval_messages(w, cfg, users, items) else {
                continue;
            };
            if !self.slots[w].alive {
                // Its blocks move at the next half; until then the coordinator evaluates.
                return Ok(None);
            }
            asked.push((w, blocks));
            let handle = self.slots[w].handle.clone();
            let faults = self.faults.clone();
            let work = run_evaluation(handle.clone(), msgs);
            futs.push(async move { (w, watched(&handle, &faults, work).await) });
        }
        let results = self.rt.block_on(futures::future::join_all(futs));
        let mut gathered = Vec::new();
        for (w, r) in results {
            match r {
                Ok(e) => gathered.push((w, e)),
                Err(HalfError::Lost(m)) => {
                    self.lose(w, &m);
                    tracing::warn!("evaluating on the coordinator instead");
                    return Ok(None);
                }
                Err(HalfError::Job(f)) => return Err(f.into()),
                Err(HalfError::Fatal(e)) => return Err(e),
            }
        }
        let layout = &self.layouts.users;
        let k = cfg.ranking_k;
        let mut predictions = vec![f32::NAN; if implicit { 0 } else { ds.test.len() }];
        let mut lists: Vec<Option<Vec<u32>>> = vec![None; if implicit { ds.n_users() } else { 0 }];
        for (w, res) in gathered {
            self.eval_bytes += res.bytes;
            let addr = &self.slots[w].handle.addr;
            let want = &asked.iter().find(|(a, _)| *a == w).expect("asked this worker").1;
            let got: Vec<u32> = res.blocks.iter().map(|(b, _)| *b).collect();
            anyhow::ensure!(&got == want, "worker {addr}: evaluated blocks {got:?}, asked for {want:?}");
            for (b, arrays) in res.blocks {
                let range = layout.range(b as usize);
                let EvalResultPayload {
                    predictions: p,
                    users: us,
                    top,
                } = arrays.finish().with_context(|| format!("worker {addr}"))?;
                if !implicit {
                    let span = self.test.span(&range);
                    anyhow::ensure!(
                        p.len() == span.len() && p.iter().all(|v| v.is_finite()),
                        "worker {addr}: block {b}: {} predictions for {} test rows",
                        p.len(),
                        span.len()
                    );
                    for (j, v) in span.zip(p) {
                        predictions[self.test.position[j]] = v;
                    }
                    continue;
                }
                anyhow::ensure!(top.len() == us.len() * k, "worker {addr}: block {b}: top lists malformed");
                for (&u, list) in us.iter().zip(top.chunks(k)) {
                    let list: Vec<u32> = list.iter().copied().filter(|&i| i != u32::MAX).collect();
                    anyhow::ensure!(
                        range.contains(&(u as usize)) && list.iter().all(|&i| (i as usize) < ds.n_items()),
                        "worker {addr}: block {b}: a top list is out of range"
                    );
                    lists[u as usize] = Some(list);
                }
            }
        }
        let metrics = if implicit {
            let (eval_users, relevant) = eval::relevant_by_user(&ds.test, ds.n_users(), cfg.min_pos);
            let lists = eval_users
                .iter()
                .map(|&u| {
                    lists[u as usize]
                        .take()
                        .with_context(|| format!("no top list came back for user row {u}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            eval::metrics_from_top_lists(cfg, &relevant, &lists)
        } else {
            anyhow::ensure!(predictions.iter().all(|v| v.is_finite()), "some test rows were not evaluated");
            eval::metrics_from_predictions(ds, cfg, &predictions)
        };
        self.remote_evaluations += 1;
        tracing::debug!(
            bytes = self.eval_bytes,
            seconds = t0.elapsed().as_secs_f64(),
            "evaluated on the workers"
        );
        Ok(Some(metrics))
    }
}

impl HalfStepExecutor for ClusterExecutor<'_> {
    fn evaluate(
        &mut self,
        _ds: &Dataset,
        cfg: &TrainConfig,
        _params: &SolveParams,
        users: &Factors,
        items: &Factors,
    ) -> Option<Result<TestMetrics, TrainError>> {
        match self.evaluate_remote(cfg, users, items) {
            Ok(Some(m)) => Some(Ok(m)),
            Ok(None) => None,
            Err(e) => Some(Err(train_error(e))),
        }
    }

    fn half_step(
        &mut self,
        side: Side,
        params: &SolveParams,
        fixed: &Factors,
        fixed_gram: Option<&[f64]>,
        target: &mut Factors,
    ) -> Result<HalfStepOutput, TrainError> {
        self.half(side, params, fixed, fixed_gram, target).map_err(train_error)
    }
}

/// A failed job keeps its own message (as in the single-process path); anything else is the cluster's.
fn train_error(e: anyhow::Error) -> TrainError {
    match e.downcast::<JobFailed>() {
        Ok(f) => TrainError::Job(f.message),
        Err(e) => TrainError::Cluster(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_lists_read_as_ranges() {
        let set = |v: &[usize]| v.iter().copied().collect::<BTreeSet<usize>>();
        assert_eq!(block_list(&set(&[0, 1, 2, 3, 7, 9, 10])), "0-3,7,9-10");
        assert_eq!(block_list(&set(&[5])), "5");
        assert_eq!(block_list(&set(&[])), "none");
    }
}
