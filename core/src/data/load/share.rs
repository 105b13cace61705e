//! One worker's share of the input, read without reading the rest (issue 14:
//! workers parse the ratings themselves, the coordinator reads none).
//!
//! The input is one file or a directory of part files. A share is a byte
//! range of the input's bytes, the files taken in name order: share `i` of
//! `n` holds the rows whose line starts in `[len·i/n, len·(i+1)/n)`. In one
//! file that cuts at line boundaries; across part files, a file goes whole
//! to the share its first byte falls in (part files are many, and each
//! worker reading whole ones is simpler and as balanced). Read in share
//! order, the shares are exactly the rows [`load_ratings`](super::load_ratings)
//! reads, so the split keys and the duplicate order (which follow the input's
//! row order) can be computed from the per-share row counts alone.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use memchr::{memchr, memchr_iter};
use rustc_hash::FxHashMap;

use super::{parse_body, read_head, DataError, LoadOptions, RawRatings};

/// Share `index` of `count` equal shares of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub index: usize,
    pub count: usize,
}

impl Share {
    /// The whole input as one share.
    pub const WHOLE: Share = Share { index: 0, count: 1 };
}

/// Bytes read at a time while looking for a line end.
const SCAN_BYTES: usize = 64 << 10;

/// The ratings files of an input: the path itself, or the regular files of
/// a directory in name order, leaving out hidden files and the markers
/// Spark and Hadoop write beside part files (names starting with `.` or `_`).
pub fn input_files(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    let meta = std::fs::metadata(path).map_err(DataError::io(path))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(DataError::io(path))? {
        let entry = entry.map_err(DataError::io(path))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let p = entry.path();
        if std::fs::metadata(&p).map_err(DataError::io(&p))?.is_file() {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(DataError::Empty { path: path.to_path_buf() });
    }
    Ok(files)
}

/// Each of `files`' bytes.
fn file_sizes(files: &[PathBuf]) -> Result<Vec<u64>, DataError> {
    files
        .iter()
        .map(|f| Ok(std::fs::metadata(f).map_err(DataError::io(f))?.len()))
        .collect()
}

/// The size of the input at `path` (a file or a directory of part files,
/// as [`input_files`] lists them): its bytes summed, and how many files.
pub fn input_size(path: &Path) -> Result<(u64, usize), DataError> {
    let files = input_files(path)?;
    Ok((file_sizes(&files)?.iter().sum(), files.len()))
}

/// The rows of `share` of the input at `path` (a file or a directory of
/// part files), in input order, with ids interned in the share's own
/// first-seen order. A share may hold no rows; a message about a line names
/// its file and its line number in that file, as a whole-file load would.
pub fn load_share(path: &Path, opts: &LoadOptions, share: Share) -> Result<RawRatings, DataError> {
    if share.count == 0 || share.index >= share.count {
        return Err(DataError::Invalid(format!(
            "share {} of {} does not exist",
            share.index, share.count
        )));
    }
    let files = input_files(path)?;
    if let [file] = files.as_slice() {
        if path.is_file() {
            return file_share(file, opts, share);
        }
    }
    // Part files go whole to the share their first byte falls in.
    let sizes = file_sizes(&files)?;
    let total: u64 = sizes.iter().sum();
    let (lo, hi) = share_range(0, total, share);
    let mut acc = RawRatings {
        source: path.display().to_string(),
        ..Default::default()
    };
    let mut at = 0u64;
    for (f, &size) in files.iter().zip(&sizes) {
        let mine = at >= lo && at < hi;
        at += size;
        if !mine || size == 0 {
            continue;
        }
        append(&mut acc, file_share(f, opts, Share::WHOLE)?);
    }
    Ok(acc)
}

/// `[lo, hi)` of share `share` of the bytes `[start, end)`.
fn share_range(start: u64, end: u64, share: Share) -> (u64, u64) {
    let len = (end - start) as u128;
    let at = |i: usize| start + (len * i as u128 / share.count as u128) as u64;
    (at(share.index), at(share.index + 1))
}

/// The rows of one file whose lines start in the share's byte range of its body.
fn file_share(path: &Path, opts: &LoadOptions, share: Share) -> Result<RawRatings, DataError> {
    let mut f = File::open(path).map_err(DataError::io(path))?;
    let len = f.metadata().map_err(DataError::io(path))?.len();
    let empty_share = || RawRatings {
        source: path.display().to_string(),
        ..Default::default()
    };
    // The head: enough bytes to hold the first non-blank line whole, read in
    // doubling steps (a long run of blank lines costs linear time).
    let mut head_bytes = Vec::new();
    let head = loop {
        let more = SCAN_BYTES.max(head_bytes.len()) as u64;
        let before = head_bytes.len();
        (&mut f).take(more).read_to_end(&mut head_bytes).map_err(DataError::io(path))?;
        let at_end = head_bytes.len() as u64 >= len || head_bytes.len() == before;
        let complete = at_end || has_full_nonblank_line(&head_bytes);
        if complete {
            let bom = if head_bytes.starts_with(b"\xEF\xBB\xBF") { 3 } else { 0 };
            match read_head(&head_bytes[bom..], path, opts) {
                Ok(h) => break (h, bom as u64),
                // A file of blank lines: no rows in any share.
                Err(DataError::Empty { .. }) => return Ok(empty_share()),
                Err(e) => return Err(e),
            }
        }
    };
    let (head, bom) = head;
    let body_start = bom + head.body_start as u64;
    let (lo, hi) = share_range(body_start, len.max(body_start), share);
    let start = line_start_at_or_after(&mut f, path, lo, body_start, len)?;
    let end = line_start_at_or_after(&mut f, path, hi, body_start, len)?;
    if start >= end {
        return Ok(empty_share());
    }
    let mut body = Vec::with_capacity((end - start) as usize);
    f.seek(SeekFrom::Start(start)).map_err(DataError::io(path))?;
    (&mut f).take(end - start).read_to_end(&mut body).map_err(DataError::io(path))?;
    if body.len() as u64 != end - start {
        return Err(DataError::Invalid(format!(
            "{}: the file changed while it was read",
            path.display()
        )));
    }
    // A line's number in the file needs the lines before the share: counted
    // only when a message names one.
    let mut before: Option<u64> = None;
    let mut line_of = |line: u64| -> Result<u64, DataError> {
        if before.is_none() {
            before = Some(count_lines_before(path, start)?);
        }
        Ok(before.unwrap_or(0) + line)
    };
    parse_body(&body, path, &head.layout, 0, &mut line_of)
}

/// Whether `bytes` hold a non-blank line ended by `\n`.
fn has_full_nonblank_line(bytes: &[u8]) -> bool {
    let mut pos = 0;
    while let Some(k) = memchr(b'\n', &bytes[pos..]) {
        if !super::is_blank(super::strip_cr(&bytes[pos..pos + k])) {
            return true;
        }
        pos += k + 1;
    }
    false
}

/// The first line start at or after `pos`: `body_start` below it, `len` past
/// the last line, else one past the first `\n` at or after `pos − 1`.
fn line_start_at_or_after(f: &mut File, path: &Path, pos: u64, body_start: u64, len: u64) -> Result<u64, DataError> {
    if pos <= body_start {
        return Ok(body_start);
    }
    if pos >= len {
        return Ok(len);
    }
    let mut at = pos - 1;
    let mut buf = vec![0u8; SCAN_BYTES];
    f.seek(SeekFrom::Start(at)).map_err(DataError::io(path))?;
    loop {
        let n = f.read(&mut buf).map_err(DataError::io(path))?;
        if n == 0 {
            return Ok(len);
        }
        if let Some(k) = memchr(b'\n', &buf[..n]) {
            return Ok(at + k as u64 + 1);
        }
        at += n as u64;
    }
}

/// Lines (`\n`s) in the first `end` bytes of the file.
fn count_lines_before(path: &Path, end: u64) -> Result<u64, DataError> {
    let mut f = File::open(path).map_err(DataError::io(path))?.take(end);
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(DataError::io(path))?;
        if n == 0 {
            return Ok(lines);
        }
        lines += memchr_iter(b'\n', &buf[..n]).count() as u64;
    }
}

