//! `fit`: the engine's training loop on a users × items CSR matrix, in this
//! process or on gRPC workers (local ones or remote), through the same code
//! the command line runs.

use std::time::Duration;

use als_coordinator::cluster::executor::FinalRows;
use als_coordinator::cluster::{client_tls, ClientOptions, ClusterSession};
use als_core::checkpoint::StartFrom;
use als_core::data::Dataset;
use als_core::side::Factors;
use als_core::train::{initial_state, train, Layouts, LocalExecutor, TrainConfig, TrainData, TrainError, TrainResult, TrainState};
use ndarray::Array2;
use numpy::{IntoPyArray, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{csr_from_arrays, NativeError, Settings};
use crate::run::{run_detached, Event, Progress};

/// Where the half-iterations are solved.
#[derive(Debug, Clone, FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct ClusterSpec {
    /// Remote worker addresses (`host:port`); empty with `local_workers`.
    pub workers: Vec<String>,
    /// Workers started in this process on loopback ports (0: none).
    pub local_workers: usize,
    pub token: Option<String>,
    pub tls_ca: Option<String>,
    pub tls_domain: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub connect_timeout: f64,
}

/// A starting point for one side: factors and, for biased models, biases.
fn start_side(
    name: &str,
    factors: Option<PyReadonlyArray2<'_, f32>>,
    bias: Option<PyReadonlyArray1<'_, f32>>,
    rows: usize,
    cfg: &TrainConfig,
) -> Result<Option<Factors>, NativeError> {
    let Some(f) = factors else { return Ok(None) };
    let bad = |m: String| NativeError::Value(m);
    let shape = f.shape();
    if shape != [rows, cfg.factors] {
        return Err(bad(format!(
            "{name}_factors has shape {shape:?}, expected ({rows}, {}) for this matrix and factors={}",
            cfg.factors, cfg.factors
        )));
    }
    let matrix: Array2<f32> = f.as_array().to_owned();
    if !als_core::solve::all_finite(matrix.as_slice().unwrap_or(&[])) {
        return Err(bad(format!("{name}_factors has NaN or infinite values")));
    }
    let bias = match (cfg.has_biases(), bias) {
        (true, Some(b)) => {
            let b = b.as_array().to_vec();
            if b.len() != rows || !als_core::solve::all_finite(&b) {
                return Err(bad(format!("{name}_bias must have {rows} finite values")));
            }
            b
        }
        (true, None) => vec![0.0; rows],
        (false, _) => Vec::new(),
    };
    Ok(Some(Factors { matrix, bias }))
}

fn client_options(spec: &ClusterSpec) -> Result<ClientOptions, NativeError> {
    let tls = match &spec.tls_ca {
        Some(ca) => {
            let identity = match (&spec.tls_cert, &spec.tls_key) {
                (Some(c), Some(k)) => Some((std::path::Path::new(c), std::path::Path::new(k))),
                (None, None) => None,
                _ => return Err(NativeError::Value("tls_cert and tls_key go together".into())),
            };
            Some(
                client_tls(std::path::Path::new(ca), identity, spec.tls_domain.as_deref())
                    .map_err(|e| NativeError::Value(crate::convert::error_chain(&e)))?,
            )
        }
        None => None,
    };
    Ok(ClientOptions {
        token: spec.token.clone(),
        connect_timeout: Duration::from_secs_f64(spec.connect_timeout.clamp(0.1, 3600.0)),
        tls,
    })
}

/// Train on the workers of `spec`; the workers started here are stopped
/// again, and a training error is reported before any shutdown error.
fn train_on_cluster(
    spec: &ClusterSpec,
    ds: &Dataset,
    cfg: &TrainConfig,
    layouts: &Layouts,
    state: TrainState,
    on_iteration: &mut als_core::train::OnIteration,
) -> Result<TrainResult, NativeError> {
    let session = if spec.local_workers > 0 {
        ClusterSession::local(spec.local_workers, &ClientOptions::default())
    } else {
        ClusterSession::connect(&spec.workers, &client_options(spec)?)
    }
    .map_err(|e| NativeError::Runtime(format!("cannot reach the workers: {e:#}")))?;
    let trained = session.train(
        &TrainData::held(ds, &layouts.users),
        None,
        cfg,
        layouts,
        Some(StartFrom::State(state)),
        FinalRows::Wanted,
        on_iteration,
    );
    let shutdown = session.shutdown();
    let res = trained.map_err(|e| NativeError::Runtime(format!("training failed: {e:#}")))?;
    shutdown.map_err(|e| NativeError::Runtime(format!("stopping the local workers: {e:#}")))?;
    Ok(res)
}

