//! Small vector helpers for the per-row loops.
//!
//! They are `#[inline(always)]` so that they inherit the target features of
//! the multiversioned row kernels that call them (AVX2+FMA where the CPU has
//! them). Eight accumulators let the compiler vectorize without fast-math;
//! the summation order is still fixed, so results stay deterministic.

#[inline(always)]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        let (x, y) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for i in chunks * 8..n {
        tail += a[i] * b[i];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `y += alpha * x`
#[inline(always)]
pub fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Dot product of f32 data accumulated in f64.
#[inline(always)]
pub fn dot_f32_f64(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] as f64 * y[l] as f64;
        }
    }
    let mut tail = 0f64;
    for (x, y) in ta.iter().zip(tb) {
        tail += *x as f64 * *y as f64;
    }
    (acc[0] + acc[2]) + (acc[1] + acc[3]) + tail
}

/// [`dot_f32_f64`] with sixteen partial sums (four independent vector
/// chains instead of one, so it is not bound by the add latency), in a
/// fixed order: other bits than [`dot_f32_f64`], for the objective.
#[inline(always)]
pub fn dot_f32_f64_wide(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f64; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] as f64 * y[l] as f64;
        }
    }
    let mut tail = 0f64;
    for (x, y) in ta.iter().zip(tb) {
        tail += *x as f64 * *y as f64;
    }
    let mut half = [0f64; 8];
    for l in 0..8 {
        half[l] = acc[l] + acc[l + 8];
    }
    ((half[0] + half[4]) + (half[2] + half[6])) + ((half[1] + half[5]) + (half[3] + half[7])) + tail
}

/// Dot product of f32 data with f64 data, in f64: eight partial sums in a fixed order.
#[inline(always)]
pub fn dot_f32_with_f64(a: &[f32], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] = (x[l] as f64).mul_add(y[l], acc[l]);
        }
    }
    let mut tail = 0f64;
    for (x, y) in ta.iter().zip(tb) {
        tail = (*x as f64).mul_add(*y, tail);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Dot product of f64 data, eight partial sums in a fixed order.
#[inline(always)]
pub fn dot_f64(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f64;
    for (x, y) in ta.iter().zip(tb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `y = m x` for a symmetric k×k matrix stored densely (row-major == column-major).
/// Only the row-at-a-time CG reference uses it now (the solvers use `sym_rows`).
#[cfg(test)]
#[inline(always)]
pub fn symv_f32(m: &[f32], x: &[f32], y: &mut [f32]) {
    let k = x.len();
    for (i, yi) in y.iter_mut().enumerate().take(k) {
        *yi = dot_f32(&m[i * k..(i + 1) * k], x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_match_naive_loops() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot_f32(&a, &b) as f64 - naive).abs() < 1e-5);
        assert!((dot_f32_f64(&a, &b) - naive).abs() < 1e-12);
        assert!((dot_f32_f64_wide(&a, &b) - naive).abs() < 1e-12);
        let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        assert!((dot_f32_with_f64(&a, &b64) - naive).abs() < 1e-12);
        let mut y = b.clone();
        axpy_f32(2.0, &a, &mut y);
        assert!((y[5] - (b[5] + 2.0 * a[5])).abs() < 1e-7);
        let m = [2.0f32, 1.0, 1.0, 3.0];
        let mut out = [0f32; 2];
        symv_f32(&m, &[1.0, 2.0], &mut out);
        assert_eq!(out, [4.0, 7.0]);
    }
}
