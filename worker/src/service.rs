//! The gRPC `Worker` service: decodes, checks and forwards to the [`Job`].

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use als_core::side::Side;
use als_core::solve::{from_lower_triangle, lower_triangle, TermsWanted};
use als_proto::codec::{pieces_vec, Field};
use als_proto::payload::{Assembler, Bulk, EvalLimits, RouteFields, RouteLimits, SolvedFields};
use als_proto::pb::worker_server::Worker;
use als_proto::pb::{
    AssignBlockResponse, BlockChunk, BlockTerms, EndJobRequest, EndJobResponse, EvalChunk, EvalResultChunk, FactorChunk, FetchRowsRequest,
    HandshakeRequest, HandshakeResponse, IngestRequest, IngestResponse, IngestRowsChunk, IngestRowsResponse, LookupItemsRequest,
    LookupItemsResponse, PeerChunk, PeerRowsResponse, PushFactorsResponse, ReleaseBlocksRequest, ReleaseBlocksResponse, RouteChunk,
    SendRowsRequest, SendRowsResponse, SetRoutesResponse, SolveRequest, SolvedChunk, StartJobRequest, StartJobResponse, SubscribeRequest,
    SubscribeResponse, WriteRowsRequest, WriteRowsResponse,
};
use als_proto::spec::{params_from_spec, side_from_pb, side_to_pb, terms_from_pb};
use als_proto::{check_version, CHUNK_BYTES, PROTOCOL_VERSION};
use futures::{Stream, StreamExt};
use tokio::sync::Mutex;
use tonic::{Request, Response, Status, Streaming};

use crate::ingest::adopt::StartFactors;
use crate::ingest::service::{EndedJobs, IngestLimits, IngestSlot};
use crate::job::{Assignment, BlockData, EvalFromPeers, EvalInput, Job, JobError, PeerPlan, PushedRows, RowsFor, SolvedBlock};
use crate::peer_intake::{Intake, MailboxSlot};
use crate::peers::Peers;
use crate::row_files::read_block_rows;
use crate::row_sends::RowSends;
use crate::server::SolveTurns;

/// A Gramian as it travels, its lower triangle row by row (it is
/// symmetric), as the whole k×k matrix; `None` for no bytes.
fn gram_of(bytes: &[u8], k: usize, what: &str) -> Result<Option<Vec<f64>>, Status> {
    let t = pieces_vec::<f64>("gram", &[bytes]).map_err(|e| Status::invalid_argument(e.to_string()))?;
    match t.is_empty() {
        true => Ok(None),
        false => from_lower_triangle(&t, k).map(Some).ok_or_else(|| {
            Status::invalid_argument(format!(
                "{what} has {} values, not the {} of a lower triangle",
                t.len(),
                k * (k + 1) / 2
            ))
        }),
    }
}

