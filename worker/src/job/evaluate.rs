//! Test metrics' share of the worker's user blocks: each block's error sums
//! over its test rows (explicit), or the sums of its users' ranking metrics
//! from their top-K lists (implicit). Only these sums leave the worker.

use als_core::metrics::{ranking_list_len, ListScorer};
use als_core::topk::{top_n_batch_in, ScoreBuffers};
use als_core::train::eval::predict_rows;
use als_proto::payload::EvalLimits;
use als_proto::sums::BlockSums;
use ndarray::ArrayView2;

use super::{exchange, invalid, Job, JobError};

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
        let buffers = ScoreBuffers::new();
        let mut scorer = ListScorer::new(e.ranking_k as usize);
        let mut offset = 0;
        for &id in &e.blocks {
            let b = &self.users.blocks[&id];
            let uf = &e.user_factors[offset * k..(offset + b.n_rows) * k];
            let ub = if biased { &e.user_bias[offset..offset + b.n_rows] } else { &[][..] };
            offset += b.n_rows;
            let mut r = EvalBlock {
                block: id,
                ..Default::default()
            };
            if e.top_k == 0 {
                for row in 0..b.n_rows {
                    let (cols, vals) = b.test.row(row);
                    for (&c, &v) in cols.iter().zip(vals) {
                        let j = if e.all_items {
                            c as usize
                        } else {
                            e.item_rows
                                .binary_search(&c)
                                .map_err(|_| JobError::Invalid(format!("test item {c} has no factors in the evaluation")))?
                        };
                        let (bu, bi) = if biased { (ub[row], e.item_bias[j]) } else { (0.0, 0.0) };
                        let pu = &uf[row * k..(row + 1) * k];
                        let p = predict_rows(&self.params, pu, bu, &e.item_factors[j * k..(j + 1) * k], bi);
                        r.sums.raw.add(v, p, None);
                        r.sums.clipped.add(v, p, e.clip);
                    }
                }
            } else {
                let sel: Vec<usize> = (0..b.n_rows)
                    .filter(|&row| b.test.row(row).1.iter().any(|&v| v >= e.min_pos))
                    .collect();
                let mut q = Vec::with_capacity(sel.len() * k);
                for &row in &sel {
                    q.extend_from_slice(&uf[row * k..(row + 1) * k]);
                }
                let queries = ArrayView2::from_shape((sel.len(), k), &q).map_err(|e| JobError::Invalid(e.to_string()))?;
                // Training items to leave out, as global rows (ascending, as `needed` is).
                let seen: Vec<Vec<u32>> = sel
                    .iter()
                    .map(|&row| {
                        b.columns[b.indptr[row]..b.indptr[row + 1]]
                            .iter()
                            .map(|&c| b.needed[c as usize])
                            .collect()
                    })
                    .collect();
                let exclude = |j: usize| -> &[u32] { &seen[j] };
                let lists = top_n_batch_in(&buffers, queries, items, e.top_k as usize, &exclude);
                for (&row, list) in sel.iter().zip(lists) {
                    // Relevant: the row's test items valued min_pos or more, sorted, distinct.
                    let (cols, vals) = b.test.row(row);
                    let mut relevant: Vec<u32> = cols.iter().zip(vals).filter(|(_, &v)| v >= e.min_pos).map(|(&c, _)| c).collect();
                    relevant.sort_unstable();
                    relevant.dedup();
                    let listed: Vec<u32> = list.iter().map(|s| s.index).collect();
                    scorer.add(&mut r.sums.ranking, &listed, &relevant);
                }
            }
            out.push(r);
        }
        Ok(out)
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
        let rows = self.eval_rows(&h.blocks)?;
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
        let mut user_factors = Vec::with_capacity(rows * k);
        let mut user_bias = Vec::with_capacity(if biased { rows } else { 0 });
        for id in &h.blocks {
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
        self.evaluate(&input)
    }
}
