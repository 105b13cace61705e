//! The alternating loop: users given items, then items given users.
//!
//! Who solves a half-iteration is a [`HalfStepExecutor`]: [`LocalExecutor`]
//! does it in-process, the coordinator's cluster executor ships it to gRPC
//! workers. The loop, initialization, Gramian handling, objective and
//! evaluation are shared, so both paths train the same model.

mod config;
mod data;
pub mod eval;
mod gibbs;
mod local;
mod sgd;

use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use config::*;
pub use data::{DataShape, TrainData};
pub use eval::TestMetrics;
pub use gibbs::train_gibbs;
pub use local::LocalExecutor;
pub use sgd::train_sgd;

use crate::blocks::BlockLayout;
use crate::data::{Dataset, IdOrder};
use crate::init::init_factors;
use crate::linalg::vec::dot_f64;
use crate::objective::ObjectiveValue;
use crate::side::{Factors, Side};
use crate::solve::{block_gram_into, ObjectiveTerms, SolveError, SolveParams, TermsWanted};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid setting: {0}")]
    Setting(#[from] SettingError),
    #[error(transparent)]
    Solve(#[from] SolveError),
    /// Work that failed on a cluster worker, with the worker's message (the
    /// same input fails the same way in this process: see [`TrainError::Solve`]).
    #[error("{0}")]
    Job(String),
    /// The cluster that ran the half failed (every worker lost, a protocol
    /// breach, ...), with its cause chain intact.
    #[error(transparent)]
    Cluster(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Writing a checkpoint failed; training stops rather than go on unprotected.
    #[error("writing a checkpoint failed")]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// Writing the model's rows failed.
    #[error("writing the model failed")]
    Model(#[from] crate::model::ModelError),
    /// An executor broke its contract (a bug, not bad input).
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// A failed row solve of one side, whichever executor ran it.
    #[error("solving the {side}: {message}")]
    Half { side: &'static str, message: String },
    #[error("stopped: {0}")]
    Stopped(String),
}

impl TrainError {
    /// Name the side of a failed solve: in-process and cluster failures then read the same.
    fn in_half(self, side: Side) -> TrainError {
        match self {
            TrainError::Solve(e) => TrainError::Half {
                side: side.name(),
                message: e.to_string(),
            },
            TrainError::Job(message) => TrainError::Half {
                side: side.name(),
                message,
            },
            e => e,
        }
    }
}

/// The block layouts of both sides (a function of the data and the block count only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layouts {
    pub users: BlockLayout,
    pub items: BlockLayout,
}

impl Layouts {
    /// `blocks` per side, but no more than the smaller side has rows: more
    /// would only add empty blocks (and their messages). Both sides keep the
    /// same count, as DSGD's grid needs. Ids in hash order get the hashed
    /// layout (what workers reading their share of the input can compute);
    /// a caller's numbering gets ranges balanced by ratings.
    pub fn for_dataset(ds: &Dataset, blocks: usize) -> Self {
        let blocks = blocks.clamp(1, ds.n_users().min(ds.n_items()).max(1));
        match ds.id_order {
            IdOrder::Hashed => Layouts {
                users: BlockLayout::hashed(&ds.user_ids, blocks),
                items: BlockLayout::hashed(&ds.item_ids, blocks),
            },
            IdOrder::Given => Layouts {
                users: BlockLayout::balanced(&ds.by_user, blocks),
                items: BlockLayout::balanced(&ds.by_item, blocks),
            },
        }
    }

    pub fn side(&self, side: Side) -> &BlockLayout {
        match side {
            Side::Users => &self.users,
            Side::Items => &self.items,
        }
    }
}

/// YᵀY of one side: per-block Gramians summed in block order, the same
/// bits as [`sum_grams`] over [`block_gram`] of each block (what workers
/// send). Blocks are computed a wave of one per thread at a time into
/// buffers reused across waves, and each wave is added in block order.
pub fn gram_by_blocks(f: &Factors, layout: &BlockLayout) -> Vec<f64> {
    use rayon::prelude::*;
    let k = f.k();
    let n_blocks = layout.n_blocks();
    let mut total = vec![0.0f64; k * k];
    let wave = rayon::current_num_threads().clamp(1, n_blocks.max(1));
    let mut buffers: Vec<Vec<f64>> = (0..wave).map(|_| vec![0.0f64; k * k]).collect();
    for first in (0..n_blocks).step_by(wave) {
        let blocks = first..(first + wave).min(n_blocks);
        buffers.par_iter_mut().zip(blocks.clone().into_par_iter()).for_each(|(g, b)| {
            let r = layout.range(b);
            block_gram_into(&f.flat()[r.start * k..r.end * k], k, g);
        });
        for g in &buffers[..blocks.len()] {
            for (a, v) in total.iter_mut().zip(g) {
                *a += v;
            }
        }
    }
    total
}

/// What one half-iteration cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HalfStepReport {
    pub side: Option<Side>,
    pub seconds: f64,
    pub compute_seconds: f64,
    pub transfer_seconds: f64,
    pub bytes_sent: u64,
    pub bytes_min: u64,
    /// What the same half would need with no hub: the pushed rows, sent
    /// worker to worker, none gathered (0 in-process).
    #[serde(default)]
    pub bytes_min_peer: u64,
    /// Of `bytes_sent`, the solved rows workers sent each other directly
    /// (peer exchange): the next half's fixed rows.
    #[serde(default)]
    pub bytes_peer: u64,
}

pub struct HalfStepOutput {
    /// Gramian of the updated side (implicit feedback), reduced in block order.
    pub target_gram: Option<Vec<f64>>,
    /// The solved rows' objective terms, when asked: per block in row order,
    /// then over blocks in block order.
    pub terms: Option<ObjectiveTerms>,
    pub report: HalfStepReport,
}

/// Solves all rows of one side with the other side fixed.
pub trait HalfStepExecutor {
    /// Update `target` (the rows of `side`) given the fixed other side and,
    /// for implicit feedback, its Gramian. `target` holds the warm start.
    /// `terms`: also sum the solved rows' share of the objective.
    ///
    /// An executor may keep the solved rows where it solved them (a
    /// cluster's workers) and leave `fixed` and `target` as they were, until
    /// [`HalfStepExecutor::sync_state`]; `train` never reads them before.
    fn half_step(
        &mut self,
        side: Side,
        params: &SolveParams,
        fixed: &Factors,
        fixed_gram: Option<&[f64]>,
        target: &mut Factors,
        terms: Option<TermsWanted>,
    ) -> Result<HalfStepOutput, TrainError>;

    /// Evaluate the test set where the executor keeps it (a cluster: on the
    /// workers), held-out users included (`--split users`) where it holds
    /// them. `None`: the caller evaluates locally. Either way the metrics
    /// must be the same numbers.
    fn evaluate(
        &mut self,
        _cfg: &TrainConfig,
        _params: &SolveParams,
        _users: &Factors,
        _items: &Factors,
    ) -> Option<Result<TestMetrics, TrainError>> {
        None
    }

    /// Evaluate the test set from the rows where the executor keeps them,
    /// without bringing the caller's `users` and `items` up to date first (a
    /// cluster: on the workers, the item rows going worker to worker).
    /// `None`: the caller brings the state up to date and evaluates through
    /// [`HalfStepExecutor::evaluate`] or locally. The same numbers either way.
    /// Held-out users (`--split users`) are folded in where they are held,
    /// with `item_gram` (implicit feedback): the items' Gramian.
    fn evaluate_in_place(
        &mut self,
        _cfg: &TrainConfig,
        _params: &SolveParams,
        _item_gram: Option<&[f64]>,
    ) -> Option<Result<TestMetrics, TrainError>> {
        None
    }

    /// Bring `users` and `items` up to date where the latest rows were kept
    /// elsewhere (see [`HalfStepExecutor::half_step`]). `train` calls it
    /// before it reads them: to evaluate, when `on_iteration` asks for the
    /// state, and at the end.
    fn sync_state(&mut self, _users: &mut Factors, _items: &mut Factors) -> Result<(), TrainError> {
        Ok(())
    }

    /// Write the latest rows of both sides at `places` (a checkpoint's
    /// file, or a model's files, being written) where the executor keeps
    /// them (a cluster: each worker its blocks', into files under a
    /// directory they all reach), without bringing the caller's `users` and
    /// `items` up to date. `None`: the caller brings them up to date and
    /// writes them itself; the same bytes either way.
    fn write_rows(&mut self, _places: &crate::row_places::RowPlaces) -> Option<Result<(), TrainError>> {
        None
    }

    /// The caller's `users` and `items` were brought up to date from the
    /// rows [`HalfStepExecutor::write_rows`] wrote (read back with the
    /// checksum): the executor's copy is current again, as after
    /// [`HalfStepExecutor::sync_state`].
    fn rows_read_back(&mut self) {}

    /// Bytes this executor moved that no half's report holds: the test
    /// set's evaluations where it keeps the test set, and rows fetched by
    /// [`HalfStepExecutor::sync_state`] after the last half (a fetch before
    /// a later half goes into that half's report).
    fn bytes_outside_halves(&self) -> u64 {
        0
    }

    /// Of [`HalfStepExecutor::bytes_outside_halves`], the bytes workers sent
    /// each other directly (an evaluation's item rows), not through the
    /// coordinator.
    fn peer_bytes_outside_halves(&self) -> u64 {
        0
    }

    /// The caller wants the final factors in [`TrainResult::state`]. An
    /// executor that keeps the rows where they were solved answers `false`
    /// when told nobody reads them (an evaluated run a refit replaces), or,
    /// keeping the only rows, when told the caller reads them from the
    /// files written since the last half ([`HalfStepExecutor::rows_kept_in`]:
    /// the model's): the run then ends without fetching them, and its
    /// result's factors are empty.
    fn final_rows_wanted(&self) -> bool {
        true
    }

    /// The executor holds the only current rows and needs no copy of them
    /// here: `train` may start from a state without rows (see
    /// [`TrainState::rows_elsewhere`]). Reading the state then makes the
    /// executor fill it ([`HalfStepExecutor::sync_state`] on empty factors).
    fn keeps_rows(&self) -> bool {
        false
    }

    /// YᵀY of the starting item rows, per block in block order, where the
    /// starting state holds no rows ([`HalfStepExecutor::keeps_rows`]):
    /// the executor draws or reads them.
    fn starting_item_gram(&mut self) -> Result<Vec<f64>, TrainError> {
        Err(TrainError::Internal("this executor keeps no rows of its own"))
    }

    /// Rows the executor wrote ([`HalfStepExecutor::write_rows`]) at
    /// `places` were checked there without being read into the caller's
    /// state, which holds no rows: the executor's rows are those files'
    /// (a sealed checkpoint's, or the model's being saved).
    fn rows_kept_in(&mut self, _places: &crate::row_places::RowPlaces) {}
}

/// The state after an iteration, as `on_iteration` sees it. Reading it
/// ([`StateView::get`]) first brings it up to date where the executor keeps
/// the latest rows elsewhere, so an iteration whose state nobody reads moves
/// no rows.
pub struct StateView<'a> {
    state: &'a mut TrainState,
    exec: Option<&'a mut dyn HalfStepExecutor>,
    shape: crate::row_places::RowsShape,
}

impl<'a> StateView<'a> {
    /// A state that is up to date already.
    pub fn of(state: &'a mut TrainState) -> StateView<'a> {
        let shape = crate::row_places::RowsShape::of(&state.users, &state.items);
        StateView { state, exec: None, shape }
    }

    /// The state holds no rows: the executor keeps them ([`HalfStepExecutor::keeps_rows`]).
    fn rows_elsewhere(&self) -> bool {
        self.state.users.n_rows() != self.shape.n_users || self.state.items.n_rows() != self.shape.n_items
    }

    fn make_room(&mut self) {
        make_room(self.state, self.shape);
    }

    /// Write this state as a checkpoint in `dir` (see
    /// [`crate::checkpoint::write_checkpoint`]): the rows written where the
    /// executor keeps them when it can, and read back from the file into
    /// this state; else from this state brought up to date. Either way the
    /// state is up to date after it.
    pub fn checkpoint(&mut self, dir: &std::path::Path, sig: &crate::checkpoint::RunSignature) -> Result<std::path::PathBuf, TrainError> {
        use crate::checkpoint::PendingCheckpoint;
        if self.exec.is_some() {
            let pending = PendingCheckpoint::begin(dir, sig, self.state.iterations_done, self.shape())?;
            if self.rows_elsewhere() {
                // Nothing here to read them into: the checkpoint is checksummed
                // and sealed, and the executor's rows are that file's.
                let places = pending.places();
                let exec = self.exec.as_deref_mut().expect("checked");
                match exec.write_rows(&places) {
                    Some(Ok(())) => {
                        let path = pending.finish()?;
                        exec.rows_kept_in(&places.at_path(&path));
                        return Ok(path);
                    }
                    Some(Err(e)) => return Err(e),
                    // The executor cannot: the rows come here and are written below.
                    None => {}
                }
            } else {
                let mut path = None;
                let written = self.rows_written_at(&pending.places(), |rows| {
                    let (users, items) = rows.ok_or(TrainError::Internal("a state without rows took the path for one with them"))?;
                    path = Some(pending.finish_into(users, items)?);
                    Ok(())
                })?;
                if let (true, Some(path)) = (written, path) {
                    return Ok(path);
                }
            }
        }
        Ok(crate::checkpoint::write_checkpoint(dir, sig, self.get()?)?)
    }

    /// The dimensions of the state's rows (known without bringing them up to date).
    pub fn shape(&self) -> crate::row_places::RowsShape {
        self.shape
    }

    /// Have the executor write the latest rows at `places`, where it keeps
    /// them, and `read_back` take them from there into this state, which is
    /// then up to date. `Ok(false)`: the executor cannot, and nothing was
    /// read (the caller writes the rows from [`StateView::get`]).
    ///
    /// Where the state holds no rows (the executor keeps them),
    /// `read_back` gets `None`: it checks the files without keeping their
    /// rows, and the executor's rows are then those files'.
    pub fn rows_written_at(
        &mut self,
        places: &crate::row_places::RowPlaces,
        read_back: impl FnOnce(Option<(&mut Factors, &mut Factors)>) -> Result<(), TrainError>,
    ) -> Result<bool, TrainError> {
        let elsewhere = self.rows_elsewhere();
        let Some(exec) = self.exec.as_deref_mut() else {
            return Ok(false);
        };
        match exec.write_rows(places) {
            Some(Ok(())) if elsewhere => {
                read_back(None)?;
                exec.rows_kept_in(places);
                Ok(true)
            }
            Some(Ok(())) => {
                // The rows come back from the files, not from the executor.
                read_back(Some((&mut self.state.users, &mut self.state.items)))?;
                exec.rows_read_back();
                self.exec = None;
                Ok(true)
            }
            Some(Err(e)) => Err(e),
            None => Ok(false),
        }
    }

    pub fn get(&mut self) -> Result<&TrainState, TrainError> {
        if let Some(exec) = self.exec.take() {
            self.make_room();
            exec.sync_state(&mut self.state.users, &mut self.state.items)?;
        }
        Ok(self.state)
    }
}

/// What `train` calls after every iteration (progress, checkpoints); an error stops training.
pub type OnIteration<'a> = dyn FnMut(&IterationReport, &mut StateView<'_>) -> Result<(), TrainError> + 'a;

/// Test metrics through the executor, or locally when it has none to give.
///
/// Held-out users the executor did not fold in where they are held
/// ([`HalfStepExecutor::evaluate_in_place`]) are folded in here, where the
/// item factors and their Gramian are.
fn evaluate_with(
    exec: &mut dyn HalfStepExecutor,
    data: &TrainData,
    cfg: &TrainConfig,
    params: &SolveParams,
    state: &TrainState,
    item_gram: Option<&[f64]>,
    user_blocks: &crate::blocks::BlockLayout,
) -> Result<TestMetrics, TrainError> {
    if let Some(r) = exec.evaluate(cfg, params, &state.users, &state.items) {
        return r;
    }
    match data.ratings {
        Some(ds) => eval::evaluate(ds, cfg, params, &state.users, &state.items, item_gram, user_blocks),
        None if data.shape.n_scored_test == 0 => Ok(TestMetrics::default()),
        None => Err(TrainError::Internal("the executor holds the test rows and did not evaluate them")),
    }
}

/// Everything needed to continue a run: the checkpointable state.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    pub iterations_done: usize,
    pub users: Factors,
    pub items: Factors,
}

