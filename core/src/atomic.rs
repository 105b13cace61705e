//! Every output is written the same way: into a temporary sibling, flushed
//! and fsynced, then moved over its name in one step, and the directory
//! fsynced. A reader sees the old output or the new one, never a part; a
//! killed run leaves at worst a temporary that the next run removes.
//!
//! Temporaries are named `.<name>.tmp-<pid>-<random>`, so a later run can
//! tell the ones of dead processes from those of a save still under way.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// A failed output step, with the path and the OS cause.
#[derive(Debug, thiserror::Error)]
pub enum AtomicError {
    /// The OS cause is part of the message (not a `source`), so every
    /// caller shows it, however it prints errors.
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error("{} already exists; pass --overwrite to replace it", path.display())]
    Exists { path: PathBuf },
    #[error("{}: the directory {} does not exist", path.display(), parent.display())]
    NoParent { path: PathBuf, parent: PathBuf },
    #[error("{}: give a file or directory name (not '.', '..' or a root)", path.display())]
    NoName { path: PathBuf },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> AtomicError + '_ {
    move |cause| AtomicError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// How an output may treat what is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputPolicy {
    /// Replace an existing output (else [`AtomicError::Exists`]).
    pub overwrite: bool,
    /// Create missing parent directories (else [`AtomicError::NoParent`]).
    pub create_parent: bool,
}

impl OutputPolicy {
    /// Replace what is there; create the parent directories (reports, checkpoints).
    pub const REPLACE: OutputPolicy = OutputPolicy {
        overwrite: true,
        create_parent: true,
    };
}

/// The parent directory of `path` and its file name, checked against `policy`.
fn parent_and_name(path: &Path, policy: OutputPolicy) -> Result<(PathBuf, String), AtomicError> {
    let name = path
        .file_name()
        .ok_or_else(|| AtomicError::NoName { path: path.to_path_buf() })?
        .to_string_lossy()
        .into_owned();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if policy.create_parent {
        fs::create_dir_all(&parent).map_err(io_at(&parent))?;
    } else if !parent.is_dir() {
        return Err(AtomicError::NoParent {
            path: path.to_path_buf(),
            parent,
        });
    }
    if !policy.overwrite && fs::symlink_metadata(path).is_ok() {
        return Err(AtomicError::Exists { path: path.to_path_buf() });
    }
    Ok((parent, name))
}

fn temp_prefix(name: &str, kind: &str) -> String {
    format!(".{name}.{kind}-{}-", std::process::id())
}

/// fsync a directory, so a rename in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), AtomicError> {
    #[cfg(unix)]
    File::open(dir).and_then(|f| f.sync_all()).map_err(io_at(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Remove the temporaries that dead processes left beside `name` in `parent`.
pub fn remove_stale_temporaries(parent: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = [".tmp-", ".old-"].iter().find_map(|k| file.strip_prefix(&format!(".{name}{k}"))) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let p = e.path();
        let removed = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        match removed {
            Ok(()) => tracing::info!(path = %p.display(), "removed a temporary left by an interrupted run"),
            Err(err) => tracing::warn!(path = %p.display(), "cannot remove a stale temporary: {err}"),
        }
    }
}

fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        // Without a way to tell, keep it.
        true
    }
}

/// Write the file `path` atomically: `fill` writes its bytes.
pub fn write_file_atomic(
    path: &Path,
    policy: OutputPolicy,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), AtomicError> {
    let (parent, name) = parent_and_name(path, policy)?;
    remove_stale_temporaries(&parent, &name);
    let tmp = tempfile::Builder::new()
        .prefix(&temp_prefix(&name, "tmp"))
        .tempfile_in(&parent)
        .map_err(io_at(&parent))?;
    let mut w = BufWriter::with_capacity(1 << 20, tmp);
    fill(&mut w).map_err(io_at(path))?;
    let tmp = w.into_inner().map_err(|e| AtomicError::Io {
        path: path.to_path_buf(),
        cause: e.into_error(),
    })?;
    tmp.as_file().sync_all().map_err(io_at(path))?;
    if policy.overwrite {
        tmp.persist(path).map_err(|e| AtomicError::Io {
            path: path.to_path_buf(),
            cause: e.error,
        })?;
    } else {
        // Refuses to replace a file that appeared meanwhile.
        tmp.persist_noclobber(path).map_err(|e| match e.error.kind() {
            io::ErrorKind::AlreadyExists => AtomicError::Exists { path: path.to_path_buf() },
            _ => AtomicError::Io {
                path: path.to_path_buf(),
                cause: e.error,
            },
        })?;
    }
    sync_dir(&parent)
}