/// Capabilities this build offers (checked in the handshake).
pub fn capabilities(peers: &Peers) -> Vec<String> {
    let mut c: Vec<String> = ["explicit", "implicit", "cholesky", "cg", "gramian-reduce", "evaluate"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for b in als_core::linalg::Backend::available() {
        c.push(format!("backend:{}", b.name()));
    }
    if peers.enabled() {
        c.push(als_proto::PEER_EXCHANGE.into());
    }
    c
}

pub struct WorkerService {
    job: Arc<Mutex<Option<Job>>>,
    threads: usize,
    /// A job with no call for this long may be replaced by a new one (its coordinator is gone).
    idle_timeout: Duration,
    /// Bytes one job may make this worker hold.
    memory_budget: u64,
    /// Connections to the peers this worker sends solved rows to.
    peers: Arc<Peers>,
    /// The active job's mailbox, for peers' rows to reach while the job solves.
    mailbox: Arc<MailboxSlot>,
    /// Taken for each solve where workers of this process take turns.
    solve_turns: Option<SolveTurns>,
    /// A job's blocks being built from the input, before the job starts.
    ingest: IngestSlot,
    /// Jobs ended here lately: a share still being read for one is dropped.
    ended: Arc<EndedJobs>,
    /// Inputs this worker may read lie under it; `None`: it reads none.
    input_root: Option<PathBuf>,
    /// Files this worker may write its rows into lie under it; `None`: it writes none.
    output_root: Option<PathBuf>,
}

impl WorkerService {
    pub fn new(threads: usize, idle_timeout: Duration, memory_budget: u64, peers: Peers) -> Self {
        WorkerService {
            job: Arc::new(Mutex::new(None)),
            threads,
            idle_timeout,
            memory_budget,
            peers: Arc::new(peers),
            mailbox: Arc::default(),
            solve_turns: None,
            ingest: IngestSlot::default(),
            ended: Arc::default(),
            input_root: None,
            output_root: None,
        }
    }

    /// Read inputs under `root` when asked to build blocks from them.
    pub fn with_input_root(mut self, root: Option<PathBuf>) -> Self {
        self.input_root = root;
        self
    }

    /// Write rows into files under `root` when asked to (checkpoints).
    pub fn with_output_root(mut self, root: Option<PathBuf>) -> Self {
        self.output_root = root;
        self
    }

    /// Solve only in turn with the other workers of this process.
    pub fn with_solve_turns(mut self, turns: Option<SolveTurns>) -> Self {
        self.solve_turns = turns;
        self
    }

    /// One job at a time: `job_id` is refused while the blocks of another
    /// job, not idle, are being built here.
    async fn refuse_other_ingest(&self, job_id: &str) -> Result<(), Status> {
        let ingest = self.ingest.lock().await;
        let held = ingest.as_ref().map(|i| (i.id.as_str(), i.last_activity));
        refuse_other(held, job_id, self.idle_timeout, "is building the blocks of job")
    }

    /// A call that sends rows to peers is refused where this worker cannot reach them.
    fn reaches_peers(&self) -> Result<(), Status> {
        match self.peers.enabled() {
            true => Ok(()),
            false => Err(Status::invalid_argument("this worker cannot reach peers (no peer TLS settings)")),
        }
    }

    /// Sends of rows to peers for one call of `job_id`, each remote send
    /// given `timeout_ms` (at least a second).
    fn row_sends(&self, job_id: &str, timeout_ms: u32) -> RowSends {
        let timeout = Duration::from_millis(timeout_ms.max(1000) as u64);
        RowSends::new(self.peers.clone(), tokio::runtime::Handle::current(), job_id.to_owned(), timeout)
    }

    /// Places in files, each under the output root: out of this worker's
    /// reach, the refusal tells the coordinator to write or read the file itself.
    fn places(&self, places: &[als_proto::pb::RowsPlace]) -> Result<Vec<crate::row_files::Place>, Status> {
        places
            .iter()
            .map(|p| {
                Ok(crate::row_files::Place {
                    side: side_from_pb(p.side).map_err(Status::invalid_argument)?,
                    part: als_proto::pb::RowsPart::try_from(p.part).map_err(|e| Status::invalid_argument(e.to_string()))?,
                    path: crate::paths::under_root(&p.path, self.output_root.as_deref(), crate::paths::Reach::Output)
                        .map_err(als_proto::fault::refusal)?,
                    at: p.at,
                    end: p.end,
                })
            })
            .collect()
    }

    /// Where peers' rows go, for workers of this process to hand them over directly.
    pub fn mailbox_slot(&self) -> Arc<MailboxSlot> {
        self.mailbox.clone()
    }
}

pub(crate) fn status(e: JobError) -> Status {
    match e {
        JobError::Invalid(m) => Status::invalid_argument(m),
        JobError::NotReady(m) => Status::failed_precondition(m),
        // The same job would not fit another worker with the same budget: end the run, clearly.
        JobError::OverBudget(m) => als_proto::fault::job_failed(m, None),
        JobError::Solve { message, row } => als_proto::fault::job_failed(message, row),
    }
}

/// The active job, if `job_id` names it; touches its activity time.
fn active<'a>(slot: &'a mut Option<Job>, job_id: &str) -> Result<&'a mut Job, Status> {
    match slot {
        Some(j) if j.id != job_id => Err(Status::failed_precondition(format!(
            "call belongs to job '{job_id}', this worker runs job '{}'",
            j.id
        ))),
        Some(j) => {
            j.last_activity = Instant::now();
            Ok(j)
        }
        None => Err(Status::failed_precondition(format!("no job is running (call for job '{job_id}')"))),
    }
}

/// Gathers the arrays of a stream whose first message is `first`, under
/// `limits`; `belongs(chunk)` refuses a later chunk of another job, block
/// or step. Decodes once, at the end.
async fn gather<M: Bulk + Send + 'static>(
    first: &M,
    stream: &mut Streaming<M>,
    limits: &M::Limits,
    belongs: impl Fn(&M) -> bool,
    what: &str,
) -> Result<M::Payload, Status> {
    let acc = gather_pieces(first, stream, limits, belongs, what).await?;
    acc.finish().map_err(|e| Status::invalid_argument(e.to_string()))
}

