//! NumPy `.npy` files (format 1.0, little-endian, C order) for the saved model.
//!
//! Writers produce what `numpy.save` produces: magic, version 1.0 (2.0 only if
//! the header would not fit in 64 KiB), a Python-literal header dict padded
//! with spaces and a newline so the data starts at a multiple of 64 bytes,
//! then the raw little-endian elements. Readers accept versions 1.0, 2.0 and
//! 3.0 with a little-endian dtype of exactly the requested type and C order.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
const ALIGN: usize = 64;

/// Why an `.npy` file could not be read; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: not a .npy file (bad magic bytes)", path.display())]
    BadMagic { path: PathBuf },
    #[error("{}: unsupported .npy format version {major}.{minor} (1.0, 2.0 and 3.0 are read)", path.display())]
    UnsupportedVersion { path: PathBuf, major: u8, minor: u8 },
    #[error("{}: malformed .npy header: {reason}", path.display())]
    BadHeader { path: PathBuf, reason: String },
    #[error("{}: unsupported dtype '{found}' (expected '{expected}')", path.display())]
    UnsupportedDtype {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },
    #[error("{}: Fortran-order arrays are not supported (save a C-contiguous array)", path.display())]
    FortranOrder { path: PathBuf },
    #[error("{}: shape {found:?} does not match the expected {expected:?}", path.display())]
    ShapeMismatch {
        path: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{}: truncated data: shape {shape:?} needs {expected} bytes, the file has {found}", path.display())]
    Truncated {
        path: PathBuf,
        shape: Vec<usize>,
        expected: u64,
        found: u64,
    },
    #[error("{}: unexpected bytes after the data of shape {shape:?}", path.display())]
    TrailingData { path: PathBuf, shape: Vec<usize> },
}

impl NpyError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            NpyError::Io { path, .. }
            | NpyError::BadMagic { path }
            | NpyError::UnsupportedVersion { path, .. }
            | NpyError::BadHeader { path, .. }
            | NpyError::UnsupportedDtype { path, .. }
            | NpyError::FortranOrder { path }
            | NpyError::ShapeMismatch { path, .. }
            | NpyError::Truncated { path, .. }
            | NpyError::TrailingData { path, .. } => path,
        }
    }
}

/// An element type of the supported arrays (its bytes: [`crate::le`]).
pub trait NpyElement: crate::le::Le {
    /// The little-endian dtype string (`'<f4'` etc.).
    const DESCR: &'static str;
}

macro_rules! element {
    ($t:ty, $descr:expr) => {
        impl NpyElement for $t {
            const DESCR: &'static str = $descr;
        }
    };
}
element!(f32, "<f4");
element!(i64, "<i8");
element!(u32, "<u4");

/// The header bytes (magic through the newline) for `descr` and `shape`.
pub fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape_txt = match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Version 1.0 has a 2-byte header length, 2.0 a 4-byte one.
    let padded = |prefix: usize| (prefix + dict.len() + 1).div_ceil(ALIGN) * ALIGN;
    let (major, prefix) = if padded(10) - 10 <= u16::MAX as usize {
        (1u8, 10usize)
    } else {
        (2u8, 12usize)
    };
    let total = padded(prefix);
    let hlen = total - prefix;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[major, 0]);
    if major == 1 {
        out.extend_from_slice(&(hlen as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(hlen as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

fn write_npy<T: NpyElement>(w: &mut impl Write, shape: &[usize], data: &[T]) -> io::Result<()> {
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(data.len()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("npy: shape {shape:?} does not hold {} elements", data.len()),
        ));
    }
    w.write_all(&header(T::DESCR, shape))?;
    crate::le::write_le(w, data)
}

/// Write an f32 array (`'<f4'`). `shape`'s product must equal `data.len()`.
pub fn write_npy_f32(w: &mut impl Write, shape: &[usize], data: &[f32]) -> io::Result<()> {
    write_npy(w, shape, data)
}

/// Write an i64 array (`'<i8'`).
pub fn write_npy_i64(w: &mut impl Write, shape: &[usize], data: &[i64]) -> io::Result<()> {
    write_npy(w, shape, data)
}

/// Write a u32 array (`'<u4'`).
pub fn write_npy_u32(w: &mut impl Write, shape: &[usize], data: &[u32]) -> io::Result<()> {
    write_npy(w, shape, data)
}

/// The parsed header dict.
struct Header {
    descr: String,
    fortran: bool,
    shape: Vec<usize>,
}

/// A tiny parser for the Python literal dict of the header.
struct Lit<'a> {
    s: &'a [u8],
    p: usize,
}

impl Lit<'_> {
    fn ws(&mut self) {
        while self.p < self.s.len() && self.s[self.p].is_ascii_whitespace() {
            self.p += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.p) == Some(&c) {
            self.p += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.p))
        }
    }
    fn string(&mut self) -> Result<String, String> {
        self.ws();
        let q = *self.s.get(self.p).ok_or("unexpected end")?;
        if q != b'\'' && q != b'"' {
            return Err(format!("expected a string at byte {}", self.p));
        }
        let start = self.p + 1;
        let end = start + self.s[start..].iter().position(|&c| c == q).ok_or("unterminated string")?;
        self.p = end + 1;
        String::from_utf8(self.s[start..end].to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }
    fn word(&mut self) -> String {
        self.ws();
        let start = self.p;
        while self.p < self.s.len() && (self.s[self.p].is_ascii_alphanumeric() || self.s[self.p] == b'_') {
            self.p += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.p]).into_owned()
    }
    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut v = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(v);
            }
            let w = self.word();
            let w = w.strip_suffix('L').unwrap_or(&w);
            v.push(w.parse::<usize>().map_err(|_| format!("bad shape dimension '{w}'"))?);
            if !self.eat(b',') {
                self.expect(b')')?;
                return Ok(v);
            }
        }
    }
}

