//! The coordinator: the command line, the training pipeline, the cluster
//! client and the model server.
//!
//! Layers, each using only those below it:
//! - [`cli`]: the list of commands and the dispatch;
//! - `commands/`: one module per subcommand, its flags and its `run`;
//! - `args/`: argument groups shared by the commands, translated into core settings;
//! - `training/`, `input`, `report`, `model_build`, `model_dir`, `history`,
//!   `progress`: what the commands share;
//! - [`cluster`]: training on gRPC workers; `als-core` below everything.
// `deny`, not `forbid`: ndarray's `s![]` expands to an `allow(unsafe_code)`,
// which `forbid` refuses; no code of this crate is unsafe.
#![deny(unsafe_code)]

pub(crate) mod args;
pub mod cli;
pub mod cluster;
pub(crate) mod commands;
pub(crate) mod history;
pub(crate) mod input;
pub(crate) mod model_build;
pub(crate) mod model_dir;
pub(crate) mod progress;
pub(crate) mod report;
pub(crate) mod training;

pub use progress::make_log_writer;

#[cfg(test)]
mod tests;
