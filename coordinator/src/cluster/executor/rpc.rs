//! The calls of a half (push the fixed rows, solve, gather) and of an
//! evaluation, and what their failures mean: a lost worker, a failed job,
//! or a protocol breach.

use als_core::blocks::BlockLayout;
use als_core::side::Side;
use als_core::solve::{from_lower_triangle, sum_in_order};
use als_proto::codec::pieces_vec;
use als_proto::encoded_bytes;
use als_proto::payload::Assembler;
use als_proto::pb::{
    BlockTerms, EvalChunk, EvalSums, FactorChunk, FetchRowsRequest, SendRowsRequest, SolveRequest, SolvedChunk, SubscribeRequest,
};
use anyhow::Context;
use prost::Message;

use crate::cluster::client::WorkerHandle;

#[derive(Debug)]
pub(super) enum HalfError {
    /// The worker is gone, unreachable or busy: its blocks move.
    Lost(String),
    /// The work failed on the worker; anywhere else it fails the same way.
    Job(JobFailed),
    /// The worker solved, but could not send its rows to a peer: redo the
    /// half with the coordinator pushing the fixed rows.
    Peer(String),
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
    pub(super) fn first(failures: Vec<JobFailed>) -> Option<JobFailed> {
        failures.into_iter().min_by_key(|f| f.row.unwrap_or(u64::MAX))
    }
}

/// A solved block gathered from its chunks (decoded in place once checked).
pub(super) struct Gathered {
    pub(super) row_start: u64,
    pub(super) n_rows: u32,
    /// The block's objective terms (from its header), when asked.
    pub(super) terms: Option<BlockTerms>,
    pub(super) arrays: Assembler<SolvedChunk>,
}

impl Gathered {
    /// That block `b` of `side` came from `w`, its owner by `owner`, once
    /// (`seen`, marked here), and with its rows of `layout`: their range.
    pub(super) fn check_place(
        &self,
        addr: &str,
        side: Side,
        (b, w): (usize, usize),
        owner: &[usize],
        seen: &mut [bool],
        layout: &BlockLayout,
    ) -> anyhow::Result<std::ops::Range<usize>> {
        anyhow::ensure!(
            b < seen.len() && owner[b] == w && !seen[b],
            "worker {addr}: sent {} block {b}, which it does not own",
            side.name()
        );
        let range = layout.range(b);
        anyhow::ensure!(
            self.row_start as usize == range.start && self.n_rows as usize == range.len(),
            "worker {addr}: {} block {b} has the wrong rows",
            side.name()
        );
        seen[b] = true;
        Ok(range)
    }
}

/// Block `b`'s Gramian as a worker sends it (its lower triangle), checked:
/// k·(k+1)/2 finite values.
pub(super) fn checked_lower_gram(addr: &str, b: usize, pieces: &[impl AsRef<[u8]>], k: usize) -> anyhow::Result<Vec<f64>> {
    let lower: Vec<f64> = pieces_vec("gram", pieces).with_context(|| format!("worker {addr}"))?;
    anyhow::ensure!(
        lower.len() == k * (k + 1) / 2 && lower.iter().all(|v| v.is_finite()),
        "worker {addr}: block {b} gramian malformed"
    );
    Ok(lower)
}

/// The blocks' lower triangles summed in block order, then made whole once:
/// entry by entry the sums of the whole matrices, so the bits of
/// `gram_by_blocks`.
pub(super) fn sum_lower_grams<'a>(k: usize, lowers: impl Iterator<Item = &'a [f64]>) -> Vec<f64> {
    let lower = sum_in_order(k * (k + 1) / 2, lowers);
    from_lower_triangle(&lower, k).expect("lengths checked")
}

pub(super) struct WorkerHalf {
    pub(super) blocks: Vec<(u32, Gathered)>,
    pub(super) bytes_sent: u64,
    pub(super) bytes_received: u64,
    /// Bytes the worker sent its peers after solving.
    pub(super) bytes_peer: u64,
    pub(super) compute_seconds: f64,
}

pub(super) fn rpc_err(addr: &str, what: &str, s: tonic::Status) -> HalfError {
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
        Fault::Peer => HalfError::Peer(format!("worker {addr}: {what}: {}", s.message())),
        Fault::Lost => HalfError::Lost(format!("worker {addr}: {what}: {}", s.message())),
        // Only the reading of the input (`Ingest`) answers so; anywhere else it is a refusal.
        Fault::Protocol | Fault::InputOutOfReach => HalfError::Fatal(anyhow::anyhow!("worker {addr}: {what}: {}", s.message())),
    }
}

