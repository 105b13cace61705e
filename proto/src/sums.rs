//! A user block's test-metric sums on the wire ([`EvalSums`]), to and from
//! the core's sums, so worker and coordinator agree on every field.

use als_core::metrics::{ErrorSums, RankingSums};

use crate::pb::EvalSums;

/// One block's sums: the explicit error sums (raw, clipped) and the
/// implicit ranking sums; the kind not evaluated is all zeros.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BlockSums {
    pub raw: ErrorSums,
    pub clipped: ErrorSums,
    pub ranking: RankingSums,
}

impl BlockSums {
    /// The message: `n` counts test rows (explicit) or evaluated users (implicit).
    pub fn to_pb(&self, implicit: bool) -> EvalSums {
        let r = &self.ranking;
        EvalSums {
            squared: self.raw.squared,
            absolute: self.raw.absolute,
            squared_clipped: self.clipped.squared,
            absolute_clipped: self.clipped.absolute,
            precision: r.precision,
            recall: r.recall,
            recall_capped: r.recall_capped,
            ap: r.ap,
            ndcg: r.ndcg,
            ndcg_wide: r.ndcg_wide,
            hits: r.hits,
            pooled_div: r.pooled_div,
            n: if implicit { r.n } else { self.raw.n },
        }
    }

    /// From the message: every value must be finite and not negative, and
    /// the hits no more than the pooled divisor.
    pub fn from_pb(s: &EvalSums, implicit: bool) -> Result<BlockSums, String> {
        let values = [
            s.squared,
            s.absolute,
            s.squared_clipped,
            s.absolute_clipped,
            s.precision,
            s.recall,
            s.recall_capped,
            s.ap,
            s.ndcg,
            s.ndcg_wide,
        ];
        if values.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err("a metric sum is negative or not finite".into());
        }
        if s.hits > s.pooled_div {
            return Err(format!("{} hits for a pooled divisor of {}", s.hits, s.pooled_div));
        }
        let errors = |squared, absolute| ErrorSums {
            squared,
            absolute,
            n: if implicit { 0 } else { s.n },
        };
        Ok(BlockSums {
            raw: errors(s.squared, s.absolute),
            clipped: errors(s.squared_clipped, s.absolute_clipped),
            ranking: RankingSums {
                precision: s.precision,
                recall: s.recall,
                recall_capped: s.recall_capped,
                ap: s.ap,
                ndcg: s.ndcg,
                ndcg_wide: s.ndcg_wide,
                hits: s.hits,
                pooled_div: s.pooled_div,
                n: if implicit { s.n } else { 0 },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cross_the_wire_unchanged_and_bad_ones_are_refused() {
        let explicit = BlockSums {
            raw: ErrorSums {
                squared: 2.25,
                absolute: 2.5,
                n: 4,
            },
            clipped: ErrorSums {
                squared: 0.25,
                absolute: 0.5,
                n: 4,
            },
            ranking: RankingSums::default(),
        };
        assert_eq!(BlockSums::from_pb(&explicit.to_pb(false), false).unwrap(), explicit);
        let implicit = BlockSums {
            ranking: RankingSums {
                precision: 0.5,
                recall: 0.25,
                recall_capped: 0.5,
                ap: 0.3,
                ndcg: 0.4,
                ndcg_wide: 0.45,
                hits: 3,
                pooled_div: 6,
                n: 2,
            },
            ..Default::default()
        };
        assert_eq!(BlockSums::from_pb(&implicit.to_pb(true), true).unwrap(), implicit);
        let mut nan = implicit.to_pb(true);
        nan.ndcg = f64::NAN;
        assert!(BlockSums::from_pb(&nan, true).is_err());
        let mut negative = explicit.to_pb(false);
        negative.squared = -1.0;
        assert!(BlockSums::from_pb(&negative, false).is_err());
        let mut hits = implicit.to_pb(true);
        hits.hits = 7;
        assert!(BlockSums::from_pb(&hits, true).is_err());
    }
}
