//! Packing numbers into `bytes` fields and splitting bulk data into chunks.
//!
//! Packed little-endian arrays are several times faster to encode and decode
//! than `repeated float`. A receiver appends each field's bytes across chunks
//! and decodes once at the end, so chunks may split anywhere.

pub use prost::bytes::Bytes;

/// A packed field whose received length is wrong: `len` bytes arrived,
/// `want` says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {len} bytes received, {want}")]
pub struct CodecError {
    pub field: &'static str,
    pub len: usize,
    pub want: Want,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// A whole number of values this many bytes wide.
    Multiple(usize),
    /// Exactly this many bytes.
    Exactly(usize),
    /// At least this many bytes (a reader asked for more than arrived).
    AtLeast(usize),
}

impl std::fmt::Display for Want {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Want::Multiple(w) => write!(f, "not a whole number of {w}-byte values"),
            Want::Exactly(n) => write!(f, "expected {n}"),
            Want::AtLeast(n) => write!(f, "expected at least {n}"),
        }
    }
}

macro_rules! packing {
    ($to:ident, $from:ident, $t:ty) => {
        pub fn $to(v: &[$t]) -> Vec<u8> {
            let mut out = Vec::with_capacity(std::mem::size_of_val(v));
            extend_le(&mut out, v);
            out
        }

        pub fn $from(field: &'static str, b: &[u8]) -> Result<Vec<$t>, CodecError> {
            pieces_vec(field, &[b])
        }
    };
}

/// Little-endian packing lives in core, the one place for it.
pub use als_core::le::{extend_le, Le as LeBytes};

/// Decodes a field received in pieces (the `Bytes` of its chunks, split
/// anywhere) into `dest`, which must hold exactly its values: one copy from
/// the receive buffers, none to join the pieces first.
pub fn pieces_into<T: LeBytes>(field: &'static str, pieces: &[impl AsRef<[u8]>], dest: &mut [T]) -> Result<(), CodecError> {
    let mut r = exact_reader(field, pieces, std::mem::size_of_val(dest))?;
    r.read_into(dest)?;
    r.finish()
}

/// A reader over pieces that must hold exactly `bytes` bytes.
fn exact_reader<'a, B: AsRef<[u8]>>(field: &'static str, pieces: &'a [B], bytes: usize) -> Result<PieceReader<'a, B>, CodecError> {
    let r = PieceReader::new(field, pieces);
    if r.len != bytes {
        return Err(CodecError {
            field,
            len: r.len,
            want: Want::Exactly(bytes),
        });
    }
    Ok(r)
}

/// A packed f32 field that was malformed or held a NaN or an infinity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FiniteError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("a non-finite {field} value")]
    NonFinite { field: &'static str },
}

/// Values copied then checked finite per step: few enough to still be in
/// cache for the check, so received rows are read from memory once.
pub const FINITE_CHUNK: usize = 16 * 1024;

/// [`pieces_into`] for factor values, each checked finite as it lands.
pub fn pieces_into_finite(field: &'static str, pieces: &[impl AsRef<[u8]>], dest: &mut [f32]) -> Result<(), FiniteError> {
    let mut r = exact_reader(field, pieces, std::mem::size_of_val(dest))?;
    r.read_finite_into(dest)?;
    Ok(r.finish()?)
}

/// Reads a field received in pieces into several destinations in turn (a
/// pushed fixed side goes around the rows the worker has already).
pub struct PieceReader<'a, B> {
    field: &'static str,
    pieces: &'a [B],
    piece: usize,
    at: usize,
    /// Bytes read so far, of `len` received.
    read: usize,
    len: usize,
}

impl<'a, B: AsRef<[u8]>> PieceReader<'a, B> {
    pub fn new(field: &'static str, pieces: &'a [B]) -> Self {
        let len = pieces.iter().map(|p| p.as_ref().len()).sum();
        PieceReader {
            field,
            pieces,
            piece: 0,
            at: 0,
            read: 0,
            len,
        }
    }

