//! One half-iteration on the cluster: its attempts, what a finished one
//! yields, and how a lost worker is recovered from.
//!
//! With peer exchange the solved rows stay on the workers: each half sends
//! its rows to the peers that need them, and the coordinator's copy of the
//! model (`users`, `items` as `train` holds them) is brought up to date only
//! when something reads it ([`ClusterExecutor::sync_rows`], by `FetchRows`).
//! Until then that copy is a consistent snapshot, the state after the last
//! fetch, and the halves solved since are listed. A worker lost while the
//! copy is behind costs a replay: every block is shipped again from the
//! snapshot and the listed halves are solved again, which gives the same
//! bits, so the model is the fault-free one. A worker lost while the copy is
//! current costs only the half (its blocks move and the half is redone from
//! the same warm start), as without exchange.

use std::time::Instant;

use als_core::side::{Factors, Side};
use als_core::solve::{lower_triangle, Feedback, ObjectiveTerms, SolveParams, TermsWanted};
use als_core::train::{HalfStepOutput, HalfStepReport};
use als_proto::codec::{f64_bytes, pieces_into_finite};
use als_proto::pb::SolveRequest;
use als_proto::spec::{side_to_pb, terms_to_pb};
use anyhow::Context;

use super::exchange::PeerRound;
use super::health::watched;
use super::membership::{max_attempts, Answers};
use super::rpc::{checked_lower_gram, push_and_solve, sum_lower_grams, HalfError, JobFailed, WorkerHalf};
use super::wire::factor_messages;
use super::{side_ix, ClusterExecutor};
use crate::cluster::routing::HalfMinimums;

/// How one attempt of a half runs.
pub(super) struct Plan<'g> {
    pub(super) side: Side,
    pub(super) step: u64,
    pub(super) fixed_gram: Option<&'g [f64]>,
    pub(super) terms: Option<TermsWanted>,
    /// Send the solved rows to the peers (for the next half).
    pub(super) exchange: bool,
    /// Stream the solved rows back into the coordinator's copy.
    pub(super) rows_back: bool,
    /// Bytes the workers sent each other before this half's solve: the
    /// routes they asked of each other, and the fixed side's rows (instead
    /// of a push).
    pub(super) rows_sent: u64,
}

pub(super) enum Outcome {
    Done(Vec<(usize, WorkerHalf)>),
    /// A worker was lost (and marked so).
    Lost,
    /// A worker could not send its rows to a peer.
    PeerFailed,
}

/// A finished half, reduced.
pub(super) struct Accepted {
    pub(super) target_gram: Option<Vec<f64>>,
    pub(super) terms: Option<ObjectiveTerms>,
    pub(super) compute_seconds: f64,
    pub(super) bytes: u64,
    pub(super) bytes_peer: u64,
}

