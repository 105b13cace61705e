//! The line reader: fields of a line by the resolved layout (separator,
//! columns), with the SWAR fast path for one-byte and `::` separators and a
//! general tokenizer for quoted CSV and whitespace.

use std::borrow::Cow;

use memchr::{memchr, memmem};

use super::intern::{canonical_int, Interner, OTHER};
use super::number::{parse_rating, parse_ts};
use super::quote::quoted;
use super::scan::{is_blank, is_ws, strip_cr, trim, word_at, zero_bytes, LO};
use super::{Chunk, SKIPS_LOGGED};
use crate::data::{Format, LoadOptions};

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Sep {
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
pub(super) const USER: usize = 0;
// (slot 1 is the item)
pub(super) const RATING: usize = 2;
pub(super) const TS: usize = 3;
pub(super) const NONE: usize = usize::MAX;

/// The resolved reading rules.
#[derive(Clone)]
pub(super) struct Layout {
    sep: Sep,
    /// Column of each slot (`NONE` when absent).
    cols: [usize; 4],
    /// Fields a line needs (user, item and rating columns).
    need: usize,
    /// Last column of interest: splitting stops after it.
    max_col: usize,
    has_rating: bool,
    pub(super) has_ts: bool,
    max_id_len: usize,
    skip_invalid: bool,
    dcolon: memmem::Finder<'static>,
}

impl Layout {
    pub(super) fn new(format: Format, opts: &LoadOptions) -> Layout {
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
    pub(super) fn looks_like_header(&self, line: &[u8]) -> bool {
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
    pub(super) fn put<'a>(&self, idx: usize, field: Cow<'a, [u8]>, out: &mut [Cow<'a, [u8]>; 4]) {
        for (slot, &col) in out.iter_mut().zip(&self.cols) {
            if col == idx {
                *slot = field.clone();
            }
        }
    }

    /// Split a line into the slots; returns the number of fields seen (all
    /// of them when fewer than needed, else at least `max_col + 1`).
    pub(super) fn split<'a>(&self, line: &'a [u8], out: &mut [Cow<'a, [u8]>; 4]) -> Result<usize, String> {
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
    pub(super) fn parse_chunk<'a>(&self, bytes: &'a [u8]) -> Chunk<'a> {
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
    pub(super) fn scan_line<'a, const Q: bool, const DC: bool>(
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
    pub(super) fn put_field<'a>(&self, idx: usize, field: &'a [u8], out: &mut [&'a [u8]; 4]) {
        for (s, &col) in self.cols.iter().enumerate() {
            if col == idx {
                out[s] = field;
            }
        }
    }

    /// Check the fields of a line and add its row.
    #[inline]
    pub(super) fn row<'a>(
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
