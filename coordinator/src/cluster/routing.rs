//! Which worker owns which block, and which fixed rows each worker needs.

use als_core::blocks::BlockLayout;
use als_core::data::Csr;
use als_core::side::Side;
use als_core::train::Layouts;

/// Per side: block owners, per-block referenced rows, per-worker unions.
#[derive(Debug, Clone)]
pub struct SideRouting {
    /// `owner[b]` is the worker solving block b.
    pub owner: Vec<usize>,
    /// Distinct fixed-side rows block b references, ascending.
    pub needed: Vec<Vec<u32>>,
    /// Per worker: the sorted union of its blocks' `needed` rows.
    pub union: Vec<Vec<u32>>,
    /// Per worker: rows it solves.
    pub owned_rows: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Routing {
    pub n_workers: usize,
    pub users: SideRouting,
    pub items: SideRouting,
}

/// Contiguous runs of blocks per worker (balanced blocks make balanced workers).
pub fn contiguous_owners(n_blocks: usize, n_workers: usize) -> Vec<usize> {
    (0..n_blocks).map(|b| b * n_workers / n_blocks.max(1)).collect()
}

/// Owners for the live workers: a block stays home while its home worker
/// lives, else goes to the survivors in turn (at least one must live).
pub fn owners_among(home: &[usize], alive: &[bool]) -> Vec<usize> {
    let live: Vec<usize> = (0..alive.len()).filter(|&w| alive[w]).collect();
    let mut orphans = 0;
    home.iter()
        .map(|&w| match alive[w] {
            true => w,
            false => {
                orphans += 1;
                live[(orphans - 1) % live.len()]
            }
        })
        .collect()
}

/// `owners` (indices of every worker, each alive) as positions among the live workers.
pub fn live_positions(owners: &[usize], alive: &[bool]) -> anyhow::Result<Vec<usize>> {
    let live: Vec<usize> = (0..alive.len()).filter(|&w| alive[w]).collect();
    owners
        .iter()
        .map(|w| live.iter().position(|v| v == w))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| anyhow::anyhow!("a block's owner is not a live worker"))
}

/// Sorted distinct columns referenced by rows `range` of `csr`.
pub fn referenced_columns(csr: &Csr, layout: &BlockLayout, b: usize, seen: &mut Vec<bool>) -> Vec<u32> {
    let r = layout.range(b);
    let cols = &csr.indices[csr.indptr[r.start]..csr.indptr[r.end]];
    seen.clear();
    seen.resize(csr.n_cols, false);
    for &c in cols {
        seen[c as usize] = true;
    }
    seen.iter().enumerate().filter(|(_, &s)| s).map(|(c, _)| c as u32).collect()
}

impl SideRouting {
    pub fn build(csr: &Csr, layout: &BlockLayout, owner: Vec<usize>, n_workers: usize) -> Self {
        let mut seen = Vec::new();
        let needed: Vec<Vec<u32>> = (0..layout.n_blocks())
            .map(|b| referenced_columns(csr, layout, b, &mut seen))
            .collect();
        Self::from_needed(needed, layout, owner, n_workers)
    }

    /// The routing of blocks whose referenced rows are known (`needed[b]`,
    /// ascending), as the workers that built them report them.
    pub fn from_needed(needed: Vec<Vec<u32>>, layout: &BlockLayout, owner: Vec<usize>, n_workers: usize) -> Self {
        let mut s = SideRouting {
            owner,
            needed,
            union: vec![Vec::new(); n_workers],
            owned_rows: vec![0; n_workers],
        };
        s.rebuild_unions(layout);
        s
    }

    /// Recompute the per-worker unions after blocks moved.
    pub fn rebuild_unions(&mut self, layout: &BlockLayout) {
        let n_workers = self.union.len();
        for w in 0..n_workers {
            let mut u: Vec<u32> = (0..self.owner.len())
                .filter(|&b| self.owner[b] == w)
                .flat_map(|b| self.needed[b].iter().copied())
                .collect();
            u.sort_unstable();
            u.dedup();
            self.union[w] = u;
            self.owned_rows[w] = (0..self.owner.len())
                .filter(|&b| self.owner[b] == w)
                .map(|b| layout.range(b).len())
                .sum();
        }
    }

    pub fn blocks_of(&self, w: usize) -> Vec<usize> {
        (0..self.owner.len()).filter(|&b| self.owner[b] == w).collect()
    }
}

