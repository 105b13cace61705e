//! `--format`, `--header`, the column flags, `--skip-invalid` and
//! `--duplicates`: how a ratings file is read, for every command that reads one.

use als_core::data::{DuplicatePolicy, Format, LoadOptions};
use anyhow::bail;
use clap::{Args, ValueEnum};

/// Input file layouts (`--format`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatArg {
    /// Guess from the file name and the first line.
    #[default]
    Auto,
    /// MovieLens 100k u.data: TAB separated user item rating timestamp.
    #[value(name = "ml-100k")]
    Ml100k,
    /// MovieLens 1M/10M ratings.dat: user::item::rating::timestamp.
    #[value(name = "ml-1m")]
    Ml1m,
    /// MovieLens latest/20M/25M ratings.csv with its header.
    #[value(name = "ml-latest")]
    MlLatest,
    Csv,
    Tsv,
    /// Runs of spaces and/or tabs.
    Whitespace,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Auto => Format::Auto,
            FormatArg::Ml100k => Format::Ml100k,
            FormatArg::Ml1m => Format::Ml1m,
            FormatArg::MlLatest => Format::MlLatest,
            FormatArg::Csv => Format::Csv,
            FormatArg::Tsv => Format::Tsv,
            FormatArg::Whitespace => Format::Whitespace,
        }
    }
}

/// Repeated (user, item) pairs (`--duplicates`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuplicatesArg {
    /// The later line wins.
    Last,
    /// The earlier line wins.
    First,
    /// Values add up.
    Sum,
}

impl From<DuplicatesArg> for DuplicatePolicy {
    fn from(d: DuplicatesArg) -> Self {
        match d {
            DuplicatesArg::Last => DuplicatePolicy::Last,
            DuplicatesArg::First => DuplicatePolicy::First,
            DuplicatesArg::Sum => DuplicatePolicy::Sum,
        }
    }
}

/// How a ratings file is laid out.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Data")]
pub struct LayoutArgs {
    /// Layout of the ratings file(s).
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub format: FormatArg,
    /// The first line is a header (default: detected).
    #[arg(long, conflicts_with = "no_header")]
    pub header: bool,
    /// The first line is data (default: detected).
    #[arg(long)]
    pub no_header: bool,
    /// 0-based column of the user id.
    #[arg(long, default_value_t = LoadOptions::default().user_col, value_name = "N")]
    pub user_col: usize,
    /// 0-based column of the item id.
    #[arg(long, default_value_t = LoadOptions::default().item_col, value_name = "N")]
    pub item_col: usize,
    /// 0-based column of the rating [default: 2].
    #[arg(long, value_name = "N", conflicts_with = "no_rating_col")]
    pub rating_col: Option<usize>,
    /// No rating column: an event log where every line counts 1.
    #[arg(long)]
    pub no_rating_col: bool,
    /// Skip malformed lines (and report how many) instead of stopping.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Repeated (user, item) pairs [default: last for explicit ratings, sum for --implicit].
    #[arg(long, value_enum)]
    pub duplicates: Option<DuplicatesArg>,
}

impl LayoutArgs {
    /// Read options, with the timestamp column the caller needs (or none).
    pub fn load_options(&self, timestamp_col: Option<usize>) -> LoadOptions {
        let defaults = LoadOptions::default();
        LoadOptions {
            format: self.format.into(),
            header: if self.header {
                Some(true)
            } else if self.no_header {
                Some(false)
            } else {
                None
            },
            user_col: self.user_col,
            item_col: self.item_col,
            rating_col: if self.no_rating_col {
                None
            } else {
                self.rating_col.or(defaults.rating_col)
            },
            timestamp_col,
            skip_invalid: self.skip_invalid,
            ..defaults
        }
    }

    /// The duplicate rule: `--duplicates`, else last for explicit and sum for implicit.
    pub fn duplicate_policy(&self, implicit: bool) -> DuplicatePolicy {
        match self.duplicates {
            Some(d) => d.into(),
            None if implicit => DuplicatePolicy::Sum,
            None => DuplicatePolicy::Last,
        }
    }
}

/// Column numbers must name distinct columns.
pub fn check_columns(o: &LoadOptions) -> anyhow::Result<()> {
    let mut named = vec![("--user-col", o.user_col), ("--item-col", o.item_col)];
    if let Some(r) = o.rating_col {
        named.push(("--rating-col", r));
    }
    if let Some(t) = o.timestamp_col {
        named.push(("--timestamp-col", t));
    }
    for (a, (na, ca)) in named.iter().enumerate() {
        for (nb, cb) in &named[a + 1..] {
            if ca == cb {
                bail!("{na} and {nb} both name column {ca}");
            }
        }
    }
    Ok(())
}
