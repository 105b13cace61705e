//! The coordinator-worker protocol: generated messages and service stubs,
//! plus the version and chunking constants both sides agree on.

#![forbid(unsafe_code)]

pub mod codec;
pub mod fault;
pub mod payload;
pub mod spec;
pub mod sums;
pub mod token;

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("als.worker.v1");
}

/// Bumped on any incompatible change to `proto/als_worker.proto`.
pub const PROTOCOL_VERSION: u32 = 16;

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

/// Bytes `msgs` take encoded: what both sides count as sent or received.
pub fn encoded_bytes<M: prost::Message>(msgs: &[M]) -> u64 {
    msgs.iter().map(|m| m.encoded_len() as u64).sum()
}

/// Bytes of bulk data per streamed message: far below tonic's 4 MiB decode limit.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The capability of a worker that can send its solved rows to its peers.
pub const PEER_EXCHANGE: &str = "peer-exchange";

/// The HTTP/2 settings both ends of the cluster use. A half's rows are
/// megabytes: HTTP/2's default 64 KiB windows and 16 KiB frames cost a
/// wake-up per frame and a round trip per window. Frames are 256 KiB rather
/// than 1 MiB: the receiver copies the part of a frame past a message's end
/// when it makes room for the next message, and smaller frames leave less
/// behind (Gowalla `--local 2`: 3% faster).
pub mod http2 {
    pub const STREAM_WINDOW: u32 = 16 << 20;
    pub const CONNECTION_WINDOW: u32 = 32 << 20;
    pub const MAX_FRAME: u32 = 256 << 10;
}

/// Metadata key of the cluster token.
pub const AUTH_HEADER: &str = "authorization";
