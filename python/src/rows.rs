//! `solve_rows`: rows of one side against the other side's fixed factors,
//! by the trainer's own row solver (fold-in, `recalculate_user`,
//! `partial_fit_users`/`partial_fit_items`).

use als_core::solve::{block_gram, solve_rows as engine_solve_rows, sum_grams, FixedSide, RowsView};
use ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::convert::{csr_from_arrays, NativeError, Settings};
use crate::run::run_detached;

/// The fixed side's Gramian summed per block in block order, as training
/// sums it, so a row solved here gets the trainer's bits. `starts` are the
/// block boundaries training used; without them the side is one block.
fn gramian(fixed: &[f32], k: usize, starts: &[usize]) -> Vec<f64> {
    let partials: Vec<Vec<f64>> = starts.windows(2).map(|w| block_gram(&fixed[w[0] * k..w[1] * k], k)).collect();
    sum_grams(k, partials.iter().map(Vec::as_slice))
}

/// Solve every row of the CSR (`indptr`/`indices`/`data`, columns indexing
/// rows of `fixed`) with `settings`' model and solver. `warm_start` (one row
/// per CSR row) is where CG starts; without it CG starts from zero.
/// Returns the factors (rows × k) and, for biased explicit models, the biases.
#[pyfunction]
#[pyo3(signature = (indptr, indices, data, fixed, settings, num_threads, fixed_bias=None, fixed_blocks=None, warm_start=None))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub(crate) fn solve_rows<'py>(
    py: Python<'py>,
    indptr: PyReadonlyArray1<'py, i64>,
    indices: PyReadonlyArray1<'py, i32>,
    data: PyReadonlyArray1<'py, f32>,
    fixed: PyReadonlyArray2<'py, f32>,
    settings: Settings,
    num_threads: usize,
    fixed_bias: Option<PyReadonlyArray1<'py, f32>>,
    fixed_blocks: Option<Vec<usize>>,
    warm_start: Option<PyReadonlyArray2<'py, f32>>,
) -> PyResult<(Bound<'py, PyArray2<f32>>, Option<Bound<'py, PyArray1<f32>>>)> {
    let cfg = settings.train_config()?;
    let k = cfg.factors;
    let bad = |m: String| PyErr::from(NativeError::Value(m));
    let (m, fk) = (fixed.shape()[0], fixed.shape()[1]);
    if fk != k {
        return Err(bad(format!("the fixed factors have {fk} columns, the model {k}")));
    }
    let rows = csr_from_arrays(&indptr, &indices, &data, m)?;
    let n = rows.n_rows();
    if let Some(c) = rows.indices.iter().find(|&&c| c as usize >= m) {
        return Err(bad(format!("column {c} is out of range: the model has {m} of them")));
    }
    // Borrowed, not copied: a fold-in of one user against a million items
    // must not copy the item matrix. The read-only borrows live until the
    // work below has joined, as numpy's own GIL-free operations do.
    let fixed = fixed
        .as_slice()
        .map_err(|_| bad("the fixed factors must be a C-contiguous float32 array".into()))?;
    let fixed_bias = fixed_bias
        .as_ref()
        .map(|b| b.as_slice())
        .transpose()
        .map_err(|_| bad("the fixed biases must be contiguous".into()))?;
    let fixed_bias: &[f32] = fixed_bias.unwrap_or(&[]);
    let mut out: Vec<f32> = match warm_start {
        Some(w) if w.shape() == [n, k] => w.as_array().iter().copied().collect(),
        Some(w) => return Err(bad(format!("warm_start has shape {:?}, expected ({n}, {k})", w.shape()))),
        None => vec![0.0; n * k],
    };
    let starts = match fixed_blocks {
        Some(s) if s.first() == Some(&0) && s.last() == Some(&m) && s.windows(2).all(|w| w[0] <= w[1]) => s,
        _ => vec![0, m],
    };
    // μ is part of the stored model, not of these rows.
    let params = cfg.solve_params(settings.global_mean as f64);
    let biased = cfg.has_biases();
    let work = |_: &crate::run::Progress| -> Result<(Vec<f32>, Vec<f32>), NativeError> {
        let gram = cfg.is_implicit().then(|| gramian(fixed, k, &starts));
        let mut bias = vec![0f32; if biased { n } else { 0 }];
        let view = RowsView {
            indptr: &rows.indptr,
            indices: &rows.indices,
            values: &rows.values,
        };
        let side = FixedSide {
            factors: fixed,
            bias: fixed_bias,
            total_rows: fixed.len() / k,
        };
        engine_solve_rows(
            &params,
            view,
            side,
            gram.as_deref(),
            &mut out,
            biased.then_some(bias.as_mut_slice()),
        )
        .map_err(|e| match e {
            als_core::solve::SolveError::Invalid(m) => NativeError::Value(m),
            e => NativeError::Runtime(format!("solving the rows: {e}")),
        })?;
        Ok((out, bias))
    };
    let (out, bias) = run_detached(py, num_threads, work, |_, _| Ok(()))?;
    let factors = Array2::from_shape_vec((n, k), out).map_err(|e| bad(e.to_string()))?;
    Ok((factors.into_pyarray(py), biased.then(|| bias.into_pyarray(py))))
}
