//! The cluster's [`HalfStepExecutor`]: ship blocks once, then per half push
//! factors, solve remotely, gather the solved rows. This file holds the
//! executor's state, its lifecycle and the assembly of a half-step; each
//! other job has a file of its own:
//! - [`membership`]: which worker owns which block, losing and reviving
//!   workers, moving blocks (failover);
//! - [`wire`]: blocks and factor rows as streamed messages;
//! - [`rpc`]: the calls of a half and of an evaluation, and how their
//!   failures are classified;
//! - [`health`]: the watchdog that declares a silent worker lost;
//! - [`exchange`]: the routes of the solved rows sent worker to worker;
//! - [`evaluation`]: test metrics computed on the workers;
//! - [`test_rows`]: the test rows grouped by user block.
//!
//! The sync/async boundary: `HalfStepExecutor` is a synchronous trait (the
//! core training loop knows no runtime), while the workers are reached over
//! async gRPC. The executor keeps a handle to the session's tokio runtime
//! and `block_on`s one future per half (all workers' calls joined), from the
//! training thread, which is never a runtime thread, so it cannot deadlock
//! the runtime.

mod evaluation;
mod exchange;
mod health;
mod membership;
mod rpc;
mod test_rows;
mod wire;

use std::collections::BTreeSet;
use std::time::Instant;

use als_core::data::Dataset;
use als_core::side::{Factors, Side};
use als_core::solve::{from_lower_triangle, sum_grams, Feedback, ObjectiveTerms, SolveParams, TermsWanted};
use als_core::train::{HalfStepExecutor, HalfStepOutput, HalfStepReport, Layouts, TestMetrics, TrainConfig, TrainError, TrainState};
use als_proto::codec::f64_bytes;
use als_proto::codec::{pieces_into_finite, pieces_vec};
use als_proto::pb::{EndJobRequest, SolveRequest, StartJobRequest};
use als_proto::spec::{side_to_pb, spec_from_params, terms_to_pb};
use als_proto::{PEER_EXCHANGE, PROTOCOL_VERSION};
use anyhow::Context;

use crate::cluster::client::{ClientOptions, WorkerHandle};
use crate::cluster::routing::Routing;
use exchange::RoutesSent;

use health::watched;
pub use health::FaultOptions;
use membership::max_attempts;
pub use rpc::JobFailed;
use rpc::{push_and_solve, HalfError};
use test_rows::TestByUser;
use wire::factor_messages;

struct Slot {
    handle: WorkerHandle,
    alive: bool,
    /// StartJob done on this connection.
    started: bool,
    /// Blocks this worker holds, per side.
    holds: [BTreeSet<usize>; 2],
    /// Of `holds`, the blocks whose rows the worker has exactly as the
    /// coordinator has them (shipped, or solved there and accepted): a push
    /// leaves their rows out.
    current: [BTreeSet<usize>; 2],
    /// Why it was last lost (for the error once every worker is gone).
    cause: Option<String>,
    /// While it is lost: a reconnection under way in the background, looked
    /// at once per half and never waited for.
    reviving: Option<tokio::task::JoinHandle<anyhow::Result<WorkerHandle>>>,
}

impl Slot {
    /// A worker on a fresh connection, holding nothing of the job yet.
    fn new(handle: WorkerHandle, alive: bool, cause: Option<String>) -> Slot {
        Slot {
            handle,
            alive,
            started: false,
            holds: Default::default(),
            current: Default::default(),
            cause,
            reviving: None,
        }
    }
}

pub struct ClusterExecutor<'a> {
    rt: tokio::runtime::Handle,
    slots: Vec<Slot>,
    routing: Routing,
    /// The routing minimum of each side's half, with the hub and without
    /// (see [`Routing::bytes_min`] and [`Routing::bytes_min_peer`]),
    /// computed once per assignment of blocks: it changes only when blocks move.
    bytes_min: [Option<(u64, u64)>; 2],
    /// The owners when every worker is up (lost workers' blocks come back to them).
    home: [Vec<usize>; 2],
    layouts: Layouts,
    job_id: String,
    start_req: StartJobRequest,
    client_opts: ClientOptions,
    faults: FaultOptions,
    /// Workers pushed to, solving and gathered at once: 1 where they share
    /// this process's cores (`--local`: they take turns), every worker where
    /// each works on its own host (see [`rpc::push_and_solve`]).
    push_lanes: usize,
    ds: &'a Dataset,
    test: TestByUser,
    step: u64,
    /// Solved rows go worker to worker (every worker offers it).
    exchange: bool,
    /// The epoch of the routes the workers hold, and whether they are those
    /// of the current assignment.
    routes_epoch: u64,
    routes_current: bool,
    /// The side and step whose fixed rows the workers got from their peers
    /// (the last half's exchange): that half needs no push.
    peers_ready: Option<(Side, u64)>,
    /// The step of the job's last half, when known: it sends nothing on.
    last_step: u64,
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

