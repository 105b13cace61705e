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
use std::path::Path;

use memchr::memchr;
use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::format::detect_format;
use super::{DataError, Format, LoadOptions, RawRatings};

mod intern;
mod layout;
mod number;
mod quote;
mod scan;
mod share;

use intern::{Interner, OTHER};
use layout::Layout;
use scan::{is_blank, strip_cr};
pub use share::{input_files, input_size, load_share, Share};

/// Files at least this large are parsed in parallel chunks.
const PARALLEL_MIN_BYTES: usize = 8 << 20;
/// Smallest chunk of the parallel parse.
const CHUNK_MIN_BYTES: usize = 2 << 20;
/// Skipped lines logged one by one (the rest are only counted).
const SKIPS_LOGGED: usize = 5;

/// Read and parse a ratings file (see [`parse_ratings`]), or a directory of
/// part files in name order (see [`input_files`]).
pub fn load_ratings(path: &Path, opts: &LoadOptions) -> Result<RawRatings, DataError> {
    let t0 = std::time::Instant::now();
    if path.is_dir() {
        let raw = load_share(path, opts, Share::WHOLE)?;
        if raw.is_empty() {
            return Err(DataError::Empty { path: path.to_path_buf() });
        }
        return Ok(raw);
    }
    let bytes = std::fs::read(path).map_err(DataError::io(path))?;
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
    let head = read_head(data, source, opts)?;
    let body = data.get(head.body_start..).unwrap_or(&[]);
    let raw = parse_body(body, source, &head.layout, head.lines_before_body, &mut Ok)?;
    if raw.is_empty() {
        return Err(DataError::Empty {
            path: source.to_path_buf(),
        });
    }
    if let (Some(_), None) = (opts.timestamp_col, &raw.timestamps) {
        tracing::debug!("{}: no timestamps (or not on every row)", source.display());
    }
    Ok(raw)
}

/// What the start of a file says about the rest: its layout, and where the
/// rows begin (after a header line, if there is one).
pub(crate) struct Head {
    layout: Layout,
    /// Offset of the first row line in the data (after any BOM the caller stripped).
    body_start: usize,
    /// Physical lines before `body_start` (so a body line's 1-based number is this plus its own).
    lines_before_body: u64,
}

/// Detect the format and header from the first non-blank line of `data`.
fn read_head(data: &[u8], source: &Path, opts: &LoadOptions) -> Result<Head, DataError> {
    // The first non-blank line: format detection and header.
    let (first_start, first_end, first_no) = {
        let (mut pos, mut no) = (0usize, 0u64);
        loop {
            if pos >= data.len() {
                return Err(DataError::Empty {
                    path: source.to_path_buf(),
                });
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
    Ok(if header {
        Head {
            layout,
            body_start: (first_end + 1).min(data.len()),
            lines_before_body: first_no,
        }
    } else {
        Head {
            layout,
            body_start: first_start,
            lines_before_body: first_no - 1,
        }
    })
}

/// Parse whole lines of rows: one chunk, or line-aligned chunks in parallel.
/// `base_line` lines come before `body`; `line_of` turns a line number so
/// counted into the one a message names (a share of a file does not know
/// how many lines precede it until it has to say).
fn parse_body(
    body: &[u8],
    source: &Path,
    layout: &Layout,
    base_line: u64,
    line_of: &mut dyn FnMut(u64) -> Result<u64, DataError>,
) -> Result<RawRatings, DataError> {
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
                line: line_of(line_off + line)?,
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
        tracing::warn!("{}:{}: {} (line skipped)", source.display(), line_of(*line)?, problem);
    }
    if skipped > skips.len() as u64 {
        tracing::warn!("{}: {} invalid lines skipped in all", source.display(), skipped);
    }

    let mut raw = merge(chunks, layout.has_ts);
    raw.source = source.display().to_string();
    raw.skipped_lines = skipped;
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

#[cfg(test)]
mod tests;
