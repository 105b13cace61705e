//! The test rows grouped by user, so each user block ships its own.

use als_core::data::Dataset;

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
        let mut indptr = vec![0usize; ds.n_users() + 1];
        for &u in &t.users {
            indptr[u as usize + 1] += 1;
        }
        for u in 0..ds.n_users() {
            indptr[u + 1] += indptr[u];
        }
        let mut next = indptr.clone();
        let mut position = vec![0usize; t.len()];
        for (r, &u) in t.users.iter().enumerate() {
            position[next[u as usize]] = r;
            next[u as usize] += 1;
        }
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
