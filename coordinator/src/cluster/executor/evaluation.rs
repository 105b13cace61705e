//! Test metrics computed on the workers that hold the user blocks (and
//! their test rows); the coordinator only merges the answers.
//!
//! Two ways to get the factors there:
//! - from peers (the default with peer exchange): each worker sends the
//!   item rows of its blocks to the workers whose evaluation scores them
//!   (every item for top-K lists, else the test items of their user
//!   blocks), on routes set up with the halves' ([`super::exchange`]), and
//!   every worker scores its own latest user rows. No factor passes through the
//!   coordinator, and its copy of the model is not brought up to date.
//! - streamed by the coordinator from its copy (without exchange, or when
//!   the exchange of the evaluation's rows failed).

use std::time::Instant;

use als_core::metrics::ranking_list_len;
use als_core::side::{Factors, Side};
use als_core::solve::lower_triangle;
use als_core::train::{eval, TestMetrics, TrainConfig};
use als_proto::codec::{f64_bytes, Field};
use als_proto::payload::EvalFields;
use als_proto::pb::EvalChunk;
use als_proto::sums::BlockSums;
use als_proto::CHUNK_BYTES;
use anyhow::Context;

use super::exchange::PeerRound;
use super::rpc::{run_evaluation, HalfError, WorkerEval};
use super::wire::bias_of_rows;
use super::ClusterExecutor;

/// The blocks each worker was asked to evaluate, and what it answered.
type Asked = Vec<(usize, Vec<u32>)>;