impl<'a> ClusterExecutor<'a> {
    /// Start the job on every worker and ship every block once.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        rt: tokio::runtime::Handle,
        workers: Vec<WorkerHandle>,
        lost: &[Option<String>],
        client_opts: ClientOptions,
        faults: FaultOptions,
        push_lanes: usize,
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
                    Slot::new(handle, cause.is_none(), cause)
                })
                .collect(),
            home: [routing.users.owner.clone(), routing.items.owner.clone()],
            bytes_min: [None, None],
            routing,
            layouts: layouts.clone(),
            job_id,
            start_req,
            client_opts,
            faults,
            push_lanes: push_lanes.max(1),
            ds,
            test: TestByUser::build(ds),
            step: 0,
            exchange: false,
            routes_epoch: 0,
            routes_current: false,
            peers_ready: None,
            last_step: u64::MAX,
            workers_lost: 0,
            eval_bytes: 0,
            remote_evaluations: 0,
        };
        // Peer exchange needs every worker to take part, the lost ones too once revived.
        exec.exchange = exec
            .slots
            .iter()
            .all(|s| s.handle.info.capabilities.iter().any(|c| c == PEER_EXCHANGE));
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

    /// The job runs `halves` more halves: the last one's rows stay where they are.
    pub fn set_halves(&mut self, halves: usize) {
        self.last_step = self.step + halves as u64;
    }

    /// Why each worker is lost, if it is.
    pub fn lost_workers(&self) -> Vec<Option<String>> {
        self.slots.iter().map(|s| if s.alive { None } else { s.cause.clone() }).collect()
    }
}