    /// Fill `dest` with the next values; an error if fewer bytes are left.
    pub fn read_into<T: LeBytes>(&mut self, dest: &mut [T]) -> Result<(), CodecError> {
        let out = bytemuck::cast_slice_mut::<T, u8>(dest);
        if self.read + out.len() > self.len {
            return Err(CodecError {
                field: self.field,
                len: self.len,
                want: Want::AtLeast(self.read + out.len()),
            });
        }
        let mut done = 0;
        while done < out.len() {
            let p = self.pieces[self.piece].as_ref();
            let n = (p.len() - self.at).min(out.len() - done);
            out[done..done + n].copy_from_slice(&p[self.at..self.at + n]);
            done += n;
            self.at += n;
            if self.at == p.len() {
                self.piece += 1;
                self.at = 0;
            }
        }
        self.read += out.len();
        als_core::le::fix_order(dest);
        Ok(())
    }

    /// [`read_into`](Self::read_into) [`FINITE_CHUNK`] values at a time,
    /// each part checked finite right after its copy.
    pub fn read_finite_into(&mut self, dest: &mut [f32]) -> Result<(), FiniteError> {
        for part in dest.chunks_mut(FINITE_CHUNK) {
            self.read_into(part)?;
            if !als_core::solve::all_finite(part) {
                return Err(FiniteError::NonFinite { field: self.field });
            }
        }
        Ok(())
    }

    /// Every byte must have been read.
    pub fn finish(self) -> Result<(), CodecError> {
        if self.read == self.len {
            Ok(())
        } else {
            Err(CodecError {
                field: self.field,
                len: self.len,
                want: Want::Exactly(self.read),
            })
        }
    }
}

/// [`pieces_into`] a new vector sized from the pieces.
pub fn pieces_vec<T: LeBytes>(field: &'static str, pieces: &[impl AsRef<[u8]>]) -> Result<Vec<T>, CodecError> {
    let w = std::mem::size_of::<T>();
    let len: usize = pieces.iter().map(|p| p.as_ref().len()).sum();
    if !len.is_multiple_of(w) {
        return Err(CodecError {
            field,
            len,
            want: Want::Multiple(w),
        });
    }
    let mut out = vec![T::zeroed(); len / w];
    pieces_into(field, pieces, &mut out)?;
    Ok(out)
}

packing!(f32_bytes, bytes_f32, f32);
packing!(f64_bytes, bytes_f64, f64);
packing!(u32_bytes, bytes_u32, u32);
packing!(u64_bytes, bytes_u64, u64);
packing!(u128_bytes, bytes_u128, u128);

/// Splits several byte arrays, in order, into messages of at most `max` bytes
/// of payload: each message gets consecutive pieces `(array, range)`.
pub fn plan_chunks(lens: &[usize], max: usize) -> Vec<Vec<(usize, std::ops::Range<usize>)>> {
    let max = max.max(1);
    let mut out = vec![Vec::new()];
    let mut room = max;
    for (a, &len) in lens.iter().enumerate() {
        let mut pos = 0;
        while pos < len {
            if room == 0 {
                out.push(Vec::new());
                room = max;
            }
            let take = room.min(len - pos);
            out.last_mut().expect("one message at least").push((a, pos..pos + take));
            pos += take;
            room -= take;
        }
    }
    out
}

/// A field's data as it is held: bytes, or f32 values (contiguous or as
/// rows gathered on the fly), written little-endian straight into the
/// messages, with no packed copy of the whole field in between.
#[derive(Clone)]
pub enum Field<'a> {
    Bytes(&'a [u8]),
    F32(&'a [f32]),
    U32(&'a [u32]),
    F64(&'a [f64]),
    /// `n_rows` rows of `k` values; `row(i)` is the i-th.
    Rows {
        n_rows: usize,
        k: usize,
        row: &'a dyn Fn(usize) -> &'a [f32],
    },
}

impl Field<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Field::Bytes(b) => b.len(),
            Field::F32(v) => v.len() * 4,
            Field::U32(v) => v.len() * 4,
            Field::F64(v) => v.len() * 8,
            Field::Rows { n_rows, k, .. } => n_rows * k * 4,
        }
    }

    /// Appends bytes `r` of the field's little-endian image to `out`.
    fn write(&self, r: std::ops::Range<usize>, out: &mut Vec<u8>) {
        match self {
            Field::Bytes(b) => out.extend_from_slice(&b[r]),
            Field::F32(v) => write_values(out, r, v.len().max(1), |_| v),
            Field::U32(v) => write_values(out, r, v.len().max(1), |_| v),
            Field::F64(v) => write_values(out, r, v.len().max(1), |_| v),
            Field::Rows { k, row, .. } => write_values(out, r, *k, row),
        }
    }
}

