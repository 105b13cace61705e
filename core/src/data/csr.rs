//! Compressed sparse rows: the layout the row solvers read.

use serde::{Deserialize, Serialize};

/// Rows of (column index, value) pairs, columns sorted ascending within a row.
///
/// Sorted columns fix the summation order of every row solve, which is what
/// makes a row's result independent of how rows are grouped into blocks.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Csr {
    pub n_cols: usize,
    /// `indptr[r]..indptr[r+1]` are row r's entries; length `n_rows + 1`.
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl Csr {
    pub fn n_rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    #[inline]
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[r], self.indptr[r + 1]);
        (&self.indices[a..b], &self.values[a..b])
    }

    #[inline]
    pub fn row_len(&self, r: usize) -> usize {
        self.indptr[r + 1] - self.indptr[r]
    }

    /// Build from coordinate triples. Entries are ordered by (row, col);
    /// duplicates of a (row, col) pair are kept in input order (callers
    /// resolve duplicates before).
    pub fn from_triples(n_rows: usize, n_cols: usize, rows: &[u32], cols: &[u32], vals: &[f32]) -> Self {
        assert_eq!(rows.len(), cols.len());
        assert_eq!(rows.len(), vals.len());
        Csr::from_entries(n_rows, n_cols, || rows.iter().zip(cols).zip(vals).map(|((&r, &c), &v)| (r, c, v)))
    }

    /// [`Csr::from_triples`] from the (row, column, value) entries `entries`
    /// yields, the same each of the two times it is called (rows counted,
    /// then entries placed), so no copy of the triples is ever held: the
    /// data's largest build step holds the matrix and nothing else.
    pub fn from_entries<I: Iterator<Item = (u32, u32, f32)>>(n_rows: usize, n_cols: usize, entries: impl Fn() -> I) -> Self {
        let mut counts = vec![0usize; n_rows + 1];
        for (r, _, _) in entries() {
            counts[r as usize + 1] += 1;
        }
        for r in 0..n_rows {
            counts[r + 1] += counts[r];
        }
        let nnz = counts[n_rows];
        let indptr = counts.clone();
        let mut next = counts;
        let mut indices = vec![0u32; nnz];
        let mut values = vec![0f32; nnz];
        for (r, c, v) in entries() {
            let p = next[r as usize];
            indices[p] = c;
            values[p] = v;
            next[r as usize] += 1;
        }
        let mut csr = Csr {
            n_cols,
            indptr,
            indices,
            values,
        };
        csr.sort_rows();
        csr
    }

    /// Sort each row by column (stable, so equal columns keep their order).
    fn sort_rows(&mut self) {
        let mut buf: Vec<(u32, f32)> = Vec::new();
        for r in 0..self.n_rows() {
            let (a, b) = (self.indptr[r], self.indptr[r + 1]);
            if self.indices[a..b].windows(2).all(|w| w[0] <= w[1]) {
                continue;
            }
            buf.clear();
            buf.extend(self.indices[a..b].iter().copied().zip(self.values[a..b].iter().copied()));
            buf.sort_by_key(|e| e.0);
            for (k, (c, v)) in buf.iter().enumerate() {
                self.indices[a + k] = *c;
                self.values[a + k] = *v;
            }
        }
    }

    /// The first row that holds a column twice (rows sorted), if any.
    pub fn row_with_repeated_column(&self) -> Option<usize> {
        (0..self.n_rows()).find(|&r| self.row(r).0.windows(2).any(|w| w[0] == w[1]))
    }

    /// The transpose (columns become rows), still sorted within rows.
    pub fn transpose(&self) -> Csr {
        Csr::from_entries(self.n_cols, self.n_rows(), || {
            (0..self.n_rows()).flat_map(move |r| {
                let (cols, vals) = self.row(r);
                cols.iter().zip(vals).map(move |(&c, &v)| (c, r as u32, v))
            })
        })
    }

    /// The rows `start..end` as a standalone matrix (same columns).
    pub fn slice_rows(&self, start: usize, end: usize) -> Csr {
        let (a, b) = (self.indptr[start], self.indptr[end]);
        Csr {
            n_cols: self.n_cols,
            indptr: self.indptr[start..=end].iter().map(|p| p - a).collect(),
            indices: self.indices[a..b].to_vec(),
            values: self.values[a..b].to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triples_transpose_roundtrip() {
        let m = Csr::from_triples(3, 4, &[2, 0, 0, 1], &[1, 3, 0, 2], &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m.indptr, vec![0, 2, 3, 4]);
        assert_eq!(m.row(0), (&[0u32, 3][..], &[3.0f32, 2.0][..]));
        let t = m.transpose();
        assert_eq!(t.n_rows(), 4);
        assert_eq!(t.row(3), (&[0u32][..], &[2.0f32][..]));
        assert_eq!(t.transpose(), m);
        let s = m.slice_rows(1, 3);
        assert_eq!(s.indptr, vec![0, 1, 2]);
        assert_eq!(s.row(1), (&[1u32][..], &[1.0f32][..]));
    }

    /// The counting-sort build against the plain definition: entries
    /// ordered by (row, column), repeats of a pair in input order; and the
    /// transpose against building from the swapped triples.
    #[test]
    fn the_build_is_the_sorted_triples() {
        let mut rng = crate::rng::SplitMix64::new(5);
        let n = 3000;
        let (rows, cols): (Vec<u32>, Vec<u32>) = (0..n).map(|_| ((rng.next_u64() % 40) as u32, (rng.next_u64() % 25) as u32)).unzip();
        let vals: Vec<f32> = (0..n).map(|k| k as f32).collect();
        let m = Csr::from_triples(41, 25, &rows, &cols, &vals);
        let mut want: Vec<(u32, u32, f32)> = (0..n).map(|k| (rows[k], cols[k], vals[k])).collect();
        want.sort_by_key(|e| (e.0, e.1));
        let got: Vec<(u32, u32, f32)> = (0..m.n_rows())
            .flat_map(|r| {
                let (c, v) = m.row(r);
                c.iter().zip(v).map(move |(&c, &v)| (r as u32, c, v))
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(m.n_rows(), 41);
        assert_eq!(m.row_len(40), 0);
        let t = Csr::from_triples(
            25,
            41,
            &got.iter().map(|e| e.1).collect::<Vec<_>>(),
            &got.iter().map(|e| e.0).collect::<Vec<_>>(),
            &got.iter().map(|e| e.2).collect::<Vec<_>>(),
        );
        assert_eq!(m.transpose(), t);
        assert_eq!(m.transpose().transpose(), m);
    }
}
