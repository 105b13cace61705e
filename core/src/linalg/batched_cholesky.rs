//! Cholesky solves of eight independent SPD systems at once, one system per
//! SIMD lane.
//!
//! A single d×d factorization at d ≈ 65 is latency-bound: each pivot's
//! column is short, the trailing updates shrink, and the kernel spends its
//! time on loop overheads and dependent operations (9–14 GFLOP/s on one
//! core). Eight rows of a block solved together turn every scalar operation
//! into one vector operation across the eight systems: matrix entry (i, j)
//! of all eight lives in one 64-byte vector, so the factorization is a
//! plain Cholesky with no shuffles, no horizontal sums and no remainder
//! loops, register-tiled like a small GEMM.
//!
//! Every operation is lane-wise and exactly rounded (FMA, sqrt, division),
//! in an order that does not depend on the lane, the other lanes or the
//! vector width, so a system gets the same bits whichever batch and lane it
//! is solved in, on any CPU with FMA. Three paths ([`Path`]) run it, the
//! same operations on each, so the same bits: AVX-512 (one register per
//! vector), AVX2+FMA (two registers per vector, smaller tiles) and portable
//! arrays. Without hardware FMA the portable path's
//! `mul_add` is a libm call, so such CPUs solve one system at a time
//! ([`is_fast`]).

use super::simd_path::Path;
use super::NotPositiveDefinite;

/// Systems per batch: one f64 AVX-512 vector.
pub const LANES: usize = 8;

/// Largest d batched: past it a batch (d²·LANES·8 bytes) outgrows L2 and the
/// one-system kernel is as fast.
pub const MAX_DIM: usize = 160;

/// Register tile of the trailing update: rows × columns of vectors.
const TILE_ROWS: usize = 4;
const TILE_COLS: usize = 4;

type V = [f64; LANES];

/// Eight d×d systems `A x = b`, interleaved: entry (i, j) of every lane in
/// the vector at `i·ld + j` (ld = d or d + 1), row-major, lower triangle.
/// Row d carries the right-hand side through the factorization (so the
/// forward substitution comes with it) and holds the solution afterwards.
pub struct CholeskyBatch {
    d: usize,
    ld: usize,
    /// Whole cache lines: each vector one aligned load, never split across two.
    m: Vec<Line>,
    /// I (d×d, leading dimension `identity_ld`) and 0: the system of a lane left unused.
    identity: Vec<f64>,
    identity_ld: usize,
    zeros: Vec<f64>,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line(V);

/// One lane's system: the lower triangle of A (d×d, column-major with the
/// leading dimension [`CholeskyBatch::set_lanes`] is given; the upper
/// triangle is not read) and b. `None`: I x = 0.
pub type LaneSystem<'a> = Option<(&'a [f64], &'a [f64])>;

impl CholeskyBatch {
    pub fn new(d: usize) -> Self {
        // An odd count of lines between rows: rows a power of two of lines
        // apart would map the rows a tile reads together to the same cache sets.
        let ld = d | 1;
        CholeskyBatch {
            d,
            ld,
            m: vec![Line([0.0; LANES]); (d + 1) * ld],
            identity: Vec::new(),
            identity_ld: 0,
            zeros: vec![0.0; d],
        }
    }

    pub fn dim(&self) -> usize {
        self.d
    }

