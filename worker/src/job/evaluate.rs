//! Test metrics' share of the worker's user blocks: each block's error sums
//! over its test rows (explicit), or the sums of its users' ranking metrics
//! from their top-K lists (implicit). Only these sums leave the worker.

use als_core::data::group_by_key;
use als_core::metrics::{ranking_list_len, ListScorer};
use als_core::solve::FixedSide;
use als_core::topk::{top_n_batch_in, ScoreBuffers};
use als_core::train::eval::{fold_in_rows, predict_rows};
use als_proto::payload::EvalLimits;
use als_proto::sums::BlockSums;
use ndarray::ArrayView2;

use super::{exchange, invalid, Job, JobError, TestRows};

/// The factors an evaluation needs, as received.
#[derive(Debug, Default)]
pub struct EvalInput {
    pub step: u64,
    /// User blocks to evaluate (held here), ascending.
    pub blocks: Vec<u32>,
    /// 0: predict every test row (explicit); K: top-K lists (implicit).
    pub top_k: u32,
    pub min_pos: f32,
    /// Explicit: where the clipped error sums clip the predictions (none: as the raw).
    pub clip: Option<(f32, f32)>,
    /// Implicit: the metrics' cutoff; `top_k` is the list length it needs.
    pub ranking_k: u32,
    /// Item factors cover every item (else only `item_rows`).
    pub all_items: bool,
    pub item_rows: Vec<u32>,
    /// Rows of `blocks` in block order.
    pub user_factors: Vec<f32>,
    pub user_bias: Vec<f32>,
    pub item_factors: Vec<f32>,
    pub item_bias: Vec<f32>,
}

/// One block's evaluation, ready to stream back: sums over its rows in
/// row order (each row's test rows in shipped order): the errors of the raw
/// and clipped predictions (explicit), or the ranking metrics of the users
/// with a relevant test row (implicit).
#[derive(Debug, Default, PartialEq)]
pub struct EvalBlock {
    pub block: u32,
    pub sums: BlockSums,
}

/// Longest top-K list an evaluation may ask for.
pub const MAX_TOP_K: u32 = als_core::limits::MAX_RANKING_K as u32;

impl Job {
    /// Rows of the listed user blocks, which must be held here and ascending.
    fn eval_rows(&self, blocks: &[u32]) -> Result<usize, JobError> {
        if blocks.is_empty() || blocks.windows(2).any(|w| w[0] >= w[1]) {
            return invalid("evaluation blocks must be a non-empty ascending list");
        }
        let mut n = 0;
        for b in blocks {
            match self.users.blocks.get(b) {
                Some(bl) => n += bl.n_rows,
                None => return invalid(format!("user block {b} is not held by this worker")),
            }
        }
        Ok(n)
    }

    /// Held-out users of the listed user blocks, which must be held here,
    /// ascending, and built with their held-out users.
    fn held_out_rows(&self, blocks: &[u32]) -> Result<usize, JobError> {
        self.eval_rows(blocks)?;
        let mut n = 0;
        for b in blocks {
            match &self.users.blocks[b].held_out {
                Some(h) => n += h.n_users(),
                None => return invalid(format!("user block {b} holds no held-out users")),
            }
        }
        Ok(n)
    }

    /// Upper bounds of an evaluation's byte fields (item_rows, user factors and
    /// bias, item factors and bias), from its header.
    pub fn eval_limits(&self, blocks: &[u32], all_items: bool, n_item_rows: u32, top_k: u32) -> Result<EvalLimits, JobError> {
        let k = self.params.factors as u64;
        let rows = self.eval_rows(blocks)? as u64;
        if n_item_rows as u64 > self.n_items || (all_items && n_item_rows != 0) {
            return invalid(format!("{n_item_rows} item rows declared for {} items", self.n_items));
        }
        if top_k > MAX_TOP_K {
            return invalid(format!("top-K lists need K <= {MAX_TOP_K}, got {top_k}"));
        }
        let items = if all_items { self.n_items } else { n_item_rows as u64 };
        let b = if self.biased() { 4 } else { 0 };
        let limits = EvalLimits {
            item_rows: n_item_rows as u64 * 4,
            user_factors: rows * k * 4,
            user_bias: rows * b,
            item_factors: items * k * 4,
            item_bias: items * b,
        };
        // Inputs as received and decoded, plus the work: a K-list per user.
        let answer = rows * (top_k.min(self.n_items as u32) as u64 + 1) * 4;
        let incoming = 2 * limits.total() + 2 * answer;
        self.within_budget(incoming, &format!("an evaluation of {rows} users"))?;
        Ok(limits)
    }

