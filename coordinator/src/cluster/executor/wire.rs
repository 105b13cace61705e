//! Blocks of ratings and fixed factor rows as streamed messages, their
//! arrays named through `als_proto::payload`.

use als_core::data::Csr;
use als_core::side::{Factors, Side};
use als_core::train::Layouts;
use als_proto::codec::Field;
use als_proto::payload::{BlockFields, FactorFields};
use als_proto::pb::{AdoptStep, BlockChunk, FactorChunk, RowsPlace};
use als_proto::spec::side_to_pb;
use als_proto::CHUNK_BYTES;

use super::test_rows::TestByUser;

/// One block's data as messages (header on the first); user blocks carry their test rows.
#[allow(clippy::too_many_arguments)]
pub(super) fn block_messages(
    job_id: &str,
    side: Side,
    block: usize,
    csr: &Csr,
    layouts: &Layouts,
    needed: &[u32],
    current: &Factors,
    test: &TestByUser,
) -> Vec<BlockChunk> {
    let range = layouts.side(side).range(block);
    let (a, b) = (csr.indptr[range.start], csr.indptr[range.end]);
    let indptr: Vec<u32> = csr.indptr[range.start..=range.end].iter().map(|p| (p - a) as u32).collect();
    // Columns become positions in `needed`; both ascending, so row order is kept.
    let columns: Vec<u32> = csr.indices[a..b]
        .iter()
        .map(|c| needed.binary_search(c).expect("referenced column is needed") as u32)
        .collect();
    let k = current.k();
    let span = if side == Side::Users { test.span(&range) } else { 0..0 };
    let test_indptr: Vec<u32> = if span.is_empty() {
        Vec::new()
    } else {
        test.indptr[range.start..=range.end]
            .iter()
            .map(|p| (p - span.start) as u32)
            .collect()
    };
    let bias: &[f32] = if current.bias.is_empty() {
        &[]
    } else {
        &current.bias[range.clone()]
    };
    let fields = BlockFields {
        indptr: Field::U32(&indptr),
        columns: Field::U32(&columns),
        values: Field::F32(&csr.values[a..b]),
        needed: Field::U32(needed),
        factors: Field::F32(&current.flat()[range.start * k..range.end * k]),
        bias: Field::F32(bias),
        test_indptr: Field::U32(&test_indptr),
        test_columns: Field::U32(&test.items[span.clone()]),
        test_values: Field::F32(&test.values[span.clone()]),
    };
    fields.to_chunks(CHUNK_BYTES, |j| {
        let mut m = BlockChunk {
            job_id: job_id.to_owned(),
            side: side_to_pb(side) as i32,
            block: block as u32,
            ..Default::default()
        };
        if j == 0 {
            m.row_start = range.start as u64;
            m.n_rows = range.len() as u32;
            m.nnz = (b - a) as u64;
            m.n_needed = needed.len() as u32;
            m.n_test = span.len() as u64;
        }
        m
    })
}

/// One block's rows alone, for the worker that built the block's ratings
/// from the input (`ratings_built`): the block's factors and biases (none
/// where the model has none).
pub(super) fn rows_messages(job_id: &str, side: Side, block: usize, layouts: &Layouts, factors: &[f32], bias: &[f32]) -> Vec<BlockChunk> {
    let range = layouts.side(side).range(block);
    let fields = BlockFields {
        indptr: Field::U32(&[]),
        columns: Field::U32(&[]),
        values: Field::F32(&[]),
        needed: Field::U32(&[]),
        factors: Field::F32(factors),
        bias: Field::F32(bias),
        test_indptr: Field::U32(&[]),
        test_columns: Field::U32(&[]),
        test_values: Field::F32(&[]),
    };
    fields.to_chunks(CHUNK_BYTES, |j| BlockChunk {
        job_id: job_id.to_owned(),
        side: side_to_pb(side) as i32,
        block: block as u32,
        row_start: if j == 0 { range.start as u64 } else { 0 },
        n_rows: if j == 0 { range.len() as u32 } else { 0 },
        ratings_built: j == 0,
        ..Default::default()
    })
}

/// One block built by the worker it goes to, whose rows that worker takes
/// itself (`ratings_built` with `draw` or `rows_in`): a header alone.
pub(super) fn rows_taken_there(
    job_id: &str,
    side: Side,
    block: usize,
    layouts: &Layouts,
    draw: Option<AdoptStep>,
    rows_in: Vec<RowsPlace>,
) -> Vec<BlockChunk> {
    let range = layouts.side(side).range(block);
    vec![BlockChunk {
        job_id: job_id.to_owned(),
        side: side_to_pb(side) as i32,
        block: block as u32,
        row_start: range.start as u64,
        n_rows: range.len() as u32,
        ratings_built: true,
        draw,
        rows_in,
        ..Default::default()
    }]
}

/// The biases of `rows` of `f` (none when the model has no biases), the
/// array that goes beside the rows' factors.
pub(super) fn bias_of_rows(f: &Factors, rows: impl Iterator<Item = usize>) -> Vec<f32> {
    if f.bias.is_empty() {
        Vec::new()
    } else {
        rows.map(|r| f.bias[r]).collect()
    }
}

/// The fixed rows one worker needs, as messages (the rows go from the
/// factor matrix straight into the message buffers); `rows` leaves out those
/// of `local_blocks`, which the worker has.
pub(super) fn factor_messages(
    job_id: &str,
    side: Side,
    step: u64,
    rows: &[u32],
    local_blocks: &[usize],
    fixed: &Factors,
    gram: Option<&[f64]>,
) -> Vec<FactorChunk> {
    let row = |i: usize| fixed.row(rows[i] as usize);
    let bias = bias_of_rows(fixed, rows.iter().map(|&r| r as usize));
    let fields = FactorFields {
        gram: Field::F64(gram.unwrap_or_default()),
        factors: Field::Rows {
            n_rows: rows.len(),
            k: fixed.k(),
            row: &row,
        },
        bias: Field::F32(&bias),
    };
    fields.to_chunks(CHUNK_BYTES, |j| FactorChunk {
        job_id: job_id.to_owned(),
        side: side_to_pb(side) as i32,
        step,
        n_rows: if j == 0 { rows.len() as u32 } else { 0 },
        local_blocks: if j == 0 {
            local_blocks.iter().map(|&b| b as u32).collect()
        } else {
            Vec::new()
        },
        ..Default::default()
    })
}