/// Bytes `r` of the little-endian image of rows of `k` values.
fn write_values<'a, T: LeBytes>(out: &mut Vec<u8>, r: std::ops::Range<usize>, k: usize, row: impl Fn(usize) -> &'a [T]) {
    if r.is_empty() {
        return;
    }
    // Whole values covering the range, then the partial edges trimmed
    // (ranges on value boundaries, as every plan of same-width fields is, trim nothing).
    let w = std::mem::size_of::<T>();
    let base = out.len();
    let (first, end) = (r.start / w, r.end.div_ceil(w));
    let mut v = first;
    while v < end {
        let (i, c) = (v / k, v % k);
        let take = (k - c).min(end - v);
        extend_le(out, &row(i)[c..c + take]);
        v += take;
    }
    out.truncate(out.len() - (end * w - r.end));
    out.drain(base..base + (r.start - first * w));
}

/// Messages carrying `fields` split per [`plan_chunks`]: `make(j)` builds
/// message `j` (headers go on `j == 0`), `dest(m, f)` is where field `f`'s
/// bytes go in it.
pub fn chunk_fields<M>(
    fields: &[Field],
    max: usize,
    mut make: impl FnMut(usize) -> M,
    dest: impl Fn(&mut M, usize) -> &mut Bytes,
) -> Vec<M> {
    let lens: Vec<usize> = fields.iter().map(Field::len).collect();
    plan_chunks(&lens, max)
        .into_iter()
        .enumerate()
        .map(|(j, parts)| {
            let mut m = make(j);
            for (f, r) in parts {
                let mut out = Vec::with_capacity(r.len());
                fields[f].write(r, &mut out);
                *dest(&mut m, f) = Bytes::from(out);
            }
            m
        })
        .collect()
}

/// The encoded length of the messages [`chunk_fields`] makes from arrays
/// of `lens` bytes: each header as `make` builds it, plus each array piece
/// as a bytes field (its key measured on the message, so any field number
/// counts right).
pub fn chunks_encoded_len<M: prost::Message>(
    lens: &[usize],
    max: usize,
    mut make: impl FnMut(usize) -> M,
    dest: impl Fn(&mut M, usize) -> &mut Bytes,
) -> u64 {
    plan_chunks(lens, max)
        .into_iter()
        .enumerate()
        .map(|(j, parts)| {
            let mut m = make(j);
            let head = m.encoded_len();
            let mut total = head;
            for (f, r) in parts {
                *dest(&mut m, f) = Bytes::from_static(&[0]);
                // One byte of value and one of its length: the rest is the key.
                let key = m.encoded_len() - head - 2;
                *dest(&mut m, f) = Bytes::new();
                total += key + prost::encoding::encoded_len_varint(r.len() as u64) + r.len();
            }
            total as u64
        })
        .sum()
}

/// The id table of `ids` (see [`decode_ids`]): their bytes, and where each ends (u32 each).
pub fn id_table(ids: &[String]) -> (Vec<u8>, Vec<u8>) {
    let mut bytes = Vec::with_capacity(ids.iter().map(String::len).sum());
    let mut ends = Vec::with_capacity(ids.len());
    for id in ids {
        bytes.extend_from_slice(id.as_bytes());
        ends.push(bytes.len() as u32);
    }
    (bytes, u32_bytes(&ends))
}

