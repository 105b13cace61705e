//! Rows from peers, as they come in: the checks the `PeerRows` handler
//! makes, shared with the hand-over between workers of one process (the
//! default mode's `--local` workers), which reads the rows from the
//! sender's solved block instead of from messages.
//!
//! The rows go to the job's mailbox, not the job: a worker takes its peers'
//! rows while it solves.

use std::sync::{Arc, Mutex};

use als_proto::codec::pieces_vec;
use als_proto::payload::{PeerLimits, PeerPieces};
use als_proto::pb::PeerChunk;
use als_proto::spec::side_from_pb;
use tonic::Status;

use crate::job::{lock_mailbox, DirectRows, PeerRows, RowsFor, SharedMailbox};
use crate::service::status;

/// The active job's mailbox, if a job is active.
#[derive(Default)]
pub struct MailboxSlot(Mutex<Option<SharedMailbox>>);

impl MailboxSlot {
    pub fn set(&self, m: Option<SharedMailbox>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = m;
    }

    /// The mailbox of the active job, if `job_id` names it.
    fn of(&self, job_id: &str) -> Result<SharedMailbox, Status> {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(m) = slot.as_ref() else {
            return Err(Status::failed_precondition(format!("no job is running (call for job '{job_id}')")));
        };
        let active = lock_mailbox(m).job_id().to_owned();
        match active == job_id {
            true => Ok(m.clone()),
            false => Err(Status::failed_precondition(format!(
                "call belongs to job '{job_id}', this worker runs job '{active}'"
            ))),
        }
    }
}

/// One peer's rows on their way in: where they go and what they may hold,
/// from the stream's first message.
pub struct Intake {
    mailbox: SharedMailbox,
    first: PeerChunk,
    to: RowsFor,
    pub limits: PeerLimits,
}

impl Intake {
    pub fn open(slot: &MailboxSlot, first: PeerChunk) -> Result<Intake, Status> {
        let side = side_from_pb(first.side).map_err(Status::invalid_argument)?;
        let to = RowsFor::new(side, first.evaluation).map_err(status)?;
        let mailbox = slot.of(&first.job_id)?;
        let limits = lock_mailbox(&mailbox).limits(to, first.step, first.n_rows).map_err(status)?;
        Ok(Intake {
            mailbox,
            first,
            to,
            limits,
        })
    }

    pub fn first(&self) -> &PeerChunk {
        &self.first
    }

    /// Whether a later message of the stream keeps to the first's job, side, step, epoch and purpose.
    pub fn belongs(&self, c: &PeerChunk) -> bool {
        let f = &self.first;
        c.job_id == f.job_id && c.side == f.side && c.step == f.step && c.epoch == f.epoch && c.evaluation == f.evaluation && c.n_rows == 0
    }

    /// Check the gathered rows against the header and hand them to the mailbox.
    pub fn finish(self, p: PeerPieces) -> Result<(), Status> {
        let rows = pieces_vec::<u32>("rows", &p.rows).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if rows.len() != self.first.n_rows as usize {
            return Err(Status::invalid_argument(format!(
                "{} peer rows sent, header says {}",
                rows.len(),
                self.first.n_rows
            )));
        }
        let rows = PeerRows {
            to: self.to,
            step: self.first.step,
            epoch: self.first.epoch,
            rows,
            factors: p.factors,
            bias: p.bias,
        };
        lock_mailbox(&self.mailbox).add(rows).map_err(status)
    }
}

/// Hand a worker of this process rows of a block its peer solved, read in
/// place: the checks its `PeerRows` handler makes (the job, the size
/// against its memory budget, every row's place and value), one copy.
pub fn hand_over(slot: &MailboxSlot, job_id: &str, rows: &DirectRows) -> Result<(), Status> {
    let mailbox = slot.of(job_id)?;
    let mut m = lock_mailbox(&mailbox);
    let n_rows = u32::try_from(rows.rows.len()).map_err(|_| Status::invalid_argument("too many peer rows"))?;
    m.limits(rows.to, rows.step, n_rows).map_err(status)?;
    m.add_direct(rows).map_err(status)
}

/// The slot a worker's direct hand-overs reach, from what its
/// [`als_net::transport::InProcess`] carries.
pub fn slot_of(direct: Arc<dyn std::any::Any + Send + Sync>) -> Option<Arc<MailboxSlot>> {
    direct.downcast::<MailboxSlot>().ok()
}

#[cfg(test)]
mod tests {
    use als_proto::fault::{fault_of, Fault};

    use super::*;
    use crate::job::Job;
    use als_core::side::Side;

    fn slot_with_job(id: &str) -> MailboxSlot {
        let job = Job::new(id.into(), crate::job::plain_params(2), 4, 4).unwrap();
        let slot = MailboxSlot::default();
        slot.set(Some(job.mailbox()));
        slot
    }

    fn rows<'a>(rows: &'a [u32], factors: &'a [f32]) -> DirectRows<'a> {
        DirectRows {
            to: RowsFor::Half(Side::Items),
            step: 2,
            epoch: 0,
            rows,
            row_start: 0,
            factors,
            bias: &[],
        }
    }

    /// The hand-over between workers of one process refuses what the
    /// `PeerRows` call refuses, with the same codes.
    #[test]
    fn a_hand_over_is_checked_as_a_call_is() {
        let slot = slot_with_job("job");
        let factors = [0.5f32; 8];
        let other = hand_over(&slot, "other", &rows(&[], &factors)).unwrap_err();
        assert_eq!(other.code(), tonic::Code::FailedPrecondition, "{other:?}");
        assert!(other.message().contains("runs job 'job'"), "{other:?}");
        // More rows than this worker needs (it holds no blocks): refused from the size.
        let many = hand_over(&slot, "job", &rows(&[1], &factors)).unwrap_err();
        assert_eq!(fault_of(&many), Fault::Protocol, "{many:?}");
        // No job: nothing is taken.
        slot.set(None);
        let none = hand_over(&slot, "job", &rows(&[], &factors)).unwrap_err();
        assert_eq!(none.code(), tonic::Code::FailedPrecondition);
    }
}
