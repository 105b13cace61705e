//! Stochastic gradient descent on the explicit biased objective, DSGD style.
//!
//! The updates are Surprise's SVD (Funk/Koren SGD): for a rating r of user u
//! and item i, e = r − (μ + bᵤ + bᵢ + qᵢᵀpᵤ), then bᵤ += γ(e − λbᵤ),
//! bᵢ += γ(e − λbᵢ), pᵤ += γ(e·qᵢ − λpᵤ), qᵢ += γ(e·pᵤ − λqᵢ).
//!
//! Parallelism follows DSGD (Gemulla et al. 2011) over the training block
//! layout: with B blocks per side, an epoch is B sub-epochs; in sub-epoch s
//! the cells (user block b, item block (b+s) mod B) share no user and no item,
//! so they are updated in parallel without locks. Each cell is walked by one
//! task in an order seeded by (seed, epoch, cell), so the model depends on
//! the seed and the layout, never on the number of threads.

mod epoch;
mod grid;
mod update;

pub use epoch::run_epoch;
pub use grid::RatingGrid;
pub use update::SgdStep;

use crate::data::Dataset;
use crate::train::{initial_state, TrainConfig, TrainState};

/// Per-component standard deviation of the initial factors: Surprise's
/// `init_std_dev`. SGD needs small starting factors (ALS's unit-norm rows
/// would dominate the first epochs).
pub const INIT_STD: f32 = 0.1;

/// The shared per-id seeded start, rescaled so each component has standard
/// deviation about [`INIT_STD`] whatever k (the rows are unit-norm Gaussian
/// directions, so their components have standard deviation 1/√k).
pub fn initial_state_sgd(ds: &Dataset, cfg: &TrainConfig) -> TrainState {
    let mut s = initial_state(ds, cfg);
    let scale = INIT_STD * (cfg.factors as f32).sqrt();
    s.users.matrix.mapv_inplace(|x| x * scale);
    s.items.matrix.mapv_inplace(|x| x * scale);
    s
}

#[cfg(test)]
mod tests;
