//! Reading ratings files into [`RawRatings`].
//!
//! The whole file is read into memory and parsed in place, with no
//! allocation per line:
//! * lines and fields are found eight bytes at a time (SWAR) for the one-byte
//!   and `::` separators; quoted CSV lines and the whitespace format take a
//!   general path;
//! * an id that is a canonical decimal (`17`, not `017` or `+17`) is kept as
//!   its value and mapped to a dense id afterwards in one tight pass over the
//!   rows, in row order (a small direct array instead of a hash look-up and
//!   cache miss per line); other ids are interned in a hash table keyed by
//!   their bytes (borrowed from the buffer; ids up to 23 bytes inline). Both
//!   keep the first-seen order of the file, and tokens keep the exact text;
//! * ratings go through a Clinger fast path for short decimals (bit-identical
//!   to `str::parse::<f32>`).
//!
//! Large files are cut at line boundaries into chunks parsed in parallel and
//! merged in chunk order, so the result does not depend on the thread count.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::path::Path;

use memchr::{memchr, memmem};
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::format::detect_format;
use super::{DataError, Format, LoadOptions, RawRatings};

/// Files at least this large are parsed in parallel chunks.
const PARALLEL_MIN_BYTES: usize = 8 << 20;
/// Smallest chunk of the parallel parse.
const CHUNK_MIN_BYTES: usize = 2 << 20;
/// Skipped lines logged one by one (the rest are only counted).
const SKIPS_LOGGED: usize = 5;

/// Read and parse a ratings file (see [`parse_ratings`]).
pub fn load_ratings(path: &Path, opts: &LoadOptions) -> Result<RawRatings, DataError> {
    let t0 = std::time::Instant::now();
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let raw = parse_ratings(&bytes, path, opts)?;
    let secs = t0.elapsed().as_secs_f64();
    tracing::debug!(
        path = %path.display(),
        rows = raw.len(),
        users = raw.user_tokens.len(),
        items = raw.item_tokens.len(),
        seconds = secs,
        mb_per_s = bytes.len() as f64 / 1e6 / secs.max(1e-9),
        "ratings loaded"
    );
    Ok(raw)
}

/// Parse ratings already in memory; `source` names them in messages and in
/// `RawRatings::source`.
///
/// Rows keep file order; a UTF-8 BOM, `\r\n` line ends and blank lines are
/// accepted. A malformed line is a [`DataError::Malformed`] naming its
/// 1-based line, unless `opts.skip_invalid` (then it is counted in
/// `skipped_lines`). No rows at all is [`DataError::Empty`].
pub fn parse_ratings(bytes: &[u8], source: &Path, opts: &LoadOptions) -> Result<RawRatings, DataError> {
    let data = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let empty = || DataError::Empty {
        path: source.to_path_buf(),
    };

    // The first non-blank line: format detection and header.
    let (first_start, first_end, first_no) = {
        let (mut pos, mut no) = (0usize, 0u64);
        loop {
            if pos >= data.len() {
                return Err(empty());
            }
            let end = memchr(b'\n', &data[pos..]).map_or(data.len(), |k| pos + k);
            no += 1;
            if !is_blank(strip_cr(&data[pos..end])) {
                break (pos, end, no);
            }
            pos = end + 1;
        }
    };
    let first_line = strip_cr(&data[first_start..first_end]);
    let format = match opts.format {
        Format::Auto => detect_format(source, &String::from_utf8_lossy(first_line))?,
        f => f,
    };
    let layout = Layout::new(format, opts);
    let header = opts
        .header
        .or(format.fixed_header())
        .unwrap_or_else(|| layout.looks_like_header(first_line));
    let (body, base_line) = if header {
        (data.get(first_end + 1..).unwrap_or(&[]), first_no)
    } else {
        (&data[first_start..], first_no - 1)
    };

    // Parse: one chunk, or line-aligned chunks in parallel.
    let threads = rayon::current_num_threads();
    let chunks: Vec<Chunk<'_>> = if body.len() >= PARALLEL_MIN_BYTES && threads > 1 {
        let target = (body.len() / (threads * 2)).max(CHUNK_MIN_BYTES);
        line_chunks(body, target)
            .into_par_iter()
            .map(|r| layout.parse_chunk(&body[r]))
            .collect()
    } else {
        vec![layout.parse_chunk(body)]
    };

    // The first error in file order, and the skipped lines.
    let mut line_off = base_line;
    let mut skips = Vec::new();
    let mut skipped = 0u64;
    for c in &chunks {
        if let Some((line, problem)) = &c.error {
            return Err(DataError::Malformed {
                path: source.to_path_buf(),
                line: line_off + line,
                problem: problem.clone(),
            });
        }
        skipped += c.skipped;
        for (line, problem) in &c.skips {
            if skips.len() < SKIPS_LOGGED {
                skips.push((line_off + line, problem.clone()));
            }
        }
        line_off += c.lines;
    }
    for (line, problem) in &skips {
        tracing::warn!("{}:{}: {} (line skipped)", source.display(), line, problem);
    }
    if skipped > skips.len() as u64 {
        tracing::warn!("{}: {} invalid lines skipped in all", source.display(), skipped);
    }

    let mut raw = merge(chunks, layout.has_ts);
    if raw.is_empty() {
        return Err(empty());
    }
    raw.source = source.display().to_string();
    raw.skipped_lines = skipped;
    if let (Some(_), None) = (opts.timestamp_col, &raw.timestamps) {
        tracing::debug!("{}: no timestamps (or not on every row)", source.display());
    }
    Ok(raw)
}

/// Ranges of whole lines, each about `target` bytes long.
fn line_chunks(body: &[u8], target: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < body.len() {
        let want = start + target;
        let end = if want >= body.len() {
            body.len()
        } else {
            memchr(b'\n', &body[want..]).map_or(body.len(), |k| want + k + 1)
        };
        out.push(start..end);
        start = end;
    }
    out
}

