//! Bytes eight at a time (SWAR) and the byte-level helpers of the line reader.

pub(super) const LO: u64 = 0x0101_0101_0101_0101;
pub(super) const HI7: u64 = 0x7F7F_7F7F_7F7F_7F7F;

/// 0x80 in every byte of `x` that is zero, 0 elsewhere (exact, no carries).
#[inline(always)]
pub(super) fn zero_bytes(x: u64) -> u64 {
    !(((x & HI7).wrapping_add(HI7)) | x | HI7)
}

/// The eight bytes at `i` (little endian), zero-padded past the end.
#[inline(always)]
pub(super) fn word_at(b: &[u8], i: usize) -> u64 {
    match b.get(i..i + 8) {
        Some(s) => u64::from_le_bytes(s.try_into().unwrap()),
        None => {
            let mut t = [0u8; 8];
            t[..b.len() - i].copy_from_slice(&b[i..]);
            u64::from_le_bytes(t)
        }
    }
}

#[inline]
pub(super) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r')
}

#[inline]
pub(super) fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[inline]
pub(super) fn is_blank(line: &[u8]) -> bool {
    match line.first() {
        None => true,
        Some(&b) if !is_ws(b) => false,
        _ => line.iter().all(|&b| is_ws(b)),
    }
}

#[inline]
pub(super) fn trim(mut f: &[u8]) -> &[u8] {
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
pub(super) fn show(f: &[u8]) -> String {
    let s = String::from_utf8_lossy(f);
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s.into_owned()
    }
}