    /// Predictions for the test rows of the listed user blocks (explicit), or
    /// the top-K lists of their users with a relevant test row (implicit),
    /// computed with the coordinator's own functions so the metrics match it.
    pub fn evaluate(&self, e: &EvalInput) -> Result<Vec<EvalBlock>, JobError> {
        let k = self.params.factors;
        let biased = self.biased();
        let rows = self.eval_rows(&e.blocks)?;
        let n_items = if e.all_items { self.n_items as usize } else { e.item_rows.len() };
        if e.item_rows.windows(2).any(|w| w[0] >= w[1]) || e.item_rows.last().is_some_and(|&r| r as u64 >= self.n_items) {
            return invalid("item rows must be ascending and inside the items");
        }
        let want_bias = |n: usize| if biased { n } else { 0 };
        if e.user_factors.len() != rows * k
            || e.item_factors.len() != n_items * k
            || e.user_bias.len() != want_bias(rows)
            || e.item_bias.len() != want_bias(n_items)
        {
            return invalid(format!(
                "evaluation factors: expected {} user and {} item values (bias {} and {})",
                rows * k,
                n_items * k,
                want_bias(rows),
                want_bias(n_items)
            ));
        }
        let all = [&e.user_factors, &e.item_factors, &e.user_bias, &e.item_bias];
        if all.iter().any(|v| v.iter().any(|x| !x.is_finite())) {
            return invalid("non-finite factor in the evaluation");
        }
        check_scoring(e.top_k, e.ranking_k, e.min_pos, e.all_items, e.clip)?;
        let items = ArrayView2::from_shape((n_items, k), &e.item_factors).map_err(|e| JobError::Invalid(e.to_string()))?;
        let mut out = Vec::with_capacity(e.blocks.len());
        let mut scoring = Scoring::new(e, items);
        let mut offset = 0;
        for &id in &e.blocks {
            let b = &self.users.blocks[&id];
            let uf = &e.user_factors[offset * k..(offset + b.n_rows) * k];
            let ub = if biased { &e.user_bias[offset..offset + b.n_rows] } else { &[][..] };
            offset += b.n_rows;
            // Training items to leave out, as global rows (ascending, as `needed` is).
            let seen = |row: usize| -> Vec<u32> {
                b.columns[b.indptr[row]..b.indptr[row + 1]]
                    .iter()
                    .map(|&c| b.needed[c as usize])
                    .collect()
            };
            let sums = self.score_rows(&mut scoring, (uf, ub), &b.test, &seen)?;
            out.push(EvalBlock { block: id, sums });
        }
        Ok(out)
    }

    /// The sums of one block's rows (factors `uf`, bias `ub`), each row's
    /// test rows `test` scored: predicted (explicit), or ranked on a top-K
    /// list without the items `seen` gives (implicit).
    fn score_rows(
        &self,
        s: &mut Scoring<'_>,
        (uf, ub): (&[f32], &[f32]),
        test: &TestRows,
        seen: &dyn Fn(usize) -> Vec<u32>,
    ) -> Result<BlockSums, JobError> {
        let (k, biased, e) = (self.params.factors, self.biased(), s.input);
        let n_rows = uf.len() / k.max(1);
        let mut sums = BlockSums::default();
        if e.top_k == 0 {
            for row in 0..n_rows {
                let (cols, vals) = test.row(row);
                for (&c, &v) in cols.iter().zip(vals) {
                    let j =
                        item_position(e, c).ok_or_else(|| JobError::Invalid(format!("test item {c} has no factors in the evaluation")))?;
                    let (bu, bi) = if biased { (ub[row], e.item_bias[j]) } else { (0.0, 0.0) };
                    let pu = &uf[row * k..(row + 1) * k];
                    let p = predict_rows(&self.params, pu, bu, &e.item_factors[j * k..(j + 1) * k], bi);
                    sums.raw.add(v, p, None);
                    sums.clipped.add(v, p, e.clip);
                }
            }
            return Ok(sums);
        }
        let sel: Vec<usize> = (0..n_rows).filter(|&row| test.row(row).1.iter().any(|&v| v >= e.min_pos)).collect();
        let mut q = Vec::with_capacity(sel.len() * k);
        for &row in &sel {
            q.extend_from_slice(&uf[row * k..(row + 1) * k]);
        }
        let queries = ArrayView2::from_shape((sel.len(), k), &q).map_err(|e| JobError::Invalid(e.to_string()))?;
        let seen: Vec<Vec<u32>> = sel.iter().map(|&row| seen(row)).collect();
        let exclude = |j: usize| -> &[u32] { &seen[j] };
        let lists = top_n_batch_in(&s.buffers, queries, s.items, e.top_k as usize, &exclude);
        for (&row, list) in sel.iter().zip(lists) {
            // Relevant: the row's test items valued min_pos or more, sorted, distinct.
            let (cols, vals) = test.row(row);
            let mut relevant: Vec<u32> = cols.iter().zip(vals).filter(|(_, &v)| v >= e.min_pos).map(|(&c, _)| c).collect();
            relevant.sort_unstable();
            relevant.dedup();
            let listed: Vec<u32> = list.iter().map(|s| s.index).collect();
            s.scorer.add(&mut sums.ranking, &listed, &relevant);
        }
        Ok(sums)
    }

