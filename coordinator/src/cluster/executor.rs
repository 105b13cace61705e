//! The cluster's [`HalfStepExecutor`]: ship blocks once, then per half push
//! factors, solve remotely, gather the solved rows.

use std::time::Instant;

use als_core::data::{Csr, Dataset};
use als_core::side::{Factors, Side};
use als_core::solve::{sum_grams, Feedback, SolveParams};
use als_core::train::{HalfStepExecutor, HalfStepOutput, HalfStepReport, Layouts, TrainError, TrainState};
use als_proto::codec::{bytes_f32, bytes_f64, f32_bytes, f64_bytes, plan_chunks, u32_bytes};
use als_proto::pb::{BlockChunk, EndJobRequest, FactorChunk, SolveRequest, SolvedChunk, StartJobRequest};
use als_proto::spec::{side_to_pb, spec_from_params};
use als_proto::{CHUNK_BYTES, PROTOCOL_VERSION};
use anyhow::Context;
use futures::future::try_join_all;
use prost::Message;

use super::client::WorkerHandle;
use super::routing::Routing;

pub struct ClusterExecutor {
    rt: tokio::runtime::Handle,
    workers: Vec<WorkerHandle>,
    routing: Routing,
    layouts: Layouts,
    job_id: String,
    step: u64,
}

/// One block's data as messages (header on the first).
fn block_messages(job_id: &str, side: Side, block: usize, csr: &Csr, layouts: &Layouts, needed: &[u32], current: &Factors) -> Vec<BlockChunk> {
    let range = layouts.side(side).range(block);
    let (a, b) = (csr.indptr[range.start], csr.indptr[range.end]);
    let indptr: Vec<u32> = csr.indptr[range.start..=range.end].iter().map(|p| (p - a) as u32).collect();
    // Columns become positions in `needed`; both ascending, so row order is kept.
    let columns: Vec<u32> = csr.indices[a..b].iter().map(|c| needed.binary_search(c).expect("referenced column is needed") as u32).collect();
    let k = current.k();
    let fields = [
        u32_bytes(&indptr),
        u32_bytes(&columns),
        f32_bytes(&csr.values[a..b]),
        u32_bytes(needed),
        f32_bytes(&current.flat()[range.start * k..range.end * k]),
        if current.bias.is_empty() { Vec::new() } else { f32_bytes(&current.bias[range.clone()]) },
    ];
    let lens: Vec<usize> = fields.iter().map(Vec::len).collect();
    plan_chunks(&lens, CHUNK_BYTES)
        .into_iter()
        .enumerate()
        .map(|(j, parts)| {
            let mut m = BlockChunk { job_id: job_id.to_owned(), side: side_to_pb(side) as i32, block: block as u32, ..Default::default() };
            if j == 0 {
                m.row_start = range.start as u64;
                m.n_rows = range.len() as u32;
                m.nnz = (b - a) as u64;
                m.n_needed = needed.len() as u32;
            }
            for (f, r) in parts {
                let dst = match f {
                    0 => &mut m.indptr,
                    1 => &mut m.columns,
                    2 => &mut m.values,
                    3 => &mut m.needed,
                    4 => &mut m.factors,
                    _ => &mut m.bias,
                };
                dst.extend_from_slice(&fields[f][r]);
            }
            m
        })
        .collect()
}

/// The fixed rows one worker needs, as messages.
fn factor_messages(job_id: &str, side: Side, step: u64, rows: &[u32], fixed: &Factors, gram: Option<&[f64]>) -> Vec<FactorChunk> {
    let k = fixed.k();
    let mut factors = Vec::with_capacity(rows.len() * k * 4);
    for &r in rows {
        for v in fixed.row(r as usize) {
            factors.extend_from_slice(&v.to_le_bytes());
        }
    }
    let bias = if fixed.bias.is_empty() { Vec::new() } else { f32_bytes(&rows.iter().map(|&r| fixed.bias[r as usize]).collect::<Vec<_>>()) };
    let gram = gram.map(f64_bytes).unwrap_or_default();
    let fields = [gram, factors, bias];
    let lens: Vec<usize> = fields.iter().map(Vec::len).collect();
    plan_chunks(&lens, CHUNK_BYTES)
        .into_iter()
        .enumerate()
        .map(|(j, parts)| {
            let mut m = FactorChunk { job_id: job_id.to_owned(), side: side_to_pb(side) as i32, step, ..Default::default() };
            if j == 0 {
                m.n_rows = rows.len() as u32;
            }
            for (f, r) in parts {
                let dst = match f {
                    0 => &mut m.gram,
                    1 => &mut m.factors,
                    _ => &mut m.bias,
                };
                dst.extend_from_slice(&fields[f][r]);
            }
            m
        })
        .collect()
}

