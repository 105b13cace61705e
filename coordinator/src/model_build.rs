//! A training result, its data and settings -> the parts of the core
//! [`als_core::model::Model`] that is saved and served.

use als_core::data::Dataset;
use als_core::model::{ModelKind, ModelParts};
use als_core::solve::Feedback;
use als_core::train::{TestMetrics, TrainConfig, TrainResult};
use serde_json::Value;

/// Version of a freshly trained model (fold-in increments it).
pub const FIRST_MODEL_VERSION: u64 = 1;

/// The hyperparameters stored in `model.json`: the TrainConfig as JSON plus
/// `data_source` (where the training data came from).
pub fn hyperparameters(cfg: &TrainConfig, data_source: &str) -> Value {
    let mut v = serde_json::to_value(cfg).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("data_source".into(), Value::String(data_source.to_string()));
    }
    v
}

/// The parts of the model of a finished run (checked and indexed by `Model::new`).
///
/// Ids and factor rows are in the dataset's dense order; `seen` is the
/// training matrix by user (so recommendations exclude rated items); biases
/// and the global mean only for biased explicit models; the rating range
/// for explicit models.
pub fn model_parts(result: &TrainResult, ds: &Dataset, cfg: &TrainConfig, data_source: &str, final_metrics: &TestMetrics) -> ModelParts {
    let (kind, global_mean) = match result.params.feedback {
        Feedback::Explicit { biased, global_mean } => (ModelKind::Explicit, if biased { global_mean } else { 0.0 }),
        Feedback::Implicit { .. } => (ModelKind::Implicit, 0.0),
    };
    let biased = cfg.has_biases();
    let users = &result.state.users;
    let items = &result.state.items;
    ModelParts {
        kind,
        user_ids: ds.user_ids.clone(),
        item_ids: ds.item_ids.clone(),
        user_factors: users.matrix.clone(),
        item_factors: items.matrix.clone(),
        user_bias: biased.then(|| users.bias.clone()),
        item_bias: biased.then(|| items.bias.clone()),
        global_mean,
        rating_range: (kind == ModelKind::Explicit).then_some((ds.rating_min, ds.rating_max)),
        seen: ds.by_user.clone(),
        hyperparameters: hyperparameters(cfg, data_source),
        data_fingerprint: ds.fingerprint.clone(),
        metrics: Value::Object(final_metrics.to_json_map()),
        version: FIRST_MODEL_VERSION,
    }
}