/// Fit a model. Returns a dict: `user_factors`, `item_factors` (float32,
/// handed to numpy without a copy), `user_bias`/`item_bias` (biased
/// explicit models, else None), `global_mean`, `objectives` and `seconds`
/// per iteration, and the block layouts `user_blocks`/`item_blocks` (row
/// starts), which fold-in needs to sum the Gramian as training did.
#[pyfunction]
#[pyo3(signature = (indptr, indices, data, n_items, settings, num_threads, user_factors=None, item_factors=None, user_bias=None, item_bias=None, cluster=None, callback=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn fit<'py>(
    py: Python<'py>,
    indptr: PyReadonlyArray1<'py, i64>,
    indices: PyReadonlyArray1<'py, i32>,
    data: PyReadonlyArray1<'py, f32>,
    n_items: usize,
    settings: Settings,
    num_threads: usize,
    user_factors: Option<PyReadonlyArray2<'py, f32>>,
    item_factors: Option<PyReadonlyArray2<'py, f32>>,
    user_bias: Option<PyReadonlyArray1<'py, f32>>,
    item_bias: Option<PyReadonlyArray1<'py, f32>>,
    cluster: Option<ClusterSpec>,
    callback: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let cfg = settings.train_config()?;
    let csr = csr_from_arrays(&indptr, &indices, &data, n_items)?;
    let ds = Dataset::from_user_items(csr).map_err(|e| NativeError::Value(format!("user_items: {e}")))?;
    if cfg.is_implicit() {
        if let Some(v) = ds.by_user.values.iter().find(|&&v| v < 0.0) {
            return Err(NativeError::Value(format!("user_items has a negative value {v}: implicit feedback takes values >= 0")).into());
        }
    }
    let users0 = start_side("user", user_factors, user_bias, ds.n_users(), &cfg)?;
    let items0 = start_side("item", item_factors, item_bias, ds.n_items(), &cfg)?;
    let work = |progress: &Progress| -> Result<(TrainResult, Layouts), NativeError> {
        let mut state = initial_state(&ds, &cfg);
        if let Some(u) = users0 {
            state.users = u;
        }
        if let Some(i) = items0 {
            state.items = i;
        }
        let layouts = Layouts::for_dataset(&ds, cfg.blocks);
        let mut on_iteration = |r: &als_core::train::IterationReport, _: &mut als_core::train::StateView| {
            let go_on = progress.report(Event::Iteration {
                iteration: r.iteration,
                seconds: r.seconds,
                objective: r.objective,
            });
            if go_on {
                Ok(())
            } else {
                Err(TrainError::Stopped("interrupted".into()))
            }
        };
        let res = match &cluster {
            Some(spec) if spec.local_workers > 0 || !spec.workers.is_empty() => {
                train_on_cluster(spec, &ds, &cfg, &layouts, state, &mut on_iteration)?
            }
            _ => {
                let mut exec = LocalExecutor::new(&ds, layouts.clone());
                train(&ds, &cfg, &mut exec, &layouts, Some(state), &mut on_iteration)
                    .map_err(|e| NativeError::Runtime(format!("training failed: {}", crate::convert::error_chain(&e))))?
            }
        };
        Ok((res, layouts))
    };
    let mut objectives = Vec::new();
    let mut seconds = Vec::new();
    let (res, layouts) = run_detached(py, num_threads, work, |py, event| {
        let Event::Iteration {
            iteration,
            seconds: s,
            objective,
        } = event;
        objectives.push(objective);
        seconds.push(s);
        match &callback {
            Some(cb) => cb.call1((iteration - 1, s, objective)).map(|_| ()),
            None => py.check_signals(),
        }
    })?;
    let out = PyDict::new(py);
    let TrainState { users, items, .. } = res.state;
    let global_mean = match res.params.feedback {
        als_core::solve::Feedback::Explicit { global_mean, .. } => global_mean as f64,
        _ => 0.0,
    };
    let biased = cfg.has_biases();
    out.set_item("user_factors", users.matrix.into_pyarray(py))?;
    out.set_item("item_factors", items.matrix.into_pyarray(py))?;
    out.set_item("user_bias", biased.then(|| users.bias.into_pyarray(py)))?;
    out.set_item("item_bias", biased.then(|| items.bias.into_pyarray(py)))?;
    out.set_item("global_mean", global_mean)?;
    out.set_item("objectives", objectives)?;
    out.set_item("seconds", seconds)?;
    out.set_item("user_blocks", layouts.users.starts.clone().into_pyarray(py))?;
    out.set_item("item_blocks", layouts.items.starts.clone().into_pyarray(py))?;
    Ok(out)
}