impl ClusterExecutor<'_> {
    pub(super) fn half(
        &mut self,
        side: Side,
        params: &SolveParams,
        fixed: &Factors,
        fixed_gram: Option<&[f64]>,
        target: &mut Factors,
        terms: Option<TermsWanted>,
    ) -> anyhow::Result<HalfStepOutput> {
        let t0 = Instant::now();
        if self.since_sync.is_empty() {
            // The first half after the copy was current: where a replay starts.
            self.snapshot_gram = fixed_gram.map(<[f64]>::to_vec);
        }
        let last = self.halves_done + 1 >= self.halves_total;
        let mut sent = std::mem::take(&mut self.unreported_bytes);
        self.step += 1;
        let mut step = self.step;
        let mut attempts = 0;
        let (plan, results) = {
            let (users, items) = match side {
                Side::Users => (&*target, fixed),
                Side::Items => (fixed, &*target),
            };
            loop {
                attempts += 1;
                if attempts > max_attempts(self.slots.len()) {
                    return Err(self.gave_up(&format!("the {} half-step", side.name()), attempts - 1));
                }
                // The last half sends nothing on: its rows are fetched (or, with
                // the copy current, streamed back).
                let exchange = self.exchange && !last;
                let mut plan = Plan {
                    side,
                    step,
                    fixed_gram,
                    terms,
                    exchange,
                    // Without a copy here, the rows stay on the workers.
                    rows_back: !exchange && !self.stale && !self.no_copy(),
                    rows_sent: 0,
                };
                match self.attempt(&mut plan, params, users, items, &mut sent)? {
                    Outcome::Done(r) => break (plan, r),
                    // The copy is current: the lost worker's blocks move and the
                    // half is redone from the same warm start (the same step).
                    Outcome::Lost if !self.stale => {}
                    Outcome::PeerFailed if !self.stale && self.pushes_possible() => {
                        tracing::warn!("peer exchange failed; the coordinator carries the rows for the rest of the job");
                        self.exchange = false;
                    }
                    Outcome::Lost | Outcome::PeerFailed => {
                        self.replay(params, users, items, &mut sent)?;
                        self.step += 1;
                        step = self.step;
                    }
                }
            }
        };
        let acc = self.accept(&plan, params, results, plan.rows_back.then_some(target))?;
        sent += acc.bytes;
        self.peers_ready = plan.exchange.then_some((side, plan.step + 1));
        if !plan.rows_back {
            self.stale = true;
        }
        if self.stale {
            self.since_sync.push(side);
        }
        self.halves_done += 1;
        let k = params.factors;
        let minimums = self.half_minimums(side, k)?;
        let seconds = t0.elapsed().as_secs_f64();
        Ok(HalfStepOutput {
            target_gram: acc.target_gram,
            terms: acc.terms,
            report: HalfStepReport {
                side: Some(side),
                seconds,
                compute_seconds: acc.compute_seconds,
                transfer_seconds: (seconds - acc.compute_seconds).max(0.0),
                bytes_sent: sent,
                bytes_min: minimums.hub,
                bytes_min_peer: minimums.peer,
                bytes_peer: acc.bytes_peer + plan.rows_sent + std::mem::take(&mut self.replayed_peer_bytes),
            },
        })
    }

    /// The routing minimums of a half solving `side` on the current
    /// assignment: counted here where the references are, else from the
    /// workers' routes (computed once per assignment).
    fn half_minimums(&mut self, side: Side, k: usize) -> anyhow::Result<HalfMinimums> {
        if let Some(m) = self.bytes_min[side_ix(side)] {
            return Ok(m);
        }
        let pushed = match self.routing.pushed_rows(side, self.layouts.side(side.other())) {
            Some(p) => p,
            None => self.rows_asked[side_ix(side)]
                .clone()
                .context("internal error: no routes were set up, and the references are not here")?,
        };
        let m = self.routing.minimums(side, k, &pushed);
        self.bytes_min[side_ix(side)] = Some(m);
        Ok(m)
    }

    /// One attempt: blocks where they belong, routes current, the fixed rows
    /// pushed (unless peers sent them), every worker solving.
    fn attempt(
        &mut self,
        plan: &mut Plan,
        params: &SolveParams,
        users: &Factors,
        items: &Factors,
        sent: &mut u64,
    ) -> anyhow::Result<Outcome> {
        let side = plan.side;
        // A revived worker takes its blocks back only where the workers'
        // rows are the snapshot's (a current copy, or, without one, a
        // checkpoint just written or a replay's start); its reconnection is
        // looked after at every half meanwhile.
        if self.slots.iter().any(|s| !s.alive) {
            self.revive(!self.stale);
            if plan.exchange && !self.exchange {
                // It cannot exchange: from now on the coordinator carries the rows.
                plan.exchange = false;
                plan.rows_back = true;
            }
        }
        let shipped = self.sync_assignment(users, items)?;
        *sent += shipped;
        if shipped > 0 {
            // Blocks moved: their rows are the coordinator's, so this half is pushed.
            self.routes_current = false;
            self.peers_ready = None;
        }
        // Where this coordinator cannot push, the fixed side always comes from the peers.
        let peers_carry = plan.exchange || !self.pushes_possible();
        if peers_carry && !self.routes_current {
            match self.send_routes()? {
                PeerRound::Done { bytes, peer_bytes } => {
                    *sent += bytes + peer_bytes;
                    plan.rows_sent += peer_bytes;
                    self.routes_current = true;
                }
                PeerRound::Lost(b) => {
                    *sent += b;
                    self.peers_ready = None;
                    return Ok(Outcome::Lost);
                }
                PeerRound::PeerFailed(b) => {
                    *sent += b;
                    self.peers_ready = None;
                    return Ok(Outcome::PeerFailed);
                }
            }
        }
        let step = plan.step;
        let mut from_peers = self.peers_ready == Some((side.other(), step));
        if !from_peers && peers_carry && !self.stale {
            // Where a push would carry the fixed side (the first half, or a
            // half after blocks moved), the workers send it each other: the
            // rows they hold are the coordinator's copy, shipped.
            match self.send_rows(side.other(), step, false)? {
                PeerRound::Done { bytes, peer_bytes } => {
                    *sent += bytes + peer_bytes;
                    plan.rows_sent += peer_bytes;
                    from_peers = true;
                }
                PeerRound::Lost(bytes) => {
                    *sent += bytes;
                    return Ok(Outcome::Lost);
                }
                PeerRound::PeerFailed(bytes) => {
                    *sent += bytes;
                    return Ok(Outcome::PeerFailed);
                }
            }
        }
        anyhow::ensure!(
            from_peers || (!self.stale && self.pushes_possible()),
            "internal error: the {} half would be pushed from a copy the workers are ahead of, or that is not here, or to unknown routes",
            side.name()
        );
        let implicit = matches!(params.feedback, Feedback::Implicit { .. });
        let n_alive = self.slots.iter().filter(|s| s.alive).count();
        let request = SolveRequest {
            job_id: self.job_id.clone(),
            side: side_to_pb(side) as i32,
            step,
            terms: terms_to_pb(plan.terms) as i32,
            fixed_from_peers: from_peers,
            gram: match (from_peers, implicit) {
                (true, true) => {
                    // Symmetric: its lower triangle is all of it.
                    let g = plan.fixed_gram.context("implicit feedback needs the fixed Gramian")?;
                    f64_bytes(&lower_triangle(g, params.factors)).into()
                }
                _ => Default::default(),
            },
            exchange: plan.exchange,
            routes_epoch: self.routes_epoch,
            routes_peers: (n_alive - 1) as u32,
            // A peer gets as long to take the rows as a worker gets to answer, and more.
            peer_timeout_ms: u32::try_from((self.faults.worker_timeout * 6).as_millis()).unwrap_or(u32::MAX),
            rows_back: plan.rows_back,
        };
        let fixed = match side {
            Side::Users => items,
            Side::Items => users,
        };
        let fixed_gram = plan.fixed_gram;
        let unions = self.routing.side(side).references.as_ref().map(|r| &r.union);
        let fixed_layout = self.layouts.side(side.other());
        let futs: Vec<_> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.alive)
            .map(|(w, s)| {
                // A push leaves out the worker's own rows of the fixed side:
                // they stay where they are. Rows from peers need no push.
                // (`pushes_possible`, checked above: the unions are here.)
                let push = unions.filter(|_| !from_peers).map(|unions| {
                    let local: Vec<usize> = s.current[side_ix(side.other())].iter().copied().collect();
                    let rows = rows_outside(&unions[w], local.iter().map(|&b| fixed_layout.range(b)));
                    (local, rows)
                });
                let handle = s.handle.clone();
                let faults = self.faults.clone();
                let (job_id, req) = (self.job_id.clone(), request.clone());
                async move {
                    // Gathered when this worker's future first runs, so a later
                    // worker's rows are gathered while an earlier push is on the wire.
                    let msgs = push.map(|(local, rows)| factor_messages(&job_id, side.other(), step, &rows, &local, fixed, fixed_gram));
                    let work = push_and_solve(handle.clone(), msgs, req);
                    (w, watched(&handle, &faults, work).await)
                }
            })
            .collect();
        let results = self.rt.block_on(until_a_loss(futs, plan.exchange));
        let Answers {
            ok,
            lost,
            peer_failed,
            failed,
        } = self.sort_answers(results)?;
        // A failed solve ends the run even if a worker was lost meanwhile: the
        // lost worker's rows would fail or pass the same way elsewhere, and the
        // lowest failing row among the answers is the single-process path's.
        if let Some(f) = JobFailed::first(failed) {
            return Err(f.into());
        }
        if !lost && !peer_failed {
            return Ok(Outcome::Done(ok));
        }
        // The peers' rows of this step were taken or are partial: the redo is pushed.
        self.peers_ready = None;
        *sent += ok.iter().map(|(_, h)| h.bytes_sent + h.bytes_received + h.bytes_peer).sum::<u64>();
        Ok(if lost { Outcome::Lost } else { Outcome::PeerFailed })
    }

    /// Check every block's answer and reduce them in block order; with
    /// `target`, write the streamed-back rows into it.
    fn accept(
        &mut self,
        plan: &Plan,
        params: &SolveParams,
        results: Vec<(usize, WorkerHalf)>,
        mut target: Option<&mut Factors>,
    ) -> anyhow::Result<Accepted> {
        let (side, terms) = (plan.side, plan.terms);
        let r = self.routing.side(side);
        let k = params.factors;
        let implicit = matches!(params.feedback, Feedback::Implicit { .. });
        let biased = params.biased();
        let n_blocks = self.layouts.side(side).n_blocks();
        let mut grams: Vec<Option<Vec<f64>>> = vec![None; n_blocks];
        let mut block_terms = vec![ObjectiveTerms::default(); n_blocks];
        let mut acc = Accepted {
            target_gram: None,
            terms: None,
            compute_seconds: 0.0,
            bytes: 0,
            bytes_peer: 0,
        };
        let mut seen = vec![false; n_blocks];
        for (w, res) in results {
            acc.bytes += res.bytes_sent + res.bytes_received + res.bytes_peer;
            acc.bytes_peer += res.bytes_peer;
            acc.compute_seconds = acc.compute_seconds.max(res.compute_seconds);
            let addr = self.slots[w].handle.addr.clone();
            tracing::debug!(
                worker = %addr,
                side = side.name(),
                step = plan.step,
                blocks = res.blocks.len(),
                compute_seconds = res.compute_seconds,
                bytes_sent = res.bytes_sent,
                bytes_received = res.bytes_received,
                bytes_peer = res.bytes_peer,
                "worker solved its blocks"
            );
            for (b, g) in res.blocks {
                let b = b as usize;
                let range = g.check_place(&addr, side, (b, w), &r.owner, &mut seen, self.layouts.side(side))?;
                match (terms, g.terms) {
                    (None, None) => {}
                    (Some(_), Some(t)) => {
                        let t = ObjectiveTerms {
                            loss: t.loss,
                            sq: t.sq,
                            reg: t.reg,
                        };
                        // Finite; the squared error and the norms never negative. The
                        // loss may be: Hu's observed part is c(p − s)² − s².
                        anyhow::ensure!(
                            t.is_finite() && t.sq >= 0.0 && t.reg >= 0.0,
                            "worker {addr}: block {b} objective terms malformed"
                        );
                        block_terms[b] = t;
                    }
                    (Some(_), None) => anyhow::bail!("worker {addr}: block {b} came without its objective terms"),
                    (None, Some(_)) => anyhow::bail!("worker {addr}: block {b} came with objective terms nobody asked for"),
                }
                // The worker has the block's latest rows; nobody else holds it.
                for (v, slot) in self.slots.iter_mut().enumerate() {
                    if v == w {
                        slot.current[side_ix(side)].insert(b);
                    } else {
                        slot.current[side_ix(side)].remove(&b);
                    }
                }
                let p = g.arrays.into_pieces();
                if let Some(target) = target.as_deref_mut() {
                    // Straight into the target rows: no intermediate vectors.
                    let dest = &mut target.flat_mut()[range.start * k..range.end * k];
                    pieces_into_finite("factors", &p.factors, dest)
                        .with_context(|| format!("worker {addr}: block {b} factors malformed"))?;
                    if biased {
                        let dest = &mut target.bias[range.clone()];
                        pieces_into_finite("bias", &p.bias, dest).with_context(|| format!("worker {addr}: block {b} bias malformed"))?;
                    }
                }
                if implicit {
                    grams[b] = Some(checked_lower_gram(&addr, b, &p.gram, k)?);
                }
            }
        }
        if let Some(missing) = seen.iter().position(|s| !s) {
            anyhow::bail!("block {missing} of {} was not solved", side.name());
        }
        acc.target_gram = implicit.then(|| sum_lower_grams(k, grams.iter().flatten().map(Vec::as_slice)));
        // In block order, as the single-process path sums them.
        acc.terms = terms.map(|_| ObjectiveTerms::sum(block_terms));
        Ok(acc)
    }

    /// Back to the snapshot (the coordinator's copy), then the halves solved
    /// since, again: every block is shipped anew from the copy, so every
    /// warm start and fixed row is the snapshot's, and the same solves give
    /// the same bits.
    pub(super) fn replay(&mut self, params: &SolveParams, users: &Factors, items: &Factors, sent: &mut u64) -> anyhow::Result<()> {
        self.check_snapshot_file()?;
        let halves = self.since_sync.clone();
        let mut attempts = 0;
        'again: loop {
            attempts += 1;
            if attempts > max_attempts(self.slots.len()) {
                return Err(self.gave_up(&format!("replaying the last {} halves", halves.len()), attempts - 1));
            }
            tracing::info!(
                halves = halves.len(),
                "replaying the halves since the coordinator's copy of the model"
            );
            for slot in &mut self.slots {
                slot.holds = Default::default();
                slot.current = Default::default();
            }
            self.stale = false;
            self.peers_ready = None;
            self.routes_current = false;
            let mut gram = self.snapshot_gram.clone();
            for &side in &halves {
                self.step += 1;
                let mut plan = Plan {
                    side,
                    step: self.step,
                    fixed_gram: gram.as_deref(),
                    terms: None,
                    exchange: true,
                    rows_back: false,
                    rows_sent: 0,
                };
                let results = match self.attempt(&mut plan, params, users, items, sent)? {
                    Outcome::Done(r) => r,
                    Outcome::Lost | Outcome::PeerFailed => continue 'again,
                };
                anyhow::ensure!(plan.exchange, "a worker that cannot exchange rows came back during a replay");
                let acc = self.accept(&plan, params, results, None)?;
                self.replayed_halves += 1;
                let step = plan.step;
                *sent += acc.bytes;
                self.replayed_peer_bytes += acc.bytes_peer + plan.rows_sent;
                gram = acc.target_gram;
                self.stale = true;
                self.peers_ready = Some((side, step + 1));
            }
            return Ok(());
        }
    }
}

