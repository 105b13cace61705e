//! Test metrics' raw material on the worker: predictions for the test rows
//! of its user blocks (explicit), or their users' top-K lists (implicit).

use als_core::topk::{top_n_batch_in, ScoreBuffers};
use als_core::train::eval::predict_rows;
use als_proto::payload::EvalLimits;
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
    /// Item factors cover every item (else only `item_rows`).
    pub all_items: bool,
    pub item_rows: Vec<u32>,
    /// Rows of `blocks` in block order.
    pub user_factors: Vec<f32>,
    pub user_bias: Vec<f32>,
    pub item_factors: Vec<f32>,
    pub item_bias: Vec<f32>,
}

/// One block's evaluation, ready to stream back.
#[derive(Debug, Default, PartialEq)]
pub struct EvalBlock {
    pub block: u32,
    /// Explicit: one per test row, in shipped order.
    pub predictions: Vec<f32>,
    /// Implicit: global user rows with a relevant test row, and their
    /// top-K lists, `top_k` each, padded with `u32::MAX`.
    pub users: Vec<u32>,
    pub top: Vec<u32>,
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
        // Inputs as received and decoded, plus the answer: a prediction per
        // test row, or a K-list (and a user id) per user.
        let test_rows: u64 = blocks
            .iter()
            .filter_map(|id| self.users.blocks.get(id))
            .map(|b| b.test.values.len() as u64)
            .sum();
        let answer = test_rows * 4 + rows * (top_k.min(self.n_items as u32) as u64 + 1) * 4;
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
        if e.top_k > 0 && (!e.all_items || e.top_k > MAX_TOP_K || !e.min_pos.is_finite()) {
            return invalid(format!(
                "top-K lists need every item's factors, K <= {MAX_TOP_K} and a finite min_pos"
            ));
        }
        let items = ArrayView2::from_shape((n_items, k), &e.item_factors).map_err(|e| JobError::Invalid(e.to_string()))?;
        let mut out = Vec::with_capacity(e.blocks.len());
        let buffers = ScoreBuffers::new();
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
                    for &c in b.test.row(row).0 {
                        let j = if e.all_items {
                            c as usize
                        } else {
                            e.item_rows
                                .binary_search(&c)
                                .map_err(|_| JobError::Invalid(format!("test item {c} has no factors in the evaluation")))?
                        };
                        let (bu, bi) = if biased { (ub[row], e.item_bias[j]) } else { (0.0, 0.0) };
                        let pu = &uf[row * k..(row + 1) * k];
                        r.predictions
                            .push(predict_rows(&self.params, pu, bu, &e.item_factors[j * k..(j + 1) * k], bi));
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
                    r.users.push((b.row_start as usize + row) as u32);
                    let start = r.top.len();
                    r.top.extend(list.iter().map(|s| s.index));
                    r.top.resize(start + e.top_k as usize, u32::MAX);
                }
            }
            out.push(r);
        }
        Ok(out)
    }
}

/// What an evaluation from peers' rows asks for: the header of its call.
#[derive(Debug, Clone, Default)]
pub struct EvalFromPeers {
    pub step: u64,
    pub blocks: Vec<u32>,
    pub top_k: u32,
    pub min_pos: f32,
    pub all_items: bool,
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
        let top = h.top_k.min(self.n_items as u32) as u64;
        let answer = 4 * (rows as u64) * (top + 1) + self.users.blocks.values().map(|b| 4 * b.test.values.len() as u64).sum::<u64>();
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
