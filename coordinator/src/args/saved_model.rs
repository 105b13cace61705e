//! `--model DIR`: a saved model, for every command that reads one.

use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct ModelDirArg {
    /// Model directory written by training with --out (or by fold-in).
    #[arg(long = "model", value_name = "DIR")]
    pub dir: PathBuf,
}
