//! The gRPC `Worker` service: decodes, checks and forwards to the [`Job`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use als_proto::codec::Bytes;
use als_proto::codec::{chunk_fields, chunk_messages, f32_bytes, f64_bytes, pieces_vec, u32_bytes, Field};
use als_proto::pb::worker_server::Worker;
use als_proto::pb::{
    AssignBlockResponse, BlockChunk, EndJobRequest, EndJobResponse, EvalChunk, EvalResultChunk, FactorChunk, HandshakeRequest,
    HandshakeResponse, PushFactorsResponse, ReleaseBlocksRequest, ReleaseBlocksResponse, SolveRequest, SolvedChunk, StartJobRequest,
    StartJobResponse,
};
use als_proto::spec::{params_from_spec, side_from_pb};
use als_proto::{CHUNK_BYTES, PROTOCOL_VERSION};
use futures::{Stream, StreamExt};
use tokio::sync::Mutex;
use tonic::{Request, Response, Status, Streaming};

use crate::job::{BlockData, EvalInput, FixedFactors, Job, JobError, SolvedBlock};

/// Capabilities this build offers (checked in the handshake).
pub fn capabilities() -> Vec<String> {
    let mut c: Vec<String> = ["explicit", "implicit", "cholesky", "cg", "gramian-reduce", "evaluate"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for b in als_core::linalg::Backend::available() {
        c.push(format!("backend:{}", b.name()));
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
}

impl WorkerService {
    pub fn new(threads: usize, idle_timeout: Duration, memory_budget: u64) -> Self {
        WorkerService {
            job: Arc::new(Mutex::new(None)),
            threads,
            idle_timeout,
            memory_budget,
        }
    }
}

fn status(e: JobError) -> Status {
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

/// Appends byte fields across chunks, refusing anything beyond the declared sizes.
struct Accumulator {
    names: &'static [&'static str],
    limits: Vec<u64>,
    /// Per field, the received pieces (slices of the receive buffers, not copies).
    bufs: Vec<Vec<Bytes>>,
    held: Vec<u64>,
}

impl Accumulator {
    fn new(names: &'static [&'static str], limits: &[u64]) -> Self {
        Accumulator {
            names,
            limits: limits.to_vec(),
            bufs: vec![Vec::new(); names.len()],
            held: vec![0; names.len()],
        }
    }

    fn add(&mut self, i: usize, data: &Bytes) -> Result<(), Status> {
        if self.held[i] + data.len() as u64 > self.limits[i] {
            return Err(Status::invalid_argument(format!(
                "field {} exceeds its declared size of {} bytes",
                self.names[i], self.limits[i]
            )));
        }
        if !data.is_empty() {
            self.held[i] += data.len() as u64;
            self.bufs[i].push(data.clone());
        }
        Ok(())
    }
}

type SolveStream = Pin<Box<dyn Stream<Item = Result<SolvedChunk, Status>> + Send>>;

/// One solved block as its messages (header on the first).
fn solved_chunks(b: &SolvedBlock) -> Vec<SolvedChunk> {
    let gram = b.gram.as_deref().map(f64_bytes).unwrap_or_default();
    chunk_fields(
        &[Field::Bytes(&gram), Field::F32(b.factors), Field::F32(b.bias)],
        CHUNK_BYTES,
        |j| SolvedChunk {
            block: b.block,
            row_start: if j == 0 { b.row_start } else { 0 },
            n_rows: if j == 0 { b.n_rows as u32 } else { 0 },
            ..Default::default()
        },
        |m, f| match f {
            0 => &mut m.gram,
            1 => &mut m.factors,
            _ => &mut m.bias,
        },
    )
}
type EvalStream = Pin<Box<dyn Stream<Item = Result<EvalResultChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Worker for WorkerService {
    async fn handshake(&self, req: Request<HandshakeRequest>) -> Result<Response<HandshakeResponse>, Status> {
        let r = req.into_inner();
        if r.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version mismatch: coordinator speaks {}, this worker speaks {PROTOCOL_VERSION}",
                r.protocol_version
            )));
        }
        let caps = capabilities();
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
        if r.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version mismatch: coordinator speaks {}, this worker speaks {PROTOCOL_VERSION}",
                r.protocol_version
            )));
        }
        let spec = r.spec.ok_or_else(|| Status::invalid_argument("missing solver spec"))?;
        let params = params_from_spec(&spec).map_err(Status::invalid_argument)?;
        let mut slot = self.job.lock().await;
        if let Some(j) = slot.as_ref() {
            if j.id != r.job_id && j.last_activity.elapsed() < self.idle_timeout {
                return Err(als_proto::fault::busy(format!("worker is busy with job '{}'", j.id)));
            }
        }
        let mut job = Job::new(r.job_id.clone(), params, r.n_users, r.n_items).map_err(status)?;
        job.memory_budget = self.memory_budget;
        tracing::info!(job = %r.job_id, factors = params.factors, users = r.n_users, items = r.n_items, "job started");
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
        let limits = {
            let mut slot = self.job.lock().await;
            let job = active(&mut slot, &first.job_id)?;
            job.block_limits(side, first.n_rows, first.nnz, first.n_needed, first.n_test)
                .map_err(status)?
        };
        const NAMES: &[&str] = &[
            "indptr",
            "columns",
            "values",
            "needed",
            "factors",
            "bias",
            "test_indptr",
            "test_columns",
            "test_values",
        ];
        let mut acc = Accumulator::new(NAMES, &limits);
        let mut chunk = first.clone();
        loop {
            if chunk.job_id != first.job_id || chunk.block != first.block {
                return Err(Status::invalid_argument("a block stream must carry one job and one block"));
            }
            for (i, f) in [
                &chunk.indptr,
                &chunk.columns,
                &chunk.values,
                &chunk.needed,
                &chunk.factors,
                &chunk.bias,
                &chunk.test_indptr,
                &chunk.test_columns,
                &chunk.test_values,
            ]
            .into_iter()
            .enumerate()
            {
                acc.add(i, f)?;
            }
            match stream.message().await? {
                Some(c) => chunk = c,
                None => break,
            }
        }
        let b = &acc.bufs;
        let inv = |e: als_proto::codec::CodecError| Status::invalid_argument(e.to_string());
        let data = BlockData {
            block: first.block,
            row_start: first.row_start,
            n_rows: first.n_rows,
            nnz: first.nnz,
            n_needed: first.n_needed,
            indptr: pieces_vec::<u32>("indptr", &b[0]).map_err(|e| Status::invalid_argument(e.to_string()))?,
            columns: pieces_vec::<u32>("columns", &b[1]).map_err(|e| Status::invalid_argument(e.to_string()))?,
            values: pieces_vec::<f32>("values", &b[2]).map_err(|e| Status::invalid_argument(e.to_string()))?,
            needed: pieces_vec::<u32>("needed", &b[3]).map_err(|e| Status::invalid_argument(e.to_string()))?,
            factors: pieces_vec::<f32>("factors", &b[4]).map_err(|e| Status::invalid_argument(e.to_string()))?,
            bias: pieces_vec::<f32>("bias", &b[5]).map_err(|e| Status::invalid_argument(e.to_string()))?,
            n_test: first.n_test,
            test_indptr: pieces_vec::<u32>("test_indptr", &b[6]).map_err(inv)?,
            test_columns: pieces_vec::<u32>("test_columns", &b[7]).map_err(inv)?,
            test_values: pieces_vec::<f32>("test_values", &b[8]).map_err(inv)?,
        };
        let mut slot = self.job.lock().await;
        let job = active(&mut slot, &first.job_id)?;
        job.add_block(side, data).map_err(status)?;
        tracing::debug!(
            side = side.name(),
            block = first.block,
            rows = first.n_rows,
            ratings = first.nnz,
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
            job.fixed_limits(side, first.n_rows).map_err(status)?
        };
        const NAMES: &[&str] = &["gram", "factors", "bias"];
        let mut acc = Accumulator::new(NAMES, &limits);
        for (i, f) in [&first.gram, &first.factors, &first.bias].into_iter().enumerate() {
            acc.add(i, f)?;
        }
        while let Some(chunk) = stream.message().await? {
            if chunk.job_id != first.job_id || chunk.step != first.step || chunk.side != first.side {
                return Err(Status::invalid_argument("a factor stream must carry one job, side and step"));
            }
            for (i, f) in [&chunk.gram, &chunk.factors, &chunk.bias].into_iter().enumerate() {
                acc.add(i, f)?;
            }
        }
        let inv = |e: als_proto::codec::CodecError| Status::invalid_argument(e.to_string());
        let gram = if acc.bufs[0].is_empty() {
            None
        } else {
            Some(pieces_vec::<f64>("gram", &acc.bufs[0]).map_err(inv)?)
        };
        let fixed = FixedFactors {
            side,
            step: first.step,
            factors: pieces_vec::<f32>("factors", &acc.bufs[1]).map_err(inv)?,
            bias: pieces_vec::<f32>("bias", &acc.bufs[2]).map_err(inv)?,
            gram,
        };
        let mut slot = self.job.lock().await;
        active(&mut slot, &first.job_id)?.set_fixed(fixed).map_err(status)?;
        Ok(Response::new(PushFactorsResponse {}))
    }

    type SolveStream = SolveStream;

    async fn solve(&self, req: Request<SolveRequest>) -> Result<Response<SolveStream>, Status> {
        let r = req.into_inner();
        let side = side_from_pb(r.side).map_err(Status::invalid_argument)?;
        {
            let mut slot = self.job.lock().await;
            active(&mut slot, &r.job_id)?;
        }
        let job = self.job.clone();
        let job_id = r.job_id.clone();
        // Each block's chunks go out as one batch the moment it is solved, so
        // a block's chunks stay together and the transfer overlaps the solve.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Result<SolvedChunk, Status>>>();
        // CPU-bound: off the async runtime, onto the rayon pool via a blocking thread.
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let send_block = |b: &SolvedBlock| {
                let _ = tx.send(solved_chunks(b).into_iter().map(Ok).collect());
            };
            let solved = {
                let mut slot = job.blocking_lock();
                active(&mut slot, &job_id).and_then(|j| {
                    let out = j.solve(side, r.step, &send_block).map_err(status);
                    j.last_activity = Instant::now();
                    out
                })
            };
            let compute_seconds = t0.elapsed().as_secs_f64();
            // The end of the stream: the lowest failing block's error, or the summary.
            let last = solved.map(|blocks| {
                tracing::debug!(side = side.name(), blocks, compute_seconds, "half solved");
                SolvedChunk {
                    compute_seconds,
                    last: true,
                    ..Default::default()
                }
            });
            let _ = tx.send(vec![last]);
        });
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).flat_map(tokio_stream::iter);
        Ok(Response::new(Box::pin(stream) as SolveStream))
    }

    type EvaluateStream = EvalStream;

    async fn evaluate(&self, req: Request<Streaming<EvalChunk>>) -> Result<Response<EvalStream>, Status> {
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty evaluation stream"))?;
        let limits = {
            let mut slot = self.job.lock().await;
            let job = active(&mut slot, &first.job_id)?;
            job.eval_limits(&first.blocks, first.all_items, first.n_item_rows, first.top_k)
                .map_err(status)?
        };
        const NAMES: &[&str] = &["item_rows", "user_factors", "user_bias", "item_factors", "item_bias"];
        let mut acc = Accumulator::new(NAMES, &limits);
        let mut chunk = first.clone();
        loop {
            if chunk.job_id != first.job_id || chunk.step != first.step {
                return Err(Status::invalid_argument("an evaluation stream must carry one job and step"));
            }
            for (i, f) in [
                &chunk.item_rows,
                &chunk.user_factors,
                &chunk.user_bias,
                &chunk.item_factors,
                &chunk.item_bias,
            ]
            .into_iter()
            .enumerate()
            {
                acc.add(i, f)?;
            }
            match stream.message().await? {
                Some(c) => chunk = c,
                None => break,
            }
        }
        let inv = |e: als_proto::codec::CodecError| Status::invalid_argument(e.to_string());
        let b = &acc.bufs;
        let input = EvalInput {
            step: first.step,
            blocks: first.blocks.clone(),
            top_k: first.top_k,
            min_pos: first.min_pos,
            all_items: first.all_items,
            item_rows: pieces_vec::<u32>("item_rows", &b[0]).map_err(inv)?,
            user_factors: pieces_vec::<f32>("user_factors", &b[1]).map_err(inv)?,
            user_bias: pieces_vec::<f32>("user_bias", &b[2]).map_err(inv)?,
            item_factors: pieces_vec::<f32>("item_factors", &b[3]).map_err(inv)?,
            item_bias: pieces_vec::<f32>("item_bias", &b[4]).map_err(inv)?,
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
            j.evaluate(&input).map_err(status)
        })
        .await
        .map_err(|e| Status::internal(format!("evaluation task failed: {e}")))??;
        let compute_seconds = t0.elapsed().as_secs_f64();
        tracing::debug!(blocks = evaluated.len(), compute_seconds, "test rows evaluated");
        let mut msgs = Vec::new();
        for r in evaluated {
            let (pred, users, top) = (f32_bytes(&r.predictions), u32_bytes(&r.users), u32_bytes(&r.top));
            msgs.extend(chunk_messages(
                &[&pred, &users, &top],
                CHUNK_BYTES,
                |_| EvalResultChunk {
                    block: r.block,
                    ..Default::default()
                },
                |m, f| match f {
                    0 => &mut m.predictions,
                    1 => &mut m.users,
                    _ => &mut m.top,
                },
            ));
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
        let mut slot = self.job.lock().await;
        active(&mut slot, &r.job_id)?;
        *slot = None;
        tracing::info!(job = %r.job_id, "job ended");
        Ok(Response::new(EndJobResponse {}))
    }
}
