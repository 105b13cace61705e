//! Checkpoints of a training run: the two factor matrices and the iteration
//! count, tied to the data and hyperparameters, written atomically with a
//! checksum so a crash never leaves a half-written checkpoint in use.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::row_places::{write_le_at, RowPlaces, RowsPlace, RowsShape};
use crate::side::Factors;
use crate::train::{TrainConfig, TrainState};

const MAGIC: &[u8; 8] = b"ALSCKPT1";
const KEEP: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The OS cause is part of the message, so it is shown however the error is printed.
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: std::io::Error },
    #[error(transparent)]
    Output(#[from] crate::atomic::AtomicError),
    #[error("{}: {problem}", dir.display())]
    Unusable { dir: PathBuf, problem: String },
    #[error("{path}: corrupt checkpoint: {problem}")]
    Corrupt { path: PathBuf, problem: String },
    #[error("{path}: checkpoint belongs to another run: {problem}; remove it or train without --resume")]
    Mismatch { path: PathBuf, problem: String },
    #[error("{dir}: no valid checkpoint to resume from")]
    NoneFound { dir: PathBuf },
}

/// What a checkpoint must match to be resumed: the data and every setting
/// that changes the result (the iteration count may grow).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSignature {
    pub data_fingerprint: String,
    pub settings: String,
}

