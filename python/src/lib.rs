//! `ferrals._native`: the Rust side of the Python package.
//!
//! The Python layer (`python/ferrals/`) owns the `implicit`-shaped API and
//! checks arguments in Python terms; this module converts arrays into the
//! engine's layout, runs the engine's own training loop and row solvers with
//! the GIL released, and hands factor matrices back to numpy without a copy.
//! Nothing here has its own numerics: a model trained from Python is the
//! model the command line trains from the same data and settings.

mod convert;
mod fit;
mod model_dir;
mod rows;
mod run;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(fit::fit, m)?)?;
    m.add_function(wrap_pyfunction!(rows::solve_rows, m)?)?;
    m.add_function(wrap_pyfunction!(model_dir::load_model_dir, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
