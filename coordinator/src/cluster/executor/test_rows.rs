//! The test rows by user block: their counts, which an evaluation on the
//! workers is checked against, and the rows grouped by user, built only
//! when a user block is shipped or evaluated from the coordinator's copy
//! (blocks the workers built hold their test rows already).

use als_core::data::{group_by_key, Dataset};

/// [`TestByUser`], grouped on first use.
#[derive(Default)]
pub(super) struct LazyTestRows(std::cell::OnceCell<TestByUser>);

impl LazyTestRows {
    pub(super) fn of(&self, ds: &Dataset) -> &TestByUser {
        self.0.get_or_init(|| TestByUser::build(ds))
    }
}

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
