//! The training ratings cut into the B×B cells of the block layouts.

use rayon::prelude::*;

use crate::blocks::BlockLayout;
use crate::data::Csr;

/// One rating of a cell, with row indices local to its user and item blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    pub user: u32,
    pub item: u32,
    pub rating: f32,
}

/// Ratings by (user block, item block), each cell in CSR order (user, then item).
#[derive(Debug, Clone)]
pub struct RatingGrid {
    pub users: BlockLayout,
    pub items: BlockLayout,
    /// Cell (ub, ib) is `cells[ub * n_blocks + ib]`.
    cells: Vec<Vec<Cell>>,
}

impl RatingGrid {
    /// Both layouts must have the same block count (DSGD pairs blocks one to one).
    pub fn new(by_user: &Csr, users: &BlockLayout, items: &BlockLayout) -> Self {
        assert_eq!(users.n_blocks(), items.n_blocks(), "DSGD needs as many user blocks as item blocks");
        let nb = users.n_blocks();
        let cells: Vec<Vec<Cell>> = (0..nb)
            .into_par_iter()
            .flat_map_iter(|ub| {
                let mut row_cells: Vec<Vec<Cell>> = vec![Vec::new(); nb];
                let range = users.range(ub);
                for u in range.clone() {
                    let (cols, vals) = by_user.row(u);
                    for (&i, &r) in cols.iter().zip(vals) {
                        let ib = items.block_of(i as usize);
                        row_cells[ib].push(Cell {
                            user: (u - range.start) as u32,
                            item: (i as usize - items.starts[ib]) as u32,
                            rating: r,
                        });
                    }
                }
                row_cells
            })
            .collect();
        RatingGrid {
            users: users.clone(),
            items: items.clone(),
            cells,
        }
    }

    pub fn n_blocks(&self) -> usize {
        self.users.n_blocks()
    }

    pub fn cell(&self, user_block: usize, item_block: usize) -> &[Cell] {
        &self.cells[user_block * self.n_blocks() + item_block]
    }
}
