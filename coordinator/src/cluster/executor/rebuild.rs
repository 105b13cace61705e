//! A lost worker's blocks built again by the survivors, where the workers
//! hold the only copy of the ratings (`--input-on-workers`): every live
//! worker reads a share of the input and the blocks are built as at the
//! start, each by the worker it is to go to, which then takes it with the
//! coordinator's rows. The coordinator reads none of the input.
//!
//! A loss costs one more build of the blocks, spread over the survivors:
//! the whole input is read again, not only the lost worker's share, since
//! an item block's rows come from every user block. Between losses no
//! worker keeps a copy of another's ratings; during a rebuild a survivor
//! holds, beside its job's blocks, the blocks it builds, until it has taken
//! its new ones and dropped the rest.

use std::time::Instant;

use crate::cluster::client::WorkerHandle;
use crate::cluster::ingest::{build, drop_built, WorkerLost};
use crate::cluster::ratings::OnWorkers;
use crate::cluster::routing::live_positions;

use super::health::silent;
use super::ClusterExecutor;

impl ClusterExecutor<'_> {
    /// Have the live workers build every block again, block `b` of a side
    /// on `owners[side][b]`. `Ok(false)` when a worker was lost meanwhile
    /// (and is marked so): the caller plans the moves again.
    pub(super) fn rebuild(&mut self, on: &OnWorkers<'_>, owners: &[Vec<usize>; 2]) -> anyhow::Result<bool> {
        let alive = self.alive();
        let handles: Vec<WorkerHandle> = self.slots.iter().filter(|s| s.alive).map(|s| s.handle.clone()).collect();
        let live_owners = [live_positions(&owners[0], &alive)?, live_positions(&owners[1], &alive)?];
        let plan = &on.plan;
        tracing::warn!(
            workers = handles.len(),
            "the workers hold the only copy of the ratings: the survivors build the blocks again from the input"
        );
        let t0 = Instant::now();
        let again = self.rt.block_on(build(&handles, &self.job_id, plan, &live_owners, &self.faults));
        if again.is_err() {
            self.rt.block_on(drop_built(&handles, &self.job_id, plan.peer_timeout));
        }
        match again {
            Ok(again) => {
                on.check_rebuilt(&again)?;
                self.built_at = Some(owners.clone().map(|o| o.into_iter().map(Some).collect()));
                self.rebuilds += 1;
                tracing::info!(
                    peer_bytes = again.peer_bytes,
                    seconds = format_args!("{:.2}", t0.elapsed().as_secs_f64()),
                    "the survivors built the blocks again"
                );
                Ok(true)
            }
            Err(e) if e.is::<WorkerLost>() => {
                tracing::warn!("building the blocks again failed ({e:#}): checking which worker is gone");
                self.lose_silent();
                Ok(false)
            }
            Err(e) => Err(e.context("the survivors could not build the lost blocks again")),
        }
    }

    /// Mark lost every live worker that does not answer a health check.
    fn lose_silent(&mut self) {
        let live: Vec<(usize, WorkerHandle)> = (0..self.slots.len())
            .filter(|&w| self.slots[w].alive)
            .map(|w| (w, self.slots[w].handle.clone()))
            .collect();
        for (w, why) in self.rt.block_on(silent(live, self.faults.worker_timeout)) {
            self.lose(w, &why);
        }
    }

    /// Best effort: the live workers forget the blocks they built and did not take.
    pub(super) fn drop_built(&self) {
        let handles: Vec<WorkerHandle> = self.slots.iter().filter(|s| s.alive).map(|s| s.handle.clone()).collect();
        self.rt.block_on(drop_built(&handles, &self.job_id, self.faults.worker_timeout));
    }
}
