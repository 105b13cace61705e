//! A training result, its data and settings -> the parts of the core
//! [`als_core::model::Model`] that is saved and served.

use als_core::data::{Csr, Dataset};
use als_core::model::{ModelKind, ModelParts};
use als_core::side::Factors;
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

/// What a model keeps of the data it was trained on.
pub struct DataOfModel {
    pub user_ids: Vec<String>,
    pub item_ids: Vec<String>,
    pub rating_range: (f32, f32),
    pub fingerprint: String,
    /// The training matrix by user; `None` where only the model's files
    /// hold it (written by the workers): the parts then have an empty one.
    pub seen: Option<Csr>,
}

impl DataOfModel {
    /// Of a dataset this process holds.
    pub fn of(ds: &Dataset) -> DataOfModel {
        DataOfModel {
            user_ids: ds.user_ids.clone(),
            item_ids: ds.item_ids.clone(),
            rating_range: (ds.rating_min, ds.rating_max),
            fingerprint: ds.fingerprint.clone(),
            seen: Some(ds.by_user.clone()),
        }
    }
}

/// The parts of the model of a finished run (checked and indexed by `Model::new`).
///
/// Ids and factor rows are in the dataset's dense order; `seen` is the
/// training matrix by user (so recommendations exclude rated items); biases
/// and the global mean only for biased explicit models; the rating range
/// for explicit models.
pub fn model_parts(result: &TrainResult, ds: &Dataset, cfg: &TrainConfig, data_source: &str, final_metrics: &TestMetrics) -> ModelParts {
    let (users, items) = (result.state.users.clone(), result.state.items.clone());
    model_parts_of(result, (users, items), DataOfModel::of(ds), cfg, data_source, final_metrics)
}

/// [`model_parts`] from the run's factors (`users`, `items`) and what the
/// model keeps of the data.
pub fn model_parts_of(
    result: &TrainResult,
    (users, items): (Factors, Factors),
    data: DataOfModel,
    cfg: &TrainConfig,
    data_source: &str,
    final_metrics: &TestMetrics,
) -> ModelParts {
    let (kind, global_mean) = match result.params.feedback {
        Feedback::Explicit { biased, global_mean } => (ModelKind::Explicit, if biased { global_mean } else { 0.0 }),
        Feedback::Implicit { .. } => (ModelKind::Implicit, 0.0),
    };
    let biased = cfg.has_biases();
    ModelParts {
        kind,
        user_ids: data.user_ids,
        item_ids: data.item_ids,
        user_factors: users.matrix,
        item_factors: items.matrix,
        user_bias: biased.then_some(users.bias),
        item_bias: biased.then_some(items.bias),
        global_mean,
        rating_range: (kind == ModelKind::Explicit).then_some(data.rating_range),
        seen: data.seen.unwrap_or_default(),
        hyperparameters: hyperparameters(cfg, data_source),
        data_fingerprint: data.fingerprint,
        metrics: Value::Object(final_metrics.to_json_map()),
        version: FIRST_MODEL_VERSION,
    }
}
