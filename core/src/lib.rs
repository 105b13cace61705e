//! # als-core
//!
//! The shared library of the ALS recommender: data loading and splitting,
//! the dense row kernels and per-block row solvers, the training loop,
//! evaluation metrics, and the saved model. The coordinator and the workers
//! both run this code, so a block of rows solved on a worker gives the same
//! numbers as the same rows solved in-process.

pub mod atomic;
pub mod blocks;
pub mod checkpoint;
pub mod data;
pub mod gibbs;
pub mod init;
pub mod le;
pub mod limits;
pub mod linalg;
pub mod metrics;
pub mod model;
pub(crate) mod npy;
pub(crate) mod objective;
pub mod rng;
pub mod row_places;
pub(crate) mod sgd;
pub mod side;
pub mod solve;
pub mod topk;
pub mod train;