/// Every worker's result of a call of a half; with `exchange`, only until a
/// worker is lost: the others would wait on sending it their rows, and the
/// half is redone anyway. Dropped calls are cancelled; what the workers still
/// send of them goes on routes the redo replaces.
pub(super) async fn until_a_loss<F, T>(futs: Vec<F>, exchange: bool) -> Vec<(usize, Result<T, HalfError>)>
where
    F: std::future::Future<Output = (usize, Result<T, HalfError>)>,
{
    use futures::StreamExt;
    let mut pending: futures::stream::FuturesUnordered<F> = futs.into_iter().collect();
    let mut out = Vec::new();
    while let Some((w, r)) = pending.next().await {
        let lost = matches!(r, Err(HalfError::Lost(_)));
        out.push((w, r));
        if lost && exchange {
            break;
        }
    }
    out
}

/// The rows of `union` (ascending) outside every one of `ranges`.
fn rows_outside(union: &[u32], ranges: impl Iterator<Item = std::ops::Range<usize>>) -> Vec<u32> {
    let mut ranges: Vec<std::ops::Range<usize>> = ranges.collect();
    ranges.sort_by_key(|r| r.start);
    let mut out = Vec::with_capacity(union.len());
    let mut next = ranges.iter().peekable();
    for &g in union {
        let g_us = g as usize;
        while next.peek().is_some_and(|r| r.end <= g_us) {
            next.next();
        }
        if !next.peek().is_some_and(|r| r.contains(&g_us)) {
            out.push(g);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::rows_outside;

    #[test]
    fn rows_outside_skips_exactly_the_local_ranges() {
        let union = [0u32, 2, 3, 5, 8, 9, 12, 20];
        assert_eq!(rows_outside(&union, [3..9, 0..1].into_iter()), vec![2, 9, 12, 20]);
        assert_eq!(rows_outside(&union, std::iter::empty()), union.to_vec());
        assert_eq!(rows_outside(&union, std::iter::once(0..21)), Vec::<u32>::new());
        assert_eq!(rows_outside(&union, [13..20, 21..30].into_iter()), vec![0, 2, 3, 5, 8, 9, 12, 20]);
    }
}
