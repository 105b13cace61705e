//! `--test`, `--split` and its parameters: where a run's test set comes from.

use std::path::PathBuf;

use als_core::data::split::{DEFAULT_FOLDS, DEFAULT_SPLIT_SEED, DEFAULT_TEST_RATIO};
use als_core::data::LoadOptions;
use anyhow::bail;
use clap::{Args, ValueEnum};

use super::parse;
use crate::input::{SplitChoice, TestSource};

/// How the test set is held out of `--data` (`--split`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitArg {
    /// Seeded random holdout of --test-ratio of the rows (the reference protocol).
    #[default]
    Ratio,
    /// --test-ratio of each user's ratings.
    PerUser,
    /// The latest --test-ratio of the rows by timestamp.
    Temporal,
    /// Fold --fold of --folds seeded folds.
    Kfold,
    /// Strong generalization: --test-ratio of the users held out of training whole; each is folded in on a random 80% of their rows and ranked on the other 20%.
    Users,
}

/// `--split-seed`: which rows are held out (train's test split, tune's folds).
#[derive(Args, Debug, Clone, Copy)]
pub struct SplitSeedArg {
    /// Seed of the held-out rows: the test split or the folds (42 is the reference tools' protocol split).
    #[arg(long, default_value_t = DEFAULT_SPLIT_SEED, help_heading = "Evaluation")]
    pub split_seed: u64,
}

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Evaluation")]
pub struct SplitArgs {
    /// Explicit test file (read with the same options as --data); --data is then all training.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["test_ratio", "split", "folds", "fold", "no_test"])]
    pub test: Option<PathBuf>,
    /// Fraction of --data held out for testing (of the users with --split users) [default: 0.2].
    #[arg(long, value_name = "F", value_parser = parse::ratio)]
    pub test_ratio: Option<f64>,
    /// How the test set is held out of --data.
    #[arg(long, value_enum)]
    pub split: Option<SplitArg>,
    /// Number of folds of --split kfold [default: 5].
    #[arg(long, value_name = "N", value_parser = parse::folds)]
    pub folds: Option<usize>,
    /// Which fold of --split kfold is the test set (0-based) [default: 0].
    #[arg(long, value_name = "I")]
    pub fold: Option<usize>,
    /// Train on every row of --data; no evaluation.
    #[arg(long, conflicts_with_all = ["test_ratio", "split", "folds", "fold"])]
    pub no_test: bool,
    #[command(flatten)]
    pub seed: SplitSeedArg,
    /// 0-based column of an integer timestamp [default: 3 with --split temporal, else none].
    #[arg(long, value_name = "N", help_heading = "Data")]
    pub timestamp_col: Option<usize>,
}

impl SplitArgs {
    /// The timestamp column to read: asked for (`--timestamp-col`) or needed
    /// (`--split temporal`, then column 3, the MovieLens layout), so an
    /// unrelated fourth column never stops a load.
    pub fn timestamp_col(&self) -> Option<usize> {
        self.timestamp_col.or_else(|| {
            (self.split == Some(SplitArg::Temporal) && self.test.is_none())
                .then_some(LoadOptions::default().timestamp_col)
                .flatten()
        })
    }

    /// Where the test set comes from.
    pub fn test_source(&self) -> anyhow::Result<TestSource> {
        if let Some(t) = &self.test {
            return Ok(TestSource::File(t.clone()));
        }
        if self.no_test {
            return Ok(TestSource::None);
        }
        let split = self.split.unwrap_or_default();
        if split != SplitArg::Kfold && (self.folds.is_some() || self.fold.is_some()) {
            bail!("--folds and --fold apply to --split kfold only");
        }
        let ratio = self.test_ratio.unwrap_or(DEFAULT_TEST_RATIO);
        Ok(TestSource::Split(match split {
            SplitArg::Ratio => SplitChoice::Ratio(ratio),
            SplitArg::PerUser => SplitChoice::PerUser(ratio),
            SplitArg::Temporal => SplitChoice::Temporal(ratio),
            SplitArg::Users => SplitChoice::Users(ratio),
            SplitArg::Kfold => {
                if self.test_ratio.is_some() {
                    bail!("--test-ratio does not apply to --split kfold (the test set is one of --folds folds)");
                }
                let folds = self.folds.unwrap_or(DEFAULT_FOLDS);
                let fold = self.fold.unwrap_or(0);
                if fold >= folds {
                    bail!("--fold must be in 0..{folds} (0-based), got {fold}");
                }
                SplitChoice::KFold { folds, fold }
            }
        }))
    }
}