impl TrainState {
    /// A fresh run's state whose rows only the executor holds
    /// ([`HalfStepExecutor::keeps_rows`]): none here until something reads them.
    pub fn rows_elsewhere(k: usize) -> TrainState {
        TrainState {
            iterations_done: 0,
            users: Factors::zeros(0, k, false),
            items: Factors::zeros(0, k, false),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationReport {
    pub iteration: usize,
    pub seconds: f64,
    pub objective: Option<f64>,
    pub train_rmse: Option<f64>,
    /// Empty when this iteration was not evaluated (see `eval_every`).
    pub test: TestMetrics,
    pub halves: Vec<HalfStepReport>,
}

impl IterationReport {
    pub fn bytes_sent(&self) -> u64 {
        self.halves.iter().map(|h| h.bytes_sent).sum()
    }
    pub fn bytes_min(&self) -> u64 {
        self.halves.iter().map(|h| h.bytes_min).sum()
    }
    pub fn bytes_min_peer(&self) -> u64 {
        self.halves.iter().map(|h| h.bytes_min_peer).sum()
    }
    pub fn bytes_peer(&self) -> u64 {
        self.halves.iter().map(|h| h.bytes_peer).sum()
    }
    pub fn compute_seconds(&self) -> f64 {
        self.halves.iter().map(|h| h.compute_seconds).sum()
    }
    pub fn transfer_seconds(&self) -> f64 {
        self.halves.iter().map(|h| h.transfer_seconds).sum()
    }
}

pub struct TrainResult {
    /// The final factors; empty (no rows) where the executor was told
    /// nobody reads them ([`HalfStepExecutor::final_rows_wanted`]).
    pub state: TrainState,
    pub reports: Vec<IterationReport>,
    pub final_metrics: TestMetrics,
    pub params: SolveParams,
    /// [`HalfStepExecutor::bytes_outside_halves`] at the end (0 for
    /// learners without an executor).
    pub bytes_outside_halves: u64,
    /// [`HalfStepExecutor::peer_bytes_outside_halves`] at the end.
    pub peer_bytes_outside_halves: u64,
}

/// Fresh state: per-id seeded factors, zero biases.
pub fn initial_state(ds: &Dataset, cfg: &TrainConfig) -> TrainState {
    initial_state_of(&ds.user_ids, &ds.item_ids, cfg)
}

/// [`initial_state`] of the data with these ids, in row order.
pub fn initial_state_of(user_ids: &[String], item_ids: &[String], cfg: &TrainConfig) -> TrainState {
    TrainState {
        iterations_done: 0,
        users: init_factors(user_ids, Side::Users, cfg.seed, cfg.factors, cfg.init_std, cfg.has_biases()),
        items: init_factors(item_ids, Side::Items, cfg.seed, cfg.factors, cfg.init_std, cfg.has_biases()),
    }
}

/// Run the remaining iterations of `cfg` from `state` (fresh or resumed).
///
/// `on_iteration` sees every report and the state after it (for progress and
/// checkpoints); an error from it stops training.
pub fn train(
    ds: &Dataset,
    cfg: &TrainConfig,
    exec: &mut dyn HalfStepExecutor,
    layouts: &Layouts,
    state: Option<TrainState>,
    on_iteration: &mut OnIteration,
) -> Result<TrainResult, TrainError> {
    train_on(&TrainData::held(ds, &layouts.users), cfg, exec, layouts, state, on_iteration)
}

/// [`train`] on data known by its shape, the ratings held here or only by
/// the executor (see [`TrainData`]).
pub fn train_on(
    data: &TrainData,
    cfg: &TrainConfig,
    exec: &mut dyn HalfStepExecutor,
    layouts: &Layouts,
    state: Option<TrainState>,
    on_iteration: &mut OnIteration,
) -> Result<TrainResult, TrainError> {
    cfg.validate()?;
    let shape = &data.shape;
    let params = cfg.solve_params(shape.global_mean);
    let mut state = match (state, data.ratings) {
        (Some(s), _) => s,
        (None, Some(ds)) => initial_state(ds, cfg),
        (None, None) => {
            return Err(TrainError::Internal(
                "a fresh run on ratings held elsewhere needs its starting state",
            ))
        }
    };
    let rows_shape = crate::row_places::RowsShape {
        n_users: shape.n_users,
        n_items: shape.n_items,
        k: cfg.factors,
        biased: cfg.has_biases(),
    };
    let rows_elsewhere = state.users.n_rows() == 0 && state.items.n_rows() == 0 && exec.keeps_rows();
    match rows_elsewhere {
        true => check_iterations(cfg, &state)?,
        false => check_state((shape.n_users, shape.n_items), cfg, &state)?,
    }
    let implicit = cfg.is_implicit();
    let mut item_gram = match (implicit, rows_elsewhere) {
        (false, _) => None,
        (true, false) => Some(gram_by_blocks(&state.items, &layouts.items)),
        (true, true) => Some(exec.starting_item_gram()?),
    };
    let mut reports = Vec::new();
    let mut last_eval: Option<TestMetrics> = None;
    while state.iterations_done < cfg.iterations {
        let it = state.iterations_done + 1;
        let t0 = Instant::now();
        let TrainState { users, items, .. } = &mut state;
        // The objective comes with the halves: each solved row's terms, the
        // data term with the items, the last side solved.
        let objective_now = cfg.objective_every > 0 && it.is_multiple_of(cfg.objective_every);
        let (terms_u, terms_i) = match objective_now {
            true => (Some(TermsWanted::Reg), Some(TermsWanted::Full)),
            false => (None, None),
        };
        let out_u = exec
            .half_step(Side::Users, &params, items, item_gram.as_deref(), users, terms_u)
            .map_err(|e| e.in_half(Side::Users))?;
        let user_gram = out_u.target_gram;
        let out_i = exec
            .half_step(Side::Items, &params, users, user_gram.as_deref(), items, terms_i)
            .map_err(|e| e.in_half(Side::Items))?;
        if implicit {
            item_gram = Some(
                out_i
                    .target_gram
                    .ok_or(TrainError::Internal("the executor returned no Gramian for implicit feedback"))?,
            );
        }
        let seconds = t0.elapsed().as_secs_f64();
        state.iterations_done = it;
        let obj = match (out_u.terms, out_i.terms) {
            (Some(u), Some(i)) if objective_now => Some(objective_of_terms(
                &params,
                shape,
                u,
                i,
                item_gram.as_deref(),
                user_gram.as_deref(),
            )?),
            _ if objective_now => return Err(TrainError::Internal("the executor returned no objective terms")),
            _ => None,
        };
        let evaluate_now = it == cfg.iterations || (cfg.eval_every > 0 && it.is_multiple_of(cfg.eval_every));
        // Without test rows there is nothing to evaluate, and no state to read.
        let test = if evaluate_now && shape.n_scored_test > 0 {
            // Held-out users are folded in where they are held: on the workers that built them, or here.
            let in_place = exec.evaluate_in_place(cfg, &params, item_gram.as_deref());
            match in_place {
                Some(metrics) => metrics?,
                None => {
                    make_room(&mut state, rows_shape);
                    exec.sync_state(&mut state.users, &mut state.items)?;
                    evaluate_with(exec, data, cfg, &params, &state, item_gram.as_deref(), &layouts.users)?
                }
            }
        } else {
            TestMetrics::default()
        };
        if evaluate_now {
            last_eval = Some(test.clone());
        }
        let report = IterationReport {
            iteration: it,
            seconds,
            objective: obj.as_ref().map(|o| o.objective),
            train_rmse: obj.as_ref().map(|o| o.train_rmse),
            test,
            halves: vec![out_u.report, out_i.report],
        };
        tracing::debug!(iteration = it, seconds, objective = ?obj.as_ref().map(|o| o.objective), "iteration done");
        on_iteration(
            &report,
            &mut StateView {
                state: &mut state,
                exec: Some(&mut *exec),
                shape: rows_shape,
            },
        )?;
        reports.push(report);
    }
    let wanted = exec.final_rows_wanted();
    if wanted || last_eval.is_none() {
        make_room(&mut state, rows_shape);
        exec.sync_state(&mut state.users, &mut state.items)?;
    }
    let final_metrics = match last_eval {
        Some(m) => m,
        None => evaluate_with(exec, data, cfg, &params, &state, item_gram.as_deref(), &layouts.users)?,
    };
    if !wanted {
        // Not fetched: what is here is an older copy, which nobody may take for the result.
        let empty = |f: &Factors| Factors {
            matrix: ndarray::Array2::zeros((0, f.k())),
            bias: Vec::new(),
        };
        state.users = empty(&state.users);
        state.items = empty(&state.items);
    }
    Ok(TrainResult {
        state,
        reports,
        final_metrics,
        params,
        bytes_outside_halves: exec.bytes_outside_halves(),
        peer_bytes_outside_halves: exec.peer_bytes_outside_halves(),
    })
}

/// The objective from the halves' terms: the users' regularization, the
/// items' data term and regularization and, for implicit feedback, the
/// all-pairs term ⟨YᵀY, XᵀX⟩ (the same sum as [`objective`], in another order).
fn objective_of_terms(
    p: &SolveParams,
    shape: &DataShape,
    users: ObjectiveTerms,
    items: ObjectiveTerms,
    item_gram: Option<&[f64]>,
    user_gram: Option<&[f64]>,
) -> Result<ObjectiveValue, TrainError> {
    let mut loss = items.loss;
    if let Some(w) = p.implicit_weights() {
        match (item_gram, user_gram) {
            (Some(g), Some(xtx)) => loss += w.gram_scale() as f64 * dot_f64(g, xtx),
            _ => return Err(TrainError::Internal("implicit feedback without both Gramians")),
        }
    }
    Ok(ObjectiveValue {
        objective: loss + (users.reg + items.reg),
        train_rmse: (items.sq / shape.n_train.max(1) as f64).sqrt(),
    })
}

/// A state without rows (the executor keeps them) gets room for them, to be filled.
fn make_room(state: &mut TrainState, shape: crate::row_places::RowsShape) {
    if state.users.n_rows() != shape.n_users || state.items.n_rows() != shape.n_items {
        state.users = Factors::zeros(shape.n_users, shape.k, shape.biased);
        state.items = Factors::zeros(shape.n_items, shape.k, shape.biased);
    }
}

fn check_state((n_users, n_items): (usize, usize), cfg: &TrainConfig, s: &TrainState) -> Result<(), TrainError> {
    let ok = |f: &Factors, n: usize| f.n_rows() == n && f.k() == cfg.factors && (f.bias.len() == if cfg.has_biases() { n } else { 0 });
    if !ok(&s.users, n_users) || !ok(&s.items, n_items) {
        return Err(TrainError::Config("the starting factors do not match the data and settings".into()));
    }
    check_iterations(cfg, s)
}

fn check_iterations(cfg: &TrainConfig, s: &TrainState) -> Result<(), TrainError> {
    if s.iterations_done > cfg.iterations {
        // The result would be a later model than the one asked for.
        return Err(TrainError::Config(format!(
            "the starting state has {} iterations done, more than the {} asked for",
            s.iterations_done, cfg.iterations
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
