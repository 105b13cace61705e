//! Running engine work off the GIL, on a pool of the requested size, while
//! the calling Python thread stays responsive.
//!
//! The work runs on a scoped thread inside a rayon pool. The calling thread
//! keeps the GIL released except to hand progress events to a Python
//! callback and to check for signals every 50 ms: Python delivers signals
//! (Ctrl-C) to the main thread only, so that thread must keep looking. A
//! signal or a failing callback raises a stop flag that the work checks at
//! its next iteration boundary; the work then ends with an error, no partial
//! model is returned, and the Python exception is raised as it came.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::convert::NativeError;

/// What the work tells the calling thread.
pub(crate) enum Event {
    Iteration {
        iteration: usize,
        seconds: f64,
        objective: Option<f64>,
    },
}

/// The work's side of the channel.
pub(crate) struct Progress<'a> {
    tx: Sender<Event>,
    stop: &'a AtomicBool,
}

impl Progress<'_> {
    /// Report an event; `false` once the caller asked the work to stop.
    pub fn report(&self, event: Event) -> bool {
        let _ = self.tx.send(event);
        !self.stop.load(Ordering::Relaxed)
    }
}

/// A pool of `threads` threads (0: one per core).
fn pool(threads: usize) -> PyResult<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("ferrals-{i}"))
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start {threads} threads: {e}")))
}

/// Run `work` on a pool of `threads` with the GIL released; `on_event` sees
/// its events on the calling thread, with the GIL.
pub(crate) fn run_detached<R, W, E>(py: Python<'_>, threads: usize, work: W, mut on_event: E) -> PyResult<R>
where
    R: Send,
    W: FnOnce(&Progress) -> Result<R, NativeError> + Send,
    E: FnMut(Python<'_>, Event) -> PyResult<()>,
{
    let pool = pool(threads)?;
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    let mut pending: Option<PyErr> = None;
    let joined = std::thread::scope(|s| {
        let (pool, stop) = (&pool, &stop);
        let handle = s.spawn(move || {
            let progress = Progress { tx, stop };
            pool.install(|| work(&progress))
        });
        let mut rx = Some(rx);
        loop {
            // The receiver moves into the GIL-free closure and back: a
            // borrowed one is not Send.
            let r = rx.take().expect("receiver is put back every turn");
            let (r, msg) = py.detach(move || {
                let m = r.recv_timeout(Duration::from_millis(50));
                (r, m)
            });
            rx = Some(r);
            match msg {
                Ok(event) => {
                    if pending.is_none() {
                        if let Err(e) = on_event(py, event) {
                            pending = Some(e);
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if pending.is_none() {
                if let Err(e) = py.check_signals() {
                    pending = Some(e);
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
        handle.join()
    });
    if let Some(e) = pending {
        return Err(e);
    }
    match joined {
        Ok(r) => r.map_err(PyErr::from),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown cause".into());
            Err(PyRuntimeError::new_err(format!(
                "internal error in ferrals (please report it): {what}"
            )))
        }
    }
}
