//! The model directory: save atomically, load with verification.
//!
//! Layout (format version 1):
//!
//! | file | content |
//! |---|---|
//! | `model.json` | format_version, kind, factors, n_users, n_items, nnz_seen, global_mean, rating_range, hyperparameters, data_fingerprint, metrics, version, created_unix, files (name, bytes, sha256 of every other file) |
//! | `user_factors.npy`, `item_factors.npy` | f32, shape (n, k) |
//! | `user_bias.npy`, `item_bias.npy` | f32, shape (n,); only when the model has biases |
//! | `user_ids.txt`, `item_ids.txt` | one original id per line (`\n`), in row order |
//! | `seen_indptr.npy` (i64, n_users + 1), `seen_indices.npy` (u32) | the seen items, CSR structure |

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use ndarray::Array2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::id_lines::{check_id_lines, lines_problem, write_id_lines};
use super::{Model, ModelKind, ModelParts};
use crate::data::Csr;
use crate::npy::{self, NpyElement, NpyError};
use crate::row_places::{write_le_at, IdLines, IdsPlace, IdsPlaces, RowPlaces, RowsPlace, RowsShape, SeenPlaces};
use crate::side::Factors;
use crate::solve::all_finite;

pub const MODEL_FORMAT_VERSION: u32 = 1;

pub const MODEL_JSON: &str = "model.json";
const USER_FACTORS: &str = "user_factors.npy";
const ITEM_FACTORS: &str = "item_factors.npy";
const USER_BIAS: &str = "user_bias.npy";
const ITEM_BIAS: &str = "item_bias.npy";
const USER_IDS: &str = "user_ids.txt";
const ITEM_IDS: &str = "item_ids.txt";
const SEEN_INDPTR: &str = "seen_indptr.npy";
const SEEN_INDICES: &str = "seen_indices.npy";
/// Every file model.json may list.
const DATA_FILES: [&str; 8] = [
    USER_FACTORS,
    ITEM_FACTORS,
    USER_BIAS,
    ITEM_BIAS,
    USER_IDS,
    ITEM_IDS,
    SEEN_INDPTR,
    SEEN_INDICES,
];

