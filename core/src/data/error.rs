//! Errors of data loading, naming the file, line and problem.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot read")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {problem}")]
    Malformed { path: PathBuf, line: u64, problem: String },
    #[error("{path}: no ratings (the file is empty or has only a header)")]
    Empty { path: PathBuf },
    #[error("{path}: cannot detect the format: {reason}; pass --format")]
    UnknownFormat { path: PathBuf, reason: String },
    #[error("invalid split: {0}")]
    Split(String),
    #[error("no training ratings left after the split")]
    EmptyTrain,
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    /// The error of an I/O call on `path` (for `map_err`).
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
        move |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
