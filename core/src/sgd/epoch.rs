//! One DSGD epoch: B sub-epochs of B disjoint cells each.

use rayon::prelude::*;

use super::grid::{Cell, RatingGrid};
use super::update::{update, SgdStep};
use crate::blocks::BlockLayout;
use crate::rng::{mix64, SplitMix64};
use crate::side::Factors;

/// Distinguishes SGD's order streams from the other seeded streams.
const ORDER_TAG: u64 = 0x5347_445F_4F52_4445;

/// One block's rows: factors (rows × k, row-major) and biases (empty when unbiased).
type BlockRows<'a> = (&'a mut [f32], &'a mut [f32]);

/// Cut a side into its blocks' disjoint mutable rows.
fn split_blocks<'a>(f: &'a mut Factors, layout: &BlockLayout) -> Vec<BlockRows<'a>> {
    let k = f.k();
    let Factors { matrix, bias } = f;
    let mut rest = matrix.as_slice_mut().expect("factor matrices are standard layout");
    let mut rest_bias: &mut [f32] = bias.as_mut_slice();
    let biased = !rest_bias.is_empty();
    let mut out = Vec::with_capacity(layout.n_blocks());
    for b in 0..layout.n_blocks() {
        let rows = layout.range(b).len();
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(rows * k);
        rest = tail;
        let head_bias = if biased {
            let (h, t) = std::mem::take(&mut rest_bias).split_at_mut(rows);
            rest_bias = t;
            h
        } else {
            &mut []
        };
        out.push((head, head_bias));
    }
    out
}

/// The seed of a cell's visiting order in one epoch.
fn order_seed(seed: u64, epoch: usize, user_block: usize, item_block: usize) -> u64 {
    mix64(mix64(mix64(seed ^ ORDER_TAG) ^ epoch as u64) ^ ((user_block as u64) << 32 | item_block as u64))
}

/// The cell's ratings in a seeded random order (Fisher-Yates).
fn shuffled(cell: &[Cell], seed: u64) -> Vec<Cell> {
    let mut v = cell.to_vec();
    let mut rng = SplitMix64::new(seed);
    for j in (1..v.len()).rev() {
        let r = (rng.next_u64() % (j as u64 + 1)) as usize;
        v.swap(j, r);
    }
    v
}

fn run_cell(cell: &[Cell], order: u64, step: &SgdStep, k: usize, users: BlockRows<'_>, items: BlockRows<'_>) {
    let (uf, ub) = users;
    let (itf, ib) = items;
    let mut unused = (0f32, 0f32);
    for c in shuffled(cell, order) {
        let (u, i) = (c.user as usize, c.item as usize);
        let pu = &mut uf[u * k..(u + 1) * k];
        let qi = &mut itf[i * k..(i + 1) * k];
        if step.biased {
            update(step, c.rating, pu, &mut ub[u], qi, &mut ib[i]);
        } else {
            update(step, c.rating, pu, &mut unused.0, qi, &mut unused.1);
        }
    }
}

/// Epoch `epoch` (1-based) over every training rating once.
pub fn run_epoch(grid: &RatingGrid, step: &SgdStep, seed: u64, epoch: usize, users: &mut Factors, items: &mut Factors) {
    let k = users.k();
    let nb = grid.n_blocks();
    for s in 0..nb {
        let user_blocks = split_blocks(users, &grid.users);
        let mut item_blocks = split_blocks(items, &grid.items);
        // Task b gets item block (b + s) mod B.
        item_blocks.rotate_left(s);
        user_blocks
            .into_par_iter()
            .zip(item_blocks.into_par_iter())
            .enumerate()
            .for_each(|(ub, (urows, irows))| {
                let ib = (ub + s) % nb;
                run_cell(grid.cell(ub, ib), order_seed(seed, epoch, ub, ib), step, k, urows, irows);
            });
    }
}