fn parse_header(text: &[u8]) -> Result<Header, String> {
    let mut l = Lit { s: text, p: 0 };
    l.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        if l.eat(b'}') {
            break;
        }
        let key = l.string()?;
        l.expect(b':')?;
        match key.as_str() {
            "descr" => descr = Some(l.string()?),
            "fortran_order" => {
                fortran = Some(match l.word().as_str() {
                    "True" => true,
                    "False" => false,
                    w => return Err(format!("bad fortran_order '{w}'")),
                })
            }
            "shape" => shape = Some(l.tuple()?),
            k => return Err(format!("unknown key '{k}'")),
        }
        if !l.eat(b',') {
            l.expect(b'}')?;
            break;
        }
    }
    Ok(Header {
        descr: descr.ok_or("no 'descr'")?,
        fortran: fortran.ok_or("no 'fortran_order'")?,
        shape: shape.ok_or("no 'shape'")?,
    })
}

/// Read one array of type `T` from `r`; `path` is for messages only.
///
/// Reads exactly the header and the data, then checks that nothing follows.
pub fn read_npy_from<T: NpyElement>(r: &mut impl Read, path: &Path) -> Result<(Vec<usize>, Vec<T>), NpyError> {
    let io_err = |e: io::Error| NpyError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let bad = |reason: String| NpyError::BadHeader {
        path: path.to_path_buf(),
        reason,
    };
    let mut pre = [0u8; 8];
    read_full(r, &mut pre).map_err(io_err).and_then(|got| {
        if got < 8 || &pre[..6] != MAGIC {
            Err(NpyError::BadMagic { path: path.to_path_buf() })
        } else {
            Ok(())
        }
    })?;
    let (major, minor) = (pre[6], pre[7]);
    let len_bytes = match (major, minor) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => {
            return Err(NpyError::UnsupportedVersion {
                path: path.to_path_buf(),
                major,
                minor,
            })
        }
    };
    let mut lb = [0u8; 4];
    if read_full(r, &mut lb[..len_bytes]).map_err(io_err)? < len_bytes {
        return Err(bad("file ends inside the header".into()));
    }
    let hlen = if len_bytes == 2 {
        u16::from_le_bytes([lb[0], lb[1]]) as usize
    } else {
        u32::from_le_bytes(lb) as usize
    };
    if hlen > 1 << 24 {
        return Err(bad(format!("header length {hlen} is implausible")));
    }
    let mut text = vec![0u8; hlen];
    if read_full(r, &mut text).map_err(io_err)? < hlen {
        return Err(bad("file ends inside the header".into()));
    }
    let h = parse_header(&text).map_err(bad)?;
    if h.descr != T::DESCR {
        return Err(NpyError::UnsupportedDtype {
            path: path.to_path_buf(),
            found: h.descr,
            expected: T::DESCR,
        });
    }
    if h.fortran && h.shape.len() > 1 {
        return Err(NpyError::FortranOrder { path: path.to_path_buf() });
    }
    let count = h
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad("shape overflows".into()))?;
    let need = count as u64 * T::SIZE as u64;
    let mut data: Vec<T> = Vec::new();
    data.try_reserve_exact(count)
        .map_err(|_| bad(format!("shape {:?} is too large to allocate", h.shape)))?;
    let mut buf = vec![0u8; (1 << 16) / T::SIZE * T::SIZE];
    let mut got: u64 = 0;
    while data.len() < count {
        let want = ((count - data.len()) * T::SIZE).min(buf.len());
        let n = read_full(r, &mut buf[..want]).map_err(io_err)?;
        got += n as u64;
        if n < want {
            return Err(NpyError::Truncated {
                path: path.to_path_buf(),
                shape: h.shape,
                expected: need,
                found: got,
            });
        }
        data.extend(buf[..n].chunks_exact(T::SIZE).map(T::from_le));
    }
    let mut extra = [0u8; 1];
    if read_full(r, &mut extra).map_err(io_err)? != 0 {
        return Err(NpyError::TrailingData {
            path: path.to_path_buf(),
            shape: h.shape,
        });
    }
    Ok((h.shape, data))
}