impl Routing {
    pub fn build(by_user: &Csr, by_item: &Csr, layouts: &Layouts, n_workers: usize) -> Self {
        Routing {
            n_workers,
            users: SideRouting::build(
                by_user,
                &layouts.users,
                contiguous_owners(layouts.users.n_blocks(), n_workers),
                n_workers,
            ),
            items: SideRouting::build(
                by_item,
                &layouts.items,
                contiguous_owners(layouts.items.n_blocks(), n_workers),
                n_workers,
            ),
        }
    }

    pub fn side(&self, s: Side) -> &SideRouting {
        match s {
            Side::Users => &self.users,
            Side::Items => &self.items,
        }
    }

    pub fn side_mut(&mut self, s: Side) -> &mut SideRouting {
        match s {
            Side::Users => &mut self.users,
            Side::Items => &mut self.items,
        }
    }

    /// Per worker, the fixed rows of a half solving `side` that it needs and
    /// did not solve itself (`fixed_layout` gives their blocks' rows).
    fn pushed_rows(&self, side: Side, fixed_layout: &BlockLayout) -> Vec<usize> {
        let s = self.side(side);
        let fixed = self.side(side.other());
        (0..self.n_workers)
            .map(|w| {
                let own = |g: &u32| fixed.owner[fixed_layout.block_of(*g as usize)] == w;
                s.union[w].iter().filter(|g| !own(g)).count()
            })
            .collect()
    }

    /// Factor bytes a half-iteration solving `side` strictly needs with
    /// hub-and-spoke routing: every worker's needed fixed rows other than
    /// those it solved itself, plus its solved rows.
    pub fn bytes_min(&self, side: Side, k: usize, fixed_layout: &BlockLayout) -> u64 {
        let s = self.side(side);
        let pushed = self.pushed_rows(side, fixed_layout);
        (0..self.n_workers)
            .map(|w| (pushed[w] + s.owned_rows[w]) as u64 * k as u64 * 4)
            .sum()
    }

    /// The same half with no hub (docs/ARCHITECTURE.md): the same rows,
    /// sent worker to worker, and nothing gathered.
    pub fn bytes_min_peer(&self, side: Side, k: usize, fixed_layout: &BlockLayout) -> u64 {
        self.pushed_rows(side, fixed_layout).iter().map(|&n| n as u64 * k as u64 * 4).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_contiguous_and_unions_cover_references() {
        assert_eq!(contiguous_owners(12, 3), vec![0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(contiguous_owners(2, 3), vec![0, 1]);
        let csr = Csr::from_triples(4, 5, &[0, 0, 1, 2, 3, 3], &[4, 1, 1, 0, 2, 4], &[1.0; 6]);
        let layout = BlockLayout { starts: vec![0, 2, 4] };
        let s = SideRouting::build(&csr, &layout, vec![0, 1], 2);
        assert_eq!(s.needed, vec![vec![1, 4], vec![0, 2, 4]]);
        assert_eq!(s.union, vec![vec![1, 4], vec![0, 2, 4]]);
        assert_eq!(s.owned_rows, vec![2, 2]);
        let one = SideRouting::build(&csr, &layout, vec![0, 0], 1);
        assert_eq!(one.union, vec![vec![0, 1, 2, 4]]);
    }

    /// The two minimums on a case small enough to count by hand.
    #[test]
    fn routing_minimums_with_and_without_the_hub() {
        let (us, is) = ([0u32, 0, 1, 2, 3, 3], [4u32, 1, 1, 0, 2, 4]);
        let by_user = Csr::from_triples(4, 5, &us, &is, &[1.0; 6]);
        let by_item = Csr::from_triples(5, 4, &is, &us, &[1.0; 6]);
        let layouts = Layouts {
            users: BlockLayout { starts: vec![0, 2, 4] },
            items: BlockLayout { starts: vec![0, 3, 5] },
        };
        let r = Routing::build(&by_user, &by_item, &layouts, 2);
        let k = 2;
        // Users' half: worker 0 needs items {1, 4} and solved item 1; worker 1
        // needs {0, 2, 4} and solved item 4. Three rows move; four are gathered.
        assert_eq!(r.bytes_min_peer(Side::Users, k, &layouts.items), 3 * 8);
        assert_eq!(r.bytes_min(Side::Users, k, &layouts.items), 7 * 8);
        // Items' half: worker 0 needs users 0-3 and solved 0, 1; worker 1 needs
        // {0, 3} and solved 3. Three rows move; five are gathered.
        assert_eq!(r.bytes_min_peer(Side::Items, k, &layouts.users), 3 * 8);
        assert_eq!(r.bytes_min(Side::Items, k, &layouts.users), 8 * 8);
    }
}
