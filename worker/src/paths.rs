//! The only places a coordinator may have a worker read or write: under the
//! directories its operator gave it (`--input-root`, `--output-root`),
//! resolved, so `..` and symbolic links cannot leave them.

use std::path::{Path, PathBuf};

use tonic::Status;

/// What a path is for, and the flag that allows it.
#[derive(Debug, Clone, Copy)]
pub enum Reach {
    Input,
    Output,
}

impl Reach {
    fn what(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Reach::Input => ("input", "--input-root", "reads no input"),
            Reach::Output => ("output", "--output-root", "writes no file"),
        }
    }
}

/// `path` resolved, if it exists under `root`.
pub fn under_root(path: &str, root: Option<&Path>, reach: Reach) -> Result<PathBuf, Status> {
    let (what, flag, none) = reach.what();
    let root = root.ok_or_else(|| Status::failed_precondition(format!("this worker {none} (start it with {flag} DIR)")))?;
    let resolve = |p: &Path| {
        p.canonicalize()
            .map_err(|e| Status::invalid_argument(format!("{what} {}: {e}", p.display())))
    };
    let (p, r) = (resolve(Path::new(path))?, resolve(root)?);
    match p.starts_with(&r) {
        true => Ok(p),
        false => Err(Status::permission_denied(format!(
            "{what} {path} is not under this worker's {flag} {}",
            r.display()
        ))),
    }
}
