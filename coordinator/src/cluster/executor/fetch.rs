//! Bringing the coordinator's copy of the model up to date from the
//! workers, which keep the rows they solve (see [`super::half`]): only when
//! something reads it (an evaluation, a checkpoint, the end of the job).

use als_core::side::{Factors, Side};
use als_proto::codec::pieces_into_finite;
use als_proto::pb::FetchRowsRequest;
use als_proto::spec::side_to_pb;
use anyhow::Context;

use super::membership::max_attempts;
use super::rpc::{fetch_rows, WorkerHalf};
use super::ClusterExecutor;

impl ClusterExecutor<'_> {
    /// The latest rows of both sides into `users` and `items`; a worker lost
    /// meanwhile costs a replay from the snapshot, then the fetch again.
    pub(super) fn sync_rows(&mut self, users: &mut Factors, items: &mut Factors) -> anyhow::Result<()> {
        let mut attempts = 0;
        // Without a copy here, `users` and `items` are room for one: the
        // rows are fetched even where the workers' equal the snapshot.
        let mut room = self.no_copy();
        while self.stale || room {
            attempts += 1;
            if attempts > max_attempts(self.slots.len()) {
                return Err(self.gave_up("fetching the model from the workers", attempts - 1));
            }
            let mut sent = 0;
            if self.fetch(users, items, &mut sent)? {
                self.copy_is_current();
                room = false;
            } else {
                let params = self.params;
                self.replay(&params, users, items, &mut sent)?;
            }
            tracing::debug!(bytes = sent, "model fetched from the workers");
            self.unreported_bytes += sent;
        }
        Ok(())
    }

    /// The coordinator's copy holds the workers' latest rows (fetched, or
    /// read back from a checkpoint they wrote): the snapshot a loss replays from.
    pub(super) fn copy_is_current(&mut self) {
        self.stale = false;
        self.since_sync.clear();
        self.snapshot = super::snapshot::Snapshot::Copy;
    }

    /// Every live worker's rows of both sides, checked, then written; `false`
    /// (nothing written) when a worker was lost.
    fn fetch(&mut self, users: &mut Factors, items: &mut Factors, sent: &mut u64) -> anyhow::Result<bool> {
        // A worker lost outside a half (its evaluation call broke, say) still
        // owns its blocks until they move: their rows come back by a replay.
        if self.has_orphans() {
            self.peers_ready = None;
            return Ok(false);
        }
        let job_id = &self.job_id;
        let results = self.on_live_workers(|_, handle| async move {
            let mut out = Vec::new();
            for side in [Side::Users, Side::Items] {
                let req = FetchRowsRequest {
                    job_id: job_id.clone(),
                    side: side_to_pb(side) as i32,
                    grams: false,
                };
                out.push((side, fetch_rows(handle.clone(), req).await?));
            }
            Ok(out)
        });
        let (fetched, lost) = self.settle::<Vec<(Side, WorkerHalf)>>(results)?;
        *sent += fetched
            .iter()
            .flat_map(|(_, h)| h.iter())
            .map(|(_, h)| h.bytes_sent + h.bytes_received)
            .sum::<u64>();
        if lost {
            self.peers_ready = None;
            return Ok(false);
        }
        let k = users.k();
        let mut seen = [
            vec![false; self.layouts.users.n_blocks()],
            vec![false; self.layouts.items.n_blocks()],
        ];
        for (w, halves) in fetched {
            let addr = self.slots[w].handle.addr.clone();
            for (side, half) in halves {
                let target = match side {
                    Side::Users => &mut *users,
                    Side::Items => &mut *items,
                };
                let (owner, layout) = (&self.routing.side(side).owner, self.layouts.side(side));
                let seen = &mut seen[super::side_ix(side)];
                for (b, g) in half.blocks {
                    let b = b as usize;
                    let range = g.check_place(&addr, side, (b, w), owner, seen, layout)?;
                    let p = g.arrays.into_pieces();
                    let dest = &mut target.flat_mut()[range.start * k..range.end * k];
                    pieces_into_finite("factors", &p.factors, dest)
                        .with_context(|| format!("worker {addr}: block {b} factors malformed"))?;
                    if !target.bias.is_empty() {
                        let dest = &mut target.bias[range.clone()];
                        pieces_into_finite("bias", &p.bias, dest).with_context(|| format!("worker {addr}: block {b} bias malformed"))?;
                    }
                }
            }
        }
        for (side, seen) in [Side::Users, Side::Items].into_iter().zip(&seen) {
            if let Some(missing) = seen.iter().position(|s| !s) {
                anyhow::bail!("no worker sent the rows of {} block {missing}", side.name());
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use als_core::data::synth::{generate_raw, SynthSpec};
    use als_core::data::Dataset;
    use als_core::side::Side;
    use als_core::train::{initial_state, HalfStepExecutor, Layouts, LocalExecutor, TrainConfig, TrainData};

    use crate::cluster::client::{connect, ClientOptions};
    use crate::cluster::executor::{ClusterExecutor, FaultOptions};
    use crate::cluster::LocalWorkers;

    /// A worker found lost outside a half (the e2e's `network disconnect`
    /// once landed during an evaluation) still owns its blocks when the
    /// model is next read: the read replays the halves since the
    /// coordinator's copy, onto the survivors, and gives the fault-free rows.
    #[test]
    fn a_worker_lost_outside_a_half_is_replayed_when_the_model_is_read() {
        let spec = SynthSpec {
            users: 200,
            items: 120,
            ratings: 3000,
            ..SynthSpec::default()
        };
        let raw = generate_raw(&spec).unwrap();
        let all: Vec<usize> = (0..raw.len()).collect();
        let ds = Dataset::build((&raw, &all), None, Default::default()).unwrap();
        let cfg = TrainConfig {
            factors: 4,
            iterations: 1,
            ..Default::default()
        };
        let layouts = Layouts::for_dataset(&ds, cfg.blocks);
        let params = cfg.solve_params(ds.global_mean(&layouts.users));
        let one_iteration = |exec: &mut dyn HalfStepExecutor| {
            let mut s = initial_state(&ds, &cfg);
            exec.half_step(Side::Users, &params, &s.items, None, &mut s.users, None).unwrap();
            exec.half_step(Side::Items, &params, &s.users, None, &mut s.items, None).unwrap();
            s
        };
        let mut local = LocalExecutor::new(&ds, layouts.clone());
        let want = one_iteration(&mut local);

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let workers = rt.block_on(LocalWorkers::start(3, 1)).unwrap();
        let opts = ClientOptions {
            token: Some(workers.token.clone()),
            ..Default::default()
        };
        let handles: Vec<_> = workers.addrs.iter().map(|a| rt.block_on(connect(a, &opts)).unwrap()).collect();
        let start = initial_state(&ds, &cfg);
        let mut exec = ClusterExecutor::start(
            rt.handle().clone(),
            handles,
            &[],
            opts,
            FaultOptions::default(),
            TrainData::held(&ds, &layouts.users),
            None,
            cfg.min_pos,
            &params,
            &layouts,
            &start,
            "lost-outside-a-half".into(),
            None,
        )
        .unwrap();
        let mut got = one_iteration(&mut exec);
        assert!(exec.stale, "the solved rows are on the workers");
        exec.lose(1, "its evaluation call broke");
        exec.sync_state(&mut got.users, &mut got.items).unwrap();
        assert_eq!((got.users, got.items), (want.users, want.items));
        assert_eq!(exec.replayed_halves, 2);
        exec.finish();
        workers.shutdown();
    }
}
