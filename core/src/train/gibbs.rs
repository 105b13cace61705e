//! The Gibbs sampling loop of Bayesian PMF ([`crate::gibbs`]): draws instead
//! of solves, with the same reports, evaluation and callback as ALS.

use crate::blocks::BlockLayout;
use std::time::Instant;

use super::{
    check_state, eval, initial_state, HalfStepReport, IterationReport, Learner, OnIteration, StateView, TestMetrics, TrainConfig,
    TrainError, TrainResult, TrainState,
};
use crate::data::{Csr, Dataset};
use crate::gibbs::{sample_row_prior, PosteriorMean, RowMoments};
use crate::objective::objective;
use crate::rng::{mix64, splitmix64_nth, SplitMix64};
use crate::side::{Factors, Side};
use crate::solve::{sample_rows, FixedSide, RowsView, SolveParams};

/// Salt of the sampler's generator streams, apart from the initial factors'
/// (both start from `--seed`).
const GIBBS_STREAM: u64 = 0x6769_6262_735f_726f; // "gibbs_ro"

/// Run `cfg` (its learner must be Gibbs) from a fresh start. The sampler
/// runs in this process: it has no checkpoints, since a resumed chain would
/// need the running sums of its draws as well as its state.
///
/// Every iteration draws the users' prior and then every user, then the
/// items' prior and every item. The reported model, metrics and train RMSE
/// are those of the posterior mean once draws are being averaged (after
/// `burn_in` iterations), of the current draw before. No objective is
/// reported: the sampler does not minimize one.
pub fn train_gibbs(
    ds: &Dataset,
    cfg: &TrainConfig,
    start: Option<TrainState>,
    on_iteration: &mut OnIteration,
) -> Result<TrainResult, TrainError> {
    cfg.validate()?;
    let Learner::Gibbs { burn_in, noise_precision } = cfg.learner else {
        return Err(TrainError::Config("train_gibbs needs the Gibbs learner".into()));
    };
    if start.as_ref().is_some_and(|s| s.iterations_done > 0) {
        return Err(TrainError::Config(
            "Gibbs sampling cannot resume: the chain's average of its draws is not in a checkpoint".into(),
        ));
    }
    let params = cfg.solve_params(ds.global_mean(&BlockLayout::whole(ds.n_users())));
    // Single-process: the test metrics are summed over the users in one block.
    let one_block = BlockLayout::whole(ds.n_users());
    let mut state = start.unwrap_or_else(|| initial_state(ds, cfg));
    check_state((ds.n_users(), ds.n_items()), cfg, &state)?;
    let mut mean = PosteriorMean::new(&state.users, &state.items);
    let mut reports = Vec::new();
    let mut last_eval: Option<TestMetrics> = None;
    while state.iterations_done < cfg.iterations {
        let it = state.iterations_done + 1;
        let t0 = Instant::now();
        let TrainState { users, items, .. } = &mut state;
        let user_half = draw_side(&params, noise_precision, cfg.seed, it, Side::Users, &ds.by_user, items, users)?;
        let item_half = draw_side(&params, noise_precision, cfg.seed, it, Side::Items, &ds.by_item, users, items)?;
        if it > burn_in {
            mean.add(&state.users, &state.items);
        }
        let seconds = t0.elapsed().as_secs_f64();
        state.iterations_done = it;
        let objective_now = cfg.objective_every > 0 && it.is_multiple_of(cfg.objective_every);
        let evaluate_now = it == cfg.iterations || (cfg.eval_every > 0 && it.is_multiple_of(cfg.eval_every));
        // The average is a copy of both sides: made only for an iteration that reports on it.
        let averaged = if objective_now || evaluate_now {
            mean.mean(&state.users, &state.items)
        } else {
            None
        };
        let (model_users, model_items) = match &averaged {
            Some((u, i)) => (u, i),
            None => (&state.users, &state.items),
        };
        let train_rmse = objective_now.then(|| objective(&params, &ds.by_user, &ds.by_item, model_users, model_items, None).train_rmse);
        let test = if evaluate_now {
            let m = eval::evaluate(ds, cfg, &params, model_users, model_items, None, &one_block)?;
            last_eval = Some(m.clone());
            m
        } else {
            TestMetrics::default()
        };
        let report = IterationReport {
            iteration: it,
            seconds,
            objective: None,
            train_rmse,
            test,
            halves: vec![user_half, item_half],
        };
        tracing::debug!(iteration = it, seconds, draws = mean.draws(), "Gibbs iteration done");
        on_iteration(&report, &mut StateView::of(&mut state))?;
        reports.push(report);
    }
    let (users, items) = mean
        .mean(&state.users, &state.items)
        .ok_or(TrainError::Internal("a validated Gibbs run averages at least one draw"))?;
    let final_metrics = match last_eval {
        Some(m) => m,
        None => eval::evaluate(ds, cfg, &params, &users, &items, None, &one_block)?,
    };
    Ok(TrainResult {
        state: TrainState {
            iterations_done: state.iterations_done,
            users,
            items,
        },
        reports,
        final_metrics,
        params,
        bytes_outside_halves: 0,
        peer_bytes_outside_halves: 0,
    })
}

/// The seed of one half-iteration's draws: its prior's generator and, row by
/// row, the rows' normals.
fn half_seed(seed: u64, iteration: usize, side: Side) -> u64 {
    let half = 2 * iteration as u64 + u64::from(side == Side::Items);
    splitmix64_nth(seed ^ GIBBS_STREAM, half)
}

/// Draw `side`'s prior from its current rows, then every row of `target`.
#[allow(clippy::too_many_arguments)]
fn draw_side(
    params: &SolveParams,
    noise_precision: f32,
    seed: u64,
    iteration: usize,
    side: Side,
    ratings: &Csr,
    fixed: &Factors,
    target: &mut Factors,
) -> Result<HalfStepReport, TrainError> {
    let t0 = Instant::now();
    let seed = half_seed(seed, iteration, side);
    let prior = sample_row_prior(&RowMoments::of(target), &mut SplitMix64::new(mix64(seed)));
    let fixed_side = FixedSide {
        factors: fixed.flat(),
        bias: &fixed.bias,
        total_rows: fixed.n_rows(),
    };
    let n = target.n_rows();
    let biased = !target.bias.is_empty();
    let Factors { matrix, bias } = target;
    let out = matrix
        .as_slice_mut()
        .ok_or(TrainError::Internal("factor matrices are standard layout"))?;
    sample_rows(
        params,
        &prior,
        noise_precision as f64,
        RowsView::of_csr(ratings, 0, n),
        fixed_side,
        seed,
        0,
        out,
        biased.then_some(bias.as_mut_slice()),
    )
    .map_err(|e| TrainError::Solve(e).in_half(side))?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(HalfStepReport {
        side: Some(side),
        seconds,
        compute_seconds: seconds,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