    /// Every lane's system, the matrices `lda` apart per column. Each line
    /// of the batch (one entry of all eight) is written once, whole.
    pub fn set_lanes(&mut self, systems: [LaneSystem<'_>; LANES], lda: usize) {
        let (d, ld) = (self.d, self.ld);
        assert!(lda >= d, "batched cholesky: leading dimension {lda} below {d}");
        if self.identity_ld != lda {
            self.identity = vec![0.0; d * lda];
            for j in 0..d {
                self.identity[j + j * lda] = 1.0;
            }
            self.identity_ld = lda;
        }
        let CholeskyBatch { m, identity, zeros, .. } = self;
        let src = systems.map(|s| s.unwrap_or((identity.as_slice(), zeros.as_slice())));
        for (a, b) in &src {
            assert!(
                a.len() >= (d.max(1) - 1) * lda + d && b.len() >= d,
                "batched cholesky: system too small"
            );
        }
        for j in 0..d {
            let cols = src.map(|(a, _)| &a[j * lda..j * lda + d]);
            for i in j..d {
                m[i * ld + j] = Line(std::array::from_fn(|l| cols[l][i]));
            }
            m[d * ld + j] = Line(std::array::from_fn(|l| src[l].1[j]));
        }
    }

    /// Factor and solve all eight systems. A lane whose matrix is not
    /// positive definite gets the first failing pivot as its error (its
    /// solution is garbage); the other lanes are unaffected.
    pub fn solve(&mut self) -> [Result<(), NotPositiveDefinite>; LANES] {
        self.solve_on(Path::detect())
    }

    fn solve_on(&mut self, path: Path) -> [Result<(), NotPositiveDefinite>; LANES] {
        let mut failed = [None; LANES];
        let (ld, d) = (self.ld, self.d);
        match path {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Path::Avx512` is only chosen where the CPU has AVX-512F.
            Path::Avx512 => unsafe { avx512::solve(&mut self.m, ld, d, &mut failed) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Path::Avx2` is only chosen where the CPU has AVX2 and FMA.
            Path::Avx2 => unsafe { avx2::solve(&mut self.m, ld, d, &mut failed) },
            Path::Portable => solve_lanes::<V>(&mut self.m, ld, d, &mut failed),
        }
        failed.map(|f| match f {
            Some(pivot) => Err(NotPositiveDefinite { pivot }),
            None => Ok(()),
        })
    }

    /// Lane `lane`'s solution x (after [`solve`](Self::solve)).
    pub fn solution(&self, lane: usize) -> impl Iterator<Item = f64> + '_ {
        let (d, ld) = (self.d, self.ld);
        (0..d).map(move |j| self.m[d * ld + j].0[lane])
    }
}

/// Whether this CPU runs the batched kernel fast: it needs hardware FMA
/// (without it every lane's fused multiply-add is a libm call, an order of
/// magnitude slower than the one-system kernel).
pub fn is_fast() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Path::detect() != Path::Portable
    }
    #[cfg(target_arch = "aarch64")]
    {
        // FMA is part of the base AArch64 instruction set.
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// One vector of the eight lanes, and the lane-wise, exactly rounded
/// operations the kernel uses.
trait Lanes: Copy {
    /// Register tile of the factorization, rows × columns of vectors (at
    /// most [`TILE_ROWS`] × [`TILE_COLS`], and no more columns than rows:
    /// a diagonal tile holds its columns' pivots): as many as the registers
    /// hold.
    const TILE: (usize, usize) = (TILE_ROWS, TILE_COLS);
    fn load(l: &Line) -> Self;
    fn store(self, l: &mut Line);
    /// `self − f·x`, rounded once.
    fn sub_mul(self, f: Self, x: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    fn sqrt(self) -> Self;
}

/// The portable lanes: plain arrays.
impl Lanes for V {
    #[inline(always)]
    fn load(l: &Line) -> Self {
        l.0
    }
    #[inline(always)]
    fn store(self, l: &mut Line) {
        l.0 = self;
    }
    #[inline(always)]
    fn sub_mul(mut self, f: Self, x: Self) -> Self {
        for l in 0..LANES {
            self[l] = (-f[l]).mul_add(x[l], self[l]);
        }
        self
    }
    #[inline(always)]
    fn mul(mut self, o: Self) -> Self {
        for l in 0..LANES {
            self[l] *= o[l];
        }
        self
    }
    #[inline(always)]
    fn div(mut self, o: Self) -> Self {
        for l in 0..LANES {
            self[l] /= o[l];
        }
        self
    }
    #[inline(always)]
    fn sqrt(mut self) -> Self {
        for v in &mut self {
            *v = v.sqrt();
        }
        self
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Lanes, Line, LANES};

    /// One AVX-512 register of the eight lanes. Values of this type exist
    /// only inside [`solve`], which runs only where the CPU has AVX-512F:
    /// that is what makes the intrinsics below sound.
    #[derive(Clone, Copy)]
    pub(super) struct Z(__m512d);

    impl Lanes for Z {
        #[inline(always)]
        fn load(l: &Line) -> Self {
            // SAFETY: see `Z`; a Line is 64 aligned bytes.
            Z(unsafe { _mm512_load_pd(l.0.as_ptr()) })
        }
        #[inline(always)]
        fn store(self, l: &mut Line) {
            // SAFETY: as in `load`.
            unsafe { _mm512_store_pd(l.0.as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn sub_mul(self, f: Self, x: Self) -> Self {
            // SAFETY: see `Z`.
            Z(unsafe { _mm512_fnmadd_pd(f.0, x.0, self.0) })
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: see `Z`.
            Z(unsafe { _mm512_mul_pd(self.0, o.0) })
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            // SAFETY: see `Z`.
            Z(unsafe { _mm512_div_pd(self.0, o.0) })
        }
        #[inline(always)]
        fn sqrt(self) -> Self {
            // SAFETY: see `Z`.
            Z(unsafe { _mm512_sqrt_pd(self.0) })
        }
    }

    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn solve(m: &mut [Line], ld: usize, d: usize, failed: &mut [Option<usize>; LANES]) {
        super::solve_lanes::<Z>(m, ld, d, failed)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Lanes, Line, LANES};

    /// 3×2 tiles: 12 of the 16 AVX registers accumulate (4×4, 32 registers,
    /// spilled and ran at a third of the speed; 2×2 and 3×3 were slower too).
    const TR: usize = 3;
    const TC: usize = 2;

    /// Eight lanes in two AVX registers (lanes 0–3, 4–7). Values of this
    /// type exist only inside [`solve`], which runs only where the CPU has
    /// AVX2 and FMA: that is what makes the intrinsics below sound.
    #[derive(Clone, Copy)]
    pub(super) struct Y(__m256d, __m256d);

    impl Lanes for Y {
        const TILE: (usize, usize) = (TR, TC);
        #[inline(always)]
        fn load(l: &Line) -> Self {
            let p = l.0.as_ptr();
            // SAFETY: see `Y`; a Line is 64 aligned bytes, so both halves are 32-byte aligned.
            unsafe { Y(_mm256_load_pd(p), _mm256_load_pd(p.add(4))) }
        }
        #[inline(always)]
        fn store(self, l: &mut Line) {
            let p = l.0.as_mut_ptr();
            // SAFETY: as in `load`.
            unsafe {
                _mm256_store_pd(p, self.0);
                _mm256_store_pd(p.add(4), self.1);
            }
        }
        #[inline(always)]
        fn sub_mul(self, f: Self, x: Self) -> Self {
            // SAFETY: see `Y`.
            unsafe { Y(_mm256_fnmadd_pd(f.0, x.0, self.0), _mm256_fnmadd_pd(f.1, x.1, self.1)) }
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            // SAFETY: see `Y`.
            unsafe { Y(_mm256_mul_pd(self.0, o.0), _mm256_mul_pd(self.1, o.1)) }
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            // SAFETY: see `Y`.
            unsafe { Y(_mm256_div_pd(self.0, o.0), _mm256_div_pd(self.1, o.1)) }
        }
        #[inline(always)]
        fn sqrt(self) -> Self {
            // SAFETY: see `Y`.
            unsafe { Y(_mm256_sqrt_pd(self.0), _mm256_sqrt_pd(self.1)) }
        }
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn solve(m: &mut [Line], ld: usize, d: usize, failed: &mut [Option<usize>; LANES]) {
        super::solve_lanes::<Y>(m, ld, d, failed)
    }
}

/// Factor, then back-substitute: the solution ends in row d.
#[inline(always)]
fn solve_lanes<S: Lanes>(m: &mut [Line], ld: usize, d: usize, failed: &mut [Option<usize>; LANES]) {
    factor::<S>(m, ld, d, failed);
    back_substitute::<S>(m, ld, d);
}

/// Left-looking (Crout) Cholesky by blocks of [`TILE_COLS`] columns, rows
/// 0..=d (row d: the right-hand side, which so becomes z = L⁻¹b). Each tile
/// of L is summed over every earlier column in registers, reading rows of
/// L that lie contiguous in memory, and stored once. Entry (i, c) gets
/// A[i][c] − Σₜ L[i][t]·L[c][t] for t ascending, then the multiply by
/// 1/L[c][c]: the order of the unblocked algorithm, whatever the tiling.
#[inline(always)]
fn factor<S: Lanes>(m: &mut [Line], ld: usize, d: usize, failed: &mut [Option<usize>; LANES]) {
    let rows = d + 1;
    // 1/L[c][c] of the current block's columns.
    let mut inv = [Line([0.0; LANES]); TILE_COLS];
    let (tile_rows, tile_cols) = S::TILE;
    debug_assert!(tile_cols <= tile_rows && tile_rows <= TILE_ROWS && tile_cols <= TILE_COLS);
    let mut cb = 0;
    while cb < d {
        let nc = (d - cb).min(tile_cols);
        let mut ib = cb;
        while ib < rows {
            let nr = (rows - ib).min(tile_rows);
            let diag = ib == cb;
            macro_rules! run {
                ($r:literal, $c:literal) => {
                    if diag {
                        tile::<S, $r, $c, true>(m, ld, cb, ib, &mut inv, failed)
                    } else {
                        tile::<S, $r, $c, false>(m, ld, cb, ib, &mut inv, failed)
                    }
                };
            }
            match (nr, nc) {
                (4, 4) => run!(4, 4),
                (4, 3) => run!(4, 3),
                (4, 2) => run!(4, 2),
                (4, _) => run!(4, 1),
                (3, 4) => run!(3, 4),
                (3, 3) => run!(3, 3),
                (3, 2) => run!(3, 2),
                (3, _) => run!(3, 1),
                (2, 4) => run!(2, 4),
                (2, 3) => run!(2, 3),
                (2, 2) => run!(2, 2),
                (2, _) => run!(2, 1),
                (_, 4) => run!(1, 4),
                (_, 3) => run!(1, 3),
                (_, 2) => run!(1, 2),
                (_, _) => run!(1, 1),
            }
            ib += nr;
        }
        cb += nc;
    }
}

/// Rows `ib..ib+R` of L in columns `cb..cb+C`. The diagonal tile (DIAG,
/// `ib == cb`) also factors the block's pivots and leaves their inverses in
/// `inv`; the tiles below use them. A diagonal tile's entries above the
/// diagonal are computed and stored too, never read.
#[inline(always)]
fn tile<S: Lanes, const R: usize, const C: usize, const DIAG: bool>(
    m: &mut [Line],
    ld: usize,
    cb: usize,
    ib: usize,
    inv: &mut [Line; TILE_COLS],
    failed: &mut [Option<usize>; LANES],
) {
    // (Loops, not closures: a closure would not inherit the caller's
    // target features, and its intrinsics would not inline.)
    let any = S::load(&m[ib * ld + cb]);
    let mut acc = [[any; C]; R];
    for (r, row) in acc.iter_mut().enumerate() {
        for (q, v) in row.iter_mut().enumerate() {
            *v = S::load(&m[(ib + r) * ld + cb + q]);
        }
    }
    let (mut u, mut w) = ([any; R], [any; C]);
    for t in 0..cb {
        for (r, v) in u.iter_mut().enumerate() {
            *v = S::load(&m[(ib + r) * ld + t]);
        }
        for (q, v) in w.iter_mut().enumerate() {
            *v = S::load(&m[(cb + q) * ld + t]);
        }
        for (row, ur) in acc.iter_mut().zip(&u) {
            for (v, wq) in row.iter_mut().zip(&w) {
                *v = v.sub_mul(*wq, *ur);
            }
        }
    }
    for q in 0..C {
        if DIAG {
            // acc[q][q] is the pivot: all earlier columns are subtracted.
            let mut pivot = Line([0.0; LANES]);
            acc[q][q].store(&mut pivot);
            for (l, p) in pivot.0.iter_mut().enumerate() {
                if p.is_nan() || *p <= 0.0 {
                    failed[l].get_or_insert(cb + q);
                    // Keeps the failed lane's arithmetic going; its result is discarded.
                    *p = 1.0;
                }
            }
            let root = S::load(&pivot).sqrt();
            acc[q][q] = root;
            S::load(&Line([1.0; LANES])).div(root).store(&mut inv[q]);
        }
        let iq = S::load(&inv[q]);
        let first = if DIAG { q + 1 } else { 0 };
        for row in acc.iter_mut().skip(first) {
            row[q] = row[q].mul(iq);
        }
        // Column q of this block is final: later columns of the block lose it.
        for q2 in q + 1..C {
            let f = S::load(&m[(cb + q2) * ld + cb + q]);
            let f = if DIAG { acc[q2][q] } else { f };
            let first = if DIAG { q2 } else { 0 };
            for row in acc.iter_mut().skip(first) {
                row[q2] = row[q2].sub_mul(f, row[q]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (q, v) in row.iter().enumerate() {
            v.store(&mut m[(ib + r) * ld + cb + q]);
        }
    }
}

/// Lᵀx = z, z in row d: xᵢ = zᵢ / Lᵢᵢ, then each earlier zₜ loses Lᵢₜ·xᵢ
/// (row i of L, contiguous; consecutive updates are independent). x
/// replaces z.
#[inline(always)]
fn back_substitute<S: Lanes>(m: &mut [Line], ld: usize, d: usize) {
    let (l, z) = m.split_at_mut(d * ld);
    for i in (0..d).rev() {
        let x = S::load(&z[i]).div(S::load(&l[i * ld + i]));
        x.store(&mut z[i]);
        for (zt, lt) in z[..i].iter_mut().zip(&l[i * ld..i * ld + i]) {
            S::load(zt).sub_mul(S::load(lt), x).store(zt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Each lane against the one-system kernel and a closed-form case; a
    /// system's bits do not depend on its lane or on the other lanes.
    #[test]
    fn every_lane_solves_its_own_system() {
        let mut rng = SplitMix64::new(21);
        for d in [1usize, 2, 3, 4, 5, 7, 8, 9, 17, 64, 65, 129] {
            let systems: Vec<(Vec<f64>, Vec<f64>)> = (0..LANES)
                .map(|_| {
                    let a = super::super::random_spd(&mut rng, d + 3, d, 0.1);
                    let b: Vec<f64> = (0..d).map(|_| rng.next_normal()).collect();
                    (a, b)
                })
                .collect();
            let mut batch = CholeskyBatch::new(d);
            batch.set_lanes(std::array::from_fn(|l| Some((&systems[l].0[..], &systems[l].1[..]))), d);
            assert!(batch.solve().iter().all(Result::is_ok), "d={d}");
            let got: Vec<Vec<f64>> = (0..LANES).map(|l| batch.solution(l).collect()).collect();
            for (lane, (a, b)) in systems.iter().enumerate() {
                let ld = super::super::normal_ld(d);
                let mut one = vec![0.0; d * ld];
                for j in 0..d {
                    one[j * ld..j * ld + d].copy_from_slice(&a[j * d..(j + 1) * d]);
                }
                let mut want = b.clone();
                super::super::small_cholesky::cholesky_solve(&mut one, ld, &mut want, d).unwrap();
                for (g, w) in got[lane].iter().zip(&want) {
                    assert!((g - w).abs() < 1e-9 * (1.0 + w.abs()), "d={d} lane {lane}: {g} vs {w}");
                }
            }
            // System 0 alone, in the last lane, beside identity lanes.
            let mut alone = CholeskyBatch::new(d);
            let mut lanes = [None; LANES];
            lanes[LANES - 1] = Some((&systems[0].0[..], &systems[0].1[..]));
            alone.set_lanes(lanes, d);
            assert!(alone.solve().iter().all(Result::is_ok));
            let bits: Vec<u64> = alone.solution(LANES - 1).map(f64::to_bits).collect();
            assert_eq!(bits, got[0].iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "d={d}");
            assert!(alone.solution(0).all(|v| v == 0.0), "identity lanes solve to 0");
        }
        // [[4, 2], [2, 3]] x = [2, 1] ⇒ x = [0.5, 0], the upper triangle not read.
        let mut batch = CholeskyBatch::new(2);
        batch.set_lanes([Some((&[4.0, 2.0, f64::NAN, 3.0][..], &[2.0, 1.0][..])); LANES], 2);
        assert!(batch.solve().iter().all(Result::is_ok));
        for lane in 0..LANES {
            let x: Vec<f64> = batch.solution(lane).collect();
            assert!((x[0] - 0.5).abs() < 1e-15 && x[1].abs() < 1e-15, "{x:?}");
        }
    }

    /// The AVX-512, AVX2 and portable paths give the same bits (each
    /// that this CPU can run; with one path there is nothing to compare).
    #[test]
    fn every_path_gives_the_same_bits() {
        let paths = Path::available();
        if paths.len() < 2 {
            eprintln!("SKIP every_path_gives_the_same_bits: this CPU has no AVX2+FMA or AVX-512, so there is one path");
            return;
        }
        let mut rng = SplitMix64::new(33);
        for d in [5usize, 64, 65, 130] {
            let systems: Vec<(Vec<f64>, Vec<f64>)> = (0..LANES)
                .map(|_| {
                    (
                        super::super::random_spd(&mut rng, d + 1, d, 0.01),
                        (0..d).map(|_| rng.next_normal()).collect(),
                    )
                })
                .collect();
            let bits: Vec<Vec<u64>> = paths
                .iter()
                .map(|&path| {
                    let mut batch = CholeskyBatch::new(d);
                    batch.set_lanes(std::array::from_fn(|l| Some((&systems[l].0[..], &systems[l].1[..]))), d);
                    assert!(batch.solve_on(path).iter().all(Result::is_ok));
                    (0..LANES)
                        .flat_map(|l| batch.solution(l).map(f64::to_bits).collect::<Vec<_>>())
                        .collect()
                })
                .collect();
            for (path, b) in paths.iter().zip(&bits).skip(1) {
                assert_eq!(&bits[0], b, "d={d}: {:?} against {path:?}", paths[0]);
            }
        }
    }

    /// A lane that is not positive definite names its first bad pivot, and
    /// its neighbours still solve exactly as alone.
    #[test]
    fn a_failing_lane_names_its_pivot_and_spares_the_others() {
        let d = 6;
        let mut rng = SplitMix64::new(8);
        let good = super::super::random_spd(&mut rng, d + 2, d, 0.5);
        let b: Vec<f64> = (0..d).map(|_| rng.next_normal()).collect();
        let mut indefinite = good.clone();
        indefinite[3 + 3 * d] = -1e6;
        let mut nan = good.clone();
        nan[0] = f64::NAN;
        let mut batch = CholeskyBatch::new(d);
        batch.set_lanes(
            std::array::from_fn(|lane| {
                let a = match lane {
                    2 => &indefinite,
                    5 => &nan,
                    _ => &good,
                };
                Some((&a[..], &b[..]))
            }),
            d,
        );
        let res = batch.solve();
        assert_eq!(res[2], Err(NotPositiveDefinite { pivot: 3 }));
        assert_eq!(res[5], Err(NotPositiveDefinite { pivot: 0 }));
        let mut alone = CholeskyBatch::new(d);
        let mut lanes = [None; LANES];
        lanes[0] = Some((&good[..], &b[..]));
        alone.set_lanes(lanes, d);
        assert!(alone.solve()[0].is_ok());
        let want: Vec<u64> = alone.solution(0).map(f64::to_bits).collect();
        for lane in [0, 1, 3, 4, 6, 7] {
            assert_eq!(res[lane], Ok(()));
            assert_eq!(batch.solution(lane).map(f64::to_bits).collect::<Vec<_>>(), want, "lane {lane}");
        }
    }
}
