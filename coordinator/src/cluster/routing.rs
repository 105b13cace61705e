//! Which worker owns which block, and which fixed rows each worker needs.

use als_core::blocks::BlockLayout;
use als_core::data::Csr;
use als_core::side::Side;
use als_core::train::Layouts;

/// Per side: block owners, the rows each worker solves, and, where the
/// ratings are held here, the rows each block and each worker references.
#[derive(Debug, Clone)]
pub struct SideRouting {
    /// `owner[b]` is the worker solving block b.
    pub owner: Vec<usize>,
    /// Per worker: rows it solves.
    pub owned_rows: Vec<usize>,
    /// Where this coordinator holds the ratings: the rows referenced. With
    /// the ratings on the workers it holds none of them (their size grows
    /// with the data); the workers count their routes instead (`Subscribe`).
    pub references: Option<References>,
}

/// The fixed-side rows a side's blocks reference.
#[derive(Debug, Clone)]
pub struct References {
    /// Distinct fixed-side rows block b references, ascending.
    pub needed: Vec<Vec<u32>>,
    /// Per worker: the sorted union of its blocks' `needed` rows.
    pub union: Vec<Vec<u32>>,
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
    /// The routing of `csr`'s blocks, the referenced rows counted here.
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
            owner: Vec::new(),
            owned_rows: vec![0; n_workers],
            references: Some(References {
                needed,
                union: vec![Vec::new(); n_workers],
            }),
        };
        s.set_owners(owner, layout);
        s
    }

    /// The routing of blocks built elsewhere: owners only.
    pub fn owners_only(layout: &BlockLayout, owner: Vec<usize>, n_workers: usize) -> Self {
        let mut s = SideRouting {
            owner: Vec::new(),
            owned_rows: vec![0; n_workers],
            references: None,
        };
        s.set_owners(owner, layout);
        s
    }

    /// New owners: the rows each worker solves and references follow.
    pub fn set_owners(&mut self, owner: Vec<usize>, layout: &BlockLayout) {
        self.owner = owner;
        for w in 0..self.owned_rows.len() {
            let mine = || (0..self.owner.len()).filter(|&b| self.owner[b] == w);
            self.owned_rows[w] = mine().map(|b| layout.range(b).len()).sum();
            if let Some(r) = &mut self.references {
                let mut u: Vec<u32> = mine().flat_map(|b| r.needed[b].iter().copied()).collect();
                u.sort_unstable();
                u.dedup();
                r.union[w] = u;
            }
        }
    }

    /// Block `b`'s referenced rows, where they are known here.
    pub fn needed(&self, b: usize) -> Option<&[u32]> {
        self.references.as_ref().map(|r| &r.needed[b][..])
    }

    pub fn blocks_of(&self, w: usize) -> Vec<usize> {
        (0..self.owner.len()).filter(|&b| self.owner[b] == w).collect()
    }
}

impl Routing {
    pub fn build(by_user: &Csr, by_item: &Csr, layouts: &Layouts, n_workers: usize) -> Self {
        let owners = |layout: &BlockLayout| contiguous_owners(layout.n_blocks(), n_workers);
        Routing {
            n_workers,
            users: SideRouting::build(by_user, &layouts.users, owners(&layouts.users), n_workers),
            items: SideRouting::build(by_item, &layouts.items, owners(&layouts.items), n_workers),
        }
    }

    /// The routing of blocks the workers built and told the referenced rows
    /// of (`users[b]`: the items user block b references), contiguous owners.
    pub fn from_references(users: Vec<Vec<u32>>, items: Vec<Vec<u32>>, layouts: &Layouts, n_workers: usize) -> Self {
        let owners = |layout: &BlockLayout| contiguous_owners(layout.n_blocks(), n_workers);
        Routing {
            n_workers,
            users: SideRouting::from_needed(users, &layouts.users, owners(&layouts.users), n_workers),
            items: SideRouting::from_needed(items, &layouts.items, owners(&layouts.items), n_workers),
        }
    }