    /// [`Job::evaluate`] of the listed blocks' held-out users (`--split
    /// users`): each folded in from its fold-in rows against the item rows
    /// (exactly, as [`fold_in_rows`] folds every held-out user in on a
    /// single process), then its ranked rows scored, its fold-in items left
    /// out of its list. Implicit feedback folds in with `item_gram`.
    fn evaluate_held_out(&self, e: &EvalInput, item_gram: Option<&[f64]>) -> Result<Vec<EvalBlock>, JobError> {
        let (k, biased) = (self.params.factors, self.biased());
        if self.implicit() != item_gram.is_some() || item_gram.is_some_and(|g| g.len() != k * k) {
            return invalid("held-out users fold in with the items' Gramian for implicit feedback, and only then");
        }
        let n_items = if e.all_items { self.n_items as usize } else { e.item_rows.len() };
        let items = ArrayView2::from_shape((n_items, k), &e.item_factors).map_err(|e| JobError::Invalid(e.to_string()))?;
        let mut scoring = Scoring::new(e, items);
        let mut out = Vec::with_capacity(e.blocks.len());
        for &id in &e.blocks {
            let h = self.users.blocks[&id]
                .held_out
                .as_ref()
                .ok_or_else(|| JobError::Invalid(format!("user block {id} holds no held-out users")))?;
            // The fold-in rows' items as positions among the item rows (the same order).
            let mut rows = h.fold_in.clone();
            rows.n_cols = n_items;
            for c in &mut rows.indices {
                *c = item_position(e, *c).ok_or_else(|| JobError::Invalid(format!("fold-in item {c} has no factors in the evaluation")))?
                    as u32;
            }
            let fixed = FixedSide {
                factors: &e.item_factors,
                bias: if biased { &e.item_bias } else { &[] },
                total_rows: self.n_items as usize,
            };
            let (uf, ub) = fold_in_rows(&rows, &self.params, fixed, item_gram).map_err(|e| JobError::Solve {
                message: format!("folding in the held-out users of user block {id}: {e}"),
                row: None,
            })?;
            let (indptr, order) = group_by_key(&h.test.users, h.n_users());
            let test = TestRows {
                indptr,
                columns: order.iter().map(|&r| h.test.items[r]).collect(),
                values: order.iter().map(|&r| h.test.ratings[r]).collect(),
            };
            let seen = |row: usize| h.fold_in.row(row).0.to_vec();
            let sums = self.score_rows(&mut scoring, (&uf, &ub), &test, &seen)?;
            out.push(EvalBlock { block: id, sums });
        }
        Ok(out)
    }
}

/// What scoring one evaluation's blocks shares: the item rows, and buffers.
struct Scoring<'a> {
    input: &'a EvalInput,
    items: ArrayView2<'a, f32>,
    buffers: ScoreBuffers,
    scorer: ListScorer,
}

impl<'a> Scoring<'a> {
    fn new(input: &'a EvalInput, items: ArrayView2<'a, f32>) -> Self {
        Scoring {
            input,
            items,
            buffers: ScoreBuffers::new(),
            scorer: ListScorer::new(input.ranking_k as usize),
        }
    }
}

/// Where item `c` (a global row) is among an evaluation's item rows.
fn item_position(e: &EvalInput, c: u32) -> Option<usize> {
    match e.all_items {
        true => Some(c as usize),
        false => e.item_rows.binary_search(&c).ok(),
    }
}

