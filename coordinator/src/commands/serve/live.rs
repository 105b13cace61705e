//! The served model, replaced whole when a new version is written.
//!
//! Every request takes the current model once (an `Arc`) and answers from it
//! to the end, so a reload never drops or mixes a request: requests that
//! started before it finish on the old model, later ones get the new one.
//! A model directory is replaced in one step by the trainer's atomic writer
//! (its `model.json` is then a new file), so the directory is watched
//! through that file's identity. A version that fails to load is logged and
//! counted, the old one keeps serving, and the same failing files are not
//! retried until they change again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;

use super::api::ServeState;
use super::metrics::Metrics;
use crate::model_dir::open_model;

/// What identifies the files of one model version: `model.json`'s inode,
/// modification time and length (the atomic writer makes each version a new file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    modified: Option<std::time::SystemTime>,
    len: u64,
}

fn stamp(dir: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(dir.join("model.json"))?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Ok(Stamp {
        inode,
        modified: m.modified().ok(),
        len: m.len(),
    })
}

/// The outcome of a reload check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The files are those already served (or already refused).
    Unchanged,
    /// A new version serves from now on.
    Loaded { version: u64 },
}

/// The model being served, and where its next versions appear.
pub struct LiveModel {
    dir: PathBuf,
    current: RwLock<Arc<ServeState>>,
    /// The files last loaded or refused.
    seen: Mutex<Option<Stamp>>,
    pub metrics: Metrics,
}

impl LiveModel {
    /// Load the model in `dir` (an error if it does not load: there is nothing to serve yet).
    pub fn open(dir: &Path, max_n: usize) -> anyhow::Result<LiveModel> {
        // Stamped before loading: a version written meanwhile is seen next time.
        let seen = stamp(dir).ok();
        Ok(Self::serving(dir, load(dir, max_n)?, seen))
    }

    /// Serve `state` (loaded elsewhere) from `dir`.
    #[cfg(test)]
    pub fn with_state(dir: &Path, state: ServeState) -> LiveModel {
        Self::serving(dir, state, stamp(dir).ok())
    }

    fn serving(dir: &Path, state: ServeState, seen: Option<Stamp>) -> LiveModel {
        let metrics = Metrics::default();
        metrics.model_loaded(&state.model);
        LiveModel {
            dir: dir.to_path_buf(),
            current: RwLock::new(Arc::new(state)),
            seen: Mutex::new(seen),
            metrics,
        }
    }

    /// The model every new request answers from.
    pub fn current(&self) -> Arc<ServeState> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Load the directory's model if its files changed since the last load or
    /// refusal (`force`: even if they did not, as SIGHUP asks). On failure the
    /// old model keeps serving and the error says why.
    pub fn reload(&self, force: bool) -> anyhow::Result<Reload> {
        let now = stamp(&self.dir).ok();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            // No model.json (mid-replacement or removed): keep serving, look again later.
            if !force && (now.is_none() || *seen == now) {
                return Ok(Reload::Unchanged);
            }
            *seen = now;
        }
        match load(&self.dir, self.current().max_n) {
            Ok(state) => {
                let version = state.model.version();
                self.metrics.model_loaded(&state.model);
                self.metrics.reloaded(true);
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
                Ok(Reload::Loaded { version })
            }
            Err(e) => {
                self.metrics.reloaded(false);
                Err(e)
            }
        }
    }
}

fn load(dir: &Path, max_n: usize) -> anyhow::Result<ServeState> {
    let model = open_model(dir)?;
    ServeState::new(model, max_n).with_context(|| format!("cannot serve {}", dir.display()))
}