impl RunSignature {
    pub fn new(data_fingerprint: &str, cfg: &TrainConfig) -> Self {
        let mut c = cfg.clone();
        c.iterations = 0;
        c.eval_every = 0;
        // Reporting only: a run resumes whatever it reports.
        c.objective_every = crate::train::DEFAULT_OBJECTIVE_EVERY;
        RunSignature {
            data_fingerprint: data_fingerprint.to_owned(),
            settings: serde_json::to_string(&c).expect("config serializes"),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    signature: RunSignature,
    iterations_done: usize,
    n_users: usize,
    n_items: usize,
    k: usize,
    biased: bool,
}

impl Header {
    /// The bytes of the rows its shape gives (`None` past `u64`: no file holds them).
    fn rows_bytes(&self) -> Option<u64> {
        let rows = (self.n_users as u64).checked_add(self.n_items as u64)?;
        let factors = rows.checked_mul(self.k as u64)?.checked_mul(4)?;
        factors.checked_add(if self.biased { rows.checked_mul(4)? } else { 0 })
    }

    fn shape(&self) -> RowsShape {
        RowsShape {
            n_users: self.n_users,
            n_items: self.n_items,
            k: self.k,
            biased: self.biased,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |cause| CheckpointError::Io {
        path: path.to_owned(),
        cause,
    }
}

/// Check before training that checkpoints can be written to `dir`: it is
/// (or can be created as) a directory this process can write in.
pub fn check_checkpoint_dir(dir: &Path) -> Result<(), CheckpointError> {
    let unusable = |problem: String| CheckpointError::Unusable {
        dir: dir.to_path_buf(),
        problem,
    };
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(unusable("exists and is not a directory".into())),
        Ok(_) => {}
        Err(_) => std::fs::create_dir_all(dir).map_err(|e| unusable(format!("cannot create it: {e}")))?,
    }
    // Writable: a probe file, removed at once.
    tempfile::Builder::new()
        .prefix(".write-probe-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| unusable(format!("cannot write in it: {e}")))
}

/// Write `checkpoint-NNNNNN.als` into `dir` atomically and keep the newest two.
pub fn write_checkpoint(dir: &Path, sig: &RunSignature, state: &TrainState) -> Result<PathBuf, CheckpointError> {
    let (users, items) = (&state.users, &state.items);
    let mut pending = PendingCheckpoint::begin(dir, sig, state.iterations_done, RowsShape::of(users, items))?;
    let at = pending.at;
    let path = pending.tmp.path().to_owned();
    let f = pending.tmp.as_file_mut();
    for (offset, values) in [
        (at.user_rows, users.flat()),
        (at.item_rows, items.flat()),
        (at.user_bias, &users.bias[..]),
        (at.item_bias, &items.bias[..]),
    ] {
        write_le_at(f, offset, values).map_err(io(&path))?;
    }
    pending.finish()
}

/// Where each part of a checkpoint's rows starts in its file (bytes); a
/// side's row `r` is at `rows + r·k·4`, its bias at `bias + r·4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowsAt {
    user_rows: u64,
    item_rows: u64,
    user_bias: u64,
    item_bias: u64,
    /// The end of the rows: where the checksum goes.
    end: u64,
}

impl RowsAt {
    /// The layout after a `head_len`-byte header: user rows, item rows, then
    /// the biases where the model has them.
    fn new(head_len: u64, shape: RowsShape) -> RowsAt {
        let (nu, ni, k) = (shape.n_users as u64, shape.n_items as u64, shape.k as u64);
        let biases = |n: u64| if shape.biased { n * 4 } else { 0 };
        let user_rows = head_len;
        let item_rows = user_rows + nu * k * 4;
        let user_bias = item_rows + ni * k * 4;
        let item_bias = user_bias + biases(nu);
        RowsAt {
            user_rows,
            item_rows,
            user_bias,
            item_bias,
            end: item_bias + biases(ni),
        }
    }

    /// Every part's place in the file at `path`.
    fn places(self, path: &Path) -> RowPlaces {
        let place = |from: u64| RowsPlace {
            path: path.to_owned(),
            at: from,
            end: self.end,
        };
        let biased = self.end > self.user_bias;
        RowPlaces {
            user_rows: place(self.user_rows),
            item_rows: place(self.item_rows),
            user_bias: biased.then(|| place(self.user_bias)),
            item_bias: biased.then(|| place(self.item_bias)),
            seen: None,
            ids: None,
        }
    }
}

/// A checkpoint being written: its header in a temporary file beside the
/// final name, at its full length, for its rows to be written at
/// [`PendingCheckpoint::places`] by whoever holds them (this process, or
/// the workers where they can reach the directory);
/// [`PendingCheckpoint::finish`] checksums it and puts it in place.
/// Dropped unfinished, the temporary is removed.
pub struct PendingCheckpoint {
    tmp: tempfile::NamedTempFile,
    dir: PathBuf,
    name: String,
    iterations_done: usize,
    at: RowsAt,
}

impl PendingCheckpoint {
    pub fn begin(dir: &Path, sig: &RunSignature, iterations_done: usize, shape: RowsShape) -> Result<PendingCheckpoint, CheckpointError> {
        use std::io::Write;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let header = Header {
            signature: sig.clone(),
            iterations_done,
            n_users: shape.n_users,
            n_items: shape.n_items,
            k: shape.k,
            biased: shape.biased,
        };
        let h = serde_json::to_vec(&header).expect("header serializes");
        let name = format!("checkpoint-{iterations_done:06}.als");
        crate::atomic::remove_stale_temporaries(dir, &name);
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-{}-", std::process::id()))
            .tempfile_in(dir)
            .map_err(io(dir))?;
        let tmp_path = tmp.path().to_owned();
        let f = tmp.as_file_mut();
        let mut head = Vec::with_capacity(16 + h.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(h.len() as u64).to_le_bytes());
        head.extend_from_slice(&h);
        f.write_all(&head).map_err(io(&tmp_path))?;
        let at = RowsAt::new(head.len() as u64, shape);
        f.set_len(at.end).map_err(io(&tmp_path))?;
        Ok(PendingCheckpoint {
            tmp,
            dir: dir.to_owned(),
            name,
            iterations_done,
            at,
        })
    }

    /// Where the rows go in the temporary file: every part in the one file.
    pub fn places(&self) -> RowPlaces {
        self.at.places(self.tmp.path())
    }

    /// Checksum what was written, put the checkpoint in place and keep the newest two.
    pub fn finish(mut self) -> Result<PathBuf, CheckpointError> {
        let sum = self.read_back(None)?;
        self.seal(&sum)
    }

    /// [`Self::finish`], reading the rows written elsewhere (by the workers)
    /// into `users` and `items` in the same pass: they are the checkpoint's
    /// state then, checked finite as rows from a worker always are.
    pub fn finish_into(mut self, users: &mut Factors, items: &mut Factors) -> Result<PathBuf, CheckpointError> {
        let sum = self.read_back(Some((users, items)))?;
        self.seal(&sum)
    }

    /// The checksum of the file's bytes so far, copying its rows into `into`.
    fn read_back(&mut self, into: Option<(&mut Factors, &mut Factors)>) -> Result<Vec<u8>, CheckpointError> {
        let path = self.tmp.path().to_owned();
        hash_rows(self.tmp.as_file_mut(), &path, self.at, into)
    }

    /// Append the checksum, put the file in place and keep it and the one
    /// before it. Files numbered after it are an earlier run's (started
    /// again in the same directory without `--resume`): they are neither
    /// counted nor removed, so the file just written stays (a run may
    /// replay from it).
    fn seal(mut self, sum: &[u8]) -> Result<PathBuf, CheckpointError> {
        use std::io::Write;
        let tmp_path = self.tmp.path().to_owned();
        let f = self.tmp.as_file_mut();
        f.write_all(sum).map_err(io(&tmp_path))?;
        f.sync_all().map_err(io(&tmp_path))?;
        let path = self.dir.join(&self.name);
        self.tmp.persist(&path).map_err(|e| io(&path)(e.error))?;
        crate::atomic::sync_dir(&self.dir)?;
        for old in list(&self.dir)?.into_iter().filter(|(n, _)| *n <= self.iterations_done).skip(KEEP) {
            let _ = std::fs::remove_file(old.1);
        }
        Ok(path)
    }
}

/// The checksum of a checkpoint file's bytes from its start through its
/// rows (laid out at `at`), read a chunk at a time, copying the rows into
/// `into` (checked finite, as rows from a solve always are) where given.
fn hash_rows(
    f: &mut std::fs::File,
    path: &Path,
    at: RowsAt,
    into: Option<(&mut Factors, &mut Factors)>,
) -> Result<Vec<u8>, CheckpointError> {
    use std::io::{Read, Seek, SeekFrom};
    f.seek(SeekFrom::Start(0)).map_err(io(path))?;
    let mut hash = Sha256::new();
    let mut head = vec![0u8; at.user_rows as usize];
    f.read_exact(&mut head).map_err(io(path))?;
    hash.update(&head);
    let mut buf = vec![0u8; 1 << 20];
    let mut region = |dest: Option<&mut [f32]>, bytes: u64| -> Result<(), CheckpointError> {
        let (mut done, mut dest) = (0u64, dest);
        while done < bytes {
            let n = ((bytes - done) as usize).min(buf.len());
            f.read_exact(&mut buf[..n]).map_err(io(path))?;
            hash.update(&buf[..n]);
            if let Some(d) = dest.as_deref_mut() {
                let first = (done / 4) as usize;
                for (x, b) in d[first..first + n / 4].iter_mut().zip(buf[..n].chunks_exact(4)) {
                    *x = f32::from_le_bytes(b.try_into().expect("4 bytes"));
                    if !x.is_finite() {
                        return Err(CheckpointError::Corrupt {
                            path: path.to_owned(),
                            problem: "a row written to it is not finite".into(),
                        });
                    }
                }
            }
            done += n as u64;
        }
        Ok(())
    };
    let lens = [
        at.item_rows - at.user_rows,
        at.user_bias - at.item_rows,
        at.item_bias - at.user_bias,
        at.end - at.item_bias,
    ];
    match into {
        Some((users, items)) => {
            let want = [users.flat().len(), items.flat().len(), users.bias.len(), items.bias.len()];
            if want.iter().zip(&lens).any(|(&w, &l)| w as u64 * 4 != l) {
                return Err(CheckpointError::Corrupt {
                    path: path.to_owned(),
                    problem: "its shape is not the state's".into(),
                });
            }
            region(Some(users.flat_mut()), lens[0])?;
            region(Some(items.flat_mut()), lens[1])?;
            region(Some(&mut users.bias), lens[2])?;
            region(Some(&mut items.bias), lens[3])?;
        }
        None => lens.iter().try_for_each(|&l| region(None, l))?,
    }
    Ok(hash.finalize().to_vec())
}

/// Checkpoint files, newest first.
fn list(dir: &Path) -> Result<Vec<(usize, PathBuf)>, CheckpointError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let p = e.map_err(io(dir))?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(n) = name
            .strip_prefix("checkpoint-")
            .and_then(|r| r.strip_suffix(".als"))
            .and_then(|n| n.parse::<usize>().ok())
        {
            out.push((n, p));
        }
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.0));
    Ok(out)
}

