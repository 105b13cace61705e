//! Contiguous blocks of rows, balanced by rating count.
//!
//! The layout depends only on the data and the block count, never on the
//! number of workers, so per-block sums (the implicit Gramian) are the same
//! however the blocks are spread over the cluster.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::data::ids::{block_of_bucket, id_bucket, in_bucket_order, ID_BUCKETS};
use crate::data::Csr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockLayout {
    /// Block b holds rows `starts[b]..starts[b+1]`.
    pub starts: Vec<usize>,
}

/// Default block count: enough for a few blocks per worker on small clusters,
/// and a constant so results do not change with the cluster size.
pub const DEFAULT_BLOCKS: usize = 12;

impl BlockLayout {
    /// Split rows into `n_blocks` contiguous ranges of about equal work
    /// (ratings plus a fixed cost per row for the solve itself).
    pub fn balanced(csr: &Csr, n_blocks: usize) -> Self {
        let n = csr.n_rows();
        let n_blocks = n_blocks.max(1);
        let row_cost = 8usize;
        let total: usize = csr.nnz() + n * row_cost;
        let mut starts = Vec::with_capacity(n_blocks + 1);
        starts.push(0);
        let mut acc = 0usize;
        let mut r = 0;
        for b in 1..n_blocks {
            let goal = total * b / n_blocks;
            while r < n && acc + csr.row_len(r) + row_cost <= goal {
                acc += csr.row_len(r) + row_cost;
                r += 1;
            }
            starts.push(r);
        }
        starts.push(n);
        BlockLayout { starts }
    }

    /// `n_blocks` blocks of ids in [`dense_order`](crate::data::ids::dense_order):
    /// block b holds the ids whose hash bucket falls in its range of buckets
    /// ([`block_of_bucket`]). A function of the ids and the block count alone,
    /// computable from any subset of the data (each id names its block).
    pub fn hashed(ids: &[String], n_blocks: usize) -> Self {
        let n_blocks = n_blocks.clamp(1, ID_BUCKETS);
        debug_assert!(in_bucket_order(ids), "ids are not in hash bucket order");
        let mut starts = vec![0usize; n_blocks + 1];
        for id in ids {
            starts[block_of_bucket(id_bucket(id), n_blocks) + 1] += 1;
        }
        for b in 0..n_blocks {
            starts[b + 1] += starts[b];
        }
        BlockLayout { starts }
    }

    /// All `n_rows` rows in one block.
    pub fn whole(n_rows: usize) -> Self {
        BlockLayout { starts: vec![0, n_rows] }
    }

    pub fn n_blocks(&self) -> usize {
        self.starts.len() - 1
    }

    pub fn n_rows(&self) -> usize {
        *self.starts.last().unwrap_or(&0)
    }

    /// Each block's first row, then the side's row count, as on the wire.
    pub fn starts_u64(&self) -> Vec<u64> {
        self.starts.iter().map(|&s| s as u64).collect()
    }

    pub fn range(&self, b: usize) -> Range<usize> {
        self.starts[b]..self.starts[b + 1]
    }

    /// The block holding `row`.
    pub fn block_of(&self, row: usize) -> usize {
        self.starts.partition_point(|&s| s <= row) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_blocks_cover_rows_in_order() {
        let rows: Vec<u32> = (0..100u32).flat_map(|r| std::iter::repeat_n(r, (r % 7 + 1) as usize)).collect();
        let cols: Vec<u32> = (0..rows.len() as u32).map(|c| c % 50).collect();
        let vals = vec![1.0; rows.len()];
        let csr = Csr::from_triples(100, 50, &rows, &cols, &vals);
        let l = BlockLayout::balanced(&csr, 6);
        assert_eq!(l.n_blocks(), 6);
        assert_eq!(l.starts[0], 0);
        assert_eq!(l.n_rows(), 100);
        assert!(l.starts.windows(2).all(|w| w[0] <= w[1]));
        let costs: Vec<usize> = (0..6).map(|b| l.range(b).map(|r| csr.row_len(r) + 8).sum()).collect();
        let (mn, mx) = (costs.iter().min().unwrap(), costs.iter().max().unwrap());
        assert!(mx - mn <= 2 * 15, "{costs:?}");
        for r in 0..100 {
            assert!(l.range(l.block_of(r)).contains(&r));
        }
        let tiny = BlockLayout::balanced(&csr.slice_rows(0, 2), 6);
        assert_eq!(tiny.n_rows(), 2);
        assert_eq!(tiny.n_blocks(), 6);
    }

    #[test]
    fn hashed_blocks_hold_the_ids_of_their_buckets_whoever_computes_them() {
        use crate::data::ids::dense_order;
        let tokens: Vec<String> = (0..3000).map(|i| format!("{}", i * 31 + 5)).collect();
        let ids = dense_order(tokens.iter().map(String::as_str).collect());
        let l = BlockLayout::hashed(&ids, 5);
        assert_eq!((l.n_blocks(), l.n_rows()), (5, 3000));
        for (row, id) in ids.iter().enumerate() {
            // The block of an id from its bytes alone is the block of its dense row.
            assert_eq!(block_of_bucket(id_bucket(id), 5), l.block_of(row), "{id}");
        }
        // A subset's layout places each of its ids in the same block.
        let half: Vec<String> = ids.iter().step_by(2).cloned().collect();
        let lh = BlockLayout::hashed(&half, 5);
        for (row, id) in half.iter().enumerate() {
            assert_eq!(lh.block_of(row), block_of_bucket(id_bucket(id), 5));
        }
        // More blocks than ids leaves some empty, still covering every row.
        let few = BlockLayout::hashed(&ids[..3], 8);
        assert_eq!((few.n_blocks(), few.n_rows()), (8, 3));
    }
}