/// How an evaluation scores, checked: top-K lists over every item, as long
/// as the metrics at `ranking_k` need, a finite `min_pos`; a finite,
/// ordered clipping range.
fn check_scoring(top_k: u32, ranking_k: u32, min_pos: f32, all_items: bool, clip: Option<(f32, f32)>) -> Result<(), JobError> {
    if top_k > 0 && (!all_items || top_k > MAX_TOP_K || !min_pos.is_finite()) {
        return invalid(format!(
            "top-K lists need every item's factors, K <= {MAX_TOP_K} and a finite min_pos"
        ));
    }
    if top_k > 0 && (ranking_k == 0 || ranking_list_len(ranking_k as usize) != top_k as usize) {
        return invalid(format!(
            "metrics at K = {ranking_k} need lists of {}, not {top_k}",
            ranking_list_len(ranking_k as usize)
        ));
    }
    if clip.is_some_and(|(lo, hi)| !(lo.is_finite() && hi.is_finite() && lo <= hi)) {
        return invalid("the clipping range must be finite and ordered");
    }
    Ok(())
}

/// What an evaluation from peers' rows asks for: the header of its call.
#[derive(Debug, Clone, Default)]
pub struct EvalFromPeers {
    pub step: u64,
    pub blocks: Vec<u32>,
    pub top_k: u32,
    pub min_pos: f32,
    pub all_items: bool,
    pub clip: Option<(f32, f32)>,
    pub ranking_k: u32,
    /// Score the blocks' held-out users, folded in first (`--split users`).
    pub held_out: bool,
    /// Implicit feedback: the items' Gramian the held-out users fold in with.
    pub item_gram: Option<Vec<f64>>,
}

impl Job {
    /// [`Job::evaluate`] with no factors sent: this worker's latest rows of
    /// the listed user blocks, scored against the item rows of its own item
    /// blocks and those its peers sent for step `step` (every item for top-K
    /// lists, else the test items of its user blocks). The same function
    /// then scores them, so the answers are those of a streamed evaluation.
    pub fn evaluate_from_peers(&self, h: &EvalFromPeers) -> Result<Vec<EvalBlock>, JobError> {
        let k = self.params.factors;
        let biased = self.biased();
        let rows = match h.held_out {
            true => self.held_out_rows(&h.blocks)?,
            false => self.eval_rows(&h.blocks)?,
        };
        if h.all_items != self.implicit() {
            return invalid("an evaluation from peers' rows scores every item for implicit feedback, the test items for explicit");
        }
        // Checked before the peers' rows are taken: a refused call leaves them for a good one.
        check_scoring(h.top_k, h.ranking_k, h.min_pos, h.all_items, h.clip)?;
        let top = h.top_k.min(self.n_items as u32) as u64;
        let answer = 4 * (rows as u64) * (top + 1);
        let users = 4 * (rows * (k + usize::from(biased))) as u64;
        self.within_budget(users + 2 * answer, &format!("an evaluation of {rows} users"))?;
        let rows_in = exchange::lock(&self.mailbox).take_eval(h.step)?;
        let (items, mut item_factors, mut item_bias) = (rows_in.items, rows_in.factors, rows_in.bias);
        // The rows of this worker's own item blocks never travel.
        for b in self.items.blocks.values() {
            let end = b.row_start + b.n_rows as u64;
            let lo = items.partition_point(|&g| (g as u64) < b.row_start);
            let hi = items.partition_point(|&g| (g as u64) < end);
            let (own_f, own_b) = b.latest();
            for p in lo..hi {
                let r = (items[p] as u64 - b.row_start) as usize;
                item_factors[p * k..(p + 1) * k].copy_from_slice(&own_f[r * k..(r + 1) * k]);
                if biased {
                    item_bias[p] = own_b[r];
                }
            }
        }
        let (mut user_factors, mut user_bias) = (Vec::new(), Vec::new());
        // Held-out users are folded in: they have no rows here until then.
        for id in h.blocks.iter().filter(|_| !h.held_out) {
            let (f, b) = self.users.blocks[id].latest();
            user_factors.extend_from_slice(f);
            user_bias.extend_from_slice(b);
        }
        let input = EvalInput {
            step: h.step,
            blocks: h.blocks.clone(),
            top_k: h.top_k,
            min_pos: h.min_pos,
            clip: h.clip,
            ranking_k: h.ranking_k,
            all_items: h.all_items,
            item_rows: if h.all_items { Vec::new() } else { items },
            user_factors,
            user_bias,
            item_factors,
            item_bias,
        };
        match h.held_out {
            true => self.evaluate_held_out(&input, h.item_gram.as_deref()),
            false => self.evaluate(&input),
        }
    }
}
