//! Training input: ratings file(s) or the embedded synthetic dataset,
//! loaded and split into a [`Dataset`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use als_core::data::split::{split_rows, split_users, UserHoldout};
use als_core::data::synth::{generate_raw, SynthSpec};
use als_core::data::{load_ratings, Dataset, DatasetBuild, DuplicatePolicy, LoadOptions, RawRatings, Rows, SplitSpec};
use anyhow::Context;

use crate::report::DataSummary;

/// Held-out split of one file (the core [`SplitSpec`] is built from it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SplitChoice {
    Ratio(f64),
    PerUser(f64),
    Temporal(f64),
    KFold {
        folds: usize,
        fold: usize,
    },
    /// Strong generalization: this fraction of the users held out whole.
    Users(f64),
}

/// Where the test rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TestSource {
    /// No test set: train on everything.
    None,
    /// A separate file.
    File(PathBuf),
    /// Held out of the training data.
    Split(SplitChoice),
}

/// Where the training rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// A ratings file read with the load options.
    File(PathBuf),
    /// Generated in memory (the embedded default is [`SynthSpec::small_default`]).
    Synthetic(SynthSpec),
}

/// Everything needed to produce the [`Dataset`] of a run.
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub source: DataSource,
    pub load: LoadOptions,
    pub test: TestSource,
    pub duplicates: DuplicatePolicy,
    /// Seed of the seeded splits.
    pub seed: u64,
}

/// The loaded data and what to report about it.
pub struct Input {
    pub dataset: Dataset,
    pub summary: DataSummary,
    /// Bytes read from files (0 for synthetic data).
    pub bytes_read: u64,
    /// Rows read or generated (training and test files together).
    pub rows_read: usize,
}

/// What a [`SplitChoice`] asks the core for: a split of the rows, or
/// whole users held out.
pub enum CoreSplit {
    Rows(SplitSpec),
    Users(UserHoldout),
}

/// The core split of a [`SplitChoice`].
pub fn core_split(choice: SplitChoice, seed: u64) -> CoreSplit {
    CoreSplit::Rows(match choice {
        SplitChoice::Ratio(test_frac) => SplitSpec::Ratio { test_frac, seed },
        SplitChoice::PerUser(test_frac) => SplitSpec::PerUser { test_frac, seed },
        SplitChoice::Temporal(test_frac) => SplitSpec::Temporal { test_frac },
        SplitChoice::KFold { folds, fold } => SplitSpec::KFold { folds, fold, seed },
        SplitChoice::Users(frac) => return CoreSplit::Users(UserHoldout::Ratio { frac, seed }),
    })
}

/// Bytes of the input at `p`: a file, or a directory's part files.
fn file_len(p: &Path) -> u64 {
    let files = als_core::data::input_files(p).unwrap_or_default();
    files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum()
}

fn read_file(path: &Path, opts: &LoadOptions) -> anyhow::Result<RawRatings> {
    // DataError messages already name the file (and line); keep them as the top message.
    load_ratings(path, opts).map_err(anyhow::Error::new)
}

/// Load, split and index the training (and test) data.
pub fn load_input(spec: &InputSpec) -> anyhow::Result<Input> {
    let t0 = Instant::now();
    let (raw, description, mut bytes_read) = match &spec.source {
        DataSource::File(p) => {
            let raw = read_file(p, &spec.load)?;
            (raw, p.display().to_string(), file_len(p))
        }
        DataSource::Synthetic(s) => {
            let raw = generate_raw(s).context("cannot generate the synthetic dataset")?;
            let d = format!("embedded synthetic dataset ({})", raw.source);
            (raw, d, 0)
        }
    };
    let mut skipped = raw.skipped_lines;
    let mut rows_read = raw.len();
    let built = match &spec.test {
        TestSource::None => Dataset::index((&raw, Rows::All(raw.len())), None, spec.duplicates),
        TestSource::Split(choice) => match core_split(*choice, spec.seed) {
            CoreSplit::Rows(rows) => {
                let (train, test) = split_rows(&raw, &rows).with_context(|| format!("cannot split {description}"))?;
                Dataset::index((&raw, Rows::Listed(&train)), Some((&raw, &test)), spec.duplicates)
            }
            CoreSplit::Users(which) => {
                let split = split_users(&raw, which).with_context(|| format!("cannot split {description}"))?;
                Dataset::build_user_split(&raw, &split, spec.duplicates).map(DatasetBuild::from)
            }
        },
        TestSource::File(tp) => {
            let test_raw = read_file(tp, &spec.load)?;
            skipped += test_raw.skipped_lines;
            bytes_read += file_len(tp);
            rows_read += test_raw.len();
            let test_rows: Vec<usize> = (0..test_raw.len()).collect();
            Dataset::index((&raw, Rows::All(raw.len())), Some((&test_raw, &test_rows)), spec.duplicates)
        }
    };
    // The rows read are freed before the by-item copy is made: never both at once.
    drop(raw);
    let dataset = built
        .with_context(|| format!("cannot index the ratings of {description}"))?
        .finish();
    let load_seconds = t0.elapsed().as_secs_f64();
    let summary = DataSummary {
        source: description,
        n_users: dataset.n_users(),
        n_items: dataset.n_items(),
        n_train: dataset.n_train(),
        n_test: dataset.n_scored_test_rows(),
        test_dropped_cold: dataset.test_dropped_cold + dataset.held_out.as_ref().map_or(0, |h| h.dropped_cold),
        held_out_users: dataset.held_out.as_ref().map(|h| h.n_users()),
        n_fold_in: dataset.held_out.as_ref().map(|h| h.fold_in.nnz()),
        skipped_lines: skipped,
        duplicates_merged: dataset.duplicates_merged,
        load_seconds,
    };
    Ok(Input {
        dataset,
        summary,
        bytes_read,
        rows_read,
    })
}

/// Log what was loaded (one info line).
pub fn log_summary(input: &Input) {
    let s = &input.summary;
    let mb_per_s = if input.bytes_read > 0 {
        input.bytes_read as f64 / 1e6 / s.load_seconds.max(1e-9)
    } else {
        0.0
    };
    tracing::info!(
        source = %s.source,
        rows = input.rows_read,
        users = s.n_users,
        items = s.n_items,
        train = s.n_train,
        test = s.n_test,
        test_dropped_cold = s.test_dropped_cold,
        held_out_users = s.held_out_users,
        skipped_lines = s.skipped_lines,
        duplicates_merged = s.duplicates_merged,
        seconds = format_args!("{:.3}", s.load_seconds),
        mb_per_s = format_args!("{:.1}", mb_per_s),
        "data loaded"
    );
    if s.skipped_lines > 0 {
        tracing::warn!("{} invalid lines were skipped (--skip-invalid)", s.skipped_lines);
    }
    if s.n_test == 0 && s.test_dropped_cold > 0 {
        tracing::warn!(
            "every test row ({}) was dropped as cold start (user or item not in training): no evaluation",
            s.test_dropped_cold
        );
    }
}