/// [`gather`], the arrays left undecoded (for decoding in place).
async fn gather_pieces<M: Bulk + Send + 'static>(
    first: &M,
    stream: &mut Streaming<M>,
    limits: &M::Limits,
    belongs: impl Fn(&M) -> bool,
    what: &str,
) -> Result<Assembler<M>, Status> {
    let invalid = |e: &dyn std::fmt::Display| Status::invalid_argument(e.to_string());
    let mut acc = Assembler::<M>::new(limits);
    acc.add(first).map_err(|e| invalid(&e))?;
    while let Some(chunk) = stream.message().await? {
        if !belongs(&chunk) {
            return Err(Status::invalid_argument(format!(
                "a {what} stream must not change its job or position"
            )));
        }
        acc.add(&chunk).map_err(|e| invalid(&e))?;
    }
    Ok(acc)
}

type SolveStream = Pin<Box<dyn Stream<Item = Result<SolvedChunk, Status>> + Send>>;

/// One half on the job: lay out the fixed side from peers' rows if asked,
/// solve (in this process's turn, with `turns`), and hand each solved block
/// to `on_block` with the routes its rows take (none without exchange). The
/// blocks solved.
fn solve_and_send(
    j: &mut Job,
    r: &SolveRequest,
    (side, terms): (Side, Option<TermsWanted>),
    gram: Option<Vec<f64>>,
    turns: Option<&SolveTurns>,
    on_block: impl Fn(&SolvedBlock, Option<&PeerPlan>) + Sync,
) -> Result<usize, JobError> {
    if r.fixed_from_peers {
        j.set_fixed_from_peers(side.other(), r.step, gram)?;
    }
    let plan = match r.exchange {
        true => j.peer_plan(RowsFor::Half(side), r.routes_epoch, r.routes_peers)?,
        false => None,
    };
    // Nothing is done under the turn that could wait on another worker.
    let _turn = turns.map(|t| t.lock().unwrap_or_else(|p| p.into_inner()));
    let n = j.solve(side, r.step, terms, &|b| on_block(b, plan.as_ref()))?;
    if !r.exchange {
        j.forget_spares();
    }
    Ok(n)
}