/// Concatenate chunks, re-numbering their ids into one first-seen order.
fn merge<'a>(chunks: Vec<Chunk<'a>>, has_ts: bool) -> RawRatings {
    let n: usize = chunks.iter().map(|c| c.ratings.len()).sum();
    let ts_count: u64 = chunks.iter().map(|c| c.ts_count).sum();
    let mut it = chunks.into_iter();
    let Some(mut acc) = it.next() else {
        return RawRatings::default();
    };
    acc.users.reserve(n - acc.users.len());
    acc.items.reserve(n - acc.items.len());
    acc.ratings.reserve(n - acc.ratings.len());
    if has_ts {
        acc.ts.reserve(n - acc.ts.len());
    }
    for c in it {
        let remap = |int: Interner<'a>, acc_int: &mut Interner<'a>| -> Vec<u32> {
            int.tokens.into_iter().map(|t| OTHER | acc_int.get_or_insert(t)).collect()
        };
        let (ru, ri) = (remap(c.user_int, &mut acc.user_int), remap(c.item_int, &mut acc.item_int));
        let code = |x: u32, r: &[u32]| {
            if x & OTHER != 0 {
                r[(x & !OTHER) as usize]
            } else {
                x
            }
        };
        acc.users.extend(c.users.iter().map(|&u| code(u, &ru)));
        acc.items.extend(c.items.iter().map(|&i| code(i, &ri)));
        acc.user_max = acc.user_max.max(c.user_max);
        acc.item_max = acc.item_max.max(c.item_max);
        acc.ratings.extend_from_slice(&c.ratings);
        acc.ts.extend_from_slice(&c.ts);
    }
    let timestamps = if has_ts && ts_count == n as u64 && n > 0 {
        Some(acc.ts)
    } else {
        if ts_count > 0 {
            tracing::warn!("timestamps present on only {ts_count} of {n} rows; ignoring them");
        }
        None
    };
    let user_tokens = assign(&mut acc.users, acc.user_int.tokens, acc.user_max);
    let item_tokens = assign(&mut acc.items, acc.item_int.tokens, acc.item_max);
    RawRatings {
        source: String::new(),
        user_tokens,
        item_tokens,
        users: acc.users,
        items: acc.items,
        ratings: acc.ratings,
        timestamps,
        skipped_lines: 0,
    }
}

/// Replace row codes by ids in first-seen order; returns the id tokens.
fn assign(codes: &mut [u32], others: Vec<Cow<'_, [u8]>>, max_num: u32) -> Vec<String> {
    let mut tokens: Vec<String> = Vec::new();
    let mut other_id = vec![u32::MAX; others.len()];
    let mut new_other = |o: usize, tokens: &mut Vec<String>| {
        if other_id[o] == u32::MAX {
            other_id[o] = tokens.len() as u32;
            tokens.push(String::from_utf8_lossy(&others[o]).into_owned());
        }
        other_id[o]
    };
    // Decimal values -> id + 1 (0 = not seen yet): an array unless the values are sparse.
    if (max_num as usize) < 2 * codes.len() + (1 << 20) {
        let mut dense = vec![0u32; max_num as usize + 1];
        for x in codes.iter_mut() {
            if *x & OTHER != 0 {
                *x = new_other((*x & !OTHER) as usize, &mut tokens);
                continue;
            }
            let slot = &mut dense[*x as usize];
            if *slot == 0 {
                tokens.push(x.to_string());
                *slot = tokens.len() as u32;
            }
            *x = *slot - 1;
        }
    } else {
        let mut map: FxHashMap<u32, u32> = FxHashMap::default();
        for x in codes.iter_mut() {
            if *x & OTHER != 0 {
                *x = new_other((*x & !OTHER) as usize, &mut tokens);
                continue;
            }
            let next = tokens.len() as u32;
            let id = *map.entry(*x).or_insert(next);
            if id == next {
                tokens.push(x.to_string());
            }
            *x = id;
        }
    }
    tokens
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI7: u64 = 0x7F7F_7F7F_7F7F_7F7F;

/// 0x80 in every byte of `x` that is zero, 0 elsewhere (exact, no carries).
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    !(((x & HI7).wrapping_add(HI7)) | x | HI7)
}

/// The eight bytes at `i` (little endian), zero-padded past the end.
#[inline(always)]
fn word_at(b: &[u8], i: usize) -> u64 {
    match b.get(i..i + 8) {
        Some(s) => u64::from_le_bytes(s.try_into().unwrap()),
        None => {
            let mut t = [0u8; 8];
            t[..b.len() - i].copy_from_slice(&b[i..]);
            u64::from_le_bytes(t)
        }
    }
}

/// An id of at most 23 bytes packed with its length into three words: the
/// tables compare and hash these inline instead of following a pointer into
/// the file buffer (a cache miss per lookup on large files).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Short([u64; 3]);

impl Short {
    #[inline]
    fn new(key: &[u8]) -> Option<Short> {
        if key.len() > 23 {
            return None;
        }
        let mut b = [0u8; 24];
        b[..key.len()].copy_from_slice(key);
        b[23] = key.len() as u8;
        let w = |k: usize| u64::from_le_bytes(b[8 * k..8 * k + 8].try_into().unwrap());
        Some(Short([w(0), w(1), w(2)]))
    }
}

/// Row codes while parsing: a canonical decimal id is its value (< 10^9);
/// any other id is `OTHER | its index in the chunk's interner`. Final ids are
/// assigned from the codes in row order ([`assign`]), which keeps the first-
/// seen order and turns the id look-ups into a tight loop over a small
/// array instead of a cache miss inside the parsing of every line.
const OTHER: u32 = 1 << 31;

/// The value of a decimal id without sign or leading zeros, up to 9 digits.
#[inline]
fn canonical_int(key: &[u8]) -> Option<u32> {
    if key.is_empty() || key.len() > 9 || (key[0] == b'0' && key.len() > 1) {
        return None;
    }
    let mut v = 0u32;
    for &b in key {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as u32;
    }
    Some(v)
}

impl std::hash::Hash for Short {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [a, b, c] = self.0;
        let mut h = (a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b).wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ c;
        h = (h ^ (h >> 29)).wrapping_mul(0x94D0_49BB_1331_11EB);
        state.write_u64(h ^ (h >> 32));
    }
}

/// Passes on the one `u64` that [`Short`] hashes to.
#[derive(Default)]
struct WordHasher(u64);

impl std::hash::Hasher for WordHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

