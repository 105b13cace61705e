//! Progress bars on stderr, and a log writer that keeps them intact.
//!
//! A bar is drawn only when stderr is a terminal and `--quiet` is not given.
//! While a bar is active, log lines are written through
//! [`ProgressBar::suspend`] (see [`LogWriter`]), so they appear above the
//! bar instead of tearing it.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar currently on screen, if any (log lines suspend it).
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Whether bars should be drawn: stderr is a terminal and not `--quiet`.
pub fn bars_enabled(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// A bar of `len` steps on stderr (hidden unless [`bars_enabled`]), registered
/// so that log lines are printed above it. Finish it with [`finish`].
pub fn bar(len: u64, quiet: bool, template: &str) -> ProgressBar {
    let pb = if bars_enabled(quiet) {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    pb.set_style(style);
    if !pb.is_hidden() {
        pb.enable_steady_tick(Duration::from_millis(200));
        *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) = Some(pb.clone());
    }
    pb
}

/// The bar of a training run: one step per iteration; the message shows the
/// last iteration's objective and test metric.
pub fn training_bar(iterations: usize, quiet: bool) -> ProgressBar {
    bar(
        iterations as u64,
        quiet,
        "{spinner} training [{elapsed_precise}] [{bar:30}] {pos}/{len} {msg}",
    )
}

/// Remove a bar from the screen and stop routing logs through it.
pub fn finish(pb: &ProgressBar) {
    pb.finish_and_clear();
    let mut active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
    if active.as_ref().is_some_and(|a| a.is_finished()) {
        *active = None;
    }
}

/// A `tracing_subscriber` writer to stderr that prints each log event above
/// the active progress bar (buffered per event, written on drop).
#[derive(Default)]
pub struct LogWriter {
    buf: Vec<u8>,
}

impl Write for LogWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let write = |buf: &[u8]| {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(buf);
            let _ = err.flush();
        };
        let active = ACTIVE.lock().ok().and_then(|a| a.clone());
        match active {
            Some(pb) if !pb.is_finished() => pb.suspend(|| write(&self.buf)),
            _ => write(&self.buf),
        }
    }
}

/// `MakeWriter` for the log subscriber.
pub fn make_log_writer() -> LogWriter {
    LogWriter::default()
}
