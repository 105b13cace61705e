//! The coordinator-worker protocol: generated messages and service stubs,
//! plus the version and chunking constants both sides agree on.

#![forbid(unsafe_code)]

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
pub const PROTOCOL_VERSION: u32 = 5;

/// A peer speaking another protocol version than this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("protocol version mismatch: the {peer} speaks {theirs}, this build speaks {PROTOCOL_VERSION}")]
pub struct VersionMismatch {
    /// "coordinator" or "worker".
    pub peer: &'static str,
    pub theirs: u32,
}

/// The one version check of both sides: `theirs` as `peer` sent it.
pub fn check_version(peer: &'static str, theirs: u32) -> Result<(), VersionMismatch> {
    if theirs == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(VersionMismatch { peer, theirs })
    }
}

/// Bytes of bulk data per streamed message: far below tonic's 4 MiB decode limit.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Metadata key of the cluster token.
pub const AUTH_HEADER: &str = "authorization";
