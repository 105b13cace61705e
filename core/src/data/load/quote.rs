//! CSV quoting.

use std::borrow::Cow;

use memchr::memchr;

use super::scan::is_ws;

/// A double-quoted CSV field at the start of `s` (`""` is a quote); returns
/// the content and the bytes used up to (not including) the next comma.
pub(super) fn quoted(s: &[u8], idx: usize) -> Result<(Cow<'_, [u8]>, usize), String> {
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
