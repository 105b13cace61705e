//! `load_model_dir`: a model directory written by the command line
//! (`model.json` plus `.npy` files), with its original string ids.

use als_core::model::{load_model, ModelKind};
use numpy::IntoPyArray;
use pyo3::exceptions::{PyFileNotFoundError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The model's parts as a dict: `kind` ("implicit"/"explicit"), `user_ids`
/// and `item_ids` (lists of str), the factor matrices, the biases (None for
/// implicit models), `global_mean`, `rating_range`, the training items of
/// each user as CSR arrays (`seen_indptr`, `seen_indices`), the
/// `hyperparameters` as JSON text, and `version`.
#[pyfunction]
pub(crate) fn load_model_dir<'py>(py: Python<'py>, path: std::path::PathBuf) -> PyResult<Bound<'py, PyDict>> {
    if !path.join("model.json").is_file() {
        return Err(PyFileNotFoundError::new_err(format!(
            "{}: not a model directory (no model.json)",
            path.display()
        )));
    }
    // Moved out of the model, so the arrays reach numpy without a copy.
    let model = py
        .detach(|| load_model(&path))
        .map_err(|e| PyValueError::new_err(format!("{}: {}", path.display(), crate::convert::error_chain(&e))))?
        .into_parts();
    let out = PyDict::new(py);
    out.set_item(
        "kind",
        match model.kind {
            ModelKind::Implicit => "implicit",
            ModelKind::Explicit => "explicit",
        },
    )?;
    out.set_item("user_ids", model.user_ids)?;
    out.set_item("item_ids", model.item_ids)?;
    out.set_item("user_factors", model.user_factors.into_pyarray(py))?;
    out.set_item("item_factors", model.item_factors.into_pyarray(py))?;
    out.set_item("user_bias", model.user_bias.map(|b| b.into_pyarray(py)))?;
    out.set_item("item_bias", model.item_bias.map(|b| b.into_pyarray(py)))?;
    out.set_item("global_mean", model.global_mean)?;
    out.set_item("rating_range", model.rating_range)?;
    out.set_item("seen_indptr", model.seen.indptr.into_pyarray(py))?;
    out.set_item("seen_indices", model.seen.indices.into_pyarray(py))?;
    out.set_item("hyperparameters", model.hyperparameters.to_string())?;
    out.set_item("version", model.version)?;
    Ok(out)
}
