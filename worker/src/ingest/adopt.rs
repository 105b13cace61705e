//! The blocks built here become the job's: each in the form `AssignBlock`
//! ships it (columns as positions in the block's sorted distinct fixed
//! rows, test rows grouped by user in input order), with every row's start
//! factors drawn from its id as the coordinator draws them. So a job whose
//! blocks were built by the workers holds, bit for bit, what shipping would
//! have given it.

use als_core::data::{group_by_key, Csr};
use als_core::init::init_row;
use als_core::side::Side;

use super::Ingest;
use crate::job::{BlockData, JobError};

/// How the coordinator draws the start factors (its `TrainConfig`).
#[derive(Debug, Clone, Copy)]
pub struct StartFactors {
    pub seed: u64,
    pub init_std: Option<f32>,
    pub k: usize,
    pub biased: bool,
}

impl StartFactors {
    /// No rows drawn: the caller sets them (`take_block` with `k` 0).
    pub const NONE: StartFactors = StartFactors {
        seed: 0,
        init_std: None,
        k: 0,
        biased: false,
    };
}

impl Ingest {
    /// Every block built here, by side, as the job's blocks.
    pub fn into_blocks(mut self, start: StartFactors) -> Result<Vec<(Side, BlockData)>, JobError> {
        self.expect(super::Stage::Finished, "blocks adopted")?;
        let users: Vec<u32> = self.finished_users.keys().copied().collect();
        let items: Vec<u32> = self.finished_items.keys().copied().collect();
        let mut out = Vec::with_capacity(users.len() + items.len());
        for (side, blocks) in [(Side::Users, users), (Side::Items, items)] {
            for b in blocks {
                out.push((side, self.take_block(side, b, start)?));
            }
        }
        Ok(out)
    }

    /// Block `block` of `side`, built here, as the job's block (and no
    /// longer held here); with `start.k` 0, with no factors, for the
    /// caller to set (the coordinator's rows: `AssignBlock` with
    /// `ratings_built`).
    pub fn take_block(&mut self, side: Side, block: u32, start: StartFactors) -> Result<BlockData, JobError> {
        self.expect(super::Stage::Finished, "a block taken")?;
        let missing = || JobError::Invalid(format!("this worker built no {} block {block} for the job", side.name()));
        match side {
            Side::Users => {
                let done = self.finished_users.remove(&block).ok_or_else(missing)?;
                let row_start = self.user_starts[block as usize];
                let ids = &self.users.get(&block).ok_or_else(missing)?.user_ids;
                let mut data = block_data(block, row_start, done.by_user, ids, Side::Users, start);
                // The test rows, grouped by the block's users, each user's in input order.
                let local: Vec<u32> = done.test.iter().map(|&(u, _, _)| u - row_start as u32).collect();
                if !local.is_empty() {
                    let (indptr, order) = group_by_key(&local, ids.len());
                    data.n_test = local.len() as u64;
                    data.test_indptr = indptr.iter().map(|&p| p as u32).collect();
                    data.test_columns = order.iter().map(|&r| done.test[r].1).collect();
                    data.test_values = order.iter().map(|&r| done.test[r].2).collect();
                }
                data.held_out = done.held_out;
                Ok(data)
            }
            Side::Items => {
                let by_item = self.finished_items.remove(&block).ok_or_else(missing)?;
                let row_start = self.item_starts[block as usize];
                let ids = &self.items.get(&block).ok_or_else(missing)?.item_ids;
                Ok(block_data(block, row_start, by_item, ids, Side::Items, start))
            }
        }
    }

    /// Every block built here has been taken.
    pub fn all_taken(&self) -> bool {
        self.finished_users.is_empty() && self.finished_items.is_empty()
    }
}

/// The other side's rows `csr` references, ascending, each once: a block's
/// `needed` rows (what `Describe` tells and `AssignBlock` carries).
pub(super) fn referenced_rows(csr: &Csr) -> Vec<u32> {
    let mut seen = vec![false; csr.n_cols];
    for &c in &csr.indices {
        seen[c as usize] = true;
    }
    seen.iter().enumerate().filter(|(_, &s)| s).map(|(c, _)| c as u32).collect()
}

/// One block's rows as shipped: `csr` holds its rows against every row of
/// the other side.
fn block_data(block: u32, row_start: u64, csr: Csr, ids: &[String], side: Side, start: StartFactors) -> BlockData {
    // Each distinct column's position among them.
    let needed = referenced_rows(&csr);
    let mut position = vec![u32::MAX; csr.n_cols];
    for (p, &c) in needed.iter().enumerate() {
        position[c as usize] = p as u32;
    }
    let nnz = csr.nnz() as u64;
    let indptr = csr.indptr.iter().map(|&p| p as u32).collect();
    let mut columns = csr.indices;
    columns.iter_mut().for_each(|c| *c = position[*c as usize]);
    let mut factors = vec![0f32; ids.len() * start.k];
    if start.k > 0 {
        for (row, id) in factors.chunks_mut(start.k).zip(ids) {
            init_row(start.seed, side, id, start.init_std, row);
        }
    }
    BlockData {
        block,
        row_start,
        n_rows: ids.len() as u32,
        nnz,
        n_needed: needed.len() as u32,
        indptr,
        columns,
        values: csr.values,
        needed,
        factors,
        bias: if start.biased { vec![0.0; ids.len()] } else { Vec::new() },
        n_test: 0,
        test_indptr: Vec::new(),
        test_columns: Vec::new(),
        test_values: Vec::new(),
        ids: ids.to_vec(),
        held_out: None,
    }
}