/// A sealed checkpoint found intact: its header, the bytes before its rows,
/// and its rows where they were asked for.
struct Opened {
    header: Header,
    head_len: u64,
    rows: Option<(Factors, Factors)>,
}

/// The header of the sealed checkpoint at `path` and the bytes before its
/// rows, once its bytes are found to match the checksum it ends with
/// (hashed a chunk at a time, never held whole); with `rows`, its rows
/// too, read in the same pass.
fn open_sealed(path: &Path, rows: bool) -> Result<Opened, CheckpointError> {
    use std::io::Read;
    let corrupt = |m: &str| CheckpointError::Corrupt {
        path: path.to_owned(),
        problem: m.to_owned(),
    };
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let len = f.metadata().map_err(io(path))?.len();
    let mut head = [0u8; 16];
    if len < 16 + 32 || f.read_exact(&mut head).is_err() || &head[..8] != MAGIC {
        return Err(corrupt("not a checkpoint file"));
    }
    let hlen = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
    if hlen > len - 16 - 32 {
        return Err(corrupt("bad header"));
    }
    let mut h = vec![0u8; hlen as usize];
    f.read_exact(&mut h).map_err(io(path))?;
    let header: Header = serde_json::from_slice(&h).map_err(|_| corrupt("bad header"))?;
    // So no count below can overflow, and what is allocated is what the file holds.
    if header.rows_bytes() != Some(len - 16 - hlen - 32) {
        return Err(corrupt("its length is not its rows'"));
    }
    let at = RowsAt::new(16 + hlen, header.shape());
    let mut state = rows.then(|| {
        (
            Factors::zeros(header.n_users, header.k, header.biased),
            Factors::zeros(header.n_items, header.k, header.biased),
        )
    });
    let sum = hash_rows(&mut f, path, at, state.as_mut().map(|(u, i)| (u, i)))?;
    let mut sealed = [0u8; 32];
    f.read_exact(&mut sealed).map_err(io(path))?;
    match sum == sealed {
        true => Ok(Opened {
            header,
            head_len: 16 + hlen,
            rows: state,
        }),
        false => Err(corrupt("checksum mismatch")),
    }
}