impl ClusterExecutor<'_> {
    fn half(
        &mut self,
        side: Side,
        params: &SolveParams,
        fixed: &Factors,
        fixed_gram: Option<&[f64]>,
        target: &mut Factors,
        terms: Option<TermsWanted>,
    ) -> anyhow::Result<HalfStepOutput> {
        self.step += 1;
        let step = self.step;
        let t0 = Instant::now();
        let mut sent = 0u64;
        let mut attempts = 0;
        // A peer could not take a worker's rows: this half is redone without exchange.
        let mut peer_failed = false;
        let implicit = matches!(params.feedback, Feedback::Implicit { .. });
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
            let shipped = match side {
                Side::Users => self.sync_assignment(target, fixed)?,
                Side::Items => self.sync_assignment(fixed, target)?,
            };
            sent += shipped;
            if shipped > 0 {
                // Blocks moved: their rows are the coordinator's, so this half is pushed.
                self.routes_current = false;
                self.peers_ready = None;
            }
            let exchange = self.exchange && !peer_failed && step < self.last_step;
            if exchange && !self.routes_current {
                match self.send_routes()? {
                    RoutesSent::Done(b) => {
                        sent += b;
                        self.routes_current = true;
                    }
                    RoutesSent::Lost(b) => {
                        sent += b;
                        continue;
                    }
                }
            }
            let from_peers = self.peers_ready == Some((side.other(), step));
            let n_alive = self.slots.iter().filter(|s| s.alive).count();
            let request = SolveRequest {
                job_id: self.job_id.clone(),
                side: side_to_pb(side) as i32,
                step,
                terms: terms_to_pb(terms) as i32,
                fixed_from_peers: from_peers,
                gram: match (from_peers, implicit) {
                    (true, true) => {
                        f64_bytes(fixed_gram.ok_or_else(|| anyhow::anyhow!("implicit feedback needs the fixed Gramian"))?).into()
                    }
                    _ => Default::default(),
                },
                exchange,
                routes_epoch: self.routes_epoch,
                routes_peers: (n_alive - 1) as u32,
                // A peer gets as long to take the rows as a worker gets to answer, and more.
                peer_timeout_ms: u32::try_from((self.faults.worker_timeout * 6).as_millis()).unwrap_or(u32::MAX),
            };
            let r = self.routing.side(side);
            let fixed_layout = self.layouts.side(side.other());
            let push_gate = std::sync::Arc::new(tokio::sync::Semaphore::new(self.push_lanes));
            let futs: Vec<_> = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.alive)
                .map(|(w, s)| {
                    // The worker's own rows of the fixed side stay where they are.
                    let local: Vec<usize> = s.current[side_ix(side.other())].iter().copied().collect();
                    let rows = rows_outside(&r.union[w], local.iter().map(|&b| fixed_layout.range(b)));
                    let handle = s.handle.clone();
                    let faults = self.faults.clone();
                    let (job_id, gate, req) = (self.job_id.clone(), push_gate.clone(), request.clone());
                    async move {
                        // Gathered when this worker's future first runs, so a later
                        // worker's rows are gathered while an earlier push is on the wire.
                        let msgs = (!from_peers).then(|| factor_messages(&job_id, side.other(), step, &rows, &local, fixed, fixed_gram));
                        let work = push_and_solve(handle.clone(), msgs, req, gate);
                        (w, watched(&handle, &faults, work).await)
                    }
                })
                .collect();
            let results = self.rt.block_on(until_a_loss(futs, exchange));
            let mut ok = Vec::new();
            let mut lost = false;
            let mut peer_failed_now = false;
            let mut failed = Vec::new();
            for (w, r) in results {
                match r {
                    Ok(h) => ok.push((w, h)),
                    Err(HalfError::Lost(m)) => {
                        self.lose(w, &m);
                        lost = true;
                    }
                    Err(HalfError::Peer(m)) => {
                        tracing::warn!("{m}; the half is redone with the coordinator pushing the rows");
                        peer_failed_now = true;
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
            peer_failed |= peer_failed_now;
            if !lost && !peer_failed_now {
                self.peers_ready = exchange.then_some((side, step + 1));
                break ok;
            }
            // Some results are missing: redo the whole half on the new layout (the
            // survivors restart from the same warm start, so the result is unchanged).
            // The peers' rows of this step were taken or are partial: push them.
            self.peers_ready = None;
            sent += ok.iter().map(|(_, h)| h.bytes_sent + h.bytes_received + h.bytes_peer).sum::<u64>();
        };
        let r = self.routing.side(side);
        let k = params.factors;
        let n_blocks = self.layouts.side(side).n_blocks();
        let mut grams: Vec<Option<Vec<f64>>> = vec![None; n_blocks];
        let mut block_terms = vec![ObjectiveTerms::default(); n_blocks];
        let biased = !target.bias.is_empty();
        let mut compute = 0f64;
        let mut bytes_peer = 0u64;
        let mut seen = vec![false; n_blocks];
        for (w, res) in results {
            sent += res.bytes_sent + res.bytes_received + res.bytes_peer;
            bytes_peer += res.bytes_peer;
            compute = compute.max(res.compute_seconds);
            let addr = self.slots[w].handle.addr.clone();
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
                match (terms, g.terms) {
                    (None, None) => {}
                    (Some(_), Some(t)) => {
                        let t = ObjectiveTerms {
                            loss: t.loss,
                            sq: t.sq,
                            reg: t.reg,
                        };
                        // Finite; the squared error and the norms never negative. The
                        // loss may be: Hu's observed part is c(p − s)² − s².
                        anyhow::ensure!(
                            t.is_finite() && t.sq >= 0.0 && t.reg >= 0.0,
                            "worker {addr}: block {b} objective terms malformed"
                        );
                        block_terms[b] = t;
                    }
                    (Some(_), None) => anyhow::bail!("worker {addr}: block {b} came without its objective terms"),
                    (None, Some(_)) => anyhow::bail!("worker {addr}: block {b} came with objective terms nobody asked for"),
                }
                // The worker now has the block's rows as the coordinator does; nobody else holds it.
                for (v, slot) in self.slots.iter_mut().enumerate() {
                    if v == w {
                        slot.current[side_ix(side)].insert(b);
                    } else {
                        slot.current[side_ix(side)].remove(&b);
                    }
                }
                // Straight into the target rows: no intermediate vectors.
                let p = g.arrays.into_pieces();
                let dest = &mut target.flat_mut()[range.start * k..range.end * k];
                pieces_into_finite("factors", &p.factors, dest).with_context(|| format!("worker {addr}: block {b} factors malformed"))?;
                if biased {
                    let dest = &mut target.bias[range.clone()];
                    pieces_into_finite("bias", &p.bias, dest).with_context(|| format!("worker {addr}: block {b} bias malformed"))?;
                }
                if implicit {
                    let lower: Vec<f64> = pieces_vec("gram", &p.gram).with_context(|| format!("worker {addr}"))?;
                    let gr = from_lower_triangle(&lower, k).filter(|g| g.iter().all(|v| v.is_finite()));
                    let gr = gr.ok_or_else(|| anyhow::anyhow!("worker {addr}: block {b} gramian malformed"))?;
                    grams[b] = Some(gr);
                }
            }
        }
        if let Some(missing) = seen.iter().position(|s| !s) {
            anyhow::bail!("block {missing} of {} was not solved", side.name());
        }
        let target_gram = implicit.then(|| sum_grams(k, grams.iter().map(|g| g.as_deref().unwrap_or(&[]))));
        let (routing, fixed_layout) = (&self.routing, self.layouts.side(side.other()));
        let (bytes_min, bytes_min_peer) = *self.bytes_min[side_ix(side)].get_or_insert_with(|| {
            (
                routing.bytes_min(side, k, fixed_layout),
                routing.bytes_min_peer(side, k, fixed_layout),
            )
        });
        let seconds = t0.elapsed().as_secs_f64();
        Ok(HalfStepOutput {
            target_gram,
            // In block order, as the single-process path sums them.
            terms: terms.map(|_| ObjectiveTerms::sum(block_terms)),
            report: HalfStepReport {
                side: Some(side),
                seconds,
                compute_seconds: compute,
                transfer_seconds: (seconds - compute).max(0.0),
                bytes_sent: sent,
                bytes_min,
                bytes_min_peer,
                bytes_peer,
            },
        })
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
        terms: Option<TermsWanted>,
    ) -> Result<HalfStepOutput, TrainError> {
        self.half(side, params, fixed, fixed_gram, target, terms).map_err(train_error)
    }
}

