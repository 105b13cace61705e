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
//! - [`half`]: a half's attempts, their reduction, and replay after a loss;
//! - [`rebuild`]: a lost worker's blocks built again by the survivors, where
//!   only the workers hold the ratings;
//! - [`exchange`]: the routes of the solved rows sent worker to worker;
//! - [`fetch`]: the coordinator's copy of the model, from the workers;
//! - [`snapshot`]: where a replay's rows come from, the copy or, where the
//!   coordinator keeps none, the initial draw or the last checkpoint file;
//! - [`row_files`]: checkpoints written by the workers;
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
mod fetch;
mod half;
mod health;
mod membership;
mod rebuild;
mod row_files;
mod rpc;
mod snapshot;
mod test_rows;
mod wire;

use std::collections::BTreeSet;
use std::time::Instant;

use als_core::side::{Factors, Side};
use als_core::solve::{SolveParams, TermsWanted};
use als_core::train::{DataShape, HalfStepExecutor, HalfStepOutput, Layouts, TestMetrics, TrainConfig, TrainData, TrainError, TrainState};
use als_proto::pb::{AdoptStep, EndJobRequest, StartJobRequest};
use als_proto::spec::spec_from_params;
use als_proto::PROTOCOL_VERSION;

use crate::cluster::client::{ClientOptions, WorkerHandle};
use crate::cluster::ratings::{OnWorkers, RatingsAt};
use crate::cluster::routing::{HalfMinimums, Routing};

pub use health::FaultOptions;
pub(crate) use health::{silent, watchdog};
pub use rpc::JobFailed;
use test_rows::LazyTestRows;

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
    reviving: Option<tokio::task::JoinHandle<Result<WorkerHandle, als_net::client::ConnectError>>>,
    /// While it is lost: a reconnection that succeeded, waiting for its
    /// blocks to be able to go back (see `revive`).
    back: Option<WorkerHandle>,
    /// It refused to read a checkpoint's rows itself (out of its
    /// `--output-root`): its blocks' rows are read here and sent.
    reads_no_files: bool,
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
            back: None,
            reads_no_files: false,
        }
    }
}