    /// The routing of blocks the workers built: contiguous owners, and no
    /// referenced rows here.
    pub fn owners_only(layouts: &Layouts, n_workers: usize) -> Self {
        let owners = |layout: &BlockLayout| contiguous_owners(layout.n_blocks(), n_workers);
        Routing {
            n_workers,
            users: SideRouting::owners_only(&layouts.users, owners(&layouts.users), n_workers),
            items: SideRouting::owners_only(&layouts.items, owners(&layouts.items), n_workers),
        }
    }

    /// Whether the rows each block references are known here (both sides).
    pub fn knows_references(&self) -> bool {
        self.users.references.is_some() && self.items.references.is_some()
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
    /// did not solve itself (`fixed_layout` gives their blocks' rows), where
    /// the referenced rows are known here.
    pub fn pushed_rows(&self, side: Side, fixed_layout: &BlockLayout) -> Option<Vec<u64>> {
        let r = self.side(side).references.as_ref()?;
        let fixed = self.side(side.other());
        Some(
            (0..self.n_workers)
                .map(|w| {
                    let own = |g: &u32| fixed.owner[fixed_layout.block_of(*g as usize)] == w;
                    r.union[w].iter().filter(|g| !own(g)).count() as u64
                })
                .collect(),
        )
    }

    /// The factor bytes a half-iteration solving `side` strictly needs, with
    /// `pushed[w]` the fixed rows worker w needs and did not solve itself
    /// ([`Routing::pushed_rows`], or the workers' own count).
    pub fn minimums(&self, side: Side, k: usize, pushed: &[u64]) -> HalfMinimums {
        let owned = &self.side(side).owned_rows;
        let row = k as u64 * 4;
        HalfMinimums {
            hub: (0..self.n_workers).map(|w| (pushed[w] + owned[w] as u64) * row).sum(),
            peer: pushed.iter().map(|&n| n * row).sum(),
        }
    }
}

/// A half's routing minimums (docs/ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HalfMinimums {
    /// With hub-and-spoke routing: every worker's needed fixed rows other
    /// than those it solved itself, plus its solved rows.
    pub hub: u64,
    /// With no hub: the same rows, sent worker to worker, nothing gathered.
    pub peer: u64,
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
        let r = s.references.as_ref().unwrap();
        assert_eq!(r.needed, vec![vec![1, 4], vec![0, 2, 4]]);
        assert_eq!(r.union, vec![vec![1, 4], vec![0, 2, 4]]);
        assert_eq!(s.owned_rows, vec![2, 2]);
        let one = SideRouting::build(&csr, &layout, vec![0, 0], 1);
        assert_eq!(one.references.unwrap().union, vec![vec![0, 1, 2, 4]]);
        // Built elsewhere: the same owners and rows solved, nothing referenced here.
        let elsewhere = SideRouting::owners_only(&layout, vec![0, 1], 2);
        assert_eq!((elsewhere.owned_rows, elsewhere.references.is_none()), (vec![2, 2], true));
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
        let minimums = |side: Side, fixed: &BlockLayout| r.minimums(side, k, &r.pushed_rows(side, fixed).unwrap());
        // Users' half: worker 0 needs items {1, 4} and solved item 1; worker 1
        // needs {0, 2, 4} and solved item 4. Three rows move; four are gathered.
        assert_eq!(r.pushed_rows(Side::Users, &layouts.items), Some(vec![1, 2]));
        assert_eq!(minimums(Side::Users, &layouts.items), HalfMinimums { hub: 7 * 8, peer: 3 * 8 });
        // Items' half: worker 0 needs users 0-3 and solved 0, 1; worker 1 needs
        // {0, 3} and solved 3. Three rows move; five are gathered.
        assert_eq!(minimums(Side::Items, &layouts.users), HalfMinimums { hub: 8 * 8, peer: 3 * 8 });
        // Without the referenced rows here, the workers' counts give the same.
        let elsewhere = Routing::owners_only(&layouts, 2);
        assert!(elsewhere.pushed_rows(Side::Users, &layouts.items).is_none());
        assert_eq!(elsewhere.minimums(Side::Users, k, &[1, 2]), minimums(Side::Users, &layouts.items));
    }
}