/// Check that a sealed checkpoint still holds what was sealed, before
/// rows are read from it in place (a replay): its bytes match its
/// checksum, and its header gives the rows' `shape`, which placed them.
pub fn check_sealed(path: &Path, shape: RowsShape) -> Result<(), CheckpointError> {
    let header = open_sealed(path, false)?.header;
    match header.shape() == shape {
        true => Ok(()),
        false => Err(CheckpointError::Corrupt {
            path: path.to_owned(),
            problem: "its rows are not of this run's shape".into(),
        }),
    }
}

/// A checkpoint found intact and of this run, its rows left in its file:
/// whoever holds the blocks reads them at [`SealedCheckpoint::places`]
/// (the workers, for a resumed run on a coordinator that keeps no copy),
/// or [`SealedCheckpoint::read`] reads them all here.
#[derive(Debug, Clone)]
pub struct SealedCheckpoint {
    pub path: PathBuf,
    pub iterations_done: usize,
    pub shape: RowsShape,
    pub places: RowPlaces,
    signature: RunSignature,
}

impl SealedCheckpoint {
    /// The whole state, read here (checked again as it is read).
    pub fn read(&self) -> Result<TrainState, CheckpointError> {
        read_checkpoint(&self.path, &self.signature)
    }
}

/// What a run starts from besides a fresh draw: a state held here, or a
/// checkpoint (resumed) whose rows are read where they are needed.
#[derive(Debug, Clone)]
pub enum StartFrom {
    State(TrainState),
    Checkpoint(SealedCheckpoint),
}

impl StartFrom {
    /// The whole state here (a checkpoint's rows read).
    pub fn into_state(self) -> Result<TrainState, CheckpointError> {
        match self {
            StartFrom::State(s) => Ok(s),
            StartFrom::Checkpoint(c) => c.read(),
        }
    }
}

/// That the checkpoint at `path`, whose header is `h`, is `sig`'s run's.
fn check_signature(path: &Path, h: &Header, sig: &RunSignature) -> Result<(), CheckpointError> {
    let mismatch = |problem: &str| CheckpointError::Mismatch {
        path: path.to_owned(),
        problem: problem.into(),
    };
    if h.signature.data_fingerprint != sig.data_fingerprint {
        return Err(mismatch("it was written for other training data"));
    }
    if h.signature.settings != sig.settings {
        return Err(mismatch("it was written with other hyperparameters"));
    }
    Ok(())
}