/// One solved block as its messages (header on the first), with its rows or without.
fn solved_chunks(b: &SolvedBlock, k: usize, rows: bool) -> Vec<SolvedChunk> {
    // Symmetric: its lower triangle is all of it.
    let gram = b.gram.as_deref().map(|g| lower_triangle(g, k)).unwrap_or_default();
    let (factors, bias) = if rows { (b.factors, b.bias) } else { (&[][..], &[][..]) };
    let fields = SolvedFields {
        gram: Field::F64(&gram),
        factors: Field::F32(factors),
        bias: Field::F32(bias),
    };
    fields.to_chunks(CHUNK_BYTES, |j| SolvedChunk {
        block: b.block,
        row_start: if j == 0 { b.row_start } else { 0 },
        n_rows: if j == 0 { b.n_rows as u32 } else { 0 },
        terms: b.terms.filter(|_| j == 0).map(|t| BlockTerms {
            loss: t.loss,
            sq: t.sq,
            reg: t.reg,
        }),
        ..Default::default()
    })
}
type EvalStream = Pin<Box<dyn Stream<Item = Result<EvalResultChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Worker for WorkerService {
    async fn handshake(&self, req: Request<HandshakeRequest>) -> Result<Response<HandshakeResponse>, Status> {
        let r = req.into_inner();
        check_version("coordinator", r.protocol_version).map_err(|e| Status::failed_precondition(e.to_string()))?;
        let caps = capabilities(&self.peers);
        if let Some(missing) = r.required_capabilities.iter().find(|c| !caps.contains(c)) {
            return Err(Status::failed_precondition(format!(
                "this worker lacks capability '{missing}' (has {})",
                caps.join(", ")
            )));
        }
        let active_job_id = match self.job.try_lock() {
            Ok(g) => g.as_ref().map(|j| j.id.clone()).unwrap_or_default(),
            Err(_) => "(busy)".into(),
        };
        tracing::info!(coordinator = %r.coordinator, "handshake");
        Ok(Response::new(HandshakeResponse {
            protocol_version: PROTOCOL_VERSION,
            worker_version: env!("CARGO_PKG_VERSION").into(),
            capabilities: caps,
            threads: self.threads as u32,
            active_job_id,
        }))
    }

    async fn start_job(&self, req: Request<StartJobRequest>) -> Result<Response<StartJobResponse>, Status> {
        let r = req.into_inner();
        check_version("coordinator", r.protocol_version).map_err(|e| Status::failed_precondition(e.to_string()))?;
        let spec = r.spec.ok_or_else(|| Status::invalid_argument("missing solver spec"))?;
        let params = params_from_spec(&spec).map_err(Status::invalid_argument)?;
        self.refuse_other_ingest(&r.job_id).await?;
        let mut slot = self.job.lock().await;
        refuse_other(
            slot.as_ref().map(|j| (j.id.as_str(), j.last_activity)),
            &r.job_id,
            self.idle_timeout,
            "is busy with job",
        )?;
        let mut job = Job::new(r.job_id.clone(), params, r.n_users, r.n_items).map_err(status)?;
        job.memory_budget = self.memory_budget;
        tracing::info!(job = %r.job_id, factors = params.factors, users = r.n_users, items = r.n_items, "job started");
        self.mailbox.set(Some(job.mailbox()));
        *slot = Some(job);
        Ok(Response::new(StartJobResponse {}))
    }

    async fn assign_block(&self, req: Request<Streaming<BlockChunk>>) -> Result<Response<AssignBlockResponse>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty block stream"))?;
        let side = side_from_pb(first.side).map_err(Status::invalid_argument)?;
        if first.ratings_built && (first.nnz, first.n_needed, first.n_test) != (0, 0, 0) {
            return Err(Status::invalid_argument(
                "a block whose ratings were built here carries only its rows' factors (nnz, n_needed and n_test 0)",
            ));
        }
        let rows_here = first.draw.is_some() || !first.rows_in.is_empty();
        if rows_here && !first.ratings_built || first.draw.is_some() && !first.rows_in.is_empty() {
            return Err(Status::invalid_argument(
                "a block's rows are drawn or read here only for a block built here, and in one way",
            ));
        }
        let rows_in = self.places(&first.rows_in)?;
        let (limits, k, biased) = {
            let mut slot = self.job.lock().await;
            let job = active(&mut slot, &first.job_id)?;
            let limits = job
                .block_limits(side, first.n_rows, first.nnz, first.n_needed, first.n_test)
                .map_err(status)?;
            (limits, job.params.factors, job.params.biased())
        };
        let p = gather(
            &first,
            &mut stream,
            &limits,
            |c| c.job_id == first.job_id && c.block == first.block,
            "block",
        )
        .await?;
        let data = match first.ratings_built {
            true => {
                let ratings = [&p.indptr, &p.columns, &p.needed, &p.test_indptr, &p.test_columns];
                if ratings.iter().any(|f| !f.is_empty()) || !p.values.is_empty() || !p.test_values.is_empty() {
                    return Err(Status::invalid_argument("a block whose ratings were built here came with ratings"));
                }
                if rows_here && !(p.factors.is_empty() && p.bias.is_empty()) {
                    return Err(Status::invalid_argument("a block whose rows are taken here came with rows"));
                }
                // Drawn from the ids as the block is taken, as Adopt draws them.
                let start = match first.draw {
                    Some(d) => StartFactors {
                        seed: d.seed,
                        init_std: d.init_std,
                        k,
                        biased,
                    },
                    None => StartFactors::NONE,
                };
                // Read before the block is taken: a refused read leaves it
                // built, for the coordinator to send its rows instead.
                let read = match rows_in.is_empty() {
                    true => None,
                    false => {
                        let (row_start, n_rows) = (first.row_start, first.n_rows as usize);
                        let read = tokio::task::spawn_blocking(move || read_block_rows(&rows_in, side, row_start, n_rows, k, biased))
                            .await
                            .map_err(|e| Status::internal(format!("reading the block's rows stopped: {e}")))?
                            .map_err(|m| als_proto::fault::refusal(Status::failed_precondition(m)))?;
                        Some(read)
                    }
                };
                let built = crate::ingest::service::take_built(&self.ingest, &first.job_id, side, first.block, start).await?;
                if (built.row_start, built.n_rows) != (first.row_start, first.n_rows) {
                    return Err(Status::invalid_argument(format!(
                        "{} block {}: rows {}..+{} sent, {}..+{} built here",
                        side.name(),
                        first.block,
                        first.row_start,
                        first.n_rows,
                        built.row_start,
                        built.n_rows
                    )));
                }
                let (factors, bias) = match (first.draw, read) {
                    (Some(_), _) => (built.factors, built.bias),
                    (None, Some(read)) => read,
                    (None, None) => (p.factors, p.bias),
                };
                BlockData { factors, bias, ..built }
            }
            false => BlockData {
                block: first.block,
                row_start: first.row_start,
                n_rows: first.n_rows,
                nnz: first.nnz,
                n_needed: first.n_needed,
                indptr: p.indptr,
                columns: p.columns,
                values: p.values,
                needed: p.needed,
                factors: p.factors,
                bias: p.bias,
                n_test: first.n_test,
                test_indptr: p.test_indptr,
                test_columns: p.test_columns,
                test_values: p.test_values,
                // Shipped whole: the coordinator holds the ids, and folds any held-out users in.
                ids: Vec::new(),
                held_out: None,
            },
        };
        let mut slot = self.job.lock().await;
        let job = active(&mut slot, &first.job_id)?;
        job.add_block(side, data).map_err(status)?;
        tracing::debug!(
            side = side.name(),
            block = first.block,
            rows = first.n_rows,
            built_here = first.ratings_built,
            "block assigned"
        );
        Ok(Response::new(AssignBlockResponse {}))
    }

    async fn release_blocks(&self, req: Request<ReleaseBlocksRequest>) -> Result<Response<ReleaseBlocksResponse>, Status> {
        let r = req.into_inner();
        let side = side_from_pb(r.side).map_err(Status::invalid_argument)?;
        let mut slot = self.job.lock().await;
        active(&mut slot, &r.job_id)?.release_blocks(side, &r.blocks);
        Ok(Response::new(ReleaseBlocksResponse {}))
    }

    async fn push_factors(&self, req: Request<Streaming<FactorChunk>>) -> Result<Response<PushFactorsResponse>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty factor stream"))?;
        let side = side_from_pb(first.side).map_err(Status::invalid_argument)?;
        let limits = {
            let mut slot = self.job.lock().await;
            let job = active(&mut slot, &first.job_id)?;
            job.fixed_limits(side, first.n_rows, &first.local_blocks).map_err(status)?
        };
        let belongs =
            |c: &FactorChunk| c.job_id == first.job_id && c.step == first.step && c.side == first.side && c.local_blocks.is_empty();
        let p = gather_pieces(&first, &mut stream, &limits, belongs, "factor").await?.into_pieces();
        let gram = pieces_vec::<f64>("gram", &p.gram).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let pushed = PushedRows {
            local_blocks: first.local_blocks.clone(),
            factors: p.factors,
            bias: p.bias,
            gram: (!gram.is_empty()).then_some(gram),
        };
        let mut slot = self.job.lock().await;
        active(&mut slot, &first.job_id)?
            .set_fixed_pushed(side, first.step, pushed)
            .map_err(status)?;
        Ok(Response::new(PushFactorsResponse {}))
    }

    type SolveStream = SolveStream;

    async fn solve(&self, req: Request<SolveRequest>) -> Result<Response<SolveStream>, Status> {
        let r = req.into_inner();
        let side = side_from_pb(r.side).map_err(Status::invalid_argument)?;
        let terms = terms_from_pb(r.terms).map_err(Status::invalid_argument)?;
        let k = {
            let mut slot = self.job.lock().await;
            active(&mut slot, &r.job_id)?.params.factors
        };
        let gram = if r.fixed_from_peers {
            gram_of(&r.gram, k, "a solve's Gramian")?
        } else if r.gram.is_empty() {
            None
        } else {
            return Err(Status::invalid_argument("a solve carries a Gramian only with fixed_from_peers"));
        };
        if r.exchange {
            self.reaches_peers()?;
        }
        let job = self.job.clone();
        let job_id = r.job_id.clone();
        let turns = self.solve_turns.clone();
        let sends = self.row_sends(&job_id, r.peer_timeout_ms);
        // Each block's chunks go out as one batch the moment it is solved, so
        // a block's chunks stay together and the transfer overlaps the solve;
        // so do its rows to the peers that need them.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Result<SolvedChunk, Status>>>();
        // CPU-bound: off the async runtime, onto the rayon pool via a blocking thread.
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let solved = {
                let mut slot = job.blocking_lock();
                active(&mut slot, &job_id).and_then(|j| {
                    let out = solve_and_send(j, &r, (side, terms), gram, turns.as_ref(), |b, plan| {
                        let _ = tx.send(solved_chunks(b, k, r.rows_back).into_iter().map(Ok).collect());
                        if let Some(plan) = plan {
                            sends.send_block(plan, r.step + 1, k, b);
                        }
                    })
                    .map_err(status);
                    j.last_activity = Instant::now();
                    out
                })
            };
            let compute_seconds = t0.elapsed().as_secs_f64();
            // The rows must have reached the peers before the half is answered
            // (the coordinator's barrier covers the exchange); every send is
            // waited for, the first failure told.
            let sent = solved.and_then(|blocks| Ok((blocks, sends.wait()?)));
            // The end of the stream: the lowest failing block's error, or the summary.
            let last = sent.map(|(blocks, peer_bytes)| {
                tracing::debug!(side = side.name(), blocks, compute_seconds, peer_bytes, "half solved");
                SolvedChunk {
                    compute_seconds,
                    peer_bytes,
                    last: true,
                    ..Default::default()
                }
            });
            let _ = tx.send(vec![last]);
        });
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).flat_map(tokio_stream::iter);
        Ok(Response::new(Box::pin(stream) as SolveStream))
    }

    type FetchRowsStream = SolveStream;

    async fn fetch_rows(&self, req: Request<FetchRowsRequest>) -> Result<Response<SolveStream>, Status> {
        let r = req.into_inner();
        let side = side_from_pb(r.side).map_err(Status::invalid_argument)?;
        let mut slot = self.job.lock().await;
        let job = active(&mut slot, &r.job_id)?;
        let k = job.params.factors;
        // Encoded under the lock: the rows are borrowed from the blocks.
        let chunks: Vec<SolvedChunk> = match r.grams {
            false => job.rows_of(side).iter().flat_map(|b| solved_chunks(b, k, true)).collect(),
            true => job
                .rows_of(side)
                .into_iter()
                .flat_map(|b| {
                    let gram = Some(als_core::solve::block_gram(b.factors, k));
                    solved_chunks(&SolvedBlock { gram, ..b }, k, false)
                })
                .collect(),
        };
        let mut msgs: Vec<Result<SolvedChunk, Status>> = chunks.into_iter().map(Ok).collect();
        msgs.push(Ok(SolvedChunk {
            last: true,
            ..Default::default()
        }));
        Ok(Response::new(Box::pin(tokio_stream::iter(msgs)) as SolveStream))
    }

    async fn write_rows(&self, req: Request<WriteRowsRequest>) -> Result<Response<WriteRowsResponse>, Status> {
        use crate::row_files::Place;
        let r = req.into_inner();
        Place::check_all(&r).map_err(Status::invalid_argument)?;
        let places = self.places(&r.places)?;
        let mut slot = self.job.clone().lock_owned().await;
        active(&mut slot, &r.job_id)?;
        // Off the runtime: the rows are written from the blocks, under the job's lock.
        let written = tokio::task::spawn_blocking(move || match slot.as_ref() {
            Some(job) => crate::row_files::write_rows(job, &places, &r),
            None => Err("the job ended".into()),
        })
        .await
        .map_err(|e| Status::internal(format!("writing the rows stopped: {e}")))?;
        written
            .map(Response::new)
            .map_err(|m| als_proto::fault::refusal(Status::failed_precondition(m)))
    }

    async fn set_routes(&self, req: Request<Streaming<RouteChunk>>) -> Result<Response<SetRoutesResponse>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty route stream"))?;
        let side = side_from_pb(first.side).map_err(Status::invalid_argument)?;
        let to = RowsFor::new(side, first.evaluation).map_err(status)?;
        let limits = {
            let mut slot = self.job.lock().await;
            let job = active(&mut slot, &first.job_id)?;
            RouteLimits {
                rows: job.route_limit(side, first.n_rows).map_err(status)?,
            }
        };
        let belongs = |c: &RouteChunk| {
            c.job_id == first.job_id
                && c.side == first.side
                && c.epoch == first.epoch
                && c.evaluation == first.evaluation
                && c.peer.is_empty()
        };
        let p = gather(&first, &mut stream, &limits, belongs, "route").await?;
        if p.rows.len() != first.n_rows as usize {
            return Err(Status::invalid_argument(format!(
                "{} route rows sent, header says {}",
                p.rows.len(),
                first.n_rows
            )));
        }
        let mut slot = self.job.lock().await;
        active(&mut slot, &first.job_id)?
            .set_route(to, first.epoch, first.peer.clone(), p.rows)
            .map_err(status)?;
        Ok(Response::new(SetRoutesResponse {}))
    }

    async fn subscribe(&self, req: Request<SubscribeRequest>) -> Result<Response<SubscribeResponse>, Status> {
        let r = req.into_inner();
        self.reaches_peers()?;
        let a = Assignment {
            epoch: r.epoch,
            owners: [r.user_owners, r.item_owners],
            starts: [r.user_starts, r.item_starts],
            workers: r.workers,
            me: r.you,
        };
        let subscriptions = {
            let mut slot = self.job.lock().await;
            let job = active(&mut slot, &r.job_id)?;
            job.last_activity = Instant::now();
            job.subscriptions(&a).map_err(status)?
        };
        // The routing minimum's share of this worker, for the coordinator's
        // report: the rows of `fixed` it asked for, the fixed side of the other's half.
        let asked = |fixed: Side| -> u64 {
            let to = RowsFor::Half(fixed);
            subscriptions
                .iter()
                .flat_map(|(_, lists)| lists.iter().filter(|(t, _)| *t == to).map(|(_, rows)| rows.len() as u64))
                .sum()
        };
        let (rows_for_user_half, rows_for_item_half) = (asked(Side::Items), asked(Side::Users));
        // Outside the job's lock: the peers store this worker's routes while
        // this worker stores theirs.
        let me = a.workers[a.me as usize].clone();
        let timeout = Duration::from_millis(r.peer_timeout_ms.max(1000) as u64);
        let sends = subscriptions.into_iter().map(|(peer, lists)| {
            let peers = self.peers.clone();
            let chunks: Vec<Vec<RouteChunk>> = lists
                .iter()
                .map(|(to, rows)| {
                    RouteFields { rows: Field::U32(rows) }.to_chunks(CHUNK_BYTES, |j| RouteChunk {
                        job_id: r.job_id.clone(),
                        side: side_to_pb(to.side()) as i32,
                        epoch: a.epoch,
                        peer: if j == 0 { me.clone() } else { String::new() },
                        n_rows: if j == 0 { rows.len() as u32 } else { 0 },
                        evaluation: to.is_evaluation(),
                        ..Default::default()
                    })
                })
                .collect();
            async move {
                let mut bytes = 0;
                for c in chunks {
                    bytes += peers.set_routes(&peer, c, timeout).await?;
                }
                Ok::<u64, Status>(bytes)
            }
        });
        let mut peer_bytes = 0;
        for sent in futures::future::join_all(sends).await {
            peer_bytes += sent?;
        }
        tracing::debug!(epoch = a.epoch, peer_bytes, "routes asked of the peers");
        Ok(Response::new(SubscribeResponse {
            peer_bytes,
            rows_for_user_half,
            rows_for_item_half,
        }))
    }

    async fn peer_rows(&self, req: Request<Streaming<PeerChunk>>) -> Result<Response<PeerRowsResponse>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty peer stream"))?;
        // Into the job's mailbox, not the job: the job is held by the solve this worker may be running.
        let intake = Intake::open(&self.mailbox, first)?;
        let p = gather_pieces(intake.first(), &mut stream, &intake.limits, |c| intake.belongs(c), "peer").await?;
        intake.finish(p.into_pieces())?;
        Ok(Response::new(PeerRowsResponse {}))
    }

    async fn ingest(&self, req: Request<IngestRequest>) -> Result<Response<IngestResponse>, Status> {
        let req = req.into_inner();
        // Only a new ingest asks (the job's lock may be held by a solve).
        if let Some(als_proto::pb::ingest_request::Step::ReadShare(_)) = &req.step {
            let slot = self.job.lock().await;
            refuse_other(
                slot.as_ref().map(|j| (j.id.as_str(), j.last_activity)),
                &req.job_id,
                self.idle_timeout,
                "is busy with job",
            )?;
            drop(slot);
            self.refuse_other_ingest(&req.job_id).await?;
        }
        let limits = IngestLimits {
            budget: self.memory_budget,
            input_root: self.input_root.as_deref(),
            idle: self.idle_timeout,
        };
        if let Some(als_proto::pb::ingest_request::Step::Adopt(a)) = &req.step {
            let resp = crate::ingest::service::adopt(&self.ingest, &self.job, &req.job_id, a).await?;
            return Ok(Response::new(resp));
        }
        let resp = crate::ingest::service::step(&self.ingest, &self.ended, &self.peers, limits, req).await?;
        Ok(Response::new(resp))
    }

    async fn ingest_rows(&self, req: Request<Streaming<IngestRowsChunk>>) -> Result<Response<IngestRowsResponse>, Status> {
        crate::ingest::service::receive_rows(&self.ingest, req.into_inner()).await?;
        Ok(Response::new(IngestRowsResponse {}))
    }

    async fn lookup_items(&self, req: Request<LookupItemsRequest>) -> Result<Response<LookupItemsResponse>, Status> {
        Ok(Response::new(
            crate::ingest::service::look_up(&self.ingest, req.into_inner()).await?,
        ))
    }

    async fn send_rows(&self, req: Request<SendRowsRequest>) -> Result<Response<SendRowsResponse>, Status> {
        let r = req.into_inner();
        let side = side_from_pb(r.side).map_err(Status::invalid_argument)?;
        let to = RowsFor::new(side, r.evaluation).map_err(status)?;
        self.reaches_peers()?;
        let job = self.job.clone();
        let sends = self.row_sends(&r.job_id, r.peer_timeout_ms);
        // Off the runtime: the hand-overs copy on this thread, and the wait blocks it.
        let peer_bytes = tokio::task::spawn_blocking(move || {
            {
                let mut slot = job.blocking_lock();
                let j = active(&mut slot, &r.job_id)?;
                let k = j.params.factors;
                if let Some(plan) = j.peer_plan(to, r.routes_epoch, r.routes_peers).map_err(status)? {
                    for b in j.rows_of(side) {
                        sends.send_block(&plan, r.step, k, &b);
                    }
                }
                j.last_activity = Instant::now();
            }
            sends.wait()
        })
        .await
        .map_err(|e| Status::internal(format!("sending rows failed: {e}")))??;
        tracing::debug!(
            side = side.name(),
            step = r.step,
            evaluation = r.evaluation,
            peer_bytes,
            "rows sent to peers"
        );
        Ok(Response::new(SendRowsResponse { peer_bytes }))
    }

    type EvaluateStream = EvalStream;

    async fn evaluate(&self, req: Request<Streaming<EvalChunk>>) -> Result<Response<EvalStream>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty evaluation stream"))?;
        let limits = match first.from_peers {
            // Nothing but the header: the factors are here already.
            true => EvalLimits::default(),
            false => {
                let mut slot = self.job.lock().await;
                let job = active(&mut slot, &first.job_id)?;
                job.eval_limits(&first.blocks, first.all_items, first.n_item_rows, first.top_k)
                    .map_err(status)?
            }
        };
        let belongs = |c: &EvalChunk| c.job_id == first.job_id && c.step == first.step;
        let p = gather(&first, &mut stream, &limits, belongs, "evaluation").await?;
        let clip = first.clip.then_some((first.clip_min, first.clip_max));
        if (first.held_out || !first.item_gram.is_empty()) && !first.from_peers {
            return Err(Status::invalid_argument("held-out users are scored from peers' rows only"));
        }
        let item_gram = match first.from_peers {
            true => {
                let mut slot = self.job.lock().await;
                let k = active(&mut slot, &first.job_id)?.params.factors;
                gram_of(&first.item_gram, k, "an evaluation's item Gramian")?
            }
            false => None,
        };
        let from_peers = first.from_peers.then(|| EvalFromPeers {
            step: first.step,
            blocks: first.blocks.clone(),
            top_k: first.top_k,
            min_pos: first.min_pos,
            all_items: first.all_items,
            clip,
            ranking_k: first.ranking_k,
            held_out: first.held_out,
            item_gram,
        });
        let input = EvalInput {
            step: first.step,
            blocks: first.blocks.clone(),
            top_k: first.top_k,
            min_pos: first.min_pos,
            clip,
            ranking_k: first.ranking_k,
            all_items: first.all_items,
            item_rows: p.item_rows,
            user_factors: p.user_factors,
            user_bias: p.user_bias,
            item_factors: p.item_factors,
            item_bias: p.item_bias,
        };
        if input.item_rows.len() != first.n_item_rows as usize {
            return Err(Status::invalid_argument(format!(
                "{} item rows sent, header says {}",
                input.item_rows.len(),
                first.n_item_rows
            )));
        }
        let job = self.job.clone();
        let job_id = first.job_id.clone();
        let t0 = Instant::now();
        let evaluated = tokio::task::spawn_blocking(move || {
            let mut slot = job.blocking_lock();
            let j = active(&mut slot, &job_id)?;
            match &from_peers {
                Some(h) => j.evaluate_from_peers(h),
                None => j.evaluate(&input),
            }
            .map_err(status)
        })
        .await
        .map_err(|e| Status::internal(format!("evaluation task failed: {e}")))??;
        let compute_seconds = t0.elapsed().as_secs_f64();
        tracing::debug!(blocks = evaluated.len(), compute_seconds, "test rows evaluated");
        let mut msgs = Vec::new();
        let implicit = first.top_k > 0;
        for r in evaluated {
            msgs.push(EvalResultChunk {
                block: r.block,
                sums: Some(r.sums.to_pb(implicit)),
                ..Default::default()
            });
        }
        msgs.push(EvalResultChunk {
            compute_seconds,
            last: true,
            ..Default::default()
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(msgs.into_iter().map(Ok))) as EvalStream))
    }

    async fn end_job(&self, req: Request<EndJobRequest>) -> Result<Response<EndJobResponse>, Status> {
        let r = req.into_inner();
        self.ended.end(&r.job_id);
        // Blocks being built for the job go with it.
        let built = {
            let mut ingest = self.ingest.lock().await;
            let ours = ingest.as_ref().is_some_and(|i| i.id == r.job_id);
            if ours {
                *ingest = None;
            }
            ours
        };
        let mut slot = self.job.lock().await;
        if !built || slot.as_ref().is_some_and(|j| j.id == r.job_id) {
            active(&mut slot, &r.job_id)?;
            *slot = None;
            self.mailbox.set(None);
        }
        tracing::info!(job = %r.job_id, "job ended");
        Ok(Response::new(EndJobResponse {}))
    }
}

/// One job at a time: `job_id` is refused while `held`, another job's (id,
/// last activity), has been active within `idle`.
pub(crate) fn refuse_other(held: Option<(&str, Instant)>, job_id: &str, idle: Duration, doing: &str) -> Result<(), Status> {
    match held {
        Some((id, last)) if id != job_id && last.elapsed() < idle => Err(als_proto::fault::busy(format!("worker {doing} '{id}'"))),
        _ => Ok(()),
    }
}
