//! The coordinator-worker protocol: generated messages and service stubs,
//! plus the version and chunking constants both sides agree on.

pub mod codec;
pub mod fault;
pub mod payload;
pub mod spec;
pub mod token;

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("als.worker.v1");
}

/// Bumped on any incompatible change to `proto/als_worker.proto`.
pub const PROTOCOL_VERSION: u32 = 2;

/// Bytes of bulk data per streamed message: far below tonic's 4 MiB decode limit.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Metadata key of the cluster token.
pub const AUTH_HEADER: &str = "authorization";