/// An id table: `id_bytes` cut at `id_ends`, each id valid UTF-8, not
/// empty and at most `max_id_len` bytes.
pub fn decode_ids(id_bytes: &[u8], id_ends: &[u8], max_id_len: usize) -> Result<Vec<String>, String> {
    let ends: Vec<u32> = pieces_vec("id_ends", &[id_ends]).map_err(|e| e.to_string())?;
    let mut ids = Vec::with_capacity(ends.len());
    let mut start = 0usize;
    for (n, &end) in ends.iter().enumerate() {
        let end = end as usize;
        if end <= start || end > id_bytes.len() {
            return Err(format!("id {n} of the table ends at {end}, outside {start}..={}", id_bytes.len()));
        }
        if end - start > max_id_len {
            return Err(format!(
                "id {n} of the table is {} bytes, over the {max_id_len}-byte limit",
                end - start
            ));
        }
        let id = std::str::from_utf8(&id_bytes[start..end]).map_err(|_| format!("id {n} of the table is not UTF-8"))?;
        ids.push(id.to_owned());
        start = end;
    }
    if start != id_bytes.len() {
        return Err(format!("the id table has {} bytes past its last id", id_bytes.len() - start));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value is checked, in every chunk, across pieces split mid-value.
    #[test]
    fn finite_reads_check_every_chunk_across_pieces() {
        let n = 2 * FINITE_CHUNK + 37;
        let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
        let pieces = |v: &[f32]| {
            let b = Bytes::from(f32_bytes(v));
            vec![
                b.slice(..4 * FINITE_CHUNK + 3),
                b.slice(4 * FINITE_CHUNK + 3..4 * n - 6),
                b.slice(4 * n - 6..),
            ]
        };
        let got = pieces(&values);
        let mut dest = vec![0f32; n];
        pieces_into_finite("factors", &got, &mut dest).unwrap();
        assert_eq!(dest, values);
        for at in [0, FINITE_CHUNK - 1, FINITE_CHUNK, 2 * FINITE_CHUNK + 5, n - 1] {
            for bad_value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut bad = values.clone();
                bad[at] = bad_value;
                let p = pieces(&bad);
                let e = pieces_into_finite("factors", &p, &mut dest).unwrap_err();
                assert_eq!(e, FiniteError::NonFinite { field: "factors" }, "{at}");
                assert_eq!(e.to_string(), "a non-finite factors value");
            }
        }
        let short = pieces_into_finite("factors", &got, &mut dest[1..]).unwrap_err();
        assert!(matches!(short, FiniteError::Codec(_)), "{short}");
    }

    #[test]
    fn a_piece_reader_fills_destinations_in_turn_across_any_split() {
        let v: Vec<f32> = (0..10).map(|i| i as f32 * 1.25 - 3.0).collect();
        let bytes = f32_bytes(&v);
        for cut in [1usize, 3, 4, 7, 40] {
            let pieces: Vec<&[u8]> = bytes.chunks(cut).collect();
            let mut r = PieceReader::new("factors", &pieces);
            let (mut a, mut b, mut c) = ([0f32; 3], [0f32; 0], [0f32; 7]);
            r.read_into(&mut a).unwrap();
            r.read_into(&mut b).unwrap();
            r.read_into(&mut c).unwrap();
            r.finish().unwrap();
            assert_eq!([&a[..], &c[..]].concat(), v, "pieces of {cut} bytes");
            // Reading past the end, or leaving bytes unread, names the field.
            let mut r = PieceReader::new("factors", &pieces);
            let mut long = [0f32; 11];
            let e = r.read_into(&mut long).unwrap_err();
            assert_eq!(e.to_string(), "factors: 40 bytes received, expected at least 44");
            let mut r = PieceReader::new("bias", &pieces);
            r.read_into(&mut a).unwrap();
            assert_eq!(r.finish().unwrap_err().to_string(), "bias: 40 bytes received, expected 12");
        }
    }

    #[test]
    fn round_trips_and_rejects_partial_values() {
        let v = [1.5f32, -2.0, f32::MAX];
        assert_eq!(bytes_f32("f", &f32_bytes(&v)).unwrap(), v);
        assert_eq!(bytes_f64("g", &f64_bytes(&[0.25, 3.0])).unwrap(), vec![0.25, 3.0]);
        assert_eq!(bytes_u32("u", &u32_bytes(&[7, u32::MAX])).unwrap(), vec![7, u32::MAX]);
        assert!(bytes_f32("f", &[0, 0, 0]).is_err());
        // The wire form is little-endian whatever the host.
        assert_eq!(f32_bytes(&[1.0]), 1.0f32.to_le_bytes());
        assert_eq!(u32_bytes(&[0x0102_0304]), [4, 3, 2, 1]);
        let mut dest = [0f32; 3];
        pieces_into("f", &[f32_bytes(&v)], &mut dest).unwrap();
        assert_eq!(dest, v);
        assert!(pieces_into("f", &[f32_bytes(&v)], &mut [0f32; 2]).is_err());
        let mut grown = vec![9u8];
        extend_le(&mut grown, &[2.5f64]);
        assert_eq!(grown[1..], 2.5f64.to_le_bytes());
    }

    #[test]
    fn pieces_split_anywhere_decode_like_one_buffer() {
        let v = [1.5f32, -2.0, 7.25, f32::MIN_POSITIVE];
        let b = f32_bytes(&v);
        for cut in [(0, 0), (1, 5), (3, 9), (4, 8), (16, 16)] {
            let pieces = [
                Bytes::copy_from_slice(&b[..cut.0]),
                Bytes::copy_from_slice(&b[cut.0..cut.1]),
                Bytes::copy_from_slice(&b[cut.1..]),
            ];
            assert_eq!(pieces_vec::<f32>("f", &pieces).unwrap(), v, "{cut:?}");
        }
        assert!(pieces_vec::<f32>("f", &[Bytes::from_static(&[1, 2, 3])]).is_err());
        let mut short = [0f32; 3];
        assert!(pieces_into("f", &[Bytes::from(b.clone())], &mut short).is_err());
        let g = pieces_vec::<f64>("g", &[Bytes::from(f64_bytes(&[0.5, -3.0]))]).unwrap();
        assert_eq!(g, [0.5, -3.0]);
    }

    #[test]
    fn chunk_plan_covers_everything_within_limit() {
        let lens = [10, 0, 7, 25];
        let plan = plan_chunks(&lens, 8);
        let mut got = vec![0usize; 4];
        for msg in &plan {
            assert!(msg.iter().map(|(_, r)| r.len()).sum::<usize>() <= 8);
            for (a, r) in msg {
                assert_eq!(r.start, got[*a]);
                got[*a] = r.end;
            }
        }
        assert_eq!(got, lens.to_vec());
        assert_eq!(plan_chunks(&[0, 0], 8).len(), 1);
    }

    #[test]
    fn fields_write_the_packed_bytes_at_any_split() {
        let rows: Vec<Vec<f32>> = (0..5).map(|i| (0..3).map(|c| (i * 3 + c) as f32 + 0.5).collect()).collect();
        let row = |i: usize| rows[i].as_slice();
        let flat: Vec<f32> = rows.concat();
        let packed = f32_bytes(&flat);
        for which in 0..2 {
            let field = match which {
                0 => Field::F32(&flat),
                _ => Field::Rows {
                    n_rows: 5,
                    k: 3,
                    row: &row,
                },
            };
            assert_eq!(field.len(), packed.len());
            let fields = [Field::Bytes(&[9, 8]), field];
            // Every split point, aligned or not, gives the same bytes as packing first.
            for max in [1, 3, 4, 5, 7, 12, 64] {
                let msgs = chunk_fields(&fields, max, |_| [Bytes::new(), Bytes::new()], |m, f| &mut m[f]);
                let joined: Vec<u8> = msgs.iter().flat_map(|m| m[1].to_vec()).collect();
                assert_eq!(joined, packed, "max {max}");
                assert!(msgs.iter().all(|m| m[0].len() + m[1].len() <= max));
                assert_eq!(msgs.iter().flat_map(|m| m[0].to_vec()).collect::<Vec<u8>>(), [9, 8]);
            }
        }
    }
}