/// Push the fixed rows (unless peers sent them: `msgs` is `None`), then
/// solve and gather. Every worker is called at once; workers that share
/// one process's cores (`--local`) take turns at the solve themselves
/// ([`als_worker::SolveTurns`]).
pub(super) async fn push_and_solve(w: WorkerHandle, msgs: Option<Vec<FactorChunk>>, req: SolveRequest) -> Result<WorkerHalf, HalfError> {
    let addr = w.addr.clone();
    let mut client = w.client;
    let mut bytes_sent = req.encoded_len() as u64;
    if let Some(msgs) = msgs {
        bytes_sent += encoded_bytes(&msgs);
        client
            .push_factors(tokio_stream::iter(msgs))
            .await
            .map_err(|s| rpc_err(&addr, "pushing factors failed", s))?;
    }
    let stream = client.solve(req).await.map_err(|s| rpc_err(&addr, "solve failed", s))?.into_inner();
    let mut out = gather_blocks(&addr, "solve", stream).await?;
    out.bytes_sent += bytes_sent;
    Ok(out)
}

/// What a worker's routes came to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Subscribed {
    /// The bytes the routes took.
    pub peer_bytes: u64,
    /// The fixed rows it asked its peers for, per half (users', items').
    pub rows_for_half: [u64; 2],
}

/// A worker asks its peers for the rows its blocks need.
pub(super) async fn subscribe(w: WorkerHandle, req: SubscribeRequest) -> Result<Subscribed, HalfError> {
    let addr = w.addr.clone();
    let mut client = w.client;
    let r = client
        .subscribe(req)
        .await
        .map_err(|s| rpc_err(&addr, "asking peers for rows failed", s))?
        .into_inner();
    Ok(Subscribed {
        peer_bytes: r.peer_bytes,
        rows_for_half: [r.rows_for_user_half, r.rows_for_item_half],
    })
}

/// A worker sends its latest rows of a side to its peers: the bytes they took.
pub(super) async fn send_rows(w: WorkerHandle, req: SendRowsRequest) -> Result<u64, HalfError> {
    let addr = w.addr.clone();
    let mut client = w.client;
    let r = client
        .send_rows(req)
        .await
        .map_err(|s| rpc_err(&addr, "sending rows to peers failed", s))?;
    Ok(r.into_inner().peer_bytes)
}

/// A worker's latest rows of one side, block by block.
pub(super) async fn fetch_rows(w: WorkerHandle, req: FetchRowsRequest) -> Result<WorkerHalf, HalfError> {
    let addr = w.addr.clone();
    let mut client = w.client;
    let bytes_sent = req.encoded_len() as u64;
    let stream = client
        .fetch_rows(req)
        .await
        .map_err(|s| rpc_err(&addr, "fetching rows failed", s))?
        .into_inner();
    let mut out = gather_blocks(&addr, "fetch", stream).await?;
    out.bytes_sent += bytes_sent;
    Ok(out)
}

/// The blocks of a stream of `SolvedChunk`s, up to its last message.
async fn gather_blocks(addr: &str, what: &str, mut stream: tonic::Streaming<SolvedChunk>) -> Result<WorkerHalf, HalfError> {
    let mut out = WorkerHalf {
        blocks: Vec::new(),
        bytes_sent: 0,
        bytes_received: 0,
        bytes_peer: 0,
        compute_seconds: 0.0,
    };
    while let Some(c) = stream
        .message()
        .await
        .map_err(|s| rpc_err(addr, &format!("{what} stream broke"), s))?
    {
        out.bytes_received += c.encoded_len() as u64;
        if c.last {
            out.compute_seconds = c.compute_seconds;
            out.bytes_peer = c.peer_bytes;
            return Ok(out);
        }
        if out.blocks.last().is_none_or(|(b, _)| *b != c.block) {
            let g = Gathered {
                row_start: c.row_start,
                n_rows: c.n_rows,
                terms: c.terms,
                arrays: Assembler::unlimited(),
            };
            out.blocks.push((c.block, g));
        }
        let g = &mut out.blocks.last_mut().expect("pushed above").1;
        g.arrays.add(&c).expect("no limits");
    }
    Err(HalfError::Lost(format!("worker {addr}: {what} stream ended early")))
}

/// One worker's evaluation: each block's metric sums, as sent.
pub(super) struct WorkerEval {
    pub(super) blocks: Vec<(u32, Option<EvalSums>)>,
    pub(super) bytes: u64,
}

pub(super) async fn run_evaluation(w: WorkerHandle, msgs: Vec<EvalChunk>) -> Result<WorkerEval, HalfError> {
    let addr = w.addr.clone();
    let mut client = w.client;
    let mut out = WorkerEval {
        blocks: Vec::new(),
        bytes: encoded_bytes(&msgs),
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
        // A block's sums are one message; the caller checks them.
        out.blocks.push((c.block, c.sums));
    }
    Err(HalfError::Lost(format!("worker {addr}: evaluation stream ended early")))
}