/// Ids other than canonical decimals, in first-seen order, keyed by their
/// bytes (borrowed from the file).
#[derive(Default)]
struct Interner<'a> {
    short: HashMap<Short, u32, BuildHasherDefault<WordHasher>>,
    long: FxHashMap<Cow<'a, [u8]>, u32>,
    tokens: Vec<Cow<'a, [u8]>>,
    /// The last short id found: sorted files repeat the same user line after line.
    last: Option<(Short, u32)>,
}

impl<'a> Interner<'a> {
    #[inline]
    fn find(&mut self, key: &[u8]) -> Option<u32> {
        match Short::new(key) {
            Some(s) => {
                if let Some((k, id)) = self.last {
                    if k == s {
                        return Some(id);
                    }
                }
                let id = *self.short.get(&s)?;
                self.last = Some((s, id));
                Some(id)
            }
            None => self.long.get(key).copied(),
        }
    }

    fn insert(&mut self, key: Cow<'a, [u8]>) -> u32 {
        let id = self.tokens.len() as u32;
        match Short::new(&key) {
            Some(s) => {
                self.short.insert(s, id);
                self.last = Some((s, id));
            }
            None => {
                self.long.insert(key.clone(), id);
            }
        }
        self.tokens.push(key);
        id
    }

    fn get_or_insert(&mut self, key: Cow<'a, [u8]>) -> u32 {
        match self.find(&key) {
            Some(id) => id,
            None => self.insert(key),
        }
    }
}

/// What one chunk of lines produced (line numbers local to the chunk, 1-based).
struct Chunk<'a> {
    users: Vec<u32>,
    items: Vec<u32>,
    ratings: Vec<f32>,
    ts: Vec<i64>,
    ts_count: u64,
    /// Ids other than canonical decimals (see [`code`]).
    user_int: Interner<'a>,
    item_int: Interner<'a>,
    /// The largest canonical decimal id.
    user_max: u32,
    item_max: u32,
    /// Physical lines in the chunk.
    lines: u64,
    skipped: u64,
    skips: Vec<(u64, String)>,
    /// The first malformed line (parsing stops there unless skipping).
    error: Option<(u64, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Sep {
    /// One byte (TAB).
    Byte(u8),
    /// Comma, with double-quoted fields.
    Csv,
    /// `::`.
    DoubleColon,
    /// Runs of spaces and tabs.
    Whitespace,
}

/// Slots of the fields a line is read for.
const USER: usize = 0;
// (slot 1 is the item)
const RATING: usize = 2;
const TS: usize = 3;
const NONE: usize = usize::MAX;

/// The resolved reading rules.
#[derive(Clone)]
struct Layout {
    sep: Sep,
    /// Column of each slot (`NONE` when absent).
    cols: [usize; 4],
    /// Fields a line needs (user, item and rating columns).
    need: usize,
    /// Last column of interest: splitting stops after it.
    max_col: usize,
    has_rating: bool,
    has_ts: bool,
    max_id_len: usize,
    skip_invalid: bool,
    dcolon: memmem::Finder<'static>,
}

#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r')
}

#[inline]
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[inline]
fn is_blank(line: &[u8]) -> bool {
    match line.first() {
        None => true,
        Some(&b) if !is_ws(b) => false,
        _ => line.iter().all(|&b| is_ws(b)),
    }
}

#[inline]
fn trim(mut f: &[u8]) -> &[u8] {
    while let [b, rest @ ..] = f {
        if !is_ws(*b) {
            break;
        }
        f = rest;
    }
    while let [rest @ .., b] = f {
        if !is_ws(*b) {
            break;
        }
        f = rest;
    }
    f
}

/// A field as shown in a message (lossy, shortened).
fn show(f: &[u8]) -> String {
    let s = String::from_utf8_lossy(f);
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s.into_owned()
    }
}

impl Layout {
    fn new(format: Format, opts: &LoadOptions) -> Layout {
        let sep = match format {
            Format::Ml100k | Format::Tsv => Sep::Byte(b'\t'),
            Format::Ml1m => Sep::DoubleColon,
            Format::MlLatest | Format::Csv | Format::Auto => Sep::Csv,
            Format::Whitespace => Sep::Whitespace,
        };
        let rating = opts.rating_col.unwrap_or(NONE);
        let ts = opts.timestamp_col.unwrap_or(NONE);
        let need = opts.user_col.max(opts.item_col).max(opts.rating_col.unwrap_or(0)) + 1;
        let max_col = (need - 1).max(opts.timestamp_col.unwrap_or(0));
        Layout {
            sep,
            cols: [opts.user_col, opts.item_col, rating, ts],
            need,
            max_col,
            has_rating: opts.rating_col.is_some(),
            has_ts: opts.timestamp_col.is_some(),
            max_id_len: opts.max_id_len,
            skip_invalid: opts.skip_invalid,
            dcolon: memmem::Finder::new(b"::").into_owned(),
        }
    }

