//! A cluster session: a runtime, the connected workers, and training on them.

use als_core::train::{
    initial_state, initial_state_of, train_on, HalfStepExecutor, Layouts, OnIteration, TrainConfig, TrainData, TrainResult, TrainState,
};
use anyhow::Context;
use futures::future::try_join_all;

use super::client::{connect, ClientOptions, WorkerHandle};
use super::executor::{silent, BuiltBlocks, ClusterExecutor, FaultOptions, FinalRows};
use super::ingest::{build_blocks, describe_blocks, BlocksBuilt, BlocksDescribed, DescribeAsk, IngestPlan, WorkerLost};
use super::local::LocalWorkers;
use super::ratings::OnWorkers;
use als_core::checkpoint::StartFrom;
use als_core::row_places::RowsShape;
use als_proto::pb::AdoptStep;

pub struct ClusterSession {
    rt: tokio::runtime::Runtime,
    workers: Vec<WorkerHandle>,
    local: Option<std::sync::Mutex<LocalWorkers>>,
    opts: ClientOptions,
    pub faults: FaultOptions,
    /// Test-set evaluations the workers did in the last `train` (the others ran on the coordinator).
    pub remote_evaluations: std::sync::atomic::AtomicUsize,
    /// Of those, evaluations from the workers' own rows (see the executor's field).
    pub evaluations_from_peers: std::sync::atomic::AtomicUsize,
    /// Halves the last run solved again after a loss (replays; for tests).
    pub replayed_halves: std::sync::atomic::AtomicUsize,
    /// Builds of the blocks again by the survivors in the last run (for tests).
    pub rebuilds: std::sync::atomic::AtomicUsize,
    /// The last run started without a copy of the factors here (for tests).
    pub started_without_copy: std::sync::atomic::AtomicBool,
    /// The last run's starting YᵀY came from the workers' per-block Gramians.
    pub item_gram_from_workers: std::sync::atomic::AtomicBool,
    /// Tests: see [`ClusterExecutor::lose_at_evaluation`] (the next run's).
    #[cfg(test)]
    lose_at_evaluation: std::sync::Mutex<Option<(usize, usize)>>,
    /// Tests: see [`ClusterExecutor::lose_at_starting_gram`] (the next run's).
    #[cfg(test)]
    lose_at_starting_gram: std::sync::Mutex<Option<usize>>,
    /// Files of rows (checkpoints, the model) the workers wrote in the last run.
    pub row_writes_by_workers: std::sync::atomic::AtomicUsize,
    /// Why each worker was lost, if it was, when the last `train` ended: the
    /// next run starts without it (and takes it back once it answers).
    lost: std::sync::Mutex<Vec<Option<String>>>,
    /// The job id under which the workers built blocks from the input,
    /// for the next `train` from a fresh start to adopt them.
    built: std::sync::Mutex<Option<String>>,
}

