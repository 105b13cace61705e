//! # als-worker
//!
//! A worker holds blocks of ratings (by user and by item) for one job and,
//! each half-iteration, solves its rows against the fixed factors the
//! coordinator pushes, with the same row solver as the single-process path.
//! It answers only callers that present the cluster token, checks every
//! message, runs one job at a time and shuts down cleanly on a signal.

#![forbid(unsafe_code)]

pub(crate) mod auth;
/// Building a job's blocks from the input (issue 14).
pub mod ingest;
/// Public for the fuzz tests, which drive a job's validation directly.
pub mod job;
pub(crate) mod paths;
pub(crate) mod peer_intake;
pub(crate) mod peers;
pub mod probe;
pub(crate) mod row_files;
pub(crate) mod row_sends;
pub(crate) mod server;
pub(crate) mod service;

pub use auth::resolve_token;
pub use server::{local_routes, routes, serve, ServeOptions, SolveTurns};