/// Every worker's result of a half; with `exchange`, only until a worker is
/// lost: the others would wait on sending it their rows, and the half is
/// redone anyway. Dropped calls are cancelled; what the workers still send
/// of them goes on routes the redo replaces.
async fn until_a_loss<F>(futs: Vec<F>, exchange: bool) -> Vec<(usize, Result<rpc::WorkerHalf, HalfError>)>
where
    F: std::future::Future<Output = (usize, Result<rpc::WorkerHalf, HalfError>)>,
{
    use futures::StreamExt;
    let mut pending: futures::stream::FuturesUnordered<F> = futs.into_iter().collect();
    let mut out = Vec::new();
    while let Some((w, r)) = pending.next().await {
        let lost = matches!(r, Err(HalfError::Lost(_)));
        out.push((w, r));
        if lost && exchange {
            break;
        }
    }
    out
}

/// The rows of `union` (ascending) outside every one of `ranges`.
fn rows_outside(union: &[u32], ranges: impl Iterator<Item = std::ops::Range<usize>>) -> Vec<u32> {
    let mut ranges: Vec<std::ops::Range<usize>> = ranges.collect();
    ranges.sort_by_key(|r| r.start);
    let mut out = Vec::with_capacity(union.len());
    let mut next = ranges.iter().peekable();
    for &g in union {
        let g_us = g as usize;
        while next.peek().is_some_and(|r| r.end <= g_us) {
            next.next();
        }
        if !next.peek().is_some_and(|r| r.contains(&g_us)) {
            out.push(g);
        }
    }
    out
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
    use super::rows_outside;

    #[test]
    fn rows_outside_skips_exactly_the_local_ranges() {
        let union = [0u32, 2, 3, 5, 8, 9, 12, 20];
        assert_eq!(rows_outside(&union, [3..9, 0..1].into_iter()), vec![2, 9, 12, 20]);
        assert_eq!(rows_outside(&union, std::iter::empty()), union.to_vec());
        assert_eq!(rows_outside(&union, std::iter::once(0..21)), Vec::<u32>::new());
        assert_eq!(rows_outside(&union, [13..20, 21..30].into_iter()), vec![0, 2, 3, 5, 8, 9, 12, 20]);
    }
}
