//! The test rows grouped by user, so each user block ships its own.

use als_core::data::{group_by_key, Dataset};

/// The test rows grouped by user, each user's in test order (as the
/// single-process evaluation sums them).
#[derive(Default)]
pub(super) struct TestByUser {
    pub(super) indptr: Vec<usize>,
    pub(super) items: Vec<u32>,
    pub(super) values: Vec<f32>,
}

impl TestByUser {
    pub(super) fn build(ds: &Dataset) -> Self {
        let t = &ds.test;
        let (indptr, position) = group_by_key(&t.users, ds.n_users());
        TestByUser {
            items: position.iter().map(|&r| t.items[r]).collect(),
            values: position.iter().map(|&r| t.ratings[r]).collect(),
            indptr,
        }
    }

    /// Grouped rows of users `range`.
    pub(super) fn span(&self, range: &std::ops::Range<usize>) -> std::ops::Range<usize> {
        self.indptr[range.start]..self.indptr[range.end]
    }
}