/// Why a model could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model directory {} already exists; pass --overwrite to replace it", path.display())]
    Exists { path: PathBuf },
    #[error("refusing to replace {}: it is not a model directory (no model.json)", path.display())]
    NotAModelDir { path: PathBuf },
    #[error("{}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Npy(#[from] NpyError),
    #[error("{}: bad model.json: {message}", path.display())]
    BadJson { path: PathBuf, message: String },
    #[error("{}: unsupported model format version {found} (this build reads version {supported})", path.display())]
    UnsupportedVersion { path: PathBuf, found: u64, supported: u32 },
    #[error("{}: inconsistent sizes: expected {expected}, found {found}", path.display())]
    Inconsistent { path: PathBuf, expected: String, found: String },
    #[error("{}: checksum mismatch (file is corrupted or was modified): model.json says sha256 {expected}, the file has {found}", path.display())]
    Checksum { path: PathBuf, expected: String, found: String },
    #[error("{which} id at row {row} contains a line break ({id:?}); ids files are one id per line")]
    BadId { which: &'static str, row: usize, id: String },
    #[error(transparent)]
    Output(#[from] crate::atomic::AtomicError),
    /// Parts whose sizes or ids disagree ([`super::Model::new`]).
    #[error("invalid model: {problem}")]
    Invalid { problem: String },
    /// The same, in the model directory `path`.
    #[error("{}: invalid model: {problem}", path.display())]
    InvalidAt { path: PathBuf, problem: String },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One entry of model.json's file list.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FileEntry {
    name: String,
    bytes: u64,
    sha256: String,
}

/// model.json. Floats are written as f64 (exact for f32 values), so they read back bit for bit.
#[derive(Debug, Serialize, Deserialize)]
struct ModelJson {
    format_version: u32,
    kind: ModelKind,
    factors: usize,
    n_users: usize,
    n_items: usize,
    #[serde(default)]
    nnz_seen: Option<usize>,
    global_mean: f64,
    rating_range: Option<(f64, f64)>,
    hyperparameters: serde_json::Value,
    data_fingerprint: String,
    metrics: serde_json::Value,
    version: u64,
    created_unix: u64,
    files: Vec<FileEntry>,
}

/// A writer that hashes and counts what passes through.
struct HashWriter<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what passes through.
struct HashReader<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl HashReader<BufReader<File>> {
    /// The file `path`, read through a hashing reader.
    fn open(path: &Path) -> Result<Self, ModelError> {
        let f = File::open(path).map_err(io_at(path))?;
        Ok(HashReader {
            inner: BufReader::with_capacity(1 << 20, f),
            hash: Sha256::new(),
            bytes: 0,
        })
    }
}

impl HashReader<BufReader<File>> {
    /// The `.npy` file `path`, read through a hashing reader past its
    /// header, which must be `head` (as [`PendingModel::begin`] wrote it).
    fn open_headed(path: &Path, head: &[u8]) -> Result<Self, ModelError> {
        let mut r = Self::open(path)?;
        let mut found = vec![0u8; head.len()];
        r.read_exact(&mut found).map_err(io_at(path))?;
        if found != head {
            return Err(inconsistent(path, "the header it was created with", "another one"));
        }
        Ok(r)
    }

    /// The model.json entry `name` of the file `path` read to its end,
    /// where nothing may follow what was read (it was created at its full
    /// length, `values` of them).
    fn entry_at_end(mut self, path: &Path, name: &str, values: impl ToString) -> Result<FileEntry, ModelError> {
        if io::copy(&mut self, &mut io::sink()).map_err(io_at(path))? != 0 {
            return Err(inconsistent(path, values, "more"));
        }
        Ok(self.entry(name))
    }
}

impl<R> HashReader<R> {
    /// The model.json entry `name` of what was read.
    fn entry(self, name: &str) -> FileEntry {
        FileEntry {
            name: name.to_string(),
            bytes: self.bytes,
            sha256: hex(&self.hash.finalize()),
        }
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Create `dir/name`, fill it with `fill`, fsync; returns its file entry.
fn write_file(dir: &Path, name: &str, fill: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<FileEntry, ModelError> {
    let path = dir.join(name);
    fail_point(name).map_err(io_at(&path))?;
    let f = File::create(&path).map_err(io_at(&path))?;
    let mut w = HashWriter {
        inner: BufWriter::with_capacity(1 << 16, f),
        hash: Sha256::new(),
        bytes: 0,
    };
    fill(&mut w).map_err(io_at(&path))?;
    w.flush().map_err(io_at(&path))?;
    let f = w.inner.into_inner().map_err(|e| ModelError::Io {
        path: path.clone(),
        source: e.into_error(),
    })?;
    f.sync_all().map_err(io_at(&path))?;
    Ok(FileEntry {
        name: name.to_string(),
        bytes: w.bytes,
        sha256: hex(&w.hash.finalize()),
    })
}

fn check_ids(which: &'static str, ids: &[String]) -> Result<(), ModelError> {
    match ids.iter().position(|s| s.contains(['\n', '\r'])) {
        Some(row) => Err(ModelError::BadId {
            which,
            row,
            id: ids[row].clone(),
        }),
        None => Ok(()),
    }
}

fn inconsistent(path: &Path, expected: impl ToString, found: impl ToString) -> ModelError {
    ModelError::Inconsistent {
        path: path.to_path_buf(),
        expected: expected.to_string(),
        found: found.to_string(),
    }
}

/// What the model directory's format cannot hold (sizes are checked by
/// [`Model::new`]): ids are one per line.
fn validate(parts: &ModelParts) -> Result<(), ModelError> {
    check_ids("user", &parts.user_ids)?;
    check_ids("item", &parts.item_ids)
}

/// fsync a directory: the one implementation of `crate::atomic`.
fn sync_dir(dir: &Path) -> Result<(), ModelError> {
    Ok(crate::atomic::sync_dir(dir)?)
}

#[cfg(test)]
thread_local! {
    /// Tests: the step (file name or "rename new") at which saving fails with an I/O error.
    static FAIL_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

#[cfg(test)]
fn fail_point(step: &str) -> io::Result<()> {
    if FAIL_AT.with(|f| f.borrow().as_deref() == Some(step)) {
        return Err(io::Error::other(format!("injected failure at {step}")));
    }
    Ok(())
}

#[cfg(not(test))]
#[inline(always)]
fn fail_point(_: &str) -> io::Result<()> {
    Ok(())
}

/// The entry of `tmp/name` as `fill` writes it: the one of `read_back`
/// when the file is already there (written elsewhere), after checking it
/// holds exactly what `fill` writes; else the file `fill` writes now.
fn written_or_write(
    tmp: &Path,
    name: &str,
    read_back: &[FileEntry],
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<FileEntry, ModelError> {
    let Some(there) = read_back.iter().find(|e| e.name == name) else {
        return write_file(tmp, name, fill);
    };
    let mut w = HashWriter {
        inner: io::sink(),
        hash: Sha256::new(),
        bytes: 0,
    };
    fill(&mut w).map_err(io_at(&tmp.join(name)))?;
    if w.bytes != there.bytes || hex(&w.hash.finalize()) != there.sha256 {
        return Err(ModelError::InvalidAt {
            path: tmp.join(name),
            problem: "what was written to it is not the model's".into(),
        });
    }
    Ok(there.clone())
}

/// Write every file of `model` into the directory `tmp`, but for the files
/// of rows already there (`read_back`, from [`PendingModel`]), which must
/// hold exactly what would be written.
fn write_all_files(
    model: &ModelParts,
    (rows_files, ids_files): (RowsFiles, RowsFiles),
    seen: SeenFiles,
    tmp: &Path,
    read_back: &[FileEntry],
    shape: Option<RowsShape>,
) -> Result<(), ModelError> {
    // Where the ids were written elsewhere, the parts hold none: the shape begun counts them.
    let (nu, ni) = match (ids_files, shape) {
        (RowsFiles::ReadBack, Some(s)) => (s.n_users, s.n_items),
        _ => (model.user_ids.len(), model.item_ids.len()),
    };
    let k = model.user_factors.ncols();
    let mut files = Vec::new();
    let uf = model.user_factors.as_standard_layout();
    let itf = model.item_factors.as_standard_layout();
    let uf = uf.as_slice().expect("standard layout");
    let itf = itf.as_slice().expect("standard layout");
    let mut rows: Vec<(&str, Vec<usize>, &[f32])> = vec![(USER_FACTORS, vec![nu, k], uf), (ITEM_FACTORS, vec![ni, k], itf)];
    if let Some(b) = &model.user_bias {
        rows.push((USER_BIAS, vec![nu], b));
    }
    if let Some(b) = &model.item_bias {
        rows.push((ITEM_BIAS, vec![ni], b));
    }
    for (name, dims, values) in rows {
        files.push(match rows_files {
            RowsFiles::WriteOrCheck => written_or_write(tmp, name, read_back, |w| npy::write_npy_f32(&mut &mut *w, &dims, values))?,
            RowsFiles::ReadBack => read_back_entry(read_back, name)?,
        });
    }
    for (name, ids) in [(USER_IDS, &model.user_ids), (ITEM_IDS, &model.item_ids)] {
        files.push(match ids_files {
            RowsFiles::WriteOrCheck => written_or_write(tmp, name, read_back, |w| write_id_lines(w, ids))?,
            RowsFiles::ReadBack => read_back_entry(read_back, name)?,
        });
    }
    let nnz_seen = match seen {
        SeenFiles::Write(seen) => {
            let indptr: Vec<i64> = seen.indptr.iter().map(|&p| p as i64).collect();
            files.push(written_or_write(tmp, SEEN_INDPTR, read_back, |w| {
                npy::write_npy_i64(&mut &mut *w, &[indptr.len()], &indptr)
            })?);
            let idx = &seen.indices;
            files.push(written_or_write(tmp, SEEN_INDICES, read_back, |w| {
                npy::write_npy_u32(&mut &mut *w, &[idx.len()], idx)
            })?);
            idx.len()
        }
        SeenFiles::ReadBack(nnz) => {
            for name in [SEEN_INDPTR, SEEN_INDICES] {
                files.push(read_back_entry(read_back, name)?);
            }
            nnz
        }
    };

    let meta = ModelJson {
        format_version: MODEL_FORMAT_VERSION,
        kind: model.kind,
        factors: k,
        n_users: nu,
        n_items: ni,
        nnz_seen: Some(nnz_seen),
        global_mean: model.global_mean as f64,
        rating_range: model.rating_range.map(|(a, b)| (a as f64, b as f64)),
        hyperparameters: model.hyperparameters.clone(),
        data_fingerprint: model.data_fingerprint.clone(),
        metrics: model.metrics.clone(),
        version: model.version,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        files,
    };
    let json_path = tmp.join(MODEL_JSON);
    let text = serde_json::to_vec_pretty(&meta).map_err(|e| ModelError::BadJson {
        path: json_path.clone(),
        message: e.to_string(),
    })?;
    write_file(tmp, MODEL_JSON, |w| {
        w.write_all(&text)?;
        w.write_all(b"\n")
    })?;
    sync_dir(tmp)
}

/// The entry of the file `name` written elsewhere and read back.
fn read_back_entry(read_back: &[FileEntry], name: &str) -> Result<FileEntry, ModelError> {
    read_back
        .iter()
        .find(|e| e.name == name)
        .cloned()
        .ok_or_else(|| ModelError::Invalid {
            problem: format!("{name} was neither written elsewhere nor given"),
        })
}

/// The files of a model's rows (or of its ids) being saved: written from
/// its parts (or checked against them where written elsewhere), or only
/// written elsewhere and read back (checked as they were read).
#[derive(Clone, Copy)]
enum RowsFiles {
    WriteOrCheck,
    ReadBack,
}

/// The seen matrix's files of a model being saved: written from the
/// matrix (or checked against it where written elsewhere), or only
/// written elsewhere and read back, `nnz` entries (checked as they were
/// read: [`check_seen_files`]).
enum SeenFiles<'a> {
    Write(&'a Csr),
    ReadBack(usize),
}

/// Save to `dir` atomically ([`crate::atomic`]): every file is written and
/// fsynced in a fresh temporary directory beside `dir`, which then takes
/// `dir`'s place in one step (an existing model is exchanged with it, so
/// `dir` holds the old model or the new one at every instant, also when the
/// process is killed). Temporaries of a killed earlier save are removed.
///
/// If `dir` exists: error unless `overwrite`. An existing non-empty
/// directory without a model.json is never replaced
/// ([`ModelError::NotAModelDir`]), so a mistyped path cannot wipe unrelated
/// data. The parent directory is created when missing.
pub fn save_model(model: &Model, dir: &Path, overwrite: bool) -> Result<(), ModelError> {
    use crate::atomic::{replace_dir, temp_dir_beside, OutputPolicy};
    validate(&model.parts)?;
    check_replaceable(dir, overwrite)?;
    // Removed on drop (any early return) until moved into place.
    let tmp = temp_dir_beside(dir, OutputPolicy::REPLACE)?;
    write_all_files(
        &model.parts,
        (RowsFiles::WriteOrCheck, RowsFiles::WriteOrCheck),
        SeenFiles::Write(&model.parts.seen),
        tmp.path(),
        &[],
        None,
    )?;
    fail_point("rename new").map_err(io_at(dir))?;
    replace_dir(tmp, dir)?;
    Ok(())
}

/// `dir` may take a new model: it does not exist, or `overwrite` and it
/// is a model directory or empty.
fn check_replaceable(dir: &Path, overwrite: bool) -> Result<(), ModelError> {
    if fs::symlink_metadata(dir).is_ok() {
        if !overwrite {
            return Err(ModelError::Exists { path: dir.to_path_buf() });
        }
        let is_model = dir.join(MODEL_JSON).is_file();
        let is_empty_dir = fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !is_model && !is_empty_dir {
            return Err(ModelError::NotAModelDir { path: dir.to_path_buf() });
        }
    }
    Ok(())
}

/// A model being saved whose rows are written by whoever holds them (each
/// cluster worker its blocks', at their offsets): [`PendingModel::begin`]
/// creates the `.npy` files of the rows at their full length, with their
/// headers, in the temporary directory [`save_model`] uses;
/// [`PendingModel::read_rows_into`] reads them back, checksummed, into the
/// caller's state; [`PendingModel::finish`] writes the other files and
/// puts the directory in place, as [`save_model`] does. Dropped unfinished,
/// the temporary directory is removed.
pub struct PendingModel {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    shape: RowsShape,
    /// The count of the seen matrix's entries, when its files are written
    /// elsewhere too.
    seen_nnz: Option<u64>,
    /// The files of rows read back, with their checksums.
    read_back: Vec<FileEntry>,
    /// The rows read back are in the caller's state (else only checked:
    /// the model is finished from parts without rows).
    rows_here: bool,
    /// Users' and items' ids files, where written elsewhere too (the
    /// model is then finished from parts without ids).
    ids: Option<[IdLines; 2]>,
}

impl PendingModel {
    /// With `seen_nnz`, the seen matrix (that many ratings) is written
    /// elsewhere too ([`RowPlaces::seen`]); with `ids`, the users' and the
    /// items' ids files, each block's lines where they say
    /// ([`RowPlaces::ids`]).
    pub fn begin(
        dir: &Path,
        overwrite: bool,
        shape: RowsShape,
        seen_nnz: Option<u64>,
        ids: Option<[IdLines; 2]>,
    ) -> Result<PendingModel, ModelError> {
        use crate::atomic::{temp_dir_beside, OutputPolicy};
        check_replaceable(dir, overwrite)?;
        let tmp = temp_dir_beside(dir, OutputPolicy::REPLACE)?;
        if let Some([users, items]) = &ids {
            for (name, lines, n) in [(USER_IDS, users, shape.n_users), (ITEM_IDS, items, shape.n_items)] {
                let path = tmp.path().join(name);
                lines_problem(lines, n).map_err(|problem| ModelError::InvalidAt {
                    path: path.clone(),
                    problem,
                })?;
                let f = File::create(&path).map_err(io_at(&path))?;
                f.set_len(*lines.bytes.last().expect("checked")).map_err(io_at(&path))?;
            }
        }
        for (name, descr, dims, width) in files_written_elsewhere(shape, seen_nnz) {
            let path = tmp.path().join(name);
            let head = npy::header(descr, &dims);
            let mut f = File::create(&path).map_err(io_at(&path))?;
            f.write_all(&head).map_err(io_at(&path))?;
            f.set_len(head.len() as u64 + dims.iter().product::<usize>() as u64 * width)
                .map_err(io_at(&path))?;
            if let (SEEN_INDPTR, Some(nnz)) = (name, seen_nnz) {
                // The last row pointer, the count of all: no block's to write.
                let last = head.len() as u64 + shape.n_users as u64 * 8;
                write_le_at(&mut f, last, &[nnz as i64]).map_err(io_at(&path))?;
            }
        }
        Ok(PendingModel {
            tmp,
            dir: dir.to_path_buf(),
            shape,
            seen_nnz,
            read_back: Vec::new(),
            rows_here: false,
            ids,
        })
    }

    /// The ids files are written elsewhere too.
    pub fn ids_written_elsewhere(&self) -> bool {
        self.ids.is_some()
    }

    /// Where each part of the rows goes.
    pub fn places(&self) -> RowPlaces {
        let s = self.shape;
        let place = |name: &str, descr: &str, dims: &[usize], width: u64| {
            let at = npy::header(descr, dims).len() as u64;
            RowsPlace {
                path: self.tmp.path().join(name),
                at,
                end: at + dims[0] as u64 * width,
            }
        };
        let rows = |name: &str, n: usize| place(name, f32::DESCR, &[n, s.k], s.k as u64 * 4);
        let bias = |name: &str, n: usize| place(name, f32::DESCR, &[n], 4);
        RowPlaces {
            user_rows: rows(USER_FACTORS, s.n_users),
            item_rows: rows(ITEM_FACTORS, s.n_items),
            user_bias: s.biased.then(|| bias(USER_BIAS, s.n_users)),
            item_bias: s.biased.then(|| bias(ITEM_BIAS, s.n_items)),
            seen: self.seen_nnz.map(|nnz| {
                let mut indptr = place(SEEN_INDPTR, i64::DESCR, &[s.n_users + 1], 8);
                // Every row's pointer but the last, which is written with the file.
                indptr.end -= 8;
                SeenPlaces {
                    indptr,
                    indices: place(SEEN_INDICES, u32::DESCR, &[nnz as usize], 4),
                }
            }),
            ids: self.ids.as_ref().map(|[users, items]| {
                Box::new(IdsPlaces {
                    users: IdsPlace {
                        path: self.tmp.path().join(USER_IDS),
                        lines: users.clone(),
                    },
                    items: IdsPlace {
                        path: self.tmp.path().join(ITEM_IDS),
                        lines: items.clone(),
                    },
                })
            }),
        }
    }

    /// Read the rows written into the files into `users` and `items`
    /// (shaped as [`PendingModel::begin`] was told), checked finite as
    /// rows from a worker always are, checksumming every file in the same
    /// pass.
    pub fn read_rows_into(&mut self, users: &mut Factors, items: &mut Factors) -> Result<(), ModelError> {
        let found = RowsShape::of(users, items);
        if found != self.shape {
            return Err(ModelError::Invalid {
                problem: format!("rows shaped {found:?} read into a model shaped {:?}", self.shape),
            });
        }
        let ((user_rows, user_bias), (item_rows, item_bias)) = (users.parts_mut(), items.parts_mut());
        self.read_back([user_rows, item_rows, user_bias, item_bias].map(RowsDest::Into))?;
        self.rows_here = true;
        Ok(())
    }

    /// [`Self::read_rows_into`] where this process keeps no copy of the
    /// rows (the workers hold them): every file is checked and checksummed
    /// a chunk at a time, and the model is then finished from parts
    /// without rows ([`Self::finish_without_seen`]).
    pub fn check_rows_written(&mut self) -> Result<(), ModelError> {
        let s = self.shape;
        let bias = |n: usize| if s.biased { n } else { 0 };
        let dests = [s.n_users * s.k, s.n_items * s.k, bias(s.n_users), bias(s.n_items)].map(RowsDest::Nowhere);
        self.read_back(dests)?;
        self.rows_here = false;
        Ok(())
    }

    /// Read back every file written elsewhere, each file of rows into its
    /// `dests` (user rows, item rows, user biases, item biases).
    fn read_back(&mut self, dests: [RowsDest; 4]) -> Result<(), ModelError> {
        let mut entries = Vec::new();
        let mut dests = dests.into_iter();
        // The files in `files_written_elsewhere` order: factors, biases where there are any, then the seen matrix's.
        for (name, descr, dims, _) in files_written_elsewhere(self.shape, self.seen_nnz) {
            let path = self.tmp.path().join(name);
            let head = npy::header(descr, &dims);
            match name {
                // Read together below.
                SEEN_INDPTR | SEEN_INDICES => {}
                _ => entries.push(read_rows_file(
                    &path,
                    name,
                    &head,
                    dests.next().expect("a state part per file of rows"),
                )?),
            }
        }
        if let Some(nnz) = self.seen_nnz {
            entries.extend(check_seen_files(self.tmp.path(), self.shape, nnz)?);
        }
        if let Some([users, items]) = &self.ids {
            for (name, lines) in [(USER_IDS, users), (ITEM_IDS, items)] {
                entries.push(check_ids_file(&self.tmp.path().join(name), name, lines)?);
            }
        }
        self.read_back = entries;
        Ok(())
    }

    /// Write the rest of `model` and put the directory in place. The rows
    /// read back must be `model`'s, to the byte; rows never read back are
    /// written here from `model`.
    pub fn finish(self, model: &Model) -> Result<(), ModelError> {
        self.check_shape(&model.parts)?;
        if !self.read_back.is_empty() && !self.rows_here {
            return Err(ModelError::Invalid {
                problem: "the rows written elsewhere were only checked, not read: finish without the seen matrix".into(),
            });
        }
        write_all_files(
            &model.parts,
            (RowsFiles::WriteOrCheck, RowsFiles::WriteOrCheck),
            SeenFiles::Write(&model.parts.seen),
            self.tmp.path(),
            &self.read_back,
            None,
        )?;
        self.put_in_place()
    }

    /// [`Self::finish`] where the seen matrix is only in its files, written
    /// elsewhere and read back (checked as a seen matrix: this process holds
    /// none to compare them with); `parts.seen` is not used. Where the rows
    /// were only checked ([`Self::check_rows_written`]), `parts` holds no
    /// rows (none, or biases of none, where the model has them), and the
    /// files written elsewhere are the model's rows. Where the ids were
    /// written elsewhere too, `parts` holds none, and the rows must have
    /// been only checked: rows here would be rows without ids.
    pub fn finish_without_seen(self, parts: &ModelParts) -> Result<(), ModelError> {
        let nnz = match (self.seen_nnz, self.read_back.is_empty()) {
            (Some(nnz), false) => nnz,
            _ => {
                return Err(ModelError::Invalid {
                    problem: "the seen matrix was not written and read back: the model needs it".into(),
                })
            }
        };
        let rows = match self.rows_here {
            true => {
                parts.check_rows()?;
                RowsFiles::WriteOrCheck
            }
            false => {
                let no_rows = parts.user_factors.nrows() == 0
                    && parts.item_factors.nrows() == 0
                    && [&parts.user_bias, &parts.item_bias]
                        .iter()
                        .all(|b| b.as_ref().is_none_or(|b| b.is_empty()));
                if !no_rows {
                    return Err(ModelError::Invalid {
                        problem: "the rows were written elsewhere and only checked, but the model's parts hold rows too".into(),
                    });
                }
                RowsFiles::ReadBack
            }
        };
        let ids = match (self.ids.is_some(), rows) {
            (false, _) => RowsFiles::WriteOrCheck,
            (true, RowsFiles::ReadBack) if parts.user_ids.is_empty() && parts.item_ids.is_empty() => RowsFiles::ReadBack,
            (true, _) => {
                return Err(ModelError::Invalid {
                    problem: "the ids were written elsewhere, but the model's parts hold ids or rows".into(),
                })
            }
        };
        self.check_shape(parts)?;
        let shape = matches!(ids, RowsFiles::ReadBack).then_some(self.shape);
        write_all_files(
            parts,
            (rows, ids),
            SeenFiles::ReadBack(nnz as usize),
            self.tmp.path(),
            &self.read_back,
            shape,
        )?;
        self.put_in_place()
    }

    /// `parts` are shaped as begun (their ids counted, or, where written
    /// elsewhere, the shape begun taken for theirs).
    fn check_shape(&self, parts: &ModelParts) -> Result<(), ModelError> {
        validate(parts)?;
        let ids_elsewhere = self.ids.is_some() && parts.user_ids.is_empty() && parts.item_ids.is_empty();
        let found = RowsShape {
            n_users: if ids_elsewhere { self.shape.n_users } else { parts.user_ids.len() },
            n_items: if ids_elsewhere { self.shape.n_items } else { parts.item_ids.len() },
            k: parts.user_factors.ncols(),
            biased: parts.user_bias.is_some(),
        };
        if found != self.shape {
            return Err(ModelError::Invalid {
                problem: format!("a model shaped {found:?} saved where one shaped {:?} was begun", self.shape),
            });
        }
        Ok(())
    }

    fn put_in_place(self) -> Result<(), ModelError> {
        fail_point("rename new").map_err(io_at(&self.dir))?;
        crate::atomic::replace_dir(self.tmp, &self.dir)?;
        Ok(())
    }
}

/// The `.npy` files written elsewhere ([`PendingModel`]), with their
/// element types, shapes and bytes per element: the rows' (f32), and the
/// seen matrix's with `seen_nnz`.
fn files_written_elsewhere(s: RowsShape, seen_nnz: Option<u64>) -> Vec<(&'static str, &'static str, Vec<usize>, u64)> {
    let mut files = vec![
        (USER_FACTORS, f32::DESCR, vec![s.n_users, s.k], 4),
        (ITEM_FACTORS, f32::DESCR, vec![s.n_items, s.k], 4),
    ];
    if s.biased {
        files.push((USER_BIAS, f32::DESCR, vec![s.n_users], 4));
        files.push((ITEM_BIAS, f32::DESCR, vec![s.n_items], 4));
    }
    if let Some(nnz) = seen_nnz {
        files.push((SEEN_INDPTR, i64::DESCR, vec![s.n_users + 1], 8));
        files.push((SEEN_INDICES, u32::DESCR, vec![nnz as usize], 4));
    }
    files
}

/// The seen matrix's files in `tmp` (`nnz` entries over the shape's users
/// and items, as [`PendingModel::begin`] created them), checked as
/// [`Model::new`] checks a seen matrix: row pointers rising from 0 to
/// `nnz`, each row's items ascending, distinct and below the items' count.
/// Their model.json entries.
fn check_seen_files(tmp: &Path, shape: RowsShape, nnz: u64) -> Result<[FileEntry; 2], ModelError> {
    let n = shape.n_users;
    let (ptr_path, idx_path) = (tmp.join(SEEN_INDPTR), tmp.join(SEEN_INDICES));
    let mut r = HashReader::open_headed(&ptr_path, &npy::header(i64::DESCR, &[n + 1]))?;
    let mut indptr = vec![0i64; n + 1];
    r.read_exact(bytemuck::cast_slice_mut(&mut indptr)).map_err(io_at(&ptr_path))?;
    crate::le::fix_order(&mut indptr);
    let ptr_entry = r.entry_at_end(&ptr_path, SEEN_INDPTR, format!("{} row pointers", n + 1))?;
    let bad = |path: &Path, problem: String| ModelError::InvalidAt {
        path: path.to_path_buf(),
        problem,
    };
    if indptr[0] != 0 || indptr.windows(2).any(|w| w[0] > w[1]) || indptr[n] != nnz as i64 {
        return Err(bad(&ptr_path, format!("the row pointers do not rise from 0 to {nnz}")));
    }
    let mut r = HashReader::open_headed(&idx_path, &npy::header(u32::DESCR, &[nnz as usize]))?;
    // A chunk at a time, rows crossing chunks: only the previous item is kept.
    let (mut row, mut at, mut prev) = (0usize, 0i64, None::<u32>);
    let mut chunk = vec![0u32; 1 << 18];
    let mut left = nnz as usize;
    while left > 0 {
        let c = &mut chunk[..left.min(1 << 18)];
        r.read_exact(bytemuck::cast_slice_mut(c)).map_err(io_at(&idx_path))?;
        crate::le::fix_order(c);
        for &item in c.iter() {
            while indptr[row + 1] == at {
                row += 1;
                prev = None;
            }
            if item as usize >= shape.n_items || prev.is_some_and(|p| p >= item) {
                return Err(bad(
                    &idx_path,
                    format!("user row {row}'s items are not ascending, distinct and below {}", shape.n_items),
                ));
            }
            prev = Some(item);
            at += 1;
        }
        left -= c.len();
    }
    Ok([ptr_entry, r.entry_at_end(&idx_path, SEEN_INDICES, format!("{nnz} items"))?])
}

/// The ids file `path` (`name` in model.json) as written elsewhere at
/// `lines`, checked as it is read ([`check_id_lines`]); its entry.
fn check_ids_file(path: &Path, name: &str, lines: &IdLines) -> Result<FileEntry, ModelError> {
    let mut r = BufReader::with_capacity(1 << 16, HashReader::open(path)?);
    check_id_lines(&mut r, lines).map_err(|problem| ModelError::InvalidAt {
        path: path.to_path_buf(),
        problem,
    })?;
    Ok(r.into_inner().entry(name))
}

/// Read the rows of the f32 `.npy` file `path` (headed `head`, as
/// [`PendingModel::begin`] wrote it) into `dest`, which they must fill
/// exactly, every value finite; its entry for model.json.
fn read_rows_file(path: &Path, name: &str, head: &[u8], dest: RowsDest) -> Result<FileEntry, ModelError> {
    let mut r = HashReader::open_headed(path, head)?;
    let n = match &dest {
        RowsDest::Into(d) => d.len(),
        RowsDest::Nowhere(n) => *n,
    };
    let mut scratch = Vec::new();
    let (mut done, mut dest) = (0, dest);
    // Straight into the rows' memory (or through one chunk's buffer), a
    // chunk at a time so a bad value stops the read early.
    while done < n {
        let len = (n - done).min(1 << 18);
        let chunk: &mut [f32] = match &mut dest {
            RowsDest::Into(d) => &mut d[done..done + len],
            RowsDest::Nowhere(_) => {
                scratch.resize(len, 0.0);
                &mut scratch[..len]
            }
        };
        r.read_exact(bytemuck::cast_slice_mut(chunk)).map_err(io_at(path))?;
        crate::le::fix_order(chunk);
        if !all_finite(chunk) {
            return Err(ModelError::InvalidAt {
                path: path.to_path_buf(),
                problem: "a row written to it is not finite".into(),
            });
        }
        done += len;
    }
    r.entry_at_end(path, name, format!("{n} values"))
}

/// Where [`read_rows_file`] puts the values it checks: into a state's
/// rows, or nowhere (that many values, checked and checksummed only).
enum RowsDest<'a> {
    Into(&'a mut [f32]),
    Nowhere(usize),
}

/// Read `dir/name` through a hashing reader with `parse`, then check its
/// checksum against model.json (a mismatch wins over a parse error).
fn read_verified<T>(
    dir: &Path,
    entry: Option<&FileEntry>,
    name: &str,
    parse: impl FnOnce(&mut dyn Read, &Path) -> Result<T, ModelError>,
) -> Result<T, ModelError> {
    let path = dir.join(name);
    let entry = entry.ok_or_else(|| ModelError::BadJson {
        path: dir.join(MODEL_JSON),
        message: format!("the files list has no entry for {name}"),
    })?;
    let mut r = HashReader::open(&path)?;
    let parsed = parse(&mut r, &path);
    // Hash whatever the parser left unread.
    io::copy(&mut r, &mut io::sink()).map_err(io_at(&path))?;
    let found = hex(&r.hash.finalize());
    if !found.eq_ignore_ascii_case(&entry.sha256) {
        return Err(ModelError::Checksum {
            path,
            expected: entry.sha256.clone(),
            found,
        });
    }
    parsed
}

fn parse_npy<T: NpyElement>(r: &mut dyn Read, path: &Path, shape: &[usize]) -> Result<Vec<T>, ModelError> {
    let (s, data) = npy::read_npy_from::<T>(&mut &mut *r, path)?;
    npy::check_shape(path, &s, shape)?;
    Ok(data)
}

fn parse_ids(r: &mut dyn Read, path: &Path, n: usize) -> Result<Vec<String>, ModelError> {
    let mut text = String::new();
    r.read_to_string(&mut text).map_err(io_at(path))?;
    let ids: Vec<String> = if text.is_empty() {
        Vec::new()
    } else {
        match text.strip_suffix('\n') {
            Some(body) => body.split('\n').map(str::to_owned).collect(),
            None => {
                return Err(inconsistent(
                    path,
                    "one id per line, each ending with a newline",
                    "a last line without one",
                ))
            }
        }
    };
    if ids.len() != n {
        return Err(inconsistent(path, format!("{n} ids"), format!("{} lines", ids.len())));
    }
    Ok(ids)
}

/// Load and verify (sizes consistent; checksums in model.json match, else an error naming the file).
pub fn load_model(dir: &Path) -> Result<Model, ModelError> {
    let json_path = dir.join(MODEL_JSON);
    let text = fs::read(&json_path).map_err(io_at(&json_path))?;
    let bad_json = |message: String| ModelError::BadJson {
        path: json_path.clone(),
        message,
    };
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| bad_json(e.to_string()))?;
    let version = value.get("format_version").and_then(|v| v.as_u64());
    match version {
        Some(v) if v == MODEL_FORMAT_VERSION as u64 => {}
        Some(v) => {
            return Err(ModelError::UnsupportedVersion {
                path: json_path,
                found: v,
                supported: MODEL_FORMAT_VERSION,
            })
        }
        None => return Err(bad_json("no integer 'format_version'".into())),
    }
    let meta: ModelJson = serde_json::from_value(value).map_err(|e| bad_json(e.to_string()))?;
    let (nu, ni, k) = (meta.n_users, meta.n_items, meta.factors);
    let entry = |name: &str| meta.files.iter().find(|f| f.name == name);
    if let Some(f) = meta.files.iter().find(|f| !DATA_FILES.contains(&f.name.as_str())) {
        return Err(bad_json(format!("unknown file '{}' in the files list", f.name)));
    }

    let uf = read_verified(dir, entry(USER_FACTORS), USER_FACTORS, |r, p| parse_npy::<f32>(r, p, &[nu, k]))?;
    let itf = read_verified(dir, entry(ITEM_FACTORS), ITEM_FACTORS, |r, p| parse_npy::<f32>(r, p, &[ni, k]))?;
    let user_bias = match entry(USER_BIAS) {
        Some(e) => Some(read_verified(dir, Some(e), USER_BIAS, |r, p| parse_npy::<f32>(r, p, &[nu]))?),
        None => None,
    };
    let item_bias = match entry(ITEM_BIAS) {
        Some(e) => Some(read_verified(dir, Some(e), ITEM_BIAS, |r, p| parse_npy::<f32>(r, p, &[ni]))?),
        None => None,
    };
    let user_ids = read_verified(dir, entry(USER_IDS), USER_IDS, |r, p| parse_ids(r, p, nu))?;
    let item_ids = read_verified(dir, entry(ITEM_IDS), ITEM_IDS, |r, p| parse_ids(r, p, ni))?;
    let indptr_path = dir.join(SEEN_INDPTR);
    let indptr = read_verified(dir, entry(SEEN_INDPTR), SEEN_INDPTR, |r, p| parse_npy::<i64>(r, p, &[nu + 1]))?;
    let indptr: Vec<usize> = indptr
        .iter()
        .map(|&x| usize::try_from(x))
        .collect::<Result<_, _>>()
        .map_err(|_| inconsistent(&indptr_path, "non-negative offsets", "a negative offset"))?;
    let nnz = *indptr.last().unwrap_or(&0);
    if let Some(m) = meta.nnz_seen {
        if m != nnz {
            return Err(inconsistent(&indptr_path, format!("{m} seen entries (model.json)"), nnz));
        }
    }
    let indices = read_verified(dir, entry(SEEN_INDICES), SEEN_INDICES, |r, p| parse_npy::<u32>(r, p, &[nnz]))?;
    let seen = Csr {
        n_cols: ni,
        indptr,
        values: vec![1.0; indices.len()],
        indices,
    };

    let shape_err = |e: ndarray::ShapeError| bad_json(e.to_string());
    let parts = ModelParts {
        kind: meta.kind,
        user_ids,
        item_ids,
        user_factors: Array2::from_shape_vec((nu, k), uf).map_err(shape_err)?,
        item_factors: Array2::from_shape_vec((ni, k), itf).map_err(shape_err)?,
        user_bias,
        item_bias,
        global_mean: meta.global_mean as f32,
        rating_range: meta.rating_range.map(|(a, b)| (a as f32, b as f32)),
        seen,
        hyperparameters: meta.hyperparameters,
        data_fingerprint: meta.data_fingerprint,
        metrics: meta.metrics,
        version: meta.version,
    };
    Model::new(parts).map_err(|e| match e {
        ModelError::Invalid { problem } => ModelError::InvalidAt {
            path: dir.to_path_buf(),
            problem,
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::random_model;

    /// A reader never finds the model directory missing or partial while it
    /// is replaced (`--out m --overwrite`): the swap is one step.
    #[test]
    fn overwriting_never_leaves_the_directory_empty() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("m");
        let m = random_model(ModelKind::Implicit, 30, 20, 4, 7);
        save_model(&m, &dir, false).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut misses = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if !dir.join(MODEL_JSON).is_file() {
                        misses += 1;
                    }
                }
                misses
            })
        };
        for _ in 0..100 {
            save_model(&m, &dir, true).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(watcher.join().unwrap(), 0, "the model directory was seen missing");
        assert_eq!(load_model(&dir).unwrap(), m);
        assert_eq!(others(parent.path(), &["m"]), Vec::<String>::new());
    }

    fn bits(a: &Array2<f32>) -> Vec<u32> {
        a.iter().map(|x| x.to_bits()).collect()
    }

    /// Entries of `parent` other than `keep` (temporary directories left behind show up here).
    fn others(parent: &Path, keep: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !keep.contains(&n.as_str()))
            .collect();
        v.sort();
        v
    }

    fn assert_same(a: &Model, b: &Model) {
        assert_eq!(a, b);
        assert_eq!(bits(a.user_factors()), bits(b.user_factors()));
        assert_eq!(bits(a.item_factors()), bits(b.item_factors()));
        let bb = |v: Option<&[f32]>| v.map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        assert_eq!(bb(a.user_bias()), bb(b.user_bias()));
        assert_eq!(bb(a.item_bias()), bb(b.item_bias()));
        assert_eq!(a.global_mean().to_bits(), b.global_mean().to_bits());
    }

    #[test]
    fn round_trip_bit_for_bit() {
        let root = tempfile::tempdir().unwrap();
        for (j, kind) in [ModelKind::Explicit, ModelKind::Implicit].into_iter().enumerate() {
            let mut m = random_model(kind, 9, 13, 5, 21 + j as u64).into_parts();
            // Awkward values: subnormal, -0.0, a mean that is not a short decimal, odd ids.
            m.user_factors[[0, 0]] = f32::from_bits(1);
            m.user_factors[[1, 1]] = -0.0;
            m.global_mean = if kind == ModelKind::Explicit { 0.1f32 + 1e-7 } else { 0.0 };
            m.rating_range = Some((0.1, 1.0 / 3.0));
            m.user_ids[2] = String::new();
            m.user_ids[3] = " spaced\tid é ".into();
            // A non-standard layout must be saved in C order.
            m.item_factors = m.item_factors.t().to_owned().reversed_axes();
            let m = Model::new(m).unwrap();
            let dir = root.path().join(format!("m{j}"));
            save_model(&m, &dir, false).unwrap();
            let l = load_model(&dir).unwrap();
            assert_same(&m, &l);
            assert_eq!(l.user_index(" spaced\tid é "), Some(3));
            let names = others(&dir, &[]);
            assert!(names.contains(&"model.json".to_string()) && names.contains(&"seen_indices.npy".to_string()));
            assert_eq!(names.iter().any(|n| n.ends_with("bias.npy")), kind == ModelKind::Explicit);
        }
        assert_eq!(
            others(root.path(), &["m0", "m1"]),
            Vec::<String>::new(),
            "temporary directories left behind"
        );
    }

    #[test]
    fn model_json_fields() {
        let root = tempfile::tempdir().unwrap();
        let m = random_model(ModelKind::Explicit, 3, 4, 2, 1);
        let dir = root.path().join("m");
        save_model(&m, &dir, false).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("model.json")).unwrap()).unwrap();
        assert_eq!(v["format_version"], 1);
        assert_eq!(v["kind"], "explicit");
        assert_eq!(
            (v["factors"].as_u64(), v["n_users"].as_u64(), v["n_items"].as_u64()),
            (Some(2), Some(3), Some(4))
        );
        assert_eq!(v["version"], 3);
        assert!(v["created_unix"].as_u64().unwrap() > 1_600_000_000);
        let files = v["files"].as_array().unwrap();
        assert_eq!(files.len(), 8);
        for f in files {
            let name = f["name"].as_str().unwrap();
            let data = fs::read(dir.join(name)).unwrap();
            assert_eq!(f["sha256"].as_str().unwrap(), hex(&Sha256::digest(&data)));
            assert_eq!(f["bytes"].as_u64().unwrap(), data.len() as u64);
        }
        assert_eq!(fs::read_to_string(dir.join("user_ids.txt")).unwrap(), "u0\nu1\nu2\n");
        // Factors start at a 64-byte boundary, as numpy.save writes them.
        let uf = fs::read(dir.join("user_factors.npy")).unwrap();
        assert_eq!((uf.len() - 3 * 2 * 4) % 64, 0);
    }

    #[test]
    fn exists_overwrite_and_refusals() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model");
        let a = random_model(ModelKind::Implicit, 4, 6, 3, 1);
        let b = random_model(ModelKind::Explicit, 5, 7, 2, 2);
        save_model(&a, &dir, false).unwrap();
        let e = save_model(&b, &dir, false).unwrap_err();
        assert!(matches!(e, ModelError::Exists { .. }), "{e}");
        assert!(e.to_string().contains("--overwrite"), "{e}");
        assert_same(&load_model(&dir).unwrap(), &a);
        save_model(&b, &dir, true).unwrap();
        assert_same(&load_model(&dir).unwrap(), &b);
        assert!(!dir.join("user_bias.npy").exists() || b.user_bias().is_some());
        // Overwriting with a model without biases leaves no stale bias file.
        save_model(&a, &dir, true).unwrap();
        assert!(!dir.join("user_bias.npy").exists());
        assert_eq!(others(root.path(), &["model"]), Vec::<String>::new());

        // A directory that is not a model is never replaced.
        let other = root.path().join("precious");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("notes.txt"), "keep me").unwrap();
        let e = save_model(&a, &other, true).unwrap_err();
        assert!(matches!(e, ModelError::NotAModelDir { .. }), "{e}");
        assert_eq!(fs::read_to_string(other.join("notes.txt")).unwrap(), "keep me");
        // An empty directory may be replaced.
        let empty = root.path().join("empty");
        fs::create_dir(&empty).unwrap();
        save_model(&a, &empty, true).unwrap();
        // Ids with line breaks are refused before anything is written.
        let mut bad = a.clone().into_parts();
        bad.item_ids[1] = "x\r".into();
        let bad = Model::new(bad).unwrap();
        let e = save_model(&bad, &root.path().join("bad"), false).unwrap_err();
        assert!(matches!(e, ModelError::BadId { which: "item", row: 1, .. }), "{e}");
        assert_eq!(others(root.path(), &["model", "precious", "empty"]), Vec::<String>::new());
        // A parent that doesn't exist yet is created.
        let nested = root.path().join("a/b/c");
        save_model(&a, &nested, false).unwrap();
        assert_same(&load_model(&nested).unwrap(), &a);
    }

    fn fail_at(step: Option<&str>) {
        FAIL_AT.with(|f| *f.borrow_mut() = step.map(str::to_owned));
    }

    #[test]
    fn failures_leave_no_temporary_directory_and_keep_the_old_model() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("model");
        let a = random_model(ModelKind::Implicit, 4, 6, 3, 1);
        let b = random_model(ModelKind::Explicit, 5, 7, 2, 2);
        // Failing in the middle of a fresh save: no model, no temporary directory.
        for step in ["user_factors.npy", "seen_indices.npy", "model.json"] {
            fail_at(Some(step));
            let e = save_model(&a, &dir, false).unwrap_err();
            fail_at(None);
            let chain = std::iter::successors(Some(&e as &dyn std::error::Error), |x| x.source())
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(": ");
            assert!(chain.contains("injected failure"), "{chain}");
            assert_eq!(others(root.path(), &[]), Vec::<String>::new(), "after a failure at {step}");
        }
        save_model(&a, &dir, false).unwrap();
        // Failing while replacing: the old model stays whole, nothing else remains.
        for step in ["item_ids.txt", "model.json", "rename new"] {
            fail_at(Some(step));
            assert!(save_model(&b, &dir, true).is_err());
            fail_at(None);
            assert_same(&load_model(&dir).unwrap(), &a);
            assert_eq!(others(root.path(), &["model"]), Vec::<String>::new(), "after a failure at {step}");
        }
        // A file where the model should go is not a model directory: refused, nothing left behind.
        let f = root.path().join("file");
        fs::write(&f, "x").unwrap();
        assert!(matches!(save_model(&a, &f, true), Err(ModelError::NotAModelDir { .. })));
        assert_eq!(others(root.path(), &["model", "file"]), Vec::<String>::new());
    }

    #[test]
    fn corruption_and_bad_metadata_are_detected() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("m");
        let m = random_model(ModelKind::Explicit, 6, 8, 4, 3);
        save_model(&m, &dir, false).unwrap();
        let uf = dir.join("user_factors.npy");
        let orig = fs::read(&uf).unwrap();

        // Flip one byte of the data.
        let mut c = orig.clone();
        let last = c.len() - 5;
        c[last] ^= 0x01;
        fs::write(&uf, &c).unwrap();
        let e = load_model(&dir).unwrap_err();
        assert!(matches!(e, ModelError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("user_factors.npy"), "{e}");
        // Flip a byte of the header: still reported as a checksum error, naming the file.
        let mut c = orig.clone();
        c[20] ^= 0x20;
        fs::write(&uf, &c).unwrap();
        let e = load_model(&dir).unwrap_err();
        assert!(
            matches!(e, ModelError::Checksum { .. }) && e.to_string().contains("user_factors.npy"),
            "{e}"
        );
        // Truncated.
        fs::write(&uf, &orig[..orig.len() - 4]).unwrap();
        assert!(matches!(load_model(&dir), Err(ModelError::Checksum { .. })));
        fs::write(&uf, &orig).unwrap();
        load_model(&dir).unwrap();

        // Missing file.
        let ids = dir.join("item_ids.txt");
        let ids_text = fs::read(&ids).unwrap();
        fs::remove_file(&ids).unwrap();
        let e = load_model(&dir).unwrap_err();
        assert!(matches!(e, ModelError::Io { .. }) && e.to_string().contains("item_ids.txt"), "{e}");
        fs::write(&ids, &ids_text).unwrap();

        // model.json: inconsistent sizes, unsupported version, garbage.
        let jp = dir.join("model.json");
        let json = fs::read_to_string(&jp).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["n_users"] = 7.into();
        fs::write(&jp, serde_json::to_string(&v).unwrap()).unwrap();
        let e = load_model(&dir).unwrap_err();
        assert!(
            e.to_string().contains("user_factors.npy") && e.to_string().contains("[7, 4]"),
            "{e}"
        );
        v["n_users"] = 6.into();
        v["format_version"] = 2.into();
        fs::write(&jp, serde_json::to_string(&v).unwrap()).unwrap();
        assert!(matches!(load_model(&dir), Err(ModelError::UnsupportedVersion { found: 2, .. })));
        fs::write(&jp, "{ not json").unwrap();
        let e = load_model(&dir).unwrap_err();
        assert!(
            matches!(e, ModelError::BadJson { .. }) && e.to_string().contains("model.json"),
            "{e}"
        );
        fs::write(&jp, &json).unwrap();
        assert_same(&load_model(&dir).unwrap(), &m);
        assert!(matches!(load_model(&root.path().join("nope")), Err(ModelError::Io { .. })));
    }

    /// Rows written at [`PendingModel::places`] by pieces, in any order (as
    /// workers write their blocks), read back and finished: the same
    /// directory as [`save_model`]'s, to the byte; rows that are not the
    /// model's, or not finite, are refused by file.
    #[test]
    fn rows_written_elsewhere_make_the_saved_models_bytes() {
        use crate::row_places::write_le_at;
        let root = tempfile::tempdir().unwrap();
        for kind in [ModelKind::Explicit, ModelKind::Implicit] {
            let m = random_model(kind, 13, 7, 3, 11);
            let shape = RowsShape {
                n_users: 13,
                n_items: 7,
                k: 3,
                biased: m.user_bias().is_some(),
            };
            // The seen matrix written elsewhere too for one kind, here for the other.
            let seen_nnz = (kind == ModelKind::Explicit).then_some(m.seen().indices.len() as u64);
            // Two blocks per part, the second written first: the rows of `of`, the seen matrix of `m`.
            let write = |pending: &PendingModel, of: &Model| {
                let p = pending.places();
                assert_eq!(p.seen.is_some(), seen_nnz.is_some());
                if let Some(seen) = &p.seen {
                    let indptr: Vec<i64> = m.seen().indptr[..13].iter().map(|&x| x as i64).collect();
                    let mut f = fs::OpenOptions::new().write(true).open(&seen.indptr.path).unwrap();
                    write_le_at(&mut f, seen.indptr.at + 6 * 8, &indptr[6..]).unwrap();
                    write_le_at(&mut f, seen.indptr.at, &indptr[..6]).unwrap();
                    assert_eq!(seen.indptr.end, seen.indptr.at + 13 * 8);
                    let mut f = fs::OpenOptions::new().write(true).open(&seen.indices.path).unwrap();
                    write_le_at(&mut f, seen.indices.at, &m.seen().indices).unwrap();
                    assert_eq!(f.metadata().unwrap().len(), seen.indices.end);
                }
                let parts: Vec<(&RowsPlace, &[f32], usize)> = [
                    (Some(&p.user_rows), of.user_factors().as_slice(), 3),
                    (Some(&p.item_rows), of.item_factors().as_slice(), 3),
                    (p.user_bias.as_ref(), of.user_bias(), 1),
                    (p.item_bias.as_ref(), of.item_bias(), 1),
                ]
                .into_iter()
                .filter_map(|(place, v, w)| Some((place?, v.expect("standard layout, or biased"), w)))
                .collect();
                assert_eq!(parts.len(), if shape.biased { 4 } else { 2 });
                for (place, values, width) in parts {
                    let mut f = fs::OpenOptions::new().write(true).open(&place.path).unwrap();
                    let cut = (values.len() / width / 2) * width;
                    write_le_at(&mut f, place.at + cut as u64 * 4, &values[cut..]).unwrap();
                    write_le_at(&mut f, place.at, &values[..cut]).unwrap();
                    assert_eq!(f.metadata().unwrap().len(), place.end);
                }
            };
            let want = root.path().join(format!("saved-{kind:?}"));
            save_model(&m, &want, false).unwrap();
            let got = root.path().join(format!("pending-{kind:?}"));
            let mut pending = PendingModel::begin(&got, false, shape, seen_nnz, None).unwrap();
            write(&pending, &m);
            let (mut users, mut items) = (
                Factors {
                    matrix: Array2::zeros((13, 3)),
                    bias: vec![0.0; if shape.biased { 13 } else { 0 }],
                },
                Factors {
                    matrix: Array2::zeros((7, 3)),
                    bias: vec![0.0; if shape.biased { 7 } else { 0 }],
                },
            );
            pending.read_rows_into(&mut users, &mut items).unwrap();
            assert_eq!(&users.matrix, m.user_factors());
            assert_eq!(items.bias, m.item_bias().unwrap_or(&[]));
            pending.finish(&m).unwrap();
            for name in DATA_FILES {
                let (a, b) = (fs::read(want.join(name)).ok(), fs::read(got.join(name)).ok());
                assert!(a == b, "{kind:?}: {name} differs");
            }
            let files =
                |d: &Path| serde_json::from_slice::<serde_json::Value>(&fs::read(d.join(MODEL_JSON)).unwrap()).unwrap()["files"].clone();
            assert_eq!(files(&want), files(&got));
            assert_same(&load_model(&got).unwrap(), &m);

            // Rows other than the model's: finishing is refused, naming the file.
            let other = random_model(kind, 13, 7, 3, 12);
            let bad = root.path().join(format!("bad-{kind:?}"));
            let mut pending = PendingModel::begin(&bad, false, shape, seen_nnz, None).unwrap();
            write(&pending, &other);
            pending.read_rows_into(&mut users, &mut items).unwrap();
            let e = pending.finish(&m).unwrap_err().to_string();
            assert!(e.contains(USER_FACTORS) && e.contains("not the model's"), "{e}");
            assert!(!bad.exists(), "nothing is put in place");
            // A row that is not finite: refused as it is read.
            let mut pending = PendingModel::begin(&bad, false, shape, seen_nnz, None).unwrap();
            write(&pending, &m);
            let p = pending.places().item_rows;
            write_le_at(
                &mut fs::OpenOptions::new().write(true).open(&p.path).unwrap(),
                p.at + 8,
                &[f32::NAN],
            )
            .unwrap();
            let e = pending.read_rows_into(&mut users, &mut items).unwrap_err().to_string();
            assert!(e.contains(ITEM_FACTORS) && e.contains("not finite"), "{e}");
            drop(pending);
            // Without the seen matrix in memory: the seen files written elsewhere, checked as read.
            let mut parts = m.clone().into_parts();
            parts.seen = Csr::default();
            let lean = root.path().join(format!("lean-{kind:?}"));
            let mut pending = PendingModel::begin(&lean, false, shape, seen_nnz, None).unwrap();
            write(&pending, &m);
            pending.read_rows_into(&mut users, &mut items).unwrap();
            match seen_nnz {
                Some(_) => {
                    pending.finish_without_seen(&parts).unwrap();
                    for name in DATA_FILES {
                        let (a, b) = (fs::read(want.join(name)).ok(), fs::read(lean.join(name)).ok());
                        assert!(a == b, "{kind:?}: {name} differs");
                    }
                    assert_eq!(files(&want), files(&lean));
                    assert_same(&load_model(&lean).unwrap(), &m);
                    // A user's items out of order, or past the items: refused as read, by file name.
                    for (at, item) in [(1u64, m.seen().indices[0]), (0, 7)] {
                        let mut pending = PendingModel::begin(&bad, false, shape, seen_nnz, None).unwrap();
                        write(&pending, &m);
                        let p = pending.places().seen.unwrap().indices;
                        let row0 = m.seen().indptr[1] as u64;
                        assert!(row0 >= 2, "user row 0 has two items");
                        write_le_at(
                            &mut fs::OpenOptions::new().write(true).open(&p.path).unwrap(),
                            p.at + at * 4,
                            &[item],
                        )
                        .unwrap();
                        let e = pending.read_rows_into(&mut users, &mut items).unwrap_err().to_string();
                        assert!(e.contains(SEEN_INDICES) && e.contains("user row 0"), "{e}");
                    }
                }
                None => {
                    let e = pending.finish_without_seen(&parts).unwrap_err().to_string();
                    assert!(e.contains("seen matrix was not written"), "{e}");
                    assert!(!lean.exists(), "nothing is put in place");
                }
            }
            assert_eq!(
                others(root.path(), &[]).iter().filter(|n| n.starts_with('.')).count(),
                0,
                "no temporary is left"
            );
        }
    }

    /// The ids written elsewhere too, each block's lines at their bytes
    /// (as workers that keep their blocks' ids write them), with the rows
    /// and the seen matrix only checked: finished from parts holding none
    /// of them, the same directory as [`save_model`]'s, to the byte. Ids
    /// out of order are refused as read, naming the file; parts holding ids
    /// beside ids written elsewhere are refused.
    #[test]
    fn ids_written_elsewhere_make_the_saved_models_bytes() {
        use super::super::id_lines::placed;
        use crate::data::ids::dense_order;
        use crate::row_places::write_le_at;
        let root = tempfile::tempdir().unwrap();
        let mut parts = random_model(ModelKind::Explicit, 13, 7, 3, 11).into_parts();
        let user_names: Vec<String> = (0..13).map(|u| (u * 101).to_string()).collect();
        let item_names: Vec<String> = (0..7).map(|i| format!("item {i}")).collect();
        parts.user_ids = dense_order(user_names.iter().map(String::as_str).collect());
        parts.item_ids = dense_order(item_names.iter().map(String::as_str).collect());
        let m = Model::new(parts).unwrap();
        let want = root.path().join("saved");
        save_model(&m, &want, false).unwrap();
        let shape = RowsShape {
            n_users: 13,
            n_items: 7,
            k: 3,
            biased: true,
        };
        let nnz = m.seen().indices.len() as u64;
        let (user_text, user_lines) = placed(m.user_ids(), 2);
        let (item_text, item_lines) = placed(m.item_ids(), 3);
        let open = |path: &Path| fs::OpenOptions::new().write(true).open(path).unwrap();
        // Everything the workers write, the ids a block at a time, the last block first.
        let write = |pending: &PendingModel, user_text: &[u8]| {
            let p = pending.places();
            let seen = p.seen.as_ref().unwrap();
            let indptr: Vec<i64> = m.seen().indptr[..13].iter().map(|&x| x as i64).collect();
            write_le_at(&mut open(&seen.indptr.path), seen.indptr.at, &indptr).unwrap();
            write_le_at(&mut open(&seen.indices.path), seen.indices.at, &m.seen().indices).unwrap();
            for (place, values) in [
                (&p.user_rows, m.user_factors().as_slice().unwrap()),
                (&p.item_rows, m.item_factors().as_slice().unwrap()),
                (p.user_bias.as_ref().unwrap(), m.user_bias().unwrap()),
                (p.item_bias.as_ref().unwrap(), m.item_bias().unwrap()),
            ] {
                write_le_at(&mut open(&place.path), place.at, values).unwrap();
            }
            let ids = p.ids.as_ref().unwrap();
            for (place, text) in [(&ids.users, user_text), (&ids.items, &item_text[..])] {
                let mut f = open(&place.path);
                let b = &place.lines.bytes;
                assert_eq!(f.metadata().unwrap().len(), b[b.len() - 1], "created at its full length");
                for blk in (0..b.len() - 1).rev() {
                    use std::io::{Seek, SeekFrom};
                    f.seek(SeekFrom::Start(b[blk])).unwrap();
                    f.write_all(&text[b[blk] as usize..b[blk + 1] as usize]).unwrap();
                }
            }
        };
        let begin = |dir: &Path| {
            let ids = Some([user_lines.clone(), item_lines.clone()]);
            PendingModel::begin(dir, false, shape, Some(nnz), ids).unwrap()
        };
        let mut lean = m.clone().into_parts();
        lean.user_ids = Vec::new();
        lean.item_ids = Vec::new();
        lean.user_factors = Array2::zeros((0, 3));
        lean.item_factors = Array2::zeros((0, 3));
        lean.user_bias = Some(Vec::new());
        lean.item_bias = Some(Vec::new());
        lean.seen = Csr::default();
        let got = root.path().join("pending");
        let mut pending = begin(&got);
        write(&pending, &user_text);
        pending.check_rows_written().unwrap();
        pending.finish_without_seen(&lean).unwrap();
        for name in DATA_FILES {
            let (a, b) = (fs::read(want.join(name)).ok(), fs::read(got.join(name)).ok());
            assert!(a == b, "{name} differs");
        }
        let files =
            |d: &Path| serde_json::from_slice::<serde_json::Value>(&fs::read(d.join(MODEL_JSON)).unwrap()).unwrap()["files"].clone();
        assert_eq!(files(&want), files(&got));
        assert_same(&load_model(&got).unwrap(), &m);

        // Two users of one bucket swapped: refused as read, by file name.
        let ids = m.user_ids();
        let at = (1..13).find(|&i| crate::data::ids::id_bucket(&ids[i]) == crate::data::ids::id_bucket(&ids[i - 1]));
        let mut swapped = ids.to_vec();
        match at {
            Some(i) => swapped.swap(i - 1, i),
            // No two share a bucket: the first two of the first block, swapped, are out of bucket order.
            None => swapped.swap(0, 1),
        }
        let bad = root.path().join("bad");
        let mut pending = begin(&bad);
        write(&pending, &placed(&swapped, 2).0);
        let e = pending.check_rows_written().unwrap_err().to_string();
        assert!(e.contains(USER_IDS), "{e}");
        drop(pending);
        // Ids both written elsewhere and in the parts: which are the model's?
        let mut pending = begin(&bad);
        write(&pending, &user_text);
        pending.check_rows_written().unwrap();
        let mut with_ids = lean.clone();
        with_ids.user_ids = m.user_ids().to_vec();
        with_ids.item_ids = m.item_ids().to_vec();
        let e = pending.finish_without_seen(&with_ids).unwrap_err().to_string();
        assert!(e.contains("ids were written elsewhere"), "{e}");
        assert!(!bad.exists(), "nothing is put in place");
    }
}
