//! # als-worker
//!
//! A worker holds blocks of ratings (by user and by item) for one job and,
//! each half-iteration, solves its rows against the fixed factors the
//! coordinator pushes, with the same row solver as the single-process path.
//! It answers only callers that present the cluster token, checks every
//! message, runs one job at a time and shuts down cleanly on a signal.

pub mod auth;
pub mod job;
pub mod probe;
pub mod server;
pub mod service;

pub use server::{serve, ServeOptions};