impl ClusterSession {
    /// Network I/O only: the solving happens on the rayon pool. Local
    /// workers' handlers run inside the calls themselves (on the thread that
    /// waits for a half), so one runtime thread is plenty for them; with a
    /// second, on 2 cores, it only woke to preempt the solvers.
    fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
        Ok(tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?)
    }

    /// Connect to running workers (all must answer the handshake).
    pub fn connect(addrs: &[String], opts: &ClientOptions) -> anyhow::Result<ClusterSession> {
        anyhow::ensure!(!addrs.is_empty(), "--workers needs at least one address");
        let rt = Self::runtime(2)?;
        let workers = rt.block_on(try_join_all(addrs.iter().map(|a| connect(a, opts))))?;
        Ok(ClusterSession {
            rt,
            workers,
            local: None,
            opts: opts.clone(),
            faults: FaultOptions::default(),
            remote_evaluations: Default::default(),
            evaluations_from_peers: Default::default(),
            replayed_halves: Default::default(),
            rebuilds: Default::default(),
            started_without_copy: Default::default(),
            item_gram_from_workers: Default::default(),
            #[cfg(test)]
            lose_at_evaluation: Default::default(),
            #[cfg(test)]
            lose_at_starting_gram: Default::default(),
            row_writes_by_workers: Default::default(),
            lost: Default::default(),
            built: Default::default(),
        })
    }

    /// Start `n` workers in this process and connect to them through their gRPC services (no HTTP/2, no socket).
    pub fn local(n: usize, opts: &ClientOptions) -> anyhow::Result<ClusterSession> {
        anyhow::ensure!(n > 0, "--local needs at least one worker");
        let rt = Self::runtime(1)?;
        let threads = rayon::current_num_threads();
        let local = rt.block_on(LocalWorkers::start(n, threads))?;
        let opts = ClientOptions {
            token: Some(local.token.clone()),
            ..opts.clone()
        };
        let workers = rt.block_on(try_join_all(local.addrs.iter().map(|a| connect(a, &opts))))?;
        Ok(ClusterSession {
            rt,
            workers,
            local: Some(std::sync::Mutex::new(local)),
            opts,
            faults: FaultOptions::default(),
            remote_evaluations: Default::default(),
            evaluations_from_peers: Default::default(),
            replayed_halves: Default::default(),
            rebuilds: Default::default(),
            started_without_copy: Default::default(),
            item_gram_from_workers: Default::default(),
            #[cfg(test)]
            lose_at_evaluation: Default::default(),
            #[cfg(test)]
            lose_at_starting_gram: Default::default(),
            row_writes_by_workers: Default::default(),
            lost: Default::default(),
            built: Default::default(),
        })
    }

    /// Crash in-process worker `i` (fault tests).
    pub fn kill_local_worker(&self, i: usize) {
        if let Some(l) = &self.local {
            l.lock().expect("local workers").kill(i);
        }
    }

    /// Restart in-process worker `i` on its address, empty (fault tests).
    pub fn restart_local_worker(&self, i: usize) -> anyhow::Result<()> {
        if let Some(l) = &self.local {
            let mut g = l.lock().expect("local workers");
            self.rt.block_on(g.restart(i))?;
        }
        Ok(())
    }

    pub fn addrs(&self) -> Vec<String> {
        self.workers.iter().map(|w| w.addr.clone()).collect()
    }

    /// Every worker sends its solved rows to its peers (no hub).
    pub fn all_exchange(&self) -> bool {
        self.workers.iter().all(WorkerHandle::exchanges_rows)
    }

    /// Have the workers build the blocks of `plan`'s input, each reading a
    /// share of it; the next [`Self::train`] adopts them (or, resumed,
    /// takes them with its rows) instead of shipping its own. Only the
    /// live workers build: a worker lost meanwhile is found by a health
    /// check and the build starts again without it, a bounded number of
    /// times; its blocks are built where the job will move them.
    pub fn build_blocks(&self, plan: &IngestPlan) -> anyhow::Result<BlocksBuilt> {
        for _ in 0..self.workers.len() {
            let alive = self.alive();
            let job_id = format!("job-{}", super::local::random_token());
            match self.rt.block_on(build_blocks(&self.workers, &alive, &job_id, plan, &self.faults)) {
                Ok(built) => {
                    if let Ok(mut b) = self.built.lock() {
                        *b = Some(job_id);
                    }
                    return Ok(built);
                }
                Err(e) if e.is::<WorkerLost>() && self.lose_silent(&alive) => {
                    tracing::warn!("a worker was lost while the blocks were built ({e:#}): building them again without it");
                }
                Err(e) => return Err(e),
            }
        }
        Err(WorkerLost("workers kept being lost while the blocks were built".into()).into())
    }

    /// Per worker, whether it is alive (not lost in an earlier run or build).
    fn alive(&self) -> Vec<bool> {
        let lost = self.lost.lock().map(|l| l.clone()).unwrap_or_default();
        (0..self.workers.len()).map(|w| lost.get(w).is_none_or(|c| c.is_none())).collect()
    }

    /// Mark lost the workers of `alive` that do not answer a health check;
    /// whether there was one.
    fn lose_silent(&self, alive: &[bool]) -> bool {
        let live = (0..self.workers.len())
            .filter(|&w| alive[w])
            .map(|w| (w, self.workers[w].clone()))
            .collect();
        let silent = self.rt.block_on(silent(live, self.faults.worker_timeout));
        let Ok(mut lost) = self.lost.lock() else {
            return false;
        };
        lost.resize(self.workers.len(), None);
        for (w, why) in &silent {
            tracing::warn!(worker = %self.workers[*w].addr, "worker lost: {why}");
            lost[*w] = Some(why.clone());
        }
        !silent.is_empty()
    }

    /// What a run on a coordinator that read none of the input needs of the
    /// blocks the last [`Self::build_blocks`] built (before a run adopts
    /// them): where their ids go in the model's files, and, where it keeps
    /// a copy of the rows, their ids and routes.
    pub fn describe_blocks(&self, plan: &IngestPlan, built: &BlocksBuilt, min_pos: f32) -> anyhow::Result<BlocksDescribed> {
        let job_id = self
            .built
            .lock()
            .ok()
            .and_then(|b| b.clone())
            .context("no blocks were built to describe")?;
        let alive = self.alive();
        // Workers that do not send each other rows get the fixed rows from
        // here: this process keeps a copy of the rows, drawn from the ids,
        // and needs what each block references.
        let copy = !self.workers.iter().all(WorkerHandle::exchanges_rows);
        let ask = DescribeAsk {
            min_pos,
            references: copy,
            ids: copy,
        };
        self.rt
            .block_on(describe_blocks(&self.workers, &alive, &job_id, plan, built, ask, &self.faults))
    }

    /// Train `cfg` on the workers, from `state` or a fresh start.
    // The run's parts as the callers hold them; a struct of them would only be unpacked here.
    #[allow(clippy::too_many_arguments)]
    pub fn train<'a>(
        &self,
        data: &TrainData<'a>,
        on_workers: Option<&'a OnWorkers<'a>>,
        cfg: &TrainConfig,
        layouts: &Layouts,
        start: Option<StartFrom>,
        final_rows: FinalRows,
        on_iteration: &mut OnIteration,
    ) -> anyhow::Result<TrainResult> {
        cfg.validate().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let built = self.built.lock().ok().and_then(|mut b| b.take());
        // Where the workers built the blocks, hold every row (and the
        // held-out users) and send them to each other, the coordinator keeps
        // no copy of the rows (the executor's snapshot is elsewhere).
        let exchange = self.workers.iter().all(WorkerHandle::exchanges_rows);
        let without_copy = built.is_some() && exchange && data.ratings.is_none();
        let (k, biased) = (cfg.factors, cfg.has_biases());
        let rows_shape = RowsShape {
            n_users: data.shape.n_users,
            n_items: data.shape.n_items,
            k,
            biased,
        };
        // Blocks built by the workers start from the initial rows, drawn
        // from their ids; a resumed run's rows are read from its checkpoint
        // by the workers where it lies, or sent from here with a copy.
        let (job_id, built, state) = match (built, start) {
            (Some(id), None) => (
                id,
                Some(BuiltBlocks::Adopt(AdoptStep {
                    seed: cfg.seed,
                    init_std: cfg.init_std,
                })),
                None,
            ),
            // With nothing left to train, the checkpoint's rows are the model: read here below.
            (Some(id), Some(StartFrom::Checkpoint(c))) if without_copy && c.iterations_done < cfg.iterations => {
                anyhow::ensure!(
                    c.shape == rows_shape,
                    "--resume: checkpoint {} holds rows of another shape than this run's",
                    c.path.display()
                );
                tracing::info!(checkpoint = %c.path.display(), "the workers read the checkpoint's rows where it lies");
                let state = TrainState {
                    iterations_done: c.iterations_done,
                    ..TrainState::rows_elsewhere(k)
                };
                (id, Some(BuiltBlocks::FromFile(Box::new(c.places))), Some(state))
            }
            (Some(id), Some(s)) => (id, Some(BuiltBlocks::WithRows), Some(s.into_state().context("--resume")?)),
            (None, s) => (
                format!("job-{}", super::local::random_token()),
                None,
                s.map(StartFrom::into_state).transpose().context("--resume")?,
            ),
        };
        let keep_no_copy = matches!(built, Some(BuiltBlocks::Adopt(_))) && without_copy;
        let state = match (state, data.ratings, on_workers) {
            (Some(s), _, _) => s,
            (None, Some(ds), _) => initial_state(ds, cfg),
            (None, None, Some(_)) if keep_no_copy => TrainState::rows_elsewhere(cfg.factors),
            // The blocks the workers built start from the same rows, drawn from the same ids.
            (None, None, Some(w)) => match &w.described.ids {
                Some(ids) => initial_state_of(&ids.users, &ids.items, cfg),
                None => anyhow::bail!("internal error: a copy of the rows here needs the blocks' ids, which were not described"),
            },
            (None, None, None) => anyhow::bail!("a fresh run needs the ratings here or the workers' description of their blocks"),
        };
        let params = cfg.solve_params(data.shape.global_mean);
        let lost = self.lost.lock().map(|l| l.clone()).unwrap_or_default();
        let mut exec = ClusterExecutor::start(
            self.rt.handle().clone(),
            self.workers.clone(),
            &lost,
            self.opts.clone(),
            self.faults.clone(),
            *data,
            on_workers,
            cfg.min_pos,
            &params,
            layouts,
            &state,
            job_id,
            built,
        )?;
        #[cfg(test)]
        {
            exec.lose_at_evaluation = self.lose_at_evaluation.lock().ok().and_then(|mut l| l.take());
            exec.lose_at_starting_gram = self.lose_at_starting_gram.lock().ok().and_then(|mut l| l.take());
        }
        self.started_without_copy
            .store(exec.keeps_rows(), std::sync::atomic::Ordering::Relaxed);
        if exec.keeps_rows() {
            tracing::info!(
                "this coordinator keeps no copy of the factors: the workers hold them, and a loss replays \
                 from the initial rows or the last checkpoint they wrote"
            );
        }
        exec.set_halves(2 * cfg.iterations.saturating_sub(state.iterations_done));
        exec.final_rows = final_rows;
        let res = train_on(data, cfg, &mut exec, layouts, Some(state), on_iteration);
        exec.finish();
        if let Ok(mut l) = self.lost.lock() {
            *l = exec.lost_workers();
        }
        if exec.remote_evaluations > 0 {
            tracing::info!(
                evaluations = exec.remote_evaluations,
                from_peers = exec.evaluations_from_peers,
                bytes = exec.eval_bytes,
                "test set evaluated on the workers"
            );
        }
        self.remote_evaluations
            .store(exec.remote_evaluations, std::sync::atomic::Ordering::Relaxed);
        self.evaluations_from_peers
            .store(exec.evaluations_from_peers, std::sync::atomic::Ordering::Relaxed);
        self.replayed_halves
            .store(exec.replayed_halves, std::sync::atomic::Ordering::Relaxed);
        self.rebuilds.store(exec.rebuilds, std::sync::atomic::Ordering::Relaxed);
        self.item_gram_from_workers
            .store(exec.item_gram_from_workers, std::sync::atomic::Ordering::Relaxed);
        self.row_writes_by_workers
            .store(exec.row_writes_by_workers, std::sync::atomic::Ordering::Relaxed);
        if exec.row_writes_by_workers > 0 {
            tracing::info!(
                writes = exec.row_writes_by_workers,
                "rows written by the workers (checkpoints, the model)"
            );
        }
        Ok(res?)
    }

    /// Stop in-process workers (remote ones keep running).
    pub fn shutdown(self) -> anyhow::Result<()> {
        if let Some(l) = self.local {
            l.into_inner().map_err(|_| anyhow::anyhow!("local workers poisoned"))?.shutdown();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use als_core::data::Dataset;
    use als_core::data::{DuplicatePolicy, RawRatings};
    use als_core::rng::SplitMix64;
    use als_core::solve::{Confidence, ImplicitLoss, RegScaling, SolverKind};
    use als_core::train::train;
    use als_core::train::{ImplicitConfig, IterationReport, LocalExecutor};

    /// A fresh run of `cfg` on the cluster, its final rows read.
    fn cluster_train(
        s: &ClusterSession,
        ds: &Dataset,
        cfg: &TrainConfig,
        layouts: &Layouts,
        on: &mut OnIteration,
    ) -> anyhow::Result<TrainResult> {
        s.train(
            &TrainData::held(ds, &layouts.users),
            None,
            cfg,
            layouts,
            None,
            FinalRows::Wanted,
            on,
        )
    }

    /// Five iterations of `factors`, evaluated after each: explicit
    /// (Cholesky) or implicit (α 2, CG warm-started, 3 steps).
    fn evaluated_config(implicit: bool, factors: usize) -> TrainConfig {
        TrainConfig {
            factors,
            iterations: 5,
            eval_every: 1,
            implicit: implicit.then(|| ImplicitConfig::hu(2.0, Confidence::Linear)),
            solver: if implicit {
                SolverKind::Cg { steps: 3 }
            } else {
                SolverKind::Cholesky
            },
            ..Default::default()
        }
    }

    /// Random 1..5 ratings on 15% of the pairs; every 5th row is a test row.
    fn small_dataset() -> Dataset {
        dataset_with_density(0.15)
    }

    /// Random 1..5 ratings on a `density` of the pairs and one per user.
    fn dataset_with_density(density: f64) -> Dataset {
        let mut rng = SplitMix64::new(3);
        let (users, items) = (300usize, 150usize);
        let mut raw = RawRatings {
            source: "test".into(),
            user_tokens: (0..users).map(|u| format!("u{u}")).collect(),
            item_tokens: (0..items).map(|i| format!("i{i}")).collect(),
            ..Default::default()
        };
        for u in 0..users {
            for i in 0..items {
                if rng.next_f64() < density || i == u % items {
                    raw.users.push(u as u32);
                    raw.items.push(i as u32);
                    raw.ratings.push((1 + rng.next_u64() % 5) as f32);
                }
            }
        }
        let (test, train): (Vec<usize>, Vec<usize>) = (0..raw.len()).partition(|r| r % 5 == 0);
        Dataset::build((&raw, &train), Some((&raw, &test)), DuplicatePolicy::Last).unwrap()
    }

    #[test]
    fn one_two_three_workers_equal_the_single_process_path() {
        let dense = small_dataset();
        // Sparse enough that no block references every row of the other side.
        let sparse = dataset_with_density(0.01);
        let configs = [
            (
                &dense,
                TrainConfig {
                    factors: 8,
                    iterations: 10,
                    lambda: 0.05,
                    ..Default::default()
                },
            ),
            (
                &dense,
                TrainConfig {
                    factors: 8,
                    iterations: 10,
                    lambda: 0.05,
                    reg_scaling: RegScaling::None,
                    implicit: Some(ImplicitConfig::hu(5.0, Confidence::Linear)),
                    solver: SolverKind::Cg { steps: 3 },
                    ..Default::default()
                },
            ),
            // iALS: a worker holds only the fixed rows its blocks reference,
            // and λ·(n + α₀·N)^ν still counts all N of them.
            (
                &sparse,
                TrainConfig {
                    factors: 8,
                    iterations: 5,
                    lambda: 0.01,
                    implicit: Some(ImplicitConfig {
                        alpha: 1.0,
                        confidence: Confidence::Linear,
                        loss: ImplicitLoss::Ials {
                            unobserved_weight: 0.2,
                            reg_exponent: 1.0,
                            confidence_weights: false,
                        },
                    }),
                    solver: SolverKind::Cg { steps: 3 },
                    init_std: Some(0.1),
                    ..Default::default()
                },
            ),
            // iALS++ block solves, with a block size that does not divide k.
            (
                &sparse,
                TrainConfig {
                    factors: 8,
                    iterations: 3,
                    lambda: 0.01,
                    implicit: Some(ImplicitConfig::hu(2.0, Confidence::Linear)),
                    solver: SolverKind::Ialspp { block: 3, sweeps: 1 },
                    ..Default::default()
                },
            ),
        ];
        for (ds, cfg) in configs {
            let ds: &Dataset = ds;
            let layouts = Layouts::for_dataset(ds, cfg.blocks);
            let mut local = LocalExecutor::new(ds, layouts.clone());
            let want = train(ds, &cfg, &mut local, &layouts, None, &mut |_, _| Ok(())).unwrap();
            for n in 1..=3 {
                let s = ClusterSession::local(n, &ClientOptions::default()).unwrap();
                let got = cluster_train(&s, ds, &cfg, &layouts, &mut |_, _| Ok(())).unwrap();
                let remote = s.remote_evaluations.load(std::sync::atomic::Ordering::Relaxed);
                let from_peers = s.evaluations_from_peers.load(std::sync::atomic::Ordering::Relaxed);
                s.shutdown().unwrap();
                assert_eq!(got.state, want.state, "{n} workers, implicit={}", cfg.is_implicit());
                // Evaluated on the workers, to the same numbers as on the
                // coordinator, every time from their own and their peers' rows.
                assert_eq!(remote, cfg.iterations);
                assert_eq!(from_peers, cfg.iterations, "{n} workers");
                assert_eq!(got.final_metrics, want.final_metrics, "{n} workers");
                // The evaluations' item rows went worker to worker, and are
                // told apart from the coordinator's own bytes outside the halves.
                let (outside, peer) = (got.bytes_outside_halves, got.peer_bytes_outside_halves);
                assert_eq!(
                    peer > 0,
                    n > 1,
                    "{n} workers: {peer} of {outside} bytes outside the halves between peers"
                );
                assert!(peer < outside, "{n} workers: {peer} of {outside}");
                let tests = |r: &TrainResult| r.reports.iter().map(|x| x.test.clone()).collect::<Vec<_>>();
                assert_eq!(tests(&got), tests(&want), "{n} workers");
                // The objective, summed from the workers' block terms, to the same bits.
                let objectives = |r: &TrainResult| r.reports.iter().map(|x| (x.objective, x.train_rmse)).collect::<Vec<_>>();
                assert!(objectives(&want).iter().all(|o| o.0.is_some() && o.1.is_some()));
                assert_eq!(objectives(&got), objectives(&want), "{n} workers");
                let r = &got.reports[0];
                assert!(r.bytes_sent() >= r.bytes_min_peer() && r.bytes_min() > 0);
                // Without the hub the solved rows are not gathered; one worker needs no peer.
                assert!(r.bytes_min_peer() < r.bytes_min());
                assert_eq!(r.bytes_min_peer() == 0, n == 1, "{n} workers");
                // Rows go worker to worker, the first half's fixed side too (sent
                // before its solve, not pushed): as many as the no-hub minimum,
                // each with its index (and bias); a block's rows go to each peer
                // as one message with a header.
                let k = cfg.factors as u64;
                let messages = (layouts.users.n_blocks() + layouts.items.n_blocks()) as u64 * (n as u64 - 1) * cfg.iterations as u64;
                let total = |f: fn(&IterationReport) -> u64| got.reports.iter().map(f).sum::<u64>();
                assert_eq!(total(IterationReport::bytes_peer) > 0, n > 1, "{n} workers");
                assert!(
                    total(IterationReport::bytes_peer) <= total(IterationReport::bytes_min_peer) * (k + 2) / k + 100 * messages,
                    "{n} workers: {} peer bytes, minimum {}",
                    total(IterationReport::bytes_peer),
                    total(IterationReport::bytes_min_peer)
                );
                assert!(
                    total(IterationReport::bytes_peer) >= total(IterationReport::bytes_min_peer),
                    "{n} workers"
                );
                if !cfg.is_implicit() {
                    // A push leaves out the worker's own rows: past the routing
                    // minimum (factors only) are the biases and the peer rows'
                    // indexes, one each per k factors, and the messages' headers
                    // (~100 bytes each).
                    // The first iteration also ships the blocks and sends the
                    // routes; from the second on, each half's fixed rows came
                    // from the half before.
                    let messages = 2 * (2 * n + cfg.blocks + n * n) as u64;
                    for r in &got.reports[1..] {
                        let allowed = r.bytes_min() * (k + 2) / k * 21 / 20 + 100 * messages;
                        assert!(
                            r.bytes_sent() <= allowed,
                            "{n} workers, iteration {}: {} bytes sent, minimum {}",
                            r.iteration,
                            r.bytes_sent(),
                            r.bytes_min()
                        );
                    }
                }
            }
        }
    }

    /// With nothing reading the model between iterations (no checkpoint; an
    /// evaluation every iteration, which the workers do from their own and
    /// their peers' rows) the solved rows stay on the workers: once the
    /// blocks are shipped (the first half's fixed side goes worker to worker
    /// too), the coordinator moves only headers, Gramians and objective
    /// terms until the end, when it fetches the model, which is the
    /// single-process one.
    #[test]
    fn rows_stay_on_the_workers_until_the_model_is_read() {
        let ds = small_dataset();
        for implicit in [false, true] {
            let cfg = evaluated_config(implicit, 6);
            let layouts = Layouts::for_dataset(&ds, cfg.blocks);
            let mut local = LocalExecutor::new(&ds, layouts.clone());
            let want = train(&ds, &cfg, &mut local, &layouts, None, &mut |_, _| Ok(())).unwrap();
            let s = ClusterSession::local(3, &ClientOptions::default()).unwrap();
            let got = cluster_train(&s, &ds, &cfg, &layouts, &mut |_, _| Ok(())).unwrap();
            let from_peers = s.evaluations_from_peers.load(std::sync::atomic::Ordering::Relaxed);
            // A run whose final rows nobody reads leaves them on the workers: the same metrics, no fetch.
            let unread = s
                .train(
                    &TrainData::held(&ds, &layouts.users),
                    None,
                    &cfg,
                    &layouts,
                    None,
                    FinalRows::NotRead,
                    &mut |_, _| Ok(()),
                )
                .unwrap();
            s.shutdown().unwrap();
            assert_eq!(unread.final_metrics, want.final_metrics, "implicit={implicit}");
            assert!(
                unread.state.users.n_rows() == 0 && unread.state.items.n_rows() == 0,
                "implicit={implicit}"
            );
            let model = (ds.n_users() + ds.n_items()) as u64 * cfg.factors as u64 * 4;
            assert!(
                unread.bytes_outside_halves + model <= got.bytes_outside_halves,
                "implicit={implicit}: {} bytes outside the halves unread, {} read",
                unread.bytes_outside_halves,
                got.bytes_outside_halves
            );
            assert_eq!(got.state, want.state, "implicit={implicit}");
            assert_eq!(from_peers, cfg.iterations, "implicit={implicit}");
            let tests = |r: &TrainResult| r.reports.iter().map(|x| x.test.clone()).collect::<Vec<_>>();
            assert_eq!(tests(&got), tests(&want), "implicit={implicit}");
            for r in &got.reports[1..] {
                let coordinator = r.bytes_sent() - r.bytes_peer();
                // Per half: a header (and Gramian triangle, implicit) per block, a
                // request (with the fixed Gramian's triangle, implicit) and a summary per worker.
                let (k, blocks, workers) = (cfg.factors as u64, cfg.blocks as u64, 3);
                let gram = |n: u64| if implicit { 8 * n } else { 0 };
                let small = 2 * (blocks * (128 + gram(k * (k + 1) / 2)) + workers * (256 + gram(k * (k + 1) / 2)));
                assert!(
                    coordinator <= small && coordinator * 4 < r.bytes_min(),
                    "implicit={implicit}, iteration {}: the coordinator moved {coordinator} bytes (hub minimum {})",
                    r.iteration,
                    r.bytes_min()
                );
            }
            // The fetch at the end (every row of both sides) and the final
            // evaluation are in no half's report, but in the run's.
            assert!(
                got.bytes_outside_halves >= model,
                "implicit={implicit}: {} bytes outside the halves, the model alone is {model}",
                got.bytes_outside_halves
            );
            assert_eq!(want.bytes_outside_halves, 0);
        }
    }

    /// A worker lost while the rows are on the workers (no evaluation or
    /// checkpoint since the start) costs a replay from the last copy the
    /// coordinator fetched: the model is still the fault-free one. The state
    /// read at iteration 3 (a checkpoint would) is the fault-free one too.
    #[test]
    fn a_worker_lost_between_fetches_is_recovered_by_a_replay() {
        let ds = small_dataset();
        let cfg = TrainConfig {
            factors: 6,
            iterations: 7,
            eval_every: 0,
            implicit: Some(ImplicitConfig::hu(2.0, Confidence::Linear)),
            solver: SolverKind::Cg { steps: 3 },
            ..Default::default()
        };
        let layouts = Layouts::for_dataset(&ds, cfg.blocks);
        let mut local = LocalExecutor::new(&ds, layouts.clone());
        let mut want_mid = None;
        let want = train(&ds, &cfg, &mut local, &layouts, None, &mut |r, st| {
            if r.iteration == 3 {
                want_mid = Some(st.get()?.clone());
            }
            Ok(())
        })
        .unwrap();
        for (kill_at, read_at) in [(2, 3), (4, 3), (5, 0)] {
            let s = ClusterSession::local(3, &ClientOptions::default()).unwrap();
            let mut mid = None;
            let got = cluster_train(&s, &ds, &cfg, &layouts, &mut |r, st| {
                if r.iteration == read_at {
                    mid = Some(st.get()?.clone());
                }
                if r.iteration == kill_at {
                    s.kill_local_worker(1);
                }
                Ok(())
            })
            .unwrap();
            assert_eq!(got.state, want.state, "killed after iteration {kill_at}");
            assert_eq!(
                got.reports.iter().map(|r| r.objective).collect::<Vec<_>>(),
                want.reports.iter().map(|r| r.objective).collect::<Vec<_>>()
            );
            if read_at > 0 {
                assert_eq!(mid, want_mid, "the state read at iteration {read_at}");
            }
            assert!(s.lost.lock().unwrap()[1].is_some(), "worker 1 was lost");
            // The halves since the last fetch: iteration 3's when it was read, else from the start.
            let since = if read_at > 0 && kill_at > read_at {
                kill_at - read_at
            } else {
                kill_at
            };
            assert_eq!(
                s.replayed_halves.load(std::sync::atomic::Ordering::Relaxed),
                2 * since,
                "killed after {kill_at}"
            );
            s.shutdown().unwrap();
        }
    }

    /// Hu's observed part of the loss, c(p − s)² − s², is negative where
    /// high confidence pulls observed scores near 1: blocks whose objective
    /// terms sum below zero are valid, and the objective matches in-process.
    #[test]
    fn negative_observed_loss_terms_are_accepted() {
        let ds = small_dataset();
        let alpha = 50.0;
        let cfg = TrainConfig {
            factors: 8,
            iterations: 4,
            lambda: 0.01,
            reg_scaling: RegScaling::None,
            implicit: Some(ImplicitConfig::hu(alpha, Confidence::Linear)),
            ..Default::default()
        };
        let layouts = Layouts::for_dataset(&ds, cfg.blocks);
        let mut local = LocalExecutor::new(&ds, layouts.clone());
        let want = train(&ds, &cfg, &mut local, &layouts, None, &mut |_, _| Ok(())).unwrap();
        // Every item block's observed part is below zero at the end.
        let (users, items) = (&want.state.users, &want.state.items);
        for b in 0..layouts.items.n_blocks() {
            let mut observed = 0.0;
            for i in layouts.items.range(b) {
                let (cols, vals) = ds.by_item.row(i);
                for (&u, &r) in cols.iter().zip(vals) {
                    let s: f64 = users
                        .row(u as usize)
                        .iter()
                        .zip(items.row(i))
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum();
                    let c = 1.0 + alpha as f64 * r as f64;
                    observed += c * (1.0 - s).powi(2) - s * s;
                }
            }
            assert!(observed < 0.0, "block {b}: observed part {observed} is not negative");
        }
        let s = ClusterSession::local(2, &ClientOptions::default()).unwrap();
        let got = cluster_train(&s, &ds, &cfg, &layouts, &mut |_, _| Ok(())).unwrap();
        s.shutdown().unwrap();
        assert_eq!(got.state, want.state);
        let objectives = |r: &TrainResult| r.reports.iter().map(|x| x.objective).collect::<Vec<_>>();
        assert_eq!(objectives(&got), objectives(&want));
    }

    /// A row solve that fails (λ = 0 with rows of fewer ratings than factors)
    /// ends the run at once with the single-process path's message; it is
    /// not a lost worker to retry elsewhere, and the workers take the next job.
    #[test]
    fn a_failed_solve_ends_the_run_with_the_in_process_error_and_workers_stay_usable() {
        let ds = small_dataset();
        // Rows of about 20 ratings, 40 factors: singular normal equations without λ.
        let bad = TrainConfig {
            factors: 40,
            iterations: 2,
            lambda: 0.0,
            ..Default::default()
        };
        let layouts = Layouts::for_dataset(&ds, bad.blocks);
        let mut local = LocalExecutor::new(&ds, layouts.clone());
        let want = train(&ds, &bad, &mut local, &layouts, None, &mut |_, _| Ok(()))
            .err()
            .expect("λ = 0 with sparse rows fails in-process")
            .to_string();
        assert!(want.contains("not positive definite"), "{want}");
        for n in 1..=3 {
            let s = ClusterSession::local(n, &ClientOptions::default()).unwrap();
            let t0 = std::time::Instant::now();
            let err = cluster_train(&s, &ds, &bad, &layouts, &mut |_, _| Ok(()))
                .err()
                .expect("the cluster fails too");
            assert_eq!(format!("{err:#}"), want, "{n} workers");
            assert!(t0.elapsed() < std::time::Duration::from_secs(60), "{n} workers: not retried");
            let good = TrainConfig {
                lambda: 0.05,
                ..bad.clone()
            };
            let got = cluster_train(&s, &ds, &good, &layouts, &mut |_, _| Ok(())).unwrap();
            let mut local = LocalExecutor::new(&ds, layouts.clone());
            let want_good = train(&ds, &good, &mut local, &layouts, None, &mut |_, _| Ok(())).unwrap();
            assert_eq!(got.state, want_good.state, "{n} workers after a failed job");
            s.shutdown().unwrap();
        }
    }

    /// A biased explicit model evaluated every iteration, a worker lost
    /// after the second: each evaluation gives the single-process metrics,
    /// from the workers' own rows before the loss and from the
    /// coordinator's copy, streamed to the survivors, after it (so that a
    /// restarted worker could take its blocks back); the model is the
    /// single-process one.
    #[test]
    fn evaluations_around_a_loss_give_the_single_process_metrics() {
        let ds = small_dataset();
        let cfg = TrainConfig {
            factors: 5,
            iterations: 5,
            eval_every: 1,
            ..Default::default()
        };
        assert!(cfg.has_biases() && !cfg.is_implicit());
        let layouts = Layouts::for_dataset(&ds, cfg.blocks);
        let mut local = LocalExecutor::new(&ds, layouts.clone());
        let want = train(&ds, &cfg, &mut local, &layouts, None, &mut |_, _| Ok(())).unwrap();
        let s = ClusterSession::local(3, &ClientOptions::default()).unwrap();
        let got = cluster_train(&s, &ds, &cfg, &layouts, &mut |r, _| {
            if r.iteration == 2 {
                s.kill_local_worker(1);
            }
            Ok(())
        })
        .unwrap();
        let from_peers = s.evaluations_from_peers.load(std::sync::atomic::Ordering::Relaxed);
        let remote = s.remote_evaluations.load(std::sync::atomic::Ordering::Relaxed);
        s.shutdown().unwrap();
        assert_eq!(got.state, want.state);
        assert_eq!(remote, cfg.iterations, "every evaluation on the workers");
        let tests = |r: &TrainResult| r.reports.iter().map(|x| x.test.clone()).collect::<Vec<_>>();
        assert!(want.reports.iter().all(|r| r.test.rmse.is_some()));
        assert_eq!(tests(&got), tests(&want));
        assert_eq!(from_peers, 2, "before the loss, from the workers' own rows");
    }

    /// Checkpoints whose rows the workers write into the file are the bytes
    /// the single-process path writes, biased explicit and implicit, and
    /// so is the first one after a worker is lost (its blocks' rows come
    /// back by a replay, the coordinator writing that one). The rows read
    /// back from a checkpoint are the copy a loss replays from.
    #[test]
    fn checkpoints_written_by_the_workers_are_the_single_process_bytes() {
        use als_core::checkpoint::RunSignature;
        let ds = small_dataset();
        let explicit = TrainConfig {
            factors: 5,
            iterations: 4,
            ..Default::default()
        };
        let implicit = TrainConfig {
            implicit: Some(ImplicitConfig::hu(2.0, Confidence::Linear)),
            solver: SolverKind::Cg { steps: 3 },
            ..explicit.clone()
        };
        let dir = tempfile::tempdir().unwrap();
        for (case, cfg) in [explicit, implicit].into_iter().enumerate() {
            assert_eq!(cfg.has_biases(), case == 0);
            let sig = RunSignature::new(&ds.fingerprint, &cfg);
            let layouts = Layouts::for_dataset(&ds, cfg.blocks);
            let checkpoints = |sub: &str, exec: &mut dyn FnMut(&mut OnIteration) -> TrainResult| {
                let at = dir.path().join(format!("{sub}-{case}"));
                let mut bytes = Vec::new();
                let result = exec(&mut |_, st| {
                    let path = st.checkpoint(&at, &sig)?;
                    bytes.push(std::fs::read(path).unwrap());
                    Ok(())
                });
                (result, bytes)
            };
            let (want, want_bytes) = checkpoints("local", &mut |cb| {
                let mut local = LocalExecutor::new(&ds, layouts.clone());
                train(&ds, &cfg, &mut local, &layouts, None, cb).unwrap()
            });
            let s = ClusterSession::local(3, &ClientOptions::default()).unwrap();
            let (got, got_bytes) = checkpoints("cluster", &mut |cb| {
                cluster_train(&s, &ds, &cfg, &layouts, &mut |r, st| {
                    if r.iteration == 2 {
                        s.kill_local_worker(1);
                    }
                    cb(r, st)
                })
                .unwrap()
            });
            let by_workers = s.row_writes_by_workers.load(std::sync::atomic::Ordering::Relaxed);
            let replayed = s.replayed_halves.load(std::sync::atomic::Ordering::Relaxed);
            s.shutdown().unwrap();
            // The loss replays from the first checkpoint's rows, read back from its file: one iteration.
            assert_eq!(replayed, 2, "case {case}");
            assert_eq!(got.state, want.state, "case {case}");
            assert_eq!(got_bytes.len(), cfg.iterations);
            for (it, (g, w)) in got_bytes.iter().zip(&want_bytes).enumerate() {
                assert!(g == w, "case {case}: checkpoint {} differs", it + 1);
            }
            // The first two before the loss; after it, at least the last.
            assert!(by_workers >= 3, "case {case}: the workers wrote {by_workers} checkpoints");
        }
    }

    /// A coordinator that read none of the input trains on the blocks the
    /// workers built and described, the single-process model bit for bit;
    /// a lost worker's blocks are built again by the survivors, and a
    /// restarted worker's by all, so it never reads the input.
    #[test]
    fn a_coordinator_without_the_ratings_never_reads_them_even_after_a_loss() {
        use crate::cluster::ingest::IngestPlan;
        use als_core::checkpoint::RunSignature;
        use als_core::data::split::split_rows;
        use als_core::data::{load_ratings, LoadOptions, SplitSpec};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let mut rng = SplitMix64::new(21);
        let mut text = String::from("user,item,rating\n");
        for u in 0..90 {
            for i in 0..60 {
                if rng.next_u64() % 100 < 15 || i == u % 60 {
                    text.push_str(&format!("u{u},i{i},{}\n", 1 + rng.next_u64() % 5));
                }
            }
        }
        std::fs::write(&path, text).unwrap();
        let (load, split) = (LoadOptions::default(), SplitSpec::Ratio { test_frac: 0.2, seed: 42 });
        let raw = load_ratings(&path, &load).unwrap();
        let (train_rows, test_rows) = split_rows(&raw, &split).unwrap();
        let ds_rows = Dataset::build((&raw, &train_rows), Some((&raw, &test_rows)), DuplicatePolicy::Last).unwrap();
        // Whole users held out: the workers fold them in at evaluations.
        let holdout = als_core::data::split::UserHoldout::Ratio { frac: 0.2, seed: 42 };
        let user_split = als_core::data::split::split_users(&raw, holdout).unwrap();
        let ds_users = Dataset::build_user_split(&raw, &user_split, DuplicatePolicy::Last).unwrap();
        /// One run of the table below.
        #[derive(Default, Clone, Copy)]
        struct Case {
            implicit: bool,
            /// Users held out (`--split users`) instead of test rows.
            users: bool,
            /// Kill worker 1 after iteration 2 (3 when resumed).
            kill: bool,
            /// Kill worker 1 once the blocks are described, before the run
            /// starts: its blocks are built again before the starting YᵀY.
            kill_before_start: bool,
            /// Worker 1 taken as lost as it answers for the starting YᵀY:
            /// its blocks move, and every block's Gramian is asked again.
            lose_at_starting_gram: bool,
            /// Restart it after iteration 3.
            restart: bool,
            /// Workers taken as lost as the first evaluation from peers'
            /// rows, then the first streamed one, start.
            lose_at_evaluation: Option<(usize, usize)>,
            /// A checkpoint after every iteration, written by the workers.
            checkpoints: bool,
            /// Start from rows given here, so the coordinator keeps a copy.
            copy: bool,
            /// A byte of the first checkpoint changed before the kill, so the replay from it fails.
            corrupt: bool,
            /// Resumed from the checkpoint of a run of two iterations.
            resume: bool,
            /// The workers are taken as not sending rows to peers: the
            /// coordinator keeps a copy and pushes each half's fixed rows,
            /// to the routes the workers told it of.
            no_exchange: bool,
        }
        let lost_at_evaluation = Some((1, 2));
        let cases = [
            Case::default(),
            Case {
                kill: true,
                ..Case::default()
            },
            Case {
                implicit: true,
                kill: true,
                checkpoints: true,
                ..Case::default()
            },
            Case {
                kill: true,
                restart: true,
                checkpoints: true,
                ..Case::default()
            },
            Case {
                kill: true,
                restart: true,
                ..Case::default()
            },
            Case {
                kill: true,
                restart: true,
                copy: true,
                ..Case::default()
            },
            Case {
                lose_at_evaluation: lost_at_evaluation,
                copy: true,
                ..Case::default()
            },
            Case {
                implicit: true,
                lose_at_evaluation: lost_at_evaluation,
                copy: true,
                ..Case::default()
            },
            Case {
                implicit: true,
                lose_at_evaluation: lost_at_evaluation,
                checkpoints: true,
                ..Case::default()
            },
            Case {
                implicit: true,
                kill: true,
                checkpoints: true,
                corrupt: true,
                ..Case::default()
            },
            Case {
                kill: true,
                resume: true,
                ..Case::default()
            },
            Case {
                implicit: true,
                resume: true,
                ..Case::default()
            },
            Case {
                no_exchange: true,
                ..Case::default()
            },
            Case {
                implicit: true,
                no_exchange: true,
                ..Case::default()
            },
            Case {
                implicit: true,
                kill_before_start: true,
                ..Case::default()
            },
            Case {
                implicit: true,
                lose_at_starting_gram: true,
                ..Case::default()
            },
            Case {
                users: true,
                implicit: true,
                kill: true,
                ..Case::default()
            },
            Case {
                users: true,
                lose_at_evaluation: lost_at_evaluation,
                checkpoints: true,
                ..Case::default()
            },
            Case {
                users: true,
                implicit: true,
                lose_at_evaluation: lost_at_evaluation,
                copy: true,
                ..Case::default()
            },
        ];
        // The routing minimums, as counted from the ratings (every block at home).
        let home_minimums = |ds: &Dataset, layouts: &Layouts, k: usize| {
            let r = crate::cluster::routing::Routing::build(&ds.by_user, &ds.by_item, layouts, 3);
            [
                (als_core::side::Side::Users, &layouts.items),
                (als_core::side::Side::Items, &layouts.users),
            ]
            .into_iter()
            .map(|(side, fixed)| r.minimums(side, k, &r.pushed_rows(side, fixed).unwrap()))
            .fold((0, 0), |(h, p), m| (h + m.hub, p + m.peer))
        };
        for (case, c) in cases.into_iter().enumerate() {
            let Case {
                implicit,
                users,
                kill,
                kill_before_start,
                lose_at_starting_gram,
                restart,
                lose_at_evaluation,
                checkpoints,
                copy,
                corrupt,
                resume,
                no_exchange,
            } = c;
            let ds = if users { &ds_users } else { &ds_rows };
            // Resumed, rows that outweigh the blocks' headers (each names the checkpoint's path).
            let cfg = evaluated_config(implicit, if resume { 48 } else { 5 });
            let layouts = Layouts::for_dataset(ds, cfg.blocks);
            let mut local = LocalExecutor::new(ds, layouts.clone());
            let want = train(ds, &cfg, &mut local, &layouts, None, &mut |_, _| Ok(())).unwrap();
            let mut s = ClusterSession::local(3, &ClientOptions::default()).unwrap();
            s.faults.heartbeat = std::time::Duration::from_millis(50);
            *s.lose_at_evaluation.lock().unwrap() = lose_at_evaluation;
            *s.lose_at_starting_gram.lock().unwrap() = lose_at_starting_gram.then_some(1);
            if no_exchange {
                for w in &mut s.workers {
                    w.info.capabilities.retain(|c| c != als_proto::PEER_EXCHANGE);
                }
            }
            let plan = IngestPlan {
                path: path.clone(),
                load: load.clone(),
                test_path: None,
                split: if users { SplitSpec::None } else { split.clone() },
                hold_out: users.then_some(holdout),
                duplicates: DuplicatePolicy::Last,
                blocks: cfg.blocks,
                step_timeout: std::time::Duration::from_secs(60),
                peer_timeout: std::time::Duration::from_secs(10),
            };
            let what = format!(
                "implicit={implicit} kill={kill} restart={restart} lose at evaluation {lose_at_evaluation:?} \
                 checkpoints={checkpoints} copy={copy} corrupt={corrupt} resume={resume} no_exchange={no_exchange} \
                 kill before start={kill_before_start} lose at starting gram={lose_at_starting_gram} users held out={users}"
            );
            let at = dir.path().join(format!("checkpoints-{case}"));
            // Resumed: two iterations first, on blocks the workers built, checkpointed by them.
            let mut first_run_bytes = None;
            if resume {
                let built = s.build_blocks(&plan).unwrap();
                let described = s.describe_blocks(&plan, &built, cfg.min_pos).unwrap();
                let on = OnWorkers::new(
                    built.clone(),
                    described,
                    plan.clone(),
                    Box::new(|| unreachable!("the input is read here")),
                );
                let data = TrainData {
                    shape: built.shape(),
                    ratings: None,
                };
                let sig = RunSignature::new(&built.fingerprint_digest(), &cfg);
                let two = TrainConfig {
                    iterations: 2,
                    ..cfg.clone()
                };
                let first = s
                    .train(&data, Some(&on), &two, &on.layouts(), None, FinalRows::NotRead, &mut |_, st| {
                        st.checkpoint(&at, &sig).map(drop)
                    })
                    .unwrap_or_else(|e| panic!("{what}: the first two iterations: {e:#}"));
                first_run_bytes = Some(first.reports[0].bytes_sent() - first.reports[0].bytes_peer());
            }
            let built = s.build_blocks(&plan).unwrap();
            let described = s.describe_blocks(&plan, &built, cfg.min_pos).unwrap();
            let loads = std::cell::Cell::new(0);
            let on = OnWorkers::new(
                built.clone(),
                described,
                IngestPlan {
                    blocks: layouts.users.n_blocks(),
                    ..plan.clone()
                },
                Box::new(|| {
                    loads.set(loads.get() + 1);
                    Ok(ds.clone())
                }),
            );
            assert_eq!(on.layouts().users.starts, layouts.users.starts);
            let data = TrainData {
                shape: built.shape(),
                ratings: None,
            };
            let sig = RunSignature::new(&built.fingerprint_digest(), &cfg);
            let start = match resume {
                true => Some(StartFrom::Checkpoint(als_core::checkpoint::latest_sealed(&at, &sig).unwrap())),
                // The dataset's ids are the blocks': the same rows.
                false => copy.then(|| StartFrom::State(initial_state(ds, &cfg))),
            };
            let kill_after = if resume { 3 } else { 2 };
            if kill_before_start {
                s.kill_local_worker(1);
            }
            let got = s.train(&data, Some(&on), &cfg, &on.layouts(), start, FinalRows::Wanted, &mut |r, st| {
                if corrupt && r.iteration == 2 {
                    let first = at.join("checkpoint-000001.als");
                    let mut bytes = std::fs::read(&first).unwrap();
                    let middle = bytes.len() / 2;
                    bytes[middle] ^= 1;
                    std::fs::write(&first, bytes).unwrap();
                }
                if kill && r.iteration == kill_after {
                    s.kill_local_worker(1);
                }
                if restart && r.iteration == 3 {
                    s.restart_local_worker(1).unwrap();
                }
                if checkpoints {
                    st.checkpoint(&at, &sig)?;
                }
                Ok(())
            });
            if corrupt {
                // Never a model other than the fault-free one: the run stops, saying why.
                let Err(e) = got else {
                    panic!("{what}: trained from a changed checkpoint")
                };
                let e = format!("{e:#}");
                s.shutdown().unwrap();
                assert!(
                    e.contains("cannot replay from the last checkpoint") && e.contains("checksum mismatch"),
                    "{e}"
                );
                continue;
            }
            let got = got.unwrap_or_else(|e| panic!("{what}: {e:#}"));
            // The coordinator's bytes per iteration, the peers' taken out.
            let coordinator_bytes: Vec<u64> = got.reports.iter().map(|r| r.bytes_sent() - r.bytes_peer()).collect();
            let rebuilds = s.rebuilds.load(std::sync::atomic::Ordering::Relaxed);
            let lost = s.lost.lock().unwrap().clone();
            let without_copy = s.started_without_copy.load(std::sync::atomic::Ordering::Relaxed);
            let gram_from_workers = s.item_gram_from_workers.load(std::sync::atomic::Ordering::Relaxed);
            s.shutdown().unwrap();
            assert_eq!(without_copy, !copy && !no_exchange, "{what}");
            // Without a copy, the starting YᵀY is the workers' per-block Gramians, reduced here.
            assert_eq!(gram_from_workers, without_copy && implicit, "{what}");
            assert_eq!(got.state, want.state, "{what}");
            // The routing minimums are the ones the ratings give, though this
            // process holds none of the rows the blocks reference (the
            // workers' routes count them), unless it pushes the rows itself;
            // every block at home, unless a worker was lost before the start.
            let r = &got.reports[0];
            if !kill_before_start && !lose_at_starting_gram {
                assert_eq!(
                    (r.bytes_min(), r.bytes_min_peer()),
                    home_minimums(ds, &layouts, cfg.factors),
                    "{what}"
                );
            }
            if no_exchange {
                assert_eq!(r.bytes_peer(), 0, "{what}: the coordinator carries the rows");
            }
            let tests = |r: &TrainResult| r.reports.iter().map(|x| x.test.clone()).collect::<Vec<_>>();
            let resumed_at = if resume { 2 } else { 0 };
            assert_eq!(tests(&got), tests(&want)[resumed_at..], "{what}");
            let f = |x: &als_core::side::Factors| 4 * (x.flat().len() + x.bias.len()) as u64;
            let rows = f(&want.state.users) + f(&want.state.items);
            if let Some(fresh) = first_run_bytes {
                // The workers read the checkpoint's rows: the resumed start
                // costs the coordinator what a fresh one does, give or take
                // the blocks' headers, not the rows.
                let start = coordinator_bytes[0];
                assert!(
                    start < fresh + rows / 2,
                    "{what}: {start} bytes to resume, {fresh} to start, rows {rows}"
                );
            }
            assert!(!got.final_metrics.to_json_map().is_empty(), "{what}: evaluated");
            assert_eq!(loads.get(), 0, "{what}: the input is never read here");
            // The survivors built the blocks again after the loss, and all
            // three again when the restarted worker took its blocks back: with
            // a copy here, at the next evaluation; without one, once a
            // checkpoint made the workers' rows the snapshot's.
            // Held out, users' key bounds are selected again as the survivors
            // build: rounds of keys that outweigh this small model's rows.
            if kill && !checkpoints && !users {
                // The loss costs the coordinator less than the rows without a
                // copy (the survivors draw them), and more with one (it ships them).
                // The loss is in the iteration after the kill.
                let (lossy, calm) = if resume { (1, 2) } else { (2, 1) };
                let extra = coordinator_bytes[lossy] - coordinator_bytes[calm];
                assert_eq!(extra < rows, !copy, "{what}: {extra} bytes more in the loss, rows {rows}");
            }
            let taken_back = copy || checkpoints;
            if lose_at_evaluation.is_some() {
                // Worker 1's blocks built again as the evaluation from peers'
                // rows gave up; with a copy, worker 2's then too, as the
                // streamed one did (without one, nothing is streamed); both
                // taken back later.
                let losses = if copy { 2 } else { 1 };
                // Held out, users are scored from peers' rows only: both
                // workers' blocks move in one build before that evaluation
                // runs again. With a copy, a lost worker takes its blocks
                // back where an evaluation brings the copy up to date, which
                // those from peers' rows never do: worker 1 is back, taken
                // back as the blocks moved, worker 2 stays out, and the
                // model is the fault-free one all the same.
                let (builds, out) = match users && copy {
                    true => (losses, vec![false, false, true]),
                    false => (2 * losses, vec![false; 3]),
                };
                assert!(rebuilds >= builds, "{what}: {rebuilds} builds again");
                assert_eq!(lost.iter().map(Option::is_some).collect::<Vec<_>>(), out, "{what}: {lost:?}");
            } else {
                let back = restart && taken_back;
                let killed = kill || kill_before_start || lose_at_starting_gram;
                assert_eq!(rebuilds, usize::from(killed) + usize::from(back), "{what}");
                assert_eq!(lost[1].is_some(), killed && !back, "{what}: {lost:?}");
            }
        }
    }

    #[test]
    fn a_lost_worker_costs_nothing_and_a_restarted_one_is_taken_back() {
        let ds = small_dataset();
        let cfg = TrainConfig {
            factors: 6,
            iterations: 6,
            implicit: Some(ImplicitConfig::hu(2.0, Confidence::Linear)),
            solver: SolverKind::Cg { steps: 3 },
            ..Default::default()
        };
        let layouts = Layouts::for_dataset(&ds, cfg.blocks);
        let mut local = LocalExecutor::new(&ds, layouts.clone());
        let want = train(&ds, &cfg, &mut local, &layouts, None, &mut |_, _| Ok(())).unwrap();
        let mut s = ClusterSession::local(3, &ClientOptions::default()).unwrap();
        s.faults.heartbeat = std::time::Duration::from_millis(50);
        let got = cluster_train(&s, &ds, &cfg, &layouts, &mut |r, _| {
            if r.iteration == 2 {
                s.kill_local_worker(1);
            }
            if r.iteration == 4 {
                s.restart_local_worker(1).unwrap();
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(got.state, want.state);
        // Every evaluation, from peers' rows, from the coordinator's copy or
        // on the coordinator while a worker was lost: the same numbers.
        let tests = |r: &TrainResult| r.reports.iter().map(|x| x.test.clone()).collect::<Vec<_>>();
        assert_eq!(tests(&got), tests(&want));
        // The re-shipped blocks show up in the bytes of the half that lost the worker.
        assert!(got.reports[2].bytes_sent() > want.reports[2].bytes_sent());
        // Restarted after iteration 4, it was back within the last two iterations.
        assert_eq!(
            *s.lost.lock().unwrap(),
            vec![None, None, None],
            "the restarted worker was taken back"
        );
        s.kill_local_worker(0);
        s.kill_local_worker(1);
        s.kill_local_worker(2);
        let err = cluster_train(&s, &ds, &cfg, &layouts, &mut |_, _| Ok(()))
            .err()
            .expect("no workers left");
        assert!(format!("{err:#}").contains("cannot"), "{err:#}");
        s.shutdown().unwrap();
    }
}