/// A solved block gathered from its chunks.
#[derive(Default)]
struct Gathered {
    row_start: u64,
    n_rows: u32,
    gram: Vec<u8>,
    factors: Vec<u8>,
    bias: Vec<u8>,
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

async fn run_worker_half(w: WorkerHandle, job_id: String, side: Side, step: u64, msgs: Vec<FactorChunk>) -> anyhow::Result<WorkerHalf> {
    let addr = w.addr.clone();
    let mut client = w.client;
    let bytes_sent = encoded(&msgs);
    client.push_factors(tokio_stream::iter(msgs)).await.map_err(|s| anyhow::anyhow!("worker {addr}: pushing factors failed: {}", s.message()))?;
    let req = SolveRequest { job_id, side: side_to_pb(side) as i32, step };
    let mut stream = client.solve(req).await.map_err(|s| anyhow::anyhow!("worker {addr}: solve failed: {}", s.message()))?.into_inner();
    let mut out = WorkerHalf { blocks: Vec::new(), bytes_sent, bytes_received: 0, compute_seconds: 0.0 };
    let mut done = false;
    while let Some(c) = stream.message().await.map_err(|s| anyhow::anyhow!("worker {addr}: solve stream broke: {}", s.message()))? {
        out.bytes_received += c.encoded_len() as u64;
        let SolvedChunk { block, row_start, n_rows, gram, factors, bias, compute_seconds, last } = c;
        if last {
            out.compute_seconds = compute_seconds;
            done = true;
            break;
        }
        if out.blocks.last().is_none_or(|(b, _)| *b != block) {
            out.blocks.push((block, Gathered { row_start, n_rows, ..Default::default() }));
        }
        let g = &mut out.blocks.last_mut().expect("pushed above").1;
        g.gram.extend_from_slice(&gram);
        g.factors.extend_from_slice(&factors);
        g.bias.extend_from_slice(&bias);
    }
    anyhow::ensure!(done, "worker {addr}: solve stream ended early");
    Ok(out)
}

impl ClusterExecutor {
    /// Start the job on every worker and ship every block once.
    pub fn start(
        rt: tokio::runtime::Handle,
        workers: Vec<WorkerHandle>,
        ds: &Dataset,
        params: &SolveParams,
        layouts: &Layouts,
        state: &TrainState,
        job_id: String,
    ) -> anyhow::Result<ClusterExecutor> {
        anyhow::ensure!(!workers.is_empty(), "no workers");
        let routing = Routing::build(&ds.by_user, &ds.by_item, layouts, workers.len());
        let exec = ClusterExecutor { rt, workers, routing, layouts: layouts.clone(), job_id, step: 0 };
        let t0 = Instant::now();
        let mut shipped = 0u64;
        exec.rt.block_on(async {
            let start = StartJobRequest {
                protocol_version: PROTOCOL_VERSION,
                job_id: exec.job_id.clone(),
                spec: Some(spec_from_params(params)),
                n_users: ds.n_users() as u64,
                n_items: ds.n_items() as u64,
            };
            try_join_all(exec.workers.iter().map(|w| {
                let mut c = w.client.clone();
                let req = start.clone();
                let addr = w.addr.clone();
                async move { c.start_job(req).await.map_err(|s| anyhow::anyhow!("worker {addr}: cannot start the job: {}", s.message())) }
            }))
            .await?;
            for (side, csr, current) in [(Side::Users, &ds.by_user, &state.users), (Side::Items, &ds.by_item, &state.items)] {
                let r = exec.routing.side(side);
                let mut calls = Vec::new();
                for (b, &w) in r.owner.iter().enumerate() {
                    let msgs = block_messages(&exec.job_id, side, b, csr, layouts, &r.needed[b], current);
                    shipped += encoded(&msgs);
                    let mut c = exec.workers[w].client.clone();
                    let addr = exec.workers[w].addr.clone();
                    calls.push(async move {
                        c.assign_block(tokio_stream::iter(msgs))
                            .await
                            .map_err(|s| anyhow::anyhow!("worker {addr}: shipping block {b} of {} failed: {}", side.name(), s.message()))
                    });
                }
                try_join_all(calls).await?;
            }
            anyhow::Ok(())
        })?;
        tracing::info!(workers = exec.workers.len(), bytes = shipped, seconds = t0.elapsed().as_secs_f64(), "ratings shipped to workers");
        Ok(exec)
    }

