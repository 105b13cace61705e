//! Ids: canonical decimals kept as values, other ids interned by their bytes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use rustc_hash::FxHashMap;

/// An id of at most 23 bytes packed with its length into three words: the
/// tables compare and hash these inline instead of following a pointer into
/// the file buffer (a cache miss per lookup on large files).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Short([u64; 3]);

impl Short {
    #[inline]
    pub(super) fn new(key: &[u8]) -> Option<Short> {
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
pub(super) const OTHER: u32 = 1 << 31;

/// The value of a decimal id without sign or leading zeros, up to 9 digits.
#[inline]
pub(super) fn canonical_int(key: &[u8]) -> Option<u32> {
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
pub(super) struct WordHasher(u64);

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
pub(super) struct Interner<'a> {
    short: HashMap<Short, u32, BuildHasherDefault<WordHasher>>,
    long: FxHashMap<Cow<'a, [u8]>, u32>,
    pub(super) tokens: Vec<Cow<'a, [u8]>>,
    /// The last short id found: sorted files repeat the same user line after line.
    last: Option<(Short, u32)>,
}

impl<'a> Interner<'a> {
    #[inline]
    pub(super) fn find(&mut self, key: &[u8]) -> Option<u32> {
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

    #[inline]
    pub(super) fn insert(&mut self, key: Cow<'a, [u8]>) -> u32 {
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

    #[inline]
    pub(super) fn get_or_insert(&mut self, key: Cow<'a, [u8]>) -> u32 {
        match self.find(&key) {
            Some(id) => id,
            None => self.insert(key),
        }
    }
}
