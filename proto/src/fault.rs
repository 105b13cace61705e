//! Why a worker call failed, as both sides read it.
//!
//! The coordinator must tell a lost worker (retry its blocks elsewhere) from
//! work that failed (retrying it elsewhere fails the same way) and from a
//! worker busy with another job. gRPC codes alone cannot say it: transport
//! failures arrive under several codes, so a worker marks the two
//! deliberate refusals in the status metadata, and everything unmarked that
//! is not a protocol error counts as a loss.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// Metadata key naming the fault kind.
pub const FAULT_KEY: &str = "als-fault";
/// Metadata key of the lowest failing row of a failed solve, when one row failed.
pub const FAULT_ROW_KEY: &str = "als-fault-row";

/// How the coordinator must treat a failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The worker is gone or unreachable: move its blocks to the others.
    Lost,
    /// The worker runs another job (the message names it): it cannot take ours.
    Busy,
    /// The work itself failed; `row` is the lowest failing row of its side.
    Job { row: Option<u64> },
    /// The message was refused as invalid: a bug or a version mismatch, never retried.
    Protocol,
    /// The worker is fine, but a peer it had to send its solved rows to could
    /// not take them: redo the half with the coordinator pushing the rows.
    Peer,
    /// The worker may not read the input it was asked to (no --input-root,
    /// or the input outside it): the coordinator may read it instead.
    InputOutOfReach,
}

/// A failed solve or evaluation: ends the run.
pub fn job_failed(message: impl Into<String>, row: Option<u64>) -> Status {
    let mut s = Status::aborted(message.into());
    s.metadata_mut().insert(FAULT_KEY, MetadataValue::from_static("job"));
    if let Some(r) = row {
        s.metadata_mut().insert(FAULT_ROW_KEY, MetadataValue::from(r));
    }
    s
}

/// The worker is busy with another job.
pub fn busy(message: impl Into<String>) -> Status {
    let mut s = Status::unavailable(message.into());
    s.metadata_mut().insert(FAULT_KEY, MetadataValue::from_static("busy"));
    s
}

/// `s`, read as a job's failure ([`Fault::Job`]) with its own code: a
/// refusal that any retry meets again (an output out of a worker's reach),
/// not a lost worker.
pub fn refusal(mut s: Status) -> Status {
    s.metadata_mut().insert(FAULT_KEY, MetadataValue::from_static("job"));
    s
}

/// The worker may not read the input it was asked to read (`s` says why).
pub fn input_out_of_reach(mut s: Status) -> Status {
    s.metadata_mut().insert(FAULT_KEY, MetadataValue::from_static("input-out-of-reach"));
    s
}

/// Solved rows could not reach a peer (the solve itself succeeded).
pub fn peer_unreachable(message: impl Into<String>) -> Status {
    let mut s = Status::unavailable(message.into());
    s.metadata_mut().insert(FAULT_KEY, MetadataValue::from_static("peer"));
    s
}

/// What a failed call means for the run.
pub fn fault_of(s: &Status) -> Fault {
    match s.metadata().get(FAULT_KEY).and_then(|v| v.to_str().ok()) {
        Some("job") => Fault::Job {
            row: s
                .metadata()
                .get(FAULT_ROW_KEY)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        },
        Some("busy") => Fault::Busy,
        Some("peer") => Fault::Peer,
        Some("input-out-of-reach") => Fault::InputOutOfReach,
        _ if s.code() == Code::InvalidArgument => Fault::Protocol,
        _ => Fault::Lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back() {
        assert_eq!(fault_of(&job_failed("row 3: bad", Some(3))), Fault::Job { row: Some(3) });
        assert_eq!(fault_of(&job_failed("bad input", None)), Fault::Job { row: None });
        assert_eq!(fault_of(&busy("worker is busy with job 'x'")), Fault::Busy);
        assert_eq!(fault_of(&peer_unreachable("peer w2: connection refused")), Fault::Peer);
        let out = input_out_of_reach(Status::failed_precondition("this worker reads no input"));
        assert_eq!((fault_of(&out), out.code()), (Fault::InputOutOfReach, Code::FailedPrecondition));
        assert_eq!(fault_of(&Status::invalid_argument("bad")), Fault::Protocol);
        let refused = refusal(Status::permission_denied("not under the root"));
        assert_eq!(
            (fault_of(&refused), refused.code()),
            (Fault::Job { row: None }, Code::PermissionDenied)
        );
        for lost in [
            Status::unavailable("connection refused"),
            Status::unknown("transport error"),
            Status::cancelled("x"),
        ] {
            assert_eq!(fault_of(&lost), Fault::Lost);
        }
        // A failed precondition (a restarted worker no longer knows the job) is a loss: re-ship.
        assert_eq!(fault_of(&Status::failed_precondition("no job is running")), Fault::Lost);
    }
}