    /// Tell every worker the job is over (best effort).
    pub fn finish(&self) {
        self.rt.block_on(async {
            for w in &self.workers {
                let mut c = w.client.clone();
                if let Err(s) = c.end_job(EndJobRequest { job_id: self.job_id.clone() }).await {
                    tracing::warn!(worker = %w.addr, "ending the job failed: {}", s.message());
                }
            }
        });
    }

    fn half(&mut self, side: Side, params: &SolveParams, fixed: &Factors, fixed_gram: Option<&[f64]>, target: &mut Factors) -> anyhow::Result<HalfStepOutput> {
        self.step += 1;
        let step = self.step;
        let t0 = Instant::now();
        let r = self.routing.side(side);
        let k = params.factors;
        let futs: Vec<_> = self
            .workers
            .iter()
            .enumerate()
            .map(|(w, h)| {
                let msgs = factor_messages(&self.job_id, side.other(), step, &r.union[w], fixed, fixed_gram);
                run_worker_half(h.clone(), self.job_id.clone(), side, step, msgs)
            })
            .collect();
        let results = self.rt.block_on(try_join_all(futs))?;
        let n_blocks = self.layouts.side(side).n_blocks();
        let mut grams: Vec<Option<Vec<f64>>> = vec![None; n_blocks];
        let implicit = matches!(params.feedback, Feedback::Implicit { .. });
        let biased = !target.bias.is_empty();
        let (mut sent, mut compute) = (0u64, 0f64);
        let mut seen = vec![false; n_blocks];
        for (w, res) in results.into_iter().enumerate() {
            sent += res.bytes_sent + res.bytes_received;
            compute = compute.max(res.compute_seconds);
            let addr = &self.workers[w].addr;
            for (b, g) in res.blocks {
                let b = b as usize;
                let range = self.layouts.side(side).range(b.min(n_blocks.saturating_sub(1)));
                anyhow::ensure!(
                    b < n_blocks && r.owner[b] == w && !seen[b] && g.row_start as usize == range.start && g.n_rows as usize == range.len(),
                    "worker {addr}: returned block {b} it does not own or with wrong rows"
                );
                seen[b] = true;
                let f = bytes_f32("factors", &g.factors).with_context(|| format!("worker {addr}"))?;
                anyhow::ensure!(f.len() == range.len() * k && f.iter().all(|v| v.is_finite()), "worker {addr}: block {b} factors malformed");
                target.flat_mut()[range.start * k..range.end * k].copy_from_slice(&f);
                if biased {
                    let bb = bytes_f32("bias", &g.bias).with_context(|| format!("worker {addr}"))?;
                    anyhow::ensure!(bb.len() == range.len(), "worker {addr}: block {b} bias malformed");
                    target.bias[range.clone()].copy_from_slice(&bb);
                }
                if implicit {
                    let gr = bytes_f64("gram", &g.gram).with_context(|| format!("worker {addr}"))?;
                    anyhow::ensure!(gr.len() == k * k, "worker {addr}: block {b} gramian malformed");
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

impl HalfStepExecutor for ClusterExecutor {
    fn half_step(&mut self, side: Side, params: &SolveParams, fixed: &Factors, fixed_gram: Option<&[f64]>, target: &mut Factors) -> Result<HalfStepOutput, TrainError> {
        self.half(side, params, fixed, fixed_gram, target).map_err(|e| TrainError::Cluster(format!("{e:#}")))
    }
}