impl ClusterExecutor<'_> {
    /// The evaluation messages for worker `w`: its user blocks with test rows,
    /// their users' factors, and the item factors they need (all items for
    /// top-K lists). `None` when it holds no test rows.
    pub(super) fn eval_messages(
        &self,
        w: usize,
        cfg: &TrainConfig,
        users: &Factors,
        items: &Factors,
    ) -> Option<(Vec<u32>, Vec<EvalChunk>)> {
        let blocks = self.eval_blocks(w);
        if blocks.is_empty() {
            return None;
        }
        let layout = &self.layouts.users;
        let user_rows: Vec<usize> = blocks.iter().flat_map(|&b| layout.range(b as usize)).collect();
        // Top-K lists score every item; predictions need only the test rows'
        // items, where this coordinator knows them (else every item goes).
        let test_items = match (cfg.is_implicit(), self.ratings.held()) {
            (false, Some(ds)) => Some(self.test_items_of(ds, &blocks)),
            _ => None,
        };
        let all_items = test_items.is_none();
        let item_rows = test_items.unwrap_or_default();
        let (n_items, item_of) = if all_items {
            (items.n_rows(), None)
        } else {
            (item_rows.len(), Some(&item_rows))
        };
        let item_at = |i: usize| item_of.map_or(i, |rows| rows[i] as usize);
        let user_row = |i: usize| users.row(user_rows[i]);
        let item_row = |i: usize| items.row(item_at(i));
        let user_bias = bias_of_rows(users, user_rows.iter().copied());
        let item_bias = bias_of_rows(items, (0..n_items).map(item_at));
        let fields = EvalFields {
            item_rows: Field::U32(&item_rows),
            user_factors: Field::Rows {
                n_rows: user_rows.len(),
                k: users.k(),
                row: &user_row,
            },
            user_bias: Field::F32(&user_bias),
            item_factors: Field::Rows {
                n_rows: n_items,
                k: items.k(),
                row: &item_row,
            },
            item_bias: Field::F32(&item_bias),
        };
        let header = EvalChunk {
            n_item_rows: item_rows.len() as u32,
            ..self.eval_header(cfg, blocks.clone(), false, all_items)
        };
        let msgs = fields.to_chunks(CHUNK_BYTES, |j| match j {
            0 => header.clone(),
            _ => EvalChunk {
                job_id: self.job_id.clone(),
                step: self.step,
                ..Default::default()
            },
        });
        Some((blocks, msgs))
    }

    /// The header fields of an evaluation call for `blocks`: what to score
    /// and how (the sums' clipping, the lists' length and cutoff).
    fn eval_header(&self, cfg: &TrainConfig, blocks: Vec<u32>, from_peers: bool, all_items: bool) -> EvalChunk {
        let implicit = cfg.is_implicit();
        let clip = eval::clip_of(self.shape.rating_range, cfg);
        EvalChunk {
            job_id: self.job_id.clone(),
            step: self.step,
            blocks,
            top_k: if implicit { ranking_list_len(cfg.ranking_k) as u32 } else { 0 },
            ranking_k: if implicit { cfg.ranking_k as u32 } else { 0 },
            min_pos: cfg.min_pos,
            all_items,
            clip: clip.is_some(),
            clip_min: clip.map_or(0.0, |c| c.0),
            clip_max: clip.map_or(0.0, |c| c.1),
            from_peers,
            ..Default::default()
        }
    }

    /// The user blocks of worker `w` with test rows, ascending.
    fn eval_blocks(&self, w: usize) -> Vec<u32> {
        (0..self.layouts.users.n_blocks())
            .filter(|&b| self.routing.users.owner[b] == w && self.test_per_block[b] > 0)
            .map(|b| b as u32)
            .collect()
    }

    /// The distinct test items of user `blocks` of `ds`, ascending.
    fn test_items_of(&self, ds: &als_core::data::Dataset, blocks: &[u32]) -> Vec<u32> {
        let (layout, test) = (&self.layouts.users, self.test.of(ds));
        let mut v: Vec<u32> = blocks
            .iter()
            .flat_map(|&b| test.items[test.span(&layout.range(b as usize))].iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Evaluate on the workers from the rows they hold: the item rows go
    /// peer to peer, then each worker scores its own users. `Ok(None)` when
    /// that cannot be done now (no exchange, routes not current, a worker
    /// lost, or the rows could not reach a peer): the caller brings its copy
    /// up to date and evaluates another way.
    pub(super) fn evaluate_from_peers(&mut self, cfg: &TrainConfig) -> anyhow::Result<Option<TestMetrics>> {
        if self.nothing_to_score(cfg) {
            return Ok(None);
        }
        // While a worker is lost, evaluations read the coordinator's copy:
        // a restarted worker takes its blocks back only from a current copy
        // (see `revive`), so it rejoins at the next evaluation, as before.
        // Without a copy, the survivors evaluate once the lost blocks moved;
        // so do they where the user blocks hold the held-out users, which
        // only they can score.
        let lost = match self.no_copy() || self.held_out_on_workers {
            true => self.has_orphans(),
            false => self.slots.iter().any(|s| !s.alive),
        };
        if !self.exchange || !self.routes_current || lost {
            return Ok(None);
        }
        let t0 = Instant::now();
        let step = self.step;
        let peer_bytes = match self.send_rows(Side::Items, step, true)? {
            PeerRound::Done { bytes, peer_bytes } => {
                self.eval_bytes += bytes + peer_bytes;
                self.eval_peer_bytes += peer_bytes;
                peer_bytes
            }
            PeerRound::Lost(bytes) | PeerRound::PeerFailed(bytes) => {
                self.eval_bytes += bytes;
                tracing::warn!("the evaluation's item rows did not reach every worker; evaluating from the coordinator's copy");
                return Ok(None);
            }
        };
        let mut asked: Asked = Vec::new();
        let mut futs = Vec::new();
        for w in 0..self.slots.len() {
            let blocks = self.eval_blocks(w);
            if blocks.is_empty() {
                continue;
            }
            // The rows peers sent: every item for top-K lists, the test items for predictions.
            let mut msg = self.eval_header(cfg, blocks.clone(), true, cfg.is_implicit());
            if self.shape.holds_out_users {
                // Each block's held-out users are folded in there first.
                msg.held_out = true;
                if let Some(g) = &self.eval_item_gram {
                    msg.item_gram = f64_bytes(&lower_triangle(g, self.params.factors)).into();
                }
            }
            asked.push((w, blocks));
            futs.push(self.watch(w, run_evaluation(self.slots[w].handle.clone(), vec![msg])));
        }
        let Some(metrics) = self.gather_evaluations(cfg, asked, futs)? else {
            return Ok(None);
        };
        self.evaluations_from_peers += 1;
        tracing::debug!(
            peer_bytes,
            seconds = t0.elapsed().as_secs_f64(),
            "evaluated on the workers from their own rows"
        );
        Ok(Some(metrics))
    }

    /// No test row, or no ranking asked of implicit feedback: an evaluation
    /// has nothing to score, and the caller keeps its default metrics.
    pub(super) fn nothing_to_score(&self, cfg: &TrainConfig) -> bool {
        self.shape.n_scored_test == 0 || (cfg.is_implicit() && cfg.ranking_k == 0)
    }

    /// Evaluate on the workers holding the user blocks (and their test rows).
    /// `Ok(None)` when a worker was lost meanwhile: the caller evaluates
    /// locally (or, where only the workers hold the test rows, moves the
    /// lost worker's blocks and asks again).
    pub(super) fn evaluate_remote(&mut self, cfg: &TrainConfig, users: &Factors, items: &Factors) -> anyhow::Result<Option<TestMetrics>> {
        if self.nothing_to_score(cfg) {
            return Ok(None);
        }
        let t0 = Instant::now();
        let mut asked: Asked = Vec::new();
        let mut futs = Vec::new();
        for w in 0..self.slots.len() {
            let Some((blocks, msgs)) = self.eval_messages(w, cfg, users, items) else {
                continue;
            };
            if !self.slots[w].alive {
                // Its blocks move at the next half; until then the coordinator evaluates.
                return Ok(None);
            }
            asked.push((w, blocks));
            futs.push(self.watch(w, run_evaluation(self.slots[w].handle.clone(), msgs)));
        }
        let metrics = self.gather_evaluations(cfg, asked, futs)?;
        tracing::debug!(
            bytes = self.eval_bytes,
            seconds = t0.elapsed().as_secs_f64(),
            "evaluated on the workers"
        );
        Ok(metrics)
    }

    /// Run the evaluation calls `futs` (to the workers of `asked`) and merge
    /// their answers into the metrics; `None` when a worker was lost.
    fn gather_evaluations<F>(&mut self, cfg: &TrainConfig, asked: Asked, futs: Vec<F>) -> anyhow::Result<Option<TestMetrics>>
    where
        F: std::future::Future<Output = (usize, Result<WorkerEval, HalfError>)>,
    {
        let implicit = cfg.is_implicit();
        let results = self.rt.block_on(futures::future::join_all(futs));
        let (gathered, lost) = self.settle(results)?;
        if lost {
            tracing::warn!("evaluating on the coordinator instead");
            return Ok(None);
        }
        // What each block must have scored: its test rows, or its users with a relevant one.
        let per_block = match implicit {
            false => self.test_per_block.clone(),
            true => self.eval_users_per_block.clone(),
        };
        let mut sums: Vec<Option<BlockSums>> = vec![None; self.layouts.users.n_blocks()];
        for (w, res) in gathered {
            self.eval_bytes += res.bytes;
            let addr = &self.slots[w].handle.addr;
            let want = &asked.iter().find(|(a, _)| *a == w).expect("asked this worker").1;
            let got: Vec<u32> = res.blocks.iter().map(|(b, _)| *b).collect();
            anyhow::ensure!(&got == want, "worker {addr}: evaluated blocks {got:?}, asked for {want:?}");
            for (b, block_sums) in res.blocks {
                let s = block_sums.with_context(|| format!("worker {addr}: block {b}: no metric sums"))?;
                let s = BlockSums::from_pb(&s, implicit).map_err(|e| anyhow::anyhow!("worker {addr}: block {b}: {e}"))?;
                // As many test rows (explicit) or evaluated users (implicit) as the block has.
                let n = if implicit { s.ranking.n } else { s.raw.n };
                let want_n = per_block[b as usize];
                anyhow::ensure!(
                    n == want_n,
                    "worker {addr}: block {b}: metric sums over {n} rows, the block has {want_n}"
                );
                sums[b as usize] = Some(s);
            }
        }
        // The blocks' sums in block order, as the single-process path adds them.
        let mut total = BlockSums::default();
        for s in sums.iter().flatten() {
            total.raw.merge(&s.raw);
            total.clipped.merge(&s.clipped);
            total.ranking.merge(&s.ranking);
        }
        let metrics = match implicit {
            true => eval::metrics_of_ranking_sums(cfg, &total.ranking),
            false => {
                anyhow::ensure!(total.raw.n == self.shape.n_scored_test as u64, "some test rows were not evaluated");
                eval::metrics_of_error_sums(&total.raw, &total.clipped)
            }
        };
        self.remote_evaluations += 1;
        Ok(Some(metrics))
    }
}