/// Read one checkpoint, verifying its checksum and its signature.
pub fn read_checkpoint(path: &Path, sig: &RunSignature) -> Result<TrainState, CheckpointError> {
    let opened = open_sealed(path, true)?;
    check_signature(path, &opened.header, sig)?;
    let (users, items) = opened.rows.expect("asked for the rows");
    Ok(TrainState {
        iterations_done: opened.header.iterations_done,
        users,
        items,
    })
}

/// The newest checkpoint in `dir` that is intact, its rows left in the
/// file (checked a chunk at a time, never held); a mismatched one is an
/// error, a corrupt one is passed over for the one before it.
pub fn latest_sealed(dir: &Path, sig: &RunSignature) -> Result<SealedCheckpoint, CheckpointError> {
    if !dir.exists() {
        return Err(CheckpointError::NoneFound { dir: dir.to_owned() });
    }
    for (_, p) in list(dir)? {
        match open_sealed(&p, false).and_then(|o| check_signature(&p, &o.header, sig).map(|()| o)) {
            Ok(Opened { header: h, head_len, .. }) => {
                let shape = h.shape();
                return Ok(SealedCheckpoint {
                    places: RowsAt::new(head_len, shape).places(&p),
                    path: p,
                    iterations_done: h.iterations_done,
                    shape,
                    signature: sig.clone(),
                });
            }
            Err(e @ CheckpointError::Corrupt { .. }) => tracing::warn!("skipping {e}"),
            Err(e) => return Err(e),
        }
    }
    Err(CheckpointError::NoneFound { dir: dir.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::init_factors;
    use crate::side::Side;

    fn state(it: usize) -> TrainState {
        let ids: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        TrainState {
            iterations_done: it,
            users: init_factors(&ids, Side::Users, it as u64, 3, None, true),
            items: init_factors(&ids[..4], Side::Items, 1, 3, None, true),
        }
    }

    /// A failed write names the OS cause; an unusable directory is found before training.
    #[test]
    fn write_errors_show_their_cause() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let sig = RunSignature::new("abc", &TrainConfig::default());
        let e = write_checkpoint(&file.join("ckpt"), &sig, &state(1)).unwrap_err().to_string();
        assert!(e.contains("Not a directory"), "{e}");
        let e = check_checkpoint_dir(&file).unwrap_err().to_string();
        assert!(e.contains("exists and is not a directory"), "{e}");
        let e = check_checkpoint_dir(&file.join("sub")).unwrap_err().to_string();
        assert!(e.contains("cannot create it") && e.contains("Not a directory"), "{e}");
        assert!(check_checkpoint_dir(&dir.path().join("new/ckpt")).is_ok());
    }

    /// A sealed checkpoint read in place is checked first: any byte
    /// changed, a cut, or rows of another shape are refused.
    #[test]
    fn a_sealed_checkpoint_is_checked_before_it_is_read_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let sig = RunSignature::new("abc", &TrainConfig::default());
        let p = write_checkpoint(dir.path(), &sig, &state(1)).unwrap();
        let shape = RowsShape::of(&state(1).users, &state(1).items);
        check_sealed(&p, shape).unwrap();
        let e = check_sealed(&p, RowsShape { k: 4, ..shape }).unwrap_err().to_string();
        assert!(e.contains("not of this run's shape"), "{e}");
        let good = std::fs::read(&p).unwrap();
        for (at, why) in [
            (good.len() / 2, "checksum mismatch"),
            (good.len() - 1, "checksum mismatch"),
            (3, "not a checkpoint"),
        ] {
            let mut bytes = good.clone();
            bytes[at] ^= 1;
            std::fs::write(&p, bytes).unwrap();
            let e = check_sealed(&p, shape).unwrap_err().to_string();
            assert!(e.contains(why), "byte {at}: {e}");
        }
        std::fs::write(&p, &good[..good.len() - 8]).unwrap();
        assert!(check_sealed(&p, shape).is_err());
    }

    /// The newest intact checkpoint is found without reading its rows, and
    /// placed where they are: read there, they are the state's. A header
    /// whose shape no file could hold is refused, never counted on.
    #[test]
    fn a_sealed_checkpoint_places_its_rows_and_refuses_an_impossible_shape() {
        let dir = tempfile::tempdir().unwrap();
        let sig = RunSignature::new("abc", &TrainConfig::default());
        write_checkpoint(dir.path(), &sig, &state(1)).unwrap();
        write_checkpoint(dir.path(), &sig, &state(2)).unwrap();
        let sealed = latest_sealed(dir.path(), &sig).unwrap();
        let want = state(2);
        assert_eq!((sealed.iterations_done, sealed.shape), (2, RowsShape::of(&want.users, &want.items)));
        assert_eq!(sealed.read().unwrap(), want);
        let mut f = std::fs::File::open(&sealed.path).unwrap();
        let p = &sealed.places;
        for (place, values) in [
            (&p.user_rows, want.users.flat()),
            (&p.item_rows, want.items.flat()),
            (p.user_bias.as_ref().unwrap(), &want.users.bias[..]),
            (p.item_bias.as_ref().unwrap(), &want.items.bias[..]),
        ] {
            let mut got = vec![0f32; values.len()];
            crate::row_places::read_le_at(&mut f, place.at, &mut got).unwrap();
            assert_eq!(got, values);
        }
        // Newer, intact by its checksum, with a shape past any file's length.
        let header = Header {
            signature: sig.clone(),
            iterations_done: 3,
            n_users: usize::MAX / 2,
            n_items: 1,
            k: 8,
            biased: true,
        };
        let h = serde_json::to_vec(&header).unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(h.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&h);
        bytes.extend_from_slice(&[0u8; 64]);
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum);
        let bad = dir.path().join("checkpoint-000003.als");
        std::fs::write(&bad, bytes).unwrap();
        for e in [
            check_sealed(&bad, sealed.shape).unwrap_err(),
            read_checkpoint(&bad, &sig).unwrap_err(),
        ] {
            assert!(e.to_string().contains("its length is not its rows'"), "{e}");
        }
        assert_eq!(latest_sealed(dir.path(), &sig).unwrap().iterations_done, 2);
    }

    /// The newest intact checkpoint, read whole.
    fn latest_checkpoint(dir: &Path, sig: &RunSignature) -> Result<(PathBuf, TrainState), CheckpointError> {
        let sealed = latest_sealed(dir, sig)?;
        Ok((sealed.path.clone(), sealed.read()?))
    }

    #[test]
    fn round_trip_keep_two_and_refuse_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig::default();
        let sig = RunSignature::new("abc", &cfg);
        for it in 1..=3 {
            write_checkpoint(dir.path(), &sig, &state(it)).unwrap();
        }
        assert_eq!(list(dir.path()).unwrap().len(), 2);
        let (p, s) = latest_checkpoint(dir.path(), &sig).unwrap();
        assert_eq!(s, state(3));
        // More iterations requested: same run.
        let longer = RunSignature::new(
            "abc",
            &TrainConfig {
                iterations: 99,
                ..cfg.clone()
            },
        );
        assert!(latest_checkpoint(dir.path(), &longer).is_ok());
        // Other data or settings: refused, never silently used.
        assert!(matches!(
            latest_checkpoint(dir.path(), &RunSignature::new("xyz", &cfg)),
            Err(CheckpointError::Mismatch { .. })
        ));
        let other = RunSignature::new("abc", &TrainConfig { lambda: 0.5, ..cfg });
        assert!(matches!(
            latest_checkpoint(dir.path(), &other),
            Err(CheckpointError::Mismatch { .. })
        ));
        // A corrupt newest checkpoint is skipped for the older intact one.
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        assert!(matches!(read_checkpoint(&p, &sig), Err(CheckpointError::Corrupt { .. })));
        assert_eq!(latest_checkpoint(dir.path(), &sig).unwrap().1, state(2));
        assert!(matches!(
            latest_checkpoint(&dir.path().join("none"), &sig),
            Err(CheckpointError::NoneFound { .. })
        ));
        // A run started again in the same directory keeps what it writes:
        // the earlier run's later files are neither counted nor removed.
        let again = tempfile::tempdir().unwrap();
        for it in [3, 4, 1, 2, 3] {
            let p = write_checkpoint(again.path(), &sig, &state(it)).unwrap();
            assert!(p.exists(), "checkpoint {it} was removed as it was written");
        }
        let left: Vec<usize> = list(again.path()).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(left, vec![4, 3, 2]);
        // No temporary files left behind.
        assert!(std::fs::read_dir(dir.path())
            .unwrap()
            .all(|e| e.unwrap().file_name().to_string_lossy().starts_with("checkpoint-")));
    }
}
