//! The SGD training loop: epochs instead of alternating halves, with the
//! same state, reports, evaluation and callback as ALS (so progress, metrics
//! JSON and checkpoints work unchanged).

use crate::blocks::BlockLayout;
use std::time::Instant;

use super::{
    check_state, eval, HalfStepReport, IterationReport, Layouts, Learner, OnIteration, StateView, TestMetrics, TrainConfig, TrainError,
    TrainResult, TrainState,
};
use crate::data::Dataset;
use crate::objective::objective;
use crate::sgd::{initial_state_sgd, run_epoch, RatingGrid, SgdStep};
use crate::solve::RegScaling;

/// Run the remaining epochs of `cfg` (its learner must be SGD) from `state`
/// (fresh: [`initial_state_sgd`]). SGD runs in this process: its cells are
/// too small for a network round trip each.
///
/// The reported objective is the ALS-WR one (λ·n per row): λ applied at every
/// update pulls a row once per rating, which is what count scaling sums up,
/// so `--reg-scaling` does not change SGD.
pub fn train_sgd(
    ds: &Dataset,
    cfg: &TrainConfig,
    layouts: &Layouts,
    state: Option<TrainState>,
    on_iteration: &mut OnIteration,
) -> Result<TrainResult, TrainError> {
    cfg.validate()?;
    let Learner::Sgd { learning_rate } = cfg.learner else {
        return Err(TrainError::Config("train_sgd needs the SGD learner".into()));
    };
    // Single-process: the mean and the test metrics are summed over the users in one block.
    let one_block = BlockLayout::whole(ds.n_users());
    let params_mean = ds.global_mean(&one_block);
    let mut params = cfg.solve_params(params_mean);
    params.reg_scaling = RegScaling::Count;
    let mut state = state.unwrap_or_else(|| initial_state_sgd(ds, cfg));
    check_state((ds.n_users(), ds.n_items()), cfg, &state)?;
    let biased = cfg.has_biases();
    let step = SgdStep {
        learning_rate,
        lambda: cfg.lambda,
        global_mean: if biased { params_mean as f32 } else { 0.0 },
        biased,
    };
    let grid = RatingGrid::new(&ds.by_user, &layouts.users, &layouts.items);
    let mut reports = Vec::new();
    let mut last_eval: Option<TestMetrics> = None;
    while state.iterations_done < cfg.iterations {
        let epoch = state.iterations_done + 1;
        let t0 = Instant::now();
        run_epoch(&grid, &step, cfg.seed, epoch, &mut state.users, &mut state.items);
        let seconds = t0.elapsed().as_secs_f64();
        state.iterations_done = epoch;
        let obj = objective(&params, &ds.by_user, &ds.by_item, &state.users, &state.items, None);
        if !obj.train_rmse.is_finite() {
            return Err(TrainError::Stopped(format!(
                "SGD diverged in epoch {epoch} (the training error is not finite): lower --learning-rate (now {learning_rate})"
            )));
        }
        let evaluate_now = epoch == cfg.iterations || (cfg.eval_every > 0 && epoch.is_multiple_of(cfg.eval_every));
        let test = if evaluate_now {
            let m = eval::evaluate(ds, cfg, &params, &state.users, &state.items, None, &one_block)?;
            last_eval = Some(m.clone());
            m
        } else {
            TestMetrics::default()
        };
        let report = IterationReport {
            iteration: epoch,
            seconds,
            objective: Some(obj.objective),
            train_rmse: Some(obj.train_rmse),
            test,
            halves: vec![HalfStepReport {
                seconds,
                compute_seconds: seconds,
                ..Default::default()
            }],
        };
        tracing::debug!(epoch, seconds, objective = obj.objective, "epoch done");
        on_iteration(&report, &mut StateView::of(&mut state))?;
        reports.push(report);
    }
    let final_metrics = match last_eval {
        Some(m) => m,
        None => eval::evaluate(ds, cfg, &params, &state.users, &state.items, None, &one_block)?,
    };
    Ok(TrainResult {
        state,
        reports,
        final_metrics,
        params,
        bytes_outside_halves: 0,
        peer_bytes_outside_halves: 0,
    })
}
