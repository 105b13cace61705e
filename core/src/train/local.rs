//! Half-iterations solved in this process, on all cores.

use std::time::Instant;

use super::{gram_by_blocks, HalfStepExecutor, HalfStepOutput, HalfStepReport, Layouts, TrainError};
use crate::data::Dataset;
use crate::side::{Factors, Side};
use crate::solve::{solve_rows_summing_terms, CheckedFixed, Feedback, FixedSide, ObjectiveTerms, RowsView, SolveParams, TermsWanted};

pub struct LocalExecutor<'a> {
    ds: &'a Dataset,
    layouts: Layouts,
}

impl<'a> LocalExecutor<'a> {
    pub fn new(ds: &'a Dataset, layouts: Layouts) -> Self {
        LocalExecutor { ds, layouts }
    }
}

impl HalfStepExecutor for LocalExecutor<'_> {
    fn half_step(
        &mut self,
        side: Side,
        params: &SolveParams,
        fixed: &Factors,
        fixed_gram: Option<&[f64]>,
        target: &mut Factors,
        terms: Option<TermsWanted>,
    ) -> Result<HalfStepOutput, TrainError> {
        let t0 = Instant::now();
        let csr = match side {
            Side::Users => &self.ds.by_user,
            Side::Items => &self.ds.by_item,
        };
        let n = csr.n_rows();
        let biased = !target.bias.is_empty();
        let fixed_side = FixedSide {
            factors: fixed.flat(),
            bias: &fixed.bias,
            total_rows: fixed.n_rows(),
        };
        // Rows are independent, so one parallel pass over the whole side gives
        // the same bits as solving block by block.
        let Factors { matrix, bias } = target;
        let out = matrix.as_slice_mut().expect("standard layout");
        let per_block = solve_rows_summing_terms(
            params,
            RowsView::of_csr(csr, 0, n),
            &CheckedFixed::new(params, fixed_side, fixed_gram)?,
            out,
            biased.then_some(bias.as_mut_slice()),
            terms.map(|w| (w, self.layouts.side(side).starts.as_slice())),
        )?;
        // Over blocks in block order, as the coordinator sums the workers'.
        let terms = per_block.map(ObjectiveTerms::sum);
        let target_gram = match params.feedback {
            Feedback::Implicit { .. } => Some(gram_by_blocks(target, self.layouts.side(side))),
            Feedback::Explicit { .. } => None,
        };
        let seconds = t0.elapsed().as_secs_f64();
        Ok(HalfStepOutput {
            target_gram,
            terms,
            report: HalfStepReport {
                side: Some(side),
                seconds,
                compute_seconds: seconds,
                ..Default::default()
            },
        })
    }
}