    /// Header rule: the rating field (or, without one, the first field) is not a number.
    fn looks_like_header(&self, line: &[u8]) -> bool {
        let col = if self.has_rating { self.cols[RATING] } else { 0 };
        let probe = Layout {
            cols: [col, NONE, NONE, NONE],
            max_col: col,
            ..self.clone()
        };
        let mut f: [Cow<'_, [u8]>; 4] = Default::default();
        let col = match probe.split(line, &mut f) {
            Ok(found) if found > col => f[USER].clone(),
            _ => {
                let probe0 = Layout {
                    cols: [0, NONE, NONE, NONE],
                    max_col: 0,
                    ..self.clone()
                };
                match probe0.split(line, &mut f) {
                    Ok(_) => f[USER].clone(),
                    Err(_) => return false,
                }
            }
        };
        !std::str::from_utf8(&col).is_ok_and(|s| s.trim().parse::<f64>().is_ok())
    }

    #[inline]
    fn put<'a>(&self, idx: usize, field: Cow<'a, [u8]>, out: &mut [Cow<'a, [u8]>; 4]) {
        for (slot, &col) in out.iter_mut().zip(&self.cols) {
            if col == idx {
                *slot = field.clone();
            }
        }
    }

    /// Split a line into the slots; returns the number of fields seen (all
    /// of them when fewer than needed, else at least `max_col + 1`).
    fn split<'a>(&self, line: &'a [u8], out: &mut [Cow<'a, [u8]>; 4]) -> Result<usize, String> {
        let n = line.len();
        let mut idx = 0usize;
        let mut pos = 0usize;
        if self.sep == Sep::Whitespace {
            loop {
                while pos < n && is_ws(line[pos]) {
                    pos += 1;
                }
                if pos >= n {
                    return Ok(idx);
                }
                let start = pos;
                while pos < n && !is_ws(line[pos]) {
                    pos += 1;
                }
                self.put(idx, Cow::Borrowed(&line[start..pos]), out);
                idx += 1;
                if idx > self.max_col {
                    return Ok(idx);
                }
            }
        }
        loop {
            let rest = &line[pos..];
            let (field, next): (Cow<'a, [u8]>, Option<usize>) = match self.sep {
                Sep::Byte(b) => match memchr(b, rest) {
                    Some(k) => (Cow::Borrowed(trim(&rest[..k])), Some(pos + k + 1)),
                    None => (Cow::Borrowed(trim(rest)), None),
                },
                Sep::DoubleColon => match self.dcolon.find(rest) {
                    Some(k) => (Cow::Borrowed(trim(&rest[..k])), Some(pos + k + 2)),
                    None => (Cow::Borrowed(trim(rest)), None),
                },
                _ => {
                    let lead = rest.iter().take_while(|&&b| is_ws(b)).count();
                    if rest.get(lead) == Some(&b'"') {
                        let (f, used) = quoted(&rest[lead..], idx)?;
                        let after = pos + lead + used;
                        (f, if after < n { Some(after + 1) } else { None })
                    } else {
                        match memchr(b',', rest) {
                            Some(k) => (Cow::Borrowed(trim(&rest[..k])), Some(pos + k + 1)),
                            None => (Cow::Borrowed(trim(rest)), None),
                        }
                    }
                }
            };
            self.put(idx, field, out);
            idx += 1;
            match next {
                Some(p) if idx <= self.max_col => pos = p,
                _ => return Ok(idx),
            }
        }
    }

    /// Parse a chunk of whole lines.
    fn parse_chunk<'a>(&self, bytes: &'a [u8]) -> Chunk<'a> {
        // Row capacity from the line length of the first 64 KiB.
        let sample = &bytes[..bytes.len().min(1 << 16)];
        let per_line = sample.len() / memchr::memchr_iter(b'\n', sample).count().max(1);
        let cap = bytes.len() / per_line.max(1) + bytes.len() / per_line.max(1) / 16 + 16;
        let mut c = Chunk {
            users: Vec::with_capacity(cap),
            items: Vec::with_capacity(cap),
            ratings: Vec::with_capacity(cap),
            ts: Vec::with_capacity(if self.has_ts { cap } else { 0 }),
            ts_count: 0,
            user_int: Interner::default(),
            item_int: Interner::default(),
            user_max: 0,
            item_max: 0,
            lines: 0,
            skipped: 0,
            skips: Vec::new(),
            error: None,
        };
        let n = bytes.len();
        let mut start = 0;
        while start < n {
            let mut f: [&'a [u8]; 4] = [&[]; 4];
            let (end, found) = match self.sep {
                Sep::Byte(b) => self.scan_line::<false, false>(bytes, start, b, &mut f),
                Sep::Csv => self.scan_line::<true, false>(bytes, start, b',', &mut f),
                Sep::DoubleColon => self.scan_line::<false, true>(bytes, start, b':', &mut f),
                Sep::Whitespace => (memchr(b'\n', &bytes[start..]).map_or(n, |k| start + k), None),
            };
            let line = strip_cr(&bytes[start..end]);
            start = end + 1;
            c.lines += 1;
            if is_blank(line) {
                continue;
            }
            let res = match found {
                Some(found) => self.row(&mut c, found, Cow::Borrowed(f[USER]), Cow::Borrowed(f[1]), f[RATING], f[TS]),
                None => {
                    let mut f: [Cow<'a, [u8]>; 4] = Default::default();
                    match self.split(line, &mut f) {
                        Ok(found) => {
                            let [user, item, rating, ts] = f;
                            self.row(&mut c, found, user, item, &rating, &ts)
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(problem) = res {
                if self.skip_invalid {
                    c.skipped += 1;
                    if c.skips.len() < SKIPS_LOGGED {
                        c.skips.push((c.lines, problem));
                    }
                } else {
                    c.error = Some((c.lines, problem));
                    break;
                }
            }
        }
        c
    }

    /// Scan the line starting at `start` eight bytes at a time for the
    /// separator (`DC`: doubled, `::`) and the newline, putting the fields
    /// of interest into `out` (trimmed). Returns the end of the line (its
    /// `\n`, or the end of the chunk) and the number of fields seen as
    /// [`Layout::split`] counts them, or `None` when the line needs the
    /// general `split` (`Q`: a double quote, CSV quoting).
    #[inline(always)]
    fn scan_line<'a, const Q: bool, const DC: bool>(
        &self,
        bytes: &'a [u8],
        start: usize,
        sep: u8,
        out: &mut [&'a [u8]; 4],
    ) -> (usize, Option<usize>) {
        let n = bytes.len();
        let (sepw, nlw, qw) = (LO * sep as u64, LO * b'\n' as u64, LO * b'"' as u64);
        let (mut idx, mut fstart, mut i) = (0usize, start, start);
        while i < n {
            let w = word_at(bytes, i);
            let mut m = zero_bytes(w ^ sepw) | zero_bytes(w ^ nlw);
            if Q {
                m |= zero_bytes(w ^ qw);
            }
            while m != 0 {
                let p = i + (m.trailing_zeros() / 8) as usize;
                m &= m - 1;
                let b = bytes[p];
                if b == b'\n' {
                    self.put_field(idx, trim(&bytes[fstart..p]), out);
                    return (p, Some(idx + 1));
                }
                if Q && b == b'"' {
                    return (memchr(b'\n', &bytes[p..]).map_or(n, |k| p + k), None);
                }
                if DC && (p < fstart || bytes.get(p + 1) != Some(&b':')) {
                    continue;
                }
                self.put_field(idx, trim(&bytes[fstart..p]), out);
                idx += 1;
                fstart = p + 1 + DC as usize;
                if idx > self.max_col {
                    return (memchr(b'\n', &bytes[fstart.min(n)..]).map_or(n, |k| fstart + k), Some(idx));
                }
            }
            i += 8;
        }
        self.put_field(idx, trim(&bytes[fstart.min(n)..n]), out);
        (n, Some(idx + 1))
    }

    #[inline(always)]
    fn put_field<'a>(&self, idx: usize, field: &'a [u8], out: &mut [&'a [u8]; 4]) {
        for (s, &col) in self.cols.iter().enumerate() {
            if col == idx {
                out[s] = field;
            }
        }
    }

    /// Check the fields of a line and add its row.
    #[inline]
    fn row<'a>(
        &self,
        c: &mut Chunk<'a>,
        found: usize,
        user: Cow<'a, [u8]>,
        item: Cow<'a, [u8]>,
        rating: &[u8],
        ts: &[u8],
    ) -> Result<(), String> {
        if found < self.need {
            return Err(format!("expected at least {} fields, found {}", self.need, found));
        }
        if user.is_empty() {
            return Err("empty user id".into());
        }
        if item.is_empty() {
            return Err("empty item id".into());
        }
        for (what, id) in [("user", &user), ("item", &item)] {
            if id.len() > self.max_id_len {
                return Err(format!("{what} id is {} bytes long (limit {})", id.len(), self.max_id_len));
            }
        }
        let value = if self.has_rating { parse_rating(rating)? } else { 1.0 };
        let stamp = if self.has_ts && found > self.cols[TS] && !ts.is_empty() {
            Some(parse_ts(ts)?)
        } else {
            None
        };
        // Canonical decimals are their own code; other ids are interned now
        // (validated before anything is added, so a bad line leaves no trace).
        let (un, inum) = (canonical_int(&user), canonical_int(&item));
        let u = if un.is_none() { c.user_int.find(&user) } else { None };
        if un.is_none() && u.is_none() && std::str::from_utf8(&user).is_err() {
            return Err("user id is not valid UTF-8".into());
        }
        let i = if inum.is_none() { c.item_int.find(&item) } else { None };
        if inum.is_none() && i.is_none() && std::str::from_utf8(&item).is_err() {
            return Err("item id is not valid UTF-8".into());
        }
        c.users.push(match un {
            Some(v) => {
                c.user_max = c.user_max.max(v);
                v
            }
            None => OTHER | u.unwrap_or_else(|| c.user_int.insert(user)),
        });
        c.items.push(match inum {
            Some(v) => {
                c.item_max = c.item_max.max(v);
                v
            }
            None => OTHER | i.unwrap_or_else(|| c.item_int.insert(item)),
        });
        c.ratings.push(value);
        if self.has_ts {
            c.ts.push(stamp.unwrap_or(0));
            c.ts_count += stamp.is_some() as u64;
        }
        Ok(())
    }
}

/// A double-quoted CSV field at the start of `s` (`""` is a quote); returns
/// the content and the bytes used up to (not including) the next comma.
fn quoted(s: &[u8], idx: usize) -> Result<(Cow<'_, [u8]>, usize), String> {
    debug_assert_eq!(s[0], b'"');
    let mut owned: Option<Vec<u8>> = None;
    let mut pos = 1;
    loop {
        let Some(k) = memchr(b'"', &s[pos..]) else {
            return Err(format!("field {} has no closing quote", idx + 1));
        };
        let q = pos + k;
        if s.get(q + 1) == Some(&b'"') {
            owned.get_or_insert_with(Vec::new).extend_from_slice(&s[pos..=q]);
            pos = q + 2;
            continue;
        }
        let content = match owned {
            Some(mut v) => {
                v.extend_from_slice(&s[pos..q]);
                Cow::Owned(v)
            }
            None => Cow::Borrowed(&s[1..q]),
        };
        let mut end = q + 1;
        while end < s.len() && is_ws(s[end]) {
            end += 1;
        }
        if end < s.len() && s[end] != b',' {
            return Err(format!("unexpected text after the closing quote of field {}", idx + 1));
        }
        return Ok((content, end));
    }
}

const POW10: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

/// Decimals of at most 7 significant digits and 10 decimals (`3`, `4.5`, `-0.25`): both the digits and
/// the power of ten are exact in f32, so one division is correctly rounded,
/// i.e. equal to `str::parse::<f32>` (Clinger's fast path).
#[inline]
fn fast_decimal(f: &[u8]) -> Option<f32> {
    let (neg, d) = match f.first()? {
        b'-' => (true, &f[1..]),
        b'+' => (false, &f[1..]),
        _ => (false, f),
    };
    let (mut m, mut digits, mut sig, mut frac, mut dot) = (0u32, 0u32, 0u32, 0usize, false);
    for &b in d {
        match b {
            b'0'..=b'9' => {
                // Leading zeros do not count against the 7 significant digits.
                if m != 0 || b != b'0' {
                    sig += 1;
                    if sig > 7 {
                        return None;
                    }
                }
                digits += 1;
                m = m * 10 + (b - b'0') as u32;
                frac += dot as usize;
                if frac > 10 {
                    return None;
                }
            }
            b'.' if !dot => dot = true,
            _ => return None,
        }
    }
    if digits == 0 {
        return None;
    }
    let v = m as f32 / POW10[frac];
    Some(if neg { -v } else { v })
}

fn parse_rating(f: &[u8]) -> Result<f32, String> {
    // At most 7 significant digits and 10 decimals: always inside the range.
    if let Some(v) = fast_decimal(f) {
        return Ok(v);
    }
    match std::str::from_utf8(f).ok().and_then(|s| s.parse::<f32>().ok()) {
        Some(v) if !v.is_finite() => Err(format!("rating '{}' is not finite", show(f))),
        Some(v) if v.abs() > crate::limits::MAX_ABS_VALUE => Err(format!(
            "rating '{}' is outside the supported range ±{:e}",
            show(f),
            crate::limits::MAX_ABS_VALUE
        )),
        Some(v) => Ok(v),
        None => Err(format!("rating '{}' is not a number", show(f))),
    }
}

#[inline]
fn parse_ts(f: &[u8]) -> Result<i64, String> {
    let (neg, d) = match f.first() {
        Some(b'-') => (true, &f[1..]),
        Some(b'+') => (false, &f[1..]),
        _ => (false, f),
    };
    if !d.is_empty() && d.len() <= 18 {
        let mut v = 0i64;
        let mut ok = true;
        for &b in d {
            let x = b.wrapping_sub(b'0');
            if x > 9 {
                ok = false;
                break;
            }
            v = v * 10 + x as i64;
        }
        if ok {
            return Ok(if neg { -v } else { v });
        }
    }
    std::str::from_utf8(f)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| format!("timestamp '{}' is not an integer", show(f)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn opts(format: Format) -> LoadOptions {
        LoadOptions {
            format,
            ..Default::default()
        }
    }

    fn parse(text: &str, name: &str, o: &LoadOptions) -> Result<RawRatings, DataError> {
        parse_ratings(text.as_bytes(), Path::new(name), o)
    }

    fn rows(r: &RawRatings) -> Vec<(String, String, f32)> {
        (0..r.len())
            .map(|k| r.row(k))
            .map(|(u, i, v)| (u.to_string(), i.to_string(), v))
            .collect()
    }

    fn t(u: &str, i: &str, v: f32) -> (String, String, f32) {
        (u.into(), i.into(), v)
    }

    /// (line, problem) of a Malformed error.
    fn malformed(res: Result<RawRatings, DataError>) -> (u64, String) {
        match res {
            Err(DataError::Malformed { line, problem, .. }) => (line, problem),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn ml100k_tab_separated_with_timestamps_and_interning() {
        let r = parse(
            "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t1\t878887116\n",
            "u.data",
            &opts(Format::Auto),
        )
        .unwrap();
        assert_eq!(rows(&r), vec![t("196", "242", 3.0), t("186", "302", 3.0), t("196", "377", 1.0)]);
        assert_eq!(r.user_tokens, vec!["196", "186"]);
        assert_eq!(r.item_tokens, vec!["242", "302", "377"]);
        assert_eq!(r.users, vec![0, 1, 0]);
        assert_eq!(r.timestamps, Some(vec![881250949, 891717742, 878887116]));
        assert_eq!(r.source, "u.data");
        assert_eq!(r.skipped_lines, 0);
    }

    #[test]
    fn ml1m_double_colon_and_crlf() {
        let r = parse("1::1193::5::978300760\r\n1::661::3::978302109\r\n", "x.txt", &opts(Format::Auto)).unwrap();
        assert_eq!(rows(&r), vec![t("1", "1193", 5.0), t("1", "661", 3.0)]);
        assert_eq!(r.timestamps, Some(vec![978300760, 978302109]));
        // Single colons belong to the id.
        let r = parse("a:b::c::4\n", "ratings.dat", &opts(Format::Auto)).unwrap();
        assert_eq!(rows(&r), vec![t("a:b", "c", 4.0)]);
        assert_eq!(r.timestamps, None);
    }

    #[test]
    fn ml_latest_header_always_skipped_and_bom() {
        let text = "\u{feff}userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n";
        let r = parse(text, "ratings.csv", &opts(Format::Auto)).unwrap();
        assert_eq!(rows(&r), vec![t("1", "1", 4.0), t("1", "3", 4.5)]);
        assert_eq!(r.timestamps, Some(vec![964982703, 964981247]));
        // Explicit ml-latest skips the first line even when it looks like data.
        let r = parse("1,1,4.0\n2,2,3.0\n", "r.csv", &opts(Format::MlLatest)).unwrap();
        assert_eq!(rows(&r), vec![t("2", "2", 3.0)]);
        // The header option wins over the format rule.
        let o = LoadOptions {
            header: Some(false),
            ..opts(Format::MlLatest)
        };
        assert_eq!(parse("1,1,4.0\n2,2,3.0\n", "r.csv", &o).unwrap().len(), 2);
    }

    #[test]
    fn csv_header_detection_trimming_and_opaque_ids() {
        let r = parse("user,item,rating\n 007 , a ,5\n7,a, 2.5 \n", "r.csv", &opts(Format::Auto)).unwrap();
        assert_eq!(rows(&r), vec![t("007", "a", 5.0), t("7", "a", 2.5)]);
        assert_eq!(r.user_tokens, vec!["007", "7"]);
        assert_eq!(r.timestamps, None);
        // Non-numeric ids with a numeric rating: no header.
        let r = parse("alice,book,5\nbob,book,4\n", "r.csv", &opts(Format::Csv)).unwrap();
        assert_eq!(r.len(), 2);
        // A header that follows blank lines.
        let r = parse("\n\nu,i,r\n\n1,2,3\n", "r.csv", &opts(Format::Csv)).unwrap();
        assert_eq!(rows(&r), vec![t("1", "2", 3.0)]);
        // header: Some(true) on a file whose first line looks like data.
        let o = LoadOptions {
            header: Some(true),
            ..opts(Format::Csv)
        };
        assert_eq!(rows(&parse("1,2,3\n4,5,1\n", "r.csv", &o).unwrap()), vec![t("4", "5", 1.0)]);
    }

    #[test]
    fn csv_quoted_fields() {
        let r = parse("\"a,b\",\"say \"\"hi\"\"\",\"4\"\n  \"x\" ,y,1\n", "r.csv", &opts(Format::Csv)).unwrap();
        assert_eq!(rows(&r), vec![t("a,b", "say \"hi\"", 4.0), t("x", "y", 1.0)]);
        let (line, p) = malformed(parse("1,2,3\n\"a,2,3\n", "r.csv", &opts(Format::Csv)));
        assert_eq!((line, p.as_str()), (2, "field 1 has no closing quote"));
        let (line, p) = malformed(parse("1,\"2\"x,3\n", "r.csv", &opts(Format::Csv)));
        assert_eq!((line, p.as_str()), (1, "unexpected text after the closing quote of field 2"));
    }

    #[test]
    fn tsv_and_whitespace() {
        let r = parse("user\titem\trating\nu1\ti1\t4\n", "r.tsv", &opts(Format::Auto)).unwrap();
        assert_eq!(rows(&r), vec![t("u1", "i1", 4.0)]);
        let r = parse("  1   2 \t 3.5  100\n\n3 4 1\n", "r.ws", &opts(Format::Whitespace)).unwrap();
        assert_eq!(rows(&r), vec![t("1", "2", 3.5), t("3", "4", 1.0)]);
        // Timestamps on only some rows are dropped.
        assert_eq!(r.timestamps, None);
        let r = parse("1 2 3 10\n3 4 1 20", "r.txt", &opts(Format::Auto)).unwrap();
        assert_eq!(r.timestamps, Some(vec![10, 20]));
    }

    #[test]
    fn selectable_columns_and_implicit_mode() {
        // rating, timestamp, item, user
        let o = LoadOptions {
            user_col: 3,
            item_col: 2,
            rating_col: Some(0),
            timestamp_col: Some(1),
            ..opts(Format::Csv)
        };
        let r = parse("r,ts,item,user\n4.5,100,i9,u1\n2,200,i8,u1\n", "r.csv", &o).unwrap();
        assert_eq!(rows(&r), vec![t("u1", "i9", 4.5), t("u1", "i8", 2.0)]);
        assert_eq!(r.timestamps, Some(vec![100, 200]));
        // Implicit: no rating column, every line is one event.
        let o = LoadOptions {
            rating_col: None,
            timestamp_col: Some(2),
            ..opts(Format::Csv)
        };
        let r = parse("user,item,time\nu1,i1,5\nu2,i1,6\nu1,i1,7\n", "r.csv", &o).unwrap();
        assert_eq!(rows(&r), vec![t("u1", "i1", 1.0), t("u2", "i1", 1.0), t("u1", "i1", 1.0)]);
        assert_eq!(r.timestamps, Some(vec![5, 6, 7]));
        // Implicit, two columns, numeric first field: no header.
        let o = LoadOptions {
            rating_col: None,
            ..opts(Format::Csv)
        };
        let r = parse("1,10\n2,10\n", "r.csv", &o).unwrap();
        assert_eq!(rows(&r), vec![t("1", "10", 1.0), t("2", "10", 1.0)]);
        assert_eq!(r.timestamps, None);
        // Without a timestamp column nothing is parsed there.
        let o = LoadOptions {
            timestamp_col: None,
            ..opts(Format::Csv)
        };
        let r = parse("1,10,3,notanumber\n", "r.csv", &o).unwrap();
        assert_eq!((r.len(), r.timestamps.clone()), (1, None));
    }

    #[test]
    fn malformed_lines_name_line_and_problem() {
        let o = opts(Format::Csv);
        let cases: &[(&str, u64, &str)] = &[
            ("1,2,3\n\n1,2\n", 3, "expected at least 3 fields, found 2"),
            ("1,2,3\n1,2,abc\n", 2, "rating 'abc' is not a number"),
            ("1,2,inf\n", 1, "rating 'inf' is not finite"),
            ("1,2,3\n1,2,NaN\n", 2, "rating 'NaN' is not finite"),
            ("1,2,1e40\n", 1, "rating '1e40' is not finite"),
            ("1,2,3\n1,2,3e38\n", 2, "rating '3e38' is outside the supported range ±1e9"),
            ("1,2,-2e9\n", 1, "rating '-2e9' is outside the supported range ±1e9"),
            ("1,2,3\n1,2,\n", 2, "rating '' is not a number"),
            ("1,2,3\r\n ,2,3\r\n", 2, "empty user id"),
            ("1,,3\n", 1, "empty item id"),
            ("1,2,3,12.5\n", 1, "timestamp '12.5' is not an integer"),
        ];
        for (text, line, problem) in cases {
            let (l, p) = malformed(parse(text, "bad.csv", &o));
            assert_eq!((l, p.as_str()), (*line, *problem), "{text:?}");
        }
        let long = "x".repeat(300);
        let (l, p) = malformed(parse(&format!("1,2,3\n{long},2,3\n"), "bad.csv", &o));
        assert_eq!((l, p.as_str()), (2, "user id is 300 bytes long (limit 256)"));
        let o2 = LoadOptions {
            max_id_len: 4,
            ..o.clone()
        };
        let (l, p) = malformed(parse("1,12345,3\n", "bad.csv", &o2));
        assert_eq!((l, p.as_str()), (1, "item id is 5 bytes long (limit 4)"));
        let (l, p) = malformed(parse_ratings(b"1,2,3\n\xff\xfe,2,3\n", Path::new("bad.csv"), &o));
        assert_eq!((l, p.as_str()), (2, "user id is not valid UTF-8"));
        let (l, p) = malformed(parse_ratings(b"1,a\xff,3\n", Path::new("bad.csv"), &o));
        assert_eq!((l, p.as_str()), (1, "item id is not valid UTF-8"));
        // The error names the file, and the header counts as a line.
        match parse("user,item,rating\n1,2,x\n", "dir/bad.csv", &o) {
            Err(e @ DataError::Malformed { .. }) => {
                assert_eq!(e.to_string(), "dir/bad.csv:2: rating 'x' is not a number")
            }
            other => panic!("{other:?}"),
        }
        // ml-100k with commas: one field.
        let (l, p) = malformed(parse("1,2,3\n", "u.data", &opts(Format::Auto)));
        assert_eq!((l, p.as_str()), (1, "expected at least 3 fields, found 1"));
    }

    #[test]
    fn mixed_ids_keep_first_seen_order() {
        // Canonical decimals, leading zeros, signs and names interleaved.
        let text = "5,x,1\n007,10,1\n7,x,1\nbob,010,1\n5,10,1\n-3,0,1\n0,x,1\n7,0,1\n";
        let r = parse(text, "r.csv", &opts(Format::Csv)).unwrap();
        assert_eq!(r.user_tokens, vec!["5", "007", "7", "bob", "-3", "0"]);
        assert_eq!(r.item_tokens, vec!["x", "10", "010", "0"]);
        assert_eq!(r.users, vec![0, 1, 2, 3, 0, 4, 5, 2]);
        assert_eq!(r.items, vec![0, 1, 0, 2, 1, 3, 0, 3]);
        // Sparse large ids (the hash map path) and 9-digit / 10-digit ids.
        let text = "999999999,1,1\n1000000000,1,1\n3,2,1\n999999999,2,1\n";
        let r = parse(text, "r.csv", &opts(Format::Csv)).unwrap();
        assert_eq!(r.user_tokens, vec!["999999999", "1000000000", "3"]);
        assert_eq!(r.users, vec![0, 1, 2, 0]);
    }

    #[test]
    fn skip_invalid_counts_and_keeps_first_seen_order() {
        let o = LoadOptions {
            skip_invalid: true,
            ..opts(Format::Csv)
        };
        let r = parse("a,x,1\nb,y,oops\nc,z\nd,w,2\n,q,3\n", "r.csv", &o).unwrap();
        assert_eq!(rows(&r), vec![t("a", "x", 1.0), t("d", "w", 2.0)]);
        assert_eq!(r.skipped_lines, 3);
        // Users of skipped lines are not interned.
        assert_eq!(r.user_tokens, vec!["a", "d"]);
        assert_eq!(r.item_tokens, vec!["x", "w"]);
        assert!(matches!(parse("a,x,z\n", "r.csv", &o), Err(DataError::Empty { .. })));
    }

    #[test]
    fn empty_inputs() {
        let o = opts(Format::Auto);
        for text in ["", "\n\n  \r\n", "\u{feff}", "userId,movieId,rating,timestamp\n"] {
            assert!(matches!(parse(text, "ratings.csv", &o), Err(DataError::Empty { .. })), "{text:?}");
        }
        assert!(matches!(parse("user,item,rating\n\n", "r.csv", &o), Err(DataError::Empty { .. })));
        assert!(matches!(parse("u\n", "r.txt", &o), Err(DataError::UnknownFormat { .. })));
    }

    #[test]
    fn unreadable_file_is_io_with_path() {
        let p = PathBuf::from("/nonexistent/dir/ratings.csv");
        match load_ratings(&p, &LoadOptions::default()) {
            Err(DataError::Io { path, .. }) => assert_eq!(path, p),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fast_decimal_matches_std_parse() {
        let mut s = crate::rng::SplitMix64::new(3);
        let mut cases: Vec<String> = ["0", "-0", "5", "4.5", "0.1", ".5", "5.", "9999999", "0.0000001", "+3.25"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for _ in 0..20000 {
            let digits = 1 + (s.next_u64() % 7) as usize;
            let m = s.next_u64() % 10u64.pow(digits as u32);
            let mut t = format!("{m:0digits$}");
            let frac = (s.next_u64() % (digits as u64 + 1)) as usize;
            t.insert(digits - frac, '.');
            cases.push(t);
        }
        for c in &cases {
            let want: f32 = c.parse().unwrap();
            assert_eq!(fast_decimal(c.as_bytes()).map(f32::to_bits), Some(want.to_bits()), "{c}");
        }
        assert_eq!(fast_decimal(b"12345678"), None);
        assert_eq!(fast_decimal(b"1e3"), None);
        assert_eq!(fast_decimal(b"."), None);
        assert_eq!(parse_rating(b"12345678.5").unwrap(), 12345678.5f32);
        assert_eq!(parse_ts(b"-42").unwrap(), -42);
        assert_eq!(parse_ts(b"9223372036854775807").unwrap(), i64::MAX);
        assert!(parse_ts(b"9223372036854775808").is_err());
    }

    /// A u.data-like file big enough for the parallel path.
    fn synthetic_tsv(lines: usize, seed: u64) -> Vec<u8> {
        let mut s = crate::rng::SplitMix64::new(seed);
        let mut out = Vec::with_capacity(lines * 24);
        for _ in 0..lines {
            let u = s.next_u64() % 100_000;
            let i = s.next_u64() % 20_000;
            let r = 1 + s.next_u64() % 5;
            let ts = 870_000_000 + s.next_u64() % 30_000_000;
            if u.is_multiple_of(7) {
                // Some ids that are not canonical decimals.
                out.extend_from_slice(format!("u{u}\t0{i}\t{r}\t{ts}\n").as_bytes());
            } else {
                out.extend_from_slice(format!("{u}\t{i}\t{r}\t{ts}\n").as_bytes());
            }
        }
        out
    }

    #[test]
    fn parallel_chunks_equal_sequential() {
        let bytes = synthetic_tsv(600_000, 1); // > PARALLEL_MIN_BYTES
        assert!(bytes.len() >= PARALLEL_MIN_BYTES);
        let o = opts(Format::Tsv);
        let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
        let seq = pool(1).install(|| parse_ratings(&bytes, Path::new("big.tsv"), &o)).unwrap();
        let par = pool(4).install(|| parse_ratings(&bytes, Path::new("big.tsv"), &o)).unwrap();
        assert_eq!(seq.len(), 600_000);
        assert_eq!(seq, par);
        // An error far into the file has the same line number both ways.
        let mut bad = bytes.clone();
        let at = bad.len() - 30;
        let line_start = bad[..at].iter().rposition(|&b| b == b'\n').unwrap() + 1;
        let line_no = bad[..line_start].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
        bad[line_start] = b'\t';
        let e1 = malformed(pool(1).install(|| parse_ratings(&bad, Path::new("big.tsv"), &o)));
        let e4 = malformed(pool(4).install(|| parse_ratings(&bad, Path::new("big.tsv"), &o)));
        assert_eq!(e1, (line_no, "empty user id".to_string()));
        assert_eq!(e4, e1);
    }

    /// MovieLens may not be redistributed: run by scripts/test.sh when shared/data is beside the checkout.
    #[test]
    #[ignore = "needs shared/data"]
    fn real_movielens_files_on_shared_data() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
        let r = load_ratings(&data.join("ml-100k/u.data"), &LoadOptions::default()).unwrap();
        assert_eq!((r.len(), r.user_tokens.len(), r.item_tokens.len()), (100_000, 943, 1682));
        assert_eq!(r.row(0), ("196", "242", 3.0));
        assert!(r.timestamps.is_some());
        let r = load_ratings(&data.join("ml-latest-small/ratings.csv"), &LoadOptions::default()).unwrap();
        assert_eq!((r.len(), r.user_tokens.len(), r.item_tokens.len()), (100_836, 610, 9724));
    }

    /// Ad-hoc throughput check: `cargo test --release -p als-core --lib
    /// data::load::tests::throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        let bytes = synthetic_tsv(10_000_000, 7);
        let o = opts(Format::Ml100k);
        for threads in [1, rayon::current_num_threads()] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for _ in 0..2 {
                let t0 = std::time::Instant::now();
                let r = pool.install(|| parse_ratings(&bytes, Path::new("u.data"), &o)).unwrap();
                let s = t0.elapsed().as_secs_f64();
                println!(
                    "{threads} thread(s): {} rows, {:.0} MB in {s:.3} s: {:.0} MB/s",
                    r.len(),
                    bytes.len() as f64 / 1e6,
                    bytes.len() as f64 / 1e6 / s
                );
            }
        }
    }
}
