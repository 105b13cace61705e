//! What the training loop knows of the data. The loop needs the data's
//! shape and a few sums, never the ratings themselves: a cluster whose
//! workers built the blocks from the input gives the loop the shape they
//! reported, and only this process's own [`Dataset`] (when it holds one)
//! can evaluate or fold held-out users in locally.

use crate::blocks::BlockLayout;
use crate::data::Dataset;

/// The data's shape and the sums the loop uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataShape {
    pub n_users: usize,
    pub n_items: usize,
    /// Training ratings (repeated pairs merged): the objective's RMSE divides by it.
    pub n_train: usize,
    /// Test rows scored at each evaluation (the held-out users' rows with `--split users`).
    pub n_scored_test: usize,
    /// Whole users are held out and folded in to be scored (`--split users`).
    pub holds_out_users: bool,
    /// Mean of the training ratings, summed user block by user block ([`Dataset::global_mean`]).
    pub global_mean: f64,
    /// The training ratings' range before repeats are merged: where
    /// explicit predictions are clipped.
    pub rating_range: (f32, f32),
}

impl DataShape {
    /// The shape of a dataset this process holds, with its user blocks.
    pub fn of(ds: &Dataset, users: &BlockLayout) -> DataShape {
        DataShape {
            n_users: ds.n_users(),
            n_items: ds.n_items(),
            n_train: ds.n_train(),
            n_scored_test: ds.n_scored_test_rows(),
            holds_out_users: ds.held_out.is_some(),
            global_mean: ds.global_mean(users),
            rating_range: (ds.rating_min, ds.rating_max),
        }
    }
}

/// The data a run trains on: its shape, and the ratings where this process
/// holds them.
#[derive(Debug, Clone, Copy)]
pub struct TrainData<'a> {
    pub shape: DataShape,
    /// `None` where only the executor holds the ratings (a cluster's workers
    /// that read the input): then the executor must evaluate, and a fresh
    /// run's starting state comes from the caller.
    pub ratings: Option<&'a Dataset>,
}

impl<'a> TrainData<'a> {
    /// A dataset this process holds.
    pub fn held(ds: &'a Dataset, users: &BlockLayout) -> TrainData<'a> {
        TrainData {
            shape: DataShape::of(ds, users),
            ratings: Some(ds),
        }
    }
}
