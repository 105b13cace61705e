//! Flags about how a command reports: `--quiet` for the commands with long
//! work, `-n/--num` and `--json` for the commands that print a ranked list.

use als_core::topk::DEFAULT_TOP_N;
use clap::Args;

use super::parse;

/// `--quiet`.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct ProgressArgs {
    /// No progress bar.
    #[arg(long, help_heading = "Output")]
    pub quiet: bool,
}

/// `-n/--num` and `--json`: how long a ranked list is and how it is printed.
#[derive(Args, Debug, Clone, Copy)]
pub struct ListArgs {
    /// Number of results.
    #[arg(short = 'n', long = "num", default_value_t = DEFAULT_TOP_N, value_name = "N", value_parser = parse::positive_usize)]
    pub n: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}