pub struct ClusterExecutor<'a> {
    rt: tokio::runtime::Handle,
    slots: Vec<Slot>,
    routing: Routing,
    /// The routing minimum of each side's half, with the hub and without
    /// ([`Routing::minimums`]), computed once per assignment of blocks: it
    /// changes only when blocks move.
    bytes_min: [Option<HalfMinimums>; 2],
    /// Per side's half, per worker: the fixed rows it asked its peers for
    /// on the current routes (`Subscribe`), where the coordinator does not
    /// hold the references to count them itself.
    rows_asked: [Option<Vec<u64>>; 2],
    /// The owners when every worker is up (lost workers' blocks come back to them).
    home: [Vec<usize>; 2],
    layouts: Layouts,
    job_id: String,
    start_req: StartJobRequest,
    client_opts: ClientOptions,
    faults: FaultOptions,
    /// The ratings, from which blocks are shipped and moved after a loss.
    ratings: RatingsAt<'a>,
    /// The data's shape as the run knows it (from the workers, when they built the blocks).
    shape: DataShape,
    /// Per user block, its test rows.
    test_per_block: Vec<u64>,
    /// Per user block, the users its ranking evaluation scores (for the run's `min_pos`).
    eval_users_per_block: Vec<u64>,
    /// The user blocks hold their held-out users (`--split users`, built by the workers).
    held_out_on_workers: bool,
    /// The items' Gramian the held-out users of the coming evaluation fold in with (implicit).
    eval_item_gram: Option<Vec<f64>>,
    /// The test rows grouped by user, built on first use ([`Self::test_rows`]).
    test: LazyTestRows,
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
    /// Halves this job has run, and will run in all (when known): the last sends nothing on.
    halves_done: usize,
    halves_total: usize,
    /// The workers hold newer rows than the coordinator's copy, which is the
    /// state after the last fetch (or shipment): a snapshot to replay from.
    stale: bool,
    /// The sides of the halves solved since that snapshot, in order, and
    /// the fixed Gramian of the first of them.
    since_sync: Vec<Side>,
    snapshot_gram: Option<Vec<f64>>,
    /// Where the snapshot's rows are: the caller's copy, or, where the
    /// coordinator keeps none, the initial draw or a checkpoint file.
    snapshot: snapshot::Snapshot,
    params: SolveParams,
    /// Bytes of fetches and replays outside a half, reported with the next.
    unreported_bytes: u64,
    /// Of the bytes of replays, those the workers sent each other: reported
    /// with the next half as peer bytes, not as the coordinator's.
    replayed_peer_bytes: u64,
    /// Faults survived so far (for reports and tests).
    pub workers_lost: usize,
    /// Bytes of the evaluations on the workers (apart from the halves' bytes).
    pub eval_bytes: u64,
    /// The starting YᵀY came from the workers' per-block Gramians.
    pub item_gram_from_workers: bool,
    /// Of `eval_bytes`, the item rows the workers sent each other.
    pub eval_peer_bytes: u64,
    /// Evaluations the workers did (the rest fell back to the coordinator).
    pub remote_evaluations: usize,
    /// Of those, the ones from the workers' own rows (no factor through the coordinator).
    pub evaluations_from_peers: usize,
    /// Halves solved again after losses (replays).
    pub replayed_halves: usize,
    /// Builds of the blocks again by the survivors after losses.
    pub rebuilds: usize,
    /// The workers write the checkpoints' rows (until one cannot).
    workers_write_rows: bool,
    /// Files of rows the workers wrote (checkpoints, the model).
    pub row_writes_by_workers: usize,
    /// The run's final rows are read (else they stay on the workers).
    pub final_rows: FinalRows,
    /// Per side and block, the worker that built the block from the input
    /// for this job and holds it, not yet taken (`AssignBlock` with
    /// `ratings_built` takes it with the coordinator's rows).
    built_at: Option<[Vec<Option<usize>>; 2]>,
    /// Tests: the workers taken as lost (alive, but no longer used) as the
    /// first evaluation from peers' rows starts, then as the streamed
    /// evaluation that follows it starts (without a copy here, nothing is
    /// streamed: only the first, once).
    #[cfg(test)]
    pub lose_at_evaluation: Option<(usize, usize)>,
    /// Tests: the worker whose answer for the starting YᵀY is taken as
    /// lost (it is, from then on).
    #[cfg(test)]
    pub lose_at_starting_gram: Option<usize>,
}

/// Blocks the workers built from the input as this job, not yet the job's.
#[derive(Debug, Clone)]
pub enum BuiltBlocks {
    /// Each worker adopts its own, with start rows drawn from the ids (a fresh run).
    Adopt(AdoptStep),
    /// Each worker takes its own with the coordinator's rows (a resumed run
    /// that holds a copy).
    WithRows,
    /// Each worker takes its own with their rows read from the sealed
    /// checkpoint at these places (a resumed run that keeps no copy).
    FromFile(Box<als_core::row_places::RowPlaces>),
}

/// Whether a run's final factors are read here (the model), or nobody
/// reads them (an evaluated run whose model a refit makes): then they are
/// not fetched from the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalRows {
    Wanted,
    NotRead,
    /// Wanted, unless the workers wrote them to files at the last
    /// iteration (the model's, checked there) while this coordinator kept
    /// no copy of them: then they stay in the files.
    UnlessWritten,
}

fn side_ix(s: Side) -> usize {
    match s {
        Side::Users => 0,
        Side::Items => 1,
    }
}

