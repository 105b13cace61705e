//! Little-endian numbers: the one packing used by the wire protocol,
//! checkpoints and `.npy` files, whatever the host's byte order.

/// A number with a little-endian byte form.
pub trait Le: bytemuck::Pod + Default + Send + Sync + 'static {
    /// Bytes per value.
    const SIZE: usize = std::mem::size_of::<Self>();
    /// Appends the value's little-endian bytes.
    fn put_le(self, out: &mut Vec<u8>);
    /// The value of `Self::SIZE` little-endian bytes.
    fn from_le(b: &[u8]) -> Self;
}

macro_rules! le {
    ($($t:ty),*) => {$(
        impl Le for $t {
            #[inline]
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn from_le(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("one value's bytes"))
            }
        }
    )*};
}
le!(f32, f64, u32, u64, i64, u128);

/// Appends `v` to `out` as little-endian bytes (one copy on little-endian hosts).
pub fn extend_le<T: Le>(out: &mut Vec<u8>, v: &[T]) {
    if cfg!(target_endian = "little") {
        out.extend_from_slice(bytemuck::cast_slice(v));
    } else {
        for &x in v {
            x.put_le(out);
        }
    }
}

/// Write `v` to `w` as little-endian bytes, through one small buffer.
pub fn write_le<T: Le>(w: &mut impl std::io::Write, v: &[T]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1 << 16);
    for chunk in v.chunks((1 << 16) / T::SIZE) {
        buf.clear();
        extend_le(&mut buf, chunk);
        w.write_all(&buf)?;
    }
    Ok(())
}

/// `v` as little-endian bytes.
pub fn to_le_bytes<T: Le>(v: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(std::mem::size_of_val(v));
    extend_le(&mut out, v);
    out
}

/// The values of `b`, whose length is a whole number of values (else `None`).
pub fn from_le_bytes<T: Le>(b: &[u8]) -> Option<Vec<T>> {
    if !b.len().is_multiple_of(T::SIZE) {
        return None;
    }
    Some(b.chunks_exact(T::SIZE).map(T::from_le).collect())
}

/// Turns values whose memory holds little-endian bytes into native values
/// (nothing to do on little-endian hosts).
pub fn fix_order<T: Le>(v: &mut [T]) {
    if cfg!(target_endian = "big") {
        for x in v.iter_mut() {
            *x = T::from_le(bytemuck::bytes_of(x));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_form_is_little_endian_and_round_trips() {
        assert_eq!(to_le_bytes(&[0x0102_0304u32]), [4, 3, 2, 1]);
        assert_eq!(to_le_bytes(&[1.0f32]), 1.0f32.to_le_bytes());
        let v = [1.5f64, -2.25, f64::MAX];
        assert_eq!(from_le_bytes::<f64>(&to_le_bytes(&v)).unwrap(), v);
        assert_eq!(from_le_bytes::<i64>(&to_le_bytes(&[-7i64])).unwrap(), [-7]);
        assert!(from_le_bytes::<f32>(&[0, 0, 0]).is_none());
        let mut same = [3.5f32];
        fix_order(&mut same);
        assert_eq!(same, [3.5]);
    }
}