/// Read until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `Ok` when `found == expected`, else [`NpyError::ShapeMismatch`].
pub fn check_shape(path: &Path, found: &[usize], expected: &[usize]) -> Result<(), NpyError> {
    if found == expected {
        Ok(())
    } else {
        Err(NpyError::ShapeMismatch {
            path: path.to_path_buf(),
            expected: expected.to_vec(),
            found: found.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::BufReader;

    fn read_file<T: NpyElement>(path: &Path) -> Result<(Vec<usize>, Vec<T>), NpyError> {
        let f = File::open(path).map_err(|e| NpyError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        read_npy_from(&mut BufReader::with_capacity(1 << 16, f), path)
    }

    /// Read an f32 (`'<f4'`) array: (shape, data in C order).
    pub fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>), NpyError> {
        read_file(path)
    }

    /// Read an i64 (`'<i8'`) array.
    pub fn read_npy_i64(path: &Path) -> Result<(Vec<usize>, Vec<i64>), NpyError> {
        read_file(path)
    }

    /// Read a u32 (`'<u4'`) array.
    pub fn read_npy_u32(path: &Path) -> Result<(Vec<usize>, Vec<u32>), NpyError> {
        read_file(path)
    }

    #[test]
    fn known_header_bytes() {
        let mut v = Vec::new();
        write_npy_f32(&mut v, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        // What numpy.save writes for np.arange(1, 7, dtype='<f4').reshape(2, 3).
        let dict = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let mut want = Vec::new();
        want.extend_from_slice(b"\x93NUMPY\x01\x00");
        want.extend_from_slice(&118u16.to_le_bytes());
        want.extend_from_slice(dict);
        want.resize(127, b' ');
        want.push(b'\n');
        for x in [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0] {
            want.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(v, want);
        assert_eq!(v.len(), 128 + 24);

        let mut v = Vec::new();
        write_npy_u32(&mut v, &[3], &[1, 2, 3]).unwrap();
        assert!(v.starts_with(b"\x93NUMPY\x01\x00\x76\x00{'descr': '<u4', 'fortran_order': False, 'shape': (3,), }"));
        assert_eq!(v.len(), 128 + 12);
        let mut v = Vec::new();
        write_npy_i64(&mut v, &[], &[7]).unwrap();
        assert!(String::from_utf8_lossy(&v[..128]).contains("{'descr': '<i8', 'fortran_order': False, 'shape': (), }"));
        assert_eq!(v.len(), 128 + 8);
        assert!(write_npy_f32(&mut Vec::new(), &[2, 2], &[1.0]).is_err());
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let data: Vec<f32> = (0..1000)
            .map(|i| (i as f32 * 0.37).sin())
            .chain([f32::NAN, -0.0, f32::INFINITY])
            .collect();
        write_npy_f32(&mut File::create(&p).unwrap(), &[1003, 1], &data).unwrap();
        let (s, d) = read_npy_f32(&p).unwrap();
        assert_eq!(s, vec![1003, 1]);
        assert_eq!(
            d.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            data.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );

        let ints: Vec<i64> = vec![0, -1, i64::MAX, i64::MIN, 42];
        write_npy_i64(&mut File::create(&p).unwrap(), &[5], &ints).unwrap();
        assert_eq!(read_npy_i64(&p).unwrap(), (vec![5], ints));
        let u: Vec<u32> = vec![];
        write_npy_u32(&mut File::create(&p).unwrap(), &[0, 4], &u).unwrap();
        assert_eq!(read_npy_u32(&p).unwrap(), (vec![0, 4], u));
        // Wrong dtype is refused, naming the file.
        let e = read_npy_f32(&p).unwrap_err();
        assert!(matches!(e, NpyError::UnsupportedDtype { .. }), "{e}");
        assert!(e.to_string().contains("a.npy"), "{e}");
    }

    #[test]
    fn reads_version_2_and_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.npy");
        // A version 2.0 file as numpy writes it for long headers (4-byte length).
        let dict = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
        let mut v = b"\x93NUMPY\x02\x00".to_vec();
        let hlen = 128 - 12;
        v.extend_from_slice(&(hlen as u32).to_le_bytes());
        v.extend_from_slice(dict);
        v.resize(127, b' ');
        v.push(b'\n');
        v.extend_from_slice(&1.5f32.to_le_bytes());
        v.extend_from_slice(&(-2.0f32).to_le_bytes());
        std::fs::write(&p, &v).unwrap();
        assert_eq!(read_npy_f32(&p).unwrap(), (vec![2], vec![1.5, -2.0]));

        // Truncated data.
        std::fs::write(&p, &v[..v.len() - 1]).unwrap();
        assert!(matches!(read_npy_f32(&p), Err(NpyError::Truncated { expected: 8, found: 7, .. })));
        // Trailing data.
        let mut t = v.clone();
        t.push(0);
        std::fs::write(&p, &t).unwrap();
        assert!(matches!(read_npy_f32(&p), Err(NpyError::TrailingData { .. })));
        // Bad magic, unknown version, Fortran order, big endian.
        std::fs::write(&p, b"PK\x03\x04 not numpy").unwrap();
        assert!(matches!(read_npy_f32(&p), Err(NpyError::BadMagic { .. })));
        let mut w = v.clone();
        w[6] = 9;
        std::fs::write(&p, &w).unwrap();
        assert!(matches!(read_npy_f32(&p), Err(NpyError::UnsupportedVersion { major: 9, .. })));
        let mut buf = Vec::new();
        write_npy_f32(&mut buf, &[1, 2], &[1.0, 2.0]).unwrap();
        let replace = |from: &[u8], to: &[u8]| {
            let at = buf.windows(from.len()).position(|w| w == from).unwrap();
            let mut b = buf.clone();
            b[at..at + to.len()].copy_from_slice(to);
            b
        };
        std::fs::write(&p, replace(b"False", b"True ")).unwrap();
        assert!(matches!(read_npy_f32(&p), Err(NpyError::FortranOrder { .. })));
        std::fs::write(&p, replace(b"<f4", b">f4")).unwrap();
        assert!(matches!(read_npy_f32(&p), Err(NpyError::UnsupportedDtype { .. })));
        let e = read_npy_f32(&dir.path().join("missing.npy")).unwrap_err();
        assert!(matches!(e, NpyError::Io { .. }) && e.to_string().contains("missing.npy"), "{e}");
        assert!(check_shape(&p, &[2, 3], &[2, 3]).is_ok());
        assert!(matches!(check_shape(&p, &[3, 2], &[2, 3]), Err(NpyError::ShapeMismatch { .. })));
    }

    /// numpy reads what we write and we read what numpy writes. Needs python3
    /// with numpy: scripts/test.sh installs it where it can and runs this,
    /// else reports it skipped.
    #[test]
    #[ignore = "needs python3 with numpy"]
    fn numpy_interop_needs_numpy() {
        // The interpreter that has numpy (scripts/test.sh finds it), else python3.
        let python = std::env::var("ALS_PYTHON").unwrap_or_else(|_| "python3".into());
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("ours.npy");
        let b = dir.path().join("theirs.npy");
        write_npy_f32(&mut File::create(&a).unwrap(), &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.5, -6.0]).unwrap();
        let script = format!(
            "import numpy as np\n\
             a = np.load(r'{}')\n\
             assert a.dtype == np.float32 and a.shape == (2, 3), (a.dtype, a.shape)\n\
             assert a.tolist() == [[1, 2, 3], [4, 5.5, -6]], a\n\
             np.save(r'{}', np.arange(12, dtype='<i8').reshape(3, 4))\n",
            a.display(),
            b.display()
        );
        let out = std::process::Command::new(&python).args(["-c", &script]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(read_npy_i64(&b).unwrap(), (vec![3, 4], (0..12).collect::<Vec<i64>>()));
        // Byte-identical to numpy.save for the same array.
        let c = dir.path().join("same.npy");
        let script = format!(
            "import numpy as np\nnp.save(r'{}', np.array([[1, 2, 3], [4, 5.5, -6]], dtype='<f4'))\n",
            c.display()
        );
        let out = std::process::Command::new(&python).args(["-c", &script]).output().unwrap();
        assert!(out.status.success());
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap());
    }
}