impl<'a> ClusterExecutor<'a> {
    /// Start the job on every worker and ship every block once, or, with
    /// `built`, have each worker take the blocks it built as job `job_id`
    /// (adopted with the initial rows, or with `state`'s rows).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        rt: tokio::runtime::Handle,
        workers: Vec<WorkerHandle>,
        lost: &[Option<String>],
        client_opts: ClientOptions,
        faults: FaultOptions,
        data: TrainData<'a>,
        on_workers: Option<&'a OnWorkers<'a>>,
        min_pos: f32,
        params: &SolveParams,
        layouts: &Layouts,
        state: &TrainState,
        job_id: String,
        built: Option<BuiltBlocks>,
    ) -> anyhow::Result<ClusterExecutor<'a>> {
        anyhow::ensure!(!workers.is_empty(), "no workers");
        let ratings = match (data.ratings, on_workers) {
            (Some(ds), _) => RatingsAt::Here(ds),
            (None, Some(w)) => RatingsAt::Workers(w),
            (None, None) => anyhow::bail!("the cluster needs the ratings, held here or described by the workers that built the blocks"),
        };
        let shape = data.shape;
        // A state without rows: the workers drew them from the ids, and the
        // coordinator keeps none (see `snapshot`).
        let snapshot = match (state.users.n_rows() == 0 && state.items.n_rows() == 0 && shape.n_users > 0, &built) {
            (false, _) => snapshot::Snapshot::Copy,
            (true, Some(BuiltBlocks::Adopt(a))) => snapshot::Snapshot::Initial(*a),
            (true, Some(BuiltBlocks::FromFile(places))) => snapshot::Snapshot::File(places.clone()),
            (true, _) => anyhow::bail!("internal error: a run without starting rows needs blocks the workers built and drew rows for"),
        };
        let routing = ratings.routing(layouts, workers.len());
        let start_req = StartJobRequest {
            protocol_version: PROTOCOL_VERSION,
            job_id: job_id.clone(),
            spec: Some(spec_from_params(params)),
            n_users: shape.n_users as u64,
            n_items: shape.n_items as u64,
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
            rows_asked: [None, None],
            routing,
            layouts: layouts.clone(),
            job_id,
            start_req,
            client_opts,
            faults,
            ratings,
            shape,
            test_per_block: ratings.test_rows_per_block(&layouts.users),
            eval_users_per_block: ratings.eval_users_per_block(&layouts.users, min_pos),
            held_out_on_workers: ratings.held_out_on_workers(),
            eval_item_gram: None,
            test: LazyTestRows::default(),
            step: 0,
            exchange: false,
            routes_epoch: 0,
            routes_current: false,
            peers_ready: None,
            halves_done: 0,
            halves_total: usize::MAX,
            stale: false,
            since_sync: Vec::new(),
            snapshot_gram: None,
            snapshot,
            params: *params,
            unreported_bytes: 0,
            replayed_peer_bytes: 0,
            workers_lost: 0,
            eval_bytes: 0,
            eval_peer_bytes: 0,
            item_gram_from_workers: false,
            remote_evaluations: 0,
            evaluations_from_peers: 0,
            replayed_halves: 0,
            rebuilds: 0,
            workers_write_rows: true,
            row_writes_by_workers: 0,
            final_rows: FinalRows::Wanted,
            built_at: None,
            #[cfg(test)]
            lose_at_evaluation: None,
            #[cfg(test)]
            lose_at_starting_gram: None,
        };
        // The build put each block where this job places it: at home, or,
        // a lost worker's, on a survivor (`ingest::build_owners`).
        if built.is_some() {
            exec.built_at = Some(exec.desired_owners()?.map(|o| o.into_iter().map(Some).collect()));
        }
        // Peer exchange needs every worker to take part, the lost ones too once revived.
        exec.exchange = exec.slots.iter().all(|s| s.handle.exchanges_rows());
        anyhow::ensure!(
            exec.exchange || exec.pushes_possible(),
            "internal error: a coordinator without a copy of the factors, or of the rows the blocks reference, \
             needs every worker to send rows to its peers"
        );
        let t0 = Instant::now();
        // Blocks the workers built from the input (as job `job_id`) are theirs; the rest are shipped.
        let adopted = match built {
            Some(BuiltBlocks::Adopt(a)) => exec.adopt_built(a),
            _ => Ok(()),
        };
        let shipped = match adopted.and_then(|()| exec.sync_assignment(&state.users, &state.items)) {
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

    /// The workers hold the test rows, and one was lost while they
    /// evaluated: move its blocks to the survivors (the copy `users`,
    /// `items` is current), then evaluate there again, a bounded number of times.
    fn evaluate_after_loss(&mut self, cfg: &TrainConfig, users: &Factors, items: &Factors) -> anyhow::Result<TestMetrics> {
        let attempts = membership::max_attempts(self.slots.len());
        for _ in 0..attempts {
            self.unreported_bytes += self.sync_assignment(users, items)?;
            if let Some(m) = self.evaluate_remote(cfg, users, items)? {
                return Ok(m);
            }
        }
        Err(self.gave_up("evaluating on the workers", attempts))
    }

    /// The user blocks hold the held-out users, and their evaluation from
    /// peers' rows could not run: move the lost worker's blocks to the
    /// survivors (built again there, held-out users with them; the copy
    /// `users`, `items` is current), then evaluate from peers' rows again,
    /// a bounded number of times. Nothing else can score them.
    fn evaluate_held_out_after_loss(&mut self, cfg: &TrainConfig, users: &Factors, items: &Factors) -> anyhow::Result<TestMetrics> {
        let attempts = membership::max_attempts(self.slots.len());
        for _ in 0..attempts {
            self.unreported_bytes += self.sync_assignment(users, items)?;
            if let Some(m) = self.evaluate_from_peers(cfg)? {
                return Ok(m);
            }
        }
        Err(self.gave_up("evaluating the held-out users on the workers", attempts))
    }

    /// Evaluate from the workers' own rows where the coordinator keeps no
    /// copy: a worker lost, or rows that did not reach a peer, cost a
    /// replay of the halves since the snapshot onto the survivors, then the
    /// evaluation again, a bounded number of times.
    fn evaluate_without_copy(&mut self, cfg: &TrainConfig) -> anyhow::Result<TestMetrics> {
        let attempts = membership::max_attempts(self.slots.len());
        let (k, _) = self.rows_shape();
        let none = Factors::zeros(0, k, false);
        let params = self.params;
        for _ in 0..attempts {
            if let Some(m) = self.evaluate_from_peers(cfg)? {
                return Ok(m);
            }
            let mut sent = 0;
            self.replay(&params, &none, &none, &mut sent)?;
            self.unreported_bytes += sent;
        }
        Err(self.gave_up("evaluating on the workers", attempts))
    }

    /// The worker that built block `b` of `side` for this job and holds it, not yet taken.
    fn built_by(&self, side: Side, b: usize) -> Option<usize> {
        self.built_at.as_ref().and_then(|at| at[side_ix(side)][b])
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

    /// The job runs `halves` more halves: the last one's rows go to nobody.
    pub fn set_halves(&mut self, halves: usize) {
        self.halves_total = self.halves_done + halves;
    }

    /// Why each worker is lost, if it is.
    pub fn lost_workers(&self) -> Vec<Option<String>> {
        self.slots.iter().map(|s| if s.alive { None } else { s.cause.clone() }).collect()
    }
}

impl HalfStepExecutor for ClusterExecutor<'_> {
    fn evaluate(
        &mut self,
        cfg: &TrainConfig,
        _params: &SolveParams,
        users: &Factors,
        items: &Factors,
    ) -> Option<Result<TestMetrics, TrainError>> {
        if self.nothing_to_score(cfg) {
            return None;
        }
        #[cfg(test)]
        if let Some((_, w)) = self.lose_at_evaluation.take() {
            self.lose(w, "taken as lost by a test, as its evaluation starts");
        }
        if self.shape.holds_out_users {
            // Held-out users are scored where they are held: here, where the
            // blocks were shipped (they hold none), else by their blocks' workers.
            return self
                .held_out_on_workers
                .then(|| self.evaluate_held_out_after_loss(cfg, users, items).map_err(train_error));
        }
        match (self.evaluate_remote(cfg, users, items), self.ratings) {
            (Ok(Some(m)), _) => Some(Ok(m)),
            // The caller evaluates from the ratings it holds.
            (Ok(None), RatingsAt::Here(_)) => None,
            // A worker was lost: its blocks move (built again by the
            // survivors) and the workers evaluate, from this copy.
            (Ok(None), RatingsAt::Workers(_)) => Some(self.evaluate_after_loss(cfg, users, items).map_err(train_error)),
            (Err(e), _) => Some(Err(train_error(e))),
        }
    }

    fn evaluate_in_place(
        &mut self,
        cfg: &TrainConfig,
        _params: &SolveParams,
        item_gram: Option<&[f64]>,
    ) -> Option<Result<TestMetrics, TrainError>> {
        if self.shape.holds_out_users && !self.held_out_on_workers {
            // Shipped blocks hold no held-out users: they are folded in here.
            return None;
        }
        self.eval_item_gram = item_gram.map(<[f64]>::to_vec);
        #[cfg(test)]
        if let Some((w, _)) = self.lose_at_evaluation {
            self.lose(w, "taken as lost by a test, as its evaluation from peers' rows starts");
            if self.no_copy() {
                // Without a copy nothing is streamed: there is no second one.
                self.lose_at_evaluation = None;
            }
        }
        if self.no_copy() && !self.nothing_to_score(cfg) {
            // No copy to evaluate from: the evaluation waits for the survivors' replay.
            return Some(self.evaluate_without_copy(cfg).map_err(train_error));
        }
        match self.evaluate_from_peers(cfg) {
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

    fn sync_state(&mut self, users: &mut Factors, items: &mut Factors) -> Result<(), TrainError> {
        self.sync_rows(users, items).map_err(train_error)
    }

    fn write_rows(&mut self, places: &als_core::row_places::RowPlaces) -> Option<Result<(), TrainError>> {
        match self.write_rows_on_workers(places) {
            Ok(true) => Some(Ok(())),
            Ok(false) => None,
            Err(e) => Some(Err(train_error(e))),
        }
    }

    fn rows_read_back(&mut self) {
        self.copy_is_current();
    }

    fn bytes_outside_halves(&self) -> u64 {
        self.eval_bytes + self.unreported_bytes
    }

    fn peer_bytes_outside_halves(&self) -> u64 {
        self.eval_peer_bytes
    }

    fn final_rows_wanted(&self) -> bool {
        match self.final_rows {
            FinalRows::Wanted => true,
            FinalRows::NotRead => false,
            // Without a copy here, rows written to files since the last half stay there.
            FinalRows::UnlessWritten => self.stale || !matches!(self.snapshot, snapshot::Snapshot::File(_)),
        }
    }

    fn keeps_rows(&self) -> bool {
        self.no_copy()
    }

    fn starting_item_gram(&mut self) -> Result<Vec<f64>, TrainError> {
        self.snapshot_item_gram().map_err(train_error)
    }

    fn rows_kept_in(&mut self, places: &als_core::row_places::RowPlaces) {
        self.copy_is_current();
        self.snapshot = snapshot::Snapshot::File(Box::new(places.clone()));
    }
}

/// A failed job keeps its own message (as in the single-process path); anything else is the cluster's.
fn train_error(e: anyhow::Error) -> TrainError {
    match e.downcast::<JobFailed>() {
        Ok(f) => TrainError::Job(f.message),
        Err(e) => TrainError::Cluster(e.into()),
    }
}