/// A fresh temporary directory beside `dir` to build a directory output in;
/// removed on drop unless [`replace_dir`] moved it into place.
pub fn temp_dir_beside(dir: &Path, policy: OutputPolicy) -> Result<tempfile::TempDir, AtomicError> {
    let (parent, name) = parent_and_name(dir, policy)?;
    remove_stale_temporaries(&parent, &name);
    tempfile::Builder::new()
        .prefix(&temp_prefix(&name, "tmp"))
        .tempdir_in(&parent)
        .map_err(io_at(&parent))
}

/// Put the finished directory `new` (from [`temp_dir_beside`]) at `dir` in
/// one step. An existing `dir` is exchanged with it atomically (Linux
/// `renameat2(RENAME_EXCHANGE)`), so `dir` always holds the old or the new
/// output, and the old one is then removed.
pub fn replace_dir(new: tempfile::TempDir, dir: &Path) -> Result<(), AtomicError> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if fs::symlink_metadata(dir).is_ok() {
        exchange(new.path(), dir).map_err(io_at(dir))?;
        sync_dir(&parent)?;
        // `new` now names the old output: dropping it removes it.
        new.close().map_err(io_at(dir))?;
    } else {
        fs::rename(new.path(), dir).map_err(io_at(dir))?;
        let _ = new.keep();
        sync_dir(&parent)?;
    }
    Ok(())
}

/// Swap two paths in one step.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    const RENAME_EXCHANGE: libc::c_uint = 1 << 1;
    let ca = CString::new(a.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let cb = CString::new(b.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call;
    // renameat2 reads them and touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere: move the old output aside, then the new one in (a crash in
/// between leaves the old one beside `b`, where the next save finds it).
#[cfg(not(target_os = "linux"))]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let aside = a.with_extension("old-swap");
    fs::rename(b, &aside)?;
    if let Err(e) = fs::rename(a, b) {
        let _ = fs::rename(&aside, b);
        return Err(e);
    }
    fs::rename(&aside, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_replace_in_one_step_and_respect_the_policy() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.txt");
        write_file_atomic(&p, OutputPolicy::REPLACE, |w| w.write_all(b"one")).unwrap();
        write_file_atomic(&p, OutputPolicy::REPLACE, |w| w.write_all(b"two")).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let keep = OutputPolicy {
            overwrite: false,
            create_parent: false,
        };
        assert!(matches!(
            write_file_atomic(&p, keep, |w| w.write_all(b"x")),
            Err(AtomicError::Exists { .. })
        ));
        let deep = d.path().join("no/such/dir/f.csv");
        let e = write_file_atomic(&deep, keep, |w| w.write_all(b"x")).unwrap_err();
        assert!(matches!(e, AtomicError::NoParent { .. }), "{e}");
        // A failing writer leaves the old file and no temporary.
        let e = write_file_atomic(&p, OutputPolicy::REPLACE, |_| Err(io::Error::other("disk full"))).unwrap_err();
        assert!(e.to_string().contains("disk full"), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn directories_are_exchanged_and_stale_temporaries_removed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("model");
        for text in ["old", "new"] {
            let t = temp_dir_beside(&dir, OutputPolicy::REPLACE).unwrap();
            fs::write(t.path().join("f"), text).unwrap();
            replace_dir(t, &dir).unwrap();
            assert_eq!(fs::read_to_string(dir.join("f")).unwrap(), text);
        }
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "the old directory is gone");
        // A temporary of a dead process (pid 0 is never a user process) is
        // removed by the next save; one of a live process is kept.
        let dead = d.path().join(".model.tmp-0-abc");
        let live = d.path().join(format!(".model.tmp-{}-abc", std::process::id()));
        fs::create_dir(&dead).unwrap();
        fs::create_dir(&live).unwrap();
        let t = temp_dir_beside(&dir, OutputPolicy::REPLACE).unwrap();
        assert!(!dead.exists() && live.exists());
        drop(t);
    }
}