/// Add `more`'s rows after `acc`'s, re-interning its ids into `acc`'s
/// first-seen order. Timestamps stay only if both have them.
fn append(acc: &mut RawRatings, more: RawRatings) {
    if acc.is_empty() && acc.user_tokens.is_empty() {
        let source = std::mem::take(&mut acc.source);
        *acc = RawRatings { source, ..more };
        return;
    }
    let remap = |tokens: &mut Vec<String>, theirs: Vec<String>| -> Vec<u32> {
        let mut index: FxHashMap<String, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        theirs
            .into_iter()
            .map(|t| {
                let next = tokens.len() as u32;
                *index.entry(t.clone()).or_insert_with(|| {
                    tokens.push(t);
                    next
                })
            })
            .collect()
    };
    let users = remap(&mut acc.user_tokens, more.user_tokens);
    let items = remap(&mut acc.item_tokens, more.item_tokens);
    acc.users.extend(more.users.iter().map(|&u| users[u as usize]));
    acc.items.extend(more.items.iter().map(|&i| items[i as usize]));
    acc.ratings.extend_from_slice(&more.ratings);
    acc.timestamps = match (acc.timestamps.take(), more.timestamps) {
        (Some(mut a), Some(b)) => {
            a.extend_from_slice(&b);
            Some(a)
        }
        _ => None,
    };
    acc.skipped_lines += more.skipped_lines;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::load_ratings;

    fn triples(r: &RawRatings) -> Vec<(String, String, f32, Option<i64>)> {
        (0..r.len())
            .map(|i| {
                let (u, it, v) = r.row(i);
                (u.to_string(), it.to_string(), v, r.timestamps.as_ref().map(|t| t[i]))
            })
            .collect()
    }

    /// Shares of `path`, concatenated in order.
    fn all_shares(path: &Path, opts: &LoadOptions, count: usize) -> Vec<(String, String, f32, Option<i64>)> {
        (0..count)
            .flat_map(|index| triples(&load_share(path, opts, Share { index, count }).unwrap()))
            .collect()
    }

    #[test]
    fn shares_of_a_file_are_its_rows_in_order_for_any_share_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("\u{feff}\r\nuser,item,rating,timestamp\r\n");
        let mut s = crate::rng::SplitMix64::new(5);
        for line in 0..3000 {
            let u = s.next_u64() % 300;
            let i = s.next_u64() % 90;
            if line % 97 == 0 {
                text.push_str("\r\n"); // blank lines are skipped
            }
            let user = if u.is_multiple_of(5) { format!("u{u}") } else { u.to_string() };
            text.push_str(&format!("{user},{i},{}.5,{}\r\n", s.next_u64() % 5, 1000 + line));
        }
        let path = dir.path().join("r.csv");
        std::fs::write(&path, &text).unwrap();
        let o = LoadOptions::default();
        let whole = triples(&load_ratings(&path, &o).unwrap());
        assert_eq!(whole.len(), 3000);
        for count in [1, 2, 3, 7, 64, 5000] {
            assert_eq!(all_shares(&path, &o, count), whole, "{count} shares");
        }
        // Shares of about equal bytes.
        let sizes: Vec<usize> = (0..4)
            .map(|index| load_share(&path, &o, Share { index, count: 4 }).unwrap().len())
            .collect();
        assert!(sizes.iter().all(|&n| (700..=800).contains(&n)), "{sizes:?}");
        // The first row past the first read of the head (blank lines before it).
        let blanks = "\n".repeat(300_000);
        std::fs::write(&path, format!("{blanks}1,2,3\n4,5,6\n")).unwrap();
        for count in [1, 2, 3] {
            assert_eq!(
                all_shares(&path, &o, count),
                triples(&load_ratings(&path, &o).unwrap()),
                "{count} shares"
            );
        }
        // One line, many shares: one share holds it.
        std::fs::write(&path, "1,2,3").unwrap();
        assert_eq!(all_shares(&path, &o, 5).len(), 1);
        assert!(load_share(&path, &o, Share { index: 5, count: 5 }).is_err());
    }

    #[test]
    fn a_bad_line_is_named_by_its_line_in_the_file_whichever_share_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.tsv");
        let mut text: String = (0..500).map(|i| format!("{}\t{}\t4\n", i % 17, i % 11)).collect();
        text.push_str("7\tx\tnot-a-number\n");
        text.extend((0..500).map(|i| format!("{}\t{}\t3\n", i % 13, i % 5)));
        std::fs::write(&path, &text).unwrap();
        let o = LoadOptions::default();
        let whole = load_ratings(&path, &o).unwrap_err().to_string();
        assert!(whole.contains(":501"), "{whole}");
        for count in [1, 2, 3, 8] {
            let errors: Vec<String> = (0..count)
                .filter_map(|index| load_share(&path, &o, Share { index, count }).err().map(|e| e.to_string()))
                .collect();
            assert_eq!(errors, vec![whole.clone()], "{count} shares");
        }
    }

    #[test]
    fn a_directory_of_part_files_is_read_in_name_order_each_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let parts = dir.path().join("ratings");
        std::fs::create_dir(&parts).unwrap();
        let part = |n: usize, rows: std::ops::Range<usize>| {
            let mut t = String::from("userId,movieId,rating\n");
            t.extend(rows.map(|r| format!("{},{},{}\n", r % 41, r % 23, 1 + r % 5)));
            std::fs::write(parts.join(format!("part-{n:05}.csv")), t).unwrap();
        };
        part(2, 300..450);
        part(0, 0..200);
        part(1, 200..300);
        std::fs::write(parts.join("part-00003.csv"), "").unwrap();
        std::fs::write(parts.join("_SUCCESS"), "").unwrap();
        std::fs::write(parts.join(".part-00000.csv.crc"), "garbage").unwrap();
        let names: Vec<String> = input_files(&parts)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["part-00000.csv", "part-00001.csv", "part-00002.csv", "part-00003.csv"]);
        let o = LoadOptions::default();
        let whole = load_ratings(&parts, &o).unwrap();
        let expected: Vec<(String, String, f32, Option<i64>)> = (0..450)
            .map(|r| ((r % 41).to_string(), (r % 23).to_string(), (1 + r % 5) as f32, None))
            .collect();
        assert_eq!(triples(&whole), expected);
        for count in [1, 2, 3, 4, 9] {
            assert_eq!(all_shares(&parts, &o, count), expected, "{count} shares");
        }
        // A bad line names its part file.
        std::fs::write(parts.join("part-00001.csv"), "a,b,c\n1,2,3\n1,2,oops\n").unwrap();
        let e = load_ratings(&parts, &o).unwrap_err().to_string();
        assert!(e.contains("part-00001.csv:3"), "{e}");
        let empty = dir.path().join("nothing");
        std::fs::create_dir(&empty).unwrap();
        assert!(load_ratings(&empty, &o).is_err());
    }
}
