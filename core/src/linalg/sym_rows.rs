//! `outᵦ = G·pᵦ` for a block of vectors at once: the dense term of every
//! implicit CG step (YᵀY times each row's search direction).
//!
//! Row by row this is a matrix-vector product that reads all of G per row;
//! for a block of rows stepping together it is a small GEMM, with each G
//! row loaded once for four vectors. Every output element is the same
//! sequential fused multiply-add chain over j (no reassociation), so a
//! row's result does not depend on the block it is in or on the vector
//! width the CPU has.

use multiversion::multiversion;

/// Register tile where the CPU has AVX-512: 4 vectors × 64 outputs, 16 of
/// the 32 registers.
const WIDE: (usize, usize) = (4, 64);
/// Register tile on AVX2 (16 registers of 8 lanes): 6 × 16 outputs, 12
/// accumulators (4 × 64 would need 32 and spill).
const NARROW: (usize, usize) = (6, 16);

/// Round `k` up to whole tiles of output elements.
pub fn padded_len(k: usize) -> usize {
    k.div_ceil(16) * 16
}

/// `out[b*kp .. b*kp+kp] = G · p[b*kp .. b*kp+k]` for b < `count`, where G is
/// symmetric k×k stored row-major with row stride `kp = padded_len(k)` (the
/// padding columns zero, so padded outputs are zero).
#[multiversion(targets("x86_64+avx+avx2+fma+avx512f", "x86_64+avx+avx2+fma"))]
pub fn sym_mul_rows(g: &[f32], k: usize, p: &[f32], out: &mut [f32], count: usize) {
    let kp = padded_len(k);
    assert!(
        g.len() >= k * kp && p.len() >= count * kp && out.len() >= count * kp,
        "sym_mul_rows: buffers too small"
    );
    let (tile_rows, tile_cols) = if multiversion::target::target_cfg_f!(target_feature = "avx512f") {
        WIDE
    } else {
        NARROW
    };
    let mut b0 = 0;
    while b0 < count {
        let nb = (count - b0).min(tile_rows);
        let mut i0 = 0;
        while i0 < kp {
            let ni = (kp - i0).min(tile_cols);
            match (nb, ni) {
                (4, 64) => tile::<4, 64>(g, k, kp, p, out, b0, i0),
                (_, 64) => {
                    for b in b0..b0 + nb {
                        tile::<1, 64>(g, k, kp, p, out, b, i0);
                    }
                }
                (_, _) if nb > 1 => {
                    for i in (i0..i0 + ni).step_by(16) {
                        match nb {
                            6 => tile::<6, 16>(g, k, kp, p, out, b0, i),
                            5 => tile::<5, 16>(g, k, kp, p, out, b0, i),
                            4 => tile::<4, 16>(g, k, kp, p, out, b0, i),
                            3 => tile::<3, 16>(g, k, kp, p, out, b0, i),
                            _ => tile::<2, 16>(g, k, kp, p, out, b0, i),
                        }
                    }
                }
                _ => {
                    for b in b0..b0 + nb {
                        for i in (i0..i0 + ni).step_by(16) {
                            tile::<1, 16>(g, k, kp, p, out, b, i);
                        }
                    }
                }
            }
            i0 += ni;
        }
        b0 += nb;
    }
}

#[inline(always)]
fn tile<const B: usize, const C: usize>(g: &[f32], k: usize, kp: usize, p: &[f32], out: &mut [f32], b0: usize, i0: usize) {
    let mut acc = [[0f32; C]; B];
    // Slices of exactly the lengths the loop reads, so it runs without bounds checks.
    let mut rows = [&p[..0]; B];
    for (b, row) in rows.iter_mut().enumerate() {
        *row = &p[(b0 + b) * kp..(b0 + b) * kp + k];
    }
    for (j, grow) in g.chunks_exact(kp).take(k).enumerate() {
        let gj: &[f32; C] = grow[i0..i0 + C].try_into().expect("tile inside G");
        for (accb, row) in acc.iter_mut().zip(&rows) {
            let s = row[j];
            for l in 0..C {
                accb[l] = s.mul_add(gj[l], accb[l]);
            }
        }
    }
    for (b, accb) in acc.iter().enumerate() {
        out[(b0 + b) * kp + i0..(b0 + b) * kp + i0 + C].copy_from_slice(accb);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Against an f64 product, and each vector's result alone against the block's.
    #[test]
    fn block_product_matches_reference_and_is_independent_of_the_block() {
        let mut rng = SplitMix64::new(8);
        for &(k, count) in &[(1usize, 1usize), (5, 3), (16, 4), (64, 9), (65, 5), (128, 7), (200, 2)] {
            let kp = padded_len(k);
            let mut g = vec![0f32; k * kp];
            for i in 0..k {
                for j in 0..=i {
                    let v = rng.next_normal() as f32;
                    g[i * kp + j] = v;
                    g[j * kp + i] = v;
                }
            }
            let mut p = vec![0f32; count * kp];
            for b in 0..count {
                for j in 0..k {
                    p[b * kp + j] = rng.next_normal() as f32;
                }
            }
            let mut out = vec![f32::NAN; count * kp];
            sym_mul_rows(&g, k, &p, &mut out, count);
            for b in 0..count {
                for i in 0..kp {
                    let want: f64 = (0..k).map(|j| g[j * kp + i] as f64 * p[b * kp + j] as f64).sum();
                    let got = out[b * kp + i] as f64;
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "k={k} b={b} i={i}: {got} vs {want}"
                    );
                }
                let mut alone = vec![0f32; kp];
                sym_mul_rows(&g, k, &p[b * kp..(b + 1) * kp], &mut alone, 1);
                assert_eq!(
                    alone,
                    out[b * kp..(b + 1) * kp],
                    "k={k} b={b}: a row's product depends on its block"
                );
            }
        }
    }
}
