//! The dense order of ids: hash bucket first, then the id itself.
//!
//! Every id falls in one of [`ID_BUCKETS`] buckets by a fixed hash of its
//! bytes, and dense indices run bucket by bucket, ids within a bucket in
//! numeric order when every id is an integer, else bytewise. A block of B is
//! a contiguous range of buckets ([`block_of_bucket`]), so it is a contiguous
//! range of dense indices, and anyone holding an id can name its block
//! without a dictionary: what lets workers that each read part of the input
//! place every rating they read (issue 14). The order depends on the ids
//! alone, not on B, so one dataset serves every block count.

use crate::rng::{fnv1a64, mix64};

/// Hash buckets of the id space; a side has at most this many blocks.
pub const ID_BUCKETS: usize = 1 << 16;

/// The bucket of an id: the top 16 bits of SplitMix64's mix of its FNV-1a hash
/// (FNV alone puts ids that differ in their last digit in nearby values).
#[inline]
pub fn id_bucket(id: &str) -> usize {
    (mix64(fnv1a64(id.as_bytes())) >> 48) as usize
}

/// The block, of `n_blocks`, that holds bucket `bucket`: blocks are
/// contiguous ranges of buckets of (nearly) equal size.
#[inline]
pub fn block_of_bucket(bucket: usize, n_blocks: usize) -> usize {
    bucket * n_blocks / ID_BUCKETS
}

/// Ids in dense order: by bucket, then numerically when every id is an
/// integer (ties, such as `7` and `07`, bytewise), else bytewise.
pub fn dense_order(ids: Vec<&str>) -> Vec<String> {
    let numeric = all_integers(ids.iter().copied());
    dense_order_as(ids, numeric)
}

/// Whether every id is an integer (then ids sort numerically).
pub fn all_integers<'a>(mut ids: impl Iterator<Item = &'a str>) -> bool {
    ids.all(|t| t.parse::<i128>().is_ok())
}

/// [`dense_order`] with the numeric decision made by the caller: a block of
/// ids is ordered as the whole side's ids would be (numerically only when
/// every id of the side is an integer).
pub fn dense_order_as(ids: Vec<&str>, numeric: bool) -> Vec<String> {
    let mut keyed: Vec<(usize, i128, &str)> = ids
        .into_iter()
        .map(|t| (id_bucket(t), if numeric { t.parse::<i128>().unwrap_or(0) } else { 0 }, t))
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, _, t)| t.to_owned()).collect()
}

/// The block, of `n_blocks`, of an id.
#[inline]
pub fn block_of_id(id: &str, n_blocks: usize) -> usize {
    block_of_bucket(id_bucket(id), n_blocks)
}

/// Whether `ids` are in [`dense_order`]'s bucket order (what a block layout
/// by buckets needs).
pub fn in_bucket_order(ids: &[String]) -> bool {
    ids.windows(2).all(|w| id_bucket(&w[0]) <= id_bucket(&w[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_is_by_bucket_then_number_and_does_not_depend_on_input_order() {
        let ids: Vec<String> = (0..5000).map(|i| (i * 7919 % 10007).to_string()).collect();
        let forward = dense_order(ids.iter().map(String::as_str).collect());
        let backward = dense_order(ids.iter().rev().map(String::as_str).collect());
        assert_eq!(forward, backward);
        assert!(in_bucket_order(&forward));
        for w in forward.windows(2) {
            let (a, b) = (id_bucket(&w[0]), id_bucket(&w[1]));
            assert!(
                a < b || (a == b && w[0].parse::<i64>().unwrap() < w[1].parse::<i64>().unwrap()),
                "{w:?}"
            );
        }
        // Mixed tokens sort bytewise within a bucket.
        let mixed = dense_order(vec!["b", "a", "10", "9"]);
        assert!(in_bucket_order(&mixed));
        assert_eq!(mixed.len(), 4);
    }

    #[test]
    fn buckets_spread_consecutive_ids_evenly_over_blocks() {
        // 12,000 consecutive integer ids into 12 blocks: a uniform hash gives
        // each 1,000 ± 29 (binomial); allow four standard deviations.
        let mut counts = [0usize; 12];
        for i in 0..12_000 {
            counts[block_of_bucket(id_bucket(&i.to_string()), 12)] += 1;
        }
        assert!(counts.iter().all(|&c| (880..=1120).contains(&c)), "{counts:?}");
        // A block is a contiguous range of buckets.
        let blocks: Vec<usize> = (0..ID_BUCKETS).map(|s| block_of_bucket(s, 7)).collect();
        assert!(blocks.windows(2).all(|w| w[0] <= w[1] && w[1] - w[0] <= 1));
        assert_eq!((blocks[0], blocks[ID_BUCKETS - 1]), (0, 6));
    }
}
